/**
 * Segment files: append-only files holding object data, named by a 32-bit id
 * (segments/00000001.seg). One segment at a time is open for appends (the
 * active one); the committer reserves space in it, writes a whole group
 * commit's data with one writev per segment and syncs it once.
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
import { crc32c } from '../../native/index.js';
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

export interface PendingAppend {
  segmentId: number;
  segmentOffset: number;
  data: Buffer;
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

  constructor(
    private readonly fs: FileSystem,
    readonly dir: string,
    private readonly segmentBytesMax: number,
  ) {}

  path(id: number): string {
    return join(this.dir, segmentFileName(id));
  }

  /** Where the next append goes; starts a new segment (id from allocateId) when the active one is full. */
  reserve(lengthBytes: number, allocateId: () => number): Reservation {
    assert(lengthBytes > 0 && lengthBytes <= this.segmentBytesMax, 'an append fits in one segment');
    let isNew = false;
    if (this.activeId === null || this.activeEnd + lengthBytes > this.segmentBytesMax) {
      this.activeId = allocateId();
      this.activeEnd = 0;
      isNew = true;
    }
    const r = { segmentId: this.activeId, segmentOffset: this.activeEnd, isNew };
    this.activeEnd += lengthBytes;
    return r;
  }

  /** Remembers the append position, to undo the reservations of a failed group commit. */
  savepoint(): { activeId: number | null; activeEnd: number } {
    return { activeId: this.activeId, activeEnd: this.activeEnd };
  }

  rollback(point: { activeId: number | null; activeEnd: number }): void {
    this.activeId = point.activeId;
    this.activeEnd = point.activeEnd;
  }

  /** Writes a group's appends (one writev per segment) and makes them durable. */
  async writeDurably(appends: readonly PendingAppend[], newSegments: ReadonlySet<number>): Promise<void> {
    const bySegment = new Map<number, PendingAppend[]>();
    for (const a of appends) {
      let list = bySegment.get(a.segmentId);
      if (!list) bySegment.set(a.segmentId, (list = []));
      list.push(a);
    }
    await Promise.all(
      [...bySegment].map(async ([id, list]) => {
        const handle = this.open(id, newSegments.has(id) ? 'create' : 'readWrite');
        handle.refs++;
        try {
          const file = await handle.file;
          for (let i = 1; i < list.length; i++) {
            assert(list[i]!.segmentOffset === list[i - 1]!.segmentOffset + list[i - 1]!.data.length, 'appends are contiguous');
          }
          await file.writev(
            list.map((a) => a.data),
            list[0]!.segmentOffset,
          );
          await file.datasync();
        } finally {
          handle.refs--;
        }
      }),
    );
    if (newSegments.size > 0) await this.fs.syncDir(this.dir);
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

  private open(id: number, mode: 'readWrite' | 'create' | 'read'): Handle {
    let handle = this.handles.get(id);
    if (!handle) {
      const file = this.fs.open(this.path(id), mode === 'read' ? 'readWrite' : mode);
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
  async readBlob(blob: Blob, fromBlobOffset: number, lengthBytes: number, into?: Buffer): Promise<Buffer | null> {
    if (!this.records.has(blob.segmentId) || this.retired.has(blob.segmentId)) return null;
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
    for (let c = firstChunk; c < endChunk; c++) {
      const start = c * chunkBytes - readStart;
      const end = Math.min(start + chunkBytes, buffer.length);
      const actual = crc32c(buffer.subarray(start, end));
      if (actual !== blob.crcs[c]) {
        throw corrupt(
          `checksum mismatch in segment ${blob.segmentId} at ${blob.segmentOffset + c * chunkBytes} (chunk ${c}): stored ${blob.crcs[c]?.toString(16)}, computed ${actual.toString(16)}`,
        );
      }
    }
    const skip = fromBlobOffset - readStart;
    return skip === 0 && buffer.length === lengthBytes ? buffer : buffer.subarray(skip, skip + lengthBytes);
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
