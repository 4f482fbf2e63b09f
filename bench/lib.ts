/**
 * Shared benchmark plumbing: one JSON object per line (STYLE.md #13), host
 * description, latency percentiles, and a closed-loop runner with a fixed
 * number of workers.
 */
import { spawn } from 'node:child_process';
import { cpus, totalmem, hostname } from 'node:os';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { systemIo } from '../src/io/system.js';
import { TesseraClient } from '../src/client/client.js';
import { connectMapService } from '../cluster/map-daemon.js';

export interface BenchResult {
  name: string;
  opsPerSec: number;
  bytesPerSec: number;
  p50Ms: number;
  p99Ms: number;
  baseline?: string;
  baselineValue?: number;
  ratioToBaseline?: number;
  [extra: string]: unknown;
}

export function printHost(extra: Record<string, unknown> = {}): void {
  const cpu = cpus()[0];
  console.log(JSON.stringify({ host: hostname(), cpus: cpus().length, cpuModel: cpu?.model, memBytes: totalmem(), node: process.version, ...extra }));
}

export function emit(result: BenchResult): void {
  const round = (n: number): number => (Number.isFinite(n) ? Math.round(n * 1000) / 1000 : n);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(result)) out[k] = typeof v === 'number' ? round(v) : v;
  console.log(JSON.stringify(out));
}

export function percentile(sortedMs: number[], p: number): number {
  if (sortedMs.length === 0) return 0;
  return sortedMs[Math.min(sortedMs.length - 1, Math.floor((p / 100) * sortedMs.length))]!;
}

export interface LoopStats {
  ops: number;
  seconds: number;
  latenciesMs: number[];
}

/**
 * Runs `op` from `workers` concurrent loops until `ops` operations are done
 * or `maxSeconds` pass; op(i) gets the global operation index.
 */
export async function closedLoop(o: { workers: number; ops: number; maxSeconds: number; op: (i: number) => Promise<void> }): Promise<LoopStats> {
  let next = 0;
  const latenciesMs: number[] = [];
  const start = performance.now();
  const deadline = start + o.maxSeconds * 1000;
  const worker = async (): Promise<void> => {
    while (next < o.ops && performance.now() < deadline) {
      const i = next++;
      const t = performance.now();
      await o.op(i);
      latenciesMs.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: o.workers }, worker));
  const seconds = (performance.now() - start) / 1000;
  latenciesMs.sort((a, b) => a - b);
  return { ops: latenciesMs.length, seconds, latenciesMs };
}

export function resultOf(name: string, s: LoopStats, bytesPerOp: number, extra: Partial<BenchResult> = {}): BenchResult {
  return {
    name,
    opsPerSec: s.ops / s.seconds,
    bytesPerSec: (s.ops * bytesPerOp) / s.seconds,
    p50Ms: percentile(s.latenciesMs, 50),
    p99Ms: percentile(s.latenciesMs, 99),
    ...extra,
  };
}

export function withBaseline(r: BenchResult, baseline: BenchResult, by: 'opsPerSec' | 'bytesPerSec'): BenchResult {
  return { ...r, baseline: baseline.name, baselineValue: baseline[by], ratioToBaseline: r[by] / baseline[by] };
}

/** Drops the page cache so reads hit the disk; false when not permitted (then reads are cached, and reported so). */
export async function dropCaches(): Promise<boolean> {
  try {
    await writeFile('/proc/sys/vm/drop_caches', '3\n');
    return true;
  } catch {
    return false;
  }
}

/**
 * CPU time (user + system, ms) used so far by a process and all its
 * descendants, from /proc (Linux; 0 elsewhere). Why: on a shared machine a
 * case's throughput follows the others' load; its CPU per operation much less.
 */
export async function treeCpuMs(rootPid: number): Promise<number> {
  const stats: Array<{ pid: number; ppid: number; ticks: number }> = [];
  const entries = await readdir('/proc').catch(() => [] as string[]);
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    const text = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => null);
    if (text === null) continue;
    // Fields after the command (which may hold spaces): state ppid ... utime(14) stime(15).
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    stats.push({ pid: Number(name), ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
  }
  const inTree = new Set([rootPid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const s of stats) {
      if (inTree.has(s.pid) || !inTree.has(s.ppid)) continue;
      inTree.add(s.pid);
      grew = true;
    }
  }
  const ticksPerSecond = 100; // USER_HZ on Linux
  return (stats.filter((s) => inTree.has(s.pid)).reduce((sum, s) => sum + s.ticks, 0) * 1000) / ticksPerSecond;
}

/** The cluster a bench runs against: its processes' CPU time so far (treeCpuMs of `tessera up`). */
export interface UpCluster {
  cpuMs(): Promise<number>;
}

/**
 * Runs `fn` with a client of an all-in-one cluster (`tessera up` with 64 pgs
 * per pool, ports from basePort + a slot per pid, the S3 gateway on any free
 * port: a gateway another run left on 9000 must not stop it) on `dir`, then stops it
 * with SIGINT (also when fn throws) and waits for it to exit.
 */
export async function withUpCluster<T>(dir: string, basePort: number, fn: (client: TesseraClient, cluster: UpCluster) => Promise<T>): Promise<T> {
  const bin = fileURLToPath(new URL('../src/bin/tessera.js', import.meta.url));
  const base = basePort + (process.pid % 500) * 16;
  const child = spawn(process.execPath, [bin, 'up', '--data', dir, '--base-port', String(base), '--map-port', String(base + 15), '--pgs', '64', '--s3-port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line.startsWith('Ctrl-C')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`tessera up exited ${code}`)));
    });
    const file = JSON.parse(await readFile(join(dir, 'client.json'), 'utf8')) as { map: string };
    const io = systemIo();
    const conn = connectMapService(io, file.map);
    const client = await TesseraClient.connect({ io, mapService: conn.service, timeoutMs: 120_000 });
    try {
      return await fn(client, { cpuMs: () => treeCpuMs(child.pid!) });
    } finally {
      await client.close();
      await conn.close();
    }
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    await exited;
  }
}
