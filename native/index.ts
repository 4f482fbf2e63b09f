/**
 * native/: checksums and erasure coding at hardware speed, the bottom layer of
 * Tessera. The public API of the folder is this file.
 *
 * - crc32c(data, previous): standard CRC-32C (Castagnoli), continuing a running
 *   value: crc32c(b, crc32c(a)) === crc32c(a followed by b). Unsigned result.
 * - crc32cCombine(crcA, crcB, lengthBBytes): crc32c(a followed by b) from the
 *   two checksums and b's length, without the bytes (crc32c-combine.ts).
 * - createErasureCodec({ dataShards, parityShards }): Reed-Solomon k+m with
 *   ISA-L's Cauchy matrix (format: docs/erasure-coding.md).
 * - nativeStatus(): which implementations are active, for `tessera status`.
 *
 * Two implementations write the same bytes: the ISA-L addon (npm run
 * build:native, needs libisal-dev) and a portable fallback (a WebAssembly SIMD
 * kernel built by `npm run build`, and @node-rs/crc32). The addon is loaded on
 * first use; when it is missing the fallback is used and one message says so
 * on stderr, once per process. The only module state is that lazily loaded,
 * immutable handle (and the WebAssembly kernel's, loaded the same way).
 */
import { crc32c as nodeRsCrc32c } from '@node-rs/crc32';
import { TesseraError } from '../src/lib/errors.js';
import type { CodecImplementation, ErasureCodec, ErasureCodecOptions } from './codec.js';
import { checkGeometry, createCodec } from './codec.js';
import { isalBackend, loadAddon, type AddonLoad, type IsalAddon } from './isal.js';
import { loadWasmKernel, wasmBackend, type WasmKernelKind, type WasmLoad } from './wasm-codec.js';

import { crc32cCombine as combine } from './crc32c-combine.js';

export type { CodecImplementation, ErasureCodec, ErasureCodecOptions } from './codec.js';
export { crc32cCombineWith, crc32cShiftOperator } from './crc32c-combine.js';
export { DATA_SHARDS_MAX, PARITY_SHARDS_MAX, SHARD_BYTES_MAX } from './codec.js';

export type ChecksumImplementation = 'isa-l' | '@node-rs/crc32';

export interface NativeStatus {
  /** The codec createErasureCodec() picks when not told. */
  codec: CodecImplementation;
  /** The implementation behind crc32c(). */
  checksum: ChecksumImplementation;
  /** The loaded ISA-L addon's path, or null. */
  addonPath: string | null;
  /** Why the addon is not in use (null when it is). */
  fallbackReason: string | null;
}

const FAST_PATH_HINT =
  'For the fast path install ISA-L (Debian/Ubuntu: apt-get install libisal-dev) and run `npm run build:native`';

/** Memoizes a loader: the only kind of module state this folder has. */
function lazy<T>(load: () => T): () => T {
  let value: { readonly v: T } | undefined;
  return () => (value ??= Object.freeze({ v: load() })).v;
}

const addonHandle = lazy((): AddonLoad => {
  const loaded = loadAddon();
  if (loaded.addon === null) {
    process.stderr.write(
      `tessera: ISA-L addon not in use (${loaded.reason}); using the portable fallback ` +
        `(WebAssembly erasure coding, @node-rs/crc32 checksums): the same bytes on disk, slower. ${FAST_PATH_HINT}.\n`,
    );
  }
  return loaded;
});

const wasmKernels = lazy(
  (): Record<WasmKernelKind, WasmLoad> => ({
    'wasm-relaxed-simd': loadWasmKernel('wasm-relaxed-simd'),
    'wasm-simd': loadWasmKernel('wasm-simd'),
  }),
);

/** The fallback codec this runtime has: relaxed SIMD where accepted, else standard SIMD. */
function fallbackCodec(): WasmKernelKind {
  return wasmKernels()['wasm-relaxed-simd'].module === null ? 'wasm-simd' : 'wasm-relaxed-simd';
}

function nodeRsChecksum(data: Uint8Array, previous: number): number {
  return nodeRsCrc32c(data as Buffer, previous) >>> 0;
}

function checkCrcArguments(data: Uint8Array, previous: number): void {
  if (!(data instanceof Uint8Array)) throw new TesseraError('InvalidArgument', 'crc32c: data must be a Uint8Array');
  if (!Number.isInteger(previous) || previous < 0 || previous > 0xffffffff) {
    throw new TesseraError('InvalidArgument', `crc32c: previous must be an unsigned 32-bit integer, got ${previous}`);
  }
}

/** Standard CRC-32C of data, continuing `previous` (0 to start). Unsigned 32-bit result. */
export function crc32c(data: Uint8Array, previous = 0): number {
  checkCrcArguments(data, previous);
  const { addon } = addonHandle();
  return addon === null ? nodeRsChecksum(data, previous) : addon.crc32c(data, previous);
}

/**
 * crc32c(A followed by B) from crc32c(A), crc32c(B) and the length of B in
 * bytes: O(log lengthBBytes), the bytes are not needed. For many pieces of
 * one length, crc32cShiftOperator(length) once and crc32cCombineWith.
 */
export function crc32cCombine(crcA: number, crcB: number, lengthBBytes: number): number {
  for (const [name, value] of [['crcA', crcA], ['crcB', crcB]] as const) {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new TesseraError('InvalidArgument', `crc32cCombine: ${name} must be an unsigned 32-bit integer, got ${value}`);
  }
  if (!Number.isSafeInteger(lengthBBytes) || lengthBBytes < 0) throw new TesseraError('InvalidArgument', `crc32cCombine: bad length ${lengthBBytes}`);
  return combine(crcA, crcB, lengthBBytes);
}

/**
 * The crc32c of each consecutive chunkBytes of data (the last may be shorter)
 * into out (which must hold ceil(length / chunkBytes) values): one native
 * call for all of a blob's chunk checksums.
 */
export function crc32cChunks(data: Uint8Array, chunkBytes: number, out: Uint32Array): void {
  if (!(data instanceof Uint8Array) || !(out instanceof Uint32Array)) throw new TesseraError('InvalidArgument', 'crc32cChunks: data must be a Uint8Array and out a Uint32Array');
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1 || chunkBytes > 1 << 30) throw new TesseraError('InvalidArgument', `crc32cChunks: bad chunk size ${chunkBytes}`);
  const chunks = Math.ceil(data.length / chunkBytes);
  if (out.length < chunks) throw new TesseraError('InvalidArgument', `crc32cChunks: out holds ${out.length} values, ${chunks} needed`);
  const { addon } = addonHandle();
  if (addon !== null) {
    addon.crc32cChunks(data, chunkBytes, out);
    return;
  }
  for (let i = 0; i < chunks; i++) out[i] = nodeRsChecksum(data.subarray(i * chunkBytes, (i + 1) * chunkBytes), 0);
}

/**
 * crc32c from a given implementation (tests and benchmarks); throws
 * TesseraError('NotSupported') when that implementation is not available.
 */
export function crc32cWith(implementation: ChecksumImplementation): (data: Uint8Array, previous?: number) => number {
  if (implementation === '@node-rs/crc32') {
    return (data, previous = 0) => {
      checkCrcArguments(data, previous);
      return nodeRsChecksum(data, previous);
    };
  }
  const { addon } = requireAddon();
  return (data, previous = 0) => {
    checkCrcArguments(data, previous);
    return addon.crc32c(data, previous);
  };
}

function requireAddon(): { addon: IsalAddon } {
  const loaded = addonHandle();
  if (loaded.addon === null) throw new TesseraError('NotSupported', `ISA-L addon not available: ${loaded.reason}`);
  return { addon: loaded.addon };
}

/** The codec implementations this process can run, fastest first. */
export function availableCodecs(): CodecImplementation[] {
  const kernels = wasmKernels();
  const wasm = (['wasm-relaxed-simd', 'wasm-simd'] as const).filter((kind) => kernels[kind].module !== null);
  return addonHandle().addon === null ? [...wasm] : ['isa-l', ...wasm];
}

/**
 * A Reed-Solomon codec for k data + m parity shards (see ErasureCodec in
 * native/codec.ts). Throws TesseraError('InvalidArgument') for a bad geometry,
 * and TesseraError('NotSupported') when the implementation asked for (or, with
 * none asked for, any implementation) is not available.
 */
export function createErasureCodec(options: ErasureCodecOptions): ErasureCodec {
  checkGeometry(options);
  const implementation = options.implementation ?? (addonHandle().addon === null ? fallbackCodec() : 'isa-l');
  if (implementation === 'isa-l') return createCodec(options, isalBackend(requireAddon().addon));
  if (implementation !== 'wasm-simd' && implementation !== 'wasm-relaxed-simd') {
    throw new TesseraError('InvalidArgument', `erasure codec: unknown implementation ${String(implementation)}`);
  }
  const kernel = wasmKernels()[implementation];
  if (kernel.module === null) {
    throw new TesseraError('NotSupported', `${implementation} erasure kernel not available: ${kernel.reason}`);
  }
  return createCodec(options, wasmBackend(implementation, kernel.module, options.dataShards, options.parityShards));
}

/** Which implementations are active; loads the addon if nothing has yet. */
export function nativeStatus(): NativeStatus {
  const loaded = addonHandle();
  return loaded.addon === null
    ? { codec: fallbackCodec(), checksum: '@node-rs/crc32', addonPath: null, fallbackReason: loaded.reason }
    : { codec: 'isa-l', checksum: 'isa-l', addonPath: loaded.path, fallbackReason: null };
}
