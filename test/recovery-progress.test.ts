/**
 * Recovery progress bookkeeping (src/daemon/recovery-progress.ts) on a
 * hand-driven clock, and the pgStats message it travels in: log-based
 * recovery's object count is exact, a backfill's is extrapolated from the
 * share of the pg's key range listed until the listing ends, bytes left are
 * estimated from the mean size copied, the rate covers the recent window
 * only; a pgStats document without the recovery field (an older daemon)
 * still decodes, and one with it round-trips.
 */
import { expect, it } from 'vitest';
import type { Clock } from '../src/io/io.js';
import { pgSortKeyRange } from '../src/lib/hash.js';
import { RecoveryProgress, RATE_WINDOW_MS } from '../src/daemon/recovery-progress.js';
import { decodePgStats, encodePgStats, type PgStatsReply } from '../src/protocol/osd-admin-messages.js';

function manualClock(): Clock & { advance(ms: number): void } {
  let now = 1_000_000;
  return {
    nowMs: () => now,
    monotonicMs: () => now,
    setTimeout: () => {
      throw new Error('not used');
    },
    clearTimeout: () => undefined,
    yield: () => Promise.resolve(),
    sleep: () => Promise.resolve(),
    advance(ms) {
      now += ms;
    },
  } as Clock & { advance(ms: number): void };
}

const pgOf = (pg: number, pgCount: number): { key: string; pg: number; pool: { pgCount: number } } => ({ key: `1.${pg}`, pg, pool: { pgCount } });

it('log-based recovery: exact object count, bytes left from the mean size copied', () => {
  const clock = manualClock();
  const progress = new RecoveryProgress(clock);
  const run = progress.begin(pgOf(3, 8));
  expect(progress.of('1.3')).toBeNull(); // nothing planned yet: nothing to report
  run.planned(10);
  expect(progress.of('1.3')).toBe(run);
  expect(run.figures()).toMatchObject({ phase: 'recovery', objectsTotal: 10, objectsDone: 0, bytesLeft: null, objectsEstimated: false });
  run.copied(1000);
  run.copied(3000);
  expect(run.figures()).toMatchObject({ objectsTotal: 10, objectsDone: 2, bytesDone: 4000, bytesLeft: 8 * 2000 });
  // A new run of the same pg replaces it; copies of the old run still count in the daemon's totals.
  const next = progress.begin(pgOf(3, 8));
  run.copied(500);
  expect(next.figures().objectsDone).toBe(0);
  expect(progress.totals).toEqual({ objects: 3, bytes: 4500 });
  // The new run has copied nothing: its bytes left come from the daemon's mean.
  next.planned(3);
  expect(next.figures().bytesLeft).toBe(4500);
});

it('backfill: the object count is extrapolated from the listed share of the key range, exact once listed', () => {
  const progress = new RecoveryProgress(manualClock());
  const run = progress.begin(pgOf(1, 4));
  const range = pgSortKeyRange(1, 2);
  const listing = run.backfill();
  const quarter = range.start + (range.end - range.start) / 4 - 1;
  listing.page(1000, quarter, false);
  expect(run.figures()).toMatchObject({ phase: 'backfill', objectsTotal: 4000, objectsEstimated: true });
  listing.page(1000, range.start + (range.end - range.start) / 2 - 1, false);
  expect(run.figures().objectsTotal).toBe(4000);
  listing.page(1500, null, true);
  expect(run.figures()).toMatchObject({ objectsTotal: 3500, objectsEstimated: false });
  for (let i = 0; i < 3500; i++) run.copied(10);
  expect(run.figures()).toMatchObject({ objectsDone: 3500, bytesLeft: 0 });
});

it('the rate covers the recent window, from the first copy in it', () => {
  const clock = manualClock();
  const progress = new RecoveryProgress(clock);
  const run = progress.begin(pgOf(0, 1));
  run.planned(100);
  expect(progress.rate()).toMatchObject({ objectsPerSec: 0, bytesPerSec: 0 });
  for (let s = 0; s < 4; s++) {
    for (let i = 0; i < 5; i++) run.copied(1000);
    clock.advance(1000);
  }
  // 20 copies of 1000 bytes over 4 s.
  expect(progress.rate()).toMatchObject({ objectsPerSec: 5, bytesPerSec: 5000, windowMs: 4000 });
  clock.advance(RATE_WINDOW_MS + 1000);
  expect(progress.rate()).toMatchObject({ objectsPerSec: 0, bytesPerSec: 0 });
});

it('pgStats: the recovery field is optional (older daemons) and round-trips', () => {
  const old = Buffer.from(JSON.stringify({ diskId: 2, epoch: 7, pgs: [[1, 0, 'active', 5]] }));
  expect(decodePgStats(old)).toEqual({ diskId: 2, epoch: 7, pgs: [{ poolId: 1, pg: 0, state: 'active', intervalStart: 5 }] });
  const reply: PgStatsReply = {
    diskId: 2,
    epoch: 7,
    pgs: [{ poolId: 1, pg: 0, state: 'active', intervalStart: 5 }],
    recovery: {
      objectsRecovered: 12,
      bytesRecovered: 34_000,
      objectsPerSec: 1.5,
      bytesPerSec: 2500.25,
      rateWindowMs: 10_000,
      pgs: [{ poolId: 1, pg: 0, phase: 'backfill', background: true, objectsTotal: 40, objectsDone: 12, bytesDone: 34_000, bytesLeft: null, objectsEstimated: true, startedAtMs: 1_700_000_000_000 }],
    },
  };
  expect(decodePgStats(encodePgStats(reply))).toEqual(reply);
  const bad = JSON.parse(encodePgStats(reply).toString()) as { recovery: { pgs: Array<{ phase: string }> } };
  bad.recovery.pgs[0]!.phase = 'sideways';
  expect(() => decodePgStats(Buffer.from(JSON.stringify(bad)))).toThrow(/phase/);
});
