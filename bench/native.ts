/**
 * Benchmark of native/: erasure coding and crc32c, each implementation against
 * Intel ISA-L called directly from C (bench/native/isal_direct.c, built here
 * into bench/build/ when ISA-L is installed), all in the same run.
 *
 * Cases: encode and decode (data shards 0 and 1 lost) for 4+2 and 8+3 at 64 KiB
 * and 1 MiB shards, counted in bytes of data (k x shard) per second; crc32c
 * over 4 KiB and 1 MiB buffers. Implementations: isa-l-direct (the baseline,
 * 64-byte aligned buffers), addon (ISA-L through Node-API, shards from
 * allocateShards: aligned like the baseline's), addon-plain-buffers (ordinary
 * Uint8Arrays, which malloc puts 16 bytes off a cache line), wasm-simd (the
 * fallback, shards in its own memory from allocateShards), wasm-simd-copying
 * (the fallback given ordinary buffers, so copying through its memory),
 * wasm-relaxed-simd (where the runtime has relaxed SIMD: Node.js >= 22 or
 * --experimental-wasm-relaxed-simd), @node-rs/crc32 (the checksum fallback).
 *
 * Method: implementations of a case take turns, `--rounds` rounds of
 * `--seconds` each, so load from elsewhere on the machine hits all of them
 * alike; bytesPerSec is the median round, bestBytesPerSec the fastest (the
 * least disturbed: on a shared machine the ratio of bests is the steadier
 * figure). Prints one JSON object per line, then a summary of the floors the
 * issue sets (addon >= 90% of direct ISA-L, fallback encode >= 25%), on both
 * figures. Reports only: it asserts nothing.
 *
 * Run: npm run bench:native, or node dist/bench/native.js [--rounds 7] [--seconds 0.2]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  availableCodecs,
  createErasureCodec,
  crc32cChunks,
  crc32cWith,
  nativeStatus,
  type CodecImplementation,
} from '../native/index.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const BATCH_BYTES = 1 * MiB;

const { values: args } = parseArgs({
  options: { rounds: { type: 'string', default: '7' }, seconds: { type: 'string', default: '0.2' } },
});
const rounds = Number(args.rounds);
const seconds = Number(args.seconds);

// This file runs as dist/bench/native.js; the C source and its build live under bench/.
const root = new URL('../../', import.meta.url);
const cSource = fileURLToPath(new URL('bench/native/isal_direct.c', root));
const cBinary = fileURLToPath(new URL('bench/build/isal_direct', root));

interface Sample {
  bytes: number;
  seconds: number;
  ops: number;
}

type Runner = () => Sample;

function host(): Record<string, unknown> {
  const flags = (() => {
    try {
      const cpuinfo = execFileSync('grep', ['-m1', '^flags', '/proc/cpuinfo'], { encoding: 'utf8' });
      return ['sse4_2', 'avx2', 'avx512f', 'avx512bw', 'gfni', 'vpclmulqdq'].filter((f) => cpuinfo.includes(` ${f}`));
    } catch {
      return [];
    }
  })();
  const isal = spawnSync('pkg-config', ['--modversion', 'libisal'], { encoding: 'utf8' });
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    cpuFlags: flags,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    isal: isal.status === 0 ? isal.stdout.trim() : null,
    loadAverage: os.loadavg().map((l) => Number(l.toFixed(2))),
  };
}

/** Builds the C baseline; null and a reason when ISA-L or a compiler is missing. */
function buildDirect(): string | null {
  mkdirSync(fileURLToPath(new URL('bench/build/', root)), { recursive: true });
  const cc = process.env['CC'] ?? 'cc';
  const built = spawnSync(cc, ['-O2', '-Wall', cSource, '-lisal', '-o', cBinary], { encoding: 'utf8' });
  return built.status === 0 ? null : `could not build ${cSource} with ${cc}: ${built.stderr.trim() || built.error}`;
}

function direct(operation: string, k: number, m: number, sizeBytes: number): Runner {
  return () => {
    const out = execFileSync(cBinary, [operation, `${k}`, `${m}`, `${sizeBytes}`, `${seconds}`], { encoding: 'utf8' });
    return JSON.parse(out) as Sample;
  };
}

/** Runs op until `seconds` pass, reading the clock once per ~1 MiB of work (as the C baseline does). */
function timed(op: () => void, bytesPerOp: number): Runner {
  const batch = Math.max(1, Math.floor(BATCH_BYTES / bytesPerOp));
  return () => {
    op();
    let ops = 0;
    const start = process.hrtime.bigint();
    let elapsed = 0;
    do {
      for (let b = 0; b < batch; b++) op();
      ops += batch;
      elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    } while (elapsed < seconds);
    return { bytes: bytesPerOp * ops, seconds: elapsed, ops };
  };
}

function filled(sizeBytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(sizeBytes);
  let x = seed * 2654435761;
  for (let i = 0; i < sizeBytes; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 16;
  }
  return out;
}

/** An encode or decode runner for one codec; `inPlace` puts the shards in the codec's own memory. */
function codecRunner(
  implementation: CodecImplementation,
  operation: 'encode' | 'decode',
  k: number,
  m: number,
  sizeBytes: number,
  inPlace: boolean,
): Runner {
  const codec = createErasureCodec({ dataShards: k, parityShards: m, implementation });
  const shards = inPlace
    ? codec.allocateShards(sizeBytes)
    : Array.from({ length: k + m }, () => new Uint8Array(sizeBytes));
  shards.slice(0, k).forEach((shard, i) => shard.set(filled(sizeBytes, i + 1)));
  const data = shards.slice(0, k);
  const parity = shards.slice(k);
  codec.encode(data, parity);
  if (operation === 'encode') return timed(() => codec.encode(data, parity), k * sizeBytes);
  const expected = [Uint8Array.from(shards[0]!), Uint8Array.from(shards[1]!)];
  const run = timed(() => codec.reconstruct(shards, [0, 1]), k * sizeBytes);
  return () => {
    const sample = run();
    // Rebuilt into the lost shards' own buffers: check they came back right.
    if (!expected.every((e, i) => Buffer.from(e).equals(shards[i]!))) throw new Error(`${implementation} decode wrong`);
    return sample;
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const sizeName = (bytes: number): string => (bytes >= MiB ? `${bytes / MiB}MiB` : `${bytes / KiB}KiB`);

interface Result {
  name: string;
  implementation: string;
  bytesPerSec: number;
  bestBytesPerSec: number;
}

function runCase(
  caseName: string,
  details: Record<string, unknown>,
  runners: [string, Runner | string][],
  hostInfo: Record<string, unknown>,
): Result[] {
  const available = runners.filter((r): r is [string, Runner] => typeof r[1] !== 'string');
  for (const [implementation, reason] of runners) {
    if (typeof reason === 'string') {
      console.log(JSON.stringify({ name: `${caseName} ${implementation}`, skipped: reason }));
    }
  }
  const samples = new Map<string, Sample[]>(available.map(([name]) => [name, []]));
  for (let round = 0; round < rounds; round++) {
    for (const [implementation, run] of available) samples.get(implementation)!.push(run());
  }
  const baselineName = `${caseName} ${available[0]?.[0]}`;
  const results: Result[] = [];
  let baseline: Result | null = null;
  for (const [implementation] of available) {
    const list = samples.get(implementation)!;
    const rates = list.map((s) => s.bytes / s.seconds);
    const bytesPerSec = median(rates);
    const bestBytesPerSec = Math.max(...rates);
    const name = `${caseName} ${implementation}`;
    const result = { name, implementation, bytesPerSec, bestBytesPerSec };
    baseline ??= result;
    results.push(result);
    console.log(
      JSON.stringify({
        name,
        ...details,
        implementation,
        bytesPerSec: Math.round(bytesPerSec),
        gbPerSec: Number((bytesPerSec / 1e9).toFixed(2)),
        opsPerSec: Math.round(median(list.map((s) => s.ops / s.seconds))),
        p50Ms: Number(median(list.map((s) => (s.seconds / s.ops) * 1e3)).toPrecision(4)),
        bestBytesPerSec: Math.round(bestBytesPerSec),
        roundsGbPerSec: rates.map((r) => Number((r / 1e9).toFixed(2))),
        baseline: baselineName,
        ratioToBaseline: Number((bytesPerSec / baseline.bytesPerSec).toFixed(3)),
        ratioOfBests: Number((bestBytesPerSec / baseline.bestBytesPerSec).toFixed(3)),
        host: hostInfo,
      }),
    );
  }
  return results;
}

function main(): void {
  const hostInfo = host();
  const status = nativeStatus();
  const directMissing = buildDirect();
  const addonMissing = status.addonPath === null ? `ISA-L addon not loaded: ${status.fallbackReason}` : null;
  const relaxedMissing = availableCodecs().includes('wasm-relaxed-simd')
    ? null
    : 'relaxed SIMD not available in this runtime (Node.js >= 22, or run with --experimental-wasm-relaxed-simd)';
  if (directMissing !== null) console.log(JSON.stringify({ name: 'isa-l-direct', skipped: directMissing }));

  const ratios: { name: string; floor: number; median: number | null; best: number | null }[] = [];
  const floorOf = (results: Result[], implementation: string, floor: number): void => {
    const base = results.find((r) => r.implementation === 'isa-l-direct');
    const mine = results.find((r) => r.implementation === implementation);
    if (mine === undefined) return;
    ratios.push({
      name: mine.name,
      floor,
      median: base ? mine.bytesPerSec / base.bytesPerSec : null,
      best: base ? mine.bestBytesPerSec / base.bestBytesPerSec : null,
    });
  };

  for (const operation of ['encode', 'decode'] as const) {
    for (const [k, m] of [
      [4, 2],
      [8, 3],
    ] as const) {
      for (const sizeBytes of [64 * KiB, 1 * MiB]) {
        const caseName = `${operation} ${k}+${m} ${sizeName(sizeBytes)}`;
        const results = runCase(
          caseName,
          { operation, dataShards: k, parityShards: m, shardBytes: sizeBytes, lostShards: operation === 'decode' ? [0, 1] : [] },
          [
            ['isa-l-direct', directMissing ?? direct(operation, k, m, sizeBytes)],
            ['addon', addonMissing ?? codecRunner('isa-l', operation, k, m, sizeBytes, true)],
            ['addon-plain-buffers', addonMissing ?? codecRunner('isa-l', operation, k, m, sizeBytes, false)],
            ['wasm-simd', codecRunner('wasm-simd', operation, k, m, sizeBytes, true)],
            ['wasm-simd-copying', codecRunner('wasm-simd', operation, k, m, sizeBytes, false)],
            ['wasm-relaxed-simd', relaxedMissing ?? codecRunner('wasm-relaxed-simd', operation, k, m, sizeBytes, true)],
          ],
          hostInfo,
        );
        floorOf(results, 'addon', 0.9);
        if (operation === 'encode') {
          floorOf(results, 'wasm-simd', 0.25);
          floorOf(results, 'wasm-relaxed-simd', 0.25);
        }
      }
    }
  }

  for (const sizeBytes of [4 * KiB, 1 * MiB]) {
    const buffer = filled(sizeBytes, 99);
    const checksum = (implementation: 'isa-l' | '@node-rs/crc32'): Runner => {
      const crc = crc32cWith(implementation);
      return timed(() => crc(buffer), sizeBytes);
    };
    // The store checksums every 4 KiB chunk of a blob in one call (crc32cChunks):
    // per-call N-API overhead (~60 ns) is a third of one 4 KiB crc, so the
    // batched figure is the one the floor applies to at 4 KiB; both are printed.
    const chunksPerCall = 256;
    const batchedData = sizeBytes < 64 * KiB ? filled(sizeBytes * chunksPerCall, 99) : null;
    const batchedOut = new Uint32Array(chunksPerCall);
    const batched: Runner | null =
      batchedData === null || addonMissing !== null ? null : timed(() => crc32cChunks(batchedData, sizeBytes, batchedOut), batchedData.length);
    const results = runCase(
      `crc32c ${sizeName(sizeBytes)}`,
      { operation: 'crc32c', bufferBytes: sizeBytes },
      [
        ['isa-l-direct', directMissing ?? direct('crc32c', 0, 0, sizeBytes)],
        ['addon', addonMissing ?? checksum('isa-l')],
        ...(batched !== null ? ([['addon-batched', batched]] as Array<[string, Runner]>) : []),
        ['@node-rs/crc32', checksum('@node-rs/crc32')],
      ],
      hostInfo,
    );
    floorOf(results, batched !== null ? 'addon-batched' : 'addon', 0.9);
  }

  const measured = ratios.filter((r) => r.median !== null);
  const round3 = (x: number | null): number | null => (x === null ? null : Number(x.toFixed(3)));
  console.log(
    JSON.stringify({
      name: 'floors',
      metOnMedians: measured.length > 0 && measured.every((r) => r.median! >= r.floor),
      metOnBests: measured.length > 0 && measured.every((r) => r.best! >= r.floor),
      cases: ratios.map((r) => ({
        name: r.name,
        floor: r.floor,
        ratioOfMedians: round3(r.median),
        ratioOfBests: round3(r.best),
      })),
      host: { ...hostInfo, loadAverageAtEnd: os.loadavg().map((l) => Number(l.toFixed(2))) },
    }),
  );
}

main();
