/**
 * Recovery progress, as a primary sees it: for each pg it is primary of, the
 * copies its current peering run (or the members it fills in the background
 * while the pg is active) has planned and made, and for the whole daemon the
 * objects and bytes recovered since it started and the rate over a recent
 * window. `tessera status`, `tessera recovery watch` (through the pgStats
 * query: src/daemon/osd-admin.ts) and the daemon's metrics read it.
 *
 * What is known, and what is estimated:
 * - log-based recovery knows its object set (the objects its log entries
 *   name): objectsTotal is exact;
 * - a backfill learns its object count by listing the source's objects of the
 *   pg, page by page, in sort-key order (the bit-reversed placement hash,
 *   uniform over the pg's key range): until the listing ends, the count is
 *   extrapolated from the share of the range listed so far (an estimate);
 * - bytes are learned one object at a time as each is copied, so bytes left
 *   is always an estimate (objects left times the mean size copied so far,
 *   this pg's or else this daemon's), null before anything was copied.
 * Erasure-coded pgs count the shard bytes written to their targets.
 *
 * The rate is kept for the daemon and by pool (`tessera status` shows each
 * pool's recovery).
 *
 * Bounds: one entry per pg this daemon is primary of (a new peering run
 * replaces its pg's entry); the rate window holds RATE_WINDOW_MS / 1000
 * one-second buckets, each with one entry per pool copied in that second.
 */
import type { Clock } from '../io/io.js';
import { pgSortKeyRange } from '../lib/hash.js';
import type { PgRecoveryStat, PoolRecoveryRate } from '../protocol/osd-admin-messages.js';

/** What peering reports as it recovers a pg (src/daemon/peering.ts, ec-peering.ts, ec-recovery.ts). */
export interface RecoveryProgressSink {
  /** Log-based recovery: `objects` more objects to make equal on a member. */
  planned(objects: number): void;
  /** A backfill starts: its object count is found by listing the source; report each page to the listing. */
  backfill(): BackfillListing;
  /** One object made equal on its target(s): `sizeBytes` written (0: removed, or already equal). */
  copied(sizeBytes: number): void;
}

export interface BackfillListing {
  /** A page of the source's listing: `count` names, the last with sort key `lastSortKey`; `complete` when no page follows. */
  page(count: number, lastSortKey: number | null, complete: boolean): void;
}

/** One pg's recovery as reported to operators (pgStats): the wire's PgRecoveryStat without the pg's name and its background flag. */
export type PgRecoveryFigures = Omit<PgRecoveryStat, 'poolId' | 'pg' | 'background'>;

export const RATE_WINDOW_MS = 10_000;
const BUCKET_MS = 1000;

class Listing implements BackfillListing {
  listed = 0;
  /** Share of the pg's key range listed, 0..1. */
  fraction = 0;
  complete = false;

  constructor(private readonly range: { start: number; end: number }) {}

  page(count: number, lastSortKey: number | null, complete: boolean): void {
    this.listed += count;
    this.complete = complete;
    if (complete) this.fraction = 1;
    else if (lastSortKey !== null) this.fraction = Math.min(1, Math.max(this.fraction, (lastSortKey - this.range.start + 1) / (this.range.end - this.range.start)));
  }

  /** The source's object count: exact once listed, else extrapolated (at least what was listed). */
  estimate(): number {
    if (this.complete || this.fraction <= 0) return this.listed;
    return Math.max(this.listed, Math.round(this.listed / this.fraction));
  }
}

/** One peering run's progress for one pg. */
export class PgRecoveryProgress implements RecoveryProgressSink {
  private plannedObjects = 0;
  private readonly listings: Listing[] = [];
  objectsDone = 0;
  bytesDone = 0;
  readonly startedAtMs: number;

  constructor(
    private readonly tracker: RecoveryProgress,
    private readonly poolId: number,
    private readonly range: { start: number; end: number },
    clock: Clock,
  ) {
    this.startedAtMs = clock.nowMs();
  }

  planned(objects: number): void {
    this.plannedObjects += objects;
  }

  backfill(): BackfillListing {
    const l = new Listing(this.range);
    this.listings.push(l);
    return l;
  }

  copied(sizeBytes: number): void {
    this.objectsDone++;
    this.bytesDone += sizeBytes;
    this.tracker.recordCopy(sizeBytes, this.poolId);
  }

  /** Whether this run planned any copy (else there is nothing to report). */
  get hasWork(): boolean {
    return this.plannedObjects > 0 || this.listings.length > 0;
  }

  figures(): PgRecoveryFigures {
    const objectsTotal = Math.max(this.objectsDone, this.plannedObjects + this.listings.reduce((n, l) => n + l.estimate(), 0));
    const objectsLeft = objectsTotal - this.objectsDone;
    const mean = this.objectsDone > 0 ? this.bytesDone / this.objectsDone : this.tracker.meanObjectBytes();
    return {
      phase: this.listings.length > 0 ? 'backfill' : 'recovery',
      objectsTotal,
      objectsDone: this.objectsDone,
      bytesDone: this.bytesDone,
      bytesLeft: objectsLeft === 0 ? 0 : mean === null ? null : Math.round(objectsLeft * mean),
      objectsEstimated: this.listings.some((l) => !l.complete),
      startedAtMs: this.startedAtMs,
    };
  }
}

/** A daemon's recovery progress: the current run of each pg, totals, and the recent rate. */
export class RecoveryProgress {
  private readonly runs = new Map<string, PgRecoveryProgress>();
  /** Objects and bytes recovered by this daemon since it started (every copy made as primary). */
  readonly totals = { objects: 0, bytes: 0 };
  /** One-second buckets of copies, oldest first. */
  private readonly buckets: Array<{ atMs: number; objects: number; bytes: number; byPool: Map<number, { objects: number; bytes: number }> }> = [];

  constructor(private readonly clock: Clock) {}

  /** A peering run of `pg` starts: its progress replaces the previous run's (whose later copies still count in the totals). */
  begin(pg: { key: string; pg: number; pool: { id: number; pgCount: number } }): PgRecoveryProgress {
    const run = new PgRecoveryProgress(this, pg.pool.id, pgSortKeyRange(pg.pg, Math.log2(pg.pool.pgCount)), this.clock);
    this.runs.set(pg.key, run);
    return run;
  }

  /** The current run of a pg, if it planned copies. */
  of(pgKey: string): PgRecoveryProgress | null {
    const run = this.runs.get(pgKey);
    return run?.hasWork ? run : null;
  }

  /** Forgets a pg (no longer primary of it, or its pool is gone). */
  forget(pgKey: string): void {
    this.runs.delete(pgKey);
  }

  keys(): string[] {
    return [...this.runs.keys()];
  }

  recordCopy(sizeBytes: number, poolId: number): void {
    this.totals.objects++;
    this.totals.bytes += sizeBytes;
    const now = this.clock.monotonicMs();
    let last = this.buckets[this.buckets.length - 1];
    if (!last || now - last.atMs >= BUCKET_MS) {
      last = { atMs: now, objects: 0, bytes: 0, byPool: new Map() };
      this.buckets.push(last);
    }
    last.objects++;
    last.bytes += sizeBytes;
    const pool = last.byPool.get(poolId);
    if (pool) {
      pool.objects++;
      pool.bytes += sizeBytes;
    } else last.byPool.set(poolId, { objects: 1, bytes: sizeBytes });
    this.prune(now);
  }

  /** Mean bytes per object this daemon has recovered, or null before the first copy. */
  meanObjectBytes(): number | null {
    return this.totals.objects > 0 ? this.totals.bytes / this.totals.objects : null;
  }

  /**
   * Copies per second over the last RATE_WINDOW_MS (or since the first copy in it, at least one
   * second, so a recovery that just started is not diluted by the idle time before it).
   */
  rate(): { objectsPerSec: number; bytesPerSec: number; windowMs: number; pools: PoolRecoveryRate[] } {
    const now = this.clock.monotonicMs();
    this.prune(now);
    const first = this.buckets[0];
    if (!first) return { objectsPerSec: 0, bytesPerSec: 0, windowMs: RATE_WINDOW_MS, pools: [] };
    const spanMs = Math.min(RATE_WINDOW_MS, Math.max(BUCKET_MS, now - first.atMs));
    let objects = 0;
    let bytes = 0;
    const pools = new Map<number, { objects: number; bytes: number }>();
    for (const b of this.buckets) {
      objects += b.objects;
      bytes += b.bytes;
      for (const [poolId, p] of b.byPool) {
        const sum = pools.get(poolId) ?? { objects: 0, bytes: 0 };
        sum.objects += p.objects;
        sum.bytes += p.bytes;
        pools.set(poolId, sum);
      }
    }
    const perSec = (n: number): number => (n * 1000) / spanMs;
    return {
      objectsPerSec: perSec(objects),
      bytesPerSec: perSec(bytes),
      windowMs: Math.round(spanMs),
      pools: [...pools].sort(([a], [b]) => a - b).map(([poolId, p]) => ({ poolId, objectsPerSec: perSec(p.objects), bytesPerSec: perSec(p.bytes) })),
    };
  }

  private prune(now: number): void {
    while (this.buckets.length > 0 && now - this.buckets[0]!.atMs > RATE_WINDOW_MS) this.buckets.shift();
  }
}
