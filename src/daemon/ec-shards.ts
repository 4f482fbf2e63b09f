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

async function readOne(r: ShardReader, position: number, name: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
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

/** Logical bytes [offsetBytes, offsetBytes + lengthBytes) (within the object's size), in one buffer. */
export async function readRange(r: ShardReader, name: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  return Buffer.concat(await readRangePieces(r, name, offsetBytes, lengthBytes));
}

/**
 * The same bytes as a list of pieces in logical order (views into the shard
 * reads: a reply can send them without assembling them first).
 */
export async function readRangePieces(r: ShardReader, name: string, offsetBytes: number, lengthBytes: number): Promise<Buffer[]> {
  const { layout } = r;
  if (lengthBytes === 0) return [];
  const pieces = layout.pieces(offsetBytes, lengthBytes);
  const spans = new Map<number, { from: number; to: number }>();
  for (const p of pieces) {
    const s = spans.get(p.shard);
    if (!s) spans.set(p.shard, { from: p.shardOffsetBytes, to: p.shardOffsetBytes + p.lengthBytes });
    else s.to = p.shardOffsetBytes + p.lengthBytes;
  }
  const direct = [...spans.keys()].every((d) => r.stores[d]);
  if (direct) {
    const failed = new Map<number, unknown>();
    const buffers = new Map<number, Buffer>();
    await Promise.all(
      [...spans].map(async ([d, s]) => {
        try {
          buffers.set(d, await readOne(r, d, name, s.from, s.to - s.from));
        } catch (err) {
          failed.set(d, err);
        }
      }),
    );
    if (failed.size === 0) {
      return pieces.map((p) => {
        const from = p.shardOffsetBytes - spans.get(p.shard)!.from;
        return buffers.get(p.shard)!.subarray(from, from + p.lengthBytes);
      });
    }
  }
  const first = Math.floor(offsetBytes / layout.stripeBytes);
  const last = Math.floor((offsetBytes + lengthBytes - 1) / layout.stripeBytes);
  const stripes = await readStripes(r, name, first, last - first + 1);
  const at = offsetBytes - first * layout.stripeBytes;
  return [stripes.subarray(at, at + lengthBytes)];
}
