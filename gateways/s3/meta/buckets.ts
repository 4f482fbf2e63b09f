/**
 * S3 buckets: the omap of metadata object "s3.buckets" maps a bucket name to
 * its record (owner, id, data pool, versioning, ACL, CORS). Creating is a
 * compare-and-set on an absent key, so two creators of one name cannot both
 * win. Bucket names follow S3's rules (3-63 chars, lowercase, digits, dots,
 * hyphens; no IP addresses).
 */
import type { Io } from '../../../src/io/io.js';
import { isTesseraError } from '../../../src/lib/errors.js';
import type { TesseraClient } from '../../../src/client/client.js';
import { s3Error } from '../errors.js';
import { OmapRecords } from './omap-record.js';

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

export class BucketStore {
  private readonly records: OmapRecords<BucketRecord>;

  constructor(
    private readonly io: Io,
    client: TesseraClient,
    pool: string,
  ) {
    this.records = new OmapRecords(client, pool, 's3.buckets');
  }

  get(name: string): Promise<BucketRecord | null> {
    return this.records.get(name);
  }

  /** The bucket, or NoSuchBucket. */
  async require(name: string): Promise<BucketRecord> {
    const b = await this.records.get(name);
    if (!b) throw s3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: name });
    return b;
  }

  async create(o: { name: string; owner: string; dataPool: string; acl?: unknown }): Promise<BucketRecord> {
    checkBucketName(o.name);
    const record: BucketRecord = {
      name: o.name,
      id: this.io.random.bytes(8).toString('hex'),
      owner: o.owner,
      createdMs: this.io.clock.nowMs(),
      dataPool: o.dataPool,
      versioning: 'Unversioned',
      ...(o.acl !== undefined ? { acl: o.acl } : {}),
    };
    try {
      await this.records.compareAndSet(o.name, null, record);
      return record;
    } catch (err) {
      if (!isTesseraError(err, 'Conflict')) throw err;
      const existing = await this.records.get(o.name);
      if (existing?.owner === o.owner) throw s3Error('BucketAlreadyOwnedByYou', 'Your previous request to create the named bucket succeeded and you already own it.', { BucketName: o.name });
      throw s3Error('BucketAlreadyExists', 'The requested bucket name is not available.', { BucketName: o.name });
    }
  }

  update(name: string, edit: (b: BucketRecord) => BucketRecord): Promise<BucketRecord | null> {
    return this.records.update(name, (current) => {
      if (!current) throw s3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: name });
      return edit(current);
    });
  }

  /** Removes the record if it is still the one given (same id). */
  async remove(bucket: BucketRecord): Promise<void> {
    await this.records.update(bucket.name, (current) => (current && current.id === bucket.id ? null : undefined));
  }

  async *list(): AsyncGenerator<BucketRecord> {
    for await (const [, b] of this.records.list()) yield b;
  }
}
