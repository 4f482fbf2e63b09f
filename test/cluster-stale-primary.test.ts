/**
 * A primary that missed a map epoch must not serve reads from the interval
 * it knew before. The map service may skip epochs (its watch delivers "at
 * least the latest"): a daemon that was stopped or cut off while it was
 * marked down and up again can go straight from the epoch it had to the one
 * that marks it up, in which its pg has the same acting set and primary as
 * before. Meanwhile another primary took writes without it.
 *
 * The test makes that happen on purpose, on a real cluster (6 daemon
 * processes, EC 4+2, one shard per disk, the map service in its own
 * process): it SIGSTOPs the primary of an object's pg, kills the map service
 * (so the stopped daemon's watch cannot deliver the next epoch), restarts
 * it, marks the primary down, overwrites the object (now served by another
 * primary, with a hole), marks the primary up, and only then lets the primary
 * run again. The primary's next map is the last one; the client's read then
 * goes to it, and must return the last acknowledged bytes, never the old
 * object's size with the new shards' bytes (seed 475731535 of the fault
 * suite: "bytes of no version"), nor the old version. It does the same for
 * a partial overwrite (read-modify-write on the other primary) and checks
 * every shard is consistent at the end; and for a replicated pool, whose
 * primary would return its old copy (the interval rule is shared).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { objectToPg } from '../cluster/placement.js';
import { startFaultCluster, type FaultCluster } from './helpers/fault-cluster.js';
import { seededRng, testSeed } from './helpers/random.js';
import { checkShards } from './cluster-ec-helpers.js';
import type { TestCluster } from './helpers/cluster.js';
import { listEveryPg, retryFor } from './helpers/wait.js';

const POOL = 'ec';
const REP = 'rep';
const KiB = 1024;
const seed = testSeed();
const rng = seededRng(seed);
let cluster: FaultCluster;

beforeAll(async () => {
  console.log(`cluster-ec-stale-primary seed: ${seed} (TESSERA_SEED=${seed} to replay)`);
  cluster = await startFaultCluster({
    hosts: 3,
    disksPerHost: 2,
    pools: [
      { name: POOL, redundancy: { type: 'erasure', dataShards: 4, parityShards: 2 }, failureDomain: 'disk', pgCount: 4 },
      { name: REP, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 4 },
    ],
    clientTimeoutMs: 30_000,
  });
}, 60_000);

afterAll(async () => {
  if (cluster && process.env.TESSERA_DEBUG) for (const id of cluster.diskIds) console.log(`--- disk ${id} stderr ---\n${cluster.stderrOf(id)}`);
  await cluster?.stop();
}, 60_000);


/** Every pg of both pools active (a full listing touches each pg's primary). */
async function waitHealthy(): Promise<void> {
  await retryFor(60_000, async () => {
    await cluster.client.view.refresh();
    await listEveryPg(cluster.client, [POOL, REP]);
  });
}

function primaryOf(name: string, pool = POOL): number {
  const info = cluster.client.pool(pool);
  return cluster.client.view.pg(info, objectToPg(info, name)).primary;
}

/** The primary of `name` misses the epochs in which it was down; `change` runs while it is down. */
async function whilePrimaryMissesEpochs(name: string, change: () => Promise<void>, pool = POOL): Promise<number> {
  const victim = primaryOf(name, pool);
  cluster.pause(victim);
  try {
    // The stopped daemon's long poll dies with the map service: it cannot be told of the epochs below.
    await cluster.restartMap(100);
    await cluster.markDown([victim]);
    await cluster.client.view.refresh();
    expect(primaryOf(name, pool)).not.toBe(victim);
    await change();
    await cluster.markUp([victim]);
    await cluster.client.view.refresh();
    expect(primaryOf(name, pool)).toBe(victim);
  } finally {
    cluster.resume(victim);
  }
  return victim;
}

/**
 * Writes v1, makes the primary of `name` miss the epochs in which `change` makes v2, and checks that
 * the first read after the primary runs again returns v2, not v1 nor a mix, and v2 once healthy.
 */
async function expectNoStaleRead(pool: string, name: string, v1: Buffer, v2: Buffer, change: () => Promise<unknown>): Promise<void> {
  const { client } = cluster;
  await waitHealthy();
  await client.put(pool, name, v1);
  expect((await client.read(pool, name)).equals(v1)).toBe(true);
  const victim = await whilePrimaryMissesEpochs(
    name,
    async () => {
      await change();
    },
    pool,
  );
  // At once: the first read after the primary runs again.
  const got = await client.read(pool, name);
  expect({ length: got.length, v2: got.equals(v2), v1: got.equals(v1) }, `read at disk ${victim}`).toEqual({ length: v2.length, v2: true, v1: false });
  await waitHealthy();
  expect((await client.read(pool, name)).equals(v2)).toBe(true);
  if (pool === POOL) await checkShards(cluster as unknown as TestCluster, pool, name, v2);
}

it('a primary that skipped the epochs it was down in does not serve its old interval (whole overwrite)', async () => {
  const v1 = rng.bytes(300 * KiB + rng.int(100 * KiB));
  const v2 = rng.bytes(500 * KiB + rng.int(100 * KiB));
  await expectNoStaleRead(POOL, 'obj-full', v1, v2, () => cluster.client.put(POOL, 'obj-full', v2));
}, 120_000);

it('a primary that skipped the epochs it was down in does not serve its old interval (partial overwrite)', async () => {
  const v1 = rng.bytes(200 * KiB + rng.int(50 * KiB));
  const patch = rng.bytes(40 * KiB);
  const at = v1.length - 10 * KiB;
  const v2 = Buffer.concat([v1.subarray(0, at), patch]);
  await expectNoStaleRead(POOL, 'obj-partial', v1, v2, () => cluster.client.transact(POOL, 'obj-partial', [{ type: 'write', offsetBytes: at, data: patch }]));
}, 120_000);

it('a replicated primary that skipped the epochs it was down in does not serve its old copy', async () => {
  const v1 = rng.bytes(20 * KiB + rng.int(20 * KiB));
  const v2 = rng.bytes(20 * KiB + rng.int(20 * KiB));
  await expectNoStaleRead(REP, 'obj-rep', v1, v2, () => cluster.client.put(REP, 'obj-rep', v2));
}, 120_000);
