/**
 * A client call's life, shared by the TCP client and the in-process transport:
 * validation against the frame limits, the promise, the deadline timer, the
 * abort listener, and the bounded FIFO of calls waiting for a slot.
 *
 * Invariants: a call settles exactly once (resolve/reject after that are
 * no-ops); settling clears its timer and abort listener, so a finished call
 * holds nothing alive; when a call gives up on its own (timeout, abort) its
 * owner is told (abandon, with the state it was in) before the promise
 * rejects, so it can drop it from its queue or in-flight table.
 */
import type { Clock, TimerHandle } from '../io/io.js';
import { assert } from '../lib/assert.js';
import { TesseraError, invalid, limitExceeded } from '../lib/errors.js';
import { FrameKind, opMax, type OutgoingFrame } from './frame.js';
import type { RpcLimits } from './options.js';
import { isPayloadStream, payloadByteLength } from './payload.js';
import type { RpcCallOptions, RpcPayload, RpcReply } from './types.js';

export type CallState = 'new' | 'queued' | 'inflight' | 'done';

export interface CallOwner {
  /**
   * The call timed out or was aborted (it is already 'done' and about to
   * reject); wasState says where it was: drop it from there.
   */
  abandon(call: Call, wasState: CallState): void;
}

export class Call implements OutgoingFrame {
  readonly kind = FrameKind.Request;
  requestId = 0;
  /** Connection attempts plus sends so far. */
  attempts = 0;
  state: CallState = 'new';
  /** A streamed payload can be read once: after the first send the call is never resent. */
  streamSent = false;
  readonly promise: Promise<RpcReply>;
  private resolveFn!: (reply: RpcReply) => void;
  private rejectFn!: (err: TesseraError) => void;
  private timer: TimerHandle | null = null;

  constructor(
    private readonly owner: CallOwner,
    private readonly clock: Clock,
    readonly op: number,
    readonly header: Uint8Array,
    readonly payload: RpcPayload,
    readonly payloadBytes: number,
    readonly idempotent: boolean,
    readonly deadlineMs: number,
    private readonly signal: AbortSignal | undefined,
    /** RpcCallOptions.replyBuffer. */
    readonly replyBuffer: ((lengthBytes: number) => Buffer) | undefined = undefined,
  ) {
    this.promise = new Promise<RpcReply>((resolve, reject) => {
      this.resolveFn = resolve;
      this.rejectFn = reject;
    });
  }

  /** Arms the deadline and the abort listener (or rejects at once if already aborted). */
  start(timeoutMs: number): void {
    if (this.signal?.aborted) {
      this.reject(abortedError(this.signal));
      return;
    }
    this.timer = this.clock.setTimeout(() => this.giveUp(new TesseraError('Timeout', `no reply to op ${this.op} within ${timeoutMs} ms`)), timeoutMs);
    // The call itself is the listener (handleEvent): no closure per call.
    this.signal?.addEventListener('abort', this, { once: true });
  }

  handleEvent(): void {
    this.giveUp(abortedError(this.signal));
  }

  get streamed(): boolean {
    return isPayloadStream(this.payload);
  }

  /** Whether a connection lost after this call was sent may send it again. */
  mayResend(nowMs: number, attemptsMax: number): boolean {
    return this.idempotent && !this.streamSent && this.attempts < attemptsMax && this.deadlineMs > nowMs;
  }

  resolve(reply: RpcReply): void {
    if (this.state === 'done') return;
    this.settle();
    this.resolveFn(reply);
  }

  reject(err: TesseraError): void {
    if (this.state === 'done') return;
    this.settle();
    this.rejectFn(err);
  }

  private giveUp(err: TesseraError): void {
    if (this.state === 'done') return;
    const wasState = this.state;
    this.settle();
    this.owner.abandon(this, wasState);
    this.rejectFn(err);
  }

  private settle(): void {
    this.state = 'done';
    if (this.timer !== null) {
      this.clock.clearTimeout(this.timer);
      this.timer = null;
    }
    this.signal?.removeEventListener('abort', this);
  }
}

/** Checks a call against the limits and builds it; throws InvalidArgument or LimitExceeded. */
export function createCall(
  owner: CallOwner,
  clock: Clock,
  limits: RpcLimits,
  request: { op: number; header: Uint8Array; payload: RpcPayload; options: RpcCallOptions | undefined },
): { call: Call; timeoutMs: number } {
  const { op, header, payload, options } = request;
  if (!Number.isInteger(op) || op < 0 || op > opMax) throw invalid(`op ${op} is not a u16`);
  if (header.byteLength > limits.frameHeaderBytesMax) {
    throw limitExceeded(`request header of ${header.byteLength} bytes (limit ${limits.frameHeaderBytesMax})`);
  }
  const payloadBytes = payloadByteLength(payload);
  if (header.byteLength + payloadBytes > limits.frameBytesMax) {
    throw limitExceeded(`request of ${header.byteLength + payloadBytes} bytes (limit ${limits.frameBytesMax})`);
  }
  const timeoutMs = options?.timeoutMs ?? limits.rpcTimeoutMsDefault;
  if (!(timeoutMs >= 0) || !Number.isFinite(timeoutMs)) throw invalid(`timeoutMs ${timeoutMs}`);
  const deadlineMs = clock.monotonicMs() + timeoutMs;
  const call = new Call(owner, clock, op, header, payload, payloadBytes, options?.idempotent === true, deadlineMs, options?.signal, options?.replyBuffer);
  return { call, timeoutMs };
}

export function closedError(what: string): TesseraError {
  return new TesseraError('Closed', `${what} is closed`);
}

function abortedError(signal: AbortSignal | undefined): TesseraError {
  return new TesseraError('Aborted', 'call aborted by its signal', { cause: signal?.reason });
}

/**
 * FIFO of calls waiting for a slot. Abandoned calls stay as tombstones until
 * they reach the head (forget() only fixes the count); a push compacts them
 * away when they outnumber the live calls, so memory stays O(live).
 */
export class CallQueue {
  private items: (Call | undefined)[] = [];
  private head = 0;
  /** Calls waiting (tombstones not counted). */
  live = 0;

  push(call: Call): void {
    if (this.items.length - this.head > 2 * this.live + 64) this.compact();
    call.state = 'queued';
    this.items.push(call);
    this.live++;
  }

  /** Puts a call back at the head (a retry goes before calls that never went out). */
  pushFront(call: Call): void {
    call.state = 'queued';
    if (this.head > 0) this.items[--this.head] = call;
    else this.items.unshift(call);
    this.live++;
  }

  shift(): Call | null {
    while (this.head < this.items.length) {
      const call = this.items[this.head];
      this.items[this.head++] = undefined;
      if (call !== undefined && call.state === 'queued') {
        this.live--;
        if (this.head === this.items.length) this.reset();
        return call;
      }
    }
    this.reset();
    return null;
  }

  /** A queued call gave up (its state is no longer 'queued'): its entry becomes a tombstone. */
  forget(call: Call): void {
    assert(call.state !== 'queued', 'a forgotten call has left the queued state');
    this.live--;
  }

  /** Removes and returns every waiting call, oldest first. */
  takeAll(): Call[] {
    const calls: Call[] = [];
    for (let i = this.head; i < this.items.length; i++) {
      const call = this.items[i];
      if (call !== undefined && call.state === 'queued') calls.push(call);
    }
    this.reset();
    this.live = 0;
    return calls;
  }

  private compact(): void {
    const kept = this.takeAll();
    for (const call of kept) this.push(call);
  }

  private reset(): void {
    this.items = [];
    this.head = 0;
  }
}
