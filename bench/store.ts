/**
 * Store and daemon benchmark (the foundation issue). Prints JSON lines: for
 * the in-process store and for a storage daemon over loopback TCP, put and
 * get of 4 KiB and 4 MiB objects with 1 and 64 concurrent clients. The disk
 * of a shared VM swings several-fold from second to second, so every case
 * alternates with its raw-disk baseline (same file system, same run) for
 * several rounds and reports medians and the ratio of medians:
 *   4 KiB puts     vs 4 KiB write + fdatasync, one at a time
 *   4 MiB puts c=1 vs sequential 4 MiB write + fdatasync
 *   4 MiB puts c=64 vs sequential 64 MiB writev + fdatasync (the disk's durable bandwidth)
 *   4 MiB gets     vs sequential 4 MiB reads of a file (page cache dropped when permitted)
 * Daemon figures also carry their ratio to the in-process store's.
 *
 * Usage: node dist/bench/store.js [--dir DIR] [--seconds N] [--rounds N] [--only SUBSTRING] [--no-daemon]
 */
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { systemIo } from '../src/io/system.js';
import { ObjectStore, type StoreApi } from '../src/store/index.js';
import { StoreClient } from '../src/protocol/store-client.js';
import { createTcpClient } from '../src/rpc/index.js';
import { nativeStatus } from '../native/index.js';
import { closedLoop, dropCaches, emit, printHost, resultOf, type BenchResult } from './lib.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const { values: args } = parseArgs({ options: { dir: { type: 'string' }, seconds: { type: 'string' }, rounds: { type: 'string' }, only: { type: 'string' }, 'no-daemon': { type: 'boolean' } } });
const seconds = Number(args.seconds ?? 2);
const rounds = Number(args.rounds ?? 3);
const io = systemIo();

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Raw-disk baselines on one scratch file. */
class RawDisk {
  private fh!: FileHandle;
  private end = 0;
  private readonly chunk = randomBytes(4 * MiB);
  private readonly small = randomBytes(4 * KiB);
  constructor(private readonly path: string) {}

  async open(): Promise<void> {
    this.fh = await open(this.path, 'w+');
  }

  private async append(buffers: Buffer[]): Promise<void> {
    const len = buffers.reduce((n, b) => n + b.length, 0);
    await this.fh.writev(buffers, this.end);
    this.end += len;
    await this.fh.datasync();
    if (this.end > 2 * 1024 * MiB) {
      await this.fh.truncate(0);
      this.end = 0;
    }
  }

  syncWrite4k(): Promise<BenchResult> {
    return closedLoop({ workers: 1, ops: 1e9, maxSeconds: seconds, op: () => this.append([this.small]) }).then((s) => resultOf('raw 4KiB write + fdatasync, one at a time', s, 4 * KiB));
  }

  seqWrite4m(): Promise<BenchResult> {
    return closedLoop({ workers: 1, ops: 1e9, maxSeconds: seconds, op: () => this.append([this.chunk]) }).then((s) => resultOf('raw sequential 4MiB write + fdatasync', s, 4 * MiB));
  }

  seqWriteBulk(): Promise<BenchResult> {
    const group = Array.from({ length: 16 }, () => this.chunk);
    return closedLoop({ workers: 1, ops: 1e9, maxSeconds: seconds, op: () => this.append(group) }).then((s) => resultOf('raw sequential 64MiB writev + fdatasync', s, 64 * MiB));
  }

  async seqRead4m(): Promise<BenchResult> {
    if (this.end < 256 * MiB) for (let i = 0; i < 16; i++) await this.append(Array.from({ length: 4 }, () => this.chunk));
    const cold = await dropCaches();
    const buf = Buffer.allocUnsafe(4 * MiB);
    let pos = 0;
    const s = await closedLoop({
      workers: 1,
      ops: Math.floor(this.end / buf.length),
      maxSeconds: seconds,
      op: async () => {
        await this.fh.read(buf, 0, buf.length, pos);
        pos += buf.length;
      },
    });
    return resultOf(`raw sequential 4MiB read${cold ? '' : ' (page cache)'}`, s, 4 * MiB);
  }

  async close(): Promise<void> {
    await this.fh.close();
    await rm(this.path, { force: true });
  }
}

interface Case {
  key: string;
  sizeBytes: number;
  workers: number;
  kind: 'put' | 'get';
  baseline: (raw: RawDisk) => Promise<BenchResult>;
}

const cases: Case[] = [];
for (const sizeBytes of [4 * KiB, 4 * MiB]) {
  for (const workers of [1, 64]) {
    const label = sizeBytes === 4 * KiB ? '4KiB' : '4MiB';
    cases.push({
      key: `put ${label} c=${workers}`,
      sizeBytes,
      workers,
      kind: 'put',
      baseline: sizeBytes === 4 * KiB ? (r) => r.syncWrite4k() : workers === 1 ? (r) => r.seqWrite4m() : (r) => r.seqWriteBulk(),
    });
    cases.push({ key: `get ${label} c=${workers}`, sizeBytes, workers, kind: 'get', baseline: (r) => r.seqRead4m() });
  }
}

async function runCase(store: StoreApi, c: Case, written: Map<number, number>): Promise<BenchResult> {
  const ns = c.sizeBytes === 4 * KiB ? 1 : 2;
  const data = randomBytes(c.sizeBytes);
  if (c.kind === 'put') {
    const first = written.get(ns) ?? 0;
    const s = await closedLoop({
      workers: c.workers,
      ops: 1e9,
      maxSeconds: seconds,
      op: (i) => store.transact([{ type: 'writeFull', id: { ns, name: `o${first + i}` }, data }]),
    });
    written.set(ns, first + s.ops);
    return resultOf(c.key, s, c.sizeBytes);
  }
  const count = written.get(ns) ?? 0;
  const cold = await dropCaches();
  const s = await closedLoop({
    workers: c.workers,
    ops: count,
    maxSeconds: seconds,
    op: async (i) => {
      const got = await store.read({ ns, name: `o${i}` });
      if (got.length !== c.sizeBytes) throw new Error(`read ${got.length} bytes, expected ${c.sizeBytes}`);
    },
  });
  return resultOf(`${c.key}${cold ? '' : ' (page cache)'}`, s, c.sizeBytes);
}

/** Every case, alternating with its baseline for `rounds` rounds; medians. */
async function runAll(label: string, store: StoreApi, raw: RawDisk, reference?: Map<string, BenchResult>): Promise<Map<string, BenchResult>> {
  const out = new Map<string, BenchResult>();
  const written = new Map<number, number>();
  for (const c of cases) {
    if (args.only && !c.key.includes(args.only)) continue;
    const results: BenchResult[] = [];
    const baselines: BenchResult[] = [];
    if (c.kind === 'get' && (written.get(c.sizeBytes === 4 * KiB ? 1 : 2) ?? 0) === 0) {
      // --only selected reads without their writes: write what they will read first (untimed).
      await runCase(store, { ...c, kind: 'put', workers: 64 }, written);
    }
    for (let r = 0; r < rounds; r++) {
      baselines.push(await c.baseline(raw));
      results.push(await runCase(store, c, written));
    }
    const by = c.sizeBytes === 4 * KiB && c.kind === 'put' ? 'opsPerSec' : 'bytesPerSec';
    const value = median(results.map((x) => x[by]));
    const base = median(baselines.map((x) => x[by]));
    const mid = results.find((x) => x[by] === value)!;
    let result: BenchResult = {
      ...mid,
      name: `${label} ${mid.name}`,
      rounds: results.map((x) => Math.round(x[by])),
      baseline: baselines[0]!.name,
      baselineValue: base,
      baselineRounds: baselines.map((x) => Math.round(x[by])),
      ratioToBaseline: value / base,
    };
    const ref = reference?.get(c.key);
    if (ref) result = { ...result, inProcessStore: ref[by], ratioToInProcessStore: value / (ref[by] as number) };
    emit(result);
    out.set(c.key, result);
  }
  return out;
}

async function startDaemon(disk: string): Promise<{ port: number; stop: () => Promise<void> }> {
  const bin = fileURLToPath(new URL('../src/bin/tessera.js', import.meta.url));
  const child = spawn(process.execPath, [...(process.env.BENCH_DAEMON_NODE_ARGS ?? '').split(' ').filter(Boolean), bin, 'daemon', '--disk', disk, '--listen', '127.0.0.1:0', '--cluster-id', 'bench', '--disk-id', '1'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"listening"')) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`daemon exited ${code}`)));
  });
  return {
    port,
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

const base = args.dir ?? (await mkdtemp(join(tmpdir(), 'tessera-bench-')));
printHost({ bench: 'store', dir: base, seconds, rounds, native: nativeStatus() });
const raw = new RawDisk(join(base, 'raw.bin'));
await raw.open();
try {
  const store = await ObjectStore.open({ io, path: join(base, 'store'), create: { clusterId: 'bench', diskId: 0 }, maintenance: { enabled: false } });
  let local: Map<string, BenchResult>;
  try {
    local = await runAll('store', store, raw);
  } finally {
    await store.close();
  }
  if (args['no-daemon']) process.exit(0);
  const daemon = await startDaemon(join(base, 'daemon'));
  const client = new StoreClient(createTcpClient({ io, host: '127.0.0.1', port: daemon.port }));
  try {
    await runAll('daemon/tcp', client, raw, local);
  } finally {
    await client.close();
    await daemon.stop();
  }
} finally {
  await raw.close();
  if (!args.dir) await rm(base, { recursive: true, force: true });
}
