/**
 * The state of one group commit while its transactions are prepared.
 *
 * Every object a group touches has a slot holding its committed record (as of
 * the group's start) and its current record (after the transactions merged so
 * far). A transaction works on a TxnState layered over the group: it clones a
 * record before changing it and buffers omap changes and new blobs; only if
 * every one of its operations succeeds is it merged into the group, so a
 * failed transaction leaves no trace. Nothing here touches the disk.
 */
import { assert } from '../lib/assert.js';
import { notFound, TesseraError, limitExceeded } from '../lib/errors.js';
import { crc32c, crc32cChunks } from '../../native/index.js';
import { insert, overlapping, punch } from './extents.js';
import { chunkShiftFor, cloneOnode, emptyOnode, extentsPerRecordMax, type Blob, type Extent, type Onode } from './records.js';
import type { ObjectId, StoreOp } from './types.js';

export interface ObjectSlot {
  key: Buffer;
  id: ObjectId;
  sortKey: number;
  committed: Onode | null;
  current: Onode | null;
  dirty: boolean;
}

export interface NewBlob {
  blob: Blob;
  data: Buffer;
}

export interface BatchEnv {
  nowMs: number;
  inlineDataBytesMax: number;
  blobBytesMax: number;
  xattrTotalBytesMax: number;
  xattrCountMax: number;
  txnOmapKeysMax: number;
  allocateNid(): number;
  /** Committed omap keys of nid in [start, end), at most limit of them. */
  scanOmapKeys(nid: number, start: Buffer, end: Buffer, limit: number): Promise<Buffer[]>;
  /** The acknowledged value of an omap key (groups not yet in the KvStore included). */
  omapValue(nid: number, key: Buffer): Promise<Buffer | undefined>;
}

type OmapOverlay = Map<number, Map<string, Buffer | null>>;

export class BatchState {
  readonly slots = new Map<string, ObjectSlot>();
  readonly omap: OmapOverlay = new Map();
  readonly purges = new Set<number>();
  /** New blobs in the order their data is appended. */
  readonly newBlobs: NewBlob[] = [];
  /** Segments the group should delete if nothing references them. */
  readonly retireRequests = new Set<number>();

  slot(id: ObjectId): ObjectSlot {
    const s = this.slots.get(slotKey(id));
    assert(s !== undefined, 'every object of a group is loaded before its transactions are prepared');
    return s;
  }
}

export const slotKey = (id: ObjectId): string => `${id.ns}/${id.name}`;

/** A blob whose segment location is assigned when its transaction is merged. */
function makeBlob(data: Buffer): Blob {
  const chunkShift = chunkShiftFor(data.length);
  const chunkBytes = 2 ** chunkShift;
  const crcs = new Uint32Array(Math.ceil(data.length / chunkBytes));
  crc32cChunks(data, chunkBytes, crcs);
  return { segmentId: -1, segmentOffset: -1, lengthBytes: data.length, chunkShift, crcs };
}

export class TxnState {
  readonly objects = new Map<string, Onode | null>();
  readonly omap: OmapOverlay = new Map();
  readonly purges: number[] = [];
  readonly newBlobs: NewBlob[] = [];

  constructor(
    readonly batch: BatchState,
    private readonly env: BatchEnv,
  ) {}

  /** The object's record as this transaction sees it (do not mutate). */
  read(id: ObjectId): Onode | null {
    const k = slotKey(id);
    if (this.objects.has(k)) return this.objects.get(k)!;
    return this.batch.slot(id).current;
  }

  /** A record this transaction owns and may change; creates the object when asked. */
  mutable(id: ObjectId, create: boolean): Onode {
    const k = slotKey(id);
    const own = this.objects.get(k);
    if (own) return own;
    const current = this.read(id);
    if (!current && !create) throw notFound(`object ${id.ns}/${id.name} does not exist`);
    const next = current ? cloneOnode(current) : emptyOnode(this.env.nowMs);
    next.mtimeMs = this.env.nowMs;
    this.objects.set(k, next);
    return next;
  }

  private omapOverlay(nid: number): Map<string, Buffer | null> {
    let m = this.omap.get(nid);
    if (!m) this.omap.set(nid, (m = new Map()));
    return m;
  }

  async apply(op: AnyOp): Promise<void> {
    switch (op.type) {
      case 'relocate':
        return this.relocate(op);
      case 'retireSegment':
        this.batch.retireRequests.add(op.segmentId);
        return;
      case 'create': {
        const exists = this.read(op.id) !== null;
        if (exists && op.exclusive) throw new TesseraError('AlreadyExists', `object ${op.id.ns}/${op.id.name} exists`);
        this.mutable(op.id, true);
        return;
      }
      case 'write':
        return this.write(this.mutable(op.id, true), op.offsetBytes, op.data);
      case 'writeFull': {
        const o = this.mutable(op.id, true);
        o.extents = [];
        o.inline = null;
        o.sizeBytes = 0;
        return this.write(o, 0, op.data);
      }
      case 'append': {
        const o = this.mutable(op.id, true);
        return this.write(o, o.sizeBytes, op.data);
      }
      case 'truncate':
        return this.truncate(this.mutable(op.id, true), op.sizeBytes);
      case 'zero':
        return this.zero(this.mutable(op.id, true), op.offsetBytes, op.lengthBytes);
      case 'remove':
        return this.remove(op.id, op.ifExists === true);
      case 'setXattr':
        return this.setXattr(this.mutable(op.id, true), op.name, op.value);
      case 'removeXattr':
        this.mutable(op.id, false).xattrs.delete(op.name);
        return;
      case 'assertXattr':
        return this.assertXattr(op.id, op.name, op.value);
      case 'assertExists':
        if (!this.read(op.id)) throw notFound(`object ${op.id.ns}/${op.id.name} does not exist`);
        return;
      case 'omapSet': {
        const o = this.mutable(op.id, true);
        if (o.nid === 0) o.nid = this.env.allocateNid();
        const overlay = this.omapOverlay(o.nid);
        for (const [key, value] of op.entries) overlay.set(key.toString('latin1'), value);
        return;
      }
      case 'omapCompare':
        return this.omapCompare(op.id, op.key, op.value);
      case 'omapRemoveKeys': {
        const o = this.mutable(op.id, false);
        if (o.nid === 0) return;
        const overlay = this.omapOverlay(o.nid);
        for (const key of op.keys) overlay.set(key.toString('latin1'), null);
        return;
      }
      case 'omapRemoveRange':
        return this.omapRemoveRange(op.id, op.startKey, op.endKey);
      case 'move':
        return this.move(op.id, op.to);
      case 'moveRange':
        return this.moveRange(op.id, op.offsetBytes, op.from, op.fromOffsetBytes, op.lengthBytes);
      case 'omapClear': {
        const o = this.mutable(op.id, false);
        if (o.nid !== 0) this.purges.push(o.nid);
        o.nid = 0;
        return;
      }
    }
  }

  private newExtents(data: Buffer, logicalOffset: number): Extent[] {
    const out: Extent[] = [];
    for (let at = 0; at < data.length; at += this.env.blobBytesMax) {
      const piece = data.subarray(at, Math.min(data.length, at + this.env.blobBytesMax));
      const blob = makeBlob(piece);
      this.newBlobs.push({ blob, data: piece });
      out.push({ logicalOffset: logicalOffset + at, lengthBytes: piece.length, blob, blobOffset: 0 });
    }
    return out;
  }

  /** Moves inline data into a blob, so the object can grow beyond the inline limit. */
  private spill(o: Onode): void {
    if (!o.inline) return;
    const data = o.inline;
    o.inline = null;
    o.inlineCrc = 0;
    o.extents = data.length > 0 ? this.newExtents(data, 0) : [];
  }

  private setInline(o: Onode, data: Buffer): void {
    o.inline = data;
    o.inlineCrc = crc32c(data);
    o.sizeBytes = data.length;
  }

  private write(o: Onode, offsetBytes: number, data: Buffer): void {
    const end = offsetBytes + data.length;
    if (data.length === 0) return;
    const newSize = Math.max(o.sizeBytes, end);
    if (o.extents.length === 0 && newSize <= this.env.inlineDataBytesMax) {
      const next = Buffer.alloc(newSize);
      if (o.inline) o.inline.copy(next);
      data.copy(next, offsetBytes);
      this.setInline(o, next);
      return;
    }
    this.spill(o);
    o.extents = insert(punch(o.extents, offsetBytes, end, []), this.newExtents(data, offsetBytes));
    o.sizeBytes = newSize;
    if (o.extents.length > extentsPerRecordMax) {
      throw limitExceeded(`object has ${o.extents.length} extents, limit ${extentsPerRecordMax}; it is being defragmented, retry`);
    }
  }

  private truncate(o: Onode, sizeBytes: number): void {
    if (o.inline || (o.extents.length === 0 && sizeBytes <= this.env.inlineDataBytesMax)) {
      if (sizeBytes <= this.env.inlineDataBytesMax) {
        const next = Buffer.alloc(sizeBytes);
        o.inline?.copy(next, 0, 0, Math.min(sizeBytes, o.inline.length));
        this.setInline(o, next);
        return;
      }
      this.spill(o);
    }
    o.extents = punch(o.extents, sizeBytes, Number.MAX_SAFE_INTEGER, []);
    o.sizeBytes = sizeBytes;
  }

  private zero(o: Onode, offsetBytes: number, lengthBytes: number): void {
    const end = Math.min(offsetBytes + lengthBytes, o.sizeBytes);
    if (offsetBytes >= end) return;
    if (o.inline) {
      const next = Buffer.from(o.inline);
      next.fill(0, offsetBytes, end);
      this.setInline(o, next);
      return;
    }
    o.extents = punch(o.extents, offsetBytes, end, []);
  }

  private remove(id: ObjectId, ifExists: boolean): void {
    const o = this.read(id);
    if (!o) {
      if (ifExists) return;
      throw notFound(`object ${id.ns}/${id.name} does not exist`);
    }
    if (o.nid !== 0) this.purges.push(o.nid);
    this.objects.set(slotKey(id), null);
  }

  private move(from: ObjectId, to: ObjectId): void {
    if (slotKey(from) === slotKey(to)) {
      this.mutable(from, false);
      return;
    }
    const o = this.read(from);
    if (!o) throw notFound(`object ${from.ns}/${from.name} does not exist`);
    const replaced = this.read(to);
    if (replaced && replaced.nid !== 0) this.purges.push(replaced.nid);
    const moved = cloneOnode(o);
    moved.mtimeMs = this.env.nowMs;
    this.objects.set(slotKey(from), null);
    this.objects.set(slotKey(to), moved);
  }

  private moveRange(id: ObjectId, offsetBytes: number, from: ObjectId, fromOffsetBytes: number, lengthBytes: number): void {
    const src = this.mutable(from, false);
    const dst = this.mutable(id, true);
    if (lengthBytes === 0) return;
    const end = offsetBytes + lengthBytes;
    if (src.inline) {
      const bytes = Buffer.alloc(lengthBytes);
      src.inline.copy(bytes, 0, Math.min(fromOffsetBytes, src.inline.length), Math.min(fromOffsetBytes + lengthBytes, src.inline.length));
      this.zero(src, fromOffsetBytes, lengthBytes);
      this.write(dst, offsetBytes, bytes);
      return;
    }
    const moved: Extent[] = [];
    src.extents = punch(src.extents, fromOffsetBytes, fromOffsetBytes + lengthBytes, moved);
    this.spill(dst);
    const shift = offsetBytes - fromOffsetBytes;
    dst.extents = insert(
      punch(dst.extents, offsetBytes, end, []),
      moved.map((e) => ({ ...e, logicalOffset: e.logicalOffset + shift })),
    );
    dst.sizeBytes = Math.max(dst.sizeBytes, end);
  }

  private setXattr(o: Onode, name: string, value: Buffer): void {
    o.xattrs.set(name, value);
    if (o.xattrs.size > this.env.xattrCountMax) throw limitExceeded(`object would have ${o.xattrs.size} xattrs, limit ${this.env.xattrCountMax}`);
    let total = 0;
    for (const [n, v] of o.xattrs) total += Buffer.byteLength(n) + v.length;
    if (total > this.env.xattrTotalBytesMax) throw limitExceeded(`object's xattrs would take ${total} bytes, limit ${this.env.xattrTotalBytesMax}`);
  }

  private assertXattr(id: ObjectId, name: string, value: Buffer | null): void {
    const o = this.read(id);
    const actual = o?.xattrs.get(name) ?? null;
    const equal = actual === null || value === null ? actual === value : actual.equals(value);
    if (!equal) throw new TesseraError('Conflict', `xattr ${name} of ${id.ns}/${id.name} does not hold the expected value`);
  }

  private async omapCompare(id: ObjectId, key: Buffer, expected: Buffer | null): Promise<void> {
    const o = this.read(id);
    let actual: Buffer | null = null;
    if (o && o.nid !== 0) {
      const k = key.toString('latin1');
      const own = this.omap.get(o.nid);
      const group = this.batch.omap.get(o.nid);
      if (own?.has(k)) actual = own.get(k)!;
      else if (group?.has(k)) actual = group.get(k)!;
      else actual = (await this.env.omapValue(o.nid, key)) ?? null;
    }
    const equal = actual === null || expected === null ? actual === expected : actual.equals(expected);
    if (!equal) throw new TesseraError('Conflict', `omap key of ${id.ns}/${id.name} does not hold the expected value`);
  }

  private async omapRemoveRange(id: ObjectId, startKey: Buffer, endKey: Buffer): Promise<void> {
    const o = this.mutable(id, false);
    if (o.nid === 0 || Buffer.compare(startKey, endKey) >= 0) return;
    const committed = await this.env.scanOmapKeys(o.nid, startKey, endKey, this.env.txnOmapKeysMax + 1);
    if (committed.length > this.env.txnOmapKeysMax) {
      throw limitExceeded(`range holds more than ${this.env.txnOmapKeysMax} omap keys; remove it in smaller ranges`);
    }
    const overlay = this.omapOverlay(o.nid);
    const start = startKey.toString('latin1');
    const end = endKey.toString('latin1');
    for (const layer of [this.batch.omap.get(o.nid), overlay]) {
      for (const k of layer?.keys() ?? []) if (k >= start && k < end) overlay.set(k, null);
    }
    for (const k of committed) overlay.set(k.toString('latin1'), null);
  }

  private relocate(op: RelocateOp): void {
    const current = this.read(op.id);
    if (!current || current.inline) return;
    assert(op.data.length <= this.env.blobBytesMax, 'a relocation writes one blob');
    const blob = makeBlob(op.data);
    const replacements: Extent[] = [];
    for (const s of op.sources) {
      for (const e of overlapping(current.extents, s.logicalOffset, s.logicalOffset + s.lengthBytes)) {
        if (e.blob.segmentId !== s.segmentId || e.blob.segmentOffset !== s.blobSegmentOffset) continue;
        if (e.blobOffset - e.logicalOffset !== s.blobOffset - s.logicalOffset) continue;
        const from = Math.max(e.logicalOffset, s.logicalOffset);
        const to = Math.min(e.logicalOffset + e.lengthBytes, s.logicalOffset + s.lengthBytes);
        replacements.push({ logicalOffset: from, lengthBytes: to - from, blob, blobOffset: s.dataOffset + (from - s.logicalOffset) });
      }
    }
    if (replacements.length === 0) return;
    const o = this.mutable(op.id, false);
    o.mtimeMs = current.mtimeMs; // moving data is not a modification
    let extents = o.extents;
    for (const r of replacements) extents = punch(extents, r.logicalOffset, r.logicalOffset + r.lengthBytes, []);
    o.extents = insert(extents, replacements);
    this.newBlobs.push({ blob, data: op.data });
  }

  /** Merges this transaction into its group (its new blobs get their segment location when the group's record is laid out). */
  mergeInto(): void {
    for (const [k, onode] of this.objects) {
      const slot = this.batch.slots.get(k)!;
      slot.current = onode;
      slot.dirty = true;
    }
    for (const [nid, overlay] of this.omap) {
      let target = this.batch.omap.get(nid);
      if (!target) this.batch.omap.set(nid, (target = new Map()));
      for (const [k, v] of overlay) target.set(k, v);
    }
    for (const nid of this.purges) {
      this.batch.purges.add(nid);
      this.batch.omap.delete(nid);
    }
    for (const b of this.newBlobs) this.batch.newBlobs.push(b);
  }

  appendBytes(): number {
    let n = 0;
    for (const b of this.newBlobs) n += b.data.length;
    return n;
  }
}

/**
 * Internal operation of compaction and defragmentation: data read from
 * existing blobs, written again as one new blob. Each source says which
 * logical range of which old blob the data came from; at apply time only the
 * parts the object still maps to exactly that old data are remapped, so
 * writes that raced with the copy win.
 */
export interface RelocateSource {
  logicalOffset: number;
  lengthBytes: number;
  segmentId: number;
  blobSegmentOffset: number;
  blobOffset: number;
  /** Where this source's bytes start in the op's data. */
  dataOffset: number;
}

export interface RelocateOp {
  type: 'relocate';
  id: ObjectId;
  sources: RelocateSource[];
  data: Buffer;
}

/** Internal: deletes a sealed segment no extent references any more (its log records are past the checkpoint). */
export interface RetireSegmentOp {
  type: 'retireSegment';
  segmentId: number;
}

export type AnyOp = StoreOp | RelocateOp | RetireSegmentOp;
