/**
 * The per-owner index of the bucket registry, so ListBuckets reads only the
 * caller's entries. It lives in the registry's own omap object
 * ("s3.buckets"), next to the records:
 *
 *   `<bucket name>`                    the BucketRecord (buckets.ts)
 *   `~owner/<owner id>/<bucket name>`  {id, createdMs} of that bucket
 *   `~owner-index`                     {version, builtMs}: the index is complete
 *
 * Bucket names start with [a-z0-9], so every index key sorts after every
 * record ('~' is 0x7e): a scan of the records stops at '~'. Create and delete
 * change the record and its owner entry in one transaction of that object:
 * a gateway killed at any point leaves both or neither, so there is no write
 * order to get wrong and nothing for a read to repair.
 *
 * Clusters written before the index have records without entries and no
 * `~owner-index` key: listings scan the records (as before) until
 * buildOwnerIndex has added the missing entries (and removed entries whose
 * bucket is gone or is another's, which only a gateway of the previous
 * version can leave, by deleting or creating a bucket without its entry),
 * then written `~owner-index`. Every gateway runs it at start; every step is
 * a compare-and-set on the record and the entry, so several may run at once.
 */
import { TesseraError, isTesseraError } from '../../../src/lib/errors.js';
import type { ObjectOp } from '../../../src/client/client.js';
import type { OmapRecords } from './omap-record.js';

/** First key after every bucket record: index keys start with it. */
export const INDEX_KEYS_START = '~';
const OWNER_PREFIX = '~owner/';
export const OWNER_INDEX_BUILT = '~owner-index';
/** Attempts to settle one bucket's entry against concurrent changes of its record. */
const SETTLE_ATTEMPTS_MAX = 8;
/** Keys read per omapGet while building (one page of the registry). */
const BUILD_PAGE_KEYS = 1000;

export interface OwnerEntry {
  id: string;
  createdMs: number;
}

/** What the index needs of a bucket record. */
export interface OwnedBucket {
  name: string;
  id: string;
  owner: string;
  createdMs: number;
}

export const ownerPrefix = (owner: string): string => `${OWNER_PREFIX}${owner}/`;
export const ownerKey = (owner: string, name: string): string => `${ownerPrefix(owner)}${name}`;

const key = (k: string): Buffer => Buffer.from(k, 'utf8');

export function ownerEntryBytes(b: OwnedBucket): Buffer {
  const entry: OwnerEntry = { id: b.id, createdMs: b.createdMs };
  return Buffer.from(JSON.stringify(entry));
}

/** Ops that set the owner entry of b (in the record's transaction). */
export function setOwnerEntry(b: OwnedBucket): ObjectOp {
  return { type: 'omapSet', entries: [[key(ownerKey(b.owner, b.name)), ownerEntryBytes(b)]] };
}

export function removeOwnerEntry(b: OwnedBucket): ObjectOp {
  return { type: 'omapRemoveKeys', keys: [key(ownerKey(b.owner, b.name))] };
}

export interface BuildStats {
  records: number;
  entriesAdded: number;
  entriesRemoved: number;
}

/**
 * Makes the owner index match the records, then marks it complete. Safe
 * against concurrent creates, deletes and updates (each fix compares the
 * record's and the entry's bytes) and against other builders.
 */
export async function buildOwnerIndex<T extends OwnedBucket>(registry: OmapRecords<T>, o: { nowMs: number; signal?: AbortSignal }): Promise<BuildStats> {
  const stats: BuildStats = { records: 0, entriesAdded: 0, entriesRemoved: 0 };
  // 1. Every record has its entry.
  let page: Array<[string, T, Buffer]> = [];
  const addMissing = async (): Promise<void> => {
    const entries = await registry.getMany(page.map(([, b]) => ownerKey(b.owner, b.name)));
    for (let i = 0; i < page.length; i++) {
      const [, b, raw] = page[i]!;
      const want = ownerEntryBytes(b);
      if (entries[i]?.equals(want)) continue;
      if (await settle(registry, b.name, { record: raw, entryKey: ownerKey(b.owner, b.name), entry: entries[i] ?? null, next: want })) stats.entriesAdded++;
    }
    page = [];
  };
  for await (const item of registry.list({ endKey: INDEX_KEYS_START })) {
    if (o.signal?.aborted) throw new TesseraError('Aborted', 'owner index build stopped');
    stats.records++;
    page.push(item);
    if (page.length >= BUILD_PAGE_KEYS) await addMissing();
  }
  await addMissing();
  // 2. Every entry names a bucket of its owner with its id.
  let stale: Array<[string, Buffer]> = [];
  const removeStale = async (): Promise<void> => {
    const names = stale.map(([k]) => k.slice(k.indexOf('/', OWNER_PREFIX.length) + 1));
    const records = await registry.getMany(names);
    for (let i = 0; i < stale.length; i++) {
      const [entryKey, entryRaw] = stale[i]!;
      const record = records[i] ? (JSON.parse(records[i]!.toString('utf8')) as OwnedBucket) : null;
      const entry = JSON.parse(entryRaw.toString('utf8')) as OwnerEntry;
      if (record && entryKey === ownerKey(record.owner, record.name) && record.id === entry.id) continue;
      if (await settle(registry, names[i]!, { record: records[i] ?? null, entryKey, entry: entryRaw, next: null })) stats.entriesRemoved++;
    }
    stale = [];
  };
  for await (const [k, , raw] of registry.list({ prefix: OWNER_PREFIX })) {
    if (o.signal?.aborted) throw new TesseraError('Aborted', 'owner index build stopped');
    stale.push([k, raw]);
    if (stale.length >= BUILD_PAGE_KEYS) await removeStale();
  }
  await removeStale();
  await registry.transact([{ type: 'omapSet', entries: [[key(OWNER_INDEX_BUILT), Buffer.from(JSON.stringify({ version: 1, builtMs: o.nowMs }))]] }]);
  return stats;
}

/**
 * Sets (next) or removes (null) one entry if the record and the entry are
 * still the bytes read; on a Conflict reads both again and decides again.
 * Returns whether it changed the entry.
 */
async function settle<T extends OwnedBucket>(
  registry: OmapRecords<T>,
  name: string,
  s: { record: Buffer | null; entryKey: string; entry: Buffer | null; next: Buffer | null },
): Promise<boolean> {
  for (let attempt = 0; attempt < SETTLE_ATTEMPTS_MAX; attempt++) {
    try {
      await registry.transact([
        { type: 'omapCompare', key: key(name), value: s.record },
        { type: 'omapCompare', key: key(s.entryKey), value: s.entry },
        s.next ? { type: 'omapSet', entries: [[key(s.entryKey), s.next]] } : { type: 'omapRemoveKeys', keys: [key(s.entryKey)] },
      ]);
      return true;
    } catch (err) {
      if (!isTesseraError(err, 'Conflict')) throw err;
    }
    const [record, entry] = await registry.getMany([name, s.entryKey]);
    const b = record ? (JSON.parse(record.toString('utf8')) as OwnedBucket) : null;
    const belongs = b !== null && ownerKey(b.owner, b.name) === s.entryKey;
    const want = belongs ? ownerEntryBytes(b) : null;
    if ((want === null && entry === undefined) || (want !== null && entry?.equals(want))) return false; // someone settled it
    s = { record: record ?? null, entryKey: s.entryKey, entry: entry ?? null, next: want };
  }
  throw new TesseraError('Busy', `bucket ${name} kept changing while its owner entry was settled; retry`);
}
