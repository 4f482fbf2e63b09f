/**
 * Paces a daemon's recovery and backfill (the object copies its peering runs
 * push as primary): at most opsInflightMax copies at once over all its pgs,
 * and bytesPerSec on average (a token bucket holding one second's worth, so
 * a copy larger than the bucket waits until the debt is paid back).
 *
 * Priority: a waiting copy of a pg with fewer acting members (closer to its
 * last copy) goes before copies of healthier pgs; equal priorities keep
 * their order. Client I/O first: while client requests are in flight at the
 * daemon, every copy waits `yieldMs` before it starts, so a busy daemon
 * recovers more slowly but never starves its clients.
 *
 * Bounds: waiters are the copies peering runs have asked for, themselves
 * bounded by the pgs' copy concurrency (peering.ts) times the pg count.
 */
import type { Clock } from '../io/io.js';
import { TesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';

export interface RecoveryThrottleOptions {
  /** Default limits.recoveryBytesPerSecDefault; 0 or Infinity: no byte limit. */
  bytesPerSec?: number;
  /** Default limits.recoveryOpsInflightMaxDefault. */
  opsInflightMax?: number;
  /** Default limits.recoveryYieldMs. */
  yieldMs?: number;
}

interface Waiter {
  priority: number;
  seq: number;
  signal: AbortSignal | undefined;
  start: () => void;
  fail: (err: Error) => void;
}

export class RecoveryThrottle {
  readonly bytesPerSec: number;
  readonly opsInflightMax: number;
  readonly yieldMs: number;
  private running = 0;
  private readonly waiting: Waiter[] = [];
  private seq = 0;
  /** Token bucket: bytes available as of refilledMs (may go negative: debt). */
  private tokens: number;
  private refilledMs: number;
  /** Figures for status and tests. */
  readonly stats = { copies: 0, bytes: 0, waitedMs: 0 };

  constructor(
    private readonly clock: Clock,
    options: RecoveryThrottleOptions = {},
    /** Client requests in flight at the daemon now. */
    private readonly clientInflight: () => number = () => 0,
  ) {
    const rate = options.bytesPerSec ?? limits.recoveryBytesPerSecDefault;
    this.bytesPerSec = rate > 0 ? rate : Infinity;
    this.opsInflightMax = Math.max(1, options.opsInflightMax ?? limits.recoveryOpsInflightMaxDefault);
    this.yieldMs = options.yieldMs ?? limits.recoveryYieldMs;
    this.tokens = Number.isFinite(this.bytesPerSec) ? this.bytesPerSec : 0;
    this.refilledMs = clock.monotonicMs();
  }

  /**
   * Runs one copy of `sizeBytes` (an estimate is fine: the object's size)
   * when a slot is free and the byte budget allows. `priority`: lower first.
   */
  async run<T>(o: { priority: number; sizeBytes: number; signal?: AbortSignal }, copy: () => Promise<T>): Promise<T> {
    const startedMs = this.clock.monotonicMs();
    await this.acquire(o.priority, o.signal);
    try {
      if (this.yieldMs > 0 && this.clientInflight() > 0) await this.clock.sleep(this.yieldMs, o.signal);
      await this.spend(o.sizeBytes, o.signal);
      this.stats.waitedMs += this.clock.monotonicMs() - startedMs;
      const result = await copy();
      this.stats.copies++;
      this.stats.bytes += o.sizeBytes;
      return result;
    } finally {
      this.release();
    }
  }

  private acquire(priority: number, signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted) return Promise.reject(aborted());
    if (this.running < this.opsInflightMax && this.waiting.length === 0) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        priority,
        seq: this.seq++,
        signal,
        start: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        fail: reject,
      };
      const onAbort = (): void => {
        const i = this.waiting.indexOf(waiter);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(aborted());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      // Sorted by (priority, seq): the first waiter is the next to run.
      let at = this.waiting.length;
      while (at > 0 && this.waiting[at - 1]!.priority > priority) at--;
      this.waiting.splice(at, 0, waiter);
    });
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next.start(); // the slot passes on
    else this.running--;
  }

  private async spend(bytes: number, signal: AbortSignal | undefined): Promise<void> {
    if (!Number.isFinite(this.bytesPerSec)) return;
    const now = this.clock.monotonicMs();
    this.tokens = Math.min(this.bytesPerSec, this.tokens + ((now - this.refilledMs) * this.bytesPerSec) / 1000);
    this.refilledMs = now;
    this.tokens -= bytes;
    if (this.tokens < 0) await this.clock.sleep(Math.ceil((-this.tokens * 1000) / this.bytesPerSec), signal);
  }
}

const aborted = (): TesseraError => new TesseraError('Aborted', 'recovery copy cancelled');
