/**
 * A simulated network: listen/connect on "host:port" give Duplex pairs whose
 * bytes cross after seeded delays (in order per direction; a chunk may be
 * split in two deliveries). Links between hosts can be cut and healed: while
 * cut, bytes and connection attempts wait (TCP retransmits; the caller's
 * timeouts act meanwhile); at the heal, half of the connections with bytes
 * held are reset instead (TCP gave up). A killed process's listeners close; what it had
 * written still arrives, then end-of-stream (the kernel's FIN); bytes sent to
 * it afterwards make the sender's socket fail with ECONNRESET.
 *
 * Flow control: a direction buffers up to WINDOW_BYTES of undelivered bytes
 * (the kernel's socket buffers) before the writer's callback waits; a
 * receiver that pauses, or whose readable buffer is full, stops delivery.
 */
import { Duplex } from 'node:stream';
import type { Listener, Network, ReadInto } from '../../src/io/io.js';
import type { Rng } from '../helpers/random.js';
import { never, type Scheduler, type SimProcess } from './scheduler.js';

const WINDOW_BYTES = 256 * 1024;
const FIRST_PORT = 6800;

function netError(code: string, message: string): Error {
  const err = new Error(`${code}: ${message}`) as NodeJS.ErrnoException;
  err.code = code;
  return err;
}

function abortError(reason: unknown): Error {
  const err = new Error('The operation was aborted', { cause: reason }) as Error & { code: string };
  err.name = 'AbortError';
  err.code = 'ABORT_ERR';
  return err;
}

type Item = { kind: 'data'; data: Buffer; callback: (() => void) | null } | { kind: 'end' } | { kind: 'reset' };

/** One direction of a connection. */
class Pipe {
  readonly queue: Item[] = [];
  queuedBytes = 0;
  private pumping = false;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly net: SimNetwork,
    readonly from: SimSocket,
    readonly to: SimSocket,
  ) {}

  send(data: Buffer, callback: () => void): void {
    this.queue.push({ kind: 'data', data, callback: null });
    this.queuedBytes += data.length;
    if (this.queuedBytes <= WINDOW_BYTES) callback();
    else this.waiting.push(callback);
    this.kick();
  }

  sendEnd(): void {
    this.queue.push({ kind: 'end' });
    this.kick();
  }

  /** Forgets what was not delivered (the connection is being reset). */
  drop(): void {
    this.queue.length = 0;
    this.queuedBytes = 0;
  }

  /** Schedules the next delivery, if there is something to deliver and none is scheduled. */
  kick(): void {
    if (this.pumping || this.queue.length === 0) return;
    this.pumping = true;
    this.net.sched.schedule(this.net.latencyMs(), () => this.pump(), null);
  }

  private pump(): void {
    this.pumping = false;
    const head = this.queue[0];
    if (!head) return;
    const to = this.to;
    if (to.destroyed && !to.owner.alive) {
      // Delivered to a dead process's socket: the kernel answers with a reset.
      this.queue.length = 0;
      this.queuedBytes = 0;
      if (head.kind === 'data') this.from.resetByPeer();
      return;
    }
    if (this.net.isCut(this.from.owner.host, to.owner.host) || to.owner.paused || !to.readyToReceive()) {
      this.net.blocked.add(this);
      return;
    }
    if (head.kind === 'data') {
      let data = head.data;
      if (data.length > 1 && this.net.rng.float() < 0.1) {
        // Split: the receiver gets part now, the rest next.
        const cut = 1 + this.net.rng.int(data.length - 1);
        head.data = data.subarray(cut);
        data = data.subarray(0, cut);
      } else this.queue.shift();
      this.queuedBytes -= data.length;
      while (this.waiting.length > 0 && this.queuedBytes <= WINDOW_BYTES) this.waiting.shift()!();
      to.receive(data);
    } else {
      this.queue.shift();
      if (head.kind === 'end') to.receiveEnd();
      else to.resetByPeer();
    }
    this.kick();
  }
}

export class SimSocket extends Duplex {
  out: Pipe | null = null;
  in: Pipe | null = null;
  private readBlocked = false;
  private gotEnd = false;

  constructor(
    readonly owner: SimProcess,
    private readonly readInto: ReadInto | undefined,
  ) {
    super({ allowHalfOpen: false });
    // A reader-supplied-buffer socket never emits 'data'; flowing mode lets 'end' be emitted.
    if (readInto) this.resume();
  }

  readyToReceive(): boolean {
    if (this.destroyed) return true; // dropped on arrival
    return !this.readBlocked && (this.readInto !== undefined || this.readableFlowing !== false);
  }

  receive(data: Buffer): void {
    if (this.destroyed || this.gotEnd) return;
    if (this.readInto) {
      let at = 0;
      while (at < data.length && !this.destroyed) {
        const target = this.readInto.readBuffer();
        const n = Math.min(target.byteLength, data.length - at);
        target.set(data.subarray(at, at + n));
        at += n;
        this.readInto.onRead(n);
      }
      return;
    }
    if (!this.push(data)) this.readBlocked = true;
  }

  receiveEnd(): void {
    if (this.destroyed || this.gotEnd) return;
    this.gotEnd = true;
    this.push(null);
  }

  resetByPeer(): void {
    if (this.destroyed) return;
    this.destroy(netError('ECONNRESET', 'connection reset by peer (simulated)'));
  }

  override _read(): void {
    if (!this.readBlocked) return;
    this.readBlocked = false;
    this.in?.kick();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (!this.out) return callback(netError('EPIPE', 'not connected'));
    this.out.send(Buffer.from(chunk), () => callback());
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    if (!this.out) return callback(netError('EPIPE', 'not connected'));
    this.out.send(Buffer.concat(chunks.map((c) => c.chunk)), () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.out?.sendEnd();
    callback();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // Closing the socket: the peer reads what was sent, then end-of-stream.
    if (this.owner.alive && this.out && !this.writableFinished) this.out.sendEnd();
    callback(err);
  }
}

interface ListenEntry {
  owner: SimProcess;
  onConnection: (socket: Duplex) => void;
}

export class SimNetwork {
  readonly blocked = new Set<Pipe>();
  private readonly listeners = new Map<string, ListenEntry>();
  private readonly nextPort = new Map<string, number>();
  private readonly cuts = new Set<string>();
  private readonly waitingConnects = new Set<() => void>();
  private readonly sockets = new Set<SimSocket>();
  connections = 0;

  constructor(
    readonly sched: Scheduler,
    readonly rng: Rng,
  ) {}

  /** Delay of one delivery: mostly 0.05-0.5 ms, sometimes a spike of up to 30 ms. */
  latencyMs(): number {
    return this.rng.float() < 0.02 ? 1 + this.rng.float() * 30 : 0.05 + this.rng.float() * 0.45;
  }

  isCut(a: string, b: string): boolean {
    return a !== b && this.cuts.has(a < b ? `${a}|${b}` : `${b}|${a}`);
  }

  cut(a: string, b: string): void {
    this.cuts.add(a < b ? `${a}|${b}` : `${b}|${a}`);
  }

  /**
   * Heals the link. A connection with bytes held across it is reset instead, half the time (TCP gave
   * up retransmitting: both ends fail with ECONNRESET), unless an end's process is paused.
   */
  heal(a: string, b: string): void {
    this.cuts.delete(a < b ? `${a}|${b}` : `${b}|${a}`);
    for (const p of [...this.blocked]) {
      const hosts = [p.from.owner.host, p.to.owner.host];
      if (!hosts.includes(a) || !hosts.includes(b) || p.from.owner.paused || p.to.owner.paused) continue;
      if (this.rng.float() >= 0.5) continue;
      this.blocked.delete(p);
      p.drop();
      p.from.resetByPeer();
      p.to.resetByPeer();
    }
    this.unblock();
  }

  healAll(): void {
    this.cuts.clear();
    this.unblock();
  }

  /** Deliveries and connection attempts that waited (a cut, a paused process) are tried again. */
  unblock(): void {
    const pipes = [...this.blocked];
    this.blocked.clear();
    for (const p of pipes) p.kick();
    const connects = [...this.waitingConnects];
    this.waitingConnects.clear();
    for (const c of connects) c();
  }

  /** A process died: its listeners go; its sockets send what they had, then end-of-stream. */
  kill(p: SimProcess): void {
    for (const [address, l] of this.listeners) if (l.owner === p) this.listeners.delete(address);
    for (const s of this.sockets) {
      if (s.owner !== p) continue;
      this.sockets.delete(s);
      if (s.out) s.out.sendEnd();
      // Inert from now on: nothing is delivered to it, no event of its owner runs.
      s.removeAllListeners();
      s.on('error', () => undefined);
      s.destroy();
    }
    this.unblock();
  }

  view(owner: SimProcess): Network {
    return {
      listen: async ({ host, port }, onConnection): Promise<Listener> => {
        if (!owner.alive) return never();
        const h = host === '0.0.0.0' || host === '' ? owner.host : host;
        if (h !== owner.host) throw netError('EADDRNOTAVAIL', `${owner.name} cannot listen on ${host}`);
        let p = port;
        if (p === 0) {
          p = this.nextPort.get(h) ?? FIRST_PORT;
          while (this.listeners.has(`${h}:${p}`)) p++;
          this.nextPort.set(h, p + 1);
        }
        const address = `${h}:${p}`;
        if (this.listeners.has(address)) throw netError('EADDRINUSE', address);
        const entry: ListenEntry = { owner, onConnection };
        this.listeners.set(address, entry);
        return {
          port: p,
          close: async () => {
            if (this.listeners.get(address) === entry) this.listeners.delete(address);
          },
        };
      },
      connect: ({ host, port, signal, readInto }) => {
        if (!owner.alive) return never();
        return new Promise<Duplex>((resolve, reject) => {
          let done = false;
          const onAbort = (): void => {
            if (done) return;
            done = true;
            reject(abortError(signal!.reason));
          };
          if (signal?.aborted) return onAbort();
          signal?.addEventListener('abort', onAbort, { once: true });
          const attempt = (): void => {
            if (done || !owner.alive) return;
            if (this.isCut(owner.host, host)) {
              this.waitingConnects.add(attempt);
              return;
            }
            const l = this.listeners.get(`${host}:${port}`);
            done = true;
            signal?.removeEventListener('abort', onAbort);
            if (!l || !l.owner.alive) {
              reject(netError('ECONNREFUSED', `connect ${host}:${port} (simulated)`));
              return;
            }
            const client = new SimSocket(owner, readInto);
            const server = new SimSocket(l.owner, undefined);
            client.out = new Pipe(this, client, server);
            server.out = new Pipe(this, server, client);
            client.in = server.out;
            server.in = client.out;
            this.sockets.add(client);
            this.sockets.add(server);
            const forget = (s: SimSocket) => () => this.sockets.delete(s);
            client.once('close', forget(client));
            server.once('close', forget(server));
            this.connections++;
            // The kernel accepts even for a paused process; its code sees the connection when it runs.
            this.sched.schedule(0, () => l.onConnection(server), l.owner);
            resolve(client);
          };
          this.sched.schedule(this.latencyMs(), attempt, owner);
        });
      },
    };
  }
}
