/**
 * The cluster layer on the wire: clients talk to a placement group's primary
 * (opcodes 20-29), primaries talk to the pg's other members (40-59).
 *
 * Every request names its pg and carries the sender's map epoch: a daemon
 * with an older map fetches the newer one first; one with a newer map (in
 * which the sender is wrong about who does what) answers StaleEpoch.
 *
 * The hot messages (op, read, repop) are binary; the control messages of
 * peering and recovery (query, log, push, activate, list) carry a JSON
 * document in the header, parsed under a size limit and checked field by
 * field, because they are rare and their shape will grow.
 */
import { Reader, Writer } from '../lib/codec.js';
import { TesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { OmapListOptions, ReadOptions, StoreOp } from '../store/types.js';
import { decodeOmapList, decodeTransact, encodeOmapList, encodeTransact } from './store-messages.js';

export const OsdOpcode = {
  op: 20,
  read: 21,
  list: 22,
  /** Admin query: the states of the pgs this disk is primary of (`tessera status`). */
  pgStats: 23,
  /** Admin: scrub (and optionally repair) one pg at its primary (`tessera pg scrub`, `pool scrub`). */
  pgScrub: 24,
  /** Disk -> a pg's primary: is the pg clean (active, every member complete)? Asked before a stray copy is removed. */
  pgClean: 25,
  /** Admin query: the inconsistencies each pg's last scrub left unrepaired, for the pgs this disk is primary of (`tessera pg inconsistent`). */
  pgInconsistent: 26,
  /** Admin: rebuild one named shard of an erasure-coded object from k others, at the pg's primary (`tessera pg repair-shard`). */
  pgRepairShard: 27,
  repop: 40,
  pgQuery: 41,
  pgLog: 42,
  pgPush: 43,
  pgActivate: 44,
  pgList: 45,
  // 46-48: erasure-coded pools (src/protocol/ec-messages.ts EcOpcode).
  /** Primary -> member: a page of the member's scrub map of the pg. */
  pgScrubMap: 49,
  /** Disk -> disk it shares pgs with: are you there? Answered at once with the answering disk's id and epoch (src/daemon/peer-heartbeats.ts). */
  ping: 50,
} as const;

export interface PgRef {
  epoch: number;
  poolId: number;
  pg: number;
}

/** A pg version: versions grow by one per write; the epoch says which primary assigned it. */
export interface Eversion {
  epoch: number;
  version: number;
}

export const zeroVersion: Eversion = { epoch: 0, version: 0 };

/**
 * Orders versions epoch first: along one log both grow together, and between
 * divergent logs the one a later interval wrote wins (a longer log of an
 * older epoch holds writes that were never acknowledged).
 */
export function compareVersions(a: Eversion, b: Eversion): number {
  return a.epoch !== b.epoch ? a.epoch - b.epoch : a.version - b.version;
}

export interface RequestId {
  /** 16 random bytes per client instance, hex. */
  client: string;
  seq: number;
}

export type LogEntryKind = 'modify' | 'delete';

/** One write of the pg, as its log remembers it. */
export interface LogEntry extends Eversion {
  object: string;
  kind: LogEntryKind;
  request: RequestId | null;
}

const protocolError = (message: string): TesseraError => new TesseraError('ProtocolError', message);
const CLIENT_ID_BYTES = 16;

function writePg(w: Writer, p: PgRef): void {
  w.varint(p.epoch).varint(p.poolId).varint(p.pg);
}

function readPg(r: Reader): PgRef {
  return { epoch: r.varint(), poolId: r.varint(), pg: r.varint() };
}

function writeRequest(w: Writer, id: RequestId | null): void {
  w.bool(id !== null);
  if (id) w.raw(Buffer.from(id.client, 'hex')).varint(id.seq);
}

function readRequest(r: Reader): RequestId | null {
  if (!r.bool()) return null;
  return { client: r.raw(CLIENT_ID_BYTES).toString('hex'), seq: r.varint() };
}

export function writeEntry(w: Writer, e: LogEntry): void {
  w.varint(e.epoch).varint(e.version).string(e.object).u8(e.kind === 'modify' ? 0 : 1);
  writeRequest(w, e.request);
}

export function readEntry(r: Reader): LogEntry {
  const epoch = r.varint();
  const version = r.varint();
  const object = r.string(limits.objectNameBytesMax);
  const kind = r.u8() === 0 ? 'modify' : 'delete';
  return { epoch, version, object, kind, request: readRequest(r) };
}

// --- client -> primary: a transaction on one object ---

export interface OpRequest extends PgRef {
  request: RequestId;
  object: string;
  /** Store ops; their ids are ignored (the daemon fills in the pg's namespace and this object). */
  ops: StoreOp[];
}

export function encodeOp(o: OpRequest): { header: Buffer; payload: Buffer[] } {
  const t = encodeTransact(o.ops);
  const w = new Writer(64 + t.header.length);
  writePg(w, o);
  writeRequest(w, o.request);
  w.string(o.object).bytes(t.header);
  return { header: w.finish(), payload: t.payload };
}

export function decodeOp(header: Buffer, payload: Buffer): OpRequest {
  const r = new Reader(header, 'ProtocolError', 'op request');
  const pg = readPg(r);
  const request = readRequest(r);
  if (!request) throw protocolError('op request without a request id');
  const object = r.string(limits.objectNameBytesMax);
  const ops = decodeTransact(r.bytes(limits.frameHeaderBytesMax), payload);
  r.end();
  return { ...pg, request, object, ops };
}

export const encodeVersion = (v: Eversion): Buffer => new Writer(16).varint(v.epoch).varint(v.version).finish();

export function decodeVersion(header: Buffer): Eversion {
  const r = new Reader(header, 'ProtocolError', 'version');
  const v = { epoch: r.varint(), version: r.varint() };
  r.end();
  return v;
}

// --- client -> primary: reads ---

export type ReadKind =
  | { kind: 'data'; options: ReadOptions }
  | { kind: 'stat' }
  | { kind: 'xattrs' }
  | { kind: 'omapGet'; keys: Buffer[] }
  | { kind: 'omapList'; options: OmapListOptions };

export type ReadRequest = PgRef & { object: string } & ReadKind;

const readKinds = ['data', 'stat', 'xattrs', 'omapGet', 'omapList'] as const;

export function encodeRead(q: ReadRequest): Buffer {
  return encodeReadOf(q, q.object, q);
}

/**
 * encodeRead from its parts: what the client sends for every read, without
 * first spreading them into one object (a copy of five shapes of ReadKind
 * took V8's slow property-definition path: ~2% of a S3 gateway's CPU per
 * 4 KiB GET).
 */
export function encodeReadOf(ref: PgRef, object: string, q: ReadKind): Buffer {
  const w = new Writer(128);
  writePg(w, ref);
  w.string(object).u8(readKinds.indexOf(q.kind));
  switch (q.kind) {
    case 'data':
      w.varint(q.options.offsetBytes ?? 0).bool(q.options.lengthBytes !== undefined);
      if (q.options.lengthBytes !== undefined) w.varint(q.options.lengthBytes);
      break;
    case 'omapGet':
      w.varint(q.keys.length);
      for (const k of q.keys) w.bytes(k);
      break;
    case 'omapList':
      w.bytes(encodeOmapList({ ns: 0, name: 'x' }, q.options));
      break;
    default:
      break;
  }
  return w.finish();
}

export function decodeRead(header: Buffer): ReadRequest {
  const r = new Reader(header, 'ProtocolError', 'read request');
  const pg = readPg(r);
  const object = r.string(limits.objectNameBytesMax);
  const kind = readKinds[r.u8()];
  let q: ReadRequest;
  switch (kind) {
    case 'data': {
      const offsetBytes = r.varint();
      q = { ...pg, object, kind, options: r.bool() ? { offsetBytes, lengthBytes: r.varint() } : { offsetBytes } };
      break;
    }
    case 'omapGet': {
      const n = r.varint(limits.listPageEntriesMax);
      const keys: Buffer[] = [];
      for (let i = 0; i < n; i++) keys.push(Buffer.from(r.bytes(limits.omapKeyBytesMax)));
      q = { ...pg, object, kind, keys };
      break;
    }
    case 'omapList':
      q = { ...pg, object, kind, options: decodeOmapList(Buffer.from(r.bytes(64 * 1024))).options };
      break;
    case 'stat':
    case 'xattrs':
      q = { ...pg, object, kind };
      break;
    default:
      throw protocolError('unknown read kind');
  }
  r.end();
  return q;
}

// --- primary -> member: replicate one write ---

export interface Repop extends PgRef {
  entry: LogEntry;
  ops: StoreOp[];
}

export function encodeRepop(o: Repop): { header: Buffer; payload: Buffer[] } {
  const t = encodeTransact(o.ops);
  const w = new Writer(96 + t.header.length);
  writePg(w, o);
  writeEntry(w, o.entry);
  w.bytes(t.header);
  return { header: w.finish(), payload: t.payload };
}

export function decodeRepop(header: Buffer, payload: Buffer): Repop {
  const r = new Reader(header, 'ProtocolError', 'repop');
  const pg = readPg(r);
  const entry = readEntry(r);
  const ops = decodeTransact(r.bytes(limits.frameHeaderBytesMax), payload);
  r.end();
  return { ...pg, entry, ops };
}

// --- control messages: a JSON document in the header ---

const CONTROL_BYTES_MAX = 4 * 1024 * 1024;

export function encodeControl(value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value));
  if (body.length > CONTROL_BYTES_MAX) throw new TesseraError('LimitExceeded', `control message of ${body.length} bytes`);
  return body;
}

export function decodeControl(header: Buffer, what: string): Record<string, unknown> {
  if (header.length > CONTROL_BYTES_MAX) throw protocolError(`${what}: ${header.length} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(header.toString('utf8'));
  } catch {
    throw protocolError(`${what}: not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw protocolError(`${what}: not an object`);
  return value as Record<string, unknown>;
}

/** Field checks for control documents: each throws ProtocolError naming the field. */
export const field = {
  uint(doc: Record<string, unknown>, name: string): number {
    const v = doc[name];
    if (!Number.isSafeInteger(v) || (v as number) < 0) throw protocolError(`field ${name} is not an unsigned integer`);
    return v as number;
  },
  int(doc: Record<string, unknown>, name: string): number {
    const v = doc[name];
    if (!Number.isSafeInteger(v)) throw protocolError(`field ${name} is not an integer`);
    return v as number;
  },
  string(doc: Record<string, unknown>, name: string, maxBytes: number): string {
    const v = doc[name];
    if (typeof v !== 'string' || Buffer.byteLength(v) > maxBytes) throw protocolError(`field ${name} is not a string of at most ${maxBytes} bytes`);
    return v;
  },
  bool(doc: Record<string, unknown>, name: string): boolean {
    const v = doc[name];
    if (typeof v !== 'boolean') throw protocolError(`field ${name} is not a boolean`);
    return v;
  },
  version(doc: Record<string, unknown>, name: string): Eversion {
    const v = doc[name] as Record<string, unknown> | undefined;
    if (typeof v !== 'object' || v === null) throw protocolError(`field ${name} is not a version`);
    return { epoch: field.uint(v, 'epoch'), version: field.uint(v, 'version') };
  },
  intList(doc: Record<string, unknown>, name: string, maxItems: number): number[] {
    const v = doc[name];
    if (!Array.isArray(v) || v.length > maxItems || !v.every((x) => Number.isSafeInteger(x))) throw protocolError(`field ${name} is not a list of integers`);
    return v as number[];
  },
  object(doc: Record<string, unknown>, name: string): Record<string, unknown> {
    const v = doc[name];
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw protocolError(`field ${name} is not an object`);
    return v as Record<string, unknown>;
  },
  array(doc: Record<string, unknown>, name: string, maxItems: number): Array<Record<string, unknown>> {
    const v = doc[name];
    if (!Array.isArray(v) || v.length > maxItems || !v.every((x) => typeof x === 'object' && x !== null)) throw protocolError(`field ${name} is not a list of objects`);
    return v as Array<Record<string, unknown>>;
  },
};

export function entryFromJson(doc: Record<string, unknown>): LogEntry {
  const kind = field.string(doc, 'kind', 16);
  if (kind !== 'modify' && kind !== 'delete') throw protocolError('bad log entry kind');
  const req = doc.request as Record<string, unknown> | null | undefined;
  return {
    epoch: field.uint(doc, 'epoch'),
    version: field.uint(doc, 'version'),
    object: field.string(doc, 'object', limits.objectNameBytesMax),
    kind,
    request: req ? { client: field.string(req, 'client', 64), seq: field.uint(req, 'seq') } : null,
  };
}

// --- primary -> member: a fenced store transaction (recovery) ---

export interface PgPush extends PgRef {
  ops: StoreOp[];
}

export function encodePush(o: PgPush): { header: Buffer; payload: Buffer[] } {
  const t = encodeTransact(o.ops);
  const w = new Writer(32 + t.header.length);
  writePg(w, o);
  w.bytes(t.header);
  return { header: w.finish(), payload: t.payload };
}

export function decodePush(header: Buffer, payload: Buffer): PgPush {
  const r = new Reader(header, 'ProtocolError', 'pg push');
  const pg = readPg(r);
  const ops = decodeTransact(r.bytes(limits.frameHeaderBytesMax), payload);
  r.end();
  return { ...pg, ops };
}

export const encodePgRef = (p: PgRef): Buffer => {
  const w = new Writer(24);
  writePg(w, p);
  return w.finish();
};

export function decodePgRef(header: Buffer): PgRef {
  const r = new Reader(header, 'ProtocolError', 'pg reference');
  const p = readPg(r);
  r.end();
  return p;
}

/** What a member tells the primary when peering: its log and last interval. */
export interface MemberInfo {
  head: Eversion;
  tail: Eversion;
  lastEpochStarted: number;
  lastActing: number[];
  entries: LogEntry[];
  /** Erasure-coded pools: the shard position this member's data and log belong to (-1: unknown). */
  shard?: number;
  /** Erasure-coded pools: versions staged here and not committed (two-phase writes). */
  stagings?: Array<{ shard: number; entry: LogEntry }>;
}

export function memberInfoToJson(i: MemberInfo): unknown {
  return i;
}

export function memberInfoFromJson(doc: Record<string, unknown>): MemberInfo {
  return {
    head: field.version(doc, 'head'),
    tail: field.version(doc, 'tail'),
    lastEpochStarted: field.uint(doc, 'lastEpochStarted'),
    lastActing: field.intList(doc, 'lastActing', 64),
    entries: field.array(doc, 'entries', 100_000).map(entryFromJson),
    ...(doc.shard !== undefined ? { shard: field.int(doc, 'shard') } : {}),
    ...(doc.stagings !== undefined
      ? { stagings: field.array(doc, 'stagings', 100_000).map((st) => ({ shard: field.uint(st, 'shard'), entry: entryFromJson(field.object(st, 'entry')) })) }
      : {}),
  };
}

// --- stat and list replies / requests ---

export interface ObjectStatReply {
  sizeBytes: number;
  mtimeMs: number;
  xattrCount: number;
  version: Eversion;
}

export const encodeObjectStat = (s: ObjectStatReply): Buffer =>
  new Writer(32).varint(s.sizeBytes).varint(s.mtimeMs).varint(s.xattrCount).varint(s.version.epoch).varint(s.version.version).finish();

export function decodeObjectStat(header: Buffer): ObjectStatReply {
  const r = new Reader(header, 'ProtocolError', 'stat reply');
  const s = { sizeBytes: r.varint(), mtimeMs: r.varint(), xattrCount: r.varint(), version: { epoch: r.varint(), version: r.varint() } };
  r.end();
  return s;
}

export interface ListRequest extends PgRef {
  limit: number;
  cursor?: string;
}

export function encodeList(q: ListRequest): Buffer {
  const w = new Writer(64);
  writePg(w, q);
  w.varint(q.limit).bool(q.cursor !== undefined);
  if (q.cursor !== undefined) w.string(q.cursor);
  return w.finish();
}

export function decodeList(header: Buffer): ListRequest {
  const r = new Reader(header, 'ProtocolError', 'list request');
  const pg = readPg(r);
  const limit = r.varint(limits.listPageEntriesMax);
  const cursor = r.bool() ? r.string(limits.objectNameBytesMax * 2) : undefined;
  r.end();
  return { ...pg, limit, ...(cursor !== undefined ? { cursor } : {}) };
}
