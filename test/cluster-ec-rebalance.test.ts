/**
 * Adding a disk to a cluster with an erasure-coded pool (2+1, host level,
 * 4 hosts x 1 disk, 8 pgs): placement may move a position to the new disk
 * and move a member from one position to another, so a pg's current
 * members can hold fewer than k shards at their own positions. Peering must
 * then read the shards where the last active interval left them (on the
 * disks that held each position, members or not), rebuild the new members'
 * shards and only then go active (the bug this file reproduces: such pgs
 * stayed incomplete for good).
 *
 * Proves: the add moves at least one pg whose current members own fewer
 * than k positions (else the case is not exercised); then every pg goes
 * active, every object reads back byte-exact through the client, and every
 * object's shards on its new members are consistent (checkShards: one
 * version, parity matches, data decodes). Nothing is timed: waits poll
 * with generous bounds.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { TestCluster } from './helpers/cluster.js';
import { seededRng, testSeed } from './helpers/random.js';
import { checkShards, startEc21HostCluster } from './cluster-ec-helpers.js';
import { retryFor } from './helpers/wait.js';
import { pgMembers } from '../cluster/placement.js';
import type { PoolInfo } from '../cluster/map.js';

const POOL = 'ec';
const KiB = 1024;
const seed = testSeed();
const rng = seededRng(seed);
let cluster: TestCluster;
const objects = new Map<string, Buffer>();

beforeAll(async () => {
  console.log(`cluster-ec-rebalance seed: ${seed} (TESSERA_SEED=${seed} to replay)`);
  cluster = await startEc21HostCluster(POOL);
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

it('a disk added: pgs whose members moved position are rebuilt from the disks that held the shards, then go active', async () => {
  const { client } = cluster;
  for (let i = 0; i < 120; i++) {
    const size = i < 4 ? [0, 1, 8 * KiB, 8 * KiB + 1][i]! : rng.int(i % 10 === 0 ? 3 * 1024 * KiB : 64 * KiB);
    objects.set(`obj-${i}`, rng.bytes(size));
  }
  for (const [name, data] of objects) await client.put(POOL, name, data);
  const before = await cluster.mapd.service.current();
  const pool: PoolInfo = before.pools.find((p) => p.name === POOL)!;
  await cluster.addDisk({ host: 'host1' });
  const after = await cluster.mapd.service.current();
  let shifted = 0;
  for (let pg = 0; pg < pool.pgCount; pg++) {
    const old = pgMembers(before, pool, pg);
    const now = pgMembers(after, pool, pg);
    const owned = now.filter((d, i) => d === old[i]).length;
    if (owned < 2) shifted++;
  }
  console.log(JSON.stringify({ case: 'ec-add-disk', pgs: pool.pgCount, shiftedBelowK: shifted }));
  expect(shifted, 'pgs whose current members own fewer than k of their positions').toBeGreaterThan(0);
  // Every object readable byte-exact through the client (reads retry while pgs peer).
  await retryFor(
    180_000,
    async () => {
      for (const [name, data] of objects) if (!(await client.read(POOL, name)).equals(data)) throw new Error(`${name} differs`);
    },
    250,
  );
  // The case was exercised: some primary read positions from the disks that held them in the last active interval.
  const logs = [...cluster.daemons.values()].map((d) => d.stderr()).join('');
  expect(logs).toMatch(/reading positions .* where the last active interval left them/);
  // Shards consistent on the new members (recovery finishes before activation, so this holds once reads work).
  for (const [name, data] of objects) await checkShards(cluster, POOL, name, data);
  // And writes work on the new members.
  const extra = rng.bytes(20 * KiB);
  await client.put(POOL, 'after-add', extra);
  expect((await client.read(POOL, 'after-add')).equals(extra)).toBe(true);
  await checkShards(cluster, POOL, 'after-add', extra);
}, 300_000);
