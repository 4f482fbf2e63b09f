/**
 * Recovery progress bookkeeping (src/daemon/recovery-progress.ts) on a
 * hand-driven clock, and the pgStats message it travels in: log-based
 * recovery's object count is exact, a backfill's is extrapolated from the
 * share of the pg's key range listed until the listing ends, bytes left are
 * estimated from the mean size copied, the rate covers the recent window
 * only, for the daemon and by pool; a pgStats document without the
 * recovery, per-pool rate or lease fields (an older daemon) still decodes,
 * one with them round-trips, and a malformed one is a ProtocolError.
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

const pgOf = (pg: number, pgCount: number, poolId = 1): { key: string; pg: number; pool: { id: number; pgCount: number } } => ({ key: `${poolId}.${pg}`, pg, pool: { id: poolId, pgCount } });

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
  expect(progress.rate()).toMatchObject({ objectsPerSec: 5, bytesPerSec: 5000, windowMs: 4000, pools: [{ poolId: 1, objectsPerSec: 5, bytesPerSec: 5000 }] });
  clock.advance(RATE_WINDOW_MS + 1000);
  expect(progress.rate()).toMatchObject({ objectsPerSec: 0, bytesPerSec: 0, pools: [] });
});

it('the rate by pool: each pool counts its own copies over the same window', () => {
  const clock = manualClock();
  const progress = new RecoveryProgress(clock);
  const a = progress.begin(pgOf(0, 2, 3));
  const b = progress.begin(pgOf(1, 2, 2));
  for (let s = 0; s < 2; s++) {
    for (let i = 0; i < 4; i++) a.copied(100);
    b.copied(5000);
    clock.advance(1000);
  }
  expect(progress.rate()).toEqual({
    objectsPerSec: 5,
    bytesPerSec: 5400,
    windowMs: 2000,
    pools: [
      { poolId: 2, objectsPerSec: 1, bytesPerSec: 5000 },
      { poolId: 3, objectsPerSec: 4, bytesPerSec: 400 },
    ],
  });
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

it('pgStats: the per-pool rate and the lease are optional (older daemons), round-trip, and are checked strictly', () => {
  const reply: PgStatsReply = {
    diskId: 4,
    epoch: 9,
    pgs: [],
    recovery: { objectsRecovered: 3, bytesRecovered: 300, objectsPerSec: 2, bytesPerSec: 200, rateWindowMs: 1000, pgs: [], pools: [{ poolId: 2, objectsPerSec: 2, bytesPerSec: 200 }] },
    lease: { held: false, lapsedForMs: 4200, lapses: 1, refusals: 17 },
  };
  expect(decodePgStats(encodePgStats(reply))).toEqual(reply);
  const never: PgStatsReply = { diskId: 4, epoch: 9, pgs: [], lease: { held: false, lapsedForMs: null, lapses: 0, refusals: 0 } };
  expect(decodePgStats(encodePgStats(never))).toEqual(never);
  const { pools: _pools, ...olderRecovery } = reply.recovery!;
  expect(decodePgStats(encodePgStats({ ...reply, recovery: olderRecovery, lease: undefined }))).toEqual({ diskId: 4, epoch: 9, pgs: [], recovery: olderRecovery });
  const mutate = (change: (doc: { recovery: { pools: unknown }; lease: Record<string, unknown> }) => void): Buffer => {
    const doc = JSON.parse(encodePgStats(reply).toString()) as { recovery: { pools: unknown }; lease: Record<string, unknown> };
    change(doc);
    return Buffer.from(JSON.stringify(doc));
  };
  const malformed = [
    mutate((d) => (d.recovery.pools = {})),
    mutate((d) => (d.recovery.pools = [{ poolId: -1, objectsPerSec: 1, bytesPerSec: 1 }])),
    mutate((d) => (d.recovery.pools = [{ poolId: 2, objectsPerSec: 'fast', bytesPerSec: 1 }])),
    mutate((d) => (d.lease = 'lapsed' as unknown as Record<string, unknown>)),
    mutate((d) => (d.lease.held = 'no')),
    mutate((d) => (d.lease.lapsedForMs = -5)),
    mutate((d) => (d.lease.lapsedForMs = undefined)),
    mutate((d) => Object.assign(d.lease, { held: true })),
    mutate((d) => (d.lease.refusals = 1.5)),
  ];
  for (const m of malformed) expect(() => decodePgStats(m), m.toString()).toThrow(expect.objectContaining({ code: 'ProtocolError' }));
});
