/**
 * Recovery benchmark (issue 6): client latency while the cluster heals, and
 * how fast it heals. A real cluster (test/helpers/cluster.ts: map daemon in
 * this process with short liveness timings, one daemon process per disk,
 * 4 hosts x 2 disks, replicated pool size 3 per host) is preloaded, then a
 * steady mix of 4 KiB and 4 MiB puts and gets from a fixed number of client
 * loops runs through three phases of one run:
 *   idle       nothing to recover (a fixed time);
 *   recovery   one daemon killed (kill -9, marked down at once, out after
 *              outIntervalMs): the other disks rebuild its copies, until every
 *              object is on its pg's 3 members again;
 *   rebalance  a disk on a new host added: until every object is on its new
 *              members.
 * Completion is checked the way test/cluster-failures.test.ts does it (each
 * member's store asked directly; stat of every object whose copy is not yet
 * confirmed, sizes compared), cheaply, since this process also hosts the map
 * daemon and the client whose latency is measured: copies confirmed stay
 * confirmed while their member stays in the pg, and a poll stops at a
 * member's first missing object of each pg (waitFullRedundancy). The first
 * version computed placement per object with a fresh index on every 500 ms
 * poll: it blocked this event loop for 1.5-2.5 s per poll during recovery and
 * 24-41 s during the rebalance (event-loop delay measured in this process;
 * pgMembers with a throwaway index costs 2-14 ms a call), so heartbeats to the map daemon
 * timed out, every primary's lease lapsed, and client ops stalled for up to
 * 40 s; those stalls were counted as recovery's. Bytes recovered = the size of every object
 * times the members its pg gained. The baseline, on the same file system in
 * the same run: raw sequential write (4 MiB writev, fdatasync every 64 MiB)
 * and read (bench/lib.ts closedLoop).
 *
 * The cluster comes from test/helpers (no cluster launcher outside the tests
 * can kill one daemon without restarting it). Run `npm run build` first.
 *
 * Usage: node dist/bench/recovery.js [--big N] [--small N] [--workers N] [--idle-seconds S]
 *        [--phase-max-seconds S] [--pgs N] [--down-grace-ms MS] [--out-interval-ms MS] [--raw-mib N]
 */
import { randomBytes } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startTestCluster, type TestCluster } from '../test/helpers/cluster.js';
import { makeTempDir } from '../test/helpers/tmp.js';
import { objectToPg, poolPgMembers } from '../cluster/placement.js';
import { buildPlacementIndex } from '../cluster/placement-index.js';
import { addHost } from '../cluster/map-edit.js';
import type { ClusterMap } from '../cluster/map.js';
import { dataNs } from '../src/daemon/pg-log.js';
import { closedLoop, dropCaches, emit, percentile, printHost, resultOf, type BenchResult } from './lib.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const POOL = 'rep';
const { values: args } = parseArgs({
  options: {
    big: { type: 'string' },
    small: { type: 'string' },
    workers: { type: 'string' },
    'idle-seconds': { type: 'string' },
    'phase-max-seconds': { type: 'string' },
    pgs: { type: 'string' },
    'down-grace-ms': { type: 'string' },
    'out-interval-ms': { type: 'string' },
    'raw-mib': { type: 'string' },
  },
});
const opt = {
  bigCount: Number(args.big ?? 256),
  smallCount: Number(args.small ?? 4096),
  workers: Number(args.workers ?? 8),
  idleSeconds: Number(args['idle-seconds'] ?? 30),
  phaseMaxSeconds: Number(args['phase-max-seconds'] ?? 150),
  pgCount: Number(args.pgs ?? 32),
  // A grace of several heartbeats: on a loaded 2-core machine a shorter one marks live daemons down.
  downGraceMs: Number(args['down-grace-ms'] ?? 3000),
  outIntervalMs: Number(args['out-interval-ms'] ?? 2000),
  rawMiB: Number(args['raw-mib'] ?? 512),
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs fn over items, at most `limit` at once. */
async function forEachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Raw sequential write (4 MiB writev, fdatasync every 64 MiB) and read of a file in dir. */
async function rawDisk(dir: string): Promise<{ write: BenchResult; read: BenchResult }> {
  const path = join(dir, 'raw.bin');
  const fh = await open(path, 'w+');
  try {
    const group = Array.from({ length: 16 }, () => randomBytes(4 * MiB));
    const groups = Math.max(1, Math.floor(opt.rawMiB / 64));
    const w = await closedLoop({ workers: 1, ops: groups, maxSeconds: 120, op: async (i) => {
      await fh.writev(group, i * 64 * MiB);
      await fh.datasync();
    } });
    const cold = await dropCaches();
    const buf = Buffer.allocUnsafe(4 * MiB);
    const r = await closedLoop({ workers: 1, ops: w.ops * 16, maxSeconds: 120, op: async (i) => {
      await fh.read(buf, 0, buf.length, i * buf.length);
    } });
    return {
      write: resultOf('raw sequential 64MiB writev + fdatasync', w, 64 * MiB),
      read: resultOf(`raw sequential 4MiB read${cold ? '' : ' (page cache)'}`, r, 4 * MiB),
    };
  } finally {
    await fh.close();
    await rm(path, { force: true });
  }
}

type Kind = 'put4KiB' | 'get4KiB' | 'put4MiB' | 'get4MiB';
interface Sample { phase: string; kind: Kind; ms: number; bytes: number }

/**
 * The client load: `workers` loops, each op in turn (by global index) one of 20: 2 of 4 MiB (a put, a
 * get), 18 of 4 KiB (9 puts, 9 gets). Puts overwrite a fixed set of names (data does not grow); gets
 * read preloaded objects. Each sample is tagged with the phase current when the op started.
 */
function startLoad(cluster: TestCluster, o: { big: Buffer[]; small: Buffer[]; putNames: number }): { phase: (p: string) => void; stop: () => Promise<{ samples: Sample[]; errors: Map<string, number> }> } {
  let phase = 'warmup';
  let stopped = false;
  let next = 0;
  const samples: Sample[] = [];
  const errors = new Map<string, number>();
  const op = async (i: number): Promise<{ kind: Kind; bytes: number }> => {
    const slot = i % 20;
    const n = Math.floor(i / 20);
    if (slot === 0) {
      await cluster.client.put(POOL, `load-big-${n % o.putNames}`, o.big[n % o.big.length]!);
      return { kind: 'put4MiB', bytes: 4 * MiB };
    }
    if (slot === 10) {
      const got = await cluster.client.read(POOL, `big-${(n * 7919) % o.big.length}`);
      if (got.length !== 4 * MiB) throw new Error(`read ${got.length} bytes of a 4 MiB object`);
      return { kind: 'get4MiB', bytes: 4 * MiB };
    }
    if (slot % 2 === 1) {
      await cluster.client.put(POOL, `load-small-${Math.floor(i / 2) % (o.putNames * 8)}`, o.small[i % o.small.length]!);
      return { kind: 'put4KiB', bytes: 4 * KiB };
    }
    const got = await cluster.client.read(POOL, `small-${(i * 7919) % o.small.length}`);
    if (got.length !== 4 * KiB) throw new Error(`read ${got.length} bytes of a 4 KiB object`);
    return { kind: 'get4KiB', bytes: 4 * KiB };
  };
  const worker = async (): Promise<void> => {
    while (!stopped) {
      const i = next++;
      const p = phase;
      const t = performance.now();
      try {
        const { kind, bytes } = await op(i);
        samples.push({ phase: p, kind, ms: performance.now() - t, bytes });
      } catch (err) {
        errors.set(p, (errors.get(p) ?? 0) + 1);
        if ((errors.get(p) ?? 0) <= 3) console.error(`op ${i} (${p}) failed: ${String(err)}`);
      }
    }
  };
  const loops = Promise.all(Array.from({ length: opt.workers }, worker));
  return {
    phase: (p) => (phase = p),
    stop: async () => {
      stopped = true;
      await loops;
      return { samples, errors };
    },
  };
}

/**
 * Which copies are confirmed, kept from one phase to the next: `${disk}/${name}` of a member found
 * holding the object at its size. A member that stays in an object's pg keeps its copy (nothing removes
 * a member's data), so a phase checks only the copies its map change asks for on new members.
 */
type Confirmed = Set<string>;

/**
 * Every (object, member) copy the current map asks for, checked by stat on the member's store; copies
 * once confirmed are not asked again while the member stays in the object's pg (confirmations of disks
 * that left it are dropped). Resolves with the map once every copy is there, or null after timeoutMs.
 *
 * The check must cost little next to the load it measures (its process also hosts the map daemon and
 * the client): members are computed once per pg per poll with one placement index, and each poll stats
 * a (pg, member) pair's unconfirmed objects in order only until the first one missing, so a poll while
 * recovery runs asks for about one stat per pair still recovering.
 */
async function waitFullRedundancy(cluster: TestCluster, objects: Map<string, number>, timeoutMs: number, confirmed: Confirmed): Promise<ClusterMap | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const map = await cluster.mapd.service.current();
    const pool = map.pools.find((p) => p.name === POOL)!;
    const membersOf = poolPgMembers(buildPlacementIndex(map), pool);
    const up = new Set(map.disks.filter((d) => d.up).map((d) => d.id));
    const ready = membersOf.every((m) => m.length === 3 && m.every((id) => up.has(id)));
    for (const key of confirmed) {
      const [disk, name] = [Number(key.slice(0, key.indexOf('/'))), key.slice(key.indexOf('/') + 1)];
      if (!membersOf[objectToPg(pool, name)]!.includes(disk)) confirmed.delete(key);
    }
    // (pg, member) -> its copies not yet confirmed, in a fixed order.
    const pairs = new Map<string, { disk: number; names: string[] }>();
    for (const [name] of objects) {
      const pg = objectToPg(pool, name);
      for (const disk of membersOf[pg]!) {
        if (confirmed.has(`${disk}/${name}`)) continue;
        const k = `${pg}/${disk}`;
        let pair = pairs.get(k);
        if (!pair) pairs.set(k, (pair = { disk, names: [] }));
        pair.names.push(name);
      }
    }
    if (pairs.size === 0 && ready) return map;
    if (ready) {
      const stores = new Map<number, ReturnType<TestCluster['storeOf']>>();
      try {
        await forEachLimit([...pairs.values()], 4, async (pair) => {
          let store = stores.get(pair.disk);
          if (!store) stores.set(pair.disk, (store = cluster.storeOf(pair.disk)));
          for (const name of pair.names) {
            const st = await store.stat({ ns: dataNs(pool.id, 0), name }).catch(() => null);
            if (st?.sizeBytes !== objects.get(name)) return; // not there yet: the pair waits for the next poll
            confirmed.add(`${pair.disk}/${name}`);
          }
        });
      } finally {
        await Promise.all([...stores.values()].map((s) => s.close()));
      }
      if ([...pairs.values()].every((p) => p.names.every((n) => confirmed.has(`${p.disk}/${n}`)))) return map;
    }
    if (Date.now() > deadline) {
      const left = [...pairs.values()].flatMap((p) => p.names.filter((n) => !confirmed.has(`${p.disk}/${n}`)).map((name) => ({ name, disk: p.disk })));
      console.error(`not redundant after ${timeoutMs} ms: members ready ${ready}, ${left.length} copies missing, e.g. ${JSON.stringify(left.slice(0, 3))}`);
      return null;
    }
    await sleep(500);
  }
}

/** Bytes of the copies `after` places on members an object's pg did not have in `before`. */
function bytesToMove(before: ClusterMap, after: ClusterMap, objects: Map<string, number>): { bytes: number; copies: number; pgsRemapped: number } {
  const p0 = before.pools.find((p) => p.name === POOL)!;
  const p1 = after.pools.find((p) => p.name === POOL)!;
  const gained = new Map<number, number>();
  const oldMembers = poolPgMembers(buildPlacementIndex(before), p0);
  const newMembers = poolPgMembers(buildPlacementIndex(after), p1);
  for (let pg = 0; pg < p1.pgCount; pg++) {
    const old = oldMembers[pg]!;
    const added = newMembers[pg]!.filter((d) => !old.includes(d)).length;
    if (added > 0) gained.set(pg, added);
  }
  let bytes = 0;
  let copies = 0;
  for (const [name, size] of objects) {
    const added = gained.get(objectToPg(p1, name)) ?? 0;
    bytes += added * size;
    copies += added;
  }
  return { bytes, copies, pgsRemapped: gained.size };
}

function phaseResults(samples: Sample[], phase: string, seconds: number): BenchResult[] {
  const of = (kinds: Kind[] | null, label: string): BenchResult => {
    const s = samples.filter((x) => x.phase === phase && (kinds === null || kinds.includes(x.kind)));
    const ms = s.map((x) => x.ms).sort((a, b) => a - b);
    const bytes = s.reduce((n, x) => n + x.bytes, 0);
    return { name: `${phase} ${label} c=${opt.workers}`, phase, ops: s.length, seconds, opsPerSec: s.length / seconds, bytesPerSec: bytes / seconds, p50Ms: percentile(ms, 50), p99Ms: percentile(ms, 99) };
  };
  return [of(null, 'mix'), of(['put4KiB', 'get4KiB'], '4KiB'), of(['put4MiB', 'get4MiB'], '4MiB')];
}

const scratch = await makeTempDir('recovery-bench');
printHost({ bench: 'recovery', dir: scratch.path, ...opt });
let cluster: TestCluster | null = null;
try {
  const raw = await rawDisk(scratch.path);
  emit(raw.write);
  emit(raw.read);
  cluster = await startTestCluster({
    hosts: 4,
    disksPerHost: 2,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: opt.pgCount }],
    liveness: { downGraceMs: opt.downGraceMs, outIntervalMs: opt.outIntervalMs, heartbeatIntervalMs: Math.max(100, Math.floor(opt.downGraceMs / 8)) },
  });
  const c = cluster;
  // Preload: names -> sizes, every object checked for redundancy later (the load's put names too).
  const objects = new Map<string, number>();
  const big = Array.from({ length: 8 }, () => randomBytes(4 * MiB));
  const small = Array.from({ length: 64 }, () => randomBytes(4 * KiB));
  const putNames = 32;
  const t0 = performance.now();
  const preload = [
    ...Array.from({ length: opt.bigCount }, (_, i) => ({ name: `big-${i}`, data: big[i % big.length]! })),
    ...Array.from({ length: opt.smallCount }, (_, i) => ({ name: `small-${i}`, data: small[i % small.length]! })),
    // The names the load overwrites, so that each exists (and is checked) from the start.
    ...Array.from({ length: putNames }, (_, i) => ({ name: `load-big-${i}`, data: big[i % big.length]! })),
    ...Array.from({ length: putNames * 8 }, (_, i) => ({ name: `load-small-${i}`, data: small[i % small.length]! })),
  ];
  await forEachLimit(preload, 16, async (o) => {
    await c.client.put(POOL, o.name, o.data);
    objects.set(o.name, o.data.length);
  });
  const preloadBytes = [...objects.values()].reduce((n, s) => n + s, 0);
  emit({ name: 'preload', opsPerSec: objects.size / ((performance.now() - t0) / 1000), bytesPerSec: preloadBytes / ((performance.now() - t0) / 1000), p50Ms: 0, p99Ms: 0, objects: objects.size, bytes: preloadBytes });

  const load = startLoad(c, { big, small, putNames });
  const confirmed: Confirmed = new Set();
  const phases: { phase: string; seconds: number; extra: Record<string, unknown> }[] = [];
  try {
    if (!(await waitFullRedundancy(c, objects, 60_000, confirmed))) throw new Error('no full redundancy before the idle phase');

    load.phase('idle');
    let t = performance.now();
    await sleep(opt.idleSeconds * 1000);
    phases.push({ phase: 'idle', seconds: (performance.now() - t) / 1000, extra: {} });

    const before = await c.mapd.service.current();
    const victim = 3;
    load.phase('recovery');
    t = performance.now();
    await c.killDisk(victim);
    let outMs = -1;
    const watchOut = (async () => {
      while (outMs < 0 && performance.now() - t < opt.phaseMaxSeconds * 1000) {
        if (!(await c.mapd.service.current()).disks.find((d) => d.id === victim)!.in) outMs = performance.now() - t;
        else await sleep(100);
      }
    })();
    const healed = await waitFullRedundancy(c, objects, opt.phaseMaxSeconds * 1000, confirmed);
    await watchOut;
    const fullMs = performance.now() - t;
    phases.push({ phase: 'recovery', seconds: fullMs / 1000, extra: {} });
    if (healed) {
      const moved = bytesToMove(before, healed, objects);
      const recoverySeconds = (fullMs - outMs) / 1000;
      const bytesPerSec = moved.bytes / recoverySeconds;
      emit({
        name: 'time to full redundancy after losing one disk (kill -9)',
        opsPerSec: moved.copies / recoverySeconds,
        bytesPerSec,
        p50Ms: 0,
        p99Ms: 0,
        outMs,
        fullRedundancyMs: fullMs,
        recoveryMs: fullMs - outMs,
        bytesRecovered: moved.bytes,
        copiesRecovered: moved.copies,
        pgsRemapped: moved.pgsRemapped,
        baseline: raw.write.name,
        baselineValue: raw.write.bytesPerSec,
        ratioToBaseline: bytesPerSec / raw.write.bytesPerSec,
        rawReadBytesPerSec: raw.read.bytesPerSec,
      });
    } else emit({ name: 'time to full redundancy after losing one disk (kill -9)', opsPerSec: 0, bytesPerSec: 0, p50Ms: 0, p99Ms: 0, outMs, timedOut: true, afterSeconds: opt.phaseMaxSeconds });

    const mid = await c.mapd.service.current();
    load.phase('rebalance');
    t = performance.now();
    await c.mapd.service.change((m) => addHost(m, { name: 'host4', rack: 'rack0' }));
    const added = await c.addDisk({ host: 'host4' });
    const balanced = await waitFullRedundancy(c, objects, opt.phaseMaxSeconds * 1000, confirmed);
    const rebalanceMs = performance.now() - t;
    phases.push({ phase: 'rebalance', seconds: rebalanceMs / 1000, extra: {} });
    if (balanced) {
      const moved = bytesToMove(mid, balanced, objects);
      emit({ name: `rebalance after adding disk ${added} on a new host`, opsPerSec: moved.copies / (rebalanceMs / 1000), bytesPerSec: moved.bytes / (rebalanceMs / 1000), p50Ms: 0, p99Ms: 0, rebalanceMs, bytesMoved: moved.bytes, copiesMoved: moved.copies, pgsRemapped: moved.pgsRemapped, baseline: raw.write.name, baselineValue: raw.write.bytesPerSec, ratioToBaseline: moved.bytes / (rebalanceMs / 1000) / raw.write.bytesPerSec });
    } else emit({ name: `rebalance after adding disk ${added} on a new host`, opsPerSec: 0, bytesPerSec: 0, p50Ms: 0, p99Ms: 0, timedOut: true, afterSeconds: opt.phaseMaxSeconds });
    load.phase('done');
  } finally {
    const { samples, errors } = await load.stop();
    const byPhase = new Map<string, BenchResult[]>();
    for (const p of phases) {
      const rs = phaseResults(samples, p.phase, p.seconds).map((r) => ({ ...r, phaseErrors: errors.get(p.phase) ?? 0 }));
      byPhase.set(p.phase, rs);
      const idle = byPhase.get('idle');
      for (const [i, r] of rs.entries()) {
        const base = idle?.[i];
        emit(base && p.phase !== 'idle' ? { ...r, baseline: base.name, baselineValue: base.p99Ms, ratioToBaseline: r.p99Ms / base.p99Ms, p99Target: 2, meetsTarget: r.p99Ms / base.p99Ms <= 2 } : r);
      }
    }
  }
} finally {
  await cluster?.stop();
  await scratch.remove();
}
