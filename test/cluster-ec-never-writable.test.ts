/**
 * An erasure-coded pg whose history never had its write quorum (a 2+1 pool
 * created while one of its 4 hosts is down: pgs on that host have 2 shards)
 * holds no data, so when a disk added later shifts its members' positions it
 * needs no rebuild and goes active. Before (7f50ad2), members at a new
 * position counted as needing one, fewer than k were left as sources, and
 * such a pg stayed incomplete, waiting for the down disk (review of 7f50ad2,
 * helper-74). Real cluster: 4 daemon processes, then a fifth.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { addDisk, createPool, nextDiskId } from '../cluster/map-edit.js';
import { HOLE, pgMembers } from '../cluster/placement.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { retryFor } from './helpers/wait.js';
import { expectPgsAtPrimaries, pgsAtPrimaries } from './helpers/pg-states.js';

let cluster: TestCluster;
beforeAll(async () => {
  cluster = await startTestCluster({ hosts: 4, disksPerHost: 1, pools: [], liveness: { downGraceMs: 3000, outIntervalMs: 600_000, heartbeatIntervalMs: 250 } });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

it('an erasure-coded pg that never took writes goes active when a disk add shifts its positions', async () => {
  const spec = { id: 1, name: 'ec', redundancy: { type: 'erasure' as const, dataShards: 2, parityShards: 1 }, failureDomain: 'host' as const, pgCount: 8 };
  const base = await cluster.mapd.service.current();
  const withPool = createPool(base, spec);
  const pool = withPool.pools.find((p) => p.id === 1)!;
  const planned = addDisk(withPool, { id: nextDiskId(withPool), host: 'host1', weight: 1, address: '127.0.0.1:1', up: true, in: true });
  // The pgs of a down disk whose positions the add shifts so that fewer than k members keep theirs.
  const shifted = (victim: number): number[] =>
    [...Array(pool.pgCount).keys()].filter((pg) => {
      const before = pgMembers(withPool, pool, pg);
      if (!before.includes(victim)) return false;
      let keep = 0;
      let moved = 0;
      pgMembers(planned, pool, pg).forEach((d, position) => {
        if (d === HOLE || d === victim) return;
        if (!before.includes(d) || before[position] === d) keep++;
        else moved++;
      });
      return moved > 0 && keep < 2;
    });
  const victim = cluster.diskIds.map((d) => ({ d, pgs: shifted(d) })).sort((a, b) => b.pgs.length - a.pgs.length)[0]!;
  console.log(JSON.stringify({ victim: victim.d, shiftedPgs: victim.pgs }));
  expect(victim.pgs.length).toBeGreaterThan(0);

  await cluster.killDisk(victim.d);
  let created = 0;
  await cluster.mapd.service.change((m) => {
    created = m.epoch + 1;
    return createPool(m, spec);
  });
  await retryFor(30_000, () => expectPgsAtPrimaries(cluster, 'ec', 'active', created), 250);
  const beforeAdd = (await cluster.mapd.service.current()).epoch;
  const added = await cluster.addDisk({ host: 'host1' });
  await retryFor(30_000, async () => {
    if (!(await cluster.mapd.service.current()).disks.find((d) => d.id === added)?.up) throw new Error('the added disk is not up yet');
  });
  // Every pg active; those whose positions shifted in an interval after the add.
  await retryFor(30_000, async () => {
    await expectPgsAtPrimaries(cluster, 'ec', 'active', created);
    const s = await pgsAtPrimaries(cluster, 'ec');
    for (const pg of victim.pgs) if (s.get(pg)!.intervalStart <= beforeAdd) throw new Error(`pg 1.${pg} has not started an interval since the add`);
  }, 250);
}, 180_000);
