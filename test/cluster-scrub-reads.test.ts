/**
 * An erasure-coded deep scrub reads each shard once (real daemon processes,
 * a 2+1 pool of one pg on 3 hosts: every disk holds one position of every
 * object). Each daemon serves its metrics, whose
 * `tessera_store_read_bytes_total` counts the bytes its store read from its
 * segment files; background scrubs are off, so the scrub on demand is the
 * only reader between two scrapes.
 *
 * A deep scrub of the clean pg (`tessera pg scrub --deep`, unpaced) reads on
 * every member about its shard bytes: at least the shards' length, and less
 * than 1.5 times it (before, the members' own deep read and the primary's
 * parity check read each shard twice: about 2x). A data shard's bytes
 * flipped on disk (its checksum fails) are still reported `corrupt` on that
 * member, now found by the primary's read, and `--repair` rebuilds it; a
 * second deep scrub is clean and the object reads back byte-exact.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { objectToPg } from '../cluster/placement.js';
import { dataNs } from '../src/daemon/pg-log.js';
import { runTessera } from './helpers/daemon-process.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { corruptObjectOnDisk } from './helpers/corrupt.js';
import { scrape, sum } from './helpers/prometheus.js';
import { seededRng } from './helpers/random.js';

let cluster: TestCluster;
const POOL = 'ec';
const UNIT_BYTES = 4096;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 }, failureDomain: 'host', pgCount: 1 }],
    daemonArgs: ['--metrics', '127.0.0.1:0', '--scrub-interval-ms', '0', '--deep-scrub-interval-ms', '0'],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const tessera = (args: string[]): ReturnType<typeof runTessera> => runTessera(args, cluster.mapd.port);

/** Each disk's store read bytes so far (its metrics endpoint). */
async function readBytes(): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const [diskId, d] of cluster.daemons) out.set(diskId, sum(await scrape(d.metricsPort!), 'tessera_store_read_bytes_total'));
  return out;
}

/** A deep scrub of the pool's one pg: its JSON document, and the bytes each disk's store read meanwhile. */
async function deepScrub(extra: string[] = []): Promise<{ code: number; doc: { inconsistencies: number; repaired: number; pgs: Array<{ bytesRead: number; inconsistencies: Array<{ object: string; diskId: number; kinds: string[]; repaired: boolean }> }> }; read: Map<number, number> }> {
  const before = await readBytes();
  const r = await tessera(['pg', 'scrub', `${POOL}.0`, '--deep', '--bytes-per-sec', '0', '--json', ...extra]);
  const after = await readBytes();
  expect(r.stdout, r.stderr).not.toBe('');
  return { code: r.code, doc: JSON.parse(r.stdout), read: new Map([...after].map(([d, n]) => [d, n - before.get(d)!])) };
}

it('a deep scrub of an erasure-coded pg reads each shard once, and still finds a corrupt shard', async () => {
  const { client } = cluster;
  const info = client.pool(POOL);
  const objects = new Map<string, Buffer>();
  let shardBytes = 0;
  for (let i = 0; i < 6; i++) {
    const data = randomBytes(1024 * 1024 + i * 50_000);
    objects.set(`r-${i}`, data);
    await client.put(POOL, `r-${i}`, data);
    shardBytes += Math.ceil(data.length / (2 * UNIT_BYTES)) * UNIT_BYTES;
  }

  const clean = await deepScrub();
  expect(clean.code, JSON.stringify(clean.doc)).toBe(0);
  expect(clean.doc.inconsistencies).toBe(0);
  expect(clean.doc.pgs[0]!.bytesRead).toBe(3 * shardBytes);
  console.log(JSON.stringify({ case: 'ec 2+1 deep scrub, bytes read per disk', shardBytesPerDisk: shardBytes, readBytes: Object.fromEntries(clean.read) }));
  for (const [diskId, n] of clean.read) {
    expect(n, `disk ${diskId} read ${n} bytes for ${shardBytes} shard bytes`).toBeGreaterThanOrEqual(shardBytes);
    expect(n, `disk ${diskId} read ${n} bytes for ${shardBytes} shard bytes`).toBeLessThan(1.5 * shardBytes);
  }

  // A data shard (position 1) fails its checksum: the primary's read finds it, the members' deep read names it.
  const [, corruptOn] = client.view.pg(info, objectToPg(info, 'r-2')).members as [number, number, number];
  const store = cluster.storeOf(corruptOn);
  let shard: Buffer;
  try {
    shard = await store.read({ ns: dataNs(info.id, 1), name: 'r-2' });
  } finally {
    await store.close();
  }
  expect((await corruptObjectOnDisk(cluster.diskDir(corruptOn), shard, seededRng(7))).length).toBeGreaterThan(0);
  const found = await deepScrub();
  expect(found.code).toBe(1);
  expect(found.doc.pgs[0]!.inconsistencies.map((i) => `${i.object}@${i.diskId}:${i.kinds.join(',')}`)).toEqual([`r-2@${corruptOn}:corrupt`]);
  const repair = await deepScrub(['--repair']);
  expect(repair.code, JSON.stringify(repair.doc)).toBe(0);
  expect(repair.doc.repaired).toBe(1);
  const again = await deepScrub();
  expect(again.code, JSON.stringify(again.doc)).toBe(0);
  expect(again.doc.inconsistencies).toBe(0);
  for (const [name, data] of objects) expect((await client.read(POOL, name)).equals(data), name).toBe(true);
}, 180_000);
