/**
 * The erasure codec every implementation shares: argument checking, the coding
 * matrix, decode matrices and their cache. An implementation (native/isal.ts,
 * native/wasm-codec.ts) only supplies a CodingBackend: turn coefficient rows
 * into its tables, and multiply sources by them into targets.
 *
 * Invariants: the coding matrix is ISA-L's Cauchy matrix for (k, m), so what
 * lands on disk does not depend on the implementation; a decode uses the k
 * lowest-numbered surviving shards; the decode-table cache holds at most
 * DECODE_CACHE_ENTRIES_MAX patterns per codec (least recently used goes).
 * A codec is used by one caller at a time (JavaScript is single-threaded; no
 * call yields), so its cache needs no locking.
 * Misuse throws TesseraError('InvalidArgument') before any byte is touched.
 */
import { TesseraError } from '../src/lib/errors.js';
import { cauchyMatrix, decodeCoefficients } from './gf256.js';

export const DATA_SHARDS_MAX = 32;
export const PARITY_SHARDS_MAX = 8;
/** Largest shard one call codes (a stripe unit); ISA-L and wasm32 both need lengths well under 2^31. */
export const SHARD_BYTES_MAX = 64 * 1024 * 1024;
/** Erasure patterns whose decode tables one codec keeps. */
export const DECODE_CACHE_ENTRIES_MAX = 64;

/**
 * isa-l: the addon. wasm-relaxed-simd: the WebAssembly kernel with relaxed
 * SIMD's bare shuffle (Node.js >= 22). wasm-simd: the same with the standard
 * shuffle (any Node.js >= 20). All three write the same bytes.
 */
export type CodecImplementation = 'isa-l' | 'wasm-relaxed-simd' | 'wasm-simd';

export interface ErasureCodecOptions {
  /** k: data shards per stripe, 1..32. */
  dataShards: number;
  /** m: parity shards per stripe, 1..8. Any k of the k+m shards rebuild the rest. */
  parityShards: number;
  /** Force an implementation (tests, benchmarks); default: the fastest available (isa-l, wasm-relaxed-simd, wasm-simd). */
  implementation?: CodecImplementation;
}

/**
 * Reed-Solomon over GF(2^8), systematic: shards 0..k-1 are the data as given,
 * shards k..k+m-1 the parity. All shards of a stripe have the same length.
 * Buffers are never copied by the caller's side of this interface: parity and
 * rebuilt shards are written into buffers the caller passes in.
 */
export interface ErasureCodec {
  readonly dataShards: number;
  readonly parityShards: number;
  readonly implementation: CodecImplementation;
  /**
   * k+m zeroed shard buffers of shardSizeBytes each, in shard order, placed
   * where this codec codes them without copying (for the WebAssembly codec:
   * inside a WebAssembly memory of their own, so meant to be kept and reused,
   * not allocated per request). Any Uint8Arrays work with encode and
   * reconstruct; these are only faster.
   */
  allocateShards(shardSizeBytes: number): Uint8Array[];
  /** Computes parity[0..m-1] from data[0..k-1], all of one length, into the parity buffers. */
  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[]): void;
  /**
   * Rebuilds lost shards. `shards` has k+m entries in shard order: a surviving
   * shard's buffer, or null for a lost shard not wanted back. Each index in
   * `rebuild` names a lost shard, data or parity, whose entry is the buffer to
   * write it into (its content is ignored). At least k other entries must be
   * non-null survivors.
   */
  reconstruct(shards: readonly (Uint8Array | null)[], rebuild: readonly number[]): void;
}

/** What an implementation supplies: tables for coefficient rows, and coding with them. */
export interface CodingBackend<Tables> {
  readonly implementation: CodecImplementation;
  /** Tables for `rows` rows of k coefficients (row-major, rows x k bytes). */
  prepare(coefficients: Uint8Array, dataShards: number, rows: number): Tables;
  /**
   * targets[r] = XOR over j of coefficient[r][j] * sources[j], over lengthBytes
   * bytes. Throws TesseraError('InvalidArgument') when a target overlaps a
   * source or another target (checked by the backend, where it is cheap:
   * reading a view's .buffer from JavaScript costs tens of nanoseconds).
   */
  code(tables: Tables, lengthBytes: number, sources: readonly Uint8Array[], targets: readonly Uint8Array[]): void;
  allocateShards(count: number, shardSizeBytes: number): Uint8Array[];
}

const invalid = (message: string): TesseraError => new TesseraError('InvalidArgument', message);

export function checkGeometry(options: ErasureCodecOptions): void {
  const { dataShards: k, parityShards: m } = options;
  if (!Number.isInteger(k) || k < 1 || k > DATA_SHARDS_MAX) {
    throw invalid(`erasure codec: dataShards must be an integer in 1..${DATA_SHARDS_MAX}, got ${String(k)}`);
  }
  if (!Number.isInteger(m) || m < 1 || m > PARITY_SHARDS_MAX) {
    throw invalid(`erasure codec: parityShards must be an integer in 1..${PARITY_SHARDS_MAX}, got ${String(m)}`);
  }
}

export function createCodec<Tables>(options: ErasureCodecOptions, backend: CodingBackend<Tables>): ErasureCodec {
  checkGeometry(options);
  const { dataShards: k, parityShards: m } = options;
  const coding = cauchyMatrix(k, m);
  const encodeTables = backend.prepare(coding.subarray(k * k), k, m);
  const decodeCache = new Map<string, Tables>();

  // The pattern of the previous reconstruct: a degraded read repeats the same
  // pattern stripe after stripe, and comparing two short arrays is cheaper than
  // building and hashing the cache key.
  let last: { survivors: number[]; targets: number[]; tables: Tables } | null = null;

  const decodeTables = (plan: DecodePlan): Tables => {
    const { survivors, targets } = plan;
    if (last !== null && sameNumbers(last.survivors, survivors) && sameNumbers(last.targets, targets)) return last.tables;
    const key = `${survivors.join(',')}>${targets.join(',')}`;
    let tables = decodeCache.get(key);
    if (tables !== undefined) {
      decodeCache.delete(key); // re-insert: Map order is our recency order
    } else {
      tables = backend.prepare(decodeCoefficients(coding, k, survivors, targets), k, targets.length);
      if (decodeCache.size >= DECODE_CACHE_ENTRIES_MAX) {
        decodeCache.delete(decodeCache.keys().next().value as string);
      }
    }
    decodeCache.set(key, tables);
    last = { survivors, targets, tables };
    return tables;
  };

  return Object.freeze({
    dataShards: k,
    parityShards: m,
    implementation: backend.implementation,
    allocateShards(shardSizeBytes: number): Uint8Array[] {
      checkShardSize('allocateShards', shardSizeBytes);
      return backend.allocateShards(k + m, shardSizeBytes);
    },
    encode(data: readonly Uint8Array[], parity: readonly Uint8Array[]): void {
      checkShardList('encode', 'data', data, k);
      checkShardList('encode', 'parity', parity, m);
      const lengthBytes = commonLength('encode', data, parity);
      backend.code(encodeTables, lengthBytes, data, parity);
    },
    reconstruct(shards: readonly (Uint8Array | null)[], rebuild: readonly number[]): void {
      const plan = planReconstruct(shards, rebuild, k, m);
      if (plan.targets.length === 0) return;
      const lengthBytes = commonLength('reconstruct', plan.sources, plan.outputs);
      backend.code(decodeTables(plan), lengthBytes, plan.sources, plan.outputs);
    },
  });
}

function checkShardSize(what: string, shardSizeBytes: number): void {
  if (!Number.isInteger(shardSizeBytes) || shardSizeBytes < 1 || shardSizeBytes > SHARD_BYTES_MAX) {
    throw invalid(`${what}: shard size must be an integer in 1..${SHARD_BYTES_MAX} bytes, got ${String(shardSizeBytes)}`);
  }
}

// The checks below run on every call, ahead of work that takes microseconds:
// plain loops, no allocation (no garbage for the collector per stripe).

function checkShardList(what: string, role: string, list: readonly unknown[], expected: number): void {
  if (!Array.isArray(list) || list.length !== expected) {
    const got = Array.isArray(list) ? `${list.length}` : typeof list;
    throw invalid(`${what}: expected ${expected} ${role} shards, got ${got}`);
  }
  for (let i = 0; i < list.length; i++) {
    if (!(list[i] instanceof Uint8Array)) throw invalid(`${what}: ${role} shard ${i} is not a Uint8Array`);
  }
}

/** The one length every shard of inputs and outputs shares; 1..SHARD_BYTES_MAX. */
function commonLength(what: string, inputs: readonly Uint8Array[], outputs: readonly Uint8Array[]): number {
  const lengthBytes = inputs[0]!.length;
  for (const list of [inputs, outputs]) {
    for (let i = 0; i < list.length; i++) {
      const length = list[i]!.length;
      if (length !== lengthBytes) {
        throw invalid(`${what}: shards must all have the same length (found ${lengthBytes} and ${length} bytes)`);
      }
    }
  }
  if (lengthBytes === 0) throw invalid(`${what}: shards must not be empty (zero-length or detached buffers)`);
  if (lengthBytes > SHARD_BYTES_MAX) throw invalid(`${what}: shards of ${lengthBytes} bytes exceed ${SHARD_BYTES_MAX}`);
  return lengthBytes;
}

/** A checked reconstruct call: the k survivors it reads and the shards it writes. */
interface DecodePlan {
  /** Indices read, ascending, and indices written, in the caller's order: the decode tables depend on exactly these. */
  survivors: number[];
  targets: number[];
  sources: Uint8Array[];
  outputs: Uint8Array[];
}

function sameNumbers(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function planReconstruct(
  shards: readonly (Uint8Array | null)[],
  rebuild: readonly number[],
  k: number,
  m: number,
): DecodePlan {
  if (!Array.isArray(shards) || shards.length !== k + m) {
    const got = Array.isArray(shards) ? `${shards.length}` : typeof shards;
    throw invalid(`reconstruct: expected ${k + m} shard entries (data then parity), got ${got}`);
  }
  if (!Array.isArray(rebuild)) throw invalid('reconstruct: rebuild must be an array of shard indices');
  const plan: DecodePlan = { survivors: [], targets: [], sources: [], outputs: [] };
  for (let t = 0; t < rebuild.length; t++) {
    const index = rebuild[t]!;
    if (!Number.isInteger(index) || index < 0 || index >= k + m) {
      throw invalid(`reconstruct: shard index ${String(index)} is not in 0..${k + m - 1}`);
    }
    if (plan.targets.includes(index)) throw invalid(`reconstruct: shard ${index} is listed twice in rebuild`);
    const output = shards[index];
    if (!(output instanceof Uint8Array)) throw invalid(`reconstruct: shard ${index} is to be rebuilt but has no output buffer`);
    plan.targets.push(index);
    plan.outputs.push(output);
  }
  for (let i = 0; i < shards.length; i++) {
    const shard = shards[i];
    if (shard === null || shard === undefined || plan.targets.includes(i)) continue;
    if (!(shard instanceof Uint8Array)) throw invalid(`reconstruct: shard ${i} is neither a Uint8Array nor null`);
    if (plan.survivors.length === k) continue; // decode from the first k survivors
    plan.survivors.push(i);
    plan.sources.push(shard);
  }
  if (plan.survivors.length < k) {
    throw invalid(
      `reconstruct: ${plan.survivors.length} surviving shards, need ${k} (a ${k}+${m} code survives at most ${m} losses)`,
    );
  }
  return plan;
}
