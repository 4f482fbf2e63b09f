/**
 * A placement group's log and info as one member keeps them, in its store:
 * a meta object per pg (namespace metaNs(pool), name "pg.<n>") whose omap
 * holds the log entries (key "e" + version as u64be) and whose xattr "info"
 * holds the log's tail and the last interval this member took part in.
 *
 * The log is bounded: appending past logEntriesMax trims the oldest entries in
 * the same transaction. In memory it is the list of entries plus an index of
 * request ids (retried client requests are answered from it).
 */
import { Reader, Writer } from '../lib/codec.js';
import { assert } from '../lib/assert.js';
import { corrupt } from '../lib/errors.js';
import { compareVersions, readEntry, writeEntry, zeroVersion, type Eversion, type LogEntry } from '../protocol/osd-messages.js';
import type { ObjectId, StoreApi, StoreOp } from '../store/types.js';

export const LOG_ENTRIES_MAX = 3000;
const TRIM_SLACK = 200;
const PAGE = 1000;

export const dataNs = (poolId: number, shard: number): number => poolId * 256 + shard;
export const metaNs = (poolId: number): number => poolId * 256 + 255;
export const metaObject = (poolId: number, pg: number): ObjectId => ({ ns: metaNs(poolId), name: `pg.${pg}` });
export const VERSION_XATTR = '_v';

export interface PgInfo {
  /** Version just before the oldest entry kept. */
  tail: Eversion;
  /** Map epoch of the last interval this member was activated in, and its acting set. */
  lastEpochStarted: number;
  lastActing: number[];
  /** Erasure-coded pools: the shard position this member's log and shard objects belong to. */
  shard?: number;
}

export const emptyInfo = (): PgInfo => ({ tail: zeroVersion, lastEpochStarted: 0, lastActing: [] });

const entryKey = (version: number): Buffer => {
  const k = Buffer.alloc(9);
  k[0] = 0x65; // 'e'
  k.writeUInt32BE(Math.floor(version / 0x1_0000_0000), 1);
  k.writeUInt32BE(version >>> 0, 5);
  return k;
};

export const encodeVersionValue = (v: Eversion): Buffer => new Writer(12).varint(v.epoch).varint(v.version).finish();

export function decodeVersionValue(b: Buffer): Eversion {
  const r = new Reader(b, 'Corrupt', 'object version');
  const v = { epoch: r.varint(), version: r.varint() };
  r.end();
  return v;
}

function encodeInfo(i: PgInfo): Buffer {
  return Buffer.from(JSON.stringify(i));
}

function decodeInfo(b: Buffer): PgInfo {
  try {
    const v = JSON.parse(b.toString('utf8')) as PgInfo;
    if (!Number.isSafeInteger(v.tail?.version) || !Array.isArray(v.lastActing)) throw new Error('fields');
    return v;
  } catch (err) {
    throw corrupt('pg info is unreadable', err);
  }
}

const requestKey = (e: LogEntry): string | null => (e.request ? `${e.request.client}:${e.request.seq}` : null);

export class PgLog {
  readonly entries: LogEntry[] = [];
  private readonly byRequest = new Map<string, Eversion>();

  private constructor(
    readonly poolId: number,
    readonly pg: number,
    public info: PgInfo,
  ) {}

  static async load(store: StoreApi, poolId: number, pg: number): Promise<PgLog> {
    const meta = metaObject(poolId, pg);
    let info = emptyInfo();
    try {
      const x = await store.getXattrs(meta);
      const raw = x.get('info');
      if (raw) info = decodeInfo(raw);
    } catch (err) {
      if ((err as { code?: string }).code !== 'NotFound') throw err;
      return new PgLog(poolId, pg, info);
    }
    const log = new PgLog(poolId, pg, info);
    // Entries at or below the tail are outside the log (what a trim or a replacement should have removed): left
    // out, loudly, instead of failing every load (a pg whose primary cannot load its log never peers again).
    // Keys sort by version, so such entries can only come first.
    const stale: LogEntry[] = [];
    let afterKey: Buffer | undefined;
    for (;;) {
      const page = await store.omapList(meta, { limit: PAGE, ...(afterKey ? { afterKey } : {}) });
      for (const [, v] of page.entries) {
        const e = readEntry(new Reader(v, 'Corrupt', 'pg log entry'));
        if (log.entries.length === 0 && e.version <= info.tail.version) stale.push(e);
        else log.remember(e);
      }
      if (!page.more || page.entries.length === 0) break;
      afterKey = page.entries[page.entries.length - 1]![0];
    }
    if (stale.length > 0) {
      const first = stale[0]!;
      const last = stale[stale.length - 1]!;
      console.error(
        `pg ${poolId}.${pg}: log: ${stale.length} entries ${first.epoch}'${first.version}..${last.epoch}'${last.version} at or below the tail ` +
          `${info.tail.epoch}'${info.tail.version} left out (kept: ${log.entries.length}, head ${log.head.epoch}'${log.head.version}; ` +
          `last started ${info.lastEpochStarted}, acting ${info.lastActing.join(',')}): a log not trimmed or replaced whole`,
      );
    }
    return log;
  }

  get head(): Eversion {
    const last = this.entries[this.entries.length - 1];
    return last ? { epoch: last.epoch, version: last.version } : this.info.tail;
  }

  get tail(): Eversion {
    return this.info.tail;
  }

  /** The version a retried request got, if the log still holds it. */
  versionOf(client: string, seq: number): Eversion | undefined {
    return this.byRequest.get(`${client}:${seq}`);
  }

  /** Records an entry that is now in the store (entries arrive in version order). */
  remember(e: LogEntry): void {
    const head = this.head;
    assert(e.version > head.version, `pg ${this.poolId}.${this.pg}: log entry ${e.version} follows head ${head.version}`);
    this.entries.push(e);
    const k = requestKey(e);
    if (k) this.byRequest.set(k, { epoch: e.epoch, version: e.version });
    // Trim exactly as appendOps trimmed on disk: down to LOG_ENTRIES_MAX once past the slack.
    if (this.entries.length > LOG_ENTRIES_MAX + TRIM_SLACK) {
      const dropped = this.entries.splice(0, this.entries.length - LOG_ENTRIES_MAX);
      const last = dropped[dropped.length - 1]!;
      this.info = { ...this.info, tail: { epoch: last.epoch, version: last.version } };
      for (const old of dropped) {
        const k = requestKey(old);
        if (k) this.byRequest.delete(k);
      }
    }
  }

  /**
   * Store ops that append an entry (and trim, when the log is long), to go in
   * the same transaction as the write the entry describes.
   */
  appendOps(e: LogEntry): StoreOp[] {
    const meta = metaObject(this.poolId, this.pg);
    const ops: StoreOp[] = [{ type: 'omapSet', id: meta, entries: [[entryKey(e.version), encodeEntry(e)]] }];
    if (this.entries.length + 1 > LOG_ENTRIES_MAX + TRIM_SLACK) {
      const cut = this.entries[this.entries.length + 1 - LOG_ENTRIES_MAX - 1]!;
      ops.push({ type: 'omapRemoveRange', id: meta, startKey: entryKey(0), endKey: entryKey(cut.version + 1) });
      ops.push({ type: 'setXattr', id: meta, name: 'info', value: encodeInfo({ ...this.info, tail: { epoch: cut.epoch, version: cut.version } }) });
    }
    return ops;
  }

  /** Store ops that replace this member's whole log with `entries` after `tail` and set its info. */
  static replaceOps(poolId: number, pg: number, tail: Eversion, entries: readonly LogEntry[], info: Omit<PgInfo, 'tail'>): StoreOp[] {
    const meta = metaObject(poolId, pg);
    const ops: StoreOp[] = [{ type: 'create', id: meta }, { type: 'omapClear', id: meta }];
    for (let i = 0; i < entries.length; i += 1000) {
      ops.push({ type: 'omapSet', id: meta, entries: entries.slice(i, i + 1000).map((e) => [entryKey(e.version), encodeEntry(e)] as const) });
    }
    ops.push({ type: 'setXattr', id: meta, name: 'info', value: encodeInfo({ ...info, tail }) });
    return ops;
  }

  /**
   * Ops persisting new interval info (activation). The info written carries this log's tail, which may be
   * ahead of the stored one: appendOps decides a trim from the entries remembered when a write is built,
   * remember() from those remembered when it is durable, so with writes in flight the store can hold more
   * than LOG_ENTRIES_MAX + TRIM_SLACK entries, and a load of it trims in memory only. The entries at or
   * below the tail are removed in the same transaction: the stored log is then exactly this one. (Before,
   * only the info was written: its tail moved past entries still stored, and every later load failed, a
   * pg that never peered again: docs/testing.md, finding 6.)
   */
  infoOps(info: Omit<PgInfo, 'tail'>): StoreOp[] {
    this.info = { ...this.info, ...info };
    const meta = metaObject(this.poolId, this.pg);
    return [
      { type: 'create', id: meta },
      { type: 'omapRemoveRange', id: meta, startKey: entryKey(0), endKey: entryKey(this.info.tail.version + 1) },
      { type: 'setXattr', id: meta, name: 'info', value: encodeInfo(this.info) },
    ];
  }

  /** Entries after `after` (exclusive), in order. */
  after(after: Eversion): LogEntry[] {
    return this.entries.filter((e) => compareVersions(e, after) > 0);
  }
}

export function encodeEntry(e: LogEntry): Buffer {
  const w = new Writer(64);
  writeEntry(w, e);
  return w.finish();
}
