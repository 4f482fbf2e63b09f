/**
 * Recovery that meets latent corruption (3 daemon processes, one pg of a
 * replicated pool): a member is killed, an object is written meanwhile, then
 * the primary's copy of it is corrupted on disk. When the member returns,
 * the primary's recovery copy of that object fails its checksum; recovery
 * copies it from the other member at the same log head instead and mends
 * the primary's copy from there, so the pg becomes whole rather than
 * failing its peering over and over.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { corruptObjectOnDisk } from './helpers/corrupt.js';
import { seededRng, testSeed } from './helpers/random.js';
import { dataNs } from '../src/daemon/pg-log.js';

const POOL = 'rep';
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 1 }],
  });
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The member's copy, read straight from its store: 'ok', 'absent', 'corrupt', or 'other bytes'. */
async function copyOn(diskId: number, name: string, expected: Buffer): Promise<string> {
  const store = cluster.storeOf(diskId);
  try {
    const got = await store.read({ ns: dataNs(cluster.client.pool(POOL).id, 0), name });
    return got.equals(expected) ? 'ok' : 'other bytes';
  } catch (err) {
    const code = (err as { code?: string }).code;
    return code === 'NotFound' ? 'absent' : code === 'Corrupt' ? 'corrupt' : `error ${(err as Error).message}`;
  } finally {
    await store.close();
  }
}

it('copies an object whose copy on the source fails its checksum from another member, and mends the source', async () => {
  const seed = testSeed();
  console.log(`cluster-recovery-corrupt seed: ${seed}`);
  const { client } = cluster;
  await client.put(POOL, 'before', randomBytes(10_000));
  const [primary, replica, returning] = client.view.pg(client.pool(POOL), 0).acting;
  expect([primary, replica, returning].every((d) => d !== undefined)).toBe(true);
  await cluster.killDisk(returning!);
  const data = randomBytes(256 * 1024);
  await client.put(POOL, 'victim', data);
  expect(await copyOn(primary!, 'victim', data)).toBe('ok');
  expect(await copyOn(replica!, 'victim', data)).toBe('ok');
  const places = await corruptObjectOnDisk(cluster.diskDir(primary!), data, seededRng(seed));
  expect(places.length, 'the object bytes found in the primary segment files').toBeGreaterThan(0);
  expect(await copyOn(primary!, 'victim', data)).toBe('corrupt');

  await cluster.restartDisk(returning!);
  const deadline = Date.now() + 60_000;
  let state = '';
  for (;;) {
    state = `primary ${await copyOn(primary!, 'victim', data)}, returning member ${await copyOn(returning!, 'victim', data)}`;
    if (state === 'primary ok, returning member ok') break;
    if (Date.now() > deadline) throw new Error(`recovery did not complete: ${state}`);
    await sleep(200);
  }
  expect(await copyOn(replica!, 'victim', data)).toBe('ok');
  expect((await client.read(POOL, 'victim')).equals(data)).toBe(true);
}, 120_000);
