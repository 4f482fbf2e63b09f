/**
 * The TCP rpc server: accepts connections, decodes request frames, runs the
 * handler, writes replies in whatever order handlers finish.
 *
 * Owns: the listener, its connections, the daemon-wide in-flight counters.
 * Invariants: a handler starts only while its connection has fewer than
 * connectionInflightMax requests in flight and the server fewer than
 * daemonInflightMax (and fewer than daemonInflightBytesMax request bytes); a
 * request is in flight until its reply is handed to the socket (a streamed
 * reply: until its last byte is written). While a connection cannot start one
 * more, or its socket asks for 'drain', or a streamed reply is being sent, the
 * connection stops reading (pause) and unparsed bytes wait in its decoder, so
 * TCP flow control pushes back on the sender. A bad frame closes that
 * connection only (counted in framesRejected). Closing: no new connections,
 * new requests answered with Closed, in-flight requests drained up to
 * drainTimeoutMs, then every socket is ended and, at the deadline, destroyed;
 * a connection's close aborts its handlers' signal.
 */
import type { Duplex } from 'node:stream';
import type { Clock, Io, Listener, TimerHandle } from '../io/io.js';
import { assert } from '../lib/assert.js';
import { TesseraError, limitExceeded, toTesseraError } from '../lib/errors.js';
import { closedError } from './calls.js';
import { FrameDecoder } from './decoder.js';
import { FrameKind, encodeErrorHeader, type OutgoingFrame } from './frame.js';
import { FrameWriter } from './writer.js';
import { resolveRpcLimits, type RpcLimits } from './options.js';
import { isPayloadStream, payloadByteLength } from './payload.js';
import type { RpcHandler, RpcHandlerReply, RpcServer, RpcServerStats } from './types.js';

export interface TcpServerOptions {
  io: Io;
  host: string;
  /** 0 picks a free port (see RpcServer.port). */
  port: number;
  handler: RpcHandler;
  limits?: Partial<RpcLimits>;
}

/** Bound on waiting for destroyed sockets to report 'close'. */
const socketCloseWaitMs = 1_000;

export async function createTcpServer(options: TcpServerOptions): Promise<RpcServer> {
  const server = new TcpServer(options);
  await server.listen();
  return server;
}

class TcpServer implements RpcServer {
  readonly limits: RpcLimits;
  readonly handler: RpcHandler;
  readonly clock: Clock;
  closing = false;
  inflightRequests = 0;
  inflightBytes = 0;
  framesRejected = 0;
  private listener: Listener | null = null;
  private readonly connections = new Map<number, ServerConnection>();
  /** Connections that stopped reading because the server (not they) is at its limit. */
  private readonly stalled = new Set<ServerConnection>();
  private nextConnectionId = 1;
  private changeWaiter: (() => void) | null = null;
  private closePromise: Promise<void> | null = null;

  constructor(private readonly options: TcpServerOptions) {
    this.limits = resolveRpcLimits(options.limits);
    this.handler = options.handler;
    this.clock = options.io.clock;
  }

  get port(): number {
    assert(this.listener !== null, 'the server is listening');
    return this.listener.port;
  }

  async listen(): Promise<void> {
    const { host, port } = this.options;
    try {
      this.listener = await this.options.io.net.listen({ host, port }, (socket) => this.onConnection(socket));
    } catch (err) {
      const detail = err instanceof Error ? `: ${err.message}` : '';
      throw new TesseraError('Unavailable', `cannot listen on ${host}:${port}${detail}`, { cause: err });
    }
  }

  stats(): RpcServerStats {
    return {
      connections: this.connections.size,
      inflightRequests: this.inflightRequests,
      inflightBytes: this.inflightBytes,
      framesRejected: this.framesRejected,
    };
  }

  hasCapacity(): boolean {
    return this.inflightRequests < this.limits.daemonInflightMax && this.inflightBytes < this.limits.daemonInflightBytesMax;
  }

  admit(requestBytes: number): void {
    this.inflightRequests++;
    this.inflightBytes += requestBytes;
  }

  release(requestBytes: number): void {
    this.inflightRequests--;
    this.inflightBytes -= requestBytes;
    assert(this.inflightRequests >= 0 && this.inflightBytes >= 0, 'in-flight counters stay non-negative');
    this.wakeStalled();
    if (this.inflightRequests === 0) this.notifyChange();
  }

  stall(connection: ServerConnection): void {
    this.stalled.add(connection);
  }

  onConnectionClosed(connection: ServerConnection): void {
    this.connections.delete(connection.id);
    this.stalled.delete(connection);
    this.notifyChange();
  }

  rejectFrame(): void {
    this.framesRejected++;
  }

  close(options?: { drainTimeoutMs?: number }): Promise<void> {
    this.closePromise ??= this.shutdown(options?.drainTimeoutMs ?? this.limits.rpcDrainTimeoutMsDefault);
    return this.closePromise;
  }

  private onConnection(socket: Duplex): void {
    if (this.closing || this.connections.size >= this.limits.connectionsPerDaemonMax) {
      socket.destroy();
      return;
    }
    const connection = new ServerConnection(this, socket, this.nextConnectionId++);
    this.connections.set(connection.id, connection);
  }

  /** Round-robin over stalled connections while the server has room. */
  private wakeStalled(): void {
    for (const connection of this.stalled) {
      if (!this.hasCapacity()) return;
      this.stalled.delete(connection);
      connection.pump();
    }
  }

  private async shutdown(drainTimeoutMs: number): Promise<void> {
    this.closing = true;
    const listener = this.listener;
    assert(listener !== null, 'the server is listening');
    // Stops accepting now; resolves once every connection is gone.
    const listenerClosed = listener.close();
    // Paused connections read again: their new requests get Closed replies.
    for (const connection of this.connections.values()) connection.pump();
    const deadlineMs = this.clock.monotonicMs() + drainTimeoutMs;
    await this.waitUntil(() => this.inflightRequests === 0, deadlineMs);
    for (const connection of this.connections.values()) connection.end();
    await this.waitUntil(() => this.connections.size === 0, deadlineMs);
    for (const connection of this.connections.values()) connection.destroy();
    await this.waitUntil(() => this.connections.size === 0, this.clock.monotonicMs() + socketCloseWaitMs);
    await listenerClosed;
  }

  private async waitUntil(done: () => boolean, deadlineMs: number): Promise<void> {
    while (!done()) {
      const remainingMs = deadlineMs - this.clock.monotonicMs();
      if (remainingMs <= 0) return;
      let timer: TimerHandle | null = null;
      await new Promise<void>((resolve) => {
        this.changeWaiter = resolve;
        timer = this.clock.setTimeout(resolve, remainingMs);
      });
      if (timer !== null) this.clock.clearTimeout(timer);
      this.changeWaiter = null;
    }
  }

  private notifyChange(): void {
    this.changeWaiter?.();
  }
}

/** One accepted socket: decodes requests as capacity allows, runs them, writes replies. */
class ServerConnection {
  private readonly decoder: FrameDecoder;
  private readonly writer: FrameWriter;
  private readonly abort = new AbortController();
  private inflight = 0;
  private paused = false;
  private closed = false;
  private peerEnded = false;

  constructor(
    private readonly server: TcpServer,
    private readonly socket: Duplex,
    readonly id: number,
  ) {
    this.decoder = new FrameDecoder(server.limits);
    this.writer = new FrameWriter(socket, () => this.pump());
    socket.on('data', (chunk: Buffer) => {
      this.decoder.push(chunk);
      this.pump();
    });
    socket.on('error', () => {
      // 'close' follows; nothing to add.
    });
    socket.on('end', () => {
      this.peerEnded = true;
      this.pump();
    });
    socket.on('close', () => this.onClose());
  }

  /** Starts every buffered request there is room for; then reads on, or pauses. */
  pump(): void {
    const server = this.server;
    while (!this.closed && this.writer.writable && (server.closing || this.hasCapacity())) {
      let got: boolean;
      try {
        got = this.decoder.next();
      } catch {
        this.reject();
        return;
      }
      if (!got) {
        // The peer stopped sending in the middle of a frame: a truncated frame.
        if (this.peerEnded && this.decoder.midFrame) this.reject();
        break;
      }
      if (this.decoder.kind !== FrameKind.Request) {
        this.reject();
        return;
      }
      this.dispatch();
    }
    this.updateFlow();
  }

  end(): void {
    if (!this.closed) this.socket.end();
  }

  /** Closes the socket now; handlers see their signal abort at once. */
  destroy(): void {
    this.abortHandlers();
    this.socket.destroy();
  }

  private hasCapacity(): boolean {
    return this.inflight < this.server.limits.connectionInflightMax && this.server.hasCapacity();
  }

  private updateFlow(): void {
    const server = this.server;
    const writable = !this.closed && this.writer.writable;
    const wantRead = writable && (server.closing || this.hasCapacity());
    if (!wantRead && writable && this.inflight < server.limits.connectionInflightMax) server.stall(this);
    if (wantRead === !this.paused) return;
    this.paused = !wantRead;
    if (wantRead) this.socket.resume();
    else this.socket.pause();
  }

  private dispatch(): void {
    const { op, requestId, header, payload } = this.decoder;
    if (this.server.closing) {
      this.sendError(requestId, op, closedError('rpc server'));
      return;
    }
    const requestBytes = header.byteLength + payload.byteLength;
    this.inflight++;
    this.server.admit(requestBytes);
    void this.serve(requestId, op, header, payload, requestBytes);
  }

  /** A request stays in flight until its reply is handed to the socket (a streamed one: to its last byte). */
  private async serve(requestId: number, op: number, header: Buffer, payload: Buffer, requestBytes: number): Promise<void> {
    try {
      const reply = await this.server.handler({ op, header, payload, signal: this.abort.signal, connectionId: this.id });
      const streaming = this.sendReply(requestId, op, reply);
      if (streaming !== null) await streaming;
    } catch (err) {
      this.sendError(requestId, op, toTesseraError(err));
    }
    this.inflight--;
    this.server.release(requestBytes);
    this.pump();
  }

  /** Hands the reply to the socket; for a streamed one, returns a promise of its last byte written. */
  private sendReply(requestId: number, op: number, reply: RpcHandlerReply): Promise<void> | null {
    const payload = reply.payload ?? emptyPayload;
    const header = reply.header;
    const payloadBytes = payloadByteLength(payload);
    const limits = this.server.limits;
    if (header.byteLength > limits.frameHeaderBytesMax || header.byteLength + payloadBytes > limits.frameBytesMax) {
      throw limitExceeded(`reply of ${header.byteLength} + ${payloadBytes} bytes exceeds the frame limits`);
    }
    const frame: OutgoingFrame = { kind: FrameKind.Reply, op, requestId, header, payload, payloadBytes };
    if (!isPayloadStream(payload)) {
      this.write(frame);
      return null;
    }
    if (!this.canWrite()) return null;
    // A stream that fails has closed the connection: there is nobody left to tell.
    return this.writer.writeStream(frame).catch(ignore);
  }

  private sendError(requestId: number, op: number, err: TesseraError): void {
    const header = encodeErrorHeader(err, this.server.limits.rpcErrorMessageBytesMax);
    this.write({ kind: FrameKind.Error, op, requestId, header, payload: emptyPayload, payloadBytes: 0 });
  }

  private write(frame: OutgoingFrame): void {
    if (!this.canWrite()) return;
    if (!this.writer.write(frame)) this.updateFlow();
  }

  /** A reply for a connection that is gone (or ended) has nobody to go to. */
  private canWrite(): boolean {
    return !this.closed && !this.socket.destroyed && this.socket.writable;
  }

  private reject(): void {
    this.server.rejectFrame();
    this.socket.destroy();
  }

  private onClose(): void {
    this.closed = true;
    this.abortHandlers();
    this.server.onConnectionClosed(this);
  }

  private abortHandlers(): void {
    if (!this.abort.signal.aborted) this.abort.abort(new TesseraError('Closed', `connection ${this.id} closed`));
  }
}

const emptyPayload: readonly Uint8Array[] = [];

function ignore(): void {}
