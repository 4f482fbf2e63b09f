/**
 * Cluster benchmark (the cluster core issue): an all-in-one cluster started
 * with `tessera up` on a temporary directory (3 hosts x 2 disks, one daemon
 * process each), driven by the client library from this process. Prints JSON
 * lines: put/get of 4 KiB and 4 MiB objects at concurrency 1 and 32 on the
 * replicated pool (erasure-coded cases: see runEcCases), with baselines
 * measured in the same run on the same file system: raw sequential write
 * (64 MiB writev + fdatasync), raw sequential read, and the single-disk store.
 * Each case also reports the CPU time it cost per operation, in the cluster's
 * processes (clusterCpuMsPerOp: `tessera up` and its children) and in this
 * one (clientCpuMsPerOp): on a shared machine throughput follows the others'
 * load, CPU per operation much less.
 *
 * Usage: node dist/bench/cluster.js [--seconds N] [--warmup-seconds N] [--dir DIR] [--cases LIST] [--fresh-buffers]
 *
 * --cases: only these cases, a comma list of POOL-OP[-SIZE] (POOL rep or ec,
 * OP put or get, SIZE 4KiB or 4MiB; no size: both), e.g. `rep-get-4MiB,ec-get-4MiB`.
 * A get without its put first fills the objects it reads, untimed (puts at
 * concurrency 32 for --seconds: about what the put cases' c=32 run leaves);
 * the store baseline is skipped when no put runs. Default: every case.
 *
 * Gets read each object once, cold (page cache dropped when allowed); a get
 * window that runs out of objects before --seconds writes more (untimed) and
 * runs again (getWindow), so every get figure is of a whole window. Each get
 * worker reads into one buffer it reuses (ObjectReadOptions.into, as a
 * gateway would); --fresh-buffers reads into a new buffer per get instead
 * (the client's default), and the get results say which (getBuffers).
 *
 * Warm-up: before the measured cases, --warmup-seconds (default 5) of mixed
 * 4 KiB puts and gets at concurrency 32 run on each pool and are not counted,
 * so the figures are the daemons' steady state rather than their first
 * seconds, when V8 is still compiling the hot paths (about 29% of daemon CPU
 * in the first 10 s of a fresh cluster; --warmup-seconds 0 measures cold).
 */
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { systemIo } from '../src/io/system.js';
import { TesseraClient } from '../src/client/client.js';
import { ObjectStore } from '../src/store/index.js';
import { closedLoop, dropCaches, emit, printHost, resultOf, withUpCluster, type BenchResult, type LoopStats, type UpCluster } from './lib.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const { values: args } = parseArgs({ options: { seconds: { type: 'string' }, 'warmup-seconds': { type: 'string' }, dir: { type: 'string' }, cases: { type: 'string' }, 'fresh-buffers': { type: 'boolean' } } });
const freshBuffers = args['fresh-buffers'] === true;
const seconds = Number(args.seconds ?? 3);
const warmupSeconds = Number(args['warmup-seconds'] ?? 5);
const caseList = args.cases?.split(',').filter(Boolean) ?? null;
for (const c of caseList ?? []) if (!/^(rep|ec)-(put|get)(-(4KiB|4MiB))?$/.test(c)) throw new Error(`--cases: unknown case ${c} (POOL-OP[-SIZE]: rep|ec, put|get, 4KiB|4MiB)`);

/** Is this case selected (by --cases, or every case when it is absent)? */
function selected(pool: string, op: 'put' | 'get', label?: string): boolean {
  if (caseList === null) return true;
  return caseList.some((c) => c === `${pool}-${op}` || (label === undefined ? c.startsWith(`${pool}-${op}-`) : c === `${pool}-${op}-${label}`));
}
const io = systemIo();

async function rawBaselines(dir: string): Promise<{ write: BenchResult; read: BenchResult }> {
  const path = join(dir, 'raw.bin');
  const fh = await open(path, 'w+');
  const chunk = randomBytes(4 * MiB);
  const group = Array.from({ length: 16 }, () => chunk);
  let pos = 0;
  const w = await closedLoop({
    workers: 1,
    ops: 16,
    maxSeconds: seconds,
    op: async () => {
      await fh.writev(group, pos);
      pos += 64 * MiB;
      await fh.datasync();
    },
  });
  const cold = await dropCaches();
  const buf = Buffer.allocUnsafe(4 * MiB);
  let rpos = 0;
  const r = await closedLoop({
    workers: 1,
    ops: pos / buf.length,
    maxSeconds: seconds,
    op: async () => {
      await fh.read(buf, 0, buf.length, rpos);
      rpos += buf.length;
    },
  });
  await fh.close();
  await rm(path);
  return { write: resultOf('raw sequential 64MiB writev + fdatasync', w, 64 * MiB), read: resultOf(`raw sequential 4MiB read${cold ? '' : ' (page cache)'}`, r, 4 * MiB) };
}

async function storeBaseline(dir: string): Promise<Map<string, BenchResult>> {
  const store = await ObjectStore.open({ io, path: join(dir, 'store'), create: { clusterId: 'bench', diskId: 0 }, maintenance: { enabled: false } });
  const out = new Map<string, BenchResult>();
  try {
    for (const [label, size] of [['4KiB', 4 * KiB], ['4MiB', 4 * MiB]] as const) {
      const data = randomBytes(size);
      const s = await closedLoop({ workers: 32, ops: 1e9, maxSeconds: seconds, op: (i) => store.transact([{ type: 'writeFull', id: { ns: 1, name: `o${i}` }, data }]) });
      out.set(`put ${label}`, resultOf(`store put ${label} c=32`, s, size));
    }
  } finally {
    await store.close();
  }
  return out;
}


/**
 * A case's loop with the CPU it cost per operation: the cluster's processes
 * (clusterCpuMsPerOp) and this one, the client's (clientCpuMsPerOp).
 */
async function measured(cluster: UpCluster | undefined, loop: () => Promise<LoopStats>): Promise<{ s: LoopStats; cpu: Partial<BenchResult> }> {
  const cluster0 = (await cluster?.cpuMs()) ?? 0;
  const client0 = process.cpuUsage();
  const s = await loop();
  const client = process.cpuUsage(client0);
  const clusterMs = ((await cluster?.cpuMs()) ?? 0) - cluster0;
  const perOp = (ms: number): number => (s.ops > 0 ? ms / s.ops : 0);
  return { s, cpu: { ...(cluster ? { clusterCpuMsPerOp: perOp(clusterMs) } : {}), clientCpuMsPerOp: perOp((client.user + client.system) / 1000) } };
}

/** A get case's window is run again this many times at most when it read every object before --seconds were over. */
const GET_WINDOW_RETRIES_MAX = 3;
/** Objects written for a retried window: the reads the last one made per second times --seconds, times this. */
const GET_FILL_MARGIN = 1.3;

/**
 * A get case's measured window: each object read once, cold (page cache
 * dropped when this process may), over objects 0.. of `label` written so far.
 * Why the retries: a window used to end when every object was read (0.5-1 s
 * of a 3 s case, mostly the daemons' warm-up); when it ends early, more
 * objects are written (untimed, enough for --seconds at the rate just seen)
 * and the window runs again, so the figure is of a whole --seconds window.
 */
async function getWindow(client: TesseraClient, pool: string, label: string, data: Buffer, workers: number, written: Map<string, number>, cluster: UpCluster | undefined): Promise<{ s: LoopStats; cpu: Partial<BenchResult>; cold: boolean }> {
  // One buffer per concurrent get, reused (taken at its start, given back at its end): at most `workers` of them.
  const idle: Buffer[] = [];
  for (let attempt = 0; ; attempt++) {
    const count = written.get(label)!;
    const cold = await dropCaches();
    const { s, cpu } = await measured(cluster, () =>
      closedLoop({
        workers,
        ops: count,
        maxSeconds: seconds,
        op: async (i) => {
          const into = freshBuffers ? undefined : (idle.pop() ?? Buffer.allocUnsafeSlow(data.length));
          try {
            const got = await client.read(pool, `${label}-${i}`, into ? { into } : {});
            if (got.length !== data.length) throw new Error(`read ${got.length} bytes of ${data.length}`);
          } finally {
            if (into) idle.push(into);
          }
        },
      }),
    );
    if (s.ops < count || s.seconds >= seconds * 0.95 || attempt === GET_WINDOW_RETRIES_MAX) return { s, cpu, cold };
    const more = Math.ceil((s.ops / s.seconds) * seconds * GET_FILL_MARGIN) - count;
    await closedLoop({ workers: 32, ops: more, maxSeconds: 1e6, op: (i) => client.put(pool, `${label}-${count + i}`, data).then(() => undefined) });
    written.set(label, count + more);
  }
}

export async function runPoolCases(
  client: TesseraClient,
  pool: string,
  baselines: { write: BenchResult; read: BenchResult; store: Map<string, BenchResult> },
  floors: Record<string, number> = {},
  cluster?: UpCluster,
): Promise<void> {
  const written = new Map<string, number>();
  if (!selected(pool, 'put') && !selected(pool, 'get')) return;
  if (warmupSeconds > 0) {
    const small = randomBytes(4 * KiB);
    await closedLoop({ workers: 32, ops: 1e9, maxSeconds: warmupSeconds, op: async (i) => (i % 2 === 0 ? void (await client.put(pool, `warmup-${i % 256}`, small)) : void (await client.read(pool, `warmup-${(i - 1) % 256}`).catch(() => null))) });
  }
  for (const [label, size] of [['4KiB', 4 * KiB], ['4MiB', 4 * MiB]] as const) {
    const data = randomBytes(size);
    const perWorkers = new Map<number, BenchResult>();
    const puts = selected(pool, 'put', label);
    const gets = selected(pool, 'get', label);
    if (!puts && gets) {
      const s = await closedLoop({ workers: 32, ops: 1e9, maxSeconds: seconds, op: (i) => client.put(pool, `${label}-${i}`, data).then(() => undefined) });
      written.set(label, s.ops);
    }
    for (const workers of puts ? [1, 32] : []) {
      const first = written.get(label) ?? 0;
      const { s, cpu } = await measured(cluster, () => closedLoop({ workers, ops: 1e9, maxSeconds: seconds, op: (i) => client.put(pool, `${label}-${first + i}`, data).then(() => undefined) }));
      written.set(label, first + s.ops);
      let r = resultOf(`cluster ${pool} put ${label} c=${workers}`, s, size, cpu);
      const store = baselines.store.get(`put ${label}`)!;
      r = { ...r, storeBytesPerSec: store.bytesPerSec, ratioToStore: r.bytesPerSec / store.bytesPerSec };
      if (size === 4 * MiB) r = { ...r, baseline: baselines.write.name, baselineValue: baselines.write.bytesPerSec, ratioToBaseline: r.bytesPerSec / baselines.write.bytesPerSec };
      const floor = floors[`put ${label}`];
      if (floor !== undefined && r.ratioToBaseline !== undefined) r = { ...r, floor, meetsFloor: r.ratioToBaseline >= floor };
      if (workers === 32 && perWorkers.has(1)) r = { ...r, ratioToConcurrency1: r.opsPerSec / perWorkers.get(1)!.opsPerSec };
      perWorkers.set(workers, r);
      emit(r);
    }
    for (const workers of gets ? [1, 32] : []) {
      const { s, cpu, cold } = await getWindow(client, pool, label, data, workers, written, cluster);
      let r = resultOf(`cluster ${pool} get ${label} c=${workers}${cold ? '' : ' (page cache)'}`, s, size, { ...cpu, getBuffers: freshBuffers ? 'fresh' : 'reused' });
      if (size === 4 * MiB) r = { ...r, baseline: baselines.read.name, baselineValue: baselines.read.bytesPerSec, ratioToBaseline: r.bytesPerSec / baselines.read.bytesPerSec };
      emit(r);
    }
  }
}

/**
 * Erasure-coded cases (the EC pool "ec", 4+2 over 6 disks): the same put/get
 * cases as the replicated pool, with the floor of the cluster core issue
 * reported on the 4 MiB writes: >= 50% of raw sequential write bandwidth
 * (each byte lands 1.5x: k data + m parity shards, all on this machine's one disk).
 */
export async function runEcCases(client: TesseraClient, baselines: { write: BenchResult; read: BenchResult; store: Map<string, BenchResult> }, cluster?: UpCluster): Promise<void> {
  await runPoolCases(client, 'ec', baselines, { 'put 4MiB': 0.5 }, cluster);
}

const base = args.dir ?? (await mkdtemp(join(tmpdir(), 'tessera-cluster-bench-')));
printHost({ bench: 'cluster', dir: base, seconds, warmupSeconds });
try {
  const raw = await rawBaselines(base);
  emit(raw.write);
  emit(raw.read);
  const anyPut = selected('rep', 'put') || selected('ec', 'put');
  const store = anyPut ? await storeBaseline(base) : new Map<string, BenchResult>();
  for (const r of store.values()) emit(r);
  await withUpCluster(join(base, 'cluster'), 21_000, async (client, cluster) => {
    await runPoolCases(client, 'rep', { ...raw, store }, {}, cluster);
    await runEcCases(client, { ...raw, store }, cluster);
  });
} finally {
  if (!args.dir) await rm(base, { recursive: true, force: true });
}
