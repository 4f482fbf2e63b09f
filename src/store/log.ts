/**
 * The store's write-ahead log lives in the segment files themselves: each
 * group commit appends one record, its data blobs followed by its metadata
 * batch, with one synced write (O_DSYNC: segments.ts). The metadata batch is then written to the
 * KvStore without a sync; a synced KvStore write every so often (a
 * checkpoint) makes everything before it durable there too. After a crash,
 * recovery replays the records after the last checkpoint. One fdatasync per
 * group instead of two (data, then metadata) is where small writes get their
 * speed.
 *
 * Record layout (little-endian):
 *   0  u32 magic 'TSLG'   4 u8 version   5 u8 reserved   6 u16 reserved
 *   8  u64 sequence (one more than the record before it)
 *  16  u32 dataBytes      20 u32 metaBytes
 *  24  u32 crc32c(data)   28 u32 crc32c(bytes 0..27 ++ meta)
 *  32  data (the group's blobs back to back), then meta (the KvStore batch)
 * A record is valid only if both checksums hold, so a torn append (some
 * pages written, others not) is never replayed.
 */
import { crc32c } from '../../native/index.js';
import { Reader, Writer } from '../lib/codec.js';
import { limits } from '../lib/limits.js';
import type { FileIo } from '../io/io.js';
import type { KvOp } from './kv.js';

export const RECORD_HEADER_BYTES = 32;
const MAGIC = 0x474c5354; // 'TSLG' read little-endian
const VERSION = 1;
/** Keys of the store are short; values are records, omap values or xattr-laden onodes. */
const KV_KEY_BYTES_MAX = 64 * 1024;
const KV_VALUE_BYTES_MAX = 16 * 1024 * 1024;

export interface RecordPosition {
  segmentId: number;
  offset: number;
  sequence: number;
}

const varintBytes = (n: number): number => {
  let bytes = 1;
  for (let v = n; v >= 0x80; v = Math.floor(v / 0x80)) bytes++;
  return bytes;
};

/** The exact length encodeMeta(ops) will have. */
export function metaLength(ops: readonly KvOp[]): number {
  let size = varintBytes(ops.length);
  for (const op of ops) {
    size += 1 + varintBytes(op.key.length) + op.key.length;
    if (op.type === 'put') size += varintBytes(op.value.length) + op.value.length;
  }
  return size;
}

export function encodeMeta(ops: readonly KvOp[]): Buffer {
  const w = new Writer(metaLength(ops));
  w.varint(ops.length);
  for (const op of ops) {
    if (op.type === 'put') w.u8(0).bytes(op.key).bytes(op.value);
    else w.u8(1).bytes(op.key);
  }
  return w.finish();
}

export function decodeMeta(meta: Buffer): KvOp[] {
  const r = new Reader(meta, 'Corrupt', 'log record metadata');
  const count = r.varint(10_000_000);
  const ops: KvOp[] = [];
  for (let i = 0; i < count; i++) {
    const type = r.u8();
    const key = Buffer.from(r.bytes(KV_KEY_BYTES_MAX));
    if (type === 0) ops.push({ type: 'put', key, value: Buffer.from(r.bytes(KV_VALUE_BYTES_MAX)) });
    else if (type === 1) ops.push({ type: 'del', key });
    else throw new Error(`unknown log op ${type}`);
  }
  r.end();
  return ops;
}

/** The header for a record whose data and meta are known. */
export function encodeRecordHeader(sequence: number, data: readonly Buffer[], meta: Buffer): Buffer {
  const header = Buffer.alloc(RECORD_HEADER_BYTES);
  let dataBytes = 0;
  let dataCrc = 0;
  for (const d of data) {
    dataBytes += d.length;
    dataCrc = crc32c(d, dataCrc);
  }
  header.writeUInt32LE(MAGIC, 0);
  header[4] = VERSION;
  header.writeUInt32LE(sequence % 0x1_0000_0000, 8);
  header.writeUInt32LE(Math.floor(sequence / 0x1_0000_0000), 12);
  header.writeUInt32LE(dataBytes, 16);
  header.writeUInt32LE(meta.length, 20);
  header.writeUInt32LE(dataCrc, 24);
  header.writeUInt32LE(crc32c(meta, crc32c(header.subarray(0, 28))), 28);
  return header;
}

export interface ReadRecord {
  ops: KvOp[];
  /** Bytes the record takes in its segment. */
  lengthBytes: number;
}

/**
 * Reads and verifies the record at offset; null when there is none (end of
 * file, torn write, wrong sequence, bad checksum): the end of the log.
 */
export async function readRecord(file: FileIo, offset: number, sequence: number, fileBytes: number): Promise<ReadRecord | null> {
  if (offset + RECORD_HEADER_BYTES > fileBytes) return null;
  const header = Buffer.alloc(RECORD_HEADER_BYTES);
  if ((await file.read(header, 0, RECORD_HEADER_BYTES, offset)) !== RECORD_HEADER_BYTES) return null;
  if (header.readUInt32LE(0) !== MAGIC || header[4] !== VERSION) return null;
  const seq = header.readUInt32LE(8) + header.readUInt32LE(12) * 0x1_0000_0000;
  const dataBytes = header.readUInt32LE(16);
  const metaBytes = header.readUInt32LE(20);
  if (seq !== sequence) return null;
  const lengthBytes = RECORD_HEADER_BYTES + dataBytes + metaBytes;
  if (offset + lengthBytes > fileBytes || dataBytes > limits.segmentBytesMax * 2 || metaBytes > limits.segmentBytesMax * 2) return null;
  const meta = Buffer.allocUnsafe(metaBytes);
  if ((await file.read(meta, 0, metaBytes, offset + RECORD_HEADER_BYTES + dataBytes)) !== metaBytes) return null;
  if (crc32c(meta, crc32c(header.subarray(0, 28))) !== header.readUInt32LE(28)) return null;
  // The data must be whole too: metadata pointing at torn data would be a partial transaction.
  let dataCrc = 0;
  const chunk = Buffer.allocUnsafe(Math.min(dataBytes, 4 * 1024 * 1024));
  for (let at = 0; at < dataBytes; at += chunk.length) {
    const n = Math.min(chunk.length, dataBytes - at);
    if ((await file.read(chunk, 0, n, offset + RECORD_HEADER_BYTES + at)) !== n) return null;
    dataCrc = crc32c(chunk.subarray(0, n), dataCrc);
  }
  if (dataCrc !== header.readUInt32LE(24)) return null;
  try {
    return { ops: decodeMeta(meta), lengthBytes };
  } catch {
    return null;
  }
}

export function encodePosition(p: RecordPosition): Buffer {
  return new Writer(24).varint(p.segmentId).varint(p.offset).varint(p.sequence).finish();
}

export function decodePosition(value: Buffer): RecordPosition {
  const r = new Reader(value, 'Corrupt', 'log checkpoint');
  const p = { segmentId: r.varint(), offset: r.varint(), sequence: r.varint() };
  r.end();
  return p;
}

/**
 * Walks the records of a segment from its start (for compaction: which
 * objects got data here) and returns the object-record keys each one put.
 * Only the metadata is read and checked; stops at endBytes or the first
 * record that does not parse.
 */
export async function* recordKeysOfSegment(file: FileIo, endBytes: number, keyPrefix: number): AsyncGenerator<Buffer[]> {
  const header = Buffer.alloc(RECORD_HEADER_BYTES);
  let offset = 0;
  while (offset + RECORD_HEADER_BYTES <= endBytes) {
    if ((await file.read(header, 0, RECORD_HEADER_BYTES, offset)) !== RECORD_HEADER_BYTES) return;
    if (header.readUInt32LE(0) !== MAGIC || header[4] !== VERSION) return;
    const dataBytes = header.readUInt32LE(16);
    const metaBytes = header.readUInt32LE(20);
    if (offset + RECORD_HEADER_BYTES + dataBytes + metaBytes > endBytes) return;
    const meta = Buffer.allocUnsafe(metaBytes);
    if ((await file.read(meta, 0, metaBytes, offset + RECORD_HEADER_BYTES + dataBytes)) !== metaBytes) return;
    if (crc32c(meta, crc32c(header.subarray(0, 28))) !== header.readUInt32LE(28)) return;
    let ops: KvOp[];
    try {
      ops = decodeMeta(meta);
    } catch {
      return;
    }
    yield ops.filter((op) => op.type === 'put' && op.key[0] === keyPrefix).map((op) => op.key);
    offset += RECORD_HEADER_BYTES + dataBytes + metaBytes;
  }
}
