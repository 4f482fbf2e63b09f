/**
 * The storage daemon's store operations on the wire: opcodes, and the
 * encoding of each request and reply header. Payload bytes (data written,
 * data read) travel outside the header, without copies: a transaction's
 * header lists its ops with the length of each op's data, and the payload is
 * those data buffers back to back.
 *
 * Every decoder treats its input as untrusted (ProtocolError on anything
 * malformed) and checks lengths against src/lib/limits.ts before allocating.
 */
import { Reader, Writer } from '../lib/codec.js';
import { TesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { ObjectId, ObjectListOptions, ObjectListPage, ObjectStat, OmapListOptions, OmapPage, StoreOp, StoreReadOptions, StoreSpace } from '../store/types.js';

export const StoreOpcode = {
  ping: 1,
  transact: 2,
  read: 3,
  stat: 4,
  getXattrs: 5,
  omapGet: 6,
  omapList: 7,
  listObjects: 8,
  statfs: 9,
} as const;

const protocolError = (message: string): TesseraError => new TesseraError('ProtocolError', message);
const reader = (header: Buffer, what: string): Reader => new Reader(header, 'ProtocolError', what);

function writeId(w: Writer, id: ObjectId): void {
  w.u32(id.ns).string(id.name);
}

function readId(r: Reader): ObjectId {
  return { ns: r.u32(), name: r.string(limits.objectNameBytesMax) };
}

const optionalBytes = (w: Writer, b: Buffer | undefined): void => {
  w.bool(b !== undefined);
  if (b !== undefined) w.bytes(b);
};
const readOptionalBytes = (r: Reader, max: number): Buffer | undefined => (r.bool() ? Buffer.from(r.bytes(max)) : undefined);

// --- ping ---

export interface PingReply {
  clusterId: string;
  diskId: number;
}
export const encodePingReply = (p: PingReply): Buffer => new Writer(64).string(p.clusterId).varint(p.diskId).finish();
export function decodePingReply(h: Buffer): PingReply {
  const r = reader(h, 'ping reply');
  const p = { clusterId: r.string(256), diskId: r.varint() };
  r.end();
  return p;
}

// --- transact ---

const opTags = ['create', 'write', 'writeFull', 'append', 'truncate', 'zero', 'remove', 'setXattr', 'removeXattr', 'assertXattr', 'assertExists', 'omapSet', 'omapRemoveKeys', 'omapRemoveRange', 'omapClear', 'move', 'moveRange', 'omapCompare'] as const;
const tagOf = new Map<string, number>(opTags.map((t, i) => [t, i]));

/** Header and payload buffers of a transaction request. */
export function encodeTransact(ops: readonly StoreOp[]): { header: Buffer; payload: Buffer[] } {
  const w = new Writer(64 * ops.length);
  const payload: Buffer[] = [];
  w.varint(ops.length);
  for (const op of ops) {
    w.u8(tagOf.get(op.type)!);
    writeId(w, op.id);
    switch (op.type) {
      case 'create':
        w.bool(op.exclusive === true);
        break;
      case 'write':
        w.varint(op.offsetBytes).varint(op.data.length);
        payload.push(op.data);
        break;
      case 'writeFull':
      case 'append':
        w.varint(op.data.length);
        payload.push(op.data);
        break;
      case 'truncate':
        w.varint(op.sizeBytes);
        break;
      case 'zero':
        w.varint(op.offsetBytes).varint(op.lengthBytes);
        break;
      case 'remove':
        w.bool(op.ifExists === true);
        break;
      case 'setXattr':
        w.string(op.name).bytes(op.value);
        break;
      case 'removeXattr':
        w.string(op.name);
        break;
      case 'assertXattr':
        w.string(op.name);
        optionalBytes(w, op.value ?? undefined);
        break;
      case 'assertExists':
      case 'omapClear':
        break;
      case 'omapSet':
        w.varint(op.entries.length);
        for (const [k, v] of op.entries) w.bytes(k).bytes(v);
        break;
      case 'omapRemoveKeys':
        w.varint(op.keys.length);
        for (const k of op.keys) w.bytes(k);
        break;
      case 'omapRemoveRange':
        w.bytes(op.startKey).bytes(op.endKey);
        break;
      case 'move':
        writeId(w, op.to);
        break;
      case 'moveRange':
        w.varint(op.offsetBytes);
        writeId(w, op.from);
        w.varint(op.fromOffsetBytes).varint(op.lengthBytes);
        break;
      case 'omapCompare':
        w.bytes(op.key);
        optionalBytes(w, op.value ?? undefined);
        break;
    }
  }
  return { header: w.finish(), payload };
}

/** Decodes a transaction; data buffers are views into the payload (no copies). */
export function decodeTransact(header: Buffer, payload: Buffer): StoreOp[] {
  const r = reader(header, 'transaction');
  const count = r.varint(limits.txnOpsMax);
  const ops: StoreOp[] = [];
  let at = 0;
  const data = (length: number): Buffer => {
    if (at + length > payload.length) throw protocolError(`transaction data overruns the payload (${at + length} > ${payload.length})`);
    const d = payload.subarray(at, at + length);
    at += length;
    return d;
  };
  const kMax = limits.omapKeyBytesMax;
  const vMax = limits.omapValueBytesMax;
  for (let i = 0; i < count; i++) {
    const tag = opTags[r.u8()];
    if (tag === undefined) throw protocolError('unknown transaction operation');
    const id = readId(r);
    switch (tag) {
      case 'create':
        ops.push({ type: tag, id, exclusive: r.bool() });
        break;
      case 'write': {
        const offsetBytes = r.varint();
        ops.push({ type: tag, id, offsetBytes, data: data(r.varint(limits.objectSizeBytesMax)) });
        break;
      }
      case 'writeFull':
      case 'append':
        ops.push({ type: tag, id, data: data(r.varint(limits.objectSizeBytesMax)) });
        break;
      case 'truncate':
        ops.push({ type: tag, id, sizeBytes: r.varint() });
        break;
      case 'zero':
        ops.push({ type: tag, id, offsetBytes: r.varint(), lengthBytes: r.varint() });
        break;
      case 'remove':
        ops.push({ type: tag, id, ifExists: r.bool() });
        break;
      case 'setXattr':
        ops.push({ type: tag, id, name: r.string(limits.xattrNameBytesMax), value: Buffer.from(r.bytes(limits.xattrValueBytesMax)) });
        break;
      case 'removeXattr':
        ops.push({ type: tag, id, name: r.string(limits.xattrNameBytesMax) });
        break;
      case 'assertXattr':
        ops.push({ type: tag, id, name: r.string(limits.xattrNameBytesMax), value: readOptionalBytes(r, limits.xattrValueBytesMax) ?? null });
        break;
      case 'assertExists':
      case 'omapClear':
        ops.push({ type: tag, id });
        break;
      case 'omapSet': {
        const n = r.varint(limits.txnOmapKeysMax);
        const entries: Array<[Buffer, Buffer]> = [];
        for (let j = 0; j < n; j++) entries.push([Buffer.from(r.bytes(kMax)), Buffer.from(r.bytes(vMax))]);
        ops.push({ type: tag, id, entries });
        break;
      }
      case 'omapRemoveKeys': {
        const n = r.varint(limits.txnOmapKeysMax);
        const keys: Buffer[] = [];
        for (let j = 0; j < n; j++) keys.push(Buffer.from(r.bytes(kMax)));
        ops.push({ type: tag, id, keys });
        break;
      }
      case 'omapRemoveRange':
        ops.push({ type: tag, id, startKey: Buffer.from(r.bytes(kMax)), endKey: Buffer.from(r.bytes(kMax)) });
        break;
      case 'move':
        ops.push({ type: tag, id, to: readId(r) });
        break;
      case 'moveRange': {
        const offsetBytes = r.varint();
        const from = readId(r);
        ops.push({ type: tag, id, offsetBytes, from, fromOffsetBytes: r.varint(), lengthBytes: r.varint() });
        break;
      }
      case 'omapCompare':
        ops.push({ type: tag, id, key: Buffer.from(r.bytes(kMax)), value: readOptionalBytes(r, vMax) ?? null });
        break;
    }
  }
  r.end();
  if (at !== payload.length) throw protocolError(`transaction payload has ${payload.length - at} bytes no operation uses`);
  return ops;
}

// --- read, stat, xattrs ---

/**
 * A read request: id, offset, optional length, then the condition (ifXattr:
 * name and value) only when there is one, so a read without one is encoded
 * as before it existed (a daemon of that age serves it; one given a condition
 * fails it as malformed rather than ignore it).
 */
export function encodeRead(id: ObjectId, options: StoreReadOptions): Buffer {
  const w = new Writer(64);
  writeId(w, id);
  w.varint(options.offsetBytes ?? 0).bool(options.lengthBytes !== undefined);
  if (options.lengthBytes !== undefined) w.varint(options.lengthBytes);
  if (options.ifXattr !== undefined) w.string(options.ifXattr.name).bytes(options.ifXattr.value);
  return w.finish();
}

export function decodeRead(h: Buffer): { id: ObjectId; options: StoreReadOptions } {
  const r = reader(h, 'read request');
  const id = readId(r);
  const offsetBytes = r.varint();
  const options: StoreReadOptions = r.bool() ? { offsetBytes, lengthBytes: r.varint() } : { offsetBytes };
  if (r.remainingBytes > 0) options.ifXattr = { name: r.string(limits.xattrNameBytesMax), value: Buffer.from(r.bytes(limits.xattrValueBytesMax)) };
  r.end();
  return { id, options };
}

export function encodeId(id: ObjectId): Buffer {
  const w = new Writer(64);
  writeId(w, id);
  return w.finish();
}

export function decodeId(h: Buffer): ObjectId {
  const r = reader(h, 'object id');
  const id = readId(r);
  r.end();
  return id;
}

export const encodeStat = (s: ObjectStat): Buffer => new Writer(32).varint(s.sizeBytes).varint(s.mtimeMs).varint(s.xattrCount).finish();
export function decodeStat(h: Buffer): ObjectStat {
  const r = reader(h, 'stat reply');
  const s = { sizeBytes: r.varint(), mtimeMs: r.varint(), xattrCount: r.varint() };
  r.end();
  return s;
}

export function encodeXattrs(x: Map<string, Buffer>): Buffer {
  const w = new Writer(256).varint(x.size);
  for (const [k, v] of x) w.string(k).bytes(v);
  return w.finish();
}

export function decodeXattrs(h: Buffer): Map<string, Buffer> {
  const r = reader(h, 'xattrs');
  const n = r.varint(limits.xattrCountMax);
  const out = new Map<string, Buffer>();
  for (let i = 0; i < n; i++) out.set(r.string(limits.xattrNameBytesMax), Buffer.from(r.bytes(limits.xattrValueBytesMax)));
  r.end();
  return out;
}

// --- omap ---

export function encodeOmapGet(id: ObjectId, keys: readonly Buffer[]): Buffer {
  const w = new Writer(64);
  writeId(w, id);
  w.varint(keys.length);
  for (const k of keys) w.bytes(k);
  return w.finish();
}

export function decodeOmapGet(h: Buffer): { id: ObjectId; keys: Buffer[] } {
  const r = reader(h, 'omap get');
  const id = readId(r);
  const n = r.varint(limits.listPageEntriesMax);
  const keys: Buffer[] = [];
  for (let i = 0; i < n; i++) keys.push(Buffer.from(r.bytes(limits.omapKeyBytesMax)));
  r.end();
  return { id, keys };
}

export function encodeOmapValues(values: ReadonlyArray<Buffer | undefined>): Buffer {
  const w = new Writer(256).varint(values.length);
  for (const v of values) optionalBytes(w, v);
  return w.finish();
}

export function decodeOmapValues(h: Buffer): Array<Buffer | undefined> {
  const r = reader(h, 'omap values');
  const n = r.varint(limits.listPageEntriesMax);
  const out: Array<Buffer | undefined> = [];
  for (let i = 0; i < n; i++) out.push(readOptionalBytes(r, limits.omapValueBytesMax));
  r.end();
  return out;
}

export function encodeOmapList(id: ObjectId, o: OmapListOptions): Buffer {
  const w = new Writer(128);
  writeId(w, id);
  optionalBytes(w, o.startKey);
  optionalBytes(w, o.endKey);
  optionalBytes(w, o.afterKey);
  optionalBytes(w, o.prefix);
  w.varint(o.limit).bool(o.reverse === true);
  return w.finish();
}

export function decodeOmapList(h: Buffer): { id: ObjectId; options: OmapListOptions } {
  const r = reader(h, 'omap list');
  const id = readId(r);
  const k = limits.omapKeyBytesMax;
  const startKey = readOptionalBytes(r, k);
  const endKey = readOptionalBytes(r, k);
  const afterKey = readOptionalBytes(r, k);
  const prefix = readOptionalBytes(r, k);
  const options: OmapListOptions = {
    ...(startKey ? { startKey } : {}),
    ...(endKey ? { endKey } : {}),
    ...(afterKey ? { afterKey } : {}),
    ...(prefix ? { prefix } : {}),
    limit: r.varint(limits.listPageEntriesMax),
    reverse: r.bool(),
  };
  r.end();
  return { id, options };
}

export function encodeOmapPage(p: OmapPage): Buffer {
  const w = new Writer(1024).bool(p.more).varint(p.entries.length);
  for (const [k, v] of p.entries) w.bytes(k).bytes(v);
  return w.finish();
}

export function decodeOmapPage(h: Buffer): OmapPage {
  const r = reader(h, 'omap page');
  const more = r.bool();
  const n = r.varint(limits.listPageEntriesMax);
  const entries: Array<[Buffer, Buffer]> = [];
  for (let i = 0; i < n; i++) entries.push([Buffer.from(r.bytes(limits.omapKeyBytesMax)), Buffer.from(r.bytes(limits.omapValueBytesMax))]);
  r.end();
  return { entries, more };
}

// --- object listing and space ---

export function encodeListObjects(o: ObjectListOptions): Buffer {
  const w = new Writer(64).u32(o.ns).varint(o.limit).bool(o.sortKeyRange !== undefined);
  if (o.sortKeyRange) w.varint(o.sortKeyRange.start).varint(o.sortKeyRange.end);
  w.bool(o.cursor !== undefined);
  if (o.cursor !== undefined) w.string(o.cursor);
  return w.finish();
}

export function decodeListObjects(h: Buffer): ObjectListOptions {
  const r = reader(h, 'object list');
  const ns = r.u32();
  const limit = r.varint(limits.listPageEntriesMax);
  const sortKeyRange = r.bool() ? { start: r.varint(0x1_0000_0000), end: r.varint(0x1_0000_0000) } : undefined;
  const cursor = r.bool() ? r.string(limits.objectNameBytesMax * 2) : undefined;
  r.end();
  return { ns, limit, ...(sortKeyRange ? { sortKeyRange } : {}), ...(cursor !== undefined ? { cursor } : {}) };
}

export function encodeObjectPage(p: ObjectListPage): Buffer {
  const w = new Writer(1024).varint(p.objects.length);
  for (const o of p.objects) w.string(o.name).u32(o.sortKey);
  w.bool(p.cursor !== undefined);
  if (p.cursor !== undefined) w.string(p.cursor);
  return w.finish();
}

export function decodeObjectPage(h: Buffer): ObjectListPage {
  const r = reader(h, 'object page');
  const n = r.varint(limits.listPageEntriesMax);
  const objects = [];
  for (let i = 0; i < n; i++) objects.push({ name: r.string(limits.objectNameBytesMax), sortKey: r.u32() });
  const cursor = r.bool() ? r.string(limits.objectNameBytesMax * 2) : undefined;
  r.end();
  return cursor !== undefined ? { objects, cursor } : { objects };
}

const spaceFields = ['totalBytes', 'usedBytes', 'freeBytes', 'logicalBytes', 'objects', 'segments', 'deadBytes'] as const;

export function encodeSpace(s: StoreSpace): Buffer {
  const w = new Writer(64);
  for (const f of spaceFields) w.varint(s[f]);
  return w.finish();
}

export function decodeSpace(h: Buffer): StoreSpace {
  const r = reader(h, 'space');
  const s = Object.fromEntries(spaceFields.map((f) => [f, r.varint()])) as unknown as StoreSpace;
  r.end();
  return s;
}
