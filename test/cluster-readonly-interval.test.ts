/**
 * An interval below the pool's write quorum (min_size) serves reads only and
 * acknowledges nothing, so the pg history does not record it: a later
 * interval need not hear from its members (Ceph's maybe_went_rw).
 *
 * Real cluster (3 daemon processes, 3 hosts, size 3 / min_size 2): with two
 * disks killed every pg goes active on the third alone (reads served,
 * writes refused NoQuorum); that disk is killed and the other two come back.
 * Their pgs must go active: they hold every write the last interval that
 * could take writes acknowledged. Recording the one-member interval made
 * them wait, incomplete, for the killed disk (test/cluster-stall met it at
 * cluster start: a pg active on its one member up, which was stopped before
 * the full interval's peering ended).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { systemIo } from '../src/io/system.js';
import { TesseraClient } from '../src/client/client.js';
import { createTcpClient } from '../src/rpc/index.js';
import { OsdOpcode } from '../src/protocol/osd-messages.js';
import { decodePgStats } from '../src/protocol/osd-admin-messages.js';
import { isTesseraError } from '../src/lib/errors.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { retryFor } from './helpers/wait.js';

const POOL = 'rep';
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 }],
    // Nothing is marked out during the test: the pgs keep their three members.
    liveness: { downGraceMs: 3000, outIntervalMs: 600_000, heartbeatIntervalMs: 250 },
  });
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

/** Every pg of the pool active at its primary, in an interval at or after `sinceEpoch`; else throws saying which is not. */
async function expectActive(sinceEpoch: number): Promise<void> {
  const map = await cluster.client.view.refresh();
  const pool = cluster.client.pool(POOL);
  const states = new Map<string, { state: string; intervalStart: number }>();
  for (const d of map.disks.filter((x) => x.up)) {
    const at = d.address.lastIndexOf(':');
    const rpc = createTcpClient({ io: cluster.io, host: d.address.slice(0, at), port: Number(d.address.slice(at + 1)) });
    try {
      const stats = decodePgStats((await rpc.call(OsdOpcode.pgStats, Buffer.alloc(0), [], { timeoutMs: 5000 })).header);
      for (const s of stats.pgs) if (s.poolId === pool.id) states.set(`${s.pg}@${d.id}`, s);
    } finally {
      await rpc.close();
    }
  }
  for (let pg = 0; pg < pool.pgCount; pg++) {
    const { primary, acting } = cluster.client.view.pg(pool, pg);
    const s = states.get(`${pg}@${primary}`);
    if (s?.state !== 'active' || s.intervalStart < sinceEpoch) {
      throw new Error(`pg ${pool.id}.${pg} (acting ${acting.join(',')}) at its primary ${primary}: ${s ? `${s.state} since epoch ${s.intervalStart}` : 'not reported'}, want active since ${sinceEpoch}`);
    }
  }
}

it('pgs active on fewer than min_size members take no writes, and do not make later intervals wait for them', async () => {
  const written = new Map<string, Buffer>();
  for (let i = 0; i < 32; i++) {
    const data = randomBytes(500 + i * 97);
    await cluster.client.transact(POOL, `before-${i}`, [{ type: 'writeFull', data }]);
    written.set(`before-${i}`, data);
  }

  // Two of three down: every pg is active on disk 0 alone.
  await cluster.killDisk(1);
  await cluster.killDisk(2);
  const aloneEpoch = (await cluster.mapd.service.current()).epoch;
  await retryFor(30_000, () => expectActive(aloneEpoch), 250);
  for (const [name, data] of written) expect((await cluster.client.read(POOL, name)).equals(data), name).toBe(true);
  // It acknowledges no write (a client with a short budget sees why).
  const hasty = await TesseraClient.connect({ io: systemIo(), mapService: cluster.mapd.service, timeoutMs: 2000 });
  try {
    const refused = await hasty.transact(POOL, 'while-alone', [{ type: 'writeFull', data: randomBytes(100) }]).then(
      () => null,
      (err: unknown) => err,
    );
    expect(isTesseraError(refused, 'NoQuorum'), String(refused)).toBe(true);
  } finally {
    await hasty.close();
  }

  // The lone member goes; the other two come back. They hold every acknowledged write: the pgs go active.
  await cluster.killDisk(0);
  await cluster.restartDisk(1);
  await cluster.restartDisk(2);
  const backEpoch = await retryFor(30_000, async () => {
    const map = await cluster.mapd.service.current();
    if (!map.disks.filter((d) => d.id !== 0).every((d) => d.up)) throw new Error('disks 1 and 2 not up yet');
    return map.epoch;
  });
  await retryFor(30_000, () => expectActive(backEpoch), 250);
  for (const [name, data] of written) expect((await cluster.client.read(POOL, name)).equals(data), name).toBe(true);
  for (let i = 0; i < 16; i++) {
    const data = randomBytes(700 + i * 31);
    await cluster.client.transact(POOL, `after-${i}`, [{ type: 'writeFull', data }]);
    written.set(`after-${i}`, data);
  }

  // Disk 0 returns and catches up.
  await cluster.restartDisk(0);
  const allEpoch = await retryFor(30_000, async () => {
    const map = await cluster.mapd.service.current();
    if (!map.disks.every((d) => d.up)) throw new Error('disk 0 not up yet');
    return map.epoch;
  });
  await retryFor(30_000, () => expectActive(allEpoch), 250);
  for (const [name, data] of written) expect((await cluster.client.read(POOL, name)).equals(data), name).toBe(true);
}, 150_000);
