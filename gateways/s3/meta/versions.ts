/**
 * Object versions in the bucket index (bucket-index.ts). In the shard object
 * that holds a key's current entry ('c' + key), a versioned bucket also keeps
 *   'v' + key + 0x00 + sortKey -> the entry of each version and delete marker,
 *   'n' + key                  -> the stamp of the key's "null" version, if it is in the list.
 * A stamp is 32 hex digits: creation time in microseconds (8 bytes, big-endian)
 * then 8 random bytes; the sort key is the same 16 bytes with the time bits
 * inverted, so a key's versions list newest first, right after the key itself
 * (keys never contain 0x00). A version id is its stamp (so ids are unique,
 * opaque and sort by creation), except the null version's, which is "null".
 *
 * Invariants, per key:
 * - it has 'v' entries only if it has a 'c' entry, and then 'c' is byte for
 *   byte its newest 'v' entry (so a plain GET or listing is one lookup);
 * - a 'c' entry without a stamp (written while the bucket was unversioned) is
 *   the key's null version, and then the key has no 'v' entries; the first
 *   versioned write moves it into the list (Enabled) or replaces it (Suspended);
 * - a new version's stamp is later than the current one's, whatever the clocks
 *   of the gateways say, so "newest" is "last committed".
 * Every change reads the entries it relies on and commits in one transaction
 * on the key's shard object with an omapCompare on each of them: writers of a
 * key serialize, and each version is added or removed exactly once (its data
 * is the caller's to collect, from the entries returned as removed).
 */
import type { Io } from '../../../src/io/io.js';
import type { ObjectOp } from '../../../src/client/client.js';
import { isTesseraError } from '../../../src/lib/errors.js';
import { limits } from '../../../src/lib/limits.js';
import { s3Error } from '../errors.js';
import type { BucketIndex, IndexEntry } from './bucket-index.js';
import { RECORD_UPDATE_ATTEMPTS_MAX } from './omap-record.js';
import { IndexScan } from './index-scan.js';
import { checkPending, journalOps, type PendingWrite } from './journal.js';

export type VersioningMode = 'Enabled' | 'Suspended';

const CURRENT = 0x63; // 'c'
const VERSION = 0x76; // 'v'
const NULL_POINTER = 0x6e; // 'n'
const STAMP_HEX = /^[0-9a-f]{32}$/;
const SORT_KEY_BYTES = 16;
const TIME_MASK = (1n << 64n) - 1n;
/** Entries a listing reads from one shard at a time (fewer when the bucket has many shards: scanPageEntries). */
const SCAN_PAGE_ENTRIES = 256;

/** Per-shard page of a scan of `shards` shards: two scans (currents, versions) hold at most limits.s3IndexListEntriesMax. */
const scanPageEntries = (shards: number): number => Math.max(1, Math.min(SCAN_PAGE_ENTRIES, Math.floor(limits.s3IndexListEntriesMax / (2 * shards))));

export const isVersionId = (s: string): boolean => s === 'null' || STAMP_HEX.test(s);
export const isDeleteMarker = (e: IndexEntry): boolean => e.data === null && !e.parts && e.inline === undefined;

const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
const cKey = (key: string): Buffer => Buffer.concat([Buffer.from([CURRENT]), utf8(key)]);
const nKey = (key: string): Buffer => Buffer.concat([Buffer.from([NULL_POINTER]), utf8(key)]);

function sortKey(stamp: string): Buffer {
  const b = Buffer.from(stamp, 'hex');
  b.writeBigUInt64BE(~b.readBigUInt64BE(0) & TIME_MASK, 0);
  return b;
}

const vKey = (key: string, stamp: string): Buffer => Buffer.concat([Buffer.from([VERSION]), utf8(key), Buffer.from([0]), sortKey(stamp)]);
const vPrefix = (key: string): Buffer => Buffer.concat([Buffer.from([VERSION]), utf8(key), Buffer.from([0])]);
const stampMicros = (stamp: string): bigint => Buffer.from(stamp, 'hex').readBigUInt64BE(0);
const parse = (raw: Buffer): IndexEntry => JSON.parse(raw.toString('utf8')) as IndexEntry;
const compare = (key: Buffer, value: Buffer | null | undefined): ObjectOp => ({ type: 'omapCompare', key, value: value ?? null });

/** The current entry of a key as read (with its exact bytes), and its null-version pointer. */
interface KeyHead {
  shard: string;
  cRaw: Buffer | null;
  current: IndexEntry | null;
  nRaw: Buffer | null;
}

export class VersionIndex {
  constructor(
    readonly index: BucketIndex,
    private readonly io: Io,
  ) {}

  private async head(key: string): Promise<KeyHead> {
    const shard = this.index.shardObject(key);
    let values: Array<Buffer | undefined> = [];
    try {
      values = await this.index.client.omapGet(this.index.pool, shard, [cKey(key), nKey(key)]);
    } catch (err) {
      if (!isTesseraError(err, 'NotFound')) throw err;
    }
    const cRaw = values[0] ?? null;
    return { shard, cRaw, current: cRaw ? parse(cRaw) : null, nRaw: values[1] ?? null };
  }

  private async getRaw(shard: string, k: Buffer): Promise<Buffer | null> {
    try {
      return (await this.index.client.omapGet(this.index.pool, shard, [k]))[0] ?? null;
    } catch (err) {
      if (isTesseraError(err, 'NotFound')) return null;
      throw err;
    }
  }

  /** A stamp for a new version of a key whose current entry is `current`: later than it. */
  private nextStamp(current: IndexEntry | null): string {
    let micros = BigInt(this.io.clock.nowMs()) * 1000n;
    if (current) {
      const cur = current.versionStamp ? stampMicros(current.versionStamp) : BigInt(current.mtimeMs) * 1000n;
      if (micros <= cur) micros = cur + 1n;
    }
    return this.stampAt(micros);
  }

  private stampAt(micros: bigint): string {
    const b = Buffer.alloc(SORT_KEY_BYTES);
    b.writeBigUInt64BE(micros, 0);
    this.io.random.bytes(8).copy(b, 8);
    return b.toString('hex');
  }

  /** The version (or delete marker) with this id (a valid id: isVersionId), or null. */
  async get(key: string, versionId: string): Promise<IndexEntry | null> {
    if (versionId === 'null') {
      const head = await this.head(key);
      if (head.current && !head.current.versionStamp) return head.current;
      if (!head.nRaw) return null;
      const raw = await this.getRaw(head.shard, vKey(key, head.nRaw.toString('latin1')));
      return raw ? parse(raw) : null;
    }
    const raw = await this.getRaw(this.index.shardObject(key), vKey(key, versionId));
    const entry = raw ? parse(raw) : null;
    return entry?.versionId === versionId ? entry : null;
  }

  /**
   * Adds a version (an object, or a delete marker: data null) as the key's
   * current entry: with a new id (Enabled) or as the null version, replacing
   * the previous null version (Suspended). Returns the entry as stored and the
   * entries it removed (their data is the caller's to delete). decide() may
   * refuse (throw) given the current entry as read (checked again on every
   * retry: the commit compares that entry's exact bytes).
   */
  async put(key: string, entry: IndexEntry, mode: VersioningMode, decide?: (current: IndexEntry | null) => void, pending?: PendingWrite | null): Promise<{ entry: IndexEntry; removed: IndexEntry[] }> {
    for (let attempt = 0; attempt < RECORD_UPDATE_ATTEMPTS_MAX; attempt++) {
      const head = await this.head(key);
      decide?.(head.current);
      const ops: ObjectOp[] = [{ type: 'create' }, compare(cKey(key), head.cRaw), compare(nKey(key), head.nRaw)];
      const sets: Array<[Buffer, Buffer]> = [];
      const removes: Buffer[] = [];
      const removed: IndexEntry[] = [];
      const cur = head.current;
      if (cur && !cur.versionStamp) {
        // Written while the bucket was unversioned: the key's null version.
        if (mode === 'Enabled') {
          const stamp = this.stampAt(BigInt(cur.mtimeMs) * 1000n);
          sets.push([vKey(key, stamp), Buffer.from(JSON.stringify({ ...cur, versionId: 'null', versionStamp: stamp }))], [nKey(key), Buffer.from(stamp, 'latin1')]);
        } else {
          removed.push(cur);
        }
      }
      if (mode === 'Suspended' && head.nRaw) {
        const old = vKey(key, head.nRaw.toString('latin1'));
        const oldRaw = await this.getRaw(head.shard, old);
        ops.push(compare(old, oldRaw));
        if (oldRaw) {
          removes.push(old);
          removed.push(parse(oldRaw));
        }
      }
      const stamp = this.nextStamp(cur);
      const next: IndexEntry = { ...entry, versionId: mode === 'Enabled' ? stamp : 'null', versionStamp: stamp };
      const bytes = Buffer.from(JSON.stringify(next));
      sets.push([vKey(key, stamp), bytes], [cKey(key), bytes]);
      if (mode === 'Suspended') sets.push([nKey(key), Buffer.from(stamp, 'latin1')]);
      if (removes.length > 0) ops.push({ type: 'omapRemoveKeys', keys: removes });
      ops.push({ type: 'omapSet', entries: sets });
      // The journal (meta/journal.ts): this write's record removed, the removed versions' data recorded as to be freed.
      ops.push(...journalOps(pending, removed, key, this.io.clock.nowMs()));
      if (await this.commit(head.shard, ops)) return { entry: next, removed };
      await checkPending(this.index, pending);
    }
    throw s3Error('SlowDown', 'Please reduce your request rate.');
  }

  /**
   * Removes one version (or delete marker) for good; when it was the current
   * one, the next newest becomes current (or the key disappears). Returns the
   * entry removed, or null if there was no such version.
   */
  async remove(key: string, versionId: string): Promise<IndexEntry | null> {
    for (let attempt = 0; attempt < RECORD_UPDATE_ATTEMPTS_MAX; attempt++) {
      const head = await this.head(key);
      const cur = head.current;
      const base: ObjectOp[] = [{ type: 'create' }, compare(cKey(key), head.cRaw), compare(nKey(key), head.nRaw)];
      if (versionId === 'null' && cur && !cur.versionStamp) {
        if (await this.commit(head.shard, [...base, { type: 'omapRemoveKeys', keys: [cKey(key)] }, ...journalOps(null, [cur], key, this.io.clock.nowMs())])) return cur;
        continue;
      }
      const stamp = versionId === 'null' ? head.nRaw?.toString('latin1') : versionId;
      if (!stamp) return null;
      const k = vKey(key, stamp);
      const raw = await this.getRaw(head.shard, k);
      const target = raw ? parse(raw) : null;
      if (!target || target.versionId !== versionId) return null;
      const ops: ObjectOp[] = [...base, compare(k, raw), { type: 'omapRemoveKeys', keys: versionId === 'null' ? [k, nKey(key)] : [k] }, ...journalOps(null, [target], key, this.io.clock.nowMs())];
      if (cur?.versionStamp === stamp) {
        // The current version goes: the next newest (if any) becomes current.
        const page = await this.index.client.omapList(this.index.pool, head.shard, { prefix: vPrefix(key), afterKey: k, limit: 1 });
        const older = page.entries[0];
        if (older) ops.push(compare(older[0], older[1]), { type: 'omapSet', entries: [[cKey(key), older[1]]] });
        else ops.push({ type: 'omapRemoveKeys', keys: [cKey(key)] });
      }
      if (await this.commit(head.shard, ops)) return target;
    }
    throw s3Error('SlowDown', 'Please reduce your request rate.');
  }

  /**
   * Changes the metadata of one version in place (an ACL: PutObjectAcl), the
   * current one when versionId is null; its list entry and, when it is
   * current, the current entry stay equal. edit may not change the data or
   * the version fields (they are kept). Returns the new entry, or null if
   * there is no such version (a delete marker counts as one: edit decides).
   */
  async update(key: string, versionId: string | null, edit: (e: IndexEntry) => IndexEntry): Promise<IndexEntry | null> {
    for (let attempt = 0; attempt < RECORD_UPDATE_ATTEMPTS_MAX; attempt++) {
      const head = await this.head(key);
      const cur = head.current;
      const isCurrent = cur !== null && (versionId === null || (cur.versionId ?? 'null') === versionId);
      const stamp = isCurrent ? cur.versionStamp : versionId === 'null' ? head.nRaw?.toString('latin1') : (versionId ?? undefined);
      if (!isCurrent && !stamp) return null;
      const k = stamp ? vKey(key, stamp) : null;
      const raw = k ? await this.getRaw(head.shard, k) : null;
      const target = isCurrent ? cur : raw ? parse(raw) : null;
      if (!target || (!isCurrent && target.versionId !== versionId)) return null;
      const { data, parts, versionId: id, versionStamp } = target;
      const next: IndexEntry = { ...edit(target), data, ...(parts ? { parts } : {}), ...(id !== undefined ? { versionId: id } : {}), ...(versionStamp ? { versionStamp } : {}) };
      const bytes = Buffer.from(JSON.stringify(next));
      const sets: Array<[Buffer, Buffer]> = [];
      if (k) sets.push([k, bytes]);
      if (isCurrent) sets.push([cKey(key), bytes]);
      const ops: ObjectOp[] = [{ type: 'create' }, compare(cKey(key), head.cRaw), compare(nKey(key), head.nRaw), ...(k ? [compare(k, raw)] : []), { type: 'omapSet', entries: sets }];
      if (await this.commit(head.shard, ops)) return next;
    }
    throw s3Error('SlowDown', 'Please reduce your request rate.');
  }

  /** Applies a transaction; false if an entry it compared has changed (read again and retry). */
  private async commit(shard: string, ops: ObjectOp[]): Promise<boolean> {
    try {
      await this.index.client.transact(this.index.pool, shard, ops);
      return true;
    } catch (err) {
      if (isTesseraError(err, 'Conflict')) return false;
      throw err;
    }
  }

  /**
   * Every version of the keys starting with `prefix`, in S3's order (keys in
   * byte order, each key's versions newest first), from after `start`: after
   * the whole key (no stamp), or after one of its versions (its stamp).
   */
  async scan(o: { prefix: string; start?: { key: string; stamp?: string } }): Promise<VersionScan> {
    const shards = Array.from({ length: this.index.shards }, (_, n) => this.index.shardObjectAt(n));
    const s = o.start;
    const cAfter = s ? cKey(s.key) : undefined;
    const vAfter = !s ? undefined : s.stamp ? vKey(s.key, s.stamp) : Buffer.concat([vPrefix(s.key), Buffer.alloc(SORT_KEY_BYTES + 1, 0xff)]);
    const client = this.index.client;
    const pool = this.index.pool;
    const scan = new VersionScan(
      new IndexScan(client, pool, shards, Buffer.concat([Buffer.from([CURRENT]), utf8(o.prefix)]), cAfter, scanPageEntries(shards.length)),
      new IndexScan(client, pool, shards, Buffer.concat([Buffer.from([VERSION]), utf8(o.prefix)]), vAfter, scanPageEntries(shards.length)),
    );
    // Resuming inside a key's versions: whether the next one is its latest needs the current entry.
    if (s?.stamp) scan.resumeKey(s.key, (await this.head(s.key)).current?.versionStamp ?? null);
    return scan;
  }

  /** The stamp of the key's null version, if it is in the version list. */
  async nullStamp(key: string): Promise<string | null> {
    return (await this.head(key)).nRaw?.toString('latin1') ?? null;
  }
}

export interface ListedVersion {
  key: string;
  entry: IndexEntry;
  isLatest: boolean;
}

/**
 * The merge of two scans: unversioned current entries ('c' without a stamp:
 * each the only, null, version of its key) and the version lists ('v').
 */
export class VersionScan {
  private lastKey: Buffer | null = null;
  private resumeStamp: string | null = null;

  constructor(
    private readonly currents: IndexScan,
    private readonly versions: IndexScan,
  ) {}

  resumeKey(key: string, currentStamp: string | null): void {
    this.lastKey = utf8(key);
    this.resumeStamp = currentStamp;
  }

  private async nextUnversioned(): Promise<{ key: Buffer; raw: Buffer } | null> {
    for (;;) {
      const e = await this.currents.peek();
      if (!e) return null;
      if (!(parse(e[1]).versionStamp)) return { key: e[0].subarray(1), raw: e[1] };
      await this.currents.next();
    }
  }

  async next(): Promise<ListedVersion | null> {
    const c = await this.nextUnversioned();
    const v = await this.versions.peek();
    const vUserKey = v ? v[0].subarray(1, v[0].length - 1 - SORT_KEY_BYTES) : null;
    if (c && (!vUserKey || Buffer.compare(c.key, vUserKey) <= 0)) {
      await this.currents.next();
      this.lastKey = c.key;
      return { key: c.key.toString('utf8'), entry: parse(c.raw), isLatest: true };
    }
    if (!v || !vUserKey) return null;
    await this.versions.next();
    const entry = parse(v[1]);
    const sameKey = this.lastKey !== null && this.lastKey.equals(vUserKey);
    const isLatest = !sameKey || (this.resumeStamp !== null && this.resumeStamp === entry.versionStamp);
    this.resumeStamp = null;
    this.lastKey = vUserKey;
    return { key: vUserKey.toString('utf8'), entry, isLatest };
  }

  /** Skips every key that starts with `prefix` (a common prefix already reported). */
  skipPrefix(prefix: string): void {
    const past = Buffer.concat([utf8(prefix), Buffer.from([0xff])]);
    this.currents.seek(Buffer.concat([Buffer.from([CURRENT]), past]));
    this.versions.seek(Buffer.concat([Buffer.from([VERSION]), past]));
  }
}
