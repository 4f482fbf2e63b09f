/**
 * Conditional writes (compare-and-set) on a replicated pool, on a real
 * cluster (3 daemon processes on 3 hosts, size 3 / min_size 2), decided at
 * the primary before they take a version (src/daemon/osd-service.ts
 * primaryWrite) instead of holding the pg while their local commit runs.
 *
 * 1. Many clients race compare-and-set on the same objects (an xattr
 *    counter, an omap counter, exclusive creates) while plain writes go to
 *    other objects of the same pg: exactly one winner per expected value, the
 *    final state equals the model, every member holds the same objects and
 *    the same pg log, and the log has no gap (a refused condition consumes no
 *    version).
 * 2. A plain write to another object of the pg is not held behind a
 *    conditional write that is waiting. No timing: the primary runs in this
 *    process on its disk's directory, with the writes of its segment files
 *    (its local commits) held; a plain write W0 of object A is sent, then a
 *    compare-and-set of A (which must wait for W0's local commit to decide),
 *    then a plain write of B in the same pg: B's repops reach the replicas
 *    while the compare-and-set still waits (before, the conditional write
 *    held the pg's gate until its own local commit, and B never left the
 *    primary until the disk was released: the wait for B below times out).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { waitFor } from './helpers/wait.js';
import { systemIo } from '../src/io/system.js';
import type { FileIo, FileSystem, Io } from '../src/io/io.js';
import { TesseraClient } from '../src/client/client.js';
import { Osd } from '../src/daemon/osd.js';
import { connectMapService } from '../cluster/map-daemon.js';
import { objectToPg, pgMembers } from '../cluster/placement.js';
import { isTesseraError } from '../src/lib/errors.js';
import { dataNs, metaObject } from '../src/daemon/pg-log.js';
import type { ObjectId, StoreApi } from '../src/store/types.js';
import type { PoolInfo } from '../cluster/map.js';

const POOL = 'rep';
const PGS = 8;
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: PGS }],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const poolInfo = async (): Promise<PoolInfo> => (await cluster.mapd.service.current()).pools.find((p) => p.name === POOL)!;

/** `count` object names of pg `pg`, with the prefix. */
function namesInPg(pool: PoolInfo, pg: number, prefix: string, count: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) if (objectToPg(pool, `${prefix}${i}`) === pg) out.push(`${prefix}${i}`);
  return out;
}

/** Everything a member's store holds of an object, as one comparable string (null: absent). */
async function objectImage(store: StoreApi, id: ObjectId): Promise<string | null> {
  try {
    const data = await store.read(id);
    const xattrs = [...(await store.getXattrs(id))].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v.toString('hex')}`);
    const omap: string[] = [];
    let afterKey: Buffer | undefined;
    for (;;) {
      const page = await store.omapList(id, { limit: 1000, ...(afterKey ? { afterKey } : {}) });
      for (const [k, v] of page.entries) omap.push(`${k.toString('hex')}=${v.toString('hex')}`);
      if (!page.more || page.entries.length === 0) break;
      afterKey = page.entries[page.entries.length - 1]![0];
    }
    return JSON.stringify({ data: data.toString('hex'), xattrs, omap });
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return null;
    throw err;
  }
}

/** The versions of a member's pg log, oldest first (keys "e" + u64be). */
async function logVersions(store: StoreApi, poolId: number, pg: number): Promise<number[]> {
  const out: number[] = [];
  let afterKey: Buffer | undefined;
  for (;;) {
    const page = await store.omapList(metaObject(poolId, pg), { limit: 1000, prefix: Buffer.from('e'), ...(afterKey ? { afterKey } : {}) });
    for (const [k] of page.entries) out.push(k.readUInt32BE(1) * 0x1_0000_0000 + k.readUInt32BE(5));
    if (!page.more || page.entries.length === 0) return out;
    afterKey = page.entries[page.entries.length - 1]![0];
  }
}

const COUNTERS = 3;
const OMAP_COUNTERS = 2;
const TARGET = 12;
const CREATES = 6;
const CLIENTS = 4;
const RACERS_PER_CLIENT = 4;
const PLAIN_WRITERS = 4;
const PLAIN_WRITES = 15;

it('racing compare-and-set on the same objects: one winner per expected value, state as the model, members identical, no log gap', async () => {
  const pool = await poolInfo();
  const pg = objectToPg(pool, 'anchor');
  const counters = namesInPg(pool, pg, 'counter-', COUNTERS);
  const omapCounters = namesInPg(pool, pg, 'ocounter-', OMAP_COUNTERS);
  const creates = namesInPg(pool, pg, 'excl-', CREATES);
  const plain = namesInPg(pool, pg, 'plain-', PLAIN_WRITERS);
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => TesseraClient.connect({ io: cluster.io, mapService: cluster.mapd.service, timeoutMs: 60_000 })));
  const xattrWins = new Map<string, Map<number, string>>(counters.map((n) => [n, new Map()]));
  const omapWins = new Map<string, Map<number, string>>(omapCounters.map((n) => [n, new Map()]));
  const createWins = new Map<string, string[]>(creates.map((n) => [n, []]));
  const unexpected: string[] = [];
  let conflicts = 0;
  const num = (b: Buffer | undefined | null): number => (b ? Number(b.toString()) : 0);
  try {
    const racer = async (c: number, r: number): Promise<void> => {
      const client = clients[c]!;
      const me = `c${c}r${r}`;
      for (const name of creates) {
        try {
          await client.transact(POOL, name, [{ type: 'create', exclusive: true }, { type: 'setXattr', name: 'owner', value: Buffer.from(me) }]);
          createWins.get(name)!.push(me);
        } catch (err) {
          if (isTesseraError(err, 'AlreadyExists')) conflicts++;
          else unexpected.push(`create ${name}: ${String(err)}`);
        }
      }
      for (let step = 0; ; step++) {
        const open = [...counters.filter((n) => xattrWins.get(n)!.size < TARGET), ...omapCounters.filter((n) => omapWins.get(n)!.size < TARGET)];
        if (open.length === 0) return;
        const name = open[(c * 7 + r * 3 + step) % open.length]!;
        try {
          if (xattrWins.has(name)) {
            const seen = await client.getXattrs(POOL, name).then((x) => num(x.get('n')), (err: unknown) => (isTesseraError(err, 'NotFound') ? 0 : Promise.reject(err)));
            if (seen >= TARGET) continue;
            const next = seen + 1;
            await client.transact(POOL, name, [
              { type: 'assertXattr', name: 'n', value: seen === 0 ? null : Buffer.from(String(seen)) },
              { type: 'setXattr', name: 'n', value: Buffer.from(String(next)) },
              { type: 'append', data: Buffer.from(`${next}:${me};`) },
            ]);
            const wins = xattrWins.get(name)!;
            if (wins.has(next)) unexpected.push(`${name}: ${next} won by ${wins.get(next)} and ${me}`);
            wins.set(next, me);
          } else {
            const [v] = await client.omapGet(POOL, name, [Buffer.from('head')]).catch((err: unknown) => (isTesseraError(err, 'NotFound') ? [undefined] : Promise.reject(err)));
            const seen = num(v);
            if (seen >= TARGET) continue;
            const next = seen + 1;
            await client.transact(POOL, name, [
              { type: 'omapCompare', key: Buffer.from('head'), value: seen === 0 ? null : Buffer.from(String(seen)) },
              {
                type: 'omapSet',
                entries: [
                  [Buffer.from('head'), Buffer.from(String(next))],
                  [Buffer.from(`v${String(next).padStart(4, '0')}`), Buffer.from(me)],
                ],
              },
            ]);
            const wins = omapWins.get(name)!;
            if (wins.has(next)) unexpected.push(`${name}: ${next} won by ${wins.get(next)} and ${me}`);
            wins.set(next, me);
          }
        } catch (err) {
          if (isTesseraError(err, 'Conflict')) conflicts++;
          else unexpected.push(`${name}: ${String(err)}`);
          if (unexpected.length > 0) return;
        }
      }
    };
    const plainWritten = new Map<string, Buffer>();
    const plainWriter = async (w: number): Promise<void> => {
      const name = plain[w]!;
      for (let i = 0; i < PLAIN_WRITES; i++) {
        const data = randomBytes(100 + ((w * 977 + i * 131) % 9000));
        await clients[w % CLIENTS]!.put(POOL, name, data);
        plainWritten.set(name, data);
      }
    };
    await Promise.all([
      ...Array.from({ length: CLIENTS * RACERS_PER_CLIENT }, (_, i) => racer(Math.floor(i / RACERS_PER_CLIENT), i % RACERS_PER_CLIENT)),
      ...Array.from({ length: PLAIN_WRITERS }, (_, w) => plainWriter(w)),
    ]);
    expect(unexpected).toEqual([]);
    console.log(`cluster-cas race: ${COUNTERS + OMAP_COUNTERS} counters to ${TARGET}, ${CREATES} exclusive creates, ${conflicts} refused conditions, pg ${pg}`);
    expect(conflicts).toBeGreaterThan(0); // the race happened

    // One winner per expected value, every value reached; the final state is the model's.
    const client = cluster.client;
    for (const [name, wins] of xattrWins) {
      expect([...wins.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: TARGET }, (_, i) => i + 1));
      expect((await client.getXattrs(POOL, name)).get('n')?.toString()).toBe(String(TARGET));
      const expected = Array.from({ length: TARGET }, (_, i) => `${i + 1}:${wins.get(i + 1)};`).join('');
      expect((await client.read(POOL, name)).toString()).toBe(expected);
    }
    for (const [name, wins] of omapWins) {
      expect([...wins.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: TARGET }, (_, i) => i + 1));
      const page = await client.omapList(POOL, name, { limit: 1000 });
      const model = new Map<string, string>([['head', String(TARGET)], ...[...wins].map(([v, who]) => [`v${String(v).padStart(4, '0')}`, who] as [string, string])]);
      expect(new Map(page.entries.map(([k, v]) => [k.toString(), v.toString()]))).toEqual(model);
    }
    for (const [name, winners] of createWins) {
      expect(winners.length, name).toBe(1);
      expect((await client.getXattrs(POOL, name)).get('owner')?.toString()).toBe(winners[0]);
    }
    for (const [name, data] of plainWritten) expect((await client.read(POOL, name)).equals(data), name).toBe(true);

    // Every member holds the same objects and the same log, with no gap in it.
    const map = await cluster.mapd.service.current();
    const members = pgMembers(map, pool, pg);
    expect(members.length).toBe(3);
    const stores = members.map((d) => cluster.storeOf(d));
    try {
      for (const name of [...counters, ...omapCounters, ...creates, ...plain]) {
        const images = await Promise.all(stores.map((s) => objectImage(s, { ns: dataNs(pool.id, 0), name })));
        expect(images[0], name).not.toBeNull();
        for (let i = 1; i < images.length; i++) expect(images[i], `${name} on disk ${members[i]} vs disk ${members[0]}`).toBe(images[0]);
      }
      const logs = await Promise.all(stores.map((s) => logVersions(s, pool.id, pg)));
      for (let i = 1; i < logs.length; i++) expect(logs[i], `log of disk ${members[i]}`).toEqual(logs[0]);
      const log = logs[0]!;
      const successes = COUNTERS * TARGET + OMAP_COUNTERS * TARGET + CREATES + PLAIN_WRITERS * PLAIN_WRITES;
      expect(log.length).toBe(successes);
      for (let i = 1; i < log.length; i++) expect(log[i], `log entry after ${log[i - 1]}`).toBe(log[i - 1]! + 1);
    } finally {
      for (const s of stores) await s.close();
    }
    for (const [id, d] of cluster.daemons) expect(d.stderr(), `disk ${id}`).not.toContain('failed its store check');
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}, 240_000);

/** The system Io with the writes and syncs of segment files (a store's commits) held while `held` is set. */
function holdableIo(): { io: Io; hold(): void; release(): void } {
  const base = systemIo();
  let held: { promise: Promise<void>; release: () => void } | null = null;
  const pass = async (): Promise<void> => {
    while (held) await held.promise;
  };
  const fs: FileSystem = {
    open: async (path, mode, options) => {
      const f = await base.fs.open(path, mode, options);
      if (!path.includes('/segments/')) return f;
      const wrapped: FileIo = {
        read: (b, o, l, p) => f.read(b, o, l, p),
        writev: async (buffers, position) => {
          await pass();
          return f.writev(buffers, position);
        },
        datasync: async () => {
          await pass();
          return f.datasync();
        },
        truncate: (s) => f.truncate(s),
        sizeBytes: () => f.sizeBytes(),
        close: () => f.close(),
      };
      return wrapped;
    },
    readFile: (p) => base.fs.readFile(p),
    writeFileAtomic: (p, d) => base.fs.writeFileAtomic(p, d),
    mkdir: (p) => base.fs.mkdir(p),
    readdir: (p) => base.fs.readdir(p),
    rename: (a, b) => base.fs.rename(a, b),
    unlink: (p) => base.fs.unlink(p),
    rmrf: (p) => base.fs.rmrf(p),
    stat: (p) => base.fs.stat(p),
    statfs: (p) => base.fs.statfs(p),
    syncDir: (p) => base.fs.syncDir(p),
  };
  return {
    io: { ...base, fs },
    hold() {
      if (held) return;
      let release!: () => void;
      const promise = new Promise<void>((resolve) => (release = resolve));
      held = { promise, release };
    },
    release() {
      const h = held;
      held = null;
      h?.release();
    },
  };
}

it('a plain write to another object of the pg is not held behind a waiting conditional write', async () => {
  const pool = await poolInfo();
  const map0 = await cluster.mapd.service.current();
  // The primary of pg 0 runs in this process from here on, on its own directory.
  const pg = 0;
  const primary = pgMembers(map0, pool, pg)[0]!;
  const replicas = pgMembers(map0, pool, pg).slice(1);
  await cluster.killDisk(primary);
  const holdable = holdableIo();
  const conn = connectMapService(holdable.io, `127.0.0.1:${cluster.mapd.port}`);
  const osd = await Osd.start({
    io: holdable.io,
    diskPath: cluster.diskDir(primary),
    host: '127.0.0.1',
    port: 0,
    identity: { clusterId: 'testcluster', diskId: primary },
    mapService: conn.service,
    pgHistory: conn.history,
    liveness: conn.liveness,
  });
  const client = await TesseraClient.connect({ io: cluster.io, mapService: cluster.mapd.service, timeoutMs: 120_000 });
  const stores = replicas.map((d) => cluster.storeOf(d));
  const writes: Array<Promise<unknown>> = [];
  try {
    const [a, b] = namesInPg(pool, pg, 'held-', 2) as [string, string];
    const idA = { ns: dataNs(pool.id, 0), name: a };
    const idB = { ns: dataNs(pool.id, 0), name: b };
    // The pg is active on its primary (this process) once a read of it is answered.
    await waitFor(`pg ${pg} active on disk ${primary}`, 60_000, () =>
      client.stat(POOL, a).then(
        () => true,
        (err: unknown) => (isTesseraError(err, 'NotFound') ? true : undefined),
      ),
    );
    expect(osd.pgs.get(`${pool.id}.${pg}`)?.primary).toBe(primary);
    expect(osd.clientRequestsInflight).toBe(0);

    holdable.hold();
    const w0 = client.transact(POOL, a, [{ type: 'writeFull', data: Buffer.from('first') }, { type: 'setXattr', name: 'g', value: Buffer.from('1') }]);
    // W0 took its version: its repops reached the replicas (its local commit is held here).
    writes.push(w0);
    await waitFor('W0 on the replicas', 60_000, async () => ((await Promise.all(stores.map((s) => objectImage(s, idA)))).every((i) => i !== null) ? true : undefined));
    const cas = client.transact(POOL, a, [
      { type: 'assertXattr', name: 'g', value: Buffer.from('1') },
      { type: 'setXattr', name: 'g', value: Buffer.from('2') },
      { type: 'writeFull', data: Buffer.from('second') },
    ]);
    writes.push(cas);
    // The compare-and-set reached the primary (two client requests in flight there: W0 and it).
    await waitFor('the compare-and-set at the primary', 60_000, () => (osd.clientRequestsInflight === 2 ? true : undefined), 20);
    const wB = client.put(POOL, b, Buffer.from('other object'));
    writes.push(wB);
    // B's repops reach the replicas while the compare-and-set waits for W0's local commit.
    await waitFor('the plain write of B on the replicas while the compare-and-set waits', 30_000, async () =>
      (await Promise.all(stores.map((s) => objectImage(s, idB)))).every((i) => i !== null) ? true : undefined,
    );
    // The compare-and-set has not gone anywhere: it is decided only after W0's local commit.
    for (const s of stores) expect((await s.getXattrs(idA)).get('g')?.toString()).toBe('1');
    holdable.release();
    await Promise.all([w0, cas, wB]);
    expect((await client.read(POOL, a)).toString()).toBe('second');
    expect((await client.getXattrs(POOL, a)).get('g')?.toString()).toBe('2');
    expect((await client.read(POOL, b)).toString()).toBe('other object');
    for (const id of [idA, idB]) {
      const local = await objectImage(osd.store, id);
      for (const s of stores) expect(await objectImage(s, id)).toBe(local);
    }
  } finally {
    holdable.release();
    await Promise.allSettled(writes);
    for (const s of stores) await s.close();
    await client.close();
    await osd.close();
    await conn.close();
  }
}, 240_000);
