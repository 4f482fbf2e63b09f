/**
 * GET responses in flight per client, and the refusal of one more than the
 * limit (limits.s3GetsInflightPerClientMax; the gateway's
 * getsInflightPerClientMax). A GetObject that streams from the cluster
 * (everything but an empty or inline object) takes a slot before it reads
 * any data and gives it back when its response ends (chunk-body.ts: written,
 * cut, failed, or its connection closed, pipelined responses included).
 * Over the limit a GET waits (first come, first served) up to
 * limits.s3GetSlotWaitMsMax for one of its client's slots, as MinIO's
 * requests_deadline does, so a client running a few more GETs than the
 * limit (the aws CLI's 10) only queues; a wait that runs out, or one more
 * than limits.s3GetSlotWaitersPerClientMax waiting, is 503 SlowDown, which
 * S3 SDKs retry with backoff. Without it one client opening many connections and reading them
 * slowly holds most of the striper's read budget and leaves every other
 * client one piece at a time (docs/s3-api.md, "GET responses in flight per client").
 *
 * The client is the access key of a signed request (header or presigned),
 * else the remote address (anonymous requests). Counts are per gateway
 * process. Invariant: an entry exists only while it holds a slot or has a
 * waiter, so the map holds at most one entry per response in flight or
 * waiting.
 */
import type { Socket } from 'node:net';
import { assert } from '../../src/lib/assert.js';
import type { Clock } from '../../src/io/io.js';
import type { AuthResult } from './auth/index.js';
import type { ConnectionCloses } from './chunk-body.js';
import { s3Error } from './errors.js';

export interface ClientGetsStats {
  /** Clients with at least one GET response in flight or waiting (entries in the map). */
  clients: number;
  /** GET responses in flight, all clients together. */
  inflight: number;
  /** GETs waiting for a slot, all clients together. */
  waiting: number;
  /** GETs refused SlowDown since the gateway started (the wait ran out, or too many waited). */
  refusedTotal: number;
}

interface Waiter {
  /** Called with the slot handed over, or with null when the wait ends without one. */
  settle: (handedOver: boolean) => void;
}

interface ClientEntry {
  held: number;
  /** FIFO; at most waitersMax. */
  waiters: Waiter[];
}

export interface ClientGetsOptions {
  perClientMax: number;
  /** How long a GET over the limit waits for one of its client's slots before SlowDown (0: refused at once). */
  waitMs: number;
  /** GETs of one client that may wait at once; more are refused at once. */
  waitersMax: number;
  clock: Clock;
  /** The gateway's connection closes (one listener per socket): a wait ends when its connection closes. */
  connections: ConnectionCloses;
}

/** One GET's place: `take` its slot (in its connection's arrival order), or `done` without one. */
export interface GetTurn {
  take(client: string): Promise<() => void>;
  /** The GET needs no slot (HEAD-like answers, inline or empty objects, errors): later GETs on its connection go on. Idempotent. */
  done(): void;
}

export class ClientGets {
  private readonly clients = new Map<string, ClientEntry>();
  /** Per connection, the decision (slot taken, or none needed) of the GET that arrived on it last. */
  private readonly lastOnSocket = new WeakMap<Socket, Promise<void>>();
  private inflight = 0;
  private waiting = 0;
  private refusedTotal = 0;

  constructor(readonly o: ClientGetsOptions) {
    if (!Number.isSafeInteger(o.perClientMax) || o.perClientMax < 1) throw new Error(`ClientGets: perClientMax ${o.perClientMax} is not a positive integer`);
    if (!(o.waitMs >= 0) || !Number.isSafeInteger(o.waitersMax) || o.waitersMax < 0) throw new Error(`ClientGets: waitMs ${o.waitMs} / waitersMax ${o.waitersMax} out of range`);
  }

  get perClientMax(): number {
    return this.o.perClientMax;
  }

  /**
   * A GET arrived on `socket`: call before its first await. Pipelined GETs on one connection are answered in
   * order, so they take slots in that order: a later one waits until the earlier has its slot or needs none,
   * else it could take the client's last slot while the earlier one, whose response must go out first, waits
   * for it (a connection stalled until the wait runs out, then both answers lost to SlowDown's close).
   */
  arrive(socket: Socket | null): GetTurn {
    let decide!: () => void;
    const decided = new Promise<void>((resolve) => (decide = resolve));
    const before = socket ? this.lastOnSocket.get(socket) : undefined;
    if (socket) this.lastOnSocket.set(socket, decided);
    let finished = false;
    const done = (): void => {
      if (finished) return;
      finished = true;
      decide();
    };
    return {
      done,
      take: async (client) => {
        const gone = new AbortController();
        let unsubscribe = (): void => {};
        if (socket?.destroyed) gone.abort();
        else if (socket) unsubscribe = this.o.connections.onClose(socket, () => gone.abort());
        try {
          if (before) await Promise.race([before, abortedOf(gone.signal)]);
          return await this.takeSlot(client, gone.signal);
        } finally {
          unsubscribe();
          done();
        }
      },
    };
  }

  /**
   * Takes one of `client`'s slots; at the limit, waits (FIFO, up to waitMs, at most waitersMax waiting) for one to
   * be given back, else throws SlowDown (503). The function returned gives the slot back; calls after the first do nothing.
   */
  private async takeSlot(client: string, signal: AbortSignal): Promise<() => void> {
    let entry = this.clients.get(client);
    if (!entry) {
      entry = { held: 0, waiters: [] };
      this.clients.set(client, entry);
    }
    if (entry.held < this.o.perClientMax) {
      entry.held++;
      this.inflight++;
      return this.giveBackOnce(client, entry);
    }
    if (this.o.waitMs === 0 || entry.waiters.length >= this.o.waitersMax || signal.aborted) {
      this.forgetIfIdle(client, entry);
      throw this.refuse();
    }
    const stop = new AbortController();
    const handedOver = await new Promise<boolean>((resolve) => {
      const waiter: Waiter = { settle: resolve };
      entry.waiters.push(waiter);
      this.waiting++;
      // The wait ends without a slot when it runs out or the request goes away (its connection closed).
      const giveUp = (): void => {
        const at = entry.waiters.indexOf(waiter);
        if (at < 0) return; // handed a slot meanwhile
        entry.waiters.splice(at, 1);
        this.waiting--;
        this.forgetIfIdle(client, entry);
        resolve(false);
      };
      signal.addEventListener('abort', giveUp, { once: true });
      stop.signal.addEventListener('abort', () => signal.removeEventListener('abort', giveUp), { once: true });
      void this.o.clock.sleep(this.o.waitMs, stop.signal).then(giveUp, () => undefined);
    });
    stop.abort();
    if (!handedOver) throw this.refuse();
    return this.giveBackOnce(client, entry);
  }

  stats(): ClientGetsStats {
    return { clients: this.clients.size, inflight: this.inflight, waiting: this.waiting, refusedTotal: this.refusedTotal };
  }

  private refuse(): Error {
    this.refusedTotal++;
    return s3Error('SlowDown', `Too many GET responses in flight for this client (at most ${this.o.perClientMax}); please retry.`);
  }

  /** The slot's give-back: to the first waiter of the client (the count stays), else the count drops. */
  private giveBackOnce(client: string, entry: ClientEntry): () => void {
    let given = false;
    return () => {
      if (given) return;
      given = true;
      assert(entry.held > 0 && this.clients.get(client) === entry, `ClientGets: ${client} gave back a slot it did not hold`);
      const next = entry.waiters.shift();
      if (next) {
        this.waiting--;
        next.settle(true);
        return;
      }
      entry.held--;
      this.inflight--;
      this.forgetIfIdle(client, entry);
    };
  }

  /** Invariant: an entry exists only while it holds a slot or has a waiter. */
  private forgetIfIdle(client: string, entry: ClientEntry): void {
    if (entry.held === 0 && entry.waiters.length === 0) this.clients.delete(client);
  }
}

/** Resolves when `signal` aborts. */
function abortedOf(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

/**
 * Who a request counts against: its access key when signed in the header; a presigned URL's key together with
 * the remote address (URLs are handed to others: one holder reading slowly must not use up the key owner's
 * allowance, nor other holders'); else the remote address.
 */
export function clientOf(auth: AuthResult, remote: string): string {
  if (auth.kind !== 'signed') return `addr:${remote}`;
  return auth.via === 'presigned' ? `url:${auth.accessKeyId}@${remote}` : `key:${auth.accessKeyId}`;
}
