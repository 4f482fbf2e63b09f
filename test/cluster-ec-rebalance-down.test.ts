/**
 * A disk added to an erasure-coded pool (2+1, host level, 4 hosts x 1 disk,
 * 8 pgs) while one disk that held shards is down (killed, not yet out). The
 * add shifts positions, so some pgs' current members own fewer than k of
 * their positions and peering must read the disks that held them in the
 * last active interval; with the killed disk gone, its position of those
 * pgs has no holder left. k = 2 of 3 positions remain readable, which is
 * enough: every object must read back byte-exact while the disk is still
 * down (writes to its pgs wait: an EC write needs all k+m shards). Then the
 * disk comes back: every object reads back, overwrites and new writes work,
 * and every object's shards on the pg's current members are consistent
 * (checkShards).
 *
 * Proves the case is exercised: the killed disk is chosen so that at least
 * one pg has no up member left that was acting before the add (its history
 * is only on the old holders, which peering must query: before, such a pg
 * stayed incomplete until the killed disk came back). Nothing is timed:
 * waits poll with generous bounds.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { TestCluster } from './helpers/cluster.js';
import { seededRng, testSeed } from './helpers/random.js';
import { retryFor } from './helpers/wait.js';
import { checkShards, startEc21HostCluster } from './cluster-ec-helpers.js';
import { pgMembers, objectToPg } from '../cluster/placement.js';
import { addDisk, nextDiskId } from '../cluster/map-edit.js';
import type { PoolInfo } from '../cluster/map.js';

const POOL = 'ec';
const KiB = 1024;
const seed = testSeed();
const rng = seededRng(seed);
let cluster: TestCluster;
const objects = new Map<string, Buffer>();

beforeAll(async () => {
  console.log(`cluster-ec-rebalance-down seed: ${seed} (TESSERA_SEED=${seed} to replay)`);
  cluster = await startEc21HostCluster(POOL);
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

async function readAll(): Promise<boolean> {
  for (const [name, data] of objects) if (!(await cluster.client.read(POOL, name)).equals(data)) throw new Error(`${name} differs`);
  return true;
}

it('a disk added while a shard holder is down: pgs rebuild from the k positions left, and stay consistent when it returns', async () => {
  const { client } = cluster;
  for (let i = 0; i < 80; i++) {
    const size = i < 3 ? [0, 1, 8 * KiB + 1][i]! : rng.int(i % 10 === 0 ? 1024 * KiB : 64 * KiB);
    objects.set(`obj-${i}`, rng.bytes(size));
  }
  for (const [name, data] of objects) await client.put(POOL, name, data);
  const before = await cluster.mapd.service.current();
  const pool: PoolInfo = before.pools.find((p) => p.name === POOL)!;
  // The disk to kill: the one that leaves most pgs with no up member that was acting before the add (their history is
  // then only on the old holders: peering must query those), placement being computed, the plan is exact.
  const planned = addDisk(before, { id: nextDiskId(before), host: 'host1', weight: 1, address: '127.0.0.1:1', up: true, in: true });
  const orphaned = (victim: number): number[] =>
    [...Array(pool.pgCount).keys()].filter((pg) => {
      const old = pgMembers(before, pool, pg);
      return old.includes(victim) && !pgMembers(planned, pool, pg).some((d) => d !== victim && old.includes(d));
    });
  const victim = cluster.diskIds.map((d) => ({ d, pgs: orphaned(d) })).sort((a, b) => b.pgs.length - a.pgs.length)[0]!;
  console.log(JSON.stringify({ case: 'ec-add-disk-holder-down', pgs: pool.pgCount, victim: victim.d, pgsWithoutOldMember: victim.pgs }));
  expect(victim.pgs.length, 'pgs whose up members after the add were none of them acting before').toBeGreaterThan(0);

  // Down, not out: its pgs keep it as a member with a hole at its position (writes to them wait: an EC pg writes all k+m shards).
  await cluster.killDisk(victim.d);
  const added = await cluster.addDisk({ host: 'host1' });
  expect(added).toBe(planned.disks.at(-1)!.id);

  // With the victim still down, every object reads back (pgs rebuilt from the k positions left).
  await retryFor(180_000, readAll, 500);
  const logs = [...cluster.daemons.values()].map((d) => d.stderr()).join('');
  for (const pg of victim.pgs) expect(logs).toMatch(new RegExp(`pg ${pool.id}\\.${pg}: no member was acting in epoch \\d+: its log .* from 2 of its disks`));

  // The victim returns: nothing reads stale, writes work again (an overwrite in a pg it held a shard of, a new object),
  // and every object's shards are consistent on the current members.
  await cluster.restartDisk(victim.d);
  await retryFor(180_000, readAll, 500);
  const overwritten = [...objects.keys()].find((name) => {
    const pg = objectToPg(pool, name);
    return victim.pgs.includes(pg);
  })!;
  const fresh = rng.bytes(12 * KiB);
  await retryFor(120_000, () => client.put(POOL, overwritten, fresh));
  objects.set(overwritten, fresh);
  const extra = rng.bytes(20 * KiB);
  await retryFor(120_000, () => client.put(POOL, 'after-return', extra));
  objects.set('after-return', extra);
  await readAll();
  await retryFor(
    180_000,
    async () => {
      for (const [name, data] of objects) await checkShards(cluster, POOL, name, data);
    },
    1000,
  );
}, 600_000);
