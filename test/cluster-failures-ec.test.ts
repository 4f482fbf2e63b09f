/**
 * Failure detection and recovery of an erasure-coded pool (4+2, one shard per
 * disk, 7 disks so a replacement exists): a daemon SIGSTOPped is marked down
 * and out by the map daemon; its positions move to the seventh disk, EC
 * peering rebuilds the shards there (src/daemon/ec-recovery.ts) until every
 * object has all 6 shards at the same version on its 6 members (read from
 * their stores); every object stays readable byte-exact (degraded reads from
 * any 4 shards) throughout; SIGCONT brings the disk back up and in.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { HOLE, objectToPg, pgMembers } from '../cluster/placement.js';
import { dataNs } from '../src/daemon/pg-log.js';
import type { ClusterMap } from '../cluster/map.js';
import { waitFor } from './helpers/wait.js';

const POOL = 'ec';
let cluster: TestCluster;
const objects = new Map<string, Buffer>();

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 7,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'erasure', dataShards: 4, parityShards: 2 }, failureDomain: 'host', pgCount: 8 }],
    liveness: { downGraceMs: 3000, outIntervalMs: 3000, heartbeatIntervalMs: 250 },
  });
  for (let i = 0; i < 60; i++) objects.set(`ec-${i}`, randomBytes(i % 10 === 0 ? 200_000 : 100 + ((i * 7919) % 40_000)));
  const names = [...objects.keys()];
  for (let i = 0; i < names.length; i += 6) await Promise.all(names.slice(i, i + 6).map((n) => cluster.client.put(POOL, n, objects.get(n)!)));
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

/** Every object has its 6 shards, at one version, on the members at their positions. */
async function allShards(timeoutMs: number): Promise<ClusterMap> {
  let missing = '';
  return waitFor(() => `all shards (${missing})`, timeoutMs, async () => {
    const map = await cluster.mapd.service.current();
    const pool = map.pools.find((p) => p.name === POOL)!;
    const stores = new Map<number, ReturnType<TestCluster['storeOf']>>();
    try {
      for (const name of objects.keys()) {
        const members = pgMembers(map, pool, objectToPg(pool, name));
        const versions = new Set<string>();
        for (let position = 0; position < members.length; position++) {
          const id = members[position]!;
          missing = `${name} shard ${position} on disk ${id} (members ${members.join()}, epoch ${map.epoch})`;
          if (id === HOLE || !map.disks.find((d) => d.id === id)?.up) return undefined;
          let store = stores.get(id);
          if (!store) stores.set(id, (store = cluster.storeOf(id)));
          const x = await store.getXattrs({ ns: dataNs(pool.id, position), name }).catch(() => null);
          const v = x?.get('_v');
          if (!v) return undefined;
          versions.add(v.toString('hex'));
        }
        if (versions.size !== 1) return undefined;
      }
      return map;
    } finally {
      await Promise.all([...stores.values()].map((s) => s.close()));
    }
  });
}

it('rebuilds the shards of a stopped, marked-out disk on its replacement; reads stay byte-exact', async () => {
  const map0 = await cluster.mapd.service.current();
  const pool = map0.pools.find((p) => p.name === POOL)!;
  const victim = 2;
  const affected = Array.from({ length: pool.pgCount }, (_, pg) => pg).filter((pg) => pgMembers(map0, pool, pg).includes(victim));
  let stopped = false;
  let reads = 0;
  const reader = (async () => {
    while (!stopped) {
      for (const [name, data] of objects) {
        if (stopped) break;
        expect((await cluster.client.read(POOL, name)).equals(data), `read of ${name}`).toBe(true);
        reads++;
      }
    }
  })();
  const t0 = Date.now();
  cluster.pauseDisk(victim);
  try {
    await waitFor(() => 'out', 20_000, async () => ((await cluster.mapd.service.current()).disks.find((d) => d.id === victim)!.in ? undefined : true));
    const outMs = Date.now() - t0;
    await allShards(60_000);
    const bytes = [...objects.values()].reduce((n, b) => n + b.length, 0);
    console.log(JSON.stringify({ case: 'ec-sigstop', outMs, allShardsMs: Date.now() - t0, objects: objects.size, bytes, pgsAffected: affected.length }));
  } finally {
    cluster.resumeDisk(victim);
    stopped = true;
    await reader;
  }
  expect(reads).toBeGreaterThan(0);
  const t1 = Date.now();
  await waitFor(() => 'up and in', 15_000, async () => {
    const d = (await cluster.mapd.service.current()).disks.find((x) => x.id === victim)!;
    return d.up && d.in ? true : undefined;
  });
  await allShards(60_000);
  console.log(JSON.stringify({ case: 'ec-sigcont', allShardsMs: Date.now() - t1 }));
  for (const [name, data] of objects) expect((await cluster.client.read(POOL, name)).equals(data), name).toBe(true);
}, 120_000);
