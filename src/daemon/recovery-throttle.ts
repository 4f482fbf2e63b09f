/**
 * Paces a daemon's recovery and backfill (the object copies its peering runs
 * push as primary): at most opsInflightMax copies at once over all its pgs,
 * and bytesPerSec on average (a token bucket holding one second's worth, so
 * a copy larger than the bucket waits until the debt is paid back).
 *
 * Two classes of copy. A blocking copy is one a pg waits for before it serves
 * I/O (recovery during peering: the primary catching up, members missing a
 * few objects, every erasure-coded rebuild): clients are waiting on it, so it
 * goes before every background copy, and it is counted in the byte budget
 * but never waits for it. A background copy fills a member while its pg
 * serves I/O without it (backfill, replicated pools).
 *
 * Within a class, a copy of a pg with fewer up-to-date members (closer to its
 * last copy) goes first; equal priorities keep their order.
 *
 * Client I/O first: while client requests are in flight at the daemon, or
 * one ended less than clientRecentMs ago, at most opsInflightBusyMax
 * background copies run at once (blocking ones are not held back). A busy
 * daemon so recovers more slowly but steadily (never fewer than one copy at
 * a time), and at full pace as soon as its clients pause.
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
  /** Background copies at once while client I/O is active; default limits.recoveryOpsInflightBusyMaxDefault (at most opsInflightMax). */
  opsInflightBusyMax?: number;
  /** Client I/O counts as active this long after a request ends; default limits.recoveryClientRecentMs. */
  clientRecentMs?: number;
}

/** The client requests a daemon serves, as the throttle sees them. */
export interface ClientActivity {
  /** Client requests in flight now. */
  inflight(): number;
  /** Clock.monotonicMs() when the last client request ended (-Infinity: none yet). */
  lastEndedMs(): number;
}

export interface CopyRequest {
  /** Lower first, within its class: the pg's up-to-date members (or shards beyond k). */
  priority: number;
  /** What the copy writes (an estimate is fine: the object's size). */
  sizeBytes: number;
  /** A pg waits for this copy before it serves I/O (see the class comment). */
  blocking: boolean;
  signal?: AbortSignal | undefined;
}

interface Waiter {
  blocking: boolean;
  priority: number;
  seq: number;
  start: () => void;
}

const idle: ClientActivity = { inflight: () => 0, lastEndedMs: () => -Infinity };

export class RecoveryThrottle {
  readonly bytesPerSec: number;
  readonly opsInflightMax: number;
  readonly opsInflightBusyMax: number;
  readonly clientRecentMs: number;
  private running = 0;
  private readonly waiting: Waiter[] = [];
  private seq = 0;
  /** Token bucket: bytes available as of refilledMs (may go negative: debt). */
  private tokens: number;
  private refilledMs: number;
  /** Figures for status and tests. */
  readonly stats = { copies: 0, bytes: 0, waitedMs: 0, blockingCopies: 0 };

  constructor(
    private readonly clock: Clock,
    options: RecoveryThrottleOptions = {},
    private readonly clients: ClientActivity = idle,
  ) {
    const rate = options.bytesPerSec ?? limits.recoveryBytesPerSecDefault;
    this.bytesPerSec = rate > 0 ? rate : Infinity;
    this.opsInflightMax = Math.max(1, options.opsInflightMax ?? limits.recoveryOpsInflightMaxDefault);
    this.opsInflightBusyMax = Math.min(this.opsInflightMax, Math.max(1, options.opsInflightBusyMax ?? limits.recoveryOpsInflightBusyMaxDefault));
    this.clientRecentMs = Math.max(0, options.clientRecentMs ?? limits.recoveryClientRecentMs);
    this.tokens = Number.isFinite(this.bytesPerSec) ? this.bytesPerSec : 0;
    this.refilledMs = clock.monotonicMs();
  }

  /** Runs one copy when a slot is free (for its class, given client activity) and the byte budget allows. */
  async run<T>(o: CopyRequest, copy: () => Promise<T>): Promise<T> {
    const startedMs = this.clock.monotonicMs();
    await this.acquire(o);
    try {
      await this.spend(o);
      this.stats.waitedMs += this.clock.monotonicMs() - startedMs;
      const result = await copy();
      this.stats.copies++;
      if (o.blocking) this.stats.blockingCopies++;
      this.stats.bytes += o.sizeBytes;
      return result;
    } finally {
      this.release();
    }
  }

  /** Copies running now, and waiting for a slot. */
  get counts(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }

  /** Client I/O in flight, or ended less than clientRecentMs ago. */
  clientsActive(): boolean {
    return this.clients.inflight() > 0 || this.clock.monotonicMs() - this.clients.lastEndedMs() < this.clientRecentMs;
  }

  private acquire(o: CopyRequest): Promise<void> {
    const { signal } = o;
    if (signal?.aborted) return Promise.reject(aborted());
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        blocking: o.blocking,
        priority: o.priority,
        seq: this.seq++,
        start: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        const i = this.waiting.indexOf(waiter);
        if (i < 0) return;
        this.waiting.splice(i, 1);
        reject(aborted());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      // Sorted by (blocking first, priority, seq): the first waiter is the next to run.
      let at = this.waiting.length;
      while (at > 0 && before(waiter, this.waiting[at - 1]!)) at--;
      this.waiting.splice(at, 0, waiter);
      this.startWaiters();
    });
  }

  private release(): void {
    this.running--;
    this.startWaiters();
  }

  /**
   * Starts waiters in order while their class has a free slot. The first waiter that must wait stops
   * the scan (order is kept). A background waiter held back for clients always has a copy running
   * ahead of it (opsInflightBusyMax >= 1), whose end looks again.
   */
  private startWaiters(): void {
    while (this.waiting.length > 0) {
      const next = this.waiting[0]!;
      let limit = this.opsInflightMax;
      if (!next.blocking && this.running >= this.opsInflightBusyMax && this.clientsActive()) limit = this.opsInflightBusyMax;
      if (this.running >= limit) return;
      this.waiting.shift();
      this.running++;
      next.start();
    }
  }

  /** Takes the copy's bytes from the bucket; a background copy then waits out any debt. */
  private async spend(o: CopyRequest): Promise<void> {
    if (!Number.isFinite(this.bytesPerSec)) return;
    const now = this.clock.monotonicMs();
    this.tokens = Math.min(this.bytesPerSec, this.tokens + ((now - this.refilledMs) * this.bytesPerSec) / 1000);
    this.refilledMs = now;
    this.tokens -= o.sizeBytes;
    if (this.tokens < 0 && !o.blocking) await this.clock.sleep(Math.ceil((-this.tokens * 1000) / this.bytesPerSec), o.signal);
  }
}

/** Whether waiter a runs before waiter b. */
function before(a: Waiter, b: Waiter): boolean {
  if (a.blocking !== b.blocking) return a.blocking;
  return a.priority < b.priority;
}

const aborted = (): TesseraError => new TesseraError('Aborted', 'recovery copy cancelled');
