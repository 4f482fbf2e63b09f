/**
 * ObjectStore: one disk's objects. The public face of src/store.
 *
 * Reads see committed state only. Writes go through transactions (a list of
 * StoreOps applied atomically) that are durable when their promise resolves:
 * data appended and fdatasync'ed, then one synced metadata batch, shared by
 * every transaction in the same group commit. Buffers passed to transact must
 * not change until it settles (they are written without being copied).
 */
import { join } from 'node:path';
import type { Io } from '../io/io.js';
import { crc32c, crc32cCombine } from '../../native/index.js';
import { assert } from '../lib/assert.js';
import { corrupt, invalid, limitExceeded, notFound, TesseraError } from '../lib/errors.js';
import { objectSortKey } from '../lib/hash.js';
import { Committer, type CommitStats } from './commit.js';
import { defaultStoreLimits, readSuperblock, StoreCore, writeSuperblock, type SpaceOptions, type StoreIdentity, type StoreLimits } from './core.js';
import { overlapping } from './extents.js';
import type { KvStore } from './kv.js';
import { openRocksKv } from './kv-rocksdb.js';
import { objectKey, objectKeyBound, omapKey, omapPrefix, omapUserKey, parseObjectKey, Prefix, singletonKey } from './keys.js';
import { Maintenance, type MaintenanceOptions } from './maintenance.js';
import type { Onode } from './records.js';
import { SegmentFiles } from './segments.js';
import type { ObjectId, ObjectListOptions, ObjectListPage, ObjectStat, OmapListOptions, OmapPage, ReadAhead, ReadOptions, ReadPiece, ReadStreamOptions, StoreApi, StoreReadOptions, StoreOp, StoreSpace } from './types.js';
import { validateTransaction } from './validate.js';

export interface ObjectStoreOptions {
  io: Io;
  /** The store's directory (one per disk). */
  path: string;
  /** Initialize a store here if the directory has none. */
  create?: StoreIdentity;
  /** Refuse to open a store of another cluster or disk. */
  expect?: Partial<StoreIdentity>;
  space?: SpaceOptions;
  limits?: Partial<StoreLimits>;
  maintenance?: Partial<MaintenanceOptions>;
  /** Record cache size (default 64 MiB). */
  cacheBytes?: number;
  /** Opens the metadata engine (default RocksDB in DIR/db). */
  openKv?: (path: string) => Promise<KvStore>;
}

const READ_CONCURRENCY = 8;
const EMPTY = Buffer.alloc(0);
const READ_ATTEMPTS = 5;

export class ObjectStore implements StoreApi {
  private readonly committer: Committer;
  private readonly maintenance: Maintenance;
  private inflightReads = 0;
  /** Log records the last open replayed (a crash left the metadata behind the log). */
  replayedRecords = 0;
  private readsDrained: (() => void) | null = null;

  private constructor(
    private readonly core: StoreCore,
    maintenanceOptions: Partial<MaintenanceOptions>,
  ) {
    this.committer = new Committer(core);
    this.maintenance = new Maintenance(core, this.committer, maintenanceOptions);
  }

  static async open(options: ObjectStoreOptions): Promise<ObjectStore> {
    const { io, path } = options;
    let superblock = await readSuperblock(io, path);
    if (!superblock && !options.create) {
      throw new TesseraError('NotFound', `${path} holds no Tessera store (initialize it first, e.g. tessera disk init)`);
    }
    const identity: StoreIdentity = superblock ? { clusterId: superblock.clusterId, diskId: superblock.diskId } : options.create!;
    if (options.expect?.clusterId !== undefined && options.expect.clusterId !== identity.clusterId) {
      throw new TesseraError('WrongCluster', `${path} belongs to cluster ${identity.clusterId}, not ${options.expect.clusterId}`);
    }
    if (options.expect?.diskId !== undefined && options.expect.diskId !== identity.diskId) {
      throw new TesseraError('WrongCluster', `${path} is disk ${identity.diskId}, not disk ${options.expect.diskId}`);
    }
    await io.fs.mkdir(join(path, 'segments'));
    await io.fs.mkdir(join(path, 'db'));
    const kv = await (options.openKv ?? ((p) => openRocksKv({ path: p })))(join(path, 'db')).catch((err: unknown) => {
      if (err instanceof TesseraError && err.code === 'Locked') {
        throw new TesseraError('Locked', `disk ${path} is in use by another process (another daemon?)`, { cause: err });
      }
      throw err;
    });
    try {
      await ObjectStore.checkIdentity(kv, identity, path);
      if (!superblock) {
        await writeSuperblock(io, path, identity);
        superblock = await readSuperblock(io, path);
      }
      const limits = { ...defaultStoreLimits, ...options.limits };
      const segments = new SegmentFiles(io.fs, join(path, 'segments'), limits.segmentBytesMax);
      const core = new StoreCore(io, path, kv, segments, limits, identity, options.space ?? {}, options.cacheBytes ?? 64 * 1024 * 1024);
      const replayed = await core.recover();
      const store = new ObjectStore(core, options.maintenance ?? {});
      // Durable up to the end of the log: the next crash never replays what this open already did.
      await store.committer.checkpoint();
      store.replayedRecords = replayed;
      store.maintenance.start();
      return store;
    } catch (err) {
      await kv.close().catch(() => undefined);
      throw err;
    }
  }

  /** The metadata database carries the identity too: a superblock copied from elsewhere is caught. */
  private static async checkIdentity(kv: KvStore, identity: StoreIdentity, path: string): Promise<void> {
    const key = singletonKey('identity');
    const stored = await kv.get(key);
    const mine = Buffer.from(JSON.stringify({ clusterId: identity.clusterId, diskId: identity.diskId }));
    if (!stored) {
      await kv.write([{ type: 'put', key, value: mine }], { sync: true });
      return;
    }
    if (!stored.equals(mine)) {
      throw new TesseraError('WrongCluster', `${path}: superblock says ${mine.toString()}, metadata says ${stored.toString()}`);
    }
  }

  get identity(): StoreIdentity {
    return this.core.identity;
  }

  // --- writes ---

  /** Applies ops atomically; resolves once durable. */
  async transact(ops: readonly StoreOp[]): Promise<void> {
    this.core.checkUsable();
    const bytes = validateTransaction(ops, this.core.limits);
    await this.committer.submit(ops, bytes);
  }

  /**
   * Decides a transaction's conditions without applying it: throws the error transact would throw for a
   * failed condition (create exclusive: AlreadyExists; remove, removeXattr, omapRemove*, omapClear,
   * assertExists: NotFound; assertXattr, omapCompare: Conflict), evaluated in order against the
   * acknowledged state with the transaction's own earlier ops, as transact evaluates them. Data ops only
   * create their object here, so a limit their bytes would exceed is not checked (transact checks it).
   * Valid until something else changes the objects: a caller that keeps every other writer of them out
   * until it submits the transaction gets the same outcome from transact (replicated pools' primary,
   * src/daemon/osd-service.ts).
   */
  async check(ops: readonly StoreOp[]): Promise<void> {
    this.core.checkUsable();
    validateTransaction(ops, this.core.limits);
    await this.reading(() => this.committer.check(ops));
  }

  // --- reads ---

  private async reading<T>(fn: () => Promise<T>): Promise<T> {
    this.core.checkUsable();
    this.inflightReads++;
    try {
      return await fn();
    } finally {
      this.inflightReads--;
      if (this.inflightReads === 0 && this.readsDrained) this.readsDrained();
    }
  }

  private async mustLoad(id: ObjectId): Promise<Onode> {
    const onode = await this.core.loadCommitted(id);
    if (!onode) throw notFound(`object ${id.ns}/${id.name} does not exist`);
    return onode;
  }

  /** The record a read reads from, once it met the read's condition (StoreReadOptions.ifXattr: Conflict otherwise). */
  private async loadToRead(id: ObjectId, options: StoreReadOptions): Promise<Onode> {
    const onode = await this.mustLoad(id);
    const want = options.ifXattr;
    if (want !== undefined && !(onode.xattrs.get(want.name)?.equals(want.value) ?? false)) {
      throw new TesseraError('Conflict', `xattr ${want.name} of ${id.ns}/${id.name} does not hold the value the read expects`);
    }
    return onode;
  }

  read(id: ObjectId, options: StoreReadOptions = {}): Promise<Buffer> {
    return this.reading(async () => {
      for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        const data = await this.readOnce(id, await this.loadToRead(id, options), options);
        if (data) return data;
      }
      throw new TesseraError('Busy', `object ${id.ns}/${id.name} kept moving while being read; retry`);
    });
  }

  /** Null when a segment was retired under the read (the caller reloads the record). */
  private async readOnce(id: ObjectId, onode: Onode, options: ReadOptions): Promise<Buffer | null> {
    const offset = options.offsetBytes ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw invalid(`offset ${offset} is not a non-negative integer`);
    const start = Math.min(offset, onode.sizeBytes);
    const end = options.lengthBytes === undefined ? onode.sizeBytes : Math.min(onode.sizeBytes, start + Math.max(0, options.lengthBytes));
    if (end - start > this.core.limits.readBytesMax) throw limitExceeded(`read of ${end - start} bytes, limit ${this.core.limits.readBytesMax}`);
    if (onode.inline) {
      if (crc32c(onode.inline) !== onode.inlineCrc) throw corrupt(`inline data of object ${id.ns}/${id.name} fails its checksum`);
      return Buffer.from(onode.inline.subarray(start, end));
    }
    const out = options.allocate?.(end - start) ?? Buffer.allocUnsafe(end - start);
    assert(out.length === end - start, 'an allocated read buffer has the size asked');
    let covered = start;
    const pieces: Array<() => Promise<boolean>> = [];
    for (const e of overlapping(onode.extents, start, end)) {
      const from = Math.max(start, e.logicalOffset);
      const to = Math.min(end, e.logicalOffset + e.lengthBytes);
      if (from > covered) out.fill(0, covered - start, from - start);
      covered = to;
      const target = out.subarray(from - start, to - start);
      pieces.push(async () => {
        const data = await this.core.segments.readBlob(e.blob, e.blobOffset + (from - e.logicalOffset), to - from, target);
        if (!data) return false;
        if (data !== target) data.copy(target);
        return true;
      });
    }
    if (covered < end) out.fill(0, covered - start);
    let ok = true;
    for (let i = 0; i < pieces.length; i += READ_CONCURRENCY) {
      const results = await Promise.all(pieces.slice(i, i + READ_CONCURRENCY).map((p) => p()));
      ok &&= results.every(Boolean);
    }
    return ok ? out : null;
  }

  /**
   * A range of the object as it is now, as a stream of verified pieces of at
   * most pieceBytes: the bytes of one version even if the object is
   * overwritten or compacted while it is read (its segments stay until the
   * stream ends, or until releaseAfterMs if it is never consumed).
   */
  async readStream(id: ObjectId, options: ReadStreamOptions = {}): Promise<{ lengthBytes: number; chunks: AsyncIterable<ReadPiece> }> {
    return this.reading(async () => {
      for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        const onode = await this.loadToRead(id, options);
        const offset = options.offsetBytes ?? 0;
        const start = Math.min(offset, onode.sizeBytes);
        const end = options.lengthBytes === undefined ? onode.sizeBytes : Math.min(onode.sizeBytes, start + Math.max(0, options.lengthBytes));
        if (onode.inline) {
          const data = await this.readOnce(id, onode, { offsetBytes: start, lengthBytes: end - start });
          return { lengthBytes: end - start, chunks: (async function* () { if (data && data.length > 0) yield { bytes: data, crc32c: crc32c(data) }; })() };
        }
        const release = this.core.segments.pin(overlapping(onode.extents, start, end).map((e) => e.blob.segmentId));
        if (!release) continue; // a segment went while we looked: reload the record
        const allocate = options.allocate ?? ((n: number) => Buffer.allocUnsafe(n));
        return { lengthBytes: end - start, chunks: this.pieces(id, onode, { start, end, pieceBytes: options.pieceBytes ?? 1024 * 1024, allocate, readAhead: options.readAhead, unused: options.unused }, release, options.releaseAfterMs ?? 600_000) };
      }
      throw new TesseraError('Busy', `object ${id.ns}/${id.name} kept moving while being read; retry`);
    });
  }

  /**
   * Pieces of [start, end), each with its crc32c: holes are checksummed as
   * zeros, extents combined from their verified chunk crcs. With readAhead,
   * the pieces after the one asked for are read meanwhile (at most piecesMax
   * at once, while its allocate gives buffers); they are handed out in order,
   * and a failed one fails the stream when its turn comes.
   */
  private async *pieces(
    id: ObjectId,
    onode: Onode,
    range: { start: number; end: number; pieceBytes: number; allocate: (lengthBytes: number) => Buffer; readAhead: ReadAhead | undefined; unused: ((bytes: Buffer) => void) | undefined },
    release: () => void,
    releaseAfterMs: number,
  ): AsyncGenerator<ReadPiece> {
    const { start, end, pieceBytes, allocate, readAhead, unused } = range;
    const timer = this.core.io.clock.setTimeout(release, releaseAfterMs);
    /** Pieces being read, in order: the first is the next one handed out. */
    const window: { out: Buffer; read: Promise<ReadPiece> }[] = [];
    const startRead = (at: number, out: Buffer): void => {
      const read = this.readPiece(id, onode, at, Math.min(end, at + pieceBytes), out);
      read.catch(() => {}); // seen when its turn comes, or dropped in finally
      window.push({ out, read });
    };
    let next = start;
    try {
      while (next < end || window.length > 0) {
        if (window.length === 0) {
          startRead(next, allocate(Math.min(end, next + pieceBytes) - next));
          next += pieceBytes;
        }
        while (readAhead !== undefined && next < end && window.length < readAhead.piecesMax) {
          const out = readAhead.allocate(Math.min(end, next + pieceBytes) - next);
          if (out === null) break;
          startRead(next, out);
          next += pieceBytes;
        }
        const piece = await window[0]!.read;
        window.shift();
        yield piece;
      }
    } finally {
      // Reads still going use the pinned segments and the caller's buffers: wait for them, then give those back.
      for (const { out, read } of window.splice(0)) {
        await read.catch(() => {});
        unused?.(out);
      }
      this.core.io.clock.clearTimeout(timer);
      release();
    }
  }

  /** One piece [at, to) read into out (of that size) and verified, with its crc32c. */
  private async readPiece(id: ObjectId, onode: Onode, at: number, to: number, out: Buffer): Promise<ReadPiece> {
    assert(out.length === to - at, 'an allocated piece has the size asked');
    let covered = at;
    let crc = 0;
    const zeros = (from: number, upTo: number): void => {
      const hole = out.subarray(from - at, upTo - at);
      hole.fill(0);
      crc = crc32c(hole, crc);
    };
    for (const e of overlapping(onode.extents, at, to)) {
      const from = Math.max(at, e.logicalOffset);
      const upTo = Math.min(to, e.logicalOffset + e.lengthBytes);
      if (from > covered) zeros(covered, from);
      const target = out.subarray(from - at, upTo - at);
      const got = await this.core.segments.readBlobWithCrc(e.blob, e.blobOffset + (from - e.logicalOffset), upTo - from, target, true);
      if (!got) throw new TesseraError('Internal', `object ${id.ns}/${id.name}: a pinned segment vanished`);
      if (got.data !== target) got.data.copy(target);
      crc = crc32cCombine(crc, got.crc32c, upTo - from);
      covered = upTo;
    }
    if (covered < to) zeros(covered, to);
    return { bytes: out, crc32c: crc };
  }

  stat(id: ObjectId): Promise<ObjectStat> {
    return this.reading(async () => {
      const o = await this.mustLoad(id);
      return { sizeBytes: o.sizeBytes, mtimeMs: o.mtimeMs, xattrCount: o.xattrs.size };
    });
  }

  /** The value of one xattr; NotFound when the object or the xattr is absent. */
  getXattr(id: ObjectId, name: string): Promise<Buffer> {
    return this.reading(async () => {
      const v = (await this.mustLoad(id)).xattrs.get(name);
      if (!v) throw notFound(`object ${id.ns}/${id.name} has no xattr ${name}`);
      return Buffer.from(v);
    });
  }

  getXattrs(id: ObjectId): Promise<Map<string, Buffer>> {
    return this.reading(async () => new Map([...(await this.mustLoad(id)).xattrs].map(([k, v]) => [k, Buffer.from(v)])));
  }

  omapGet(id: ObjectId, keys: readonly Buffer[]): Promise<Array<Buffer | undefined>> {
    return this.reading(async () => {
      if (keys.length > this.core.limits.listPageEntriesMax) throw limitExceeded(`${keys.length} keys asked, limit ${this.core.limits.listPageEntriesMax}`);
      const o = await this.mustLoad(id);
      if (o.nid === 0) return keys.map(() => undefined);
      const overlay = this.core.pending.omap.get(o.nid);
      const pendingValues = keys.map((k) => overlay?.get(k.toString('latin1')));
      const stored = await this.core.kv.getMany(keys.map((k) => omapKey(o.nid, k)));
      // Pending values were copied before the read: a group committing meanwhile is seen either way.
      return stored.map((v, i) => (pendingValues[i] === undefined ? v : (pendingValues[i] ?? undefined)));
    });
  }

  omapList(id: ObjectId, options: OmapListOptions): Promise<OmapPage> {
    return this.reading(async () => {
      const limit = options.limit;
      if (!Number.isInteger(limit) || limit < 1 || limit > this.core.limits.listPageEntriesMax) {
        throw invalid(`page size ${limit} is not within 1..${this.core.limits.listPageEntriesMax}`);
      }
      const o = await this.mustLoad(id);
      if (o.nid === 0) return { entries: [], more: false };
      const { gte, lt, gt } = omapBounds(o.nid, options);
      if (Buffer.compare(gt ?? gte, lt) >= 0) return { entries: [], more: false };
      const from = (gt ?? gte).toString('latin1');
      const to = lt.toString('latin1');
      const changes = [...(this.core.pending.omap.get(o.nid) ?? [])]
        .map(([k, v]) => [omapKey(o.nid, Buffer.from(k, 'latin1')), v] as const)
        .filter(([k]) => {
          const key = k.toString('latin1');
          return (gt ? key > from : key >= from) && key < to;
        });
      const removed = changes.filter(([, v]) => v === null).length;
      const rows = await this.core.kv.scan({ ...(gt ? { gt } : { gte }), lt, reverse: options.reverse === true, limit: limit + 1 + removed });
      const merged = mergeRows(rows, changes, options.reverse === true, limit + 1 + removed === rows.length);
      const more = merged.rows.length > limit || merged.truncated;
      return { entries: merged.rows.slice(0, limit).map(([k, v]) => [Buffer.from(omapUserKey(k)), v]), more };
    });
  }

  listObjects(options: ObjectListOptions): Promise<ObjectListPage> {
    return this.reading(async () => {
      const { ns, limit } = options;
      if (!Number.isInteger(limit) || limit < 1 || limit > this.core.limits.listPageEntriesMax) {
        throw invalid(`page size ${limit} is not within 1..${this.core.limits.listPageEntriesMax}`);
      }
      const range = options.sortKeyRange ?? { start: 0, end: 0x1_0000_0000 };
      if (!(range.start >= 0 && range.start <= range.end && range.end <= 0x1_0000_0000)) throw invalid('sort key range is not within [0, 2^32]');
      const lower = objectKeyBound(ns, range.start);
      const upper = objectKeyBound(ns, range.end);
      let gt: Buffer | undefined;
      if (options.cursor !== undefined) {
        gt = Buffer.from(options.cursor, 'base64url');
        if (gt.length < 9 || gt[0] !== Prefix.object || gt.readUInt32BE(1) !== ns) throw invalid('list cursor does not belong to this listing');
      }
      const start = gt && Buffer.compare(gt, lower) >= 0 ? gt : lower;
      const changes = [...this.core.pending.onodes]
        .map(([k, v]) => [Buffer.from(k, 'latin1'), v ? EMPTY : null] as const)
        .filter(([k]) => (start === gt ? Buffer.compare(k, start) > 0 : Buffer.compare(k, start) >= 0) && Buffer.compare(k, upper) < 0);
      const removed = changes.filter(([, v]) => v === null).length;
      const scanned = await this.core.kv.scan({ ...(start === gt ? { gt } : { gte: lower }), lt: upper, limit: limit + 1 + removed });
      const merged = mergeRows(scanned, changes, false, scanned.length === limit + 1 + removed);
      const rows = merged.rows;
      const page = rows.slice(0, limit).map(([k]) => {
        const { id, sortKey } = parseObjectKey(k);
        return { name: id.name, sortKey };
      });
      const last = rows[Math.min(limit, rows.length) - 1];
      return (rows.length > limit || merged.truncated) && last ? { objects: page, cursor: last[0].toString('base64url') } : { objects: page };
    });
  }

  space(): StoreSpace {
    const s = this.core.space();
    let deadBytes = 0;
    const segments = this.core.latestSegments();
    for (const r of segments.values()) deadBytes += r.sizeBytes - r.liveBytes;
    const counters = this.core.latestCounters();
    return {
      totalBytes: s.totalBytes,
      usedBytes: s.usedBytes,
      freeBytes: s.freeBytes,
      logicalBytes: counters.logicalBytes,
      objects: counters.objects,
      segments: segments.size,
      deadBytes,
    };
  }

  /** Cumulative group-commit figures (a group is counted when its metadata is written: see whenCommitted). */
  commitStats(): CommitStats {
    return { ...this.committer.stats };
  }

  /**
   * Cumulative figures of the store's data reads from its segment files (every one verifies the chunk
   * checksums it covers): blob reads and the bytes they read, whole chunks (inline data is not counted).
   */
  readStats(): { reads: number; bytes: number } {
    return { ...this.core.segments.readStats };
  }

  /**
   * Resolves once the transactions submitted so far are through both commit stages: a transaction settles at
   * the first (durable in the log), commitStats counts its group at the second.
   */
  whenCommitted(): Promise<void> {
    return this.committer.whenIdle();
  }

  async statfs(): Promise<StoreSpace> {
    this.core.checkUsable();
    return this.space();
  }

  /** Runs compaction and purging until nothing is left to do (tests and admin commands). */
  async runMaintenance(): Promise<{ segmentsCompacted: number; bytesMoved: number }> {
    this.core.checkUsable();
    return this.maintenance.runToCompletion();
  }

  async refreshSpace(): Promise<void> {
    await this.core.refreshSpace();
  }

  /** Refuses new work, finishes queued transactions and reads, stops maintenance, closes files. */
  async close(): Promise<void> {
    if (this.core.closing) return;
    this.core.closing = true;
    await this.maintenance.stop();
    await this.committer.whenIdle();
    if (!this.core.failed) await this.committer.checkpoint();
    if (this.inflightReads > 0) await new Promise<void>((resolve) => (this.readsDrained = resolve));
    await this.core.segments.closeAll();
    await this.core.kv.close();
  }
}

function omapBounds(nid: number, options: OmapListOptions): { gte: Buffer; lt: Buffer; gt?: Buffer } {
  let gte = omapPrefix(nid);
  let lt = omapPrefix(nid + 1);
  const maxBuf = (a: Buffer, b: Buffer): Buffer => (Buffer.compare(a, b) >= 0 ? a : b);
  const minBuf = (a: Buffer, b: Buffer): Buffer => (Buffer.compare(a, b) <= 0 ? a : b);
  if (options.startKey) gte = maxBuf(gte, omapKey(nid, options.startKey));
  if (options.endKey) lt = minBuf(lt, omapKey(nid, options.endKey));
  if (options.prefix) {
    gte = maxBuf(gte, omapKey(nid, options.prefix));
    const end = prefixSuccessor(options.prefix);
    if (end) lt = minBuf(lt, omapKey(nid, end));
  }
  if (options.afterKey) {
    const after = omapKey(nid, options.afterKey);
    if (options.reverse) lt = minBuf(lt, after);
    else if (Buffer.compare(after, gte) >= 0) return { gte, lt, gt: after };
  }
  return { gte, lt };
}

/**
 * Merges the pending changes of a key range into one page of stored rows.
 * When the page was full (scanFull), pending keys beyond its last stored key
 * may belong to later pages: they are left out, and `truncated` says more follows.
 */
function mergeRows(
  rows: Array<[Buffer, Buffer]>,
  changes: ReadonlyArray<readonly [Buffer, Buffer | null]>,
  reverse: boolean,
  scanFull: boolean,
): { rows: Array<[Buffer, Buffer]>; truncated: boolean } {
  if (changes.length === 0) return { rows, truncated: false };
  const byKey = new Map<string, [Buffer, Buffer]>(rows.map((r) => [r[0].toString('latin1'), r]));
  const last = rows[rows.length - 1]?.[0].toString('latin1');
  let truncated = false;
  for (const [k, v] of changes) {
    const key = k.toString('latin1');
    if (scanFull && last !== undefined && (reverse ? key < last : key > last)) {
      truncated = true;
      continue;
    }
    if (v === null) byKey.delete(key);
    else byKey.set(key, [k, v]);
  }
  const merged = [...byKey.values()].sort((a, b) => Buffer.compare(a[0], b[0]));
  if (reverse) merged.reverse();
  return { rows: merged, truncated };
}

/** The smallest key greater than every key with this prefix, or null if none (all 0xff). */
function prefixSuccessor(prefix: Buffer): Buffer | null {
  const out = Buffer.from(prefix);
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i]! < 0xff) {
      out[i]!++;
      return out.subarray(0, i + 1);
    }
  }
  return null;
}

