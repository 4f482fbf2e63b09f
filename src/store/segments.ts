/**
 * Segment files: append-only files holding object data, named by a 32-bit id
 * (segments/00000001.seg). One segment at a time is open for appends (the
 * active one); each group commit appends one log record to it (log.ts): the
 * group's data and metadata, with one writev. Segment files are opened with
 * synced writes (O_DSYNC), so that writev is durable when it returns, as a
 * writev followed by an fdatasync would be, in one thread-pool call.
 *
 * Invariants:
 * - Committed records only reference bytes below a segment's recorded size.
 * - After a restart no old segment is appended to: a new active one starts,
 *   so bytes written but never committed before a crash stay unreferenced.
 * - A segment file is unlinked only after its record's removal is committed
 *   and no reader still holds it (reference counts), so a reader that found
 *   an extent can always read it, or learns that it must look again.
 */
import { join } from 'node:path';
import { assert } from '../lib/assert.js';
import { corrupt, TesseraError } from '../lib/errors.js';
import type { FileIo, FileSystem } from '../io/io.js';
import { crc32c, crc32cChunks, crc32cCombine, crc32cCombineWith, crc32cShiftOperator } from '../../native/index.js';
import type { Blob, SegmentRecord } from './records.js';

const OPEN_HANDLES_MAX = 128;

interface Handle {
  file: Promise<FileIo>;
  refs: number;
}

export interface Reservation {
  segmentId: number;
  segmentOffset: number;
  /** True when this reservation starts a new segment file. */
  isNew: boolean;
}

export const segmentFileName = (id: number): string => `${id.toString(16).padStart(8, '0')}.seg`;

export function parseSegmentFileName(name: string): number | null {
  const m = /^([0-9a-f]{8})\.seg$/.exec(name);
  return m ? parseInt(m[1]!, 16) : null;
}

export class SegmentFiles {
  /** Committed segment records. */
  readonly records = new Map<number, SegmentRecord>();
  private readonly handles = new Map<number, Handle>();
  private readonly retired = new Set<number>();
  private activeId: number | null = null;
  private activeEnd = 0;
  /** Blob reads (readBlob, readBlobWithCrc) and the segment bytes they read, since the store opened. */
  readonly readStats = { reads: 0, bytes: 0 };

  constructor(
    private readonly fs: FileSystem,
    readonly dir: string,
    private readonly segmentBytesMax: number,
  ) {}

  /** Whether a segment holds acknowledged data (committed records, or groups not yet in the KvStore). */
  isKnown: (id: number) => boolean = (id) => this.records.has(id);

  path(id: number): string {
    return join(this.dir, segmentFileName(id));
  }

  /**
   * Reserves room for a group's log record (header + data) at the end of the
   * active segment, starting a new segment (id from allocateId) when the
   * active one cannot take the header and data; the metadata that follows is
   * added with extendRecord. A record never spans segments; a segment may
   * exceed segmentBytesMax by one record's metadata.
   */
  beginRecord(headerAndDataBytes: number, allocateId: () => number): Reservation {
    let isNew = false;
    if (this.activeId === null || (this.activeEnd > 0 && this.activeEnd + headerAndDataBytes > this.segmentBytesMax)) {
      this.activeId = allocateId();
      this.activeEnd = 0;
      isNew = true;
    }
    const r = { segmentId: this.activeId, segmentOffset: this.activeEnd, isNew };
    this.activeEnd += headerAndDataBytes;
    return r;
  }

  extendRecord(bytes: number): void {
    assert(this.activeId !== null, 'a record is open');
    this.activeEnd += bytes;
  }

  /** Where the next record goes (or the start of the next segment when none is active). */
  get appendEnd(): number {
    return this.activeEnd;
  }

  /** Remembers the append position, to undo the reservations of a failed group commit. */
  savepoint(): { activeId: number | null; activeEnd: number } {
    return { activeId: this.activeId, activeEnd: this.activeEnd };
  }

  rollback(point: { activeId: number | null; activeEnd: number }): void {
    this.activeId = point.activeId;
    this.activeEnd = point.activeEnd;
  }

  /** Writes one log record durably (one writev, synced: O_DSYNC; and the directory, for a new segment). */
  async writeRecord(r: Reservation, buffers: readonly Buffer[]): Promise<void> {
    const handle = this.open(r.segmentId, r.isNew ? 'create' : 'readWrite');
    handle.refs++;
    try {
      const file = await handle.file;
      await file.writev(buffers, r.segmentOffset);
    } finally {
      handle.refs--;
    }
    if (r.isNew) await this.fs.syncDir(this.dir);
  }

  /** Cuts a segment back to its committed size after a failed group commit. */
  async truncateTo(id: number, sizeBytes: number): Promise<void> {
    const handle = this.open(id, 'create');
    handle.refs++;
    try {
      await (await handle.file).truncate(sizeBytes);
    } finally {
      handle.refs--;
    }
  }

  /** The segment's file, for recovery's replay; released by closeAll. */
  async fileForReplay(id: number): Promise<FileIo> {
    return this.open(id, 'read').file;
  }

  /**
   * Holds segments open until release(): a retire meanwhile defers their
   * deletion, so a streaming reader keeps reading the version it started
   * with (readBlob(..., pinned = true)). Null when one is already gone.
   */
  pin(ids: Iterable<number>): (() => void) | null {
    const held: number[] = [];
    const release = (): void => {
      for (const id of held.splice(0)) {
        const h = this.handles.get(id);
        if (h) h.refs--;
        this.maybeUnlinkRetired(id);
      }
    };
    for (const id of new Set(ids)) {
      if (!this.isKnown(id) || this.retired.has(id)) {
        release();
        return null;
      }
      this.open(id, 'read').refs++;
      held.push(id);
    }
    return release;
  }

  /** Runs fn with the segment's file held open (a retire waits for it); null if the segment is gone. */
  async withFile<T>(id: number, fn: (file: FileIo) => Promise<T>): Promise<T | null> {
    if (!this.isKnown(id) || this.retired.has(id)) return null;
    const handle = this.open(id, 'read');
    handle.refs++;
    try {
      return await fn(await handle.file);
    } finally {
      handle.refs--;
      this.maybeUnlinkRetired(id);
    }
  }

  private open(id: number, mode: 'readWrite' | 'create' | 'read'): Handle {
    let handle = this.handles.get(id);
    if (!handle) {
      // Synced writes: a log record is durable when its writev returns (writeRecord).
      const file = this.fs.open(this.path(id), mode === 'read' ? 'readWrite' : mode, { syncWrites: true });
      file.catch(() => this.handles.delete(id));
      handle = { file, refs: 0 };
      this.handles.set(id, handle);
      this.closeIdleHandles();
    } else {
      // Keep recently used handles at the end (LRU order).
      this.handles.delete(id);
      this.handles.set(id, handle);
    }
    return handle;
  }

  private closeIdleHandles(): void {
    if (this.handles.size <= OPEN_HANDLES_MAX) return;
    for (const [id, h] of this.handles) {
      if (this.handles.size <= OPEN_HANDLES_MAX) break;
      if (h.refs > 0 || id === this.activeId) continue;
      this.handles.delete(id);
      void h.file.then((f) => f.close()).catch(() => undefined);
    }
  }

  /**
   * Reads [fromBlobOffset, fromBlobOffset + lengthBytes) of a blob, verifying
   * the crc32c of every chunk it touches. Returns null when the segment was
   * retired meanwhile (the caller reloads the object record and retries).
   */
  async readBlob(blob: Blob, fromBlobOffset: number, lengthBytes: number, into?: Buffer, pinned = false): Promise<Buffer | null> {
    return (await this.readBlobRange(blob, fromBlobOffset, lengthBytes, into, pinned, false))?.data ?? null;
  }

  /**
   * readBlob, and the crc32c of the bytes returned: combined from the
   * verified chunk checksums (crc32cCombine), only the partly covered chunks
   * at either end are checksummed again, over the part returned.
   */
  async readBlobWithCrc(blob: Blob, fromBlobOffset: number, lengthBytes: number, into?: Buffer, pinned = false): Promise<{ data: Buffer; crc32c: number } | null> {
    return this.readBlobRange(blob, fromBlobOffset, lengthBytes, into, pinned, true);
  }

  private async readBlobRange(blob: Blob, fromBlobOffset: number, lengthBytes: number, into: Buffer | undefined, pinned: boolean, withCrc: boolean): Promise<{ data: Buffer; crc32c: number } | null> {
    if (!pinned && (!this.isKnown(blob.segmentId) || this.retired.has(blob.segmentId))) return null;
    assert(fromBlobOffset + lengthBytes <= blob.lengthBytes, 'read inside the blob');
    const chunkBytes = 2 ** blob.chunkShift;
    const firstChunk = Math.floor(fromBlobOffset / chunkBytes);
    const endChunk = Math.ceil((fromBlobOffset + lengthBytes) / chunkBytes);
    const readStart = firstChunk * chunkBytes;
    const readEnd = Math.min(endChunk * chunkBytes, blob.lengthBytes);
    const aligned = readStart === fromBlobOffset && readEnd === fromBlobOffset + lengthBytes;
    const buffer = aligned && into ? into : Buffer.allocUnsafe(readEnd - readStart);
    const handle = this.open(blob.segmentId, 'read');
    handle.refs++;
    try {
      const file = await handle.file;
      const got = await file.read(buffer, 0, readEnd - readStart, blob.segmentOffset + readStart);
      this.readStats.reads++;
      this.readStats.bytes += got;
      if (got !== readEnd - readStart) {
        throw corrupt(`segment ${blob.segmentId} is short: wanted ${readEnd - readStart} bytes at ${blob.segmentOffset + readStart}, got ${got}`);
      }
    } catch (err) {
      if (err instanceof TesseraError) throw err;
      throw corrupt(`cannot read segment ${blob.segmentId}: ${(err as Error).message}`, err);
    } finally {
      handle.refs--;
      this.maybeUnlinkRetired(blob.segmentId);
    }
    const actual = new Uint32Array(endChunk - firstChunk);
    crc32cChunks(buffer, chunkBytes, actual);
    for (let c = firstChunk; c < endChunk; c++) {
      if (actual[c - firstChunk] !== blob.crcs[c]) {
        throw corrupt(
          `checksum mismatch in segment ${blob.segmentId} at ${blob.segmentOffset + c * chunkBytes} (chunk ${c}): stored ${blob.crcs[c]?.toString(16)}, computed ${actual[c - firstChunk]!.toString(16)}`,
        );
      }
    }
    const skip = fromBlobOffset - readStart;
    const data = skip === 0 && buffer.length === lengthBytes ? buffer : buffer.subarray(skip, skip + lengthBytes);
    return { data, crc32c: withCrc ? rangeCrc(buffer, chunkBytes, actual, skip, lengthBytes) : 0 };
  }

  /** Marks a segment whose record removal is committed; its file goes once no reader holds it. */
  retire(id: number): void {
    assert(id !== this.activeId, 'the active segment is never retired');
    this.records.delete(id);
    this.retired.add(id);
    this.maybeUnlinkRetired(id);
  }

  private maybeUnlinkRetired(id: number): void {
    if (!this.retired.has(id)) return;
    const h = this.handles.get(id);
    if (h && h.refs > 0) return;
    this.retired.delete(id);
    this.handles.delete(id);
    const closed = h ? h.file.then((f) => f.close()).catch(() => undefined) : Promise.resolve();
    void closed.then(() => this.fs.unlink(this.path(id))).catch(() => undefined);
  }

  isActive(id: number): boolean {
    return id === this.activeId;
  }

  get active(): number | null {
    return this.activeId;
  }

  async closeAll(): Promise<void> {
    const files = [...this.handles.values()].map((h) => h.file);
    this.handles.clear();
    await Promise.all(files.map((f) => f.then((x) => x.close()).catch(() => undefined)));
  }
}

/**
 * The crc32c of buffer[skip, skip + lengthBytes), where buffer holds whole
 * checksum chunks of chunkBytes (the last may be short) whose verified crcs
 * are chunkCrcs: wholly covered chunks are combined, partly covered ones
 * checksummed over the covered part.
 */
function rangeCrc(buffer: Buffer, chunkBytes: number, chunkCrcs: Uint32Array, skip: number, lengthBytes: number): number {
  const end = skip + lengthBytes;
  const shift = crc32cShiftOperator(chunkBytes);
  let crc = 0;
  for (let i = 0, chunkStart = 0; chunkStart < end; i++, chunkStart += chunkBytes) {
    const chunkEnd = Math.min(chunkStart + chunkBytes, buffer.length);
    const from = Math.max(chunkStart, skip);
    const to = Math.min(chunkEnd, end);
    if (from >= to) continue;
    if (from !== chunkStart || to !== chunkEnd) crc = crc32c(buffer.subarray(from, to), crc);
    else if (to - from === chunkBytes) crc = crc32cCombineWith(crc, chunkCrcs[i]!, shift);
    else crc = crc32cCombine(crc, chunkCrcs[i]!, to - from);
  }
  return crc;
}
