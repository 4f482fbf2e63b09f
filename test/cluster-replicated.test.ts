/**
 * A replicated pool on a real cluster (6 daemon processes, 3 hosts): objects
 * of mixed sizes read back byte-exact; overwrites at offsets; xattrs and
 * omap; listing; a daemon killed -9: everything still readable, writes go on
 * (size 3, min_size 2); it restarts and catches up, never serving old data.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';

let cluster: TestCluster;
const POOL = 'rep';

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 2,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 16 }],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

it('writes and reads objects of mixed sizes, overwrites at offsets, xattrs, omap, listing', async () => {
  const { client } = cluster;
  const objects = new Map<string, Buffer>();
  const sizes = [0, 1, 100, 4096, 70_000, 1024 * 1024, 5 * 1024 * 1024];
  await Promise.all(
    sizes.map(async (size, i) => {
      const data = randomBytes(size);
      objects.set(`obj-${i}`, data);
      await client.put(POOL, `obj-${i}`, data);
    }),
  );
  for (const [name, data] of objects) expect((await client.read(POOL, name)).equals(data), name).toBe(true);
  const patch = randomBytes(3000);
  await client.transact(POOL, 'obj-5', [{ type: 'write', offsetBytes: 10_000, data: patch }]);
  patch.copy(objects.get('obj-5')!, 10_000);
  expect((await client.read(POOL, 'obj-5')).equals(objects.get('obj-5')!)).toBe(true);
  await client.transact(POOL, 'obj-2', [
    { type: 'setXattr', name: 'color', value: Buffer.from('blue') },
    { type: 'omapSet', entries: [[Buffer.from('k1'), Buffer.from('v1')]] },
  ]);
  expect((await client.getXattrs(POOL, 'obj-2')).get('color')?.toString()).toBe('blue');
  expect((await client.omapGet(POOL, 'obj-2', [Buffer.from('k1')]))[0]?.toString()).toBe('v1');
  const stat = await client.stat(POOL, 'obj-6');
  expect(stat.sizeBytes).toBe(5 * 1024 * 1024);
  expect(stat.version.version).toBeGreaterThan(0);
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.list(POOL, { limit: 3, ...(cursor ? { cursor } : {}) });
    names.push(...page.names);
    cursor = page.cursor;
  } while (cursor);
  expect(names.sort()).toEqual([...objects.keys()].sort());
  await client.remove(POOL, 'obj-0');
  await expect(client.stat(POOL, 'obj-0')).rejects.toMatchObject({ code: 'NotFound' });
});

it('a write the stores would refuse with the pg log ops added fails LimitExceeded at once (no repeer, no retry loop), plain or conditional', async () => {
  const { client } = cluster;
  const { limits } = await import('../src/lib/limits.js');
  // txnOpsMax client ops pass the client and the wire; with the version xattr and the log ops they are more.
  const xattrs = Array.from({ length: limits.txnOpsMax - 1 }, (_, i) => ({ type: 'setXattr' as const, name: `x${i}`, value: Buffer.from('v') }));
  await expect(client.transact(POOL, 'many-ops', [{ type: 'create' }, ...xattrs])).rejects.toMatchObject({ code: 'LimitExceeded' });
  await expect(client.transact(POOL, 'many-ops', [{ type: 'setXattr', name: 'first', value: Buffer.from('v') }, ...xattrs])).rejects.toMatchObject({ code: 'LimitExceeded' });
  await expect(client.stat(POOL, 'many-ops')).rejects.toMatchObject({ code: 'NotFound' });
  // The pg serves on, and the same object takes a write of fewer ops.
  await client.transact(POOL, 'many-ops', [{ type: 'create' }, ...xattrs.slice(0, 100)]);
  expect([...(await client.getXattrs(POOL, 'many-ops')).keys()].filter((k) => k.startsWith('x'))).toHaveLength(100);
});

it('keeps serving with a daemon killed, and the daemon catches up when it returns', async () => {
  const { client } = cluster;
  const before = new Map<string, Buffer>();
  for (let i = 0; i < 40; i++) {
    const data = randomBytes(1000 + i * 100);
    before.set(`k-${i}`, data);
    await client.put(POOL, `k-${i}`, data);
  }
  const victim = 2;
  await cluster.killDisk(victim);
  for (const [name, data] of before) expect((await client.read(POOL, name)).equals(data), `degraded read ${name}`).toBe(true);
  const after = new Map<string, Buffer>();
  for (let i = 0; i < 40; i++) {
    const data = randomBytes(2000);
    after.set(`k-${i}`, data);
    await client.put(POOL, `k-${i}`, data);
  }
  await cluster.restartDisk(victim);
  // Requests carry the client's map epoch (the victim up): primaries catch up, peer, recover it, then answer.
  await client.view.refresh();
  for (const [name, data] of after) expect((await client.read(POOL, name)).equals(data), `after return ${name}`).toBe(true);
  // The returned disk holds the new data, never the old: read its store directly.
  const { StoreClient } = await import('../src/protocol/store-client.js');
  const { createTcpClient } = await import('../src/rpc/index.js');
  const { dataNs } = await import('../src/daemon/pg-log.js');
  const daemon = cluster.daemons.get(victim)!;
  const store = new StoreClient(createTcpClient({ io: cluster.io, host: '127.0.0.1', port: daemon.port }));
  const pool = client.pool(POOL);
  const { objectToPg } = await import('../cluster/placement.js');
  let checked = 0;
  for (const [name, data] of after) {
    const placement = client.view.pg(pool, objectToPg(pool, name));
    if (!placement.members.includes(victim)) continue;
    expect((await store.read({ ns: dataNs(pool.id, 0), name })).equals(data), `member copy of ${name}`).toBe(true);
    checked++;
  }
  await store.close();
  expect(checked).toBeGreaterThan(0);
});

it('loses no acknowledged write when the primary is killed -9 under 8 writers', async () => {
  const { client } = cluster;
  const pool = client.pool(POOL);
  const { objectToPg } = await import('../cluster/placement.js');
  // Writers overwrite their own objects; the victim is the primary of the first writer's first object.
  const names = Array.from({ length: 8 }, (_, w) => Array.from({ length: 5 }, (_, j) => `w${w}-o${j}`));
  const victim = client.view.pg(pool, objectToPg(pool, names[0]![0]!)).primary;
  const last = new Map<string, Buffer>();
  let stop = false;
  let acked = 0;
  const writer = async (w: number): Promise<void> => {
    for (let round = 0; !stop; round++) {
      const name = names[w]![round % 5]!;
      const data = randomBytes(500 + ((w * 997 + round * 31) % 20_000));
      await client.put(POOL, name, data);
      last.set(name, data);
      acked++;
    }
  };
  const writers = names.map((_, w) => writer(w));
  await new Promise((r) => setTimeout(r, 300));
  await cluster.killDisk(victim);
  await new Promise((r) => setTimeout(r, 1500));
  stop = true;
  await Promise.all(writers);
  await client.view.refresh();
  for (const [name, data] of last) expect((await client.read(POOL, name)).equals(data), name).toBe(true);
  expect(acked).toBeGreaterThan(40);
  await cluster.restartDisk(victim);
  await client.view.refresh();
  for (const [name, data] of last) expect((await client.read(POOL, name)).equals(data), `${name} after the old primary returned`).toBe(true);
});
