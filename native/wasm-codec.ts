/**
 * The portable erasure codec: the WebAssembly SIMD kernels built from
 * native/wasm/erasure-wat.ts into dist/native/ (erasure.wasm, and
 * erasure-relaxed.wasm where the runtime has relaxed SIMD), behind the same
 * CodingBackend as ISA-L, with the same tables, so the same parity.
 *
 * WebAssembly code sees only its own memory. Shards from allocateShards() live
 * in a memory of their own (never grown, so the views stay valid) and are
 * coded in place; any other buffers are copied through a per-codec scratch
 * memory in column chunks small enough to stay in cache.
 *
 * Memory layout of every kernel instance: tables at 0 (at most 32 x 32 x 8 =
 * 8 KiB), source addresses at 8 KiB, target addresses after them, shards from
 * 16 KiB on.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TesseraError } from '../src/lib/errors.js';
import type { CodingBackend } from './codec.js';
import { DATA_SHARDS_MAX, PARITY_SHARDS_MAX } from './codec.js';
import { splitTables } from './gf256.js';
import { webAssembly, type WasmMemory, type WasmModule } from './wasm/webassembly-api.js';

export type WasmLoad = { module: WasmModule; path: string } | { module: null; reason: string };
export type WasmKernelKind = 'wasm-simd' | 'wasm-relaxed-simd';

const WASM_PAGE_BYTES = 64 * 1024;
const TABLES_AT = 0;
const SOURCES_AT = 8 * 1024;
const TARGETS_AT = SOURCES_AT + 4 * DATA_SHARDS_MAX;
const TARGETS_WORD = (TARGETS_AT - SOURCES_AT) / 4;
const SHARDS_AT = 16 * 1024;
/** Column chunk of the copying path: sources and targets of one chunk stay in L2. */
const COPY_CHUNK_BYTES = 32 * 1024;

const KERNEL_FILES: Record<WasmKernelKind, string> = {
  'wasm-simd': 'erasure.wasm',
  'wasm-relaxed-simd': 'erasure-relaxed.wasm',
};

/** Where a kernel is, from native/ (tests run the sources) or from dist/native/ (compiled). */
function kernelCandidates(file: string): string[] {
  return [new URL(`../dist/native/${file}`, import.meta.url), new URL(`./${file}`, import.meta.url)].map((url) =>
    fileURLToPath(url),
  );
}

/** Compiles one kernel; never throws (a reason instead). */
export function loadWasmKernel(kind: WasmKernelKind): WasmLoad {
  const file = KERNEL_FILES[kind];
  const path = kernelCandidates(file).find((candidate) => existsSync(candidate));
  if (path === undefined) return { module: null, reason: `dist/native/${file} is not built: run npm run build` };
  try {
    const bytes = readFileSync(path);
    if (!webAssembly.validate(bytes)) {
      const why = kind === 'wasm-relaxed-simd' ? ' (relaxed SIMD needs Node.js >= 22 or --experimental-wasm-relaxed-simd)' : '';
      return { module: null, reason: `this runtime does not accept ${file}${why}` };
    }
    return { module: new webAssembly.Module(bytes), path };
  } catch (err) {
    return { module: null, reason: `${path} failed to compile: ${err instanceof Error ? err.message : String(err)}` };
  }
}

type EncodeExport = (len: number, k: number, rows: number, tbl: number, srcs: number, dsts: number) => void;

/** One instance of the kernel over a fixed-size memory of its own. */
class Kernel {
  readonly memory: WasmMemory;
  readonly bytes: Uint8Array;
  private readonly addresses: Uint32Array;
  private readonly encode: EncodeExport;
  private loadedTables: Uint8Array | null = null;

  constructor(module: WasmModule, sizeBytes: number) {
    const pages = Math.ceil(sizeBytes / WASM_PAGE_BYTES);
    this.memory = new webAssembly.Memory({ initial: pages, maximum: pages });
    const instance = new webAssembly.Instance(module, { env: { memory: this.memory } });
    this.encode = instance.exports['encode'] as EncodeExport;
    this.bytes = new Uint8Array(this.memory.buffer);
    this.addresses = new Uint32Array(this.memory.buffer, SOURCES_AT, DATA_SHARDS_MAX + DATA_SHARDS_MAX + PARITY_SHARDS_MAX);
  }

  /** Codes lengthBytes at the given addresses in this memory. */
  run(tables: Uint8Array, lengthBytes: number, sources: readonly number[], targets: readonly number[]): void {
    this.loadTables(tables);
    this.addresses.set(sources, 0);
    this.addresses.set(targets, TARGETS_WORD);
    this.encode(lengthBytes, sources.length, targets.length, TABLES_AT, SOURCES_AT, TARGETS_AT);
  }

  /** Codes views of this memory in place (no allocation: this is the per-stripe path). */
  runInPlace(tables: Uint8Array, lengthBytes: number, sources: readonly Uint8Array[], targets: readonly Uint8Array[]): void {
    const a = this.addresses;
    for (let j = 0; j < sources.length; j++) a[j] = sources[j]!.byteOffset;
    for (let r = 0; r < targets.length; r++) a[TARGETS_WORD + r] = targets[r]!.byteOffset;
    // Same memory, so offsets compare directly; an overlapping target would be garbage.
    for (let r = 0; r < targets.length; r++) {
      const target = a[TARGETS_WORD + r]!;
      for (let j = 0; j < sources.length; j++) if (rangesOverlap(target, a[j]!, lengthBytes)) throw overlapError();
      for (let q = r + 1; q < targets.length; q++) if (rangesOverlap(target, a[TARGETS_WORD + q]!, lengthBytes)) throw overlapError();
    }
    this.loadTables(tables);
    this.encode(lengthBytes, sources.length, targets.length, TABLES_AT, SOURCES_AT, TARGETS_AT);
  }

  /** True when every view lies in this kernel's memory. */
  holds(sources: readonly Uint8Array[], targets: readonly Uint8Array[]): boolean {
    const buffer = this.memory.buffer;
    for (let j = 0; j < sources.length; j++) if (sources[j]!.buffer !== buffer) return false;
    for (let r = 0; r < targets.length; r++) if (targets[r]!.buffer !== buffer) return false;
    return true;
  }

  private loadTables(tables: Uint8Array): void {
    if (this.loadedTables !== tables) {
      this.bytes.set(tables, TABLES_AT);
      this.loadedTables = tables;
    }
  }
}

const align64 = (n: number): number => Math.ceil(n / 64) * 64;

const rangesOverlap = (a: number, b: number, lengthBytes: number): boolean => a < b + lengthBytes && b < a + lengthBytes;

const overlapError = (): TesseraError =>
  new TesseraError('InvalidArgument', "erasure codec: an output shard overlaps another shard's memory");

/** For buffers anywhere: a target sharing bytes with a source or another target. */
function anyTargetOverlaps(sources: readonly Uint8Array[], targets: readonly Uint8Array[], lengthBytes: number): boolean {
  const overlap = (x: Uint8Array, y: Uint8Array): boolean =>
    x.buffer === y.buffer && rangesOverlap(x.byteOffset, y.byteOffset, lengthBytes);
  return targets.some((t, r) => sources.some((s) => overlap(t, s)) || targets.slice(r + 1).some((u) => overlap(t, u)));
}

export function wasmBackend(
  kind: WasmKernelKind,
  module: WasmModule,
  dataShards: number,
  parityShards: number,
): CodingBackend<Uint8Array> {
  // Per codec: the memories of shards it allocated, and its copying scratch memory.
  const owned = new WeakMap<ArrayBufferLike, Kernel>();
  let scratch: Kernel | null = null;

  const codeByCopying = (
    tables: Uint8Array,
    lengthBytes: number,
    sources: readonly Uint8Array[],
    targets: readonly Uint8Array[],
  ): void => {
    if (anyTargetOverlaps(sources, targets, lengthBytes)) throw overlapError();
    scratch ??= new Kernel(module, SHARDS_AT + COPY_CHUNK_BYTES * (dataShards + parityShards));
    const at = (slot: number): number => SHARDS_AT + slot * COPY_CHUNK_BYTES;
    const sourceAt = sources.map((_, j) => at(j));
    const targetAt = targets.map((_, r) => at(sources.length + r));
    for (let offset = 0; offset < lengthBytes; offset += COPY_CHUNK_BYTES) {
      const end = Math.min(lengthBytes, offset + COPY_CHUNK_BYTES);
      sources.forEach((source, j) => scratch!.bytes.set(source.subarray(offset, end), sourceAt[j]));
      scratch.run(tables, end - offset, sourceAt, targetAt);
      targets.forEach((target, r) => target.set(scratch!.bytes.subarray(targetAt[r], targetAt[r]! + end - offset), offset));
    }
  };

  return {
    implementation: kind,
    prepare: (coefficients, k, rows) => splitTables(coefficients, k, rows),
    code(tables, lengthBytes, sources, targets) {
      const kernel = owned.get(sources[0]!.buffer);
      if (kernel !== undefined && kernel.holds(sources, targets)) {
        kernel.runInPlace(tables, lengthBytes, sources, targets);
      } else {
        codeByCopying(tables, lengthBytes, sources, targets);
      }
    },
    allocateShards(count, shardSizeBytes) {
      const stride = align64(shardSizeBytes);
      const kernel = new Kernel(module, SHARDS_AT + stride * count);
      owned.set(kernel.memory.buffer, kernel);
      return Array.from({ length: count }, (_, i) => new Uint8Array(kernel.memory.buffer, SHARDS_AT + i * stride, shardSizeBytes));
    },
  };
}
