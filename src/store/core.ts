/**
 * The state one open store shares between its parts: the KvStore, the segment
 * files, the record cache, the counters and the space accounting; plus opening
 * a store directory (superblock checks, recovery of what a crash left).
 *
 * Directory layout:  DIR/superblock   identity and format (JSON with a crc32c)
 *                    DIR/db/          RocksDB: every record (keys.ts)
 *                    DIR/segments/    segment files (segments.ts)
 */
import { join } from 'node:path';
import { crc32c } from '../../native/index.js';
import type { Io } from '../io/io.js';
import { corrupt, TesseraError, toTesseraError } from '../lib/errors.js';
import { limits as defaultLimits } from '../lib/limits.js';
import { OnodeCache } from './cache.js';
import { PendingOverlay } from './pending.js';
import type { KvStore } from './kv.js';
import { objectKey, omapKey, omapPrefix, omapUserKey, parseSegmentKey, Prefix, prefixEnd, segmentKey, singletonKey } from './keys.js';
import { decodeCounters, decodeOnode, decodeSegment, type Onode, type SegmentRecord, type StoreCounters } from './records.js';
import { parseSegmentFileName, SegmentFiles } from './segments.js';
import { decodePosition, readRecord, type ReadRecord, type RecordPosition } from './log.js';
import type { ObjectId } from './types.js';
import type { ValidationLimits } from './validate.js';

export const FORMAT_VERSION = 1;
const SUPERBLOCK_MAGIC = 'tessera-store';

export interface StoreLimits extends ValidationLimits {
  inlineDataBytesMax: number;
  blobBytesMax: number;
  segmentBytesMax: number;
  xattrTotalBytesMax: number;
  xattrCountMax: number;
  extentsPerObjectMax: number;
  groupCommitTxnsMax: number;
  groupCommitBytesMax: number;
  commitQueueTxnsMax: number;
  commitQueueBytesMax: number;
  listPageEntriesMax: number;
  readBytesMax: number;
}

export const defaultStoreLimits: StoreLimits = { ...defaultLimits };

export interface StoreIdentity {
  clusterId: string;
  diskId: number;
}

export interface SpaceOptions {
  /** Cap on the bytes this store may use (default: what the file system has). */
  capacityBytes?: number;
  /** Writes fail NoSpace when less than this would remain free (default 2% of capacity, 4 MiB to 1 GiB). */
  reserveBytes?: number;
}

interface Superblock extends StoreIdentity {
  magic: string;
  formatVersion: number;
  createdMs: number;
}

export async function readSuperblock(io: Io, dir: string): Promise<Superblock | null> {
  const path = join(dir, 'superblock');
  if (!(await io.fs.stat(path))) return null;
  const raw = await io.fs.readFile(path);
  const text = raw.toString('utf8');
  const nl = text.indexOf('\n');
  const body = nl < 0 ? text : text.slice(0, nl);
  const crc = nl < 0 ? '' : text.slice(nl + 1).trim();
  if (crc !== crc32c(Buffer.from(body, 'utf8')).toString(16)) throw corrupt(`superblock ${path} fails its checksum`);
  let parsed: Superblock;
  try {
    parsed = JSON.parse(body) as Superblock;
  } catch (err) {
    throw corrupt(`superblock ${path} is not valid JSON`, err);
  }
  if (parsed.magic !== SUPERBLOCK_MAGIC) throw new TesseraError('UnsupportedFormat', `${dir} is not a Tessera store (bad superblock magic)`);
  if (parsed.formatVersion !== FORMAT_VERSION) {
    throw new TesseraError('UnsupportedFormat', `${dir} has store format ${parsed.formatVersion}; this version of Tessera reads format ${FORMAT_VERSION}`);
  }
  return parsed;
}

export async function writeSuperblock(io: Io, dir: string, identity: StoreIdentity): Promise<void> {
  const sb: Superblock = { magic: SUPERBLOCK_MAGIC, formatVersion: FORMAT_VERSION, ...identity, createdMs: io.clock.nowMs() };
  const body = JSON.stringify(sb);
  await io.fs.writeFileAtomic(join(dir, 'superblock'), Buffer.from(`${body}\n${crc32c(Buffer.from(body, 'utf8')).toString(16)}\n`));
}

export class StoreCore {
  counters: StoreCounters = { objects: 0, logicalBytes: 0, nextNid: 1, nextSegmentId: 1, nextSequence: 1 };
  readonly cache: OnodeCache;
  /** Acknowledged changes not yet in the KvStore and cache: readers look here first. */
  readonly pending = new PendingOverlay();
  private failure: TesseraError | null = null;
  closing = false;
  /** Space: refreshed from the file system in the background; estimates in between. */
  fsFreeBytes = 0;
  fsTotalBytes = 0;
  kvBytes = 0;
  onPurgesQueued: () => void = () => undefined;
  onFragmented: (id: ObjectId) => void = () => undefined;

  constructor(
    readonly io: Io,
    readonly dir: string,
    readonly kv: KvStore,
    readonly segments: SegmentFiles,
    readonly limits: StoreLimits,
    readonly identity: StoreIdentity,
    readonly spaceOptions: SpaceOptions,
    cacheBytes: number,
  ) {
    this.cache = new OnodeCache(cacheBytes);
    segments.isKnown = (id) => segments.records.has(id) || this.pending.segments.has(id);
  }

  checkUsable(): void {
    if (this.failure) throw new TesseraError('Unavailable', `store ${this.dir} failed and must be reopened: ${this.failure.message}`, { cause: this.failure });
    if (this.closing) throw new TesseraError('Closed', `store ${this.dir} is closing`);
  }

  /** After a failed metadata write nothing in memory can be trusted: refuse everything until reopened. */
  fail(err: unknown): void {
    this.failure ??= toTesseraError(err);
  }

  get failed(): boolean {
    return this.failure !== null;
  }

  decode(value: Buffer, id: ObjectId): Onode {
    try {
      return decodeOnode(value);
    } catch (err) {
      throw corrupt(`record of object ${id.ns}/${id.name} is unreadable: ${(err as Error).message}`, err);
    }
  }

  /** The latest acknowledged record (pending groups, the cache, then the KvStore); null when absent. */
  async loadCommitted(id: ObjectId): Promise<Onode | null> {
    const key = objectKey(id);
    const latin = key.toString('latin1');
    if (this.pending.onodes.has(latin)) return this.pending.onodes.get(latin)!;
    const cached = this.cache.get(key);
    if (cached !== undefined) return cached;
    const value = await this.kv.get(key);
    return value ? this.decode(value, id) : null;
  }

  async scanOmapKeys(nid: number, start: Buffer, end: Buffer, limit: number): Promise<Buffer[]> {
    const rows = await this.kv.scan({ gte: omapKey(nid, start), lt: omapKey(nid, end), limit });
    return rows.map(([k]) => Buffer.from(omapUserKey(k)));
  }

  // --- space ---

  /** Counters including acknowledged groups not yet in the KvStore. */
  latestCounters(): StoreCounters {
    return this.pending.counters ?? this.counters;
  }

  /** Segment records including acknowledged groups not yet in the KvStore. */
  latestSegments(): Map<number, SegmentRecord> {
    if (this.pending.segments.size === 0) return this.segments.records;
    return new Map([...this.segments.records, ...this.pending.segments]);
  }

  get segmentBytes(): number {
    let n = 0;
    for (const r of this.latestSegments().values()) n += r.sizeBytes;
    return n;
  }

  space(): { totalBytes: number; usedBytes: number; freeBytes: number; reserveBytes: number } {
    const usedBytes = this.segmentBytes + this.kvBytes;
    const totalBytes = this.spaceOptions.capacityBytes ?? usedBytes + this.fsFreeBytes;
    const reserveBytes = this.spaceOptions.reserveBytes ?? Math.min(1024 ** 3, Math.max(4 * 1024 ** 2, Math.floor(totalBytes * 0.02)));
    const freeBytes = Math.max(0, Math.min(totalBytes - usedBytes, this.fsFreeBytes) - reserveBytes);
    return { totalBytes, usedBytes, freeBytes, reserveBytes };
  }

  /** Throws NoSpace unless bytes more data fit above the reserve. */
  reserveSpace(bytes: number): void {
    const { freeBytes } = this.space();
    if (bytes > freeBytes) {
      throw new TesseraError('NoSpace', `store ${this.dir} is full: ${bytes} bytes to write, ${freeBytes} free above the reserve`);
    }
  }

  async refreshSpace(): Promise<void> {
    const fs = await this.io.fs.statfs(this.dir);
    this.fsFreeBytes = fs.freeBytes;
    this.fsTotalBytes = fs.totalBytes;
    let kvBytes = 0;
    const dbDir = join(this.dir, 'db');
    for (const name of await this.io.fs.readdir(dbDir)) {
      const st = await this.io.fs.stat(join(dbDir, name));
      if (st?.isFile) kvBytes += st.sizeBytes;
    }
    this.kvBytes = kvBytes;
  }

  /** Appended bytes reduce the estimate of free space until the next refresh. */
  noteAppended(bytes: number): void {
    this.fsFreeBytes = Math.max(0, this.fsFreeBytes - bytes);
  }

  mapWriteError(err: unknown): TesseraError {
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    if (code === 'ENOSPC' || (err instanceof Error && /ENOSPC|No space/i.test(err.message))) {
      return new TesseraError('NoSpace', `store ${this.dir}: the disk is full`, { cause: err });
    }
    return toTesseraError(err);
  }

  // --- opening ---

  /**
   * Replays the log after the last checkpoint (log.ts), loads counters and
   * segment records, and removes what a crash left behind: segment files no
   * record names, bytes past a segment's recorded end. Returns the number of
   * log records replayed.
   */
  async recover(): Promise<number> {
    const replayed = await this.replayLog();
    const counters = await this.kv.get(singletonKey('counters'));
    if (counters) this.counters = decodeCounters(counters);
    let after: Buffer | undefined;
    for (;;) {
      const rows = await this.kv.scan({ gt: after ?? Buffer.from([Prefix.segment]), lt: prefixEnd(Prefix.segment), limit: 1024 });
      for (const [k, v] of rows) this.segments.records.set(parseSegmentKey(k), decodeSegment(v));
      if (rows.length < 1024) break;
      after = rows[rows.length - 1]![0];
    }
    for (const name of await this.io.fs.readdir(this.segments.dir)) {
      const id = parseSegmentFileName(name);
      const path = join(this.segments.dir, name);
      if (id === null) {
        if (name.endsWith('.tmp')) await this.io.fs.unlink(path);
        continue;
      }
      const record = this.segments.records.get(id);
      if (!record) {
        // Written by a group commit that never became durable, or retired before the crash.
        await this.io.fs.unlink(path);
        continue;
      }
      const st = await this.io.fs.stat(path);
      if (st && st.sizeBytes > record.sizeBytes) await this.segments.truncateTo(id, record.sizeBytes);
      if (id >= this.counters.nextSegmentId) throw corrupt(`segment ${id} is at or beyond the next segment id ${this.counters.nextSegmentId}`);
    }
    await this.segments.closeAll();
    await this.refreshSpace();
    return replayed;
  }

  /** Applies every valid log record from the checkpoint on, in order; stops at the first gap or torn record. */
  private async replayLog(): Promise<number> {
    const saved = await this.kv.get(singletonKey('checkpoint'));
    if (!saved) return 0;
    let position = decodePosition(saved);
    const ids = (await this.io.fs.readdir(this.segments.dir))
      .map(parseSegmentFileName)
      .filter((id): id is number => id !== null)
      .sort((a, b) => a - b);
    let replayed = 0;
    for (;;) {
      const next = await this.readLogRecord(position);
      if (next) {
        await this.kv.write(next.ops, { sync: false });
        position = { ...position, offset: position.offset + next.lengthBytes, sequence: position.sequence + 1 };
        replayed++;
        continue;
      }
      // The log continues at the start of the next segment, if a record with the expected sequence is there.
      const following = ids.find((id) => id > position.segmentId);
      if (following === undefined) break;
      const candidate = { segmentId: following, offset: 0, sequence: position.sequence };
      if (!(await this.readLogRecord(candidate))) break;
      position = candidate;
    }
    await this.segments.closeAll();
    return replayed;
  }

  private async readLogRecord(p: RecordPosition): Promise<ReadRecord | null> {
    if (!(await this.io.fs.stat(this.segments.path(p.segmentId)))) return null;
    const file = await this.segments.fileForReplay(p.segmentId);
    return readRecord(file, p.offset, p.sequence, await file.sizeBytes());
  }

  async hasPendingPurges(): Promise<boolean> {
    const rows = await this.kv.scan({ gte: Buffer.from([Prefix.purge]), lt: prefixEnd(Prefix.purge), limit: 1 });
    return rows.length > 0;
  }
}

export { omapPrefix, segmentKey };
