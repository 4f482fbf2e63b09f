/**
 * The cluster core at volume, on real daemon processes: 1000 objects of mixed
 * sizes (0 B to 20 MiB, most small) written to the replicated pool by 16
 * writers and read back byte-exact; objects overwritten at offsets; and the
 * epoch rules: replication and recovery messages carrying an epoch older than
 * the pg's interval are refused (StaleEpoch), one carrying a newer epoch makes
 * the daemon fetch it first.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { seededRng, testSeed } from './helpers/random.js';
import { OsdOpcode, encodePgRef, encodePush, encodeRepop } from '../src/protocol/osd-messages.js';
import { dataNs } from '../src/daemon/pg-log.js';
import { objectToPg } from '../cluster/placement.js';
import { setDiskState } from '../cluster/map-edit.js';
import { createTcpClient } from '../src/rpc/index.js';

let cluster: TestCluster;
const POOL = 'rep';
const seed = testSeed();

beforeAll(async () => {
  console.log(`cluster-bulk seed: ${seed}`);
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 2,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 32 }],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

function sizeOf(rng: ReturnType<typeof seededRng>): number {
  const r = rng.int(100);
  if (r < 60) return rng.int(8 * 1024);
  if (r < 90) return rng.int(512 * 1024);
  if (r < 98) return rng.int(4 * 1024 * 1024);
  return rng.int(20 * 1024 * 1024 + 1);
}

it('writes 1000 objects of mixed sizes and reads them back byte-exact', async () => {
  const rng = seededRng(seed);
  const sizes = Array.from({ length: 1000 }, () => sizeOf(rng));
  const digests = new Map<string, string>();
  const content = (i: number): Buffer => seededRng(seed + i).bytes(sizes[i]!);
  let next = 0;
  const writer = async (): Promise<void> => {
    while (next < sizes.length) {
      const i = next++;
      const data = content(i);
      await cluster.client.put(POOL, `bulk-${i}`, data);
      digests.set(`bulk-${i}`, createHash('sha256').update(data).digest('hex'));
    }
  };
  await Promise.all(Array.from({ length: 16 }, writer));
  let read = 0;
  const reader = async (): Promise<void> => {
    while (read < sizes.length) {
      const i = read++;
      const got = await cluster.client.read(POOL, `bulk-${i}`);
      expect(got.length, `size of bulk-${i}`).toBe(sizes[i]);
      expect(createHash('sha256').update(got).digest('hex'), `bytes of bulk-${i}`).toBe(digests.get(`bulk-${i}`));
    }
  };
  await Promise.all(Array.from({ length: 8 }, reader));
  console.log(`cluster-bulk: 1000 objects, ${(sizes.reduce((a, b) => a + b, 0) / 1024 / 1024).toFixed(1)} MiB written and verified`);
}, 300_000);

it('overwrites at offsets, extending and inside objects', async () => {
  const rng = seededRng(seed ^ 0x5a5a);
  for (let o = 0; o < 10; o++) {
    const name = `patch-${o}`;
    let model = rng.bytes(rng.int(300_000));
    await cluster.client.put(POOL, name, model);
    for (let w = 0; w < 10; w++) {
      const offset = rng.int(model.length + 50_000);
      const data = rng.bytes(1 + rng.int(40_000));
      await cluster.client.transact(POOL, name, [{ type: 'write', offsetBytes: offset, data }]);
      if (offset + data.length > model.length) model = Buffer.concat([model, Buffer.alloc(offset + data.length - model.length)]);
      data.copy(model, offset);
    }
    expect((await cluster.client.read(POOL, name)).equals(model), name).toBe(true);
  }
});

it('refuses replication and recovery messages from an older interval, and catches up to a newer epoch', async () => {
  const { client } = cluster;
  const pool = client.pool(POOL);
  await client.put(POOL, 'epoch-probe', Buffer.from('x'));
  const pg = objectToPg(pool, 'epoch-probe');
  const placement = client.view.pg(pool, pg);
  const replica = placement.acting.find((d) => d !== placement.primary)!;
  const third = placement.acting.find((d) => d !== placement.primary && d !== replica)!;
  const before = client.view.epoch;
  // A new interval for this pg: its third member goes down; the pg re-peers without it.
  await cluster.mapd.service.change((m) => setDiskState(m, third, { up: false }));
  await client.view.refresh();
  await client.put(POOL, 'epoch-probe', Buffer.from('y'));
  const rpc = createTcpClient({ io: cluster.io, host: '127.0.0.1', port: Number(client.view.address(replica)!.split(':')[1]) });
  try {
    const entry = { epoch: before, version: 999_999, object: 'epoch-probe', kind: 'modify' as const, request: null };
    const staleRepop = encodeRepop({ epoch: before, poolId: pool.id, pg, entry, ops: [{ type: 'writeFull', id: { ns: dataNs(pool.id, 0), name: 'epoch-probe' }, data: Buffer.from('from an old primary') }] });
    await expect(rpc.call(OsdOpcode.repop, staleRepop.header, staleRepop.payload, { timeoutMs: 10_000 })).rejects.toMatchObject({ code: 'StaleEpoch' });
    const stalePush = encodePush({ epoch: before, poolId: pool.id, pg, ops: [{ type: 'remove', id: { ns: dataNs(pool.id, 0), name: 'epoch-probe' }, ifExists: true }] });
    await expect(rpc.call(OsdOpcode.pgPush, stalePush.header, stalePush.payload, { timeoutMs: 10_000 })).rejects.toMatchObject({ code: 'StaleEpoch' });
    expect((await client.read(POOL, 'epoch-probe')).toString()).toBe('y');
    // A message from the future: the replica fetches that epoch from the map service first, then judges it.
    const next = (await cluster.mapd.service.change((m) => setDiskState(m, third, { up: true }))).epoch;
    const futureQuery = encodePgRef({ epoch: next, poolId: pool.id, pg });
    const reply = await rpc.call(OsdOpcode.pgQuery, futureQuery, [], { timeoutMs: 10_000 });
    expect(reply.header.length).toBeGreaterThan(0);
  } finally {
    await rpc.close();
  }
  await client.view.refresh();
  expect((await client.read(POOL, 'epoch-probe')).toString()).toBe('y');
});
