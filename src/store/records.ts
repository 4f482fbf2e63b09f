/**
 * The records the store keeps in its KvStore, and their binary encoding.
 *
 * Onode (object record): size, mtime, omap id (nid), xattrs, and the data:
 * either inline (small objects: the bytes and their crc32c) or an extent map.
 * An extent maps a logical range of the object to a range of a blob; a blob is
 * one contiguous run of bytes in a segment file, checksummed per chunk
 * (crc32c of each 2^chunkShift bytes). Extents are sorted by logical offset and
 * never overlap; bytes no extent covers read as zeros.
 */
import { assert } from '../lib/assert.js';
import { Reader, Writer } from '../lib/codec.js';
import { corrupt } from '../lib/errors.js';
import { limits } from '../lib/limits.js';

export interface Blob {
  segmentId: number;
  /** Where the blob's first byte is in its segment file. */
  segmentOffset: number;
  lengthBytes: number;
  /** Checksum chunk size is 2^chunkShift bytes; the last chunk may be shorter. */
  chunkShift: number;
  /** crc32c of each chunk. */
  crcs: Uint32Array;
}

export interface Extent {
  logicalOffset: number;
  lengthBytes: number;
  blob: Blob;
  /** Offset within the blob of the extent's first byte. */
  blobOffset: number;
}

export interface Onode {
  sizeBytes: number;
  mtimeMs: number;
  /** Omap id; 0 while the object has never had omap entries. */
  nid: number;
  xattrs: Map<string, Buffer>;
  /** The whole data, when stored inline (then extents is empty). */
  inline: Buffer | null;
  inlineCrc: number;
  extents: Extent[];
}

const ONODE_FORMAT = 1;
const CHUNK_SHIFT_MIN = 12;
const CHUNK_SHIFT_MAX = 20;
/** Blobs and extents one record may hold (a record stays well below 1 MiB). */
export const extentsPerRecordMax = 4096;

export function emptyOnode(mtimeMs: number): Onode {
  return { sizeBytes: 0, mtimeMs, nid: 0, xattrs: new Map(), inline: null, inlineCrc: 0, extents: [] };
}

export function cloneOnode(o: Onode): Onode {
  return { ...o, xattrs: new Map(o.xattrs), extents: o.extents.slice() };
}

export const chunkCount = (blob: { lengthBytes: number; chunkShift: number }): number =>
  Math.ceil(blob.lengthBytes / 2 ** blob.chunkShift);

export function encodeOnode(o: Onode): Buffer {
  assert(o.extents.length <= extentsPerRecordMax, 'extent count within record limit');
  const w = new Writer(64 + (o.inline?.length ?? 0));
  w.u8(ONODE_FORMAT).varint(o.sizeBytes).varint(o.mtimeMs).varint(o.nid);
  w.varint(o.xattrs.size);
  for (const [name, value] of o.xattrs) w.string(name).bytes(value);
  if (o.inline) {
    assert(o.extents.length === 0 && o.inline.length === o.sizeBytes, 'inline object has no extents');
    w.u8(1).u32(o.inlineCrc).bytes(o.inline);
    return w.finish();
  }
  w.u8(0);
  const blobIndex = new Map<Blob, number>();
  for (const e of o.extents) if (!blobIndex.has(e.blob)) blobIndex.set(e.blob, blobIndex.size);
  w.varint(blobIndex.size);
  for (const b of blobIndex.keys()) {
    w.varint(b.segmentId).varint(b.segmentOffset).varint(b.lengthBytes).u8(b.chunkShift);
    assert(b.crcs.length === chunkCount(b), 'one crc per chunk');
    for (const crc of b.crcs) w.u32(crc);
  }
  w.varint(o.extents.length);
  for (const e of o.extents) {
    w.varint(e.logicalOffset).varint(e.lengthBytes).varint(blobIndex.get(e.blob)!).varint(e.blobOffset);
  }
  return w.finish();
}

export function decodeOnode(value: Buffer): Onode {
  const r = new Reader(value, 'Corrupt', 'object record');
  const format = r.u8();
  if (format !== ONODE_FORMAT) throw corrupt(`unknown object record format ${format}`);
  const sizeBytes = r.varint(limits.objectSizeBytesMax);
  const mtimeMs = r.varint();
  const nid = r.varint();
  const xattrCount = r.varint(limits.xattrCountMax);
  const xattrs = new Map<string, Buffer>();
  for (let i = 0; i < xattrCount; i++) {
    const name = r.string(limits.xattrNameBytesMax);
    xattrs.set(name, Buffer.from(r.bytes(limits.xattrValueBytesMax)));
  }
  const onode: Onode = { sizeBytes, mtimeMs, nid, xattrs, inline: null, inlineCrc: 0, extents: [] };
  if (r.u8() === 1) {
    onode.inlineCrc = r.u32();
    onode.inline = Buffer.from(r.bytes(limits.inlineDataBytesMax));
    r.end();
    return onode;
  }
  const blobs: Blob[] = [];
  const blobCount = r.varint(extentsPerRecordMax);
  for (let i = 0; i < blobCount; i++) {
    const segmentId = r.varint(0xffff_ffff);
    const segmentOffset = r.varint();
    const lengthBytes = r.varint(limits.blobBytesMax);
    const chunkShift = r.u8();
    if (chunkShift < CHUNK_SHIFT_MIN || chunkShift > CHUNK_SHIFT_MAX) throw corrupt(`object record: bad chunk shift ${chunkShift}`);
    const crcs = new Uint32Array(Math.ceil(lengthBytes / 2 ** chunkShift));
    for (let c = 0; c < crcs.length; c++) crcs[c] = r.u32();
    blobs.push({ segmentId, segmentOffset, lengthBytes, chunkShift, crcs });
  }
  const extentCount = r.varint(extentsPerRecordMax);
  for (let i = 0; i < extentCount; i++) {
    const logicalOffset = r.varint(limits.objectSizeBytesMax);
    const lengthBytes = r.varint(limits.objectSizeBytesMax);
    const blob = blobs[r.varint(blobCount - 1)]!;
    const blobOffset = r.varint(limits.blobBytesMax);
    if (blobOffset + lengthBytes > blob.lengthBytes) throw corrupt('object record: extent beyond its blob');
    onode.extents.push({ logicalOffset, lengthBytes, blob, blobOffset });
  }
  r.end();
  return onode;
}

/** Picks the checksum chunk size for a blob: about 64 chunks, 4 KiB to 64 KiB each. */
export function chunkShiftFor(lengthBytes: number): number {
  let shift = CHUNK_SHIFT_MIN;
  while (shift < 16 && lengthBytes > 64 * 2 ** shift) shift++;
  return shift;
}

export interface SegmentRecord {
  /** Bytes of the segment file that committed records may reference. */
  sizeBytes: number;
  /** Bytes extents still reference. */
  liveBytes: number;
}

/** Fixed width, so a group can size its log record before it knows the active segment's final size. */
export function encodeSegment(s: SegmentRecord): Buffer {
  return new Writer(16).u64(s.sizeBytes).u64(s.liveBytes).finish();
}

export function decodeSegment(value: Buffer): SegmentRecord {
  const r = new Reader(value, 'Corrupt', 'segment record');
  const s = { sizeBytes: r.u64(), liveBytes: r.u64() };
  r.end();
  return s;
}

/** Counters kept in one singleton record, rewritten by every commit that changes them. */
export interface StoreCounters {
  objects: number;
  logicalBytes: number;
  nextNid: number;
  nextSegmentId: number;
  /** Sequence number of the next log record. */
  nextSequence: number;
}

export function encodeCounters(c: StoreCounters): Buffer {
  return new Writer(40).varint(c.objects).varint(c.logicalBytes).varint(c.nextNid).varint(c.nextSegmentId).varint(c.nextSequence).finish();
}

export function decodeCounters(value: Buffer): StoreCounters {
  const r = new Reader(value, 'Corrupt', 'store counters');
  const c = { objects: r.varint(), logicalBytes: r.varint(), nextNid: r.varint(), nextSegmentId: r.varint(), nextSequence: r.varint() };
  r.end();
  return c;
}
