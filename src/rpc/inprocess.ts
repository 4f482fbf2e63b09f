/**
 * The in-process transport: an RpcClient that calls the handler directly, on
 * the same event loop, for the embedded single-process default. Same contract
 * as TCP: the same frame limits (LimitExceeded), in-flight limit
 * (connectionInflightMax, then a bounded queue, then Busy), timeouts, abort,
 * close() failing what is in flight with Closed, and handler errors arriving
 * as TesseraErrors of the same code and message (anything else: Internal).
 *
 * Differences by design: no bytes are copied or checksummed; a payload given
 * as one array is handed over as a view of it (more than one array: joined
 * into one Buffer), so caller and handler share memory and neither may modify
 * buffers it passed until the call settles. A handler keeps its slot until it
 * really finishes, even if its caller gave up (a timed-out call is still
 * running); the handler's signal aborts on close().
 */
import type { Io } from '../io/io.js';
import { TesseraError, limitExceeded, toTesseraError } from '../lib/errors.js';
import { Call, CallQueue, closedError, createCall, type CallOwner, type CallState } from './calls.js';
import { emptyBuffer, payloadsByteLength } from './frame.js';
import { resolveRpcLimits, type RpcLimits } from './options.js';
import type { RpcCallOptions, RpcClient, RpcHandler, RpcHandlerReply, RpcReply } from './types.js';

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

  call(op: number, header: Uint8Array, payload: readonly Uint8Array[], options?: RpcCallOptions): Promise<RpcReply> {
    if (this.closed) return Promise.reject(closedError('in-process transport'));
    let call: Call;
    let timeoutMs: number;
    try {
      ({ call, timeoutMs } = createCall(this, this.options.io.clock, this.limits, { op, header, payloads: payload, options }));
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

  private run(call: Call): void {
    call.state = 'inflight';
    this.running.add(call);
    const request = {
      op: call.op,
      header: asBuffer(call.header),
      payload: joinPayloads(call.payloads, call.payloadBytes),
      signal: this.abort.signal,
      connectionId: inProcessConnectionId,
    };
    let pending: Promise<RpcHandlerReply>;
    try {
      pending = this.handler(request);
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(
      (reply) => this.finish(call, reply, undefined),
      (err: unknown) => this.finish(call, undefined, err),
    );
  }

  private finish(call: Call, reply: RpcHandlerReply | undefined, err: unknown): void {
    this.running.delete(call);
    if (reply !== undefined) this.answer(call, reply);
    else call.reject(rebuildError(err));
    this.pump();
  }

  private answer(call: Call, reply: RpcHandlerReply): void {
    const payloads = reply.payload ?? [];
    const payloadBytes = payloadsByteLength(payloads);
    const headerBytes = reply.header.byteLength;
    if (headerBytes > this.limits.frameHeaderBytesMax || headerBytes + payloadBytes > this.limits.frameBytesMax) {
      call.reject(limitExceeded(`reply of ${headerBytes} + ${payloadBytes} bytes exceeds the frame limits`));
      return;
    }
    call.resolve({ header: asBuffer(reply.header), payload: joinPayloads(payloads, payloadBytes) });
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
