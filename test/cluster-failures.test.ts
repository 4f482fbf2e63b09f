/**
 * Failure detection and recovery on a real cluster (8 daemon processes, 4
 * hosts, map daemon with short timings): a daemon SIGSTOPped is marked down
 * after the grace and out after the interval by the map daemon's liveness
 * monitor (cluster/liveness.ts); its pgs remap, re-peer and are backfilled
 * on other disks until every object is back on `size` members (checked by
 * reading each member's store), while every object stays readable
 * byte-exact; SIGCONT brings it back up and in, and the pgs move back. Then
 * a disk is added: only the pgs placement remaps move (every disk holds only
 * objects of pgs it is or was a member of), data stays readable throughout.
 *
 * Timings (time to down, out, full redundancy) are printed, not asserted.
 *
 * These tests were gated for a while (a member filled in the background
 * stayed without an object, 3 of 4 quiet runs at 94524d1). Two mechanisms
 * that can do that were fixed since: a pg that missed map epochs kept its
 * old interval (c13d397), and a peering run aborted by a repeer could make
 * the primary active during the next run (8dd3c24). The failure did not
 * reproduce in about 35 runs on 2026-11-27, 15 of them with both fixes,
 * all on a loaded machine.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { objectToPg, pgMembers } from '../cluster/placement.js';
import { dataNs } from '../src/daemon/pg-log.js';
import type { ClusterMap } from '../cluster/map.js';
import { waitFor } from './helpers/wait.js';

const POOL = 'rep';
// A grace of several heartbeats: 9 daemons and the test share 2 cores, and recovery delays heartbeats.
const DOWN_GRACE_MS = 3000;
const OUT_INTERVAL_MS = 3000;
let cluster: TestCluster;
const objects = new Map<string, Buffer>();

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 4,
    disksPerHost: 2,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 16 }],
    liveness: { downGraceMs: DOWN_GRACE_MS, outIntervalMs: OUT_INTERVAL_MS, heartbeatIntervalMs: 250 },
  });
  // 16 pgs, about 40 objects each: more than limits.recoveryInlineObjectsMax, so new members are filled while their pg serves I/O.
  for (let i = 0; i < 640; i++) {
    const data = randomBytes(i % 40 === 0 ? 300_000 : 500 + ((i * 7919) % 20_000));
    objects.set(`obj-${i}`, data);
  }
  const names = [...objects.keys()];
  for (let i = 0; i < names.length; i += 16) await Promise.all(names.slice(i, i + 16).map((n) => cluster.client.put(POOL, n, objects.get(n)!)));
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

const currentMap = (): Promise<ClusterMap> => cluster.mapd.service.current();

/** The workload of readLoop; pauseWriter() holds its writes (resolves once none is in flight) until resume(). */
interface ClientLoad {
  stop: () => Promise<number>;
  figures: () => { reads: number; writes: number; readMsMax: number; writeMsMax: number };
  pauseWriter: () => Promise<() => void>;
}

/**
 * Reads every object through the client, byte-exact, and overwrites a few objects of its own, until
 * stopped; counts reads and writes, and the slowest of each. A read that overlaps an overwrite of its
 * object may return the old or the new bytes (both are right); anything else fails the test.
 */
function readLoop(): ClientLoad {
  let stopped = false;
  const f = { reads: 0, writes: 0, readMsMax: 0, writeMsMax: 0 };
  /** The overwrite in flight (a holder: set and cleared by the writer, read by the reader). */
  const writer: { inFlight: { name: string; data: Buffer } | null } = { inFlight: null };
  let hold: Promise<void> | null = null;
  const reading = (async () => {
    while (!stopped) {
      for (const [name, data] of objects) {
        if (stopped) break;
        const t = Date.now();
        const got = await cluster.client.read(POOL, name);
        f.readMsMax = Math.max(f.readMsMax, Date.now() - t);
        const w = writer.inFlight;
        const overlapped = (w?.name === name && got.equals(w.data)) || got.equals(objects.get(name) ?? data);
        expect(got.equals(data) || overlapped, `read of ${name}`).toBe(true);
        f.reads++;
      }
    }
  })();
  const writing = (async () => {
    for (let round = 0; !stopped; round++) {
      if (hold) await hold;
      if (stopped) break;
      const name = `rw-${round % 16}`;
      const data = randomBytes(2000 + (round % 7) * 1000);
      objects.delete(name); // not checked by fullRedundancy while it changes
      writer.inFlight = { name, data };
      const t = Date.now();
      await cluster.client.put(POOL, name, data);
      f.writeMsMax = Math.max(f.writeMsMax, Date.now() - t);
      objects.set(name, data);
      writer.inFlight = null;
      f.writes++;
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await Promise.all([reading, writing]);
      return f.reads;
    },
    figures: () => f,
    pauseWriter: async () => {
      let resume!: () => void;
      hold = new Promise((r) => (resume = r));
      while (writer.inFlight) await new Promise((r) => setTimeout(r, 10));
      return () => {
        hold = null;
        resume();
      };
    },
  };
}

/**
 * Resolves once every object is byte-exact on each of its pg's `size` members (read from their stores).
 * Each attempt holds the load's writer (an object overwritten while its members are read would differ
 * between them without anything being wrong: with a fast writer, every attempt could meet one).
 */
async function fullRedundancy(timeoutMs: number, load?: ClientLoad): Promise<ClusterMap> {
  let missing = '';
  return waitFor(() => `full redundancy (${missing})`, timeoutMs, async () => {
    const resume = load ? await load.pauseWriter() : () => undefined;
    try {
      return await redundantNow();
    } finally {
      resume();
    }
  });

  async function redundantNow(): Promise<ClusterMap | undefined> {
    const map = await currentMap();
    const pool = map.pools.find((p) => p.name === POOL)!;
    const stores = new Map<number, ReturnType<TestCluster['storeOf']>>();
    try {
      for (const [name, data] of objects) {
        const members = pgMembers(map, pool, objectToPg(pool, name));
        missing = `${name}: members ${members.join()}`;
        if (members.length !== 3) return undefined;
        for (const id of members) {
          missing = `${name} on disk ${id} of ${members.join()}, epoch ${map.epoch}`;
          if (!map.disks.find((d) => d.id === id)?.up) return undefined;
          let store = stores.get(id);
          if (!store) stores.set(id, (store = cluster.storeOf(id)));
          const copy = await store.read({ ns: dataNs(pool.id, 0), name }).catch(() => null);
          if (!copy?.equals(data)) return undefined;
        }
      }
      return map;
    } finally {
      await Promise.all([...stores.values()].map((s) => s.close()));
    }
  }
}

it('marks a stopped daemon down, then out; its pgs recover elsewhere; it comes back up and in', async () => {
  const map0 = await currentMap();
  const pool = map0.pools.find((p) => p.name === POOL)!;
  const victim = 3;
  const victimPgs = Array.from({ length: pool.pgCount }, (_, pg) => pg).filter((pg) => pgMembers(map0, pool, pg).includes(victim));
  expect(victimPgs.length).toBeGreaterThan(0);
  const reader = readLoop();
  const t0 = Date.now();
  cluster.pauseDisk(victim);
  try {
    await waitFor('down', 10_000, async () => ((await currentMap()).disks.find((d) => d.id === victim)!.up ? undefined : true));
    const downMs = Date.now() - t0;
    // Writes go on while it is down (size 3, min_size 2).
    for (let i = 0; i < 20; i++) {
      const data = randomBytes(5000);
      await cluster.client.put(POOL, `during-${i}`, data);
      objects.set(`during-${i}`, data);
    }
    const outMap = await waitFor('out', 15_000, async () => {
      const m = await currentMap();
      return m.disks.find((d) => d.id === victim)!.in ? undefined : m;
    });
    const outMs = Date.now() - t0;
    // Marking out remaps exactly the pgs that had the disk.
    for (let pg = 0; pg < pool.pgCount; pg++) {
      const before = pgMembers(map0, pool, pg);
      const after = pgMembers(outMap, pool, pg);
      if (victimPgs.includes(pg)) expect(after).not.toContain(victim);
      else expect(after).toEqual(before);
    }
    await fullRedundancy(60_000, reader);
    const recoveredMs = Date.now() - t0;
    const bytes = [...objects.values()].reduce((n, b) => n + b.length, 0);
    console.log(
      JSON.stringify({ case: 'sigstop', downGraceMs: DOWN_GRACE_MS, outIntervalMs: OUT_INTERVAL_MS, downMs, outMs, fullRedundancyMs: recoveredMs, objects: objects.size, bytes, pgsRemapped: victimPgs.length }),
    );
  } finally {
    cluster.resumeDisk(victim);
  }
  const t1 = Date.now();
  await waitFor('up and in again', 15_000, async () => {
    const d = (await currentMap()).disks.find((x) => x.id === victim)!;
    return d.up && d.in ? true : undefined;
  });
  const upMs = Date.now() - t1;
  await fullRedundancy(60_000, reader);
  console.log(JSON.stringify({ case: 'sigcont', upAndInMs: upMs, fullRedundancyMs: Date.now() - t1 }));
  expect(await reader.stop()).toBeGreaterThan(objects.size);
  console.log(JSON.stringify({ case: 'client-io-throughout', ...reader.figures() }));
  expect(reader.figures().writes).toBeGreaterThan(0);
  for (const [name, data] of objects) expect((await cluster.client.read(POOL, name)).equals(data), name).toBe(true);
}, 120_000);

it('adding a disk moves only the pgs placement remaps; data stays readable', async () => {
  const before = await currentMap();
  const pool = before.pools.find((p) => p.name === POOL)!;
  const listDisk = async (diskId: number): Promise<string[]> => {
    const store = cluster.storeOf(diskId);
    const names: string[] = [];
    try {
      let cursor: string | undefined;
      do {
        const page = await store.listObjects({ ns: dataNs(pool.id, 0), limit: 1000, ...(cursor ? { cursor } : {}) });
        names.push(...page.objects.map((o) => o.name));
        cursor = page.cursor;
      } while (cursor);
    } finally {
      await store.close();
    }
    return names;
  };
  const held = new Map<number, Set<string>>();
  for (const diskId of cluster.diskIds) held.set(diskId, new Set(await listDisk(diskId)));
  const reader = readLoop();
  const t0 = Date.now();
  let after: ClusterMap;
  let added: number;
  try {
    added = await cluster.addDisk({ host: 'host1' });
    after = await fullRedundancy(60_000, reader);
  } finally {
    expect(await reader.stop()).toBeGreaterThan(0);
  }
  console.log(JSON.stringify({ case: 'client-io-during-add', ...reader.figures() }));
  // Adding weight to a host shifts every domain's rate a little (docs/placement.md): a few pgs move without
  // the new disk. Every disk must hold only objects of pgs it is (or was, before the change) a member of:
  // nothing moved anywhere else. (Old members remove their copies once the pg is clean: test/cluster-strays.test.ts.)
  const remapped = new Set<number>();
  const membersBefore = (pg: number): number[] => pgMembers(before, pool, pg);
  const membersAfter = (pg: number): number[] => pgMembers(after, pool, pg);
  for (let pg = 0; pg < pool.pgCount; pg++) if (membersBefore(pg).join() !== membersAfter(pg).join()) remapped.add(pg);
  expect([...remapped].some((pg) => membersAfter(pg).includes(added))).toBe(true);
  // Copies that appeared on a disk (earlier tests left strays: those are not counted).
  let onNewDisk = 0;
  let copiesMoved = 0;
  for (const diskId of cluster.diskIds) {
    for (const name of await listDisk(diskId)) {
      if (held.get(diskId)?.has(name)) continue;
      const pg = objectToPg(pool, name);
      expect(membersAfter(pg), `${name} (pg ${pg}) appeared on disk ${diskId}`).toContain(diskId);
      expect(remapped.has(pg), `${name} (pg ${pg}) moved though its pg did not`).toBe(true);
      copiesMoved++;
      if (diskId === added!) onNewDisk++;
    }
  }
  const expectedOnNew = [...objects.keys()].filter((n) => membersAfter(objectToPg(pool, n)).includes(added)).length;
  expect(onNewDisk).toBe(expectedOnNew);
  const withNew = [...remapped].filter((pg) => membersAfter(pg).includes(added)).length;
  console.log(JSON.stringify({ case: 'add-disk', pgCount: pool.pgCount, pgsRemapped: remapped.size, pgsWithNewDisk: withNew, objectsOnNewDisk: onNewDisk, copiesMoved, objects: objects.size, fullRedundancyMs: Date.now() - t0 }));
}, 120_000);
