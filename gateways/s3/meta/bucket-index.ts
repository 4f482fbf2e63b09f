/**
 * A bucket's index: key -> entry, sharded over `shards` omap objects in the
 * metadata pool ("s3.index.<bucketId>.<n>", n = hash(key) mod shards), so
 * writes to one bucket spread over placement groups. The shard count is the
 * bucket's own, fixed at its creation and kept in its record (`indexShards`;
 * records written before the field mean LEGACY_INDEX_SHARDS, 8): every
 * reader and writer of a bucket's index builds it from the record, never
 * from the gateway's setting, which only applies to buckets created later. Every change is a
 * compare-and-set on the entry's exact bytes: concurrent writers of a key
 * serialize, and each knows exactly which entry it replaced (and so which
 * data to collect). Omap keys are the UTF-8 key bytes with a one-byte kind
 * prefix ('c': the current entry), so listing order is S3's (byte order);
 * a listing merges the shards in order (meta/index-scan.ts). Versioned buckets also keep each
 * key's versions ('v') and its null-version pointer ('n') in the key's
 * shard object, next to its current entry (meta/versions.ts).
 */
import type { ObjectOp, TesseraClient } from '../../../src/client/client.js';
import { isTesseraError } from '../../../src/lib/errors.js';
import { murmur3 } from '../../../src/lib/hash.js';
import { assert } from '../../../src/lib/assert.js';
import { limits } from '../../../src/lib/limits.js';
import { forEachBounded } from '../../../src/client/striper-context.js';
import { RECORD_UPDATE_ATTEMPTS_MAX } from './omap-record.js';
import { s3Error } from '../errors.js';
import { checkPending, journalOps, type PendingWrite } from './journal.js';
import { IndexScan } from './index-scan.js';

export interface IndexEntry {
  sizeBytes: number;
  etag: string;
  mtimeMs: number;
  /** The striped object holding the data; null for a delete marker or an inline object. */
  data: string | null;
  /**
   * Where the generation of `data` that this entry was committed with keeps its bytes (the striper's put result, less
   * the size: sizeBytes): a GET reads its pieces by it, without the manifest's round trip. Absent on entries written
   * before it existed and on multipart objects (their parts' data objects carry none).
   */
  dataRef?: { generation: string; pieceBytes: number; piecesPool: string | null };
  /**
   * Small objects (at most INLINE_OBJECT_BYTES_MAX): the bytes themselves, base64, with `data: null`.
   * One compare-and-set stores data and entry; a GET reads only the entry; a replaced inline entry leaves nothing to delete.
   */
  inline?: string;
  /**
   * Multipart objects: the parts' striped objects, in order (the object is their concatenation).
   * Empty when the list is in a part table (partTable): read it through meta/part-table.ts segmentsOf.
   */
  parts?: Array<{ data: string; sizeBytes: number; etag: string; checksums?: Record<string, string> }>;
  /** Multipart objects with long part lists: the striped object listing them (meta/part-table.ts). */
  partTable?: { data: string; count: number };
  /** Multipart objects: the upload that made it (a retried complete recognises its own object). */
  uploadId?: string;
  /** Multipart objects: how `checksums` was made (COMPOSITE: from the parts' checksums, "-N"; FULL_OBJECT). */
  checksumType?: 'COMPOSITE' | 'FULL_OBJECT';
  /** The version's id (32 hex digits, or "null"); absent for objects written while the bucket was unversioned. */
  versionId?: string;
  /** The version's place in the key's version list (meta/versions.ts); present iff the entry is in that list. */
  versionStamp?: string;
  owner: string;
  contentType?: string;
  /** Content-Encoding, Content-Disposition, Content-Language, Cache-Control, Expires. */
  headers?: Record<string, string>;
  /** x-amz-meta-* (lowercase names without the prefix). */
  meta?: Record<string, string>;
  /** x-amz-checksum-* values (base64), by algorithm. */
  checksums?: Record<string, string>;
  acl?: unknown;
}

/** What a bucket record without `indexShards` means: every bucket had 8 shards before the count was per bucket. Never change it. */
export const LEGACY_INDEX_SHARDS = 8;

/** The bucket's shard count, from its record. */
export function indexShardsOf(bucket: { indexShards?: number }): number {
  return bucket.indexShards ?? LEGACY_INDEX_SHARDS;
}

/** Whether n is an allowed shard count (limits.s3IndexShardsMin..Max, an integer). */
export function isIndexShardCount(n: number): boolean {
  return Number.isSafeInteger(n) && n >= limits.s3IndexShardsMin && n <= limits.s3IndexShardsMax;
}

/**
 * Objects up to this size live in their index entry (`inline`). Bounded by the
 * omap value limit (64 KiB: base64 makes 4 KiB into 5.5 KiB, plus at most
 * 2 KiB of user metadata and an ACL) and by listings, which read whole
 * entries (a page of 1000 keys reads up to limits.s3IndexListEntriesMax, 8192,
 * entries across the shards: 8008 from 8).
 */
export const INLINE_OBJECT_BYTES_MAX = 4096;
const CURRENT = 0x63; // 'c'

export class BucketIndex {
  private readonly bucketId: string;
  /** The bucket's shard count (its record's `indexShards`, or 8). */
  readonly shards: number;

  /** The index of this bucket: its id and shard count come from its record. */
  constructor(
    readonly client: TesseraClient,
    readonly pool: string,
    bucket: { id: string; indexShards?: number },
  ) {
    this.bucketId = bucket.id;
    this.shards = indexShardsOf(bucket);
    // Checked when the record was made (BucketStore.create); a record that breaks it was not written by us.
    assert(isIndexShardCount(this.shards), `bucket ${bucket.id}: index shard count ${this.shards} out of range`);
  }

  /** The shard object holding the key's entries (current, and versions). */
  shardObject(key: string): string {
    return this.shardObjectAt(murmur3(Buffer.from(key, 'utf8')) % this.shards);
  }

  shardObjectAt(n: number): string {
    return `s3.index.${this.bucketId}.${n}`;
  }

  private omapKey(key: string): Buffer {
    return Buffer.concat([Buffer.from([CURRENT]), Buffer.from(key, 'utf8')]);
  }

  async getRaw(key: string): Promise<{ entry: IndexEntry; raw: Buffer } | null> {
    let raw: Buffer | undefined;
    try {
      [raw] = await this.client.omapGet(this.pool, this.shardObject(key), [this.omapKey(key)]);
    } catch (err) {
      if (isTesseraError(err, 'NotFound')) return null;
      throw err;
    }
    return raw ? { entry: JSON.parse(raw.toString('utf8')) as IndexEntry, raw } : null;
  }

  async get(key: string): Promise<IndexEntry | null> {
    return (await this.getRaw(key))?.entry ?? null;
  }

  /** Replaces the entry if it is still `expected` (null: absent); Conflict otherwise. `extra` joins the transaction (journal records). */
  async compareAndSet(key: string, expected: Buffer | null, next: IndexEntry | Buffer | null, extra: ObjectOp[] = []): Promise<void> {
    const k = this.omapKey(key);
    // `next` may come serialized already (swap keeps the bytes to recognise its own commit): not made twice.
    const nextRaw = next === null || Buffer.isBuffer(next) ? next : Buffer.from(JSON.stringify(next));
    await this.client.transact(this.pool, this.shardObject(key), [
      { type: 'create' },
      { type: 'omapCompare', key: k, value: expected },
      ...extra,
      nextRaw === null ? { type: 'omapRemoveKeys', keys: [k] } : { type: 'omapSet', entries: [[k, nextRaw]] },
    ]);
  }

  /**
   * Sets the key's entry (null: removes it), retrying on concurrent changes;
   * returns the entry it replaced. decide() may refuse (throw) given the current entry.
   * For unversioned keys only: a versioned key (its entry has a versionStamp)
   * changes through meta/versions.ts (ops/versions.ts commitEntry, deleteKey).
   * Journal (meta/journal.ts): the commit removes the pending write's record
   * (and fails RequestTimeout if a sweep took it), and records the replaced
   * entry's data as to be freed, in the same transaction.
   */
  async swap(key: string, next: IndexEntry | null, decide?: (current: IndexEntry | null) => void, journal?: { pending?: PendingWrite | null; nowMs: number }): Promise<IndexEntry | null> {
    const pending = journal?.pending ?? null;
    const nowMs = journal?.nowMs ?? 0;
    const nextRaw = next === null ? null : Buffer.from(JSON.stringify(next));
    // A new key (the common case of a PUT) needs no read: a compare-and-set on "absent" commits it, or fails
    // Conflict when the key has an entry, and then the read-decide-commit loop below takes over. Only when the
    // condition accepts "no object" (If-Match refuses it: that needs the read for its NoSuchKey).
    let read: { entry: IndexEntry; raw: Buffer } | null | undefined;
    if (next !== null && acceptsAbsent(decide)) {
      try {
        await this.compareAndSet(key, null, nextRaw, journalOps(pending, [], key, nowMs));
        return null;
      } catch (err) {
        if (!isTesseraError(err, 'Conflict')) throw err;
        read = await this.getRaw(key);
        // Our own blind commit, applied by an earlier attempt the cluster answered ambiguously: it replaced nothing.
        if (read?.raw.equals(nextRaw!)) return null;
        await checkPending(this, pending);
      }
    }
    for (let attempt = 0; attempt < RECORD_UPDATE_ATTEMPTS_MAX; attempt++) {
      // The read made after a refused blind commit serves as the first attempt's.
      const current = read !== undefined ? read : await this.getRaw(key);
      read = undefined;
      decide?.(current?.entry ?? null);
      // Replacing it here would drop a version the version list still names (and remove its data).
      if (current?.entry.versionStamp) throw new Error(`bucket index: swap on versioned key ${JSON.stringify(key)}; commit through ops/versions.ts`);
      if (!current && next === null) return null;
      try {
        await this.compareAndSet(key, current?.raw ?? null, nextRaw, journalOps(pending, [current?.entry], key, nowMs));
        return current?.entry ?? null;
      } catch (err) {
        if (!isTesseraError(err, 'Conflict')) throw err;
        // Our own change, applied by an earlier attempt of the same request (the
        // cluster answered it ambiguously): the entry names this PUT's unique data,
        // so nobody else wrote these bytes. Treating it as someone else's would
        // delete the data just written as "replaced".
        if (nextRaw !== null && (await this.getRaw(key))?.raw.equals(nextRaw)) return current?.entry ?? null;
        await checkPending(this, pending);
      }
    }
    throw s3Error('SlowDown', 'Please reduce your request rate.');
  }

  /**
   * The current entries with keys starting with `prefix` and > `after`, in
   * byte order: a merge of the shards (meta/index-scan.ts) that keeps each
   * shard's page and skips common prefixes inside it. Each shard is read at
   * most limits.s3IndexListEntriesMax / shards entries at a time (at least
   * one, at most pageEntriesMax), at most limits.s3IndexShardCallsInflightMax
   * shards at once: a bucket of many shards reads in smaller pages, never
   * more memory.
   */
  scan(o: { prefix: string; after?: string; pageEntriesMax: number }): CurrentScan {
    const pageEntries = Math.max(1, Math.min(o.pageEntriesMax, Math.floor(limits.s3IndexListEntriesMax / this.shards)));
    const shards = Array.from({ length: this.shards }, (_, n) => this.shardObjectAt(n));
    // A marker equal to the prefix is a key too (a 'dir/' object under prefix 'dir/'): listed after it, not again.
    // (One before the prefix starts nothing: the store lists from the prefix.)
    return new CurrentScan(new IndexScan(this.client, this.pool, shards, this.omapKey(o.prefix), o.after === undefined ? undefined : this.omapKey(o.after), pageEntries));
  }

  async isEmpty(): Promise<boolean> {
    return (await this.scan({ prefix: '', pageEntriesMax: 1 }).next()) === null;
  }

  /** Removes the index objects, all of the bucket's shards (the bucket is being deleted and is empty). */
  async destroy(): Promise<void> {
    await forEachBounded(this.shards, limits.s3IndexShardCallsInflightMax, async (n) => {
      await this.client.transact(this.pool, this.shardObjectAt(n), [{ type: 'remove', ifExists: true }]);
    });
  }
}

/** Whether a commit condition lets a write go ahead on a key with no entry (it throws to refuse). */
function acceptsAbsent(decide: ((current: IndexEntry | null) => void) | undefined): boolean {
  if (!decide) return true;
  try {
    decide(null);
    return true;
  } catch {
    return false;
  }
}

/**
 * The current entries of a listing in key order (BucketIndex.scan): entries
 * are parsed only when taken, so the ones a skipped common prefix hides in a
 * shard's page are never parsed.
 */
export class CurrentScan {
  constructor(private readonly scan: IndexScan) {}

  async next(): Promise<[string, IndexEntry] | null> {
    const e = await this.scan.next();
    return e ? [e[0].subarray(1).toString('utf8'), JSON.parse(e[1].toString('utf8')) as IndexEntry] : null;
  }

  /** Skips every key that starts with `prefix` (a common prefix, reported or resumed past). */
  skipPrefix(prefix: string): void {
    this.scan.seek(Buffer.concat([Buffer.from([CURRENT]), Buffer.from(prefix, 'utf8'), Buffer.from([0xff])]));
  }
}
