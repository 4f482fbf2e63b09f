/**
 * Stray copies (src/daemon/stray-cleanup.ts) on real clusters: a disk
 * removes what it holds of pgs it is no longer a member of, once the pg is
 * clean on its members, and never before.
 *
 * Cluster A (4 hosts x 1 disk; a replicated pool, size 3, and an
 * erasure-coded pool, 2+1):
 * - a disk killed (kill -9) and marked out; while it is down its store is
 *   edited the way a kill -9 in the middle of a removal leaves it (one pg's
 *   log emptied and half its objects gone; another pg's meta object gone,
 *   its objects left); restarted (still out), it finds every stray pg in its
 *   store and removes them all: its store then holds no object of either
 *   pool, and every object reads back byte-exact through the client and
 *   from each current member's store;
 * - the disk marked in again: its pgs come back and it is filled;
 * - killed again, one pg it is a member of half removed the same way, and
 *   restarted: peering treats the copy as a member that needs filling
 *   (objects written meanwhile too); every member then holds every object
 *   byte-exact;
 * - another disk marked out while its daemon runs: it removes its copies of
 *   both pools (erasure-coded shards included) once they are clean; it is
 *   killed (kill -9) once it has removed its first pg and started again
 *   (still out), and finishes from its store.
 *
 * Cluster B (4 hosts x 1 disk, replicated only: adding a disk shifts
 * erasure-coded pgs' positions and leaves such pgs incomplete, a known EC
 * peering bug; recovery throttled to 150 KB/s
 * so new members are filled slowly): a disk is added while the daemons run;
 * for every pg that moved, the disk it left keeps its whole copy as long as
 * any current member of the pg misses an object: each poll reads the stray
 * store first and the members' stores second (members only gain objects:
 * no writes meanwhile), so a copy found (partly) removed while a member is
 * incomplete is a failure. The polls also see copies kept while members
 * were incomplete and the primary said the pg was not clean (not vacuous). In the end every stray copy is gone, the daemons'
 * status and metrics count them, and every object is byte-exact everywhere.
 *
 * Nothing is timed: every wait polls with a generous bound.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { tesseraBin } from './helpers/daemon-process.js';
import { setDiskState } from '../cluster/map-edit.js';
import { objectToPg, pgMembers } from '../cluster/placement.js';
import type { ClusterMap, PoolInfo } from '../cluster/map.js';
import { pgSortKeyRange } from '../src/lib/hash.js';
import { dataNs, metaNs, metaObject, PgLog } from '../src/daemon/pg-log.js';
import { stagingNs } from '../src/daemon/ec-record.js';
import { encodeControl, OsdOpcode } from '../src/protocol/osd-messages.js';
import { decodePgCleanReply, type PgCleanReply } from '../src/protocol/osd-admin-messages.js';
import { createTcpClient } from '../src/rpc/index.js';
import { ObjectStore } from '../src/store/index.js';
import type { StoreApi } from '../src/store/types.js';
import { waitFor } from './helpers/wait.js';

const REP = 'rep';
const EC = 'ec';

const poolOf = (map: ClusterMap, name: string): PoolInfo => map.pools.find((p) => p.name === name)!;
const shardCount = (pool: PoolInfo): number => (pool.redundancy.type === 'erasure' ? pool.redundancy.dataShards + pool.redundancy.parityShards : 1);

/** Every namespace a pool's objects live in on a disk: data shards, EC staging, meta. */
const poolNamespaces = (pool: PoolInfo): number[] => [...Array.from({ length: shardCount(pool) }, (_, i) => dataNs(pool.id, i)), stagingNs(pool.id), metaNs(pool.id)];

async function listNs(store: StoreApi, ns: number, sortKeyRange?: { start: number; end: number }): Promise<string[]> {
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.listObjects({ ns, limit: 1000, ...(sortKeyRange ? { sortKeyRange } : {}), ...(cursor ? { cursor } : {}) });
    names.push(...page.objects.map((o) => o.name));
    cursor = page.cursor;
  } while (cursor);
  return names;
}

/** Runs fn on a running disk's store (its store protocol), closing it after. */
async function withStore<T>(cluster: TestCluster, diskId: number, fn: (store: StoreApi) => Promise<T>): Promise<T> {
  const store = cluster.storeOf(diskId);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Objects of the given pools a disk's store holds, by namespace. */
async function poolObjects(cluster: TestCluster, diskId: number, pools: PoolInfo[]): Promise<number> {
  return withStore(cluster, diskId, async (store) => {
    let n = 0;
    for (const pool of pools) for (const ns of poolNamespaces(pool)) n += (await listNs(store, ns)).length;
    return n;
  });
}

/** Every object readable byte-exact through the client; replicated: from each member's store; EC: each member holds its shard. */
async function checkEverywhere(cluster: TestCluster, objects: Map<string, { pool: string; data: Buffer }>): Promise<void> {
  const map = await cluster.mapd.service.current();
  for (const [name, { pool, data }] of objects) expect((await cluster.client.read(pool, name)).equals(data), `${pool}/${name} through the client`).toBe(true);
  for (const diskId of cluster.diskIds) {
    if (!cluster.daemons.has(diskId)) continue;
    await withStore(cluster, diskId, async (store) => {
      for (const [name, { pool: poolName, data }] of objects) {
        const pool = poolOf(map, poolName);
        const members = pgMembers(map, pool, objectToPg(pool, name));
        const position = members.indexOf(diskId);
        if (position < 0) continue;
        if (pool.redundancy.type === 'replicated') {
          expect((await store.read({ ns: dataNs(pool.id, 0), name })).equals(data), `${name} on member ${diskId}`).toBe(true);
        } else {
          expect((await store.stat({ ns: dataNs(pool.id, position), name })).sizeBytes, `${name}: shard ${position} on member ${diskId}`).toBeGreaterThan(0);
        }
      }
    });
  }
}

/** Polls `tessera status --json` until every pg is active and nothing is degraded, recovering or backfilling. */
async function settled(cluster: TestCluster, timeoutMs: number): Promise<StatusDoc> {
  return waitFor('every pg active and complete', timeoutMs, async () => {
    const s = await status(cluster);
    const r = s.recovery;
    return r.degradedPgs === 0 && r.recoveringPgs === 0 && r.backfillingPgs === 0 && s.pgs.byState.active === s.pgs.total ? s : undefined;
  });
}

interface StatusDoc {
  pgs: { total: number; byState: Record<string, number> };
  recovery: { degradedPgs: number; recoveringPgs: number; backfillingPgs: number };
  strays: { pgsWaiting: number; pgsRemoved: number; objectsRemoved: number };
}

function status(cluster: TestCluster): Promise<StatusDoc> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [tesseraBin, 'status', '--json', '--map', `127.0.0.1:${cluster.mapd.port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('error', reject);
    child.on('exit', () => {
      try {
        resolve(JSON.parse(stdout) as StatusDoc);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}

/**
 * Leaves a pg's copy in a disk's (stopped) store as a removal cut short leaves it: the log emptied
 * (the first step of a removal), every other data object removed.
 */
async function halfRemove(cluster: TestCluster, diskId: number, pool: PoolInfo, pg: number): Promise<number> {
  const store = await ObjectStore.open({ io: cluster.io, path: cluster.diskDir(diskId) });
  try {
    const names = await listNs(store, dataNs(pool.id, 0), pgSortKeyRange(pg, Math.log2(pool.pgCount)));
    const meta = metaObject(pool.id, pg);
    await store.transact([{ type: 'remove', id: meta, ifExists: true }, ...PgLog.replaceOps(pool.id, pg, { epoch: 0, version: 0 }, [], { lastEpochStarted: 0, lastActing: [] })]);
    const gone = names.filter((_, i) => i % 2 === 0);
    if (gone.length > 0) await store.transact(gone.map((name) => ({ type: 'remove' as const, id: { ns: dataNs(pool.id, 0), name } })));
    return gone.length;
  } finally {
    await store.close();
  }
}

describe('cluster A: a disk out, restarted mid-removal, back in', () => {
  let cluster: TestCluster;
  const objects = new Map<string, { pool: string; data: Buffer }>();
  const victim = 3;

  beforeAll(async () => {
    cluster = await startTestCluster({
      hosts: 4,
      disksPerHost: 1,
      pools: [
        { name: REP, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 },
        { name: EC, redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 }, failureDomain: 'host', pgCount: 4 },
      ],
    });
    for (let i = 0; i < 160; i++) objects.set(`r-${i}`, { pool: REP, data: randomBytes(500 + ((i * 7919) % 20_000)) });
    for (let i = 0; i < 40; i++) objects.set(`e-${i}`, { pool: EC, data: randomBytes(1000 + ((i * 104729) % 30_000)) });
    const entries = [...objects];
    for (let i = 0; i < entries.length; i += 16) await Promise.all(entries.slice(i, i + 16).map(([name, o]) => cluster.client.put(o.pool, name, o.data)));
  }, 180_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('a disk out and restarted after a removal cut short removes every stray copy; objects byte-exact', async () => {
    const before = await cluster.mapd.service.current();
    const rep = poolOf(before, REP);
    const ec = poolOf(before, EC);
    const held = Array.from({ length: rep.pgCount }, (_, pg) => pg).filter((pg) => pgMembers(before, rep, pg).includes(victim));
    expect(held.length).toBeGreaterThanOrEqual(2);
    expect(await poolObjects(cluster, victim, [rep, ec])).toBeGreaterThan(0);
    await cluster.killDisk(victim);
    await cluster.mapd.service.change((m) => setDiskState(m, victim, { in: false }));
    await settled(cluster, 120_000);
    // What a kill -9 mid-removal leaves: one pg's log emptied and half its objects gone; another's meta object gone.
    expect(await halfRemove(cluster, victim, rep, held[0]!)).toBeGreaterThan(0);
    const store = await ObjectStore.open({ io: cluster.io, path: cluster.diskDir(victim) });
    try {
      await store.transact([{ type: 'remove', id: metaObject(rep.id, held[1]!) }]);
    } finally {
      await store.close();
    }
    await cluster.restartDisk(victim);
    await waitFor('the out disk to hold nothing of either pool', 120_000, async () => ((await poolObjects(cluster, victim, [rep, ec])) === 0 ? true : undefined));
    const log = cluster.daemons.get(victim)!.stderr();
    expect(log).toMatch(/stray copies found in the store/);
    expect(log).toMatch(/stray copy removed/);
    const s = await status(cluster);
    expect(s.strays.pgsRemoved).toBeGreaterThanOrEqual(held.length);
    expect(s.strays.pgsWaiting).toBe(0);
    await checkEverywhere(cluster, objects);
  }, 300_000);

  it('the disk in again is filled; a half-removed copy of a pg it is a member of is filled by peering', async () => {
    await cluster.mapd.service.change((m) => setDiskState(m, victim, { in: true }));
    await settled(cluster, 120_000);
    await checkEverywhere(cluster, objects);
    const map = await cluster.mapd.service.current();
    const rep = poolOf(map, REP);
    const pg = Array.from({ length: rep.pgCount }, (_, p) => p).find((p) => pgMembers(map, rep, p).includes(victim))!;
    await cluster.killDisk(victim);
    expect(await halfRemove(cluster, victim, rep, pg)).toBeGreaterThan(0);
    // Writes while it is down: new objects and overwrites.
    for (let i = 0; i < 20; i++) {
      const name = i < 10 ? `r-${i}` : `late-${i}`;
      const data = randomBytes(3000 + i);
      objects.set(name, { pool: REP, data });
      await cluster.client.put(REP, name, data);
    }
    await cluster.restartDisk(victim);
    await settled(cluster, 120_000);
    await checkEverywhere(cluster, objects);
  }, 300_000);

  it('a running disk marked out removes its copies of both pools once they are clean elsewhere, also across a kill -9', async () => {
    const map = await cluster.mapd.service.current();
    const pools = [poolOf(map, REP), poolOf(map, EC)];
    const out = 1;
    expect(await poolObjects(cluster, out, pools)).toBeGreaterThan(0);
    await cluster.mapd.service.change((m) => setDiskState(m, out, { in: false }));
    // kill -9 once it has removed its first pg (wherever the removal of the next one is then), and start it again.
    await waitFor('a first stray copy removed', 120_000, async () => (/stray copy removed/.test(cluster.daemons.get(out)!.stderr()) ? true : undefined));
    const firstLife = cluster.daemons.get(out)!.stderr();
    await cluster.killDisk(out);
    await cluster.restartDisk(out);
    await waitFor('the out disk to hold nothing of either pool', 120_000, async () => ((await poolObjects(cluster, out, pools)) === 0 ? true : undefined));
    const removed = `${firstLife}${cluster.daemons.get(out)!.stderr()}`.match(/pg 2\.\d+: stray copy removed/g) ?? [];
    expect(removed.length).toBeGreaterThan(0);
    await settled(cluster, 120_000);
    await checkEverywhere(cluster, objects);
  }, 300_000);
});

describe('cluster B: a disk added while new members are filled slowly', () => {
  let cluster: TestCluster;
  const objects = new Map<string, { pool: string; data: Buffer }>();

  beforeAll(async () => {
    cluster = await startTestCluster({
      hosts: 4,
      disksPerHost: 1,
      // Replicated only: adding a disk shifts erasure-coded pgs' positions, and such a pg stays incomplete (a known
      // bug of EC peering, which does not query the disks that left: see the report in docs/operations.md "Not done").
      pools: [{ name: REP, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 }],
      daemonArgs: ['--recovery-bytes-per-sec', '150000', '--metrics', '127.0.0.1:0'],
    });
    // About 50 objects per pg (more than limits.recoveryInlineObjectsMax: new members are filled while the pg serves I/O).
    for (let i = 0; i < 400; i++) objects.set(`o-${i}`, { pool: REP, data: randomBytes(10_000 + (i % 5_000)) });
    const entries = [...objects];
    for (let i = 0; i < entries.length; i += 16) await Promise.all(entries.slice(i, i + 16).map(([name, o]) => cluster.client.put(o.pool, name, o.data)));
    await settled(cluster, 60_000);
  }, 180_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  /** The pg's primary's answer to pgClean, at the map epoch held now. */
  async function cleanAt(pool: PoolInfo, pg: number): Promise<PgCleanReply | null> {
    const map = await cluster.mapd.service.current();
    const primary = pgMembers(map, pool, pg)[0]!;
    const d = cluster.daemons.get(primary);
    if (!d) return null;
    const rpc = createTcpClient({ io: cluster.io, host: '127.0.0.1', port: d.port });
    try {
      const reply = await rpc.call(OsdOpcode.pgClean, encodeControl({ epoch: map.epoch, poolId: pool.id, pg }), [], { timeoutMs: 30_000 });
      return decodePgCleanReply(reply.header);
    } finally {
      await rpc.close();
    }
  }

  it('the disk a pg left keeps its whole copy until the pg is clean, then removes it', async () => {
    const before = await cluster.mapd.service.current();
    const pools = [poolOf(before, REP)];
    const added = await cluster.addDisk({ host: 'host1' });
    const after = await cluster.mapd.service.current();
    const perPg = new Map<string, number>();
    for (const [name, o] of objects) {
      const pool = poolOf(before, o.pool);
      const key = `${pool.id}.${objectToPg(pool, name)}`;
      perPg.set(key, (perPg.get(key) ?? 0) + 1);
    }
    // (pool, pg, disk it left, the position its copy belongs to: erasure-coded shards live in one namespace per position)
    const strays: Array<{ pool: PoolInfo; pg: number; diskId: number; position: number }> = [];
    for (const pool of pools) {
      for (let pg = 0; pg < pool.pgCount; pg++) {
        const now = pgMembers(after, pool, pg);
        pgMembers(before, pool, pg).forEach((d, i) => {
          if (!now.includes(d)) strays.push({ pool, pg, diskId: d, position: pool.redundancy.type === 'erasure' ? i : 0 });
        });
      }
    }
    expect(strays.filter((s) => s.pool.name === REP).length).toBeGreaterThan(0);
    expect(strays.some((s) => pgMembers(after, s.pool, s.pg).includes(added))).toBe(true);
    /** Objects of the pg a disk holds in the namespace of a position. */
    const pgObjects = (pool: PoolInfo, diskId: number, pg: number, position: number): Promise<number> =>
      withStore(cluster, diskId, async (store) => (await listNs(store, dataNs(pool.id, position), pgSortKeyRange(pg, Math.log2(pool.pgCount)))).length);
    let keptWhileIncomplete = 0;
    let keptWhileNotClean = 0;
    const left = new Set(strays);
    await waitFor('every stray copy removed', 240_000, async () => {
      for (const s of [...left]) {
        // The stray store first, the members' stores second: members only gain objects here (no writes), so a
        // stray copy found not whole while a member still misses objects was removed too early.
        const total = perPg.get(`${s.pool.id}.${s.pg}`) ?? 0;
        const strayHolds = await pgObjects(s.pool, s.diskId, s.pg, s.position);
        const reply = await cleanAt(s.pool, s.pg);
        const members = pgMembers(after, s.pool, s.pg);
        const counts = await Promise.all(members.map((d, i) => pgObjects(s.pool, d, s.pg, s.pool.redundancy.type === 'erasure' ? i : 0)));
        const complete = counts.every((n) => n === total);
        if (total > 0 && strayHolds === total) {
          if (!complete) keptWhileIncomplete++;
          if (reply && !reply.clean) keptWhileNotClean++;
          continue;
        }
        expect(complete, `pg ${s.pool.id}.${s.pg}: disk ${s.diskId} holds ${strayHolds} of ${total} objects while its members ${members.join(',')} hold ${counts.join(',')}`).toBe(true);
        if (strayHolds === 0) left.delete(s);
      }
      return left.size === 0 ? true : undefined;
    });
    // Not vacuous: stray copies were seen kept while a new member was still being filled.
    expect(keptWhileIncomplete).toBeGreaterThan(0);
    expect(keptWhileNotClean).toBeGreaterThan(0);
    await settled(cluster, 60_000);
    // Nothing of the pgs they left remains on the old members (the meta objects included; EC: staging too).
    for (const s of strays) {
      await withStore(cluster, s.diskId, async (store) => {
        await expect(store.stat(metaObject(s.pool.id, s.pg))).rejects.toMatchObject({ code: 'NotFound' });
        for (const ns of poolNamespaces(s.pool).slice(0, -2)) expect(await listNs(store, ns, pgSortKeyRange(s.pg, Math.log2(s.pool.pgCount)))).toEqual([]);
      });
    }
    console.log(JSON.stringify({ case: 'add-disk', strays: strays.length, keptWhileIncomplete, keptWhileNotClean }));
    const st = await status(cluster);
    expect(st.strays.pgsRemoved).toBeGreaterThanOrEqual(strays.length);
    let removedTotal = 0;
    let logged = 0;
    for (const diskId of new Set(strays.map((s) => s.diskId))) {
      const text = await (await fetch(`http://127.0.0.1:${cluster.daemons.get(diskId)!.metricsPort!}/metrics`)).text();
      removedTotal += Number(/^tessera_osd_stray_pgs_removed_total(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? 0);
      if (/stray copy kept: not clean at primary/.test(cluster.daemons.get(diskId)!.stderr())) logged++;
    }
    expect(removedTotal).toBeGreaterThanOrEqual(strays.length);
    expect(logged).toBeGreaterThan(0);
    await checkEverywhere(cluster, objects);
  }, 360_000);
});
