/**
 * Reading an erasure-coded object's shards from the members that hold them:
 * shard byte ranges straight from the positions that have them, or, when a
 * position is a hole or its read fails, from any k readable positions with
 * the rest rebuilt (degraded reads, read-modify-write of a degraded pg,
 * recovery). Shards shorter than asked read as zeros past their end (the
 * format pads with zeros). Given the object's version, every shard read is
 * checked to be at it, so bytes of two versions are never put together.
 *
 * Bounds: one request per position per call; the caller bounds the bytes
 * (read size, or a recovery slice).
 */
import { TesseraError, toTesseraError } from '../lib/errors.js';
import { assert } from '../lib/assert.js';
import type { StoreApi, StoreReadOptions } from '../store/types.js';
import type { ErasureCodec } from '../../native/index.js';
import type { EcLayout } from './ec-layout.js';
import { dataNs, decodeVersionValue, VERSION_XATTR } from './pg-log.js';

export interface ShardReader {
  poolId: number;
  layout: EcLayout;
  codec: ErasureCodec;
  /** By position: the store to read that shard from, or null (hole, or not trusted). */
  stores: ReadonlyArray<StoreApi | null>;
  /**
   * The object's version (`_v` value) every shard read must carry; a shard at
   * another version counts as unreadable (the rest is rebuilt from k shards
   * at this version, or the read fails Unavailable) and is reported to
   * onOtherVersion. Unset: not checked (the caller chose its stores by version).
   */
  version?: Buffer;
  onOtherVersion?: (position: number) => void;
  /** A shard read failed its checksum (the read goes on degraded): read repair (read-repairs.ts) rebuilds it. */
  onCorrupt?: (position: number) => void;
  /** Where shard reads land (ReadOptions.allocate: a local read and a member's reply go straight there); default new buffers. */
  allocate?: (lengthBytes: number) => Buffer;
}

const versionText = (v: Buffer | undefined): string => {
  if (!v) return 'none';
  const e = decodeVersionValue(v);
  return `${e.epoch}'${e.version}`;
};

/** One shard's bytes [offsetBytes, +lengthBytes) at the reader's version (Conflict if at another), zero-padded past its end. */
export async function readOne(r: ShardReader, position: number, name: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const store = r.stores[position];
  assert(store, `position ${position} is readable`);
  const id = { ns: dataNs(r.poolId, position), name };
  // The version is checked by the read itself, against the record its bytes come from: one request per shard.
  const options: StoreReadOptions = { offsetBytes, lengthBytes };
  if (r.allocate) options.allocate = r.allocate;
  if (r.version) options.ifXattr = { name: VERSION_XATTR, value: r.version };
  let got: Buffer;
  try {
    got = await store.read(id, options);
  } catch (err) {
    if (toTesseraError(err).code === 'Corrupt') r.onCorrupt?.(position);
    if (r.version && toTesseraError(err).code === 'Conflict') {
      r.onOtherVersion?.(position);
      throw new TesseraError('Conflict', `object ${name}: shard ${position} is not at version ${versionText(r.version)}`, { cause: err });
    }
    throw err;
  }
  if (got.length === lengthBytes) return got;
  const padded = Buffer.alloc(lengthBytes);
  got.copy(padded, 0, 0, Math.min(got.length, lengthBytes));
  return padded;
}

/** Reads the positions in parallel; failed ones are added to `failed` (the others' bytes are returned). */
async function readMany(r: ShardReader, positions: readonly number[], name: string, offsetBytes: number, lengthBytes: number, failed: Map<number, unknown>): Promise<Map<number, Buffer>> {
  const out = new Map<number, Buffer>();
  await Promise.all(
    positions.map(async (p) => {
      try {
        out.set(p, await readOne(r, p, name, offsetBytes, lengthBytes));
      } catch (err) {
        failed.set(p, err);
      }
    }),
  );
  return out;
}

/**
 * Shard bytes [offsetBytes, offsetBytes + lengthBytes) of every position in
 * `want`: read directly where possible, otherwise rebuilt from k readable positions.
 */
export async function readShardSlices(r: ShardReader, name: string, offsetBytes: number, lengthBytes: number, want: readonly number[]): Promise<Map<number, Buffer>> {
  const failed = new Map<number, unknown>();
  if (want.every((p) => r.stores[p])) {
    const got = await readMany(r, want, name, offsetBytes, lengthBytes, failed);
    if (failed.size === 0) return got;
  }
  const k = r.layout.dataShards;
  for (;;) {
    const usable = r.stores.map((s, p) => (s && !failed.has(p) ? p : -1)).filter((p) => p >= 0);
    if (usable.length < k) {
      const cause = [...failed.values()][0];
      throw new TesseraError('Unavailable', `object ${name}: ${usable.length} readable shards, ${k} needed${cause ? `: ${toTesseraError(cause).message}` : ''}`, { cause });
    }
    const chosen = [...usable.filter((p) => want.includes(p)), ...usable.filter((p) => !want.includes(p))].slice(0, k);
    const got = await readMany(r, chosen, name, offsetBytes, lengthBytes, failed);
    if (got.size < k) continue;
    return rebuild(r, got, want, lengthBytes);
  }
}

function rebuild(r: ShardReader, got: Map<number, Buffer>, want: readonly number[], lengthBytes: number): Map<number, Buffer> {
  const missing = want.filter((p) => !got.has(p));
  if (missing.length > 0 && lengthBytes > 0) {
    const shards: Array<Uint8Array | null> = Array.from({ length: r.layout.width }, (_, p) => got.get(p) ?? null);
    for (const p of missing) shards[p] = Buffer.alloc(lengthBytes);
    r.codec.reconstruct(shards, missing);
    for (const p of missing) got.set(p, shards[p] as Buffer);
  }
  for (const p of missing) if (!got.has(p)) got.set(p, Buffer.alloc(0));
  return new Map(want.map((p) => [p, got.get(p)!]));
}

/** Whole stripes [first, first + count) of an object in logical order (count x stripeBytes). */
export async function readStripes(r: ShardReader, name: string, first: number, count: number): Promise<Buffer> {
  const { layout } = r;
  const data = Array.from({ length: layout.dataShards }, (_, d) => d);
  const slices = await readShardSlices(r, name, first * layout.unitBytes, count * layout.unitBytes, data);
  const out = Buffer.allocUnsafe(count * layout.stripeBytes);
  layout.join(data.map((d) => slices.get(d)!), count, out);
  return out;
}

/**
 * Where a logical range's bytes were read to: the spans of the data shards
 * that hold it, read directly (`shards[d]` holds shard d's bytes from shard
 * offset `spanFrom[d]`; null for a shard the range does not touch), or, when
 * one of them failed (degraded), the covering stripes rebuilt from k shards,
 * in logical order from stripe `firstStripe`. Copied out with copyRange; no
 * per-stripe-unit objects are made (a 4 MiB read is 1024 units of 4 KiB).
 */
export interface RangeBytes {
  offsetBytes: number;
  lengthBytes: number;
  shards: Array<Buffer | null> | null;
  spanFrom: number[];
  stripes: Buffer | null;
  firstStripe: number;
}

/** Shard d's bytes the logical range touches, as shard offsets [from[d], to[d]) (both -1: none). */
function shardSpans(layout: EcLayout, offsetBytes: number, lengthBytes: number): { from: number[]; to: number[] } {
  const u = layout.unitBytes;
  const sb = layout.stripeBytes;
  const end = offsetBytes + lengthBytes;
  const firstStripe = Math.floor(offsetBytes / sb);
  const lastStripe = Math.floor((end - 1) / sb);
  const from: number[] = [];
  const to: number[] = [];
  for (let d = 0; d < layout.dataShards; d++) {
    // Shard d's chunk of stripe s holds logical bytes [s*sb + d*u, s*sb + (d+1)*u).
    const first = firstStripe * sb + (d + 1) * u > offsetBytes ? firstStripe : firstStripe + 1;
    const last = lastStripe * sb + d * u < end ? lastStripe : lastStripe - 1;
    if (first > last) {
      from.push(-1);
      to.push(-1);
      continue;
    }
    from.push(first * u + Math.max(0, offsetBytes - (first * sb + d * u)));
    to.push(last * u + Math.min(u, end - (last * sb + d * u)));
  }
  return { from, to };
}

/**
 * Reads logical bytes [offsetBytes, offsetBytes + lengthBytes) (within the
 * object's size): the data shards that hold them directly when all can be
 * read, otherwise the covering stripes from any k shards (rebuilt).
 */
export async function readRangeBytes(r: ShardReader, name: string, offsetBytes: number, lengthBytes: number): Promise<RangeBytes> {
  const { layout } = r;
  const range: RangeBytes = { offsetBytes, lengthBytes, shards: null, spanFrom: [], stripes: null, firstStripe: 0 };
  if (lengthBytes === 0) return range;
  const { from, to } = shardSpans(layout, offsetBytes, lengthBytes);
  const touched = from.flatMap((f, d) => (f >= 0 ? [d] : []));
  if (touched.every((d) => r.stores[d])) {
    const failed = new Map<number, unknown>();
    const shards: Array<Buffer | null> = new Array<Buffer | null>(layout.dataShards).fill(null);
    await Promise.all(
      touched.map(async (d) => {
        try {
          shards[d] = await readOne(r, d, name, from[d]!, to[d]! - from[d]!);
        } catch (err) {
          failed.set(d, err);
        }
      }),
    );
    if (failed.size === 0) return { ...range, shards, spanFrom: from };
    // Degraded: what was read directly is dropped (a pool's buffers too: garbage, not reused); the stripes come from any k shards.
  }
  const first = Math.floor(offsetBytes / layout.stripeBytes);
  const last = Math.floor((offsetBytes + lengthBytes - 1) / layout.stripeBytes);
  return { ...range, stripes: await readStripes(r, name, first, last - first + 1), firstStripe: first };
}

/** Copies logical bytes [fromBytes, fromBytes + n) of a range read by readRangeBytes into out at outAt. */
export function copyRange(layout: EcLayout, range: RangeBytes, fromBytes: number, n: number, out: Uint8Array, outAt: number): void {
  assert(fromBytes >= range.offsetBytes && fromBytes + n <= range.offsetBytes + range.lengthBytes, 'the copy lies in the range read');
  if (range.stripes !== null) {
    const at = fromBytes - range.firstStripe * layout.stripeBytes;
    out.set(range.stripes.subarray(at, at + n), outAt);
    return;
  }
  const shards = range.shards!;
  const u = layout.unitBytes;
  const end = fromBytes + n;
  for (let at = fromBytes; at < end; ) {
    const stripe = Math.floor(at / layout.stripeBytes);
    const inStripe = at - stripe * layout.stripeBytes;
    const d = Math.floor(inStripe / u);
    const inChunk = inStripe - d * u;
    const len = Math.min(u - inChunk, end - at);
    const src = shards[d]!;
    out.set(new Uint8Array(src.buffer, src.byteOffset + stripe * u + inChunk - range.spanFrom[d]!, len), outAt + (at - fromBytes));
    at += len;
  }
}

/** The buffers a range's bytes were read into (to give back to a pool once copied out). */
export function rangeBuffers(range: RangeBytes): Buffer[] {
  if (range.stripes !== null) return [range.stripes];
  return (range.shards ?? []).filter((b): b is Buffer => b !== null);
}

/** Logical bytes [offsetBytes, offsetBytes + lengthBytes) (within the object's size), in one buffer. */
export async function readRange(r: ShardReader, name: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const range = await readRangeBytes(r, name, offsetBytes, lengthBytes);
  const out = Buffer.allocUnsafe(lengthBytes);
  copyRange(r.layout, range, offsetBytes, lengthBytes, out, 0);
  return out;
}

/**
 * The same bytes as a list of pieces in logical order (views into the shard
 * reads: a small reply can send them without assembling them first).
 */
export async function readRangePieces(r: ShardReader, name: string, offsetBytes: number, lengthBytes: number): Promise<Buffer[]> {
  const range = await readRangeBytes(r, name, offsetBytes, lengthBytes);
  if (range.stripes !== null) {
    const at = offsetBytes - range.firstStripe * r.layout.stripeBytes;
    return [range.stripes.subarray(at, at + lengthBytes)];
  }
  const shards = range.shards!;
  return r.layout.pieces(offsetBytes, lengthBytes).map((p) => {
    const from = p.shardOffsetBytes - range.spanFrom[p.shard]!;
    return shards[p.shard]!.subarray(from, from + p.lengthBytes);
  });
}
