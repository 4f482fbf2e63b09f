/**
 * S3 buckets: the omap of metadata object "s3.buckets" maps a bucket name to
 * its record (owner, id, data pool, versioning, ACL, CORS), and holds the
 * per-owner index (bucket-owners.ts) that every create and delete changes in
 * the record's own transaction. Creating is a compare-and-set on an absent
 * key, so two creators of one name cannot both win. Bucket names follow S3's
 * rules (3-63 chars, lowercase, digits, dots, hyphens; no IP addresses).
 */
import type { Io } from '../../../src/io/io.js';
import { isTesseraError } from '../../../src/lib/errors.js';
import type { TesseraClient } from '../../../src/client/client.js';
import { s3Error } from '../errors.js';
import { assert } from '../../../src/lib/assert.js';
import { OmapRecords } from './omap-record.js';
import { isIndexShardCount } from './bucket-index.js';
import { INDEX_KEYS_START, OWNER_INDEX_BUILT, buildOwnerIndex, ownerKey, ownerPrefix, removeOwnerEntry, setOwnerEntry, type BuildStats, type OwnerEntry } from './bucket-owners.js';

export type Versioning = 'Unversioned' | 'Enabled' | 'Suspended';

export interface BucketRecord {
  name: string;
  /** Unique per creation (a recreated name is a new bucket): names the index and data objects. */
  id: string;
  owner: string;
  createdMs: number;
  /** Pool of the object data (pieces); manifests and the index stay in the metadata pool. */
  dataPool: string;
  versioning: Versioning;
  /**
   * Shard objects of the bucket's index (bucket-index.ts), fixed at creation:
   * the creating gateway's `indexShards`. Absent on records written before
   * the count was per bucket: those have 8 (indexShardsOf). Never changed
   * (no resharding).
   */
  indexShards?: number;
  /** Access control list (gateways/s3/acl.ts); absent: private to the owner. */
  acl?: unknown;
  /** CORS rules (gateways/s3/cors.ts); absent: none. */
  cors?: unknown;
}

export function checkBucketName(name: string): void {
  const ok =
    name.length >= 3 &&
    name.length <= 63 &&
    /^[a-z0-9][a-z0-9.-]*[a-z0-9]$/.test(name) &&
    !name.includes('..') &&
    !name.includes('.-') &&
    !name.includes('-.') &&
    !/^\d+\.\d+\.\d+\.\d+$/.test(name) &&
    !name.startsWith('xn--') &&
    !name.endsWith('-s3alias');
  if (!ok) throw s3Error('InvalidBucketName', 'The specified bucket is not valid.', { BucketName: name });
}

/** Bucket records the read cache holds at most (cleared whole beyond). */
const BUCKET_CACHE_ENTRIES_MAX = 10_000;

export class BucketStore {
  private readonly records: OmapRecords<BucketRecord>;
  /** The owner index's entries, in the same object (bucket-owners.ts). */
  private readonly owners: OmapRecords<OwnerEntry>;
  /**
   * Records read for object reads (requireForRead), kept at most cacheMs. This
   * process's own changes drop them; another gateway's show within cacheMs.
   */
  private readonly cache = new Map<string, { record: BucketRecord; atMs: number }>();
  /** Bumped by every change this process makes: a read that started before one does not fill the cache. */
  private changes = 0;
  /** The owner index was seen complete (`~owner-index`; never removed once written). */
  private ownerIndexBuilt = false;

  constructor(
    private readonly io: Io,
    client: TesseraClient,
    pool: string,
    /** Staleness bound of requireForRead, ms (0: no cache). */
    private readonly cacheMs = 1000,
  ) {
    this.records = new OmapRecords(client, pool, 's3.buckets');
    this.owners = new OmapRecords(client, pool, 's3.buckets');
  }

  get(name: string): Promise<BucketRecord | null> {
    return this.records.get(name);
  }

  /**
   * The bucket for a request that only reads objects (GET, HEAD): a record at
   * most cacheMs old, or NoSuchBucket. Writes and configuration use require()
   * (read from the cluster every time). Docs: docs/s3-api.md, "Consistency".
   */
  async requireForRead(name: string): Promise<BucketRecord> {
    const now = this.io.clock.monotonicMs();
    const hit = this.cache.get(name);
    if (hit && now - hit.atMs < this.cacheMs) return hit.record;
    const changes = this.changes;
    const record = await this.require(name);
    if (this.cacheMs > 0 && changes === this.changes) {
      if (this.cache.size >= BUCKET_CACHE_ENTRIES_MAX) this.cache.clear();
      this.cache.set(name, { record, atMs: now });
    }
    return record;
  }

  private changed(name: string): void {
    this.changes++;
    this.cache.delete(name);
  }

  /** The bucket, or NoSuchBucket. */
  async require(name: string): Promise<BucketRecord> {
    const b = await this.records.get(name);
    if (!b) throw s3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: name });
    return b;
  }

  async create(o: { name: string; owner: string; dataPool: string; indexShards: number; acl?: unknown }): Promise<BucketRecord> {
    checkBucketName(o.name);
    assert(isIndexShardCount(o.indexShards), `index shard count ${o.indexShards} out of range (checked at gateway start)`);
    const record: BucketRecord = {
      name: o.name,
      id: this.io.random.bytes(8).toString('hex'),
      owner: o.owner,
      createdMs: this.io.clock.nowMs(),
      dataPool: o.dataPool,
      versioning: 'Unversioned',
      indexShards: o.indexShards,
      ...(o.acl !== undefined ? { acl: o.acl } : {}),
    };
    try {
      this.changed(o.name);
      await this.records.compareAndSet(o.name, null, record, [setOwnerEntry(record)]);
      return record;
    } catch (err) {
      if (!isTesseraError(err, 'Conflict')) throw err;
      const existing = await this.records.get(o.name);
      if (existing?.owner === o.owner) throw s3Error('BucketAlreadyOwnedByYou', 'Your previous request to create the named bucket succeeded and you already own it.', { BucketName: o.name });
      throw s3Error('BucketAlreadyExists', 'The requested bucket name is not available.', { BucketName: o.name });
    }
  }

  async update(name: string, edit: (b: BucketRecord) => BucketRecord): Promise<BucketRecord | null> {
    // Dropped before and after: a read racing the change neither keeps the old record nor caches it afterwards.
    this.changed(name);
    try {
      return await this.records.update(
        name,
        (current) => {
          if (!current) throw s3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: name });
          const next = edit(current);
          assert(next.name === current.name && next.id === current.id && next.owner === current.owner && next.createdMs === current.createdMs && next.indexShards === current.indexShards, 'a bucket update keeps name, id, owner, creation time and index shard count');
          return next;
        },
        // The same entry again: a bucket created before the index gets its entry with any change.
        (_current, next) => (next ? [setOwnerEntry(next)] : []),
      );
    } finally {
      this.changed(name);
    }
  }

  /** Removes the record if it is still the one given (same id). */
  async remove(bucket: BucketRecord): Promise<void> {
    this.changed(bucket.name);
    try {
      await this.records.update(
        bucket.name,
        (current) => (current && current.id === bucket.id ? null : undefined),
        (current) => (current ? [removeOwnerEntry(current)] : []),
      );
    } finally {
      this.changed(bucket.name);
    }
  }

  /** Every bucket (of every owner) in name order: those starting with prefix, after afterKey. */
  async *list(options: { prefix?: string; afterKey?: string } = {}): AsyncGenerator<BucketRecord> {
    for await (const [, b] of this.records.list({ ...options, endKey: INDEX_KEYS_START })) yield b;
  }

  /**
   * One owner's buckets in name order (those starting with prefix, after
   * afterName): from the owner index, which reads only that owner's entries;
   * before the index of a cluster written by an older version is built, from
   * every record (bucket-owners.ts). pageEntries: entries per read.
   */
  async *listOwned(owner: string, options: { prefix?: string; afterName?: string; pageEntries?: number } = {}): AsyncGenerator<{ name: string; createdMs: number }> {
    if (!(await this.isOwnerIndexBuilt())) {
      for await (const b of this.list({ ...(options.prefix ? { prefix: options.prefix } : {}), ...(options.afterName !== undefined ? { afterKey: options.afterName } : {}) })) {
        if (b.owner === owner) yield { name: b.name, createdMs: b.createdMs };
      }
      return;
    }
    const start = ownerPrefix(owner);
    const scan = this.owners.list({
      prefix: start + (options.prefix ?? ''),
      ...(options.afterName !== undefined ? { afterKey: ownerKey(owner, options.afterName) } : {}),
      ...(options.pageEntries !== undefined ? { pageEntries: options.pageEntries } : {}),
    });
    for await (const [k, entry] of scan) yield { name: k.slice(start.length), createdMs: entry.createdMs };
  }

  async isOwnerIndexBuilt(): Promise<boolean> {
    if (!this.ownerIndexBuilt) this.ownerIndexBuilt = (await this.records.getMany([OWNER_INDEX_BUILT]))[0] !== undefined;
    return this.ownerIndexBuilt;
  }

  /** Adds the owner entries a cluster written by an older version lacks, removes stale ones, marks the index complete. */
  async buildOwnerIndex(signal?: AbortSignal): Promise<BuildStats> {
    const stats = await buildOwnerIndex(this.records, { nowMs: this.io.clock.nowMs(), ...(signal ? { signal } : {}) });
    this.ownerIndexBuilt = true;
    return stats;
  }
}
