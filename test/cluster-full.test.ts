/**
 * Full disks on a real cluster: every daemon's store is capped
 * (--capacity-bytes) and the map daemon's ratios are low, so writing fills
 * disks past near full and then full within seconds. Daemons report their
 * space in heartbeats; the map daemon records `space` per disk in the map;
 * primaries then refuse writes to any pg with a full member with the typed
 * error Full (before the store runs out: no NoSpace), while reads and
 * deletes go on, cluster-wide.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { isTesseraError } from '../src/lib/errors.js';
import { objectToPg, pgMembers } from '../cluster/placement.js';

const POOL = 'rep';
const CAPACITY_BYTES = 64 * 1024 * 1024;
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 }],
    capacityBytes: CAPACITY_BYTES,
    liveness: { downGraceMs: 3000, outIntervalMs: 60_000, heartbeatIntervalMs: 200, nearFullRatio: 0.25, fullRatio: 0.4 },
  });
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

it('refuses writes with Full once a member is over the full ratio; reads and deletes work', async () => {
  const { client } = cluster;
  const written = new Map<string, Buffer>();
  let full: unknown = null;
  let sawNearFull = false;
  // Every pg has all three disks (size 3 on 3 hosts): they fill together.
  for (let i = 0; i < 400 && full === null; i++) {
    const data = randomBytes(256 * 1024);
    try {
      await client.put(POOL, `fill-${i}`, data);
      written.set(`fill-${i}`, data);
    } catch (err) {
      full = err;
    }
    if (!sawNearFull) sawNearFull = (await cluster.mapd.service.current()).disks.some((d) => d.space === 'nearFull');
  }
  expect(isTesseraError(full, 'Full'), `expected Full, got ${String(full)}`).toBe(true);
  expect(sawNearFull).toBe(true);
  const map = await cluster.mapd.service.current();
  expect(map.disks.some((d) => d.space === 'full')).toBe(true);
  console.log(JSON.stringify({ case: 'full', capacityBytes: CAPACITY_BYTES, fullRatio: 0.4, writtenObjects: written.size, writtenBytes: written.size * 256 * 1024, space: map.disks.map((d) => d.space ?? 'ok') }));
  // Another object, in any pg: refused with the same typed error (every pg has a full member).
  const pool = map.pools.find((p) => p.name === POOL)!;
  const other = Array.from({ length: 64 }, (_, i) => `other-${i}`).find((n) => objectToPg(pool, n) !== objectToPg(pool, 'fill-0'))!;
  expect(pgMembers(map, pool, objectToPg(pool, other)).some((id) => map.disks.find((d) => d.id === id)?.space === 'full')).toBe(true);
  await expect(client.put(POOL, other, Buffer.from('small'))).rejects.toMatchObject({ code: 'Full' });
  await expect(client.transact(POOL, 'fill-0', [{ type: 'setXattr', name: 'x', value: Buffer.from('y') }])).rejects.toMatchObject({ code: 'Full' });
  // Reads work.
  for (const [name, data] of written) expect((await client.read(POOL, name)).equals(data), name).toBe(true);
  // Deletes work.
  const victims = [...written.keys()].slice(0, 10);
  for (const name of victims) {
    await client.remove(POOL, name);
    written.delete(name);
    await expect(client.stat(POOL, name)).rejects.toMatchObject({ code: 'NotFound' });
  }
  for (const [name, data] of written) expect((await client.read(POOL, name)).equals(data), name).toBe(true);
}, 120_000);
