/**
 * The fault-injection suite: a write / overwrite / read-verify workload runs
 * against a multi-host cluster (3 hosts x 2 disks, each host a network
 * namespace when this machine allows it, else plain loopback processes)
 * while a seeded schedule injects faults one at a time: kill -9 and restart
 * of a daemon, SIGSTOP/SIGCONT, a host's link cut and healed, a partition
 * between two hosts, bytes corrupted in a daemon's segment file, kill -9 and
 * restart of the map service, a daemon restarted with a capacity its data
 * fills past the full ratio. Before each fault the cluster is back to full
 * health (every disk up, every pg active), so no more members are ever
 * missing than the pool tolerates (size 3 / min_size 2: one) and every
 * acknowledged write must survive.
 *
 * Contents are a function of (seed, key, version) (helpers/fault-model.ts):
 * the test keeps which version each key has acknowledged, never the bytes.
 * The same key name in the two pools is two objects to the model: a full
 * write forced after a corruption changes only its own pool's.
 * A corrupt copy must be detected by its store, and the client must still
 * read the object (from the primary's read repair when the primary's copy
 * is the corrupt one). A read during the run must return exactly the acknowledged version; a
 * write that failed leaves its key at one of two versions, and the key is
 * left alone until the end. At the end everything is healed, every pg must
 * be active, every key byte-exact through the client, and every member's
 * copy byte-exact read straight from its store (a key whose first write
 * failed and that reads as absent: no member holds a copy or shard of it).
 * Corruption hits a replica or primary copy of the replicated pool, or one shard of the erasure-coded
 * pool (the client must still read the acknowledged bytes); half of the
 * corrupt copies are left on disk (their keys idle), and at the end
 * `tessera pool scrub --deep --repair` of every pool must find those (or
 * fewer: a client read mends a primary's) and nothing else, and repair them;
 * then the member checks run, and a second deep scrub must find nothing.
 * A JSON summary is printed; lost must be 0.
 *
 * The seed is printed; TESSERA_SEED=<seed> replays the same fault schedule
 * and the same contents (interleavings with the workload differ).
 * TESSERA_FAULTS=<n> sets the number of faults (CI: 10; `npm run
 * test:faults -- --faults 1000` for a long run). TESSERA_FAULTS_EC=0 leaves
 * the erasure-coded pool out.
 * TESSERA_FAULTS_NETNS=0 forces loopback processes; TESSERA_FAULTS_KINDS=
 * kill9,pause,... restricts the kinds; TESSERA_FAULTS_AUDIT=0 skips the
 * check of every member's copies after each fault.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isTesseraError } from '../src/lib/errors.js';
import { objectToPg } from '../cluster/placement.js';
import { dataNs, decodeVersionValue, VERSION_XATTR } from '../src/daemon/pg-log.js';
import type { Eversion } from '../src/protocol/osd-messages.js';
import { createNetnsLab, netnsSupport, type NetnsLab } from './helpers/netns.js';
import { anomalies, startFaultCluster, type FaultCluster } from './helpers/fault-cluster.js';
import { ContentModel, type KeyState } from './helpers/fault-model.js';
import { corruptObjectOnDisk } from './helpers/corrupt.js';
import { seededRng, testSeed, type Rng } from './helpers/random.js';
import type { TestCluster, TestPool } from './helpers/cluster.js';
import { checkShards } from './cluster-ec-helpers.js';
import { poolScrub } from '../src/cli/scrub.js';
import { sleep, listEveryPg } from './helpers/wait.js';
import { pgReports, pgSummary } from '../src/cli/status.js';
import { buildPlacementIndex, pgPlacement } from '../cluster/placement.js';

const FAULTS = Number(process.env.TESSERA_FAULTS ?? 10);
const WITH_EC = process.env.TESSERA_FAULTS_EC !== '0';
/** Check every member's copies after each fault (TESSERA_FAULTS_AUDIT=0 turns it off). */
const AUDIT = process.env.TESSERA_FAULTS_AUDIT !== '0';
const KEYS_PER_POOL = 40;
const WORKERS_PER_POOL = 3;
const HEALTHY_TIMEOUT_MS = 180_000;
/** The test's whole budget (vitest's timeout is a little longer, so the suite's own diagnosis is what fails it). */
const BUDGET_MS = Math.max(480_000, FAULTS * 45_000);
const HOSTS = 3;
/** The cluster's full ratio: fillDisk restarts a daemon with a capacity its data fills just past it. */
const FULL_RATIO = 0.5;
const DISKS_PER_HOST = 2;
const seed = testSeed();
const rng = seededRng(seed);
const model = new ContentModel(seed);

const pools: TestPool[] = [{ name: 'rep', redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 16 }];
if (WITH_EC) pools.push({ name: 'ec', redundancy: { type: 'erasure', dataShards: 4, parityShards: 2 }, failureDomain: 'disk', pgCount: 8 });

type Fault =
  | { kind: 'kill9'; disk: number; holdMs: number }
  | { kind: 'pause'; disk: number; holdMs: number; markDown: boolean }
  | { kind: 'cutHost'; host: number; holdMs: number }
  | { kind: 'cutPair'; a: number; b: number; holdMs: number }
  | { kind: 'corrupt'; pickSeed: number }
  | { kind: 'mapRestart'; holdMs: number }
  | { kind: 'fillDisk'; disk: number; holdMs: number };

interface Stats {
  faults: Record<string, number>;
  writesAcknowledged: number;
  writesFailed: number;
  readsVerified: number;
  readsFailed: number;
  corruptDetected: number;
  corruptClientReadOk: number;
  corruptClientReadFailed: number;
  /** Writes refused with Full while a disk was full (fillDisk). */
  fullRefusals: number;
  violations: string[];
  /** A member's copy differs from the acknowledged version while the cluster is healthy. */
  divergences: string[];
}

const stats: Stats = {
  faults: {},
  writesAcknowledged: 0,
  writesFailed: 0,
  readsVerified: 0,
  readsFailed: 0,
  corruptDetected: 0,
  corruptClientReadOk: 0,
  corruptClientReadFailed: 0,
  fullRefusals: 0,
  violations: [],
  divergences: [],
};
const log = (msg: string): void => console.log(`[faults ${new Date().toISOString().slice(11, 23)}] ${msg}`);

let lab: NetnsLab | undefined;
let cluster: FaultCluster | undefined;
let netnsNote = '';
let pairCuts = false;

beforeAll(async () => {
  console.log(`faults seed: ${seed} (TESSERA_SEED=${seed} to replay), ${FAULTS} faults`);
  if (!WITH_EC) console.warn('WARNING: faults: the erasure-coded pool is left out (TESSERA_FAULTS_EC=0)');
  const support = process.env.TESSERA_FAULTS_NETNS === '0' ? { ok: false, reason: 'TESSERA_FAULTS_NETNS=0', pairCuts: false } : await netnsSupport();
  if (support.ok) {
    lab = await createNetnsLab({ hosts: HOSTS });
    netnsNote = `netns (${lab.prefix}*, ${lab.rootAddress}/24${support.pairCuts ? '' : '; no iptables: no pair cuts'})`;
  } else {
    netnsNote = `loopback (no network namespaces: ${support.reason})`;
    console.warn(`WARNING: faults: hosts are NOT network namespaces, link cuts are NOT injected: ${support.reason}`);
  }
  pairCuts = support.pairCuts;
  cluster = await startFaultCluster({
    hosts: HOSTS,
    disksPerHost: DISKS_PER_HOST,
    pools,
    ...(lab ? { lab } : {}),
    // Heartbeats every second (a full disk is seen soon); the full ratio well below the file system's use.
    liveness: { heartbeatIntervalMs: 1000, nearFullRatio: FULL_RATIO - 0.1, fullRatio: FULL_RATIO },
  });
  log(`cluster up: ${netnsNote}; map service at ${cluster.mapAddress}`);
}, 120_000);

afterAll(async () => {
  if (cluster && process.env.TESSERA_DEBUG) for (const id of cluster.diskIds) console.log(`--- disk ${id} stderr ---\n${cluster.stderrOf(id)}`);
  await cluster?.stop();
  await lab?.remove();
}, 60_000);

function makeSchedule(count: number): Array<Fault & { gapMs: number }> {
  const kinds: Array<[Fault['kind'], number]> = [
    ['kill9', 3],
    ['pause', 2],
    ['corrupt', 2],
    ['mapRestart', 1],
    ['fillDisk', 1],
    ...(lab ? ([['cutHost', 2]] as Array<[Fault['kind'], number]>) : []),
    ...(lab && pairCuts ? ([['cutPair', 2]] as Array<[Fault['kind'], number]>) : []),
  ];
  const only = process.env.TESSERA_FAULTS_KINDS?.split(',').filter(Boolean);
  if (only) {
    const unknown = only.filter((k) => !kinds.some(([name]) => name === k));
    if (unknown.length) throw new Error(`TESSERA_FAULTS_KINDS: ${unknown.join(',')} unknown or not available here (have ${kinds.map(([k]) => k).join(',')})`);
    kinds.splice(0, kinds.length, ...kinds.filter(([name]) => only.includes(name)));
  }
  const total = kinds.reduce((s, [, w]) => s + w, 0);
  const disks = HOSTS * DISKS_PER_HOST;
  const out: Array<Fault & { gapMs: number }> = [];
  for (let i = 0; i < count; i++) {
    let x = rng.int(total);
    const kind = kinds.find(([, w]) => (x -= w) < 0)![0];
    const holdMs = 200 + rng.int(2800);
    const gapMs = 100 + rng.int(900);
    const f: Fault =
      kind === 'kill9' ? { kind, disk: rng.int(disks), holdMs }
      : kind === 'pause' ? { kind, disk: rng.int(disks), holdMs, markDown: holdMs > 1500 }
      : kind === 'cutHost' ? { kind, host: rng.int(HOSTS), holdMs }
      : kind === 'cutPair' ? (() => { const a = rng.int(HOSTS); return { kind, a, b: (a + 1 + rng.int(HOSTS - 1)) % HOSTS, holdMs }; })()
      : kind === 'corrupt' ? { kind, pickSeed: rng.int(2 ** 31) }
      : kind === 'fillDisk' ? { kind, disk: rng.int(disks), holdMs }
      : { kind: 'mapRestart', holdMs };
    out.push({ ...f, gapMs });
  }
  return out;
}

/**
 * Corrupt copies left on disk for the deep scrub at the end to find and repair: their keys stay busy
 * (no workload write replaces them, no audit reads them) until then.
 */
const leftCorrupt: Array<{ pool: string; key: string; disk: number }> = [];
const keyStates = new Map<string, KeyState[]>();
/** Per key, its acknowledged writes with times (printed for a lost key). */
const history = new Map<string, string[]>();
const t0 = Date.now();
/** What the test is doing now (named in the diagnosis of a hang). */
let phase = 'starting';
/** Milliseconds spent per kind of phase (the summary and the diagnosis of a hang say where the time went). */
const phaseMs: Record<string, number> = {};
let phaseKind = 'starting';
let phaseSinceMs = Date.now();
/** Enters a phase: `kind` groups its time, `what` says what exactly it does. */
function enter(kind: string, what: string): void {
  const now = Date.now();
  phaseMs[phaseKind] = (phaseMs[phaseKind] ?? 0) + (now - phaseSinceMs);
  phaseKind = kind;
  phaseSinceMs = now;
  phase = what;
}
/** One line per fault injected so far (named in the diagnosis of a hang). */
const faultLines: string[] = [];
const keysOf = (pool: string): KeyState[] => keyStates.get(pool)!;

function pickFree(pool: string, r: Rng): KeyState | undefined {
  const free = keysOf(pool).filter((k) => !k.busy && !k.uncertain);
  return free.length ? r.pick(free) : undefined;
}

/** A key with an acknowledged value and no operation in flight or in doubt. */
const settled = (k: KeyState): boolean => !k.busy && !k.uncertain && k.acked > 0;

/** A settled key of at least minBytes, marked busy (the caller clears it), or undefined. */
function takeSettled(pool: string, r: Rng, minBytes: number): KeyState | undefined {
  const candidates = keysOf(pool).filter((k) => settled(k) && model.contentAt(pool, k.key, k.acked).length >= minBytes);
  if (!candidates.length) return undefined;
  const k = r.pick(candidates);
  k.busy = true;
  return k;
}

/** Which version of the key (0..acked+1) the bytes are, or -1. */
function whichVersion(pool: string, key: string, acked: number, got: Buffer): number {
  for (let v = acked + 1; v >= 1; v--) if (model.contentAt(pool, key, v).equals(got)) return v;
  return -1;
}

async function writeNext(pool: string, k: KeyState): Promise<boolean> {
  const v = k.acked + 1;
  const op = model.opOf(pool, k.key, v, model.contentAt(pool, k.key, k.acked));
  let at: Eversion;
  try {
    at = await cluster!.client.transact(pool, k.key, [op]);
  } catch (err) {
    k.uncertain = true;
    stats.writesFailed++;
    log(`${pool}/${k.key}: write of version ${v} failed (${(err as Error).message}); it holds version ${k.acked} or ${v}`);
    return false;
  }
  k.acked = v;
  stats.writesAcknowledged++;
  history.get(`${pool}/${k.key}`)?.push(`v${v} ${op.type}${op.type === 'write' ? `@${op.offsetBytes}+${op.data.length}` : ` ${op.type === 'writeFull' ? op.data.length : 0}B`} acked at +${Date.now() - t0}ms as pg version ${at.epoch}'${at.version}`);
  return true;
}

async function readVerify(pool: string, k: KeyState): Promise<void> {
  let got: Buffer;
  try {
    got = await cluster!.client.read(pool, k.key);
  } catch (err) {
    stats.readsFailed++;
    if (isTesseraError(err, 'Corrupt')) stats.violations.push(`${pool}/${k.key}: read failed with Corrupt: ${(err as Error).message}`);
    else log(`${pool}/${k.key}: read failed (${(err as Error).message})`);
    return;
  }
  const expected = model.contentAt(pool, k.key, k.acked);
  if (got.equals(expected)) {
    stats.readsVerified++;
    return;
  }
  const v = whichVersion(pool, k.key, k.acked, got);
  const info = cluster!.client.pool(pool);
  const pg = objectToPg(info, k.key);
  stats.violations.push(
    `${pool}/${k.key}: read returned ${v === -1 ? `bytes of no version (${got.length} B)` : `version ${v}`}, acknowledged is ${k.acked} (${expected.length} B) at +${Date.now() - t0}ms ` +
      `(pg ${info.id}.${pg}, members ${cluster!.client.view.pg(info, pg).members.join(',')}, epoch ${cluster!.client.view.epoch}); history: ${history.get(`${pool}/${k.key}`)?.slice(-4).join('; ')}`,
  );
  log(`VIOLATION: ${stats.violations.at(-1)}`);
}

async function worker(pool: string, r: Rng, stop: { now: boolean }): Promise<void> {
  while (!stop.now) {
    const k = pickFree(pool, r);
    if (!k) {
      await sleep(20);
      continue;
    }
    k.busy = true;
    try {
      if (k.acked === 0 || r.float() < 0.5) await writeNext(pool, k);
      else await readVerify(pool, k);
    } finally {
      k.busy = false;
    }
  }
}

/** Every disk up and in, the client on the newest map, every pg of every pool active (a full listing touches each). */
async function waitHealthy(why: string): Promise<void> {
  const c = cluster!;
  const deadline = Date.now() + HEALTHY_TIMEOUT_MS;
  let nextReportMs = Date.now() + 30_000;
  for (let attempt = 1; ; attempt++) {
    try {
      const map = await c.map.service.current();
      const notUp = map.disks.filter((d) => !d.up || !d.in).map((d) => d.id);
      if (notUp.length) await c.markUp(notUp);
      await c.client.view.refresh();
      await listEveryPg(c.client, pools.map((p) => p.name));
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`cluster not healthy ${HEALTHY_TIMEOUT_MS} ms after ${why} (attempt ${attempt}): ${(err as Error).message}\n${await diagnose()}`, { cause: err });
      if (Date.now() >= nextReportMs) {
        nextReportMs = Date.now() + 30_000;
        log(`not healthy yet after ${why} (attempt ${attempt}): ${(err as Error).message}\n${await diagnose()}`);
      }
      await sleep(500);
    }
  }
}

/** Seconds spent per kind of phase, the current one included. */
function secondsPerPhase(): Record<string, number> {
  enter(phaseKind, phase);
  return Object.fromEntries(Object.entries(phaseMs).map(([k, ms]) => [k, Math.round(ms / 100) / 10]));
}

/**
 * What a stuck run looks like: the map's disks, every pg not simply 'active' (with its members and
 * what its primary reports) and the tail of those primaries' logs. Each query is bounded; a part that
 * cannot be had says why.
 */
async function diagnose(): Promise<string> {
  const c = cluster;
  if (!c) return 'no cluster';
  const out: string[] = [];
  const bounded = <T>(p: Promise<T>, ms: number): Promise<T> =>
    Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms).unref())]);
  try {
    const map = await bounded(c.map.service.current(), 5000);
    out.push(`map epoch ${map.epoch}; disks ${map.disks.map((d) => `${d.id}:${d.up ? 'up' : 'down'}/${d.in ? 'in' : 'out'}${d.space ? `/${d.space}` : ''}`).join(' ')}; running ${c.running().join(',')}; client epoch ${c.client.view.epoch}`);
    const reports = await bounded(pgReports(c.client.io, map), 10_000);
    out.push(`pg reports from disks ${[...reports].map(([d, r]) => `${d}${r ? '' : '(no answer)'}`).join(',')}`);
    const { states } = pgSummary(map, reports);
    const index = buildPlacementIndex(map);
    const primaries = new Set<number>();
    let i = 0;
    for (const pool of map.pools) {
      for (let pg = 0; pg < pool.pgCount; pg++, i++) {
        const state = states[i]!;
        if (state === 'active') continue;
        const { members, acting, primary } = pgPlacement(map, index, pool, pg);
        out.push(`pg ${pool.id}.${pg} (${pool.name}) ${state}: members ${members.join(',')} acting ${acting.join(',')} primary ${primary}`);
        if (primary >= 0) primaries.add(primary);
      }
    }
    for (const d of [...primaries].slice(0, 3)) out.push(`--- disk ${d} log (tail) ---\n${c.stderrOf(d).split('\n').slice(-40).join('\n')}`);
  } catch (err) {
    out.push(`diagnosis incomplete: ${(err as Error).message}`);
  }
  return out.join('\n');
}

/** What a read gave: 'ok' (the expected bytes), 'wrong bytes', 'Corrupt', or 'error <message>'. */
function readOutcome(read: Promise<Buffer>, expected: Buffer): Promise<string> {
  return read.then(
    (b) => (b.equals(expected) ? 'ok' : 'wrong bytes'),
    (err: unknown) => (isTesseraError(err, 'Corrupt') ? 'Corrupt' : `error ${(err as Error).message}`),
  );
}

async function injectCorrupt(f: Extract<Fault, { kind: 'corrupt' }>): Promise<string> {
  const c = cluster!;
  const r = seededRng(f.pickSeed);
  if (WITH_EC && r.float() < 0.4) return injectCorruptShard(r);
  const pool = 'rep';
  const k = takeSettled(pool, r, 4096);
  if (!k) return 'no candidate object';
  let keep = false;
  try {
    const info = c.client.pool(pool);
    const members = c.client.view.pg(info, objectToPg(info, k.key)).members;
    // The primary half of the time: its copy is the one client reads use (read repair), a replica's only recovery.
    const primary = members[0]!;
    const member = r.float() < 0.5 ? primary : r.pick(members.slice(1));
    const expected = model.contentAt(pool, k.key, k.acked);
    const places = await corruptObjectOnDisk(c.diskDir(member), expected, r);
    if (!places.length) return `${k.key}: its bytes were not found on disk ${member}`;
    const store = c.storeOf(member);
    try {
      const direct = await readOutcome(store.read({ ns: dataNs(info.id, 0), name: k.key }), expected);
      if (direct === 'Corrupt') stats.corruptDetected++;
      else stats.violations.push(`corrupt ${pool}/${k.key} on disk ${member}: a direct read returned ${direct}, not the corruption error`);
    } finally {
      await store.close();
    }
    const viaClient = await readOutcome(c.client.read(pool, k.key), expected);
    if (viaClient === 'ok') stats.corruptClientReadOk++;
    else if (viaClient === 'wrong bytes') stats.violations.push(`corrupt ${pool}/${k.key} on disk ${member}: the client read returned wrong bytes`);
    else {
      // The primary must serve a good copy: read repair from a replica (src/daemon read repair).
      stats.corruptClientReadFailed++;
      stats.violations.push(`corrupt ${pool}/${k.key} on disk ${member} (${member === primary ? 'the primary' : 'a replica'}): the client read failed: ${viaClient}`);
    }
    // Half the time the copy stays corrupt for the deep scrub at the end (the client read mended a primary's).
    if (r.float() < 0.5) {
      leftCorrupt.push({ pool, key: k.key, disk: member });
      keep = true;
      return `${pool}/${k.key} on disk ${member} (${member === primary ? 'primary' : 'replica'}, ${places.length} place(s)); client read: ${viaClient}; left for the scrub`;
    }
    // Else: a full overwrite replaces every member's copy.
    model.forceFull(pool, k.key, k.acked + 1);
    await writeNext(pool, k);
    return `${pool}/${k.key} on disk ${member} (${member === primary ? 'primary' : 'replica'}, ${places.length} place(s)); client read: ${viaClient}`;
  } finally {
    if (!keep) k.busy = false;
  }
}

/**
 * Bytes of one shard of an erasure-coded object flipped on its member's disk: the member's store
 * must refuse it (Corrupt), the client must still read the acknowledged bytes (the primary decodes
 * from the other shards), then a full overwrite replaces every shard.
 */
async function injectCorruptShard(r: Rng): Promise<string> {
  const c = cluster!;
  const pool = 'ec';
  const k = takeSettled(pool, r, 16 * 1024);
  if (!k) return 'no candidate erasure-coded object';
  let keep = false;
  try {
    const info = c.client.pool(pool);
    const members = c.client.view.pg(info, objectToPg(info, k.key)).members;
    const position = r.int(members.length);
    const member = members[position]!;
    const id = { ns: dataNs(info.id, position), name: k.key };
    const expected = model.contentAt(pool, k.key, k.acked);
    const store = c.storeOf(member);
    try {
      const shard = await store.read(id).catch(() => null);
      if (!shard || shard.length < 4096) return `${pool}/${k.key}: shard ${position} on disk ${member} not readable or too small to find on disk`;
      const places = await corruptObjectOnDisk(c.diskDir(member), shard, r);
      if (!places.length) return `${pool}/${k.key}: shard ${position}'s bytes were not found on disk ${member}`;
      const direct = await readOutcome(store.read(id), shard);
      if (direct === 'Corrupt') stats.corruptDetected++;
      else stats.violations.push(`corrupt ${pool}/${k.key} shard ${position} on disk ${member}: a direct read returned ${direct}, not the corruption error`);
    } finally {
      await store.close();
    }
    const viaClient = await readOutcome(c.client.read(pool, k.key), expected);
    if (viaClient === 'ok') stats.corruptClientReadOk++;
    else {
      if (viaClient !== 'wrong bytes') stats.corruptClientReadFailed++;
      stats.violations.push(`corrupt ${pool}/${k.key} shard ${position} on disk ${member}: the client read ${viaClient === 'wrong bytes' ? 'returned wrong bytes' : `failed: ${viaClient}`}`);
    }
    if (r.float() < 0.5) {
      leftCorrupt.push({ pool, key: k.key, disk: member });
      keep = true;
      return `${pool}/${k.key} shard ${position} on disk ${member}; client read: ${viaClient}; left for the scrub`;
    }
    model.forceFull(pool, k.key, k.acked + 1);
    await writeNext(pool, k);
    return `${pool}/${k.key} shard ${position} on disk ${member}; client read: ${viaClient}`;
  } finally {
    if (!keep) k.busy = false;
  }
}

/** An inconsistency a scrub reported: which copy, and whether it repaired it. */
interface ScrubFinding {
  pool: string;
  object: string;
  diskId: number;
  text: string;
  repaired: boolean;
}

/**
 * `tessera pool scrub POOL --deep [--repair]` of every pool, as an operator runs it (src/cli/scrub.ts,
 * through each pg's primary): resolves with what it found and the pgs it could not scrub.
 */
async function deepScrubAll(repair: boolean): Promise<{ pgs: number; objects: number; findings: ScrubFinding[]; notScrubbed: number }> {
  const c = cluster!;
  const out = { pgs: 0, objects: 0, findings: [] as ScrubFinding[], notScrubbed: 0 };
  for (const p of pools) {
    let text = '';
    await poolScrub({ io: c.client.io, map: c.mapAddress }, { pool: p.name, deep: true, repair, json: true }, (t) => (text += t));
    const report = JSON.parse(text) as {
      pgs: Array<{ objects: number; inconsistencies: Array<{ object: string; diskId: number; kinds: string[]; detail: string; repaired: boolean }> }>;
      notScrubbed: number;
    };
    out.pgs += report.pgs.length;
    out.notScrubbed += report.notScrubbed;
    for (const r of report.pgs) {
      out.objects += r.objects;
      for (const i of r.inconsistencies) {
        out.findings.push({ pool: p.name, object: i.object, diskId: i.diskId, repaired: i.repaired, text: `${p.name}/${i.object} on disk ${i.diskId}: ${i.kinds.join(',')} (${i.detail})${i.repaired ? ', repaired' : ''}` });
      }
    }
  }
  return out;
}

/**
 * A disk fills up: its daemon is restarted with a capacity its data already fills past the full ratio
 * (FULL_RATIO of this cluster). Once the map marks it full, a write to one of its pgs must be refused
 * with Full (nothing applied: the key still reads as before); then it restarts with its real capacity.
 */
async function injectFill(f: Extract<Fault, { kind: 'fillDisk' }>): Promise<string> {
  const c = cluster!;
  const store = c.storeOf(f.disk);
  let usedBytes: number;
  try {
    usedBytes = (await store.statfs()).usedBytes;
  } finally {
    await store.close();
  }
  // Past the full ratio, yet room above the store's reserve (at least 4 MiB) for peering's metadata and
  // recovery pushes, as a real disk at its full ratio has.
  const capacityBytes = Math.max(Math.ceil(usedBytes / (FULL_RATIO + 0.03)), usedBytes + 12 * 1024 * 1024);
  if (usedBytes / capacityBytes < FULL_RATIO) return `disk ${f.disk} holds too little (${usedBytes} B) to be filled past the full ratio with room above the reserve: not injected`;
  await c.kill9(f.disk);
  await c.markDown([f.disk]);
  await c.start(f.disk, ['--capacity-bytes', String(capacityBytes)]);
  await c.markUp([f.disk]);
  const deadline = Date.now() + 20_000;
  let marked = false;
  while (!(marked = (await c.map.service.current()).disks.find((d) => d.id === f.disk)?.space === 'full') && Date.now() < deadline) await sleep(200);
  let probe = 'not probed';
  if (!marked) stats.violations.push(`fillDisk: disk ${f.disk} (capacity ${capacityBytes} B, ${usedBytes} B used) was not marked full within 20 s`);
  else {
    // A key of the replicated pool whose pg has the full disk: the write is refused, and nothing changes.
    const info = c.client.pool('rep');
    const k = keysOf('rep').find((x) => settled(x) && c.client.view.pg(info, objectToPg(info, x.key)).members.includes(f.disk));
    if (k) {
      k.busy = true;
      try {
        const refused = await c.client.transact('rep', k.key, [model.opOf('rep', k.key, k.acked + 1, model.contentAt('rep', k.key, k.acked))]).then(
          () => 'acknowledged',
          (err: unknown) => (isTesseraError(err, 'Full') ? 'Full' : `error ${(err as Error).message}`),
        );
        probe = `${k.key}: ${refused}`;
        if (refused === 'acknowledged') {
          k.acked++;
          stats.violations.push(`fillDisk: a write of rep/${k.key} to a pg with full disk ${f.disk} was acknowledged`);
        } else if (refused !== 'Full') {
          k.uncertain = true;
          stats.violations.push(`fillDisk: a write of rep/${k.key} to a pg with full disk ${f.disk} failed with ${refused}, not Full`);
        } else {
          stats.fullRefusals++;
          await readVerify('rep', k);
        }
      } finally {
        k.busy = false;
      }
    }
  }
  await sleep(f.holdMs);
  await c.kill9(f.disk);
  await c.markDown([f.disk]);
  await c.start(f.disk);
  await c.markUp([f.disk]);
  return `disk ${f.disk} capacity ${capacityBytes} B (${usedBytes} B used) for ${f.holdMs} ms: ${marked ? 'marked full' : 'NOT marked full'}; probe ${probe}`;
}

async function inject(f: Fault): Promise<string> {
  const c = cluster!;
  switch (f.kind) {
    case 'kill9':
      await c.kill9(f.disk);
      await c.markDown([f.disk]);
      await sleep(f.holdMs);
      await c.start(f.disk);
      return `disk ${f.disk} for ${f.holdMs} ms`;
    case 'pause':
      c.pause(f.disk);
      if (f.markDown) await c.markDown([f.disk]);
      await sleep(f.holdMs);
      c.resume(f.disk);
      if (f.markDown) await c.markUp([f.disk]);
      return `disk ${f.disk} for ${f.holdMs} ms${f.markDown ? ', marked down' : ''}`;
    case 'cutHost': {
      const disks = c.diskIds.filter((d) => c.hostOf(d) === f.host);
      await lab!.cutHost(f.host);
      await c.markDown(disks);
      await sleep(f.holdMs);
      await lab!.healHost(f.host);
      await c.markUp(disks);
      return `host ${f.host} for ${f.holdMs} ms`;
    }
    case 'cutPair':
      await lab!.cutPair(f.a, f.b);
      await sleep(f.holdMs);
      await lab!.healPair(f.a, f.b);
      return `hosts ${f.a} <-> ${f.b} for ${f.holdMs} ms`;
    case 'corrupt':
      return injectCorrupt(f);
    case 'fillDisk':
      return injectFill(f);
    case 'mapRestart':
      await c.restartMap(f.holdMs);
      return `map service kill -9, down for ${f.holdMs} ms, restarted`;
  }
}

/** "disk:epoch'version" of the object's version xattr on each member (for reports). */
async function memberVersions(poolId: number, key: string, members: readonly number[]): Promise<string> {
  const out: string[] = [];
  for (const m of members) {
    const store = cluster!.storeOf(m);
    try {
      const x = (await store.getXattrs({ ns: dataNs(poolId, 0), name: key })).get(VERSION_XATTR);
      const v = x ? decodeVersionValue(x) : null;
      out.push(`${m}:${v ? `${v.epoch}'${v.version}` : 'none'}`);
    } catch (err) {
      out.push(`${m}:${(err as Error).message}`);
    } finally {
      await store.close();
    }
  }
  return out.join(' ');
}

/**
 * After the cluster is healthy again: every member of every pg holds each
 * idle key's acknowledged version (keys are locked one at a time, so the
 * workload goes on). Names the fault after which a copy diverged.
 */
async function auditReplicas(afterWhat: string): Promise<void> {
  const c = cluster!;
  for (const p of pools) {
    if (p.redundancy.type !== 'replicated') continue;
    const info = c.client.pool(p.name);
    for (const k of keysOf(p.name)) {
      if (!settled(k)) continue;
      k.busy = true;
      try {
        const expected = model.contentAt(p.name, k.key, k.acked);
        const members = c.client.view.pg(info, objectToPg(info, k.key)).members;
        for (const member of members) {
          const store = c.storeOf(member);
          const copy = await store.read({ ns: dataNs(info.id, 0), name: k.key }).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
          await store.close();
          if (copy instanceof Buffer && copy.equals(expected)) continue;
          const held = copy instanceof Error ? `an error (${copy.message})` : `version ${whichVersion(p.name, k.key, k.acked, copy)}`;
          const versions = await memberVersions(info.id, k.key, members);
          stats.divergences.push(`after ${afterWhat}: ${p.name}/${k.key} on disk ${member} holds ${held}, acknowledged is ${k.acked} (pg ${info.id}.${objectToPg(info, k.key)}, members ${members.join(',')}; object version per member: ${versions}); history: ${history.get(`${p.name}/${k.key}`)?.slice(-4).join('; ')}`);
          log(`DIVERGENCE: ${stats.divergences.at(-1)}`);
        }
      } finally {
        k.busy = false;
      }
    }
  }
}

async function finalCheck(): Promise<{ verified: number; lost: string[]; replicasChecked: number; shardsChecked: number }> {
  const c = cluster!;
  const lost: string[] = [];
  let verified = 0;
  let replicasChecked = 0;
  let shardsChecked = 0;
  for (const p of pools) {
    const info = c.client.pool(p.name);
    for (const k of keysOf(p.name)) {
      if (k.acked === 0 && !k.uncertain) continue;
      let got: Buffer | null;
      try {
        got = await c.client.read(p.name, k.key);
      } catch (err) {
        if (!isTesseraError(err, 'NotFound')) {
          lost.push(`${p.name}/${k.key}: read failed at the end: ${(err as Error).message}`);
          continue;
        }
        got = null;
      }
      const ok = (v: number): boolean => (v === 0 ? got === null : got !== null && model.contentAt(p.name, k.key, v).equals(got));
      if (ok(k.acked)) {
        verified++;
      } else if (k.uncertain && ok(k.acked + 1)) {
        k.acked++;
        verified++;
      } else {
        const v = got ? whichVersion(p.name, k.key, k.acked, got) : 0;
        lost.push(`${p.name}/${k.key}: holds ${got ? (v === -1 ? `bytes of no version (${got.length} B)` : `version ${v}`) : 'nothing'}; acknowledged ${k.acked}${k.uncertain ? ` (or ${k.acked + 1})` : ''}`);
        continue;
      }
      if (p.redundancy.type !== 'replicated') {
        // Every shard at one version, parity equal to the data's, data equal to the model (also decoded from
        // parity); an object that reads as absent (its first write failed): no shard on any member.
        const shardView = { client: c.client, storeOf: (id: number) => c.storeOf(id) } as unknown as TestCluster;
        await checkShards(shardView, p.name, k.key, got === null ? null : model.contentAt(p.name, k.key, k.acked)).then(
          () => (shardsChecked++),
          (err: unknown) => lost.push(`${p.name}/${k.key}: shards inconsistent with ${got === null ? 'an absent object' : `version ${k.acked}`}: ${(err as Error).message.split('\n')[0]}`),
        );
        continue;
      }
      const expected = model.contentAt(p.name, k.key, k.acked);
      for (const member of c.client.view.pg(info, objectToPg(info, k.key)).members) {
        const store = c.storeOf(member);
        try {
          if (got === null) {
            // Absent through the client (its first write failed): absent on every member too.
            const held = await store.stat({ ns: dataNs(info.id, 0), name: k.key }).then(
              () => 'a copy',
              (err: unknown) => (isTesseraError(err, 'NotFound') ? null : `an error (${(err as Error).message})`),
            );
            replicasChecked++;
            if (held) lost.push(`${p.name}/${k.key}: reads as absent, yet disk ${member} holds ${held}`);
            continue;
          }
          const copy = await store.read({ ns: dataNs(info.id, 0), name: k.key });
          replicasChecked++;
          if (!copy.equals(expected)) {
            const v = whichVersion(p.name, k.key, k.acked, copy);
            const versions = await memberVersions(info.id, k.key, c.client.view.pg(info, objectToPg(info, k.key)).members);
            lost.push(`${p.name}/${k.key}: the copy on disk ${member} holds ${v === -1 ? `bytes of no version (${copy.length} B)` : `version ${v}`}, not version ${k.acked} (pg ${info.id}.${objectToPg(info, k.key)}, members ${c.client.view.pg(info, objectToPg(info, k.key)).members.join(',')}; object version per member: ${versions})`);
          }
        } catch (err) {
          lost.push(`${p.name}/${k.key}: the copy on disk ${member} cannot be read: ${(err as Error).message}`);
        } finally {
          await store.close();
        }
      }
    }
  }
  return { verified, lost, replicasChecked, shardsChecked };
}

it(`keeps every acknowledged write through ${FAULTS} injected faults`, async () => {
  let timer: NodeJS.Timeout | undefined;
  const watchdog = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void diagnose().then((d) => {
        const text = `faults: no end within ${BUDGET_MS} ms (seed ${seed}); stuck at: ${phase}; seconds per phase so far ${JSON.stringify(secondsPerPhase())}\nfaults injected:\n${faultLines.join('\n')}\n${d}`;
        console.log(text);
        reject(new Error(text));
      });
    }, BUDGET_MS);
  });
  try {
    await Promise.race([run(), watchdog]);
  } finally {
    clearTimeout(timer);
  }
}, BUDGET_MS + 30_000);

async function run(): Promise<void> {
  const c = cluster!;
  const schedule = makeSchedule(FAULTS);
  for (const p of pools) keyStates.set(p.name, Array.from({ length: KEYS_PER_POOL }, (_, i) => ({ key: `obj-${i}`, acked: 0, uncertain: false, busy: false })));
  for (const p of pools) for (const k of keysOf(p.name)) history.set(`${p.name}/${k.key}`, []);
  const stop = { now: false };
  const workers = pools.flatMap((p) => Array.from({ length: WORKERS_PER_POOL }, () => worker(p.name, seededRng(rng.int(2 ** 31)), stop)));
  const startedMs = Date.now();
  try {
    for (const [i, f] of schedule.entries()) {
      enter('health', `waiting for health after fault ${i - 1}`);
      await waitHealthy(i === 0 ? 'start' : `fault ${i - 1}`);
      enter('audit', `auditing every member's copies after fault ${i - 1}`);
      if (i > 0 && AUDIT) await auditReplicas(`fault ${i - 1} (${schedule[i - 1]!.kind})`);
      const startMs = Date.now() - t0;
      enter('inject', `injecting fault ${i}: ${JSON.stringify(f)}`);
      const what = await inject(f);
      stats.faults[f.kind] = (stats.faults[f.kind] ?? 0) + 1;
      faultLines.push(`${i}: +${startMs}..${Date.now() - t0}ms ${f.kind}: ${what}`);
      log(`fault ${i}/${FAULTS} (+${startMs}..${Date.now() - t0}ms): ${f.kind}: ${what} (acked ${stats.writesAcknowledged}, verified ${stats.readsVerified})`);
      enter('gap', `after fault ${i}`);
      await sleep(f.gapMs);
    }
  } finally {
    enter('stop', 'stopping the workload (waiting for its operations in flight)');
    stop.now = true;
    await Promise.all(workers);
    enter('stop', 'healing and restarting everything');
    await lab?.healAll();
    for (const d of c.diskIds) c.resume(d);
    for (const d of c.diskIds) if (!c.running().includes(d)) await c.start(d);
  }
  enter('health', 'waiting for health after the last fault');
  await waitHealthy('the last fault');
  enter('scrub', 'deep scrub with repair');
  // The deep scrub finds and repairs the corrupt copies left on purpose, and nothing else.
  const repair = await deepScrubAll(true);
  for (const f of repair.findings) log(`SCRUB (repair): ${f.text}`);
  const unexpected = repair.findings.filter((f) => !leftCorrupt.some((l) => l.pool === f.pool && l.key === f.object && l.disk === f.diskId)).map((f) => f.text);
  const unrepaired = repair.findings.filter((f) => !f.repaired).map((f) => f.text);
  for (const l of leftCorrupt) keysOf(l.pool).find((k) => k.key === l.key)!.busy = false;
  enter('check', 'the final check of every key and copy');
  const end = await finalCheck();
  enter('scrub', 'the second deep scrub');
  // And then every copy agrees.
  const scrub = await deepScrubAll(false);
  for (const f of scrub.findings) log(`SCRUB: ${f.text}`);
  const summary = {
    seed,
    mode: netnsNote,
    pools: pools.map((p) => p.name),
    seconds: Math.round((Date.now() - startedMs) / 1000),
    secondsIn: secondsPerPhase(),
    faultsInjected: stats.faults,
    operations: {
      writesAcknowledged: stats.writesAcknowledged,
      writesFailed: stats.writesFailed,
      readsVerifiedDuringRun: stats.readsVerified,
      readsFailedDuringRun: stats.readsFailed,
      objectsVerifiedAtEnd: end.verified,
      replicaCopiesVerifiedAtEnd: end.replicasChecked,
      ecObjectsShardChecked: end.shardsChecked,
    },
    corruption: { detectedByStore: stats.corruptDetected, clientReadOk: stats.corruptClientReadOk, clientReadFailed: stats.corruptClientReadFailed },
    fullRefusals: stats.fullRefusals,
    deepScrub: {
      corruptCopiesLeft: leftCorrupt.length,
      foundAndRepaired: repair.findings.length - unrepaired.length,
      unexpected: unexpected.length,
      pgs: scrub.pgs,
      objects: scrub.objects,
      inconsistenciesAfterRepair: scrub.findings.length,
      pgsNotScrubbed: repair.notScrubbed + scrub.notScrubbed,
    },
    lost: end.lost.length,
    violations: stats.violations.length,
    replicaDivergences: stats.divergences.length,
    /** Daemon log lines naming a state tolerated but never expected (test/helpers/fault-cluster.ts ANOMALY). */
    anomalies: anomalies.length,
  };
  console.log(`faults summary: ${JSON.stringify(summary)}`);
  for (const l of end.lost) console.log(`LOST: ${l}\n  history: ${history.get(l.slice(0, l.indexOf(':')))?.slice(-6).join('; ')}`);
  for (const v of stats.violations) console.log(`VIOLATION: ${v}`);
  for (const d of stats.divergences) console.log(`DIVERGENCE: ${d}`);
  // Not failed on: the product recovers from it (a pg log left with entries below its tail); printed with the
  // daemon's log before it, to find what leaves such a log (seen once, seed 504923102, 1000-fault run).
  for (const a of anomalies) console.warn(`ANOMALY (tolerated, unexplained) in ${a}`);
  if (end.lost.length || stats.violations.length || stats.divergences.length) {
    console.log(`replay with TESSERA_SEED=${seed} TESSERA_FAULTS=${FAULTS}${WITH_EC ? '' : ' TESSERA_FAULTS_EC=0'}${process.env.TESSERA_FAULTS_KINDS ? ` TESSERA_FAULTS_KINDS=${process.env.TESSERA_FAULTS_KINDS}` : ''}`);
  }
  expect(end.lost, 'acknowledged writes lost or corrupt').toEqual([]);
  expect(stats.violations, 'reads that returned other than the acknowledged version').toEqual([]);
  expect(stats.divergences, 'member copies that differ from the acknowledged version while healthy').toEqual([]);
  expect(stats.writesAcknowledged).toBeGreaterThan(0);
  expect(unexpected, 'inconsistencies the deep scrub found other than the corrupt copies left on purpose').toEqual([]);
  expect(unrepaired, 'inconsistencies the deep scrub could not repair').toEqual([]);
  expect(scrub.findings.map((f) => f.text), 'a deep scrub of every pool after the repair').toEqual([]);
  expect(repair.notScrubbed + scrub.notScrubbed, 'pgs the deep scrubs could not scrub').toBe(0);
  expect(scrub.pgs).toBe(pools.reduce((n, p) => n + p.pgCount, 0));
}
