/**
 * Cluster benchmark (the cluster core issue): an all-in-one cluster started
 * with `tessera up` on a temporary directory (3 hosts x 2 disks, one daemon
 * process each), driven by the client library from this process. Prints JSON
 * lines: put/get of 4 KiB and 4 MiB objects at concurrency 1 and 32 on the
 * replicated pool (erasure-coded cases: see runEcCases), with baselines
 * measured in the same run on the same file system: raw sequential write
 * (64 MiB writev + fdatasync), raw sequential read, and the single-disk store.
 *
 * Usage: node dist/bench/cluster.js [--seconds N] [--warmup-seconds N] [--dir DIR] [--only SUBSTRING]
 *
 * --only runs the cases whose name contains SUBSTRING (e.g. "rep put 4KiB"
 * for the replicated 4 KiB puts at both concurrencies; a pool none of whose
 * cases match is not warmed up); reads read what the selected writes wrote,
 * so select the writes with them.
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
import { closedLoop, dropCaches, emit, printHost, resultOf, withUpCluster, type BenchResult } from './lib.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const { values: args } = parseArgs({ options: { seconds: { type: 'string' }, 'warmup-seconds': { type: 'string' }, dir: { type: 'string' }, only: { type: 'string' } } });
/** Whether the case named so runs (--only). */
const selected = (name: string): boolean => args.only === undefined || name.includes(args.only);
const seconds = Number(args.seconds ?? 3);
const warmupSeconds = Number(args['warmup-seconds'] ?? 5);
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
      if (args.only !== undefined && !args.only.includes(label)) continue;
      const data = randomBytes(size);
      const s = await closedLoop({ workers: 32, ops: 1e9, maxSeconds: seconds, op: (i) => store.transact([{ type: 'writeFull', id: { ns: 1, name: `o${i}` }, data }]) });
      out.set(`put ${label}`, resultOf(`store put ${label} c=32`, s, size));
    }
  } finally {
    await store.close();
  }
  return out;
}


export async function runPoolCases(
  client: TesseraClient,
  pool: string,
  baselines: { write: BenchResult; read: BenchResult; store: Map<string, BenchResult> },
  floors: Record<string, number> = {},
): Promise<void> {
  const written = new Map<string, number>();
  const names = ['put', 'get'].flatMap((op) => ['4KiB', '4MiB'].flatMap((label) => [1, 32].map((c) => `cluster ${pool} ${op} ${label} c=${c}`)));
  if (!names.some(selected)) return;
  if (warmupSeconds > 0) {
    const small = randomBytes(4 * KiB);
    await closedLoop({ workers: 32, ops: 1e9, maxSeconds: warmupSeconds, op: async (i) => (i % 2 === 0 ? void (await client.put(pool, `warmup-${i % 256}`, small)) : void (await client.read(pool, `warmup-${(i - 1) % 256}`).catch(() => null))) });
  }
  for (const [label, size] of [['4KiB', 4 * KiB], ['4MiB', 4 * MiB]] as const) {
    const data = randomBytes(size);
    const perWorkers = new Map<number, BenchResult>();
    for (const workers of [1, 32]) {
      if (!selected(`cluster ${pool} put ${label} c=${workers}`)) continue;
      const first = written.get(label) ?? 0;
      const s = await closedLoop({ workers, ops: 1e9, maxSeconds: seconds, op: (i) => client.put(pool, `${label}-${first + i}`, data).then(() => undefined) });
      written.set(label, first + s.ops);
      let r = resultOf(`cluster ${pool} put ${label} c=${workers}`, s, size);
      const store = baselines.store.get(`put ${label}`);
      if (store) r = { ...r, storeBytesPerSec: store.bytesPerSec, ratioToStore: r.bytesPerSec / store.bytesPerSec };
      if (size === 4 * MiB) r = { ...r, baseline: baselines.write.name, baselineValue: baselines.write.bytesPerSec, ratioToBaseline: r.bytesPerSec / baselines.write.bytesPerSec };
      const floor = floors[`put ${label}`];
      if (floor !== undefined && r.ratioToBaseline !== undefined) r = { ...r, floor, meetsFloor: r.ratioToBaseline >= floor };
      if (workers === 32 && perWorkers.has(1)) r = { ...r, ratioToConcurrency1: r.opsPerSec / perWorkers.get(1)!.opsPerSec };
      perWorkers.set(workers, r);
      emit(r);
    }
    for (const workers of [1, 32]) {
      if (!selected(`cluster ${pool} get ${label} c=${workers}`)) continue;
      const count = written.get(label) ?? 0;
      const cold = await dropCaches();
      const s = await closedLoop({
        workers,
        ops: count,
        maxSeconds: seconds,
        op: async (i) => {
          const got = await client.read(pool, `${label}-${i}`);
          if (got.length !== size) throw new Error(`read ${got.length} bytes of ${size}`);
        },
      });
      let r = resultOf(`cluster ${pool} get ${label} c=${workers}${cold ? '' : ' (page cache)'}`, s, size);
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
export async function runEcCases(client: TesseraClient, baselines: { write: BenchResult; read: BenchResult; store: Map<string, BenchResult> }): Promise<void> {
  await runPoolCases(client, 'ec', baselines, { 'put 4MiB': 0.5 });
}

const base = args.dir ?? (await mkdtemp(join(tmpdir(), 'tessera-cluster-bench-')));
printHost({ bench: 'cluster', dir: base, seconds, warmupSeconds });
try {
  const raw = await rawBaselines(base);
  emit(raw.write);
  emit(raw.read);
  const store = await storeBaseline(base);
  for (const r of store.values()) emit(r);
  await withUpCluster(join(base, 'cluster'), 21_000, async (client) => {
    await runPoolCases(client, 'rep', { ...raw, store });
    await runEcCases(client, { ...raw, store });
  });
} finally {
  if (!args.dir) await rm(base, { recursive: true, force: true });
}
