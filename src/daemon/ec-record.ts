/**
 * Two-phase shard writes on one member: the staging object of a pending
 * version and the commit record that says how to apply it.
 *
 * Phase 1 (stage) writes the member's new chunk bytes into a staging object
 * (namespace stagingNs(pool), name "<pg>.<shard>.<epoch>.<version>.<request>") at the
 * same offsets they will have in the shard, with the commit record in its
 * xattr `_r` (or, when longer than an xattr value, in its omap). Phase 2
 * (commit) is ONE store transaction: moveRange every staged run into the
 * shard object (metadata only), truncations, xattrs, `_s` and `_v`, remove
 * the staging object, append the log entry, and advance the pg's `head`
 * xattr (asserting the previous head: a commit whose predecessor failed in
 * the store fails too, so a log never has a gap).
 *
 * So a member's shard objects only ever hold committed versions, and a
 * staging object is enough to roll its version forward after a crash.
 * Recovery temporaries ("r.<pg>.<shard>.<n>") share the staging namespace.
 */
import { Reader, Writer } from '../lib/codec.js';
import { limits } from '../lib/limits.js';
import { readEntry, writeEntry, type Eversion, type LogEntry } from '../protocol/osd-messages.js';
import type { ObjectId, StoreApi, StoreOp } from '../store/types.js';
import type { ShardRun } from './ec-layout.js';
import { dataNs, decodeVersionValue, encodeVersionValue, metaObject, VERSION_XATTR, type PgLog } from './pg-log.js';

export const SIZE_XATTR = '_s';
const RECORD_XATTR = '_r';
const HEAD_XATTR = 'head';
const RECORD_CHUNK_BYTES = 60 * 1024;
const RUNS_MAX = 1_000_000;

export const stagingNs = (poolId: number): number => poolId * 256 + 254;

/** What a member does to its shard when a staged version commits. */
export interface EcCommitRecord {
  entry: LogEntry;
  shard: number;
  exists: boolean;
  recreate: boolean;
  /** Shard bytes at or past this are dropped before the runs move in (null: none). */
  cutShardBytes: number | null;
  /** The shard's final length. */
  shardBytes: number;
  runs: ShardRun[];
  sizeBytes: number;
  setXattrs: Array<[string, Buffer]>;
  removeXattrs: string[];
}

/**
 * The staging object of one write attempt on one shard. The request is part
 * of the name: after a rollback the same version may go to another write, and
 * a late stage message of the old attempt must not overwrite the new one's.
 */
export function stagingName(pg: number, shard: number, e: LogEntry): string {
  const request = e.request ? `${e.request.client}.${e.request.seq}` : 'x';
  return `${pg}.${shard}.${e.epoch}.${e.version}.${request}`;
}

export const stagingId = (poolId: number, pg: number, shard: number, e: LogEntry): ObjectId => ({ ns: stagingNs(poolId), name: stagingName(pg, shard, e) });
export const isStagingOf = (name: string, pg: number): boolean => name.startsWith(`${pg}.`);
export const isRecoveryTempOf = (name: string, pg: number): boolean => name.startsWith(`r.${pg}.`);

/** Same write: version, epoch, object, kind and request (a version can be reused after a rollback, by another request). */
export function sameEntry(a: LogEntry, b: LogEntry): boolean {
  return (
    a.epoch === b.epoch &&
    a.version === b.version &&
    a.object === b.object &&
    a.kind === b.kind &&
    (a.request?.client ?? null) === (b.request?.client ?? null) &&
    (a.request?.seq ?? null) === (b.request?.seq ?? null)
  );
}

export function encodeRecord(r: EcCommitRecord): Buffer {
  const w = new Writer(256);
  writeEntry(w, r.entry);
  w.varint(r.shard).bool(r.exists).bool(r.recreate).bool(r.cutShardBytes !== null).varint(r.cutShardBytes ?? 0);
  w.varint(r.shardBytes).varint(r.sizeBytes).varint(r.runs.length);
  for (const run of r.runs) w.varint(run.offsetBytes).varint(run.lengthBytes);
  w.varint(r.setXattrs.length);
  for (const [n, v] of r.setXattrs) w.string(n).bytes(v);
  w.varint(r.removeXattrs.length);
  for (const n of r.removeXattrs) w.string(n);
  return w.finish();
}

export function decodeRecord(b: Buffer, errorCode: 'Corrupt' | 'ProtocolError' = 'Corrupt'): EcCommitRecord {
  const r = new Reader(b, errorCode, 'EC commit record');
  const entry = readEntry(r);
  const shard = r.varint(255);
  const exists = r.bool();
  const recreate = r.bool();
  const hasCut = r.bool();
  const cut = r.varint();
  const shardBytes = r.varint(limits.objectSizeBytesMax);
  const sizeBytes = r.varint(limits.objectSizeBytesMax);
  const runs: ShardRun[] = [];
  for (let i = r.varint(RUNS_MAX); i > 0; i--) runs.push({ offsetBytes: r.varint(limits.objectSizeBytesMax), lengthBytes: r.varint(limits.objectSizeBytesMax) });
  const setXattrs: Array<[string, Buffer]> = [];
  for (let i = r.varint(limits.xattrCountMax); i > 0; i--) setXattrs.push([r.string(limits.xattrNameBytesMax), Buffer.from(r.bytes(limits.xattrValueBytesMax))]);
  const removeXattrs: string[] = [];
  for (let i = r.varint(limits.xattrCountMax); i > 0; i--) removeXattrs.push(r.string(limits.xattrNameBytesMax));
  r.end();
  return { entry, shard, exists, recreate, cutShardBytes: hasCut ? cut : null, shardBytes, runs, sizeBytes, setXattrs, removeXattrs };
}

const chunkKey = (i: number): Buffer => Buffer.from(`r${String(i).padStart(6, '0')}`);

/** Phase 1: the staging object with the member's chunk bytes (runs back to back in `data`) and the record. */
export function stageOps(poolId: number, pg: number, record: EcCommitRecord, encoded: Buffer, data: Buffer): StoreOp[] {
  const id = stagingId(poolId, pg, record.shard, record.entry);
  const ops: StoreOp[] = [
    { type: 'remove', id, ifExists: true },
    { type: 'create', id },
  ];
  let at = 0;
  for (const run of record.runs) {
    ops.push({ type: 'write', id, offsetBytes: run.offsetBytes, data: data.subarray(at, at + run.lengthBytes) });
    at += run.lengthBytes;
  }
  if (encoded.length <= limits.xattrValueBytesMax) {
    ops.push({ type: 'setXattr', id, name: RECORD_XATTR, value: encoded });
  } else {
    const entries: Array<[Buffer, Buffer]> = [];
    for (let i = 0; i * RECORD_CHUNK_BYTES < encoded.length; i++) entries.push([chunkKey(i), encoded.subarray(i * RECORD_CHUNK_BYTES, (i + 1) * RECORD_CHUNK_BYTES)]);
    ops.push({ type: 'omapSet', id, entries });
  }
  return ops;
}

/** The record of a staging object. */
export async function readRecord(store: StoreApi, id: ObjectId): Promise<EcCommitRecord> {
  const x = await store.getXattrs(id);
  const inline = x.get(RECORD_XATTR);
  if (inline) return decodeRecord(inline);
  const parts: Buffer[] = [];
  let afterKey: Buffer | undefined;
  for (;;) {
    const page = await store.omapList(id, { limit: 64, ...(afterKey ? { afterKey } : {}) });
    for (const [, v] of page.entries) parts.push(v);
    if (!page.more || page.entries.length === 0) break;
    afterKey = page.entries[page.entries.length - 1]![0];
  }
  return decodeRecord(Buffer.concat(parts));
}

/** The `head` xattr of an EC pg's meta object: the version of the last log entry (absent: empty log). */
export const headValue = (v: Eversion): Buffer | null => (v.version === 0 && v.epoch === 0 ? null : encodeVersionValue(v));

export function headOps(poolId: number, pg: number, head: Eversion): StoreOp[] {
  const meta = metaObject(poolId, pg);
  const value = headValue(head);
  return value ? [{ type: 'setXattr', id: meta, name: HEAD_XATTR, value }] : [{ type: 'removeXattr', id: meta, name: HEAD_XATTR }];
}

/** The head an EC pg's meta object records (zero when none). */
export async function readHead(store: StoreApi, poolId: number, pg: number): Promise<Eversion> {
  try {
    const v = (await store.getXattrs(metaObject(poolId, pg))).get(HEAD_XATTR);
    return v ? decodeVersionValue(v) : { epoch: 0, version: 0 };
  } catch (err) {
    if ((err as { code?: string }).code === 'NotFound') return { epoch: 0, version: 0 };
    throw err;
  }
}

function shardOps(poolId: number, r: EcCommitRecord, staging: ObjectId): StoreOp[] {
  const id: ObjectId = { ns: dataNs(poolId, r.shard), name: r.entry.object };
  if (!r.exists) return [{ type: 'remove', id, ifExists: true }];
  const ops: StoreOp[] = r.recreate ? [{ type: 'remove', id, ifExists: true }, { type: 'create', id }] : [{ type: 'create', id }];
  if (r.cutShardBytes !== null && !r.recreate) ops.push({ type: 'truncate', id, sizeBytes: r.cutShardBytes });
  for (const run of r.runs) ops.push({ type: 'moveRange', id, offsetBytes: run.offsetBytes, from: staging, fromOffsetBytes: run.offsetBytes, lengthBytes: run.lengthBytes });
  ops.push({ type: 'truncate', id, sizeBytes: r.shardBytes });
  for (const name of r.removeXattrs) ops.push({ type: 'removeXattr', id, name });
  for (const [name, value] of r.setXattrs) ops.push({ type: 'setXattr', id, name, value });
  ops.push({ type: 'setXattr', id, name: SIZE_XATTR, value: new Writer(10).varint(r.sizeBytes).finish() });
  ops.push({ type: 'setXattr', id, name: VERSION_XATTR, value: encodeVersionValue(r.entry) });
  return ops;
}

/** Phase 2: one transaction applying a staged version on top of `previousHead`. */
export function commitOps(poolId: number, pg: number, r: EcCommitRecord, previousHead: Eversion, log: PgLog): StoreOp[] {
  const staging = stagingId(poolId, pg, r.shard, r.entry);
  const meta = metaObject(poolId, pg);
  return [
    ...shardOps(poolId, r, staging),
    { type: 'remove', id: staging },
    { type: 'assertXattr', id: meta, name: HEAD_XATTR, value: headValue(previousHead) },
    ...log.appendOps(r.entry),
    ...headOps(poolId, pg, r.entry),
  ];
}

export function decodeSize(value: Buffer | undefined): number {
  if (!value) return 0;
  const r = new Reader(value, 'Corrupt', 'object size');
  const v = r.varint(limits.objectSizeBytesMax);
  r.end();
  return v;
}
