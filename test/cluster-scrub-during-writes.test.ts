/**
 * An erasure-coded deep scrub finds corrupt shards of objects written while
 * it runs. The members' maps are shallow (the primary's parity check is the
 * checksum read, 57c75d3); an object written after them (here an xattr, which
 * leaves its data chunks as they are) is compared again under its lock, and
 * that look must read its shards deep: a shallow one dropped the corrupt
 * chunk's checksum failure, and the pg was recorded clean (review of
 * 57c75d3, helper-75: 0 of 5 found). Real cluster: 2+1 over 3 hosts, one pg.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { objectToPg } from '../cluster/placement.js';
import { dataNs } from '../src/daemon/pg-log.js';
import { runTessera } from './helpers/daemon-process.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { corruptObjectOnDisk } from './helpers/corrupt.js';
import { seededRng } from './helpers/random.js';
import { sleep } from './helpers/wait.js';

let cluster: TestCluster;
const POOL = 'ec';

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 }, failureDomain: 'host', pgCount: 1 }],
    daemonArgs: ['--scrub-interval-ms', '0', '--deep-scrub-interval-ms', '0'],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const tessera = (args: string[]): ReturnType<typeof runTessera> => runTessera(args, cluster.mapd.port);

interface Found {
  object: string;
  diskId: number;
  kinds: string[];
}

it('reports corrupt shards of objects written during an erasure-coded deep scrub', async () => {
  const { client } = cluster;
  const info = client.pool(POOL);
  // Clean objects scrubbed first (the pg lists in name order), so the writes below land before the others are.
  for (let i = 0; i < 10; i++) await client.put(POOL, `a-${i}`, randomBytes(2 * 1024 * 1024));
  const names = Array.from({ length: 5 }, (_, i) => `r-${i}`);
  for (const name of names) await client.put(POOL, name, randomBytes(1024 * 1024));
  const [, corruptOn] = client.view.pg(info, objectToPg(info, names[0]!)).members as [number, number, number];
  for (const name of names) {
    const store = cluster.storeOf(corruptOn);
    let shard: Buffer;
    try {
      shard = await store.read({ ns: dataNs(info.id, 1), name });
    } finally {
      await store.close();
    }
    // The second half of position 1's shard: the xattr written below does not touch it.
    expect((await corruptObjectOnDisk(cluster.diskDir(corruptOn), shard.subarray(300_000), seededRng(7))).length).toBeGreaterThan(0);
  }
  // Paced (30 MiB of clean shards first at 2 MB/s): the writes land while it runs, before it reaches them.
  const scrub = tessera(['pg', 'scrub', `${POOL}.0`, '--deep', '--bytes-per-sec', '2000000', '--json']);
  await sleep(1500);
  for (const name of names) await client.transact(POOL, name, [{ type: 'setXattr', name: 'user.touch', value: Buffer.from('x') }]);
  const during = await scrub;
  // Exit code 1: inconsistencies left unrepaired (no --repair).
  expect(during.code, during.stderr).toBe(1);
  const found = (JSON.parse(during.stdout) as { pgs: Array<{ inconsistencies: Found[] }> }).pgs[0]!.inconsistencies;
  console.log(JSON.stringify({ foundDuringWrites: found.map((i) => `${i.object}@${i.diskId}:${i.kinds.join('+')}`) }));
  expect(found.map((i) => i.object).sort()).toEqual(names);
  for (const i of found) {
    expect(i.diskId).toBe(corruptOn);
    expect(i.kinds).toContain('corrupt');
  }
}, 180_000);
