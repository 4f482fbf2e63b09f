/**
 * Read repair and pg scrub on a real cluster (3 daemon processes, one per
 * host, a replicated pool of size 3: every disk holds every pg).
 *
 * Read repair: bytes flipped in the primary's segment file make its copy fail
 * its checksum; a client read still returns the object byte-exact (the
 * primary fetched a replica's copy) and the primary's own copy is good again.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { isTesseraError } from '../src/lib/errors.js';
import { objectToPg } from '../cluster/placement.js';
import { dataNs } from '../src/daemon/pg-log.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { corruptObjectOnDisk } from './helpers/corrupt.js';
import { seededRng } from './helpers/random.js';

let cluster: TestCluster;
const POOL = 'rep';

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 }],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

function membersOf(name: string): number[] {
  const info = cluster.client.pool(POOL);
  return cluster.client.view.pg(info, objectToPg(info, name)).members;
}

/** A direct read of one disk's copy: the bytes, or the error code. */
async function directRead(diskId: number, name: string): Promise<Buffer | string> {
  const store = cluster.storeOf(diskId);
  try {
    return await store.read({ ns: dataNs(cluster.client.pool(POOL).id, 0), name });
  } catch (err) {
    return isTesseraError(err) ? err.code : String(err);
  } finally {
    await store.close();
  }
}

it('read repair: a corrupt primary copy is served from a replica and repaired', async () => {
  const { client } = cluster;
  const data = randomBytes(64 * 1024);
  await client.put(POOL, 'rr-1', data);
  await client.transact(POOL, 'rr-1', [
    { type: 'setXattr', name: 'color', value: Buffer.from('red') },
    { type: 'omapSet', entries: [[Buffer.from('k'), Buffer.from('v')]] },
  ]);
  const version = (await client.stat(POOL, 'rr-1')).version;
  const primary = membersOf('rr-1')[0]!;
  const places = await corruptObjectOnDisk(cluster.diskDir(primary), data, seededRng(1));
  expect(places.length).toBeGreaterThan(0);
  expect(await directRead(primary, 'rr-1')).toBe('Corrupt');
  expect((await client.read(POOL, 'rr-1')).equals(data)).toBe(true);
  const repaired = await directRead(primary, 'rr-1');
  expect(Buffer.isBuffer(repaired) && repaired.equals(data)).toBe(true);
  expect((await client.getXattrs(POOL, 'rr-1')).get('color')?.toString()).toBe('red');
  expect((await client.omapGet(POOL, 'rr-1', [Buffer.from('k')]))[0]?.toString()).toBe('v');
  expect((await client.stat(POOL, 'rr-1')).version).toEqual(version);
}, 60_000);
