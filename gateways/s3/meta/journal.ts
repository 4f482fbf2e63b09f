/**
 * The write journal of a bucket index: intent records that name data objects
 * a gateway killed at the wrong moment (kill -9) would otherwise leave with
 * nothing pointing at them. They live in the key's index shard object, next
 * to its entries, so the commits that make or drop a reference change them in
 * the same transaction:
 *
 *   'j' + dataName -> { kind: 'new', key, createdMs }
 *       written BEFORE a PUT / copy / POST writes the data object dataName;
 *       removed by the commit that makes the key's entry name it (the commit
 *       compares the record's exact bytes, so a sweep that has doomed it
 *       makes the commit fail instead of naming data being removed);
 *   'j' + ownerName -> { kind: 'replaced', key, createdMs, refs }
 *       written BY the transaction that drops an entry owning data from the
 *       index (overwrite, delete, a version removed); removed once its data
 *       objects are (refs names them: a data object, parts, a part table).
 *
 * A sweep (sweepJournal: at gateway start, then periodically) frees what
 * records older than a grace period name: a 'new' record's data unless an
 * entry of its key names it (then the record alone goes), a 'replaced'
 * record's data always (nothing names it: the same transaction dropped the
 * entry). A 'new' record is first marked doomed (compare-and-set), then its
 * data removed, then the record: a writer slower than the grace fails
 * (RequestTimeout) rather than commit a reference to removed data. Removals
 * are idempotent (NotFound is success), so a sweep that dies is redone.
 * Acknowledged objects are never touched: their entries name their data,
 * and no record names the data of an entry in the index.
 */
import type { ObjectOp, TesseraClient } from '../../../src/client/client.js';
import type { Striper, StripedPool } from '../../../src/client/striper.js';
import { isTesseraError } from '../../../src/lib/errors.js';
import { s3Error } from '../errors.js';
import type { BucketIndex, IndexEntry } from './bucket-index.js';
import type { BucketRecord, BucketStore } from './buckets.js';
import { dataNamesOf } from './part-table.js';

const JOURNAL = 0x6a; // 'j'
const CURRENT = 0x63; // 'c'
const VERSION = 0x76; // 'v'
/** Records a sweep reads from one shard at a time. */
const SWEEP_PAGE_RECORDS = 256;

/** What a 'replaced' record keeps of the dropped entry: enough to find its data objects. */
type DataRefs = Pick<IndexEntry, 'sizeBytes' | 'etag' | 'data' | 'parts' | 'partTable'>;

export interface JournalRecord {
  kind: 'new' | 'replaced';
  key: string;
  createdMs: number;
  refs?: DataRefs;
  /** A sweep is removing the data: a commit that still expects the record fails. */
  doomed?: true;
}

const journalKey = (name: string): Buffer => Buffer.concat([Buffer.from([JOURNAL]), Buffer.from(name, 'utf8')]);
const encode = (r: JournalRecord): Buffer => Buffer.from(JSON.stringify(r));

/** The data name a 'replaced' record is keyed by (unique to the entry's write), or null if it owns no data (inline, delete marker). */
export function ownerName(entry: IndexEntry): string | null {
  return entry.data ?? entry.partTable?.data ?? entry.parts?.[0]?.data ?? null;
}

/** A write in progress: its 'new' record as stored (the commit compares these bytes). */
export interface PendingWrite {
  key: string;
  dataName: string;
  record: Buffer;
}

/** Journals a data object about to be written for `key` (before any byte of it is stored). */
export async function beginWrite(index: BucketIndex, key: string, dataName: string, nowMs: number): Promise<PendingWrite> {
  const record = encode({ kind: 'new', key, createdMs: nowMs });
  await index.client.transact(index.pool, index.shardObject(key), [{ type: 'create' }, { type: 'omapSet', entries: [[journalKey(dataName), record]] }]);
  return { key, dataName, record };
}

/**
 * What a commit adds to its transaction: the pending write's record checked
 * and removed, a 'replaced' record for each dropped entry that owns data.
 */
export function journalOps(pending: PendingWrite | null | undefined, dropped: ReadonlyArray<IndexEntry | null | undefined>, key: string, nowMs: number): ObjectOp[] {
  const ops: ObjectOp[] = [];
  if (pending) {
    const k = journalKey(pending.dataName);
    ops.push({ type: 'omapCompare', key: k, value: pending.record }, { type: 'omapRemoveKeys', keys: [k] });
  }
  const sets: Array<[Buffer, Buffer]> = [];
  for (const e of dropped) {
    const name = e ? ownerName(e) : null;
    if (!e || name === null) continue;
    const refs: DataRefs = { sizeBytes: e.sizeBytes, etag: e.etag, data: e.data, ...(e.parts ? { parts: e.parts.map((p) => ({ data: p.data, sizeBytes: p.sizeBytes, etag: p.etag })) } : {}), ...(e.partTable ? { partTable: e.partTable } : {}) };
    sets.push([journalKey(name), encode({ kind: 'replaced', key, createdMs: nowMs, refs })]);
  }
  if (sets.length > 0) ops.push({ type: 'omapSet', entries: sets });
  return ops;
}

async function readRecord(index: BucketIndex, key: string, name: string): Promise<Buffer | null> {
  try {
    return (await index.client.omapGet(index.pool, index.shardObject(key), [journalKey(name)]))[0] ?? null;
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return null;
    throw err;
  }
}

/** After a refused commit: fails the write if a sweep took its record (the write outlived the grace period). */
export async function checkPending(index: BucketIndex, pending: PendingWrite | null | undefined): Promise<void> {
  if (!pending) return;
  const raw = await readRecord(index, pending.key, pending.dataName);
  if (!raw?.equals(pending.record)) throw s3Error('RequestTimeout', 'The write took longer than the gateway allows and was abandoned; its data is being removed. Retry it.');
}

/** Drops a record whose data is gone (or was never written); a no-op if it changed meanwhile. */
async function dropRecord(client: TesseraClient, pool: string, shard: string, name: string, expected: Buffer | null): Promise<void> {
  const k = journalKey(name);
  try {
    await client.transact(pool, shard, expected === null ? [{ type: 'omapRemoveKeys', keys: [k] }] : [{ type: 'omapCompare', key: k, value: expected }, { type: 'omapRemoveKeys', keys: [k] }]);
  } catch (err) {
    if (!isTesseraError(err, 'Conflict') && !isTesseraError(err, 'NotFound')) throw err;
  }
}

/** A failed write removed its data: its record goes too (a sweep would, later). */
export async function abandonWrite(index: BucketIndex, pending: PendingWrite | null | undefined): Promise<void> {
  if (pending) await dropRecord(index.client, index.pool, index.shardObject(pending.key), pending.dataName, pending.record).catch(() => undefined);
}

/** The data of a dropped entry is removed: its 'replaced' record goes (a sweep would, later). */
export async function releaseReplaced(index: BucketIndex, key: string, entry: IndexEntry | null): Promise<void> {
  const name = entry ? ownerName(entry) : null;
  if (name !== null) await dropRecord(index.client, index.pool, index.shardObject(key), name, null).catch(() => undefined);
}

export interface SweepStats {
  recordsExamined: number;
  recordsYoung: number;
  /** Data objects (or an entry's set of them) removed. */
  dataFreed: number;
  /** 'new' records whose data an entry names (committed; only the record went). */
  recordsReleased: number;
  failures: number;
}

export interface SweepOptions {
  client: TesseraClient;
  striper: Striper;
  metaPool: string;
  buckets: BucketStore;
  /** The index of a bucket (its shard objects, as many as its record says). */
  indexOf: (bucket: BucketRecord) => BucketIndex;
  nowMs: () => number;
  /** Records younger than this are left alone (writes in flight). */
  graceMs: number;
  /** Only this bucket (DeleteBucket sweeps the one it deletes). */
  bucketName?: string;
  signal?: AbortSignal;
  onError?: (err: unknown) => void;
}

/** Whether an entry of key (current, or one of its versions) names dataName. */
async function isReferenced(index: BucketIndex, shard: string, key: string, dataName: string): Promise<boolean> {
  const utf8 = Buffer.from(key, 'utf8');
  const names = (raw: Buffer | undefined): boolean => raw !== undefined && ownerName(JSON.parse(raw.toString('utf8')) as IndexEntry) === dataName;
  try {
    const [current] = await index.client.omapGet(index.pool, shard, [Buffer.concat([Buffer.from([CURRENT]), utf8])]);
    if (names(current)) return true;
    const prefix = Buffer.concat([Buffer.from([VERSION]), utf8, Buffer.from([0])]);
    let after: Buffer | undefined;
    for (;;) {
      const page = await index.client.omapList(index.pool, shard, { prefix, limit: SWEEP_PAGE_RECORDS, ...(after ? { afterKey: after } : {}) });
      if (page.entries.some(([, v]) => names(v))) return true;
      if (!page.more || page.entries.length === 0) return false;
      after = page.entries[page.entries.length - 1]![0];
    }
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return false;
    throw err;
  }
}

/** Settles one record older than the grace period (see the module comment). */
async function settle(o: SweepOptions, index: BucketIndex, pools: StripedPool, shard: string, name: string, raw: Buffer, stats: SweepStats): Promise<void> {
  const record = JSON.parse(raw.toString('utf8')) as JournalRecord;
  if (record.kind === 'replaced') {
    for (const data of await dataNamesOf(o.striper, pools, { ...record.refs!, mtimeMs: 0, owner: '' })) await removeQuietly(o.striper, pools, data);
    await dropRecord(o.client, o.metaPool, shard, name, raw);
    stats.dataFreed++;
    return;
  }
  let doomed = raw;
  if (!record.doomed) {
    if (await isReferenced(index, shard, record.key, name)) {
      await dropRecord(o.client, o.metaPool, shard, name, raw);
      stats.recordsReleased++;
      return;
    }
    doomed = encode({ ...record, doomed: true });
    try {
      await o.client.transact(o.metaPool, shard, [{ type: 'omapCompare', key: journalKey(name), value: raw }, { type: 'omapSet', entries: [[journalKey(name), doomed]] }]);
    } catch (err) {
      if (isTesseraError(err, 'Conflict')) return; // committed (or settled by another sweep) just now
      throw err;
    }
  }
  await removeQuietly(o.striper, pools, name);
  await dropRecord(o.client, o.metaPool, shard, name, doomed);
  stats.dataFreed++;
}

async function removeQuietly(striper: Striper, pools: StripedPool, name: string): Promise<void> {
  try {
    await striper.remove(pools, name);
  } catch (err) {
    if (!isTesseraError(err, 'NotFound')) throw err;
  }
}

/**
 * Frees the data that journal records older than graceMs name, in every
 * bucket (or one). Safe to run from several gateways at once: every step is
 * a compare-and-set or an idempotent removal.
 */
export async function sweepJournal(o: SweepOptions): Promise<SweepStats> {
  const stats: SweepStats = { recordsExamined: 0, recordsYoung: 0, dataFreed: 0, recordsReleased: 0, failures: 0 };
  const buckets = o.bucketName !== undefined ? [await o.buckets.get(o.bucketName)].filter((b) => b !== null) : o.buckets.list();
  for await (const bucket of buckets) {
    const index = o.indexOf(bucket);
    const pools: StripedPool = { manifests: o.metaPool, pieces: bucket.dataPool };
    for (let n = 0; n < index.shards; n++) {
      const shard = index.shardObjectAt(n);
      let after: Buffer | undefined;
      for (;;) {
        if (o.signal?.aborted) return stats;
        let page;
        try {
          page = await o.client.omapList(o.metaPool, shard, { prefix: Buffer.from([JOURNAL]), limit: SWEEP_PAGE_RECORDS, ...(after ? { afterKey: after } : {}) });
        } catch (err) {
          if (isTesseraError(err, 'NotFound')) break;
          throw err;
        }
        for (const [k, raw] of page.entries) {
          stats.recordsExamined++;
          const record = JSON.parse(raw.toString('utf8')) as JournalRecord;
          if (!record.doomed && o.nowMs() - record.createdMs < o.graceMs) {
            stats.recordsYoung++;
            continue;
          }
          try {
            await settle(o, index, pools, shard, k.subarray(1).toString('utf8'), raw, stats);
          } catch (err) {
            stats.failures++;
            o.onError?.(err);
          }
        }
        if (!page.more || page.entries.length === 0) break;
        after = page.entries[page.entries.length - 1]![0];
      }
    }
  }
  return stats;
}
