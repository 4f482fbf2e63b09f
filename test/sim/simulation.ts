/**
 * One seeded run of a whole cluster in this process (docs/testing.md,
 * "Simulation"): the map daemon (embedded backend on a simulated disk), one
 * storage daemon (Osd) per disk over a simulated disk and an in-memory KV
 * (MemoryKvDisk), and two clients on two hosts, each a SimProcess with its
 * own Io on one virtual clock and one simulated network. A client workload
 * (each key written and read through either client) writes,
 * overwrites and reads objects of a replicated pool (size 3, min 2) and an
 * erasure-coded one (2+1), checking every read against the acknowledged
 * versions, while seeded faults hit the daemons: kill (kill -9), power loss
 * (kill, and the disk and KV lose their unsynced writes), pause (SIGSTOP),
 * a host cut off from everything, two hosts cut from each other, a host cut
 * from the map daemon. Then everything is healed and the run checks that
 * every pg is active and clean, every acknowledged write reads back
 * byte-exact through the client, and every replica's copy (every EC
 * shard: one version, parity consistent, data equal) matches it.
 *
 * The outcome and the trace (faults, acknowledged and failed writes, checks,
 * with their virtual times) are a function of the seed; the trace's hash
 * tells two runs of one seed apart.
 */
import { createHash } from 'node:crypto';
import type { Io } from '../../src/io/io.js';
import { TesseraClient } from '../../src/client/client.js';
import { startMapDaemon, connectMapService, type MapDaemon, type MapConnection } from '../../cluster/map-daemon.js';
import { addDisk, addHost, addRack, addSite, createPool, initialMap, setDiskState } from '../../cluster/map-edit.js';
import type { ClusterMap, PoolRedundancy } from '../../cluster/map.js';
import type { ProcessProbe } from '../../cluster/map-lock.js';
import { objectToPg } from '../../cluster/placement.js';
import { Osd } from '../../src/daemon/osd.js';
import { pgStats } from '../../src/daemon/osd-admin.js';
import { dataNs } from '../../src/daemon/pg-log.js';
import { EcLayout } from '../../src/daemon/ec-layout.js';
import { decodeSize } from '../../src/daemon/ec-record.js';
import { createErasureCodec } from '../../native/index.js';
import { pgSummary } from '../../src/cli/status.js';
import { MemoryKvDisk } from '../../src/store/kv-memory.js';
import type { KvStore } from '../../src/store/kv.js';
import { isTesseraError } from '../../src/lib/errors.js';
import type { PgStatsReply } from '../../src/protocol/osd-admin-messages.js';
import type { Rng } from '../helpers/random.js';
import { derivedRng, drawSkew, simClock, simRandom } from './clock.js';
import { SimDisk } from './fs.js';
import { SimNetwork } from './net.js';
import { never, Scheduler, SimProcess } from './scheduler.js';
import { SimContentModel } from './model.js';

const MiB = 1024 * 1024;
const MAP_HOST = 'map';
const MAP_PORT = 7000;
const CLIENT_HOSTS = ['client0', 'client1'] as const;

export interface SimOptions {
  seed: number;
  hosts?: number;
  disksPerHost?: number;
  /** Leave out the erasure-coded pool. */
  noEc?: boolean;
  /** Virtual time the workload and the faults run (default 30 s). */
  runMs?: number;
  /** Objects per pool (default 12). */
  keysPerPool?: number;
  /** Concurrent client operations per pool (default 2). */
  workersPerPool?: number;
  /** A worker waits up to this long between two operations (default 200 ms; the load is what costs wall time). */
  thinkMsMax?: number;
  /** Faults may be at most this many at once (default drawn from the seed: 1 to 3). */
  maxConcurrentFaults?: number;
  /** How long (virtual) the healed cluster may take to be active+clean before the run fails (default 600 s). */
  settleMs?: number;
  /** The fault kinds drawn from (default all of FAULT_KINDS). */
  faultKinds?: readonly FaultKind[];
  /** The daemons' disks ignore O_DSYNC (a disk that lies): the run must then find lost writes. Default false. */
  disksIgnoreSyncWrites?: boolean;
  /** Keep every line the daemons log (default: the last 300). */
  logLinesMax?: number;
}

export interface SimResult {
  seed: number;
  ok: boolean;
  violations: string[];
  traceHash: string;
  trace: string[];
  faults: number;
  writesAcked: number;
  writesFailed: number;
  readsVerified: number;
  readsFailed: number;
  keysVerified: number;
  replicasChecked: number;
  /** Erasure-coded objects whose shards were checked on their members. */
  shardsChecked: number;
  virtualMs: number;
  events: number;
  wallMs: number;
  log: string[];
}

interface DiskSlot {
  id: number;
  host: string;
  disk: SimDisk;
  kv: MemoryKvDisk;
  incarnation: number;
  proc: SimProcess | null;
  osd: Osd | null;
  conn: MapConnection | null;
  /** running: serving; starting: Osd.start in progress; down: killed; faulted: paused or cut (still running). */
  state: 'running' | 'starting' | 'down';
}

interface KeyState {
  key: string;
  acked: number;
  uncertain: boolean;
  busy: boolean;
}

export const FAULT_KINDS = ['kill', 'powerloss', 'pause', 'isolate', 'cutPeers', 'partition', 'cutMap', 'clientCutMap', 'splitBrain', 'mapRestart'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

type Fault =
  | { kind: 'kill' | 'powerloss'; disk: number; markDown: boolean; durationMs: number }
  | { kind: 'pause'; disk: number; durationMs: number }
  | { kind: 'isolate' | 'cutPeers' | 'cutMap' | 'clientCutMap'; host: string; durationMs: number }
  | { kind: 'partition'; a: string; b: string; durationMs: number }
  | { kind: 'splitBrain'; host: string; client: string; durationMs: number }
  | { kind: 'mapRestart'; powerloss: boolean; durationMs: number };

/**
 * The KvStore of one daemon incarnation: calls take a seeded moment and never complete once it is dead
 * (a write in flight then happened or not: SimDisk.abandon).
 */
function guardedKv(inner: KvStore, disk: SimDisk, proc: SimProcess): KvStore {
  return {
    get: (key) => disk.later(proc, () => inner.get(key)),
    getMany: (keys) => disk.later(proc, () => inner.getMany(keys)),
    write: (ops, o) =>
      disk.later(proc, () => inner.write(ops, o), o.sync ? 'sync' : 'write', () => void inner.write(ops, o).catch(() => undefined)),
    scan: (range) => disk.later(proc, () => inner.scan(range)),
    approximateSizeBytes: () => disk.later(proc, () => inner.approximateSizeBytes()),
    close: () => (proc.alive ? inner.close() : never()),
  };
}

export async function runSimulation(o: SimOptions): Promise<SimResult> {
  const startedWallMs = performance.now();
  const seed = o.seed >>> 0;
  const sched = new Scheduler();
  const net = new SimNetwork(sched, derivedRng(seed, 'net'));
  const ioRng = derivedRng(seed, 'io');
  const faultRng = derivedRng(seed, 'faults');
  const model = new SimContentModel(seed);
  const hosts = o.hosts ?? 3;
  const disksPerHost = o.disksPerHost ?? 2;
  const runMs = o.runMs ?? 30_000;
  const thinkMsMax = o.thinkMsMax ?? 200;
  const keysPerPool = o.keysPerPool ?? 12;
  const workersPerPool = o.workersPerPool ?? 2;
  const maxConcurrent = o.maxConcurrentFaults ?? 1 + faultRng.int(3);
  const logLinesMax = o.logLinesMax ?? 300;

  const trace: string[] = [];
  const violations: string[] = [];
  const log: string[] = [];
  const note = (line: string): void => {
    trace.push(`${sched.nowMs.toFixed(3)} ${line}`);
  };
  const stats = { faults: 0, writesAcked: 0, writesFailed: 0, readsVerified: 0, readsFailed: 0, keysVerified: 0, replicasChecked: 0, shardsChecked: 0 };

  // The daemons log through console; keep their lines (the last logLinesMax) with the virtual time.
  const saved = { error: console.error, log: console.log, warn: console.warn };
  const capture = (...args: unknown[]): void => {
    log.push(`${sched.nowMs.toFixed(3)} ${args.map((a) => (a instanceof Error ? a.stack ?? a.message : String(a))).join(' ')}`);
    if (log.length > logLinesMax) log.shift();
  };
  console.error = capture;
  console.log = capture;
  console.warn = capture;
  // A rejection nobody handles, or an exception out of a callback, would end a real daemon process: a finding.
  let ending = false;
  const onUnhandled = (err: unknown): void => {
    if (ending) return; // the dead processes' code reacting to the final teardown
    violations.push(`unhandled error at ${sched.nowMs.toFixed(3)} ms: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  };
  process.on('unhandledRejection', onUnhandled);
  process.on('uncaughtException', onUnhandled);

  // Each process's clock runs up to 0.5% fast or slow and its wall clock is up to 5 s off.
  const procIo = (proc: SimProcess, disk: SimDisk): Io => ({
    clock: simClock(sched, proc, drawSkew(derivedRng(seed, `clock:${proc.name}`), 0.005, 5000)),
    random: simRandom(ioRng),
    fs: disk.view(proc),
    net: net.view(proc),
  });
  const harnessProc = new SimProcess('harness', 'harness');
  const sleep = (ms: number): Promise<void> => new Promise((resolve) => sched.schedule(ms, resolve, harnessProc));

  // --- the cluster ---
  const clusterId = `sim${seed}`;
  let map: ClusterMap = addRack(addSite(initialMap({ clusterId }), { name: 'site0' }), { name: 'rack0', site: 'site0' });
  const slots: DiskSlot[] = [];
  for (let h = 0; h < hosts; h++) {
    const host = `host${h}`;
    map = addHost(map, { name: host, rack: 'rack0' });
    for (let d = 0; d < disksPerHost; d++) {
      const id = h * disksPerHost + d;
      map = addDisk(map, { id, host, weight: 1, address: `${host}:1`, up: false, in: true });
      slots.push({ id, host, disk: new SimDisk(`disk${id}`, sched, derivedRng(seed, `disk${id}`), { capacityBytes: 4096 * MiB, ignoreSyncWrites: o.disksIgnoreSyncWrites === true }), kv: new MemoryKvDisk(), incarnation: 0, proc: null, osd: null, conn: null, state: 'down' });
    }
  }
  const pools: Array<{ id: number; name: string; redundancy: PoolRedundancy }> = [{ id: 1, name: 'rep', redundancy: { type: 'replicated', size: 3, minSize: 2 } }];
  if (!o.noEc) pools.push({ id: 2, name: 'ec', redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 } });
  for (const p of pools) map = createPool(map, { id: p.id, name: p.name, redundancy: p.redundancy, failureDomain: 'host', pgCount: 8 });

  let mapIncarnation = 1;
  let mapProc = new SimProcess('mapd#1', MAP_HOST);
  const mapDisk = new SimDisk('mapdisk', sched, derivedRng(seed, 'mapdisk'), { capacityBytes: 1024 * MiB });
  let mapd: MapDaemon | null = null;
  /** Whether the map daemon runs (the harness never calls a dead process's service: the call would never end). */
  let mapUp = false;
  /** Its lock's process probe: pid n is incarnation n, alive while that process is. */
  const mapProcs = new Map<number, SimProcess>();
  const mapProbe: ProcessProbe = {
    self: async () => ({ pid: mapIncarnation, incarnation: '' }),
    lookup: async (pid) => (mapProcs.get(pid)?.alive ? { pid, incarnation: '' } : null),
  };
  const startMap = async (create: ClusterMap | undefined): Promise<void> => {
    mapProcs.set(mapIncarnation, mapProc);
    mapd = await startMapDaemon({ io: procIo(mapProc, mapDisk), dir: '/mapd', host: MAP_HOST, port: MAP_PORT, ...(create ? { create } : {}), probe: mapProbe, liveness: { outIntervalMs: 15_000 } });
    mapUp = true;
    note(`${mapProc.name} up`);
    // The trace shows every map epoch's disk states (d<id>: u/d up or down, i/o in or out).
    const mapWatch = new AbortController();
    mapd.service.watch(0, (m) => note(`map epoch ${m.epoch}: ${m.disks.map((d) => `d${d.id}${d.up ? 'u' : 'd'}${d.in ? 'i' : 'o'}`).join(' ')}`), mapWatch.signal);
    stopMapWatch = () => mapWatch.abort();
  };
  // Two clients: one may hold an older map than the other (a client cut from the map daemon), which is
  // when a deposed primary could serve a stale read if its lease did not fence it.
  const clientProcs = CLIENT_HOSTS.map((h) => new SimProcess(h, h));
  const clientIos = clientProcs.map((p) => procIo(p, new SimDisk(`${p.name}disk`, sched, derivedRng(seed, `${p.name}disk`), { capacityBytes: MiB })));
  const clients: TesseraClient[] = [];
  let client: TesseraClient | null = null;

  /** Every map connection of the run: closed at its end (see the finally below). */
  const mapConnections: MapConnection[] = [];

  let stopMapWatch = (): void => undefined;

  const startDisk = async (s: DiskSlot): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      s.incarnation++;
      const proc = new SimProcess(`osd.${s.id}#${s.incarnation}`, s.host);
      s.proc = proc;
      s.state = 'starting';
      const io = procIo(proc, s.disk);
      const conn = connectMapService(io, `${MAP_HOST}:${MAP_PORT}`);
      mapConnections.push(conn);
      s.conn = conn;
      try {
        s.osd = await Osd.start({
          io,
          diskPath: `/disk${s.id}`,
          host: s.host,
          port: 0,
          identity: { clusterId, diskId: s.id },
          mapService: conn.service,
          pgHistory: conn.history,
          liveness: conn.liveness,
          peerReports: conn.peerReports,
          peeringRetryMs: 500,
          store: {
            openKv: async () => guardedKv(s.kv.open(), s.disk, proc),
            limits: { segmentBytesMax: 4 * MiB },
          },
        });
        s.state = 'running';
        note(`${proc.name} up`);
        return;
      } catch (err) {
        note(`${proc.name} failed to start (${(err as Error).message.split('\n')[0]})`);
        kill(s);
        if (attempt >= 20) throw new Error(`disk ${s.id} did not start in 20 attempts: ${(err as Error).message}`);
        await sleep(1000);
      }
    }
  };

  const kill = (s: DiskSlot): void => {
    if (!s.proc) return;
    sched.kill(s.proc);
    const inflight = s.disk.abandon(s.proc);
    if (inflight.applied + inflight.dropped > 0) note(`${s.proc.name} killed with ${inflight.applied + inflight.dropped} disk writes in flight: ${inflight.applied} happened`);
    net.kill(s.proc);
    s.proc = null;
    s.osd = null;
    s.conn = null;
    s.state = 'down';
  };

  // --- the workload ---
  const keys = new Map(pools.map((p) => [p.name, Array.from({ length: keysPerPool }, (_, i): KeyState => ({ key: `obj-${i}`, acked: 0, uncertain: false, busy: false }))]));
  let stopWorkload = false;

  const writeNext = async (c: TesseraClient, pool: string, k: KeyState): Promise<void> => {
    const v = k.acked + 1;
    const op = model.opOf(k.key, v, model.contentAt(k.key, k.acked));
    try {
      await c.transact(pool, k.key, [op]);
    } catch (err) {
      k.uncertain = true;
      stats.writesFailed++;
      note(`c${clients.indexOf(c)} ${pool}/${k.key} v${v} failed: ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    k.acked = v;
    stats.writesAcked++;
    note(`c${clients.indexOf(c)} ${pool}/${k.key} v${v} acked`);
  };

  const readVerify = async (c: TesseraClient, pool: string, k: KeyState): Promise<void> => {
    let got: Buffer;
    try {
      got = await c.read(pool, k.key);
    } catch (err) {
      stats.readsFailed++;
      if (isTesseraError(err, 'Corrupt')) violations.push(`${pool}/${k.key}: read failed with Corrupt: ${(err as Error).message}`);
      note(`c${clients.indexOf(c)} ${pool}/${k.key} read failed: ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    if (got.equals(model.contentAt(k.key, k.acked))) {
      stats.readsVerified++;
      note(`c${clients.indexOf(c)} ${pool}/${k.key} read v${k.acked}`);
      return;
    }
    const v = model.whichVersion(k.key, k.acked + 1, got);
    violations.push(`${pool}/${k.key}: read through client ${clients.indexOf(c)} at ${sched.nowMs.toFixed(3)} ms returned ${v === -1 ? `bytes of no version (${got.length} B)` : `version ${v}`}, acknowledged is ${k.acked}`);
    note(`c${clients.indexOf(c)} ${pool}/${k.key} read WRONG v${v}`);
  };

  const worker = async (pool: string, r: Rng): Promise<void> => {
    while (!stopWorkload) {
      const free = keys.get(pool)!.filter((k) => !k.busy && !k.uncertain);
      if (free.length === 0) {
        await sleep(50);
        continue;
      }
      const k = r.pick(free);
      k.busy = true;
      try {
        const c = clients[r.int(clients.length)]!;
        if (k.acked === 0 || r.float() < 0.6) await writeNext(c, pool, k);
        else await readVerify(c, pool, k);
      } finally {
        k.busy = false;
      }
      await sleep(r.int(thinkMsMax));
    }
  };

  // --- the faults ---
  const active = new Set<Promise<void>>();
  const faultedDisks = new Set<number>();
  const faultedHosts = new Set<string>();
  const storageHosts = Array.from({ length: hosts }, (_, h) => `host${h}`);
  const otherHosts = (host: string): string[] => [MAP_HOST, ...CLIENT_HOSTS, ...storageHosts].filter((h) => h !== host);

  const drawFault = (): Fault | null => {
    const durationMs = faultRng.float() < 0.7 ? 500 + faultRng.int(10_000) : 10_000 + faultRng.int(40_000);
    const kind = faultRng.pick(o.faultKinds ?? FAULT_KINDS);
    if (kind === 'kill' || kind === 'powerloss' || kind === 'pause') {
      const candidates = slots.filter((s) => s.state === 'running' && !faultedDisks.has(s.id) && !faultedHosts.has(s.host));
      if (candidates.length === 0) return null;
      const disk = faultRng.pick(candidates).id;
      return kind === 'pause' ? { kind, disk, durationMs } : { kind, disk, markDown: faultRng.float() < 0.5, durationMs };
    }
    if (kind === 'mapRestart') {
      // kill -9 of the map daemon (its disk may lose power too), restarted after up to 15 s.
      return mapUp && !faultedHosts.has(MAP_HOST) ? { kind, powerloss: faultRng.float() < 0.5, durationMs: 200 + faultRng.int(15_000) } : null;
    }
    if (kind === 'splitBrain') {
      // A storage host and a client both cut from the map daemon, long enough for the host's disks to be
      // marked down: the client keeps sending to the deposed primaries while the other client writes elsewhere.
      const hostsFree = storageHosts.filter((h) => !faultedHosts.has(h) && !slots.some((s) => s.host === h && faultedDisks.has(s.id)));
      const clientsFree = CLIENT_HOSTS.filter((h) => !faultedHosts.has(h));
      if (!hostsFree.length || !clientsFree.length) return null;
      return { kind, host: faultRng.pick(hostsFree), client: faultRng.pick(clientsFree), durationMs: 20_000 + faultRng.int(30_000) };
    }
    if (kind === 'clientCutMap') {
      const free = CLIENT_HOSTS.filter((h) => !faultedHosts.has(h));
      return free.length ? { kind, host: faultRng.pick(free), durationMs } : null;
    }
    const free = storageHosts.filter((h) => !faultedHosts.has(h) && !slots.some((s) => s.host === h && faultedDisks.has(s.id)));
    if (kind === 'partition') {
      if (free.length < 2) return null;
      const a = faultRng.pick(free);
      const b = faultRng.pick(free.filter((h) => h !== a));
      return { kind, a, b, durationMs };
    }
    if (free.length === 0) return null;
    return { kind, host: faultRng.pick(free), durationMs };
  };

  const describe = (f: Fault): string =>
    f.kind === 'partition' ? `partition ${f.a}|${f.b} for ${f.durationMs} ms` : f.kind === 'splitBrain' ? `splitBrain ${f.host}+${f.client} cut from the map for ${f.durationMs} ms` : f.kind === 'mapRestart' ? `mapRestart${f.powerloss ? ' (power loss)' : ''} after ${f.durationMs} ms` : 'host' in f ? `${f.kind} ${f.host} for ${f.durationMs} ms` : `${f.kind} disk ${f.disk}${'markDown' in f && f.markDown ? ' (marked down)' : ''} for ${f.durationMs} ms`;

  const runFault = async (f: Fault): Promise<void> => {
    stats.faults++;
    note(`fault: ${describe(f)}`);
    switch (f.kind) {
      case 'kill':
      case 'powerloss': {
        const s = slots[f.disk]!;
        faultedDisks.add(s.id);
        kill(s);
        if (f.kind === 'powerloss') {
          const lost = s.disk.crash();
          s.kv.crash();
          note(`disk ${s.id} lost power: ${lost.writesLost} unsynced writes lost, ${lost.writesKept} kept`);
        }
        if (f.markDown && mapUp) await mapd!.service.change((m) => setDiskState(m, s.id, { up: false })).catch(() => undefined);
        await sleep(f.durationMs);
        await startDisk(s);
        faultedDisks.delete(s.id);
        break;
      }
      case 'pause': {
        const s = slots[f.disk]!;
        const proc = s.proc!;
        faultedDisks.add(s.id);
        proc.paused = true;
        await sleep(f.durationMs);
        sched.resume(proc);
        net.unblock();
        faultedDisks.delete(s.id);
        break;
      }
      case 'isolate':
      case 'cutPeers':
      case 'cutMap':
      case 'clientCutMap': {
        faultedHosts.add(f.host);
        // cutPeers: from the other storage hosts only; the map daemon and the clients still reach it, so only its
        // peers' reports (peer heartbeats) get it marked down.
        const others = f.kind === 'isolate' ? otherHosts(f.host) : f.kind === 'cutPeers' ? storageHosts.filter((h) => h !== f.host) : [MAP_HOST];
        for (const h of others) net.cut(f.host, h);
        await sleep(f.durationMs);
        for (const h of others) net.heal(f.host, h);
        faultedHosts.delete(f.host);
        break;
      }
      case 'mapRestart': {
        faultedHosts.add(MAP_HOST);
        mapUp = false;
        stopMapWatch();
        sched.kill(mapProc);
        mapDisk.abandon(mapProc);
        net.kill(mapProc);
        if (f.powerloss) {
          const lost = mapDisk.crash();
          note(`map disk lost power: ${lost.writesLost} unsynced writes lost, ${lost.writesKept} kept`);
        }
        await sleep(f.durationMs);
        mapIncarnation++;
        mapProc = new SimProcess(`mapd#${mapIncarnation}`, MAP_HOST);
        await startMap(undefined);
        faultedHosts.delete(MAP_HOST);
        break;
      }
      case 'splitBrain': {
        faultedHosts.add(f.host);
        faultedHosts.add(f.client);
        net.cut(f.host, MAP_HOST);
        net.cut(f.client, MAP_HOST);
        await sleep(f.durationMs);
        net.heal(f.host, MAP_HOST);
        net.heal(f.client, MAP_HOST);
        faultedHosts.delete(f.host);
        faultedHosts.delete(f.client);
        break;
      }
      case 'partition': {
        faultedHosts.add(f.a);
        faultedHosts.add(f.b);
        net.cut(f.a, f.b);
        await sleep(f.durationMs);
        net.heal(f.a, f.b);
        faultedHosts.delete(f.a);
        faultedHosts.delete(f.b);
        break;
      }
    }
    note(`healed: ${describe(f)}`);
  };

  const faultLoop = async (endMs: number): Promise<void> => {
    while (sched.nowMs < endMs) {
      await sleep(300 + faultRng.int(3000));
      if (sched.nowMs >= endMs) break;
      if (active.size >= maxConcurrent) continue;
      const f = drawFault();
      if (!f) continue;
      const p: Promise<void> = runFault(f).finally(() => active.delete(p));
      active.add(p);
    }
    await Promise.all([...active]);
  };

  // --- health and checks ---
  /** Every pg's state as its primary reports it (what `tessera status` shows), read in-process. */
  const pgStates = (m: ClusterMap): { states: string[]; degradedPgs: number } => {
    const reports = new Map<number, PgStatsReply | null>();
    for (const s of slots) reports.set(s.id, s.state === 'running' && s.osd ? pgStats(s.osd) : null);
    const summary = pgSummary(m, reports);
    return { states: summary.states, degradedPgs: summary.recovery.degradedPgs };
  };

  const waitClean = async (why: string, deadlineMs: number): Promise<void> => {
    let last = '';
    for (;;) {
      const currentMap = await mapd!.service.current();
      const notUp = currentMap.disks.filter((d) => !d.up || !d.in);
      if (notUp.length > 0) {
        // The operator's part (what the fault suite's markUp does): disks running again are marked up and in.
        await mapd!.service.change((m) => notUp.reduce((acc, d) => setDiskState(acc, d.id, { up: true, in: true }), m)).catch(() => undefined);
      } else {
        const { states, degradedPgs } = pgStates(currentMap);
        const bad = states.filter((s) => s !== 'active');
        last = bad.length ? `${bad.length} pgs not active+clean (${[...new Set(bad)].join(', ')})` : degradedPgs > 0 ? `${degradedPgs} pgs degraded (members being recovered)` : '';
        if (!last) return;
      }
      if (sched.nowMs > deadlineMs) throw new Error(`not clean by ${deadlineMs} ms after ${why}: ${last || 'disks not up and in'}`);
      await sleep(1000);
    }
  };

  /**
   * An erasure-coded object straight from its members' stores (as test/cluster-ec-helpers.ts checkShards):
   * every shard at one version with the right size, parity equal to the data's, the data equal to the bytes.
   */
  const checkShards = async (info: ReturnType<TesseraClient['pool']>, name: string, expected: Buffer): Promise<string | null> => {
    const layout = EcLayout.forPool(info);
    const members = client!.view.pg(info, objectToPg(info, name)).members;
    const shards: Buffer[] = [];
    const versions = new Set<string>();
    for (let pos = 0; pos < layout.width; pos++) {
      const osd = slots[members[pos]!]?.osd;
      if (!osd) return `shard ${pos}: disk ${members[pos]} is not running`;
      const id = { ns: dataNs(info.id, pos), name };
      try {
        const x = await osd.store.getXattrs(id);
        const size = x.get('_s');
        if (!size || decodeSize(size) !== expected.length) return `shard ${pos} on disk ${members[pos]}: size xattr ${size ? decodeSize(size) : 'missing'}, expected ${expected.length}`;
        versions.add(x.get('_v')?.toString('hex') ?? 'none');
        const data = await osd.store.read(id);
        if (data.length !== layout.shardBytes(expected.length)) return `shard ${pos} on disk ${members[pos]}: ${data.length} bytes, expected ${layout.shardBytes(expected.length)}`;
        shards.push(data);
      } catch (err) {
        return `shard ${pos} on disk ${members[pos]}: ${(err as Error).message}`;
      }
    }
    if (versions.size !== 1) return `shards at ${versions.size} versions`;
    const k = layout.dataShards;
    const parity = Array.from({ length: layout.parityShards }, () => Buffer.alloc(shards[0]!.length));
    if (parity[0]!.length > 0) createErasureCodec({ dataShards: k, parityShards: layout.parityShards }).encode(shards.slice(0, k), parity);
    for (let j = 0; j < layout.parityShards; j++) if (!parity[j]!.equals(shards[k + j]!)) return `parity shard ${k + j} does not match the data`;
    const joined = Buffer.alloc(layout.stripeCount(expected.length) * layout.stripeBytes);
    layout.join(shards, layout.stripeCount(expected.length), joined);
    return joined.subarray(0, expected.length).equals(expected) ? null : 'data shards do not hold the acknowledged bytes';
  };

  const finalCheck = async (): Promise<void> => {
    for (const p of pools) {
      const info = client!.pool(p.name);
      for (const k of keys.get(p.name)!) {
        if (k.acked === 0 && !k.uncertain) continue;
        let got: Buffer | null;
        try {
          got = await client!.read(p.name, k.key);
        } catch (err) {
          if (!isTesseraError(err, 'NotFound')) {
            violations.push(`${p.name}/${k.key}: read failed at the end: ${(err as Error).message}`);
            continue;
          }
          got = null;
        }
        const holds = (v: number): boolean => (v === 0 ? got === null : got !== null && model.contentAt(k.key, v).equals(got));
        if (k.uncertain && !holds(k.acked) && holds(k.acked + 1)) k.acked++;
        if (!holds(k.acked)) {
          const v = got ? model.whichVersion(k.key, k.acked + 1, got) : 0;
          violations.push(`${p.name}/${k.key}: holds ${got ? (v === -1 ? `bytes of no version (${got.length} B)` : `version ${v}`) : 'nothing'}; acknowledged ${k.acked}${k.uncertain ? ` (or ${k.acked + 1})` : ''}`);
          continue;
        }
        stats.keysVerified++;
        note(`final ${p.name}/${k.key} v${k.acked}`);
        const expected = model.contentAt(k.key, k.acked);
        const pg = objectToPg(info, k.key);
        if (p.redundancy.type !== 'replicated') {
          const problem = k.acked === 0 ? null : await checkShards(info, k.key, expected);
          if (problem) violations.push(`${p.name}/${k.key}: shards inconsistent with acknowledged version ${k.acked} (pg ${info.id}.${pg}): ${problem}`);
          else if (k.acked > 0) stats.shardsChecked++;
          continue;
        }
        for (const member of client!.view.pg(info, pg).members) {
          const osd = slots[member]?.osd;
          if (!osd) {
            violations.push(`${p.name}/${k.key}: member disk ${member} is not running at the end`);
            continue;
          }
          try {
            const copy = k.acked === 0 ? null : await osd.store.read({ ns: dataNs(info.id, 0), name: k.key });
            stats.replicasChecked++;
            if (copy && !copy.equals(expected)) violations.push(`${p.name}/${k.key}: the copy on disk ${member} differs from acknowledged version ${k.acked} (pg ${info.id}.${pg})`);
          } catch (err) {
            violations.push(`${p.name}/${k.key}: the copy on disk ${member} cannot be read: ${(err as Error).message}`);
          }
        }
      }
    }
  };

  const scenario = async (): Promise<void> => {
    await startMap(map);
    await Promise.all(slots.map((s) => startDisk(s)));
    for (const io of clientIos) {
      const conn = connectMapService(io, `${MAP_HOST}:${MAP_PORT}`);
      mapConnections.push(conn);
      clients.push(await TesseraClient.connect({ io, mapService: conn.service, timeoutMs: 30_000 }));
    }
    client = clients[0]!;
    await waitClean('start', sched.nowMs + 120_000);
    note('cluster clean');
    const startMs = sched.nowMs;
    const workers = pools.flatMap((p) => Array.from({ length: workersPerPool }, (_, i) => worker(p.name, derivedRng(seed, `worker-${p.name}-${i}`))));
    await faultLoop(startMs + runMs);
    stopWorkload = true;
    await Promise.all(workers);
    note('workload stopped; healing');
    net.healAll();
    for (const s of slots) if (s.proc?.paused) sched.resume(s.proc);
    net.unblock();
    for (const s of slots) if (s.state === 'down') await startDisk(s);
    await waitClean('healing', sched.nowMs + (o.settleMs ?? 600_000));
    await client.view.refresh();
    note('cluster clean after healing');
    await finalCheck();
    note(`checked: ${stats.keysVerified} keys, ${stats.replicasChecked} replicas, ${stats.shardsChecked} EC objects' shards`);
  };

  try {
    await sched.runUntil(scenario(), `seed ${seed}`, 3_600_000);
  } catch (err) {
    violations.push(`run failed: ${(err as Error).stack ?? (err as Error).message}`);
  } finally {
    stopMapWatch();
    // Every process ends here (nothing is closed gracefully: a run leaves nothing behind but garbage).
    for (const s of slots) kill(s);
    sched.kill(mapProc);
    for (const p of clientProcs) sched.kill(p);
    sched.kill(harnessProc);
    net.kill(mapProc);
    for (const p of clientProcs) net.kill(p);
    // The dead processes' map calls never settle, and node keeps a composite signal (AbortSignal.any, which
    // MapClient uses) alive while it has listeners: close their map clients, or each run stays in memory.
    ending = true;
    for (const c of mapConnections) void c.service.close().catch(() => undefined);
    // Let what the kills and closes queued run while the handlers are still ours.
    for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    process.off('unhandledRejection', onUnhandled);
    process.off('uncaughtException', onUnhandled);
    Object.assign(console, saved);
  }
  for (const v of violations) note(`VIOLATION ${v.split('\n')[0]}`);
  const traceHash = createHash('sha256').update(trace.join('\n')).digest('hex').slice(0, 16);
  return { seed, ok: violations.length === 0, violations, traceHash, trace, ...stats, virtualMs: sched.nowMs, events: sched.eventsRun, wallMs: performance.now() - startedWallMs, log };
}
