/**
 * Erasure-coded pools on the wire: the primary's two-phase shard writes to
 * each member (opcodes 46-47) and peering's resolution of pending versions
 * (48). Like repop they name the pg and carry the sender's map epoch; a
 * member refuses one that predates its pg's interval.
 *
 * - ecStage: the member's commit record (opaque here: src/daemon/ec-record.ts
 *   encodes it) in the header, its new chunk bytes as the payload.
 * - ecCommit: which staged version to commit, by its log entry.
 * - ecResolve: the versions a member must commit from its staging objects,
 *   in order; every other staging object of the pg is removed.
 */
import { Reader, Writer } from '../lib/codec.js';
import { readEntry, writeEntry, type LogEntry, type PgRef } from './osd-messages.js';

export const EcOpcode = {
  stage: 46,
  commit: 47,
  resolve: 48,
} as const;

const RECORD_BYTES_MAX = 512 * 1024;
const RESOLVE_ENTRIES_MAX = 100_000;

function writePg(w: Writer, p: PgRef): void {
  w.varint(p.epoch).varint(p.poolId).varint(p.pg);
}

function readPg(r: Reader): PgRef {
  return { epoch: r.varint(), poolId: r.varint(), pg: r.varint() };
}

export interface EcStage extends PgRef {
  record: Buffer;
  /** The member's bytes; sent as pieces, received as one buffer. */
  data: Buffer;
}

export function encodeEcStage(m: PgRef & { record: Buffer; data: readonly Uint8Array[] }): { header: Buffer; payload: readonly Uint8Array[] } {
  const w = new Writer(32 + m.record.length);
  writePg(w, m);
  w.bytes(m.record);
  return { header: w.finish(), payload: m.data };
}

export function decodeEcStage(header: Buffer, payload: Buffer): EcStage {
  const r = new Reader(header, 'ProtocolError', 'EC stage');
  const pg = readPg(r);
  const record = r.bytes(RECORD_BYTES_MAX);
  r.end();
  return { ...pg, record, data: payload };
}

export interface EcCommit extends PgRef {
  shard: number;
  entry: LogEntry;
}

export function encodeEcCommit(m: EcCommit): Buffer {
  const w = new Writer(64 + m.entry.object.length * 3);
  writePg(w, m);
  w.varint(m.shard);
  writeEntry(w, m.entry);
  return w.finish();
}

export function decodeEcCommit(header: Buffer): EcCommit {
  const r = new Reader(header, 'ProtocolError', 'EC commit');
  const pg = readPg(r);
  const shard = r.varint(255);
  const entry = readEntry(r);
  r.end();
  return { ...pg, shard, entry };
}

export interface EcResolve extends PgRef {
  commit: LogEntry[];
}

export function encodeEcResolve(m: EcResolve): Buffer {
  const w = new Writer(64 + 64 * m.commit.length);
  writePg(w, m);
  w.varint(m.commit.length);
  for (const e of m.commit) writeEntry(w, e);
  return w.finish();
}

export function decodeEcResolve(header: Buffer): EcResolve {
  const r = new Reader(header, 'ProtocolError', 'EC resolve');
  const pg = readPg(r);
  const commit: LogEntry[] = [];
  for (let n = r.varint(RESOLVE_ENTRIES_MAX); n > 0; n--) commit.push(readEntry(r));
  r.end();
  return { ...pg, commit };
}
