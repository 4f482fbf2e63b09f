/**
 * An erasure-coded write that one member refuses (docs/testing.md, finding
 * 4): a real cluster (3 daemon processes, EC 2+1, every disk in every pg),
 * one daemon restarted with a capacity that leaves 1 MiB above its store's
 * reserve and a full ratio the map never reaches, so the primary sends the
 * write and that member's stage fails NoSpace while the others stage theirs.
 * The write must fail for the client; once the pg has peered again no
 * member may hold a shard of the object or a staging object of the pg (the
 * rollback removed the other members' stagings), and the object reads as
 * absent. With the member's real capacity back, the same write succeeds and
 * every shard checks out.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { TesseraClient } from '../src/client/client.js';
import { objectToPg } from '../cluster/placement.js';
import { setDiskState } from '../cluster/map-edit.js';
import { isStagingOf, stagingNs } from '../src/daemon/ec-record.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { startDaemonProcess } from './helpers/daemon-process.js';
import { checkShards } from './cluster-ec-helpers.js';
import { listEveryPg, retryFor } from './helpers/wait.js';

const POOL = 'ec';
const MiB = 1024 * 1024;
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 }, failureDomain: 'host', pgCount: 4 }],
    liveness: { heartbeatIntervalMs: 200, nearFullRatio: 0.98, fullRatio: 0.99 },
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

/** The pg's staging objects on one member. */
async function stagingsOn(diskId: number, poolId: number, pg: number): Promise<string[]> {
  const store = cluster.storeOf(diskId);
  try {
    const page = await store.listObjects({ ns: stagingNs(poolId), limit: 1000 });
    return page.objects.map((o) => o.name).filter((n) => isStagingOf(n, pg));
  } finally {
    await store.close();
  }
}

it('a write one member refuses with NoSpace fails and leaves no shard and no staging object on any member', async () => {
  const { client } = cluster;
  const info = client.pool(POOL);
  await client.put(POOL, 'before', randomBytes(64 * 1024));
  const name = 'refused';
  const pg = objectToPg(info, name);
  const members = client.view.pg(info, pg).members;
  const full = members[1]!;

  // Restart the member with 1 MiB above its store's reserve (4 MiB at this size); the map's full ratio is not reached.
  const store = cluster.storeOf(full);
  const usedBytes = (await store.statfs()).usedBytes;
  await store.close();
  const capacityBytes = usedBytes + 5 * MiB;
  await cluster.killDisk(full);
  cluster.daemons.set(full, await startDaemonProcess({ diskPath: cluster.diskDir(full), clusterId: 'testcluster', diskId: full, map: `127.0.0.1:${cluster.mapd.port}`, capacityBytes }));
  await cluster.mapd.service.change((m) => setDiskState(m, full, { up: true }));
  await retryFor(60_000, () => listEveryPg(client, [POOL]));
  expect((await cluster.mapd.service.current()).disks.find((d) => d.id === full)?.space ?? 'ok').not.toBe('full');

  // 6 MiB: 3 MiB per shard, more than the member has room for. A client that gives up after 5 s (it retries Unavailable).
  const data = randomBytes(6 * MiB);
  const short = await TesseraClient.connect({ io: cluster.io, mapService: cluster.mapd.service, timeoutMs: 5000 });
  try {
    const outcome = await short.put(POOL, name, data).then(
      () => 'acknowledged',
      (err: unknown) => (err as Error).message,
    );
    console.log(JSON.stringify({ case: 'refused', capacityBytes, outcome }));
    expect(outcome).not.toBe('acknowledged');
    expect(outcome).toMatch(/NoSpace|full/);
  } finally {
    await short.close();
  }

  // Once the pg is active again (peered: the stagings rolled back), nothing of the write is left anywhere.
  await retryFor(60_000, () => listEveryPg(client, [POOL]));
  await expect(client.read(POOL, name)).rejects.toMatchObject({ code: 'NotFound' });
  await checkShards(cluster, POOL, name, null);
  for (const d of members) expect(await stagingsOn(d, info.id, pg), `staging objects of pg ${info.id}.${pg} on disk ${d}`).toEqual([]);

  // Its real capacity back: the write goes through and every shard checks out.
  await cluster.killDisk(full);
  await cluster.restartDisk(full);
  await cluster.mapd.service.change((m) => setDiskState(m, full, { up: true }));
  await retryFor(60_000, () => listEveryPg(client, [POOL]));
  await client.put(POOL, name, data);
  expect((await client.read(POOL, name)).equals(data)).toBe(true);
  await checkShards(cluster, POOL, name, data);
  for (const d of members) expect(await stagingsOn(d, info.id, pg), `staging objects of pg ${info.id}.${pg} on disk ${d}`).toEqual([]);
}, 180_000);
