/**
 * The in-process transport: an RpcClient that calls the handler directly, on
 * the same event loop, for the embedded single-process default. Same contract
 * as TCP: the same frame limits (LimitExceeded), in-flight limit
 * (connectionInflightMax, then a bounded queue, then Busy), timeouts, abort,
 * close() failing what is in flight with Closed, and handler errors arriving
 * as TesseraErrors of the same code and message (anything else: Internal).
 *
 * Differences by design: no bytes are checksummed, and in-memory payloads are
 * not copied: a payload given as one array is handed over as a view of it
 * (more than one array: joined into one Buffer), so caller and handler share
 * memory and neither may modify buffers it passed until the call settles. A
 * streamed payload is read into one Buffer of its announced length (after the
 * limits are checked) and handed over once complete; a stream that fails
 * fails the call as over TCP (a request stream: with its own error; a reply
 * stream: Unavailable). A handler keeps its slot until it really finishes,
 * reply stream included, even if its caller gave up (a timed-out call is
 * still running); the handler's signal aborts on close().
 */
import type { Io } from '../io/io.js';
import { TesseraError, limitExceeded, toTesseraError } from '../lib/errors.js';
import { Call, CallQueue, closedError, createCall, type CallOwner, type CallState } from './calls.js';
import { emptyBuffer } from './frame.js';
import { resolveRpcLimits, type RpcLimits } from './options.js';
import { collectStream, isPayloadStream, payloadByteLength } from './payload.js';
import type { RpcCallOptions, RpcClient, RpcHandler, RpcHandlerReply, RpcPayload, RpcReply } from './types.js';

export interface InProcessOptions {
  /** Only the clock is used (timeouts). */
  io: Pick<Io, 'clock'>;
  limits?: Partial<RpcLimits>;
}

export function createInProcessTransport(handler: RpcHandler, options: InProcessOptions): RpcClient {
  return new InProcessTransport(handler, options);
}

/** The connection id handlers see. */
const inProcessConnectionId = 0;

class InProcessTransport implements RpcClient, CallOwner {
  private readonly limits: RpcLimits;
  private readonly queue = new CallQueue();
  /** Calls whose handler is running (including ones their caller gave up on). */
  private readonly running = new Set<Call>();
  private readonly abort = new AbortController();
  private closed = false;

  constructor(
    private readonly handler: RpcHandler,
    private readonly options: InProcessOptions,
  ) {
    this.limits = resolveRpcLimits(options.limits);
  }

  call(op: number, header: Uint8Array, payload: RpcPayload, options?: RpcCallOptions): Promise<RpcReply> {
    if (this.closed) return Promise.reject(closedError('in-process transport'));
    let call: Call;
    let timeoutMs: number;
    try {
      ({ call, timeoutMs } = createCall(this, this.options.io.clock, this.limits, { op, header, payload, options }));
    } catch (err) {
      return Promise.reject(err);
    }
    const outstanding = this.queue.live + this.running.size;
    if (outstanding >= this.limits.connectionInflightMax + this.limits.rpcQueueMax) {
      return Promise.reject(new TesseraError('Busy', `${outstanding} calls already outstanding to the in-process handler`));
    }
    call.start(timeoutMs);
    if (call.state === 'done') return call.promise;
    this.queue.push(call);
    this.pump();
    return call.promise;
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    const err = closedError('in-process transport');
    for (const call of this.queue.takeAll()) call.reject(err);
    for (const call of this.running) call.reject(err);
    this.abort.abort(err);
    return Promise.resolve();
  }

  abandon(call: Call, wasState: CallState): void {
    if (wasState === 'queued') this.queue.forget(call);
  }

  private pump(): void {
    while (!this.closed && this.running.size < this.limits.connectionInflightMax) {
      const call = this.queue.shift();
      if (call === null) return;
      this.run(call);
    }
  }

  /** The call keeps its slot until the handler, and its reply stream if any, are done. */
  private run(call: Call): void {
    call.state = 'inflight';
    this.running.add(call);
    // A failing request stream fails the call with its own error, as the TCP client's writer does.
    if (isPayloadStream(call.payload)) {
      collectStream(call.payload).then(
        (payload) => this.invoke(call, payload),
        (err: TesseraError) => this.finish(call, err, null),
      );
    } else this.invoke(call, joinPayloads(call.payload, call.payloadBytes));
  }

  private invoke(call: Call, payload: Buffer): void {
    const request = { op: call.op, header: asBuffer(call.header), payload, signal: this.abort.signal, connectionId: inProcessConnectionId };
    let pending: Promise<RpcHandlerReply>;
    try {
      pending = this.handler(request);
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(
      (reply) => this.answer(call, reply),
      (err: unknown) => this.finish(call, rebuildError(err), null),
    );
  }

  /** What crossing the wire would do to the reply. */
  private answer(call: Call, reply: RpcHandlerReply): void {
    const payload = reply.payload ?? [];
    const header = asBuffer(reply.header);
    let payloadBytes: number;
    try {
      payloadBytes = payloadByteLength(payload);
    } catch (err) {
      this.finish(call, rebuildError(err), null);
      return;
    }
    if (header.byteLength > this.limits.frameHeaderBytesMax || header.byteLength + payloadBytes > this.limits.frameBytesMax) {
      this.finish(call, limitExceeded(`reply of ${header.byteLength} + ${payloadBytes} bytes exceeds the frame limits`), null);
      return;
    }
    if (!isPayloadStream(payload)) {
      this.finish(call, null, { header, payload: joinPayloads(payload, payloadBytes) });
      return;
    }
    collectStream(payload).then(
      (bytes) => this.finish(call, null, { header, payload: bytes }),
      // Over TCP the server closes the connection: the caller sees it lost.
      (err: TesseraError) => this.finish(call, new TesseraError('Unavailable', `the reply's payload stream failed: ${err.message}`, { cause: err }), null),
    );
  }

  private finish(call: Call, err: TesseraError | null, reply: RpcReply | null): void {
    this.running.delete(call);
    if (err !== null) call.reject(err);
    else call.resolve(reply!);
    this.pump();
  }
}

/** A fresh error of the same code and message, as if it had crossed the wire. */
function rebuildError(err: unknown): TesseraError {
  const wire = toTesseraError(err);
  return new TesseraError(wire.code, wire.message, { cause: err });
}

function asBuffer(bytes: Uint8Array): Buffer {
  if (bytes.byteLength === 0) return emptyBuffer;
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function joinPayloads(payloads: readonly Uint8Array[], payloadBytes: number): Buffer {
  if (payloadBytes === 0) return emptyBuffer;
  let only: Uint8Array | null = null;
  for (const p of payloads) {
    if (p.byteLength === 0) continue;
    if (only !== null) return Buffer.concat(payloads as Uint8Array[], payloadBytes);
    only = p;
  }
  return asBuffer(only!);
}
