/**
 * The per-disk object store's public types. An object is identified by a
 * namespace number (the daemon's choice: pool and shard) and a UTF-8 name,
 * and holds bytes, xattrs (small named values kept in the object's record)
 * and an omap (a sorted key/value map kept in RocksDB).
 */

export interface ObjectId {
  /** Namespace, an unsigned 32-bit number chosen by the caller (e.g. pool and shard). */
  ns: number;
  name: string;
}

export interface ObjectStat {
  sizeBytes: number;
  mtimeMs: number;
  /** Number of xattrs. */
  xattrCount: number;
}

/** A transaction is a list of these, applied atomically, in order. */
export type StoreOp =
  /** Creates an empty object; with exclusive, fails AlreadyExists if it exists. */
  | { type: 'create'; id: ObjectId; exclusive?: boolean }
  /** Writes data at offsetBytes, extending the object (holes read as zeros). */
  | { type: 'write'; id: ObjectId; offsetBytes: number; data: Buffer }
  /** Replaces the object's bytes (xattrs and omap stay). */
  | { type: 'writeFull'; id: ObjectId; data: Buffer }
  | { type: 'append'; id: ObjectId; data: Buffer }
  /** Shrinks or extends (with zeros) to sizeBytes. */
  | { type: 'truncate'; id: ObjectId; sizeBytes: number }
  /** Turns a range into zeros (a hole); never changes the size. */
  | { type: 'zero'; id: ObjectId; offsetBytes: number; lengthBytes: number }
  /** Removes the object with its xattrs and omap; NotFound if absent (unless ifExists). */
  | { type: 'remove'; id: ObjectId; ifExists?: boolean }
  | { type: 'setXattr'; id: ObjectId; name: string; value: Buffer }
  | { type: 'removeXattr'; id: ObjectId; name: string }
  /** Fails the transaction with Conflict unless the xattr equals value (null: is absent). */
  | { type: 'assertXattr'; id: ObjectId; name: string; value: Buffer | null }
  /** Fails the transaction with NotFound unless the object exists. */
  | { type: 'assertExists'; id: ObjectId }
  | { type: 'omapSet'; id: ObjectId; entries: ReadonlyArray<readonly [key: Buffer, value: Buffer]> }
  /** Fails the transaction with Conflict unless the omap key holds value (null: is absent). */
  | { type: 'omapCompare'; id: ObjectId; key: Buffer; value: Buffer | null }
  | { type: 'omapRemoveKeys'; id: ObjectId; keys: readonly Buffer[] }
  /** Removes omap keys in [startKey, endKey). */
  | { type: 'omapRemoveRange'; id: ObjectId; startKey: Buffer; endKey: Buffer }
  | { type: 'omapClear'; id: ObjectId }
  /**
   * Renames: the object (data, xattrs, omap) becomes `to`, replacing whatever
   * `to` was; NotFound if the object is absent. Metadata only, whatever the size.
   */
  | { type: 'move'; id: ObjectId; to: ObjectId }
  /**
   * Moves a byte range of another object into this one at offsetBytes (this
   * object grows if needed; the range in `from` becomes zeros). Metadata only
   * for data in segments. For two-phase writes: stage, then move into place.
   */
  | { type: 'moveRange'; id: ObjectId; offsetBytes: number; from: ObjectId; fromOffsetBytes: number; lengthBytes: number };

export type StoreOpType = StoreOp['type'];

export interface ReadOptions {
  offsetBytes?: number;
  /** Default: to the end of the object. Reads past the end return fewer bytes. */
  lengthBytes?: number;
  /**
   * Where the bytes land (default Buffer.allocUnsafe; never sent over the
   * wire): called with the length to read, it returns a buffer of exactly
   * that length, e.g. one the caller reuses. read() returns it, or another
   * buffer (inline data, a payload the transport did not put there); a read
   * tried again may call it again.
   */
  allocate?: (lengthBytes: number) => Buffer;
}

/**
 * A store read's options (StoreApi.read, ObjectStore.readStream; not the
 * client's object reads): ReadOptions and a condition on the object.
 */
export interface StoreReadOptions extends ReadOptions {
  /**
   * The read fails Conflict unless the object's xattr `name` equals `value`
   * (an absent xattr does not), checked against the record the bytes are
   * read from: bytes and xattr are one version's. Why: an erasure-coded
   * primary checks each shard's version (`_v`) with the shard read itself,
   * in one rpc per member instead of a read and a getXattrs.
   */
  ifXattr?: { name: string; value: Buffer };
}

/** A piece of a streamed read (ObjectStore.readStream): verified bytes and their crc32c. */
export interface ReadPiece {
  bytes: Buffer;
  /** crc32c of bytes, combined from the chunk checksums they were verified against (no second pass over them). */
  crc32c: number;
}

export interface ReadStreamOptions extends StoreReadOptions {
  /** At most this many bytes per piece (default 1 MiB). */
  pieceBytes?: number;
  /** The pinned segments are released after this long even if the stream is never consumed (default 10 min). */
  releaseAfterMs?: number;
  /** Where each piece's bytes go (default Buffer.allocUnsafe): a caller may hand out buffers it reuses. */
  allocate?: (lengthBytes: number) => Buffer;
  /** Read pieces before they are asked for (default: none; each piece is read when the consumer asks for it). */
  readAhead?: ReadAhead;
  /**
   * A piece's buffer (from allocate or readAhead.allocate) that is never
   * handed out, because its read failed or the stream ended first, is given
   * back here once its read has finished (the stream's end waits for every
   * read it started).
   */
  unused?: (bytes: Buffer) => void;
}

/**
 * Read-ahead of a streamed read: while the consumer has not asked for them,
 * up to piecesMax pieces (the one asked for included) are read at once, each
 * into a buffer from allocate; allocate may refuse (null: the caller's budget
 * is spent), and then the next piece is read only when asked for, into a
 * buffer from ReadStreamOptions.allocate. Pieces are handed out in order.
 */
export interface ReadAhead {
  piecesMax: number;
  allocate: (lengthBytes: number) => Buffer | null;
}

export interface OmapListOptions {
  /** Only keys >= startKey (default: from the first key). */
  startKey?: Buffer;
  /** Only keys < endKey (default: to the last key). */
  endKey?: Buffer;
  /** Continue after this key (exclusive); the cursor of the previous page. */
  afterKey?: Buffer;
  /** Only keys starting with this prefix. */
  prefix?: Buffer;
  /** Page size, at most limits.listPageEntriesMax. */
  limit: number;
  reverse?: boolean;
}

export interface OmapPage {
  entries: Array<[key: Buffer, value: Buffer]>;
  /** True when more keys may follow the last one returned. */
  more: boolean;
}

export interface ObjectListOptions {
  ns: number;
  /** Only objects whose sort key (bit-reversed placement hash) is in [start, end); end may be 2^32. */
  sortKeyRange?: { start: number; end: number };
  /** Opaque cursor from a previous page. */
  cursor?: string;
  limit: number;
}

export interface ObjectListEntry {
  name: string;
  sortKey: number;
}

export interface ObjectListPage {
  objects: ObjectListEntry[];
  /** Present when more objects may follow. */
  cursor?: string;
}

export interface StoreSpace {
  /** Capacity the store may use (configured, or the file system's size). */
  totalBytes: number;
  /** Bytes used by segment files and metadata. */
  usedBytes: number;
  /** Bytes still available for new data (below the reserve, writes fail NoSpace). */
  freeBytes: number;
  /** Sum of object sizes. */
  logicalBytes: number;
  objects: number;
  segments: number;
  /** Segment bytes no object references any more (compaction reclaims them). */
  deadBytes: number;
}

/**
 * What a store offers its users; implemented by ObjectStore (in process) and
 * by the daemon's remote stub (src/protocol/store-client.ts), so one
 * conformance suite runs against both.
 */
export interface StoreApi {
  transact(ops: readonly StoreOp[]): Promise<void>;
  read(id: ObjectId, options?: StoreReadOptions): Promise<Buffer>;
  stat(id: ObjectId): Promise<ObjectStat>;
  /** NotFound when the object or the xattr is absent. */
  getXattr(id: ObjectId, name: string): Promise<Buffer>;
  getXattrs(id: ObjectId): Promise<Map<string, Buffer>>;
  omapGet(id: ObjectId, keys: readonly Buffer[]): Promise<Array<Buffer | undefined>>;
  omapList(id: ObjectId, options: OmapListOptions): Promise<OmapPage>;
  listObjects(options: ObjectListOptions): Promise<ObjectListPage>;
  statfs(): Promise<StoreSpace>;
}
