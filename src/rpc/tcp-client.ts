/**
 * The TCP rpc client: one multiplexed connection to one endpoint, opened
 * lazily, many requests in flight on it, replies matched by request id.
 *
 * Owns: the connection (at most one, plus at most one connect in progress),
 * the FIFO of calls waiting for a slot, the reconnect backoff.
 * Invariants: a call is in exactly one place (the queue, the connection's
 * in-flight table, or settled); at most connectionInflightMax calls are in
 * flight; nothing is written while the socket asks for 'drain'; request ids
 * are unique per client, so a late reply to an abandoned call is ignored.
 * Retries: a call that was never written may go out again on a new
 * connection; a call that was written and lost its connection before a reply
 * is sent again only if idempotent (and its payload is not a stream already
 * read); rpcAttemptsMax bounds both, and no attempt starts after the call's
 * deadline.
 * Receiving: the socket reads into buffers the connection's decoder hands
 * out (Network.connect's readInto), so a large reply lands in its own buffer
 * straight from the kernel, without a copy: the one its call brought
 * (RpcCallOptions.replyBuffer), else a new one. A call that gives up (timeout,
 * abort) while its reply is landing in the buffer it brought closes the
 * connection: once a call has settled nothing writes into its buffer.
 */
import type { Duplex } from 'node:stream';
import type { Clock, Io, ReadInto, TimerHandle } from '../io/io.js';
import { assert } from '../lib/assert.js';
import { TesseraError } from '../lib/errors.js';
import { Call, CallQueue, closedError, createCall, type CallOwner, type CallState } from './calls.js';
import { FrameDecoder } from './decoder.js';
import { FrameKind, decodeErrorHeader } from './frame.js';
import { FrameWriter } from './writer.js';
import { resolveRpcLimits, type RpcLimits } from './options.js';
import type { RpcCallOptions, RpcClient, RpcPayload, RpcReply } from './types.js';

export interface TcpClientOptions {
  io: Io;
  host: string;
  port: number;
  limits?: Partial<RpcLimits>;
}

export function createTcpClient(options: TcpClientOptions): RpcClient {
  return new TcpClient(options);
}

/** Bound on waiting for a destroyed socket to report 'close'. */
const socketCloseWaitMs = 1_000;

class TcpClient implements RpcClient, CallOwner {
  private readonly limits: RpcLimits;
  private readonly clock: Clock;
  private readonly endpoint: string;
  private readonly queue = new CallQueue();
  private connection: ClientConnection | null = null;
  /** Non-null while a connect is in progress. */
  private connectAbort: AbortController | null = null;
  private connectTimer: TimerHandle | null = null;
  private backoffTimer: TimerHandle | null = null;
  private connectFailures = 0;
  private retryAtMs = 0;
  private nextRequestId = 1;
  private closed = false;

  constructor(private readonly options: TcpClientOptions) {
    this.limits = resolveRpcLimits(options.limits);
    this.clock = options.io.clock;
    this.endpoint = `${options.host}:${options.port}`;
  }

  call(op: number, header: Uint8Array, payload: RpcPayload, options?: RpcCallOptions): Promise<RpcReply> {
    if (this.closed) return Promise.reject(closedError('rpc client'));
    let call: Call;
    let timeoutMs: number;
    try {
      ({ call, timeoutMs } = createCall(this, this.clock, this.limits, { op, header, payload, options }));
    } catch (err) {
      return Promise.reject(err);
    }
    // Outstanding calls are bounded by the in-flight slots plus the queue, also while connecting.
    const outstanding = this.queue.live + (this.connection?.inflightCount() ?? 0);
    if (outstanding >= this.limits.connectionInflightMax + this.limits.rpcQueueMax) {
      return Promise.reject(new TesseraError('Busy', `${outstanding} calls already outstanding to ${this.endpoint}`));
    }
    call.start(timeoutMs);
    if (call.state === 'done') return call.promise;
    this.queue.push(call);
    this.pump();
    return call.promise;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopConnecting();
    const err = closedError('rpc client');
    for (const call of this.queue.takeAll()) call.reject(err);
    const connection = this.connection;
    this.connection = null;
    if (connection === null) return;
    for (const call of connection.takePending()) call.reject(err);
    await connection.destroy(socketCloseWaitMs);
  }

  abandon(call: Call, wasState: CallState): void {
    if (wasState === 'queued') this.queue.forget(call);
    if (wasState !== 'inflight') return;
    // A lost connection hands its calls back synchronously, so an in-flight call is on the current one.
    assert(this.connection !== null, 'an in-flight call has a connection');
    this.connection.forget(call);
    this.pump();
  }

  /** Sends waiting calls while the connection has room; starts connecting when there is none. */
  pump(): void {
    const connection = this.connection;
    if (connection === null) {
      if (this.queue.live > 0) this.ensureConnecting();
      return;
    }
    while (connection.canSend()) {
      const call = this.queue.shift();
      if (call === null) break;
      connection.send(call, this.nextRequestId++);
    }
  }

  onConnectionLost(connection: ClientConnection, cause: unknown): void {
    if (connection !== this.connection) return;
    this.connection = null;
    if (!connection.receivedAny) this.noteConnectFailure();
    const nowMs = this.clock.monotonicMs();
    const retries: Call[] = [];
    for (const call of connection.takePending()) {
      if (call.mayResend(nowMs, this.limits.rpcAttemptsMax)) retries.push(call);
      else call.reject(unavailable(`connection to ${this.endpoint} lost before the reply`, cause));
    }
    for (let i = retries.length - 1; i >= 0; i--) this.queue.pushFront(retries[i]!);
    this.pump();
  }

  private ensureConnecting(): void {
    if (this.closed || this.connection !== null || this.connectAbort !== null || this.backoffTimer !== null) return;
    const delayMs = this.retryAtMs - this.clock.monotonicMs();
    if (delayMs > 0) {
      this.backoffTimer = this.clock.setTimeout(() => {
        this.backoffTimer = null;
        this.pump();
      }, delayMs);
      return;
    }
    this.connect();
  }

  private connect(): void {
    const abort = new AbortController();
    this.connectAbort = abort;
    this.connectTimer = this.clock.setTimeout(() => abort.abort(), this.limits.rpcTimeoutMsDefault);
    // The socket reads into buffers the reader's decoder hands out, from its first byte on.
    const reader = new ReplyReader(this.limits);
    const { host, port } = this.options;
    this.options.io.net.connect({ host, port, signal: abort.signal, readInto: reader }).then(
      (socket) => this.onConnected(socket, abort, reader),
      (err: unknown) => this.onConnectFailed(err, abort),
    );
  }

  private onConnected(socket: Duplex, abort: AbortController, reader: ReplyReader): void {
    if (abort !== this.connectAbort) {
      socket.destroy();
      return;
    }
    // The signal stays tied to the socket (node destroys a socket whose connect signal aborts): never abort it now.
    this.connectAbort = null;
    this.stopConnecting();
    this.connectFailures = 0;
    this.retryAtMs = 0;
    this.connection = new ClientConnection(this, socket, reader, this.limits, this.clock);
    this.pump();
  }

  private onConnectFailed(err: unknown, abort: AbortController): void {
    if (abort !== this.connectAbort) return;
    this.stopConnecting();
    this.noteConnectFailure();
    // Every waiting call lived through this attempt; those out of attempts or time fail now.
    for (const call of this.queue.takeAll()) {
      call.attempts++;
      if (call.attempts < this.limits.rpcAttemptsMax && call.deadlineMs > this.retryAtMs) this.queue.push(call);
      else call.reject(unavailable(`cannot connect to ${this.endpoint}`, err));
    }
    this.pump();
  }

  private noteConnectFailure(): void {
    this.connectFailures++;
    const { rpcReconnectBackoffMsMin: minMs, rpcReconnectBackoffMsMax: maxMs } = this.limits;
    const ceilingMs = Math.min(maxMs, minMs * 2 ** Math.min(this.connectFailures - 1, 30));
    // Jitter in [ceiling/2, ceiling) so that clients of a restarted daemon do not reconnect in step.
    const delayMs = ceilingMs / 2 + this.options.io.random.float() * (ceilingMs / 2);
    this.retryAtMs = this.clock.monotonicMs() + delayMs;
  }

  private stopConnecting(): void {
    if (this.connectTimer !== null) this.clock.clearTimeout(this.connectTimer);
    if (this.backoffTimer !== null) this.clock.clearTimeout(this.backoffTimer);
    this.connectTimer = null;
    this.backoffTimer = null;
    const abort = this.connectAbort;
    this.connectAbort = null;
    abort?.abort();
  }
}

function unavailable(message: string, cause: unknown): TesseraError {
  const detail = cause instanceof Error ? `: ${cause.message}` : '';
  return new TesseraError('Unavailable', `${message}${detail}`, { cause });
}

/**
 * A connection's receiving end, there from the socket's first read: the
 * socket reads into buffers its decoder hands out (Network.connect's
 * readInto) and the connection, once it exists, takes the frames.
 */
class ReplyReader implements ReadInto {
  readonly decoder: FrameDecoder;
  connection: ClientConnection | null = null;

  constructor(limits: RpcLimits) {
    this.decoder = new FrameDecoder(limits, 'readInto');
  }

  readBuffer(): Uint8Array {
    return this.decoder.readBuffer();
  }

  onRead(nread: number): void {
    this.decoder.commit(nread);
    this.connection?.takeReplies();
  }
}

/** One socket: writes request frames, takes reply frames from its reader, keeps the table of calls in flight. */
class ClientConnection {
  /** Set once a reply arrived: a connection that dies before that counts as a failed connect. */
  receivedAny = false;
  private readonly decoder: FrameDecoder;
  private readonly writer: FrameWriter;
  private readonly pending = new Map<number, Call>();
  /**
   * The call whose reply the socket is reading into the buffer the call
   * brought (RpcCallOptions.replyBuffer), until that frame is in: a call
   * forgotten meanwhile (timeout, abort) closes the connection, since the
   * kernel's next read already targets that buffer.
   */
  private filling: Call | null = null;
  private closed = false;
  private lostCause: unknown = undefined;
  private readonly closedPromise: Promise<void>;

  constructor(
    private readonly client: TcpClient,
    private readonly socket: Duplex,
    reader: ReplyReader,
    private readonly limits: RpcLimits,
    private readonly clock: Clock,
  ) {
    this.decoder = reader.decoder;
    this.writer = new FrameWriter(socket, () => this.client.pump());
    this.closedPromise = new Promise((resolve) => socket.once('close', resolve));
    socket.on('error', (err) => {
      this.lostCause ??= err;
    });
    // The server closing its side means no more replies: give up on the connection now.
    socket.on('end', () => socket.destroy());
    socket.on('close', () => {
      this.closed = true;
      this.client.onConnectionLost(this, this.lostCause ?? new Error('connection closed by peer'));
    });
    reader.connection = this;
    this.decoder.payloadBuffer = (frame) => this.replyBufferFor(frame);
    this.takeReplies();
  }

  /** Settles the calls whose replies are in. */
  takeReplies(): void {
    let replies = 0;
    try {
      while (this.decoder.next()) {
        this.onFrame(this.decoder);
        replies++;
      }
    } catch (err) {
      this.lostCause = err;
      this.socket.destroy();
    }
    if (replies > 0) this.client.pump();
  }

  inflightCount(): number {
    return this.pending.size;
  }

  canSend(): boolean {
    return !this.closed && this.socket.writable && this.writer.writable && this.pending.size < this.limits.connectionInflightMax;
  }

  send(call: Call, requestId: number): void {
    call.requestId = requestId;
    call.attempts++;
    call.state = 'inflight';
    this.pending.set(requestId, call);
    if (!call.streamed) {
      this.writer.write(call);
      return;
    }
    call.streamSent = true;
    this.writer.writeStream(call).catch((err: TesseraError) => {
      // The writer has destroyed the socket; this call fails with its own stream's error.
      this.pending.delete(call.requestId);
      call.reject(err);
    });
  }

  forget(call: Call): void {
    this.pending.delete(call.requestId);
    // Its request is half on the wire and nobody wants it any more: the connection cannot go on.
    if (this.writer.isStreaming(call)) this.socket.destroy(new TesseraError('Aborted', 'a call gave up while its payload was being sent'));
    // Its reply is landing in the buffer it brought, which is its caller's again once it settles: no byte may land there after that.
    else if (this.filling === call) this.socket.destroy(new TesseraError('Aborted', 'a call gave up while its reply was landing in its buffer'));
  }

  takePending(): Call[] {
    const calls = [...this.pending.values()];
    this.pending.clear();
    return calls;
  }

  async destroy(waitMs: number): Promise<void> {
    this.socket.destroy();
    let timer: TimerHandle | null = null;
    const clock = this.clock;
    await Promise.race([this.closedPromise, new Promise<void>((resolve) => (timer = clock.setTimeout(resolve, waitMs)))]);
    if (timer !== null) clock.clearTimeout(timer);
  }

  /** The buffer a large reply lands in: its call's, if it brought one (a call no longer waiting gets a new one). */
  private replyBufferFor(frame: { kind: number; requestId: number; payloadBytes: number }): Buffer | null {
    if (frame.kind !== FrameKind.Reply) return null;
    const call = this.pending.get(frame.requestId);
    if (call?.replyBuffer === undefined) return null;
    this.filling = call;
    return call.replyBuffer(frame.payloadBytes);
  }

  private onFrame(frame: FrameDecoder): void {
    // A frame is in whole: the socket no longer reads into any call's buffer.
    this.filling = null;
    if (frame.kind === FrameKind.Request) throw new TesseraError('ProtocolError', 'bad frame: a request from the server');
    const call = this.pending.get(frame.requestId);
    // No call: a late reply to a call that timed out or was aborted.
    if (call === undefined) return;
    this.pending.delete(frame.requestId);
    this.receivedAny = true;
    if (frame.kind === FrameKind.Reply) call.resolve({ header: frame.header, payload: frame.payload });
    else call.reject(decodeErrorHeader(frame.header));
  }
}
