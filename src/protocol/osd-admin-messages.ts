/**
 * The osd protocol's admin and scrub messages (opcodes in osd-messages.ts
 * OsdOpcode): what a daemon tells operators (pgStats, pgInconsistent), what
 * one disk asks a pg's primary before it removes a stray copy (pgClean),
 * scrub (pgScrub, and the members' scrub maps, pgScrubMap), the rebuild of one
 * named erasure-coded shard (pgRepairShard), and the ping of
 * heartbeats between pg peers. Like the control messages of peering, they
 * carry a JSON document in the header (osd-messages.ts encodeControl,
 * decodeControl, field), except the ping: two varints.
 */
import { Reader, Writer } from '../lib/codec.js';
import { TesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { decodeControl, encodeControl, field, type Eversion, type PgRef } from './osd-messages.js';

const protocolError = (message: string): TesseraError => new TesseraError('ProtocolError', message);

/** One pg a daemon is primary of, as pgStats reports it. */
export interface PgStat {
  poolId: number;
  pg: number;
  state: string;
  /** Map epoch its current interval started in. */
  intervalStart: number;
}

/** One pg's recovery, as its primary reports it (src/daemon/recovery-progress.ts). */
export interface PgRecoveryStat {
  poolId: number;
  pg: number;
  /** "recovery": log-based, before the pg goes active; "backfill": every object copied, maybe while active. */
  phase: 'recovery' | 'backfill';
  /** Members are being filled while the pg serves I/O without them. */
  background: boolean;
  objectsTotal: number;
  objectsDone: number;
  bytesDone: number;
  /** An estimate (objects left times the mean size copied so far); null before any copy. */
  bytesLeft: number | null;
  /** objectsTotal is extrapolated from a backfill's listing so far. */
  objectsEstimated: boolean;
  /** Wall-clock ms the recovery started. */
  startedAtMs: number;
}

/** A daemon's recovery as primary: totals since it started, the recent rate, the pgs recovering now. */
export interface RecoveryStats {
  objectsRecovered: number;
  bytesRecovered: number;
  objectsPerSec: number;
  bytesPerSec: number;
  /** The span the rate was measured over. */
  rateWindowMs: number;
  pgs: PgRecoveryStat[];
  /** The same rate by pool (pools with copies in the window only); absent from daemons older than this field. */
  pools?: PoolRecoveryRate[];
}

/** A daemon's recent recovery rate in one pool (the same window as RecoveryStats' rate). */
export interface PoolRecoveryRate {
  poolId: number;
  objectsPerSec: number;
  bytesPerSec: number;
}

/** A daemon's primary lease (src/daemon/lease.ts) when it answered. */
export interface LeaseStat {
  /** Whether it serves clients as a primary (always true when no map daemon grants leases: not fenced). */
  held: boolean;
  /** How long ago the lease ended, when it does not hold (null: none was granted yet, or it holds). */
  lapsedForMs: number | null;
  /** Times the lease ran out, and client requests refused meanwhile, since the daemon started. */
  lapses: number;
  refusals: number;
}

export interface PgStatsReply {
  diskId: number;
  /** The map epoch the daemon holds. */
  epoch: number;
  pgs: PgStat[];
  /** Absent from daemons older than this field (they report no recovery figures). */
  recovery?: RecoveryStats;
  /** Absent from daemons older than this field. */
  strays?: StrayStats;
  /** Absent from daemons older than this field (`tessera status` then cannot tell a lapsed lease). */
  lease?: LeaseStat;
}

/**
 * pgStats reply: a control document {diskId, epoch, pgs: [[poolId, pg, state, intervalStart], ...],
 * recovery?: {objectsRecovered, bytesRecovered, objectsPerSec, bytesPerSec, rateWindowMs, pgs: [{poolId, pg, ...}],
 * pools?: [{poolId, objectsPerSec, bytesPerSec}]}, strays?: {...}, lease?: {held, lapsedForMs, lapses, refusals}}.
 * `recovery`, `recovery.pools`, `strays` and `lease` were added later, in that order: readers that do not know a
 * field ignore it, and its absence means the daemon does not report it (older). Present, each is checked strictly.
 */
export function encodePgStats(r: PgStatsReply): Buffer {
  return encodeControl({
    diskId: r.diskId,
    epoch: r.epoch,
    pgs: r.pgs.map((p) => [p.poolId, p.pg, p.state, p.intervalStart]),
    ...(r.recovery ? { recovery: r.recovery } : {}),
    ...(r.strays ? { strays: r.strays } : {}),
    ...(r.lease ? { lease: r.lease } : {}),
  });
}

const finiteNumber = (doc: Record<string, unknown>, name: string): number => {
  const v = doc[name];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw protocolError(`pg stats: field ${name} is not a non-negative number`);
  return v;
};

function decodeRecoveryStats(doc: Record<string, unknown>): RecoveryStats {
  const rows = doc.pgs;
  if (!Array.isArray(rows)) throw protocolError('pg stats: recovery.pgs is not a list');
  const pgs = rows.map((row: unknown): PgRecoveryStat => {
    if (typeof row !== 'object' || row === null || Array.isArray(row)) throw protocolError('pg stats: bad recovery row');
    const r = row as Record<string, unknown>;
    const phase = r.phase;
    if (phase !== 'recovery' && phase !== 'backfill') throw protocolError('pg stats: bad recovery phase');
    const bytesLeft = r.bytesLeft === null ? null : field.uint(r, 'bytesLeft');
    return {
      poolId: field.uint(r, 'poolId'),
      pg: field.uint(r, 'pg'),
      phase,
      background: field.bool(r, 'background'),
      objectsTotal: field.uint(r, 'objectsTotal'),
      objectsDone: field.uint(r, 'objectsDone'),
      bytesDone: field.uint(r, 'bytesDone'),
      bytesLeft,
      objectsEstimated: field.bool(r, 'objectsEstimated'),
      startedAtMs: field.uint(r, 'startedAtMs'),
    };
  });
  // One entry per pool of the map at most.
  const pools = doc.pools === undefined ? undefined : field.array(doc, 'pools', limits.mapEntriesMax).map((p): PoolRecoveryRate => ({
    poolId: field.uint(p, 'poolId'),
    objectsPerSec: finiteNumber(p, 'objectsPerSec'),
    bytesPerSec: finiteNumber(p, 'bytesPerSec'),
  }));
  return {
    objectsRecovered: field.uint(doc, 'objectsRecovered'),
    bytesRecovered: field.uint(doc, 'bytesRecovered'),
    objectsPerSec: finiteNumber(doc, 'objectsPerSec'),
    bytesPerSec: finiteNumber(doc, 'bytesPerSec'),
    rateWindowMs: field.uint(doc, 'rateWindowMs'),
    pgs,
    ...(pools ? { pools } : {}),
  };
}

function decodeLeaseStat(doc: Record<string, unknown>): LeaseStat {
  const held = field.bool(doc, 'held');
  const lapsedForMs = doc.lapsedForMs === null ? null : field.uint(doc, 'lapsedForMs');
  if (held && lapsedForMs !== null) throw protocolError('pg stats: a lease that holds has no lapse time');
  return { held, lapsedForMs, lapses: field.uint(doc, 'lapses'), refusals: field.uint(doc, 'refusals') };
}

export function decodePgStats(header: Buffer): PgStatsReply {
  const doc = decodeControl(header, 'pg stats');
  const rows = doc.pgs;
  if (!Array.isArray(rows)) throw protocolError('pg stats: pgs is not a list');
  const pgs = rows.map((row: unknown): PgStat => {
    if (!Array.isArray(row) || row.length !== 4) throw protocolError('pg stats: bad row');
    const [poolId, pg, state, intervalStart] = row as unknown[];
    if (!Number.isSafeInteger(poolId) || !Number.isSafeInteger(pg) || typeof state !== 'string' || !Number.isSafeInteger(intervalStart)) throw protocolError('pg stats: bad row');
    return { poolId: poolId as number, pg: pg as number, state, intervalStart: intervalStart as number };
  });
  const recovery = doc.recovery === undefined ? undefined : decodeRecoveryStats(field.object(doc, 'recovery'));
  const s = doc.strays === undefined ? undefined : field.object(doc, 'strays');
  const strays = s ? { pgsWaiting: field.uint(s, 'pgsWaiting'), pgsRemoved: field.uint(s, 'pgsRemoved'), objectsRemoved: field.uint(s, 'objectsRemoved') } : undefined;
  const lease = doc.lease === undefined ? undefined : decodeLeaseStat(field.object(doc, 'lease'));
  return { diskId: field.uint(doc, 'diskId'), epoch: field.uint(doc, 'epoch'), pgs, ...(recovery ? { recovery } : {}), ...(strays ? { strays } : {}), ...(lease ? { lease } : {}) };
}

// --- stray copies (src/daemon/stray-cleanup.ts): control documents ---

/** pgClean request: a control document {epoch, poolId, pg}; the primary answers once it holds `epoch`. */
export type PgCleanRequest = PgRef;

export function decodePgCleanRequest(header: Buffer): PgCleanRequest {
  const doc = decodeControl(header, 'pg clean request');
  return { epoch: field.uint(doc, 'epoch'), poolId: field.uint(doc, 'poolId'), pg: field.uint(doc, 'pg') };
}

/** What a pg's primary says of it: clean, or why not; the interval it is in and its acting set (by position, -1: hole). */
export interface PgCleanReply {
  epoch: number;
  clean: boolean;
  reason: string;
  intervalStart: number;
  acting: number[];
}

export function decodePgCleanReply(header: Buffer): PgCleanReply {
  const doc = decodeControl(header, 'pg clean reply');
  return {
    epoch: field.uint(doc, 'epoch'),
    clean: field.bool(doc, 'clean'),
    reason: field.string(doc, 'reason', 1024),
    intervalStart: field.uint(doc, 'intervalStart'),
    acting: field.intList(doc, 'acting', 64),
  };
}

/** Stray copies a daemon holds (pgStats, optional): pgs waiting to be removed, and what it removed since it started. */
export interface StrayStats {
  pgsWaiting: number;
  pgsRemoved: number;
  objectsRemoved: number;
}

// --- scrub (src/daemon/pg-scrub.ts): control documents ---

export interface ScrubMapRequest extends PgRef {
  /** Deep: read every object's data (verifying its checksums) and digest it; else metadata only. */
  deep: boolean;
  /** Only these objects (a recheck); else the pg's objects from `cursor` on. */
  names?: string[];
  cursor?: string;
  /** Pace of the member's deep reads (0: unpaced; absent: its default). */
  bytesPerSec?: number;
}

/** One object as a member holds it: its digests, or the error reading it gave (Corrupt: a checksum failed). */
export type ScrubMapEntry =
  | { name: string; sizeBytes: number; version: Eversion; dataCrc: number | null; xattrsCrc: number; omapCrc: number; omapKeys: number }
  | { name: string; error: string };

export interface ScrubMapReply {
  entries: ScrubMapEntry[];
  cursor?: string;
}

export const SCRUB_NAMES_MAX = 1000;

export function decodeScrubMapRequest(header: Buffer): ScrubMapRequest {
  const doc = decodeControl(header, 'scrub map request');
  const names = doc.names;
  if (names !== undefined && (!Array.isArray(names) || names.length > SCRUB_NAMES_MAX || !names.every((n) => typeof n === 'string'))) throw protocolError('field names is not a list of names');
  return {
    epoch: field.uint(doc, 'epoch'),
    poolId: field.uint(doc, 'poolId'),
    pg: field.uint(doc, 'pg'),
    deep: field.bool(doc, 'deep'),
    ...(names !== undefined ? { names: names as string[] } : {}),
    ...(doc.cursor !== undefined ? { cursor: field.string(doc, 'cursor', limits.objectNameBytesMax * 2) } : {}),
    ...(doc.bytesPerSec !== undefined ? { bytesPerSec: field.uint(doc, 'bytesPerSec') } : {}),
  };
}

function scrubEntryFromJson(doc: Record<string, unknown>): ScrubMapEntry {
  const name = field.string(doc, 'name', limits.objectNameBytesMax);
  if (doc.error !== undefined) return { name, error: field.string(doc, 'error', 4096) };
  return {
    name,
    sizeBytes: field.uint(doc, 'sizeBytes'),
    version: field.version(doc, 'version'),
    dataCrc: doc.dataCrc === null ? null : field.uint(doc, 'dataCrc'),
    xattrsCrc: field.uint(doc, 'xattrsCrc'),
    omapCrc: field.uint(doc, 'omapCrc'),
    omapKeys: field.uint(doc, 'omapKeys'),
  };
}

export function decodeScrubMapReply(header: Buffer): ScrubMapReply {
  const doc = decodeControl(header, 'scrub map reply');
  return {
    entries: field.array(doc, 'entries', SCRUB_NAMES_MAX).map(scrubEntryFromJson),
    ...(doc.cursor !== undefined ? { cursor: field.string(doc, 'cursor', limits.objectNameBytesMax * 2) } : {}),
  };
}

export interface PgScrubRequest extends PgRef {
  deep: boolean;
  repair: boolean;
  bytesPerSec?: number;
}

export function decodePgScrubRequest(header: Buffer): PgScrubRequest {
  const doc = decodeControl(header, 'pg scrub request');
  return {
    epoch: field.uint(doc, 'epoch'),
    poolId: field.uint(doc, 'poolId'),
    pg: field.uint(doc, 'pg'),
    deep: field.bool(doc, 'deep'),
    repair: field.bool(doc, 'repair'),
    ...(doc.bytesPerSec !== undefined ? { bytesPerSec: field.uint(doc, 'bytesPerSec') } : {}),
  };
}

/**
 * What can be wrong with a member's copy (the closed list; docs/operations.md, "Scrub"). 'parity' (erasure-coded,
 * deep): the shard is readable but differs from the parity coded from the data shards. 'shard' (erasure-coded,
 * deep, two or more parity shards): a data shard that is readable but differs from what the other shards decode
 * to, while they all agree without it (the one wrong shard).
 */
export const INCONSISTENCY_KINDS = ['missing', 'extra', 'corrupt', 'error', 'version', 'size', 'data', 'xattrs', 'omap', 'parity', 'shard'] as const;
export type InconsistencyKind = (typeof INCONSISTENCY_KINDS)[number];

/** One object whose copy on one member differs from the authoritative copy. */
export interface Inconsistency {
  object: string;
  diskId: number;
  kinds: InconsistencyKind[];
  detail: string;
  /** The member the authoritative copy came from (null: the object should not exist, or no good copy). */
  authDiskId: number | null;
  repaired: boolean;
}

const KINDS: ReadonlySet<string> = new Set<string>(INCONSISTENCY_KINDS);
/** Bytes of an inconsistency's detail accepted in a reply or a stored record (details are a line or two; a stored one is cut to 1 KiB). */
export const INCONSISTENCY_DETAIL_BYTES_MAX = 16 * 1024;

/** Checks one inconsistency of a reply or a stored scrub record (ProtocolError naming what is wrong); `repaired` defaults to false. */
export function inconsistencyFromJson(doc: Record<string, unknown>): Inconsistency {
  const kinds = doc.kinds;
  if (!Array.isArray(kinds) || kinds.length === 0 || kinds.length > INCONSISTENCY_KINDS.length || !kinds.every((k) => typeof k === 'string' && KINDS.has(k))) {
    throw new TesseraError('ProtocolError', `field kinds is not a list of inconsistency kinds (${INCONSISTENCY_KINDS.join(', ')})`);
  }
  const auth = doc.authDiskId;
  if (auth !== null && !(Number.isSafeInteger(auth) && (auth as number) >= 0)) throw new TesseraError('ProtocolError', 'field authDiskId is neither null nor a disk id');
  return {
    object: field.string(doc, 'object', limits.objectNameBytesMax),
    diskId: field.uint(doc, 'diskId'),
    kinds: kinds as InconsistencyKind[],
    detail: field.string(doc, 'detail', INCONSISTENCY_DETAIL_BYTES_MAX),
    authDiskId: auth as number | null,
    repaired: doc.repaired === undefined ? false : field.bool(doc, 'repaired'),
  };
}

export interface PgScrubResult {
  poolId: number;
  pg: number;
  deep: boolean;
  /** Done, or why not (an erasure-coded pg: not scrubbed yet). */
  scrubbed: boolean;
  note?: string;
  members: number[];
  objects: number;
  bytesRead: number;
  inconsistencies: Inconsistency[];
}

/** pgInconsistent request: every pg this disk is primary of, or one pool's, or one pg's. */
export interface PgInconsistentRequest {
  poolId?: number;
  pg?: number;
}

export function decodePgInconsistentRequest(header: Buffer): PgInconsistentRequest {
  const doc = decodeControl(header, 'pg inconsistent request');
  return {
    ...(doc.poolId !== undefined ? { poolId: field.uint(doc, 'poolId') } : {}),
    ...(doc.pg !== undefined ? { pg: field.uint(doc, 'pg') } : {}),
  };
}

/** What one pg's last scrub left unrepaired. */
export interface PgInconsistentReport {
  poolId: number;
  pg: number;
  deep: boolean;
  /** How long ago that scrub ended (the daemon's wall clock: the time is kept across restarts). */
  scrubbedAgoMs: number;
  /** All it left; `inconsistencies` lists the first of them (a reply lists at most limits.scrubInconsistenciesReportedMax in all). */
  unrepaired: number;
  inconsistencies: Inconsistency[];
}

export interface PgInconsistentReply {
  diskId: number;
  epoch: number;
  pgs: PgInconsistentReport[];
}

export function decodePgInconsistentReply(header: Buffer): PgInconsistentReply {
  const doc = decodeControl(header, 'pg inconsistent reply');
  field.uint(doc, 'diskId');
  field.uint(doc, 'epoch');
  for (const p of field.array(doc, 'pgs', 1_000_000)) {
    field.uint(p, 'poolId');
    field.uint(p, 'pg');
    field.uint(p, 'unrepaired');
    p.inconsistencies = field.array(p, 'inconsistencies', 1_000_000).map(inconsistencyFromJson);
  }
  return doc as unknown as PgInconsistentReply;
}

export function decodePgScrubResult(header: Buffer): PgScrubResult {
  const doc = decodeControl(header, 'pg scrub result');
  field.uint(doc, 'poolId');
  field.uint(doc, 'pg');
  field.bool(doc, 'scrubbed');
  doc.inconsistencies = field.array(doc, 'inconsistencies', 1_000_000).map(inconsistencyFromJson);
  return doc as unknown as PgScrubResult;
}

// --- rebuilding one named shard (src/daemon/shard-repair.ts, `tessera pg repair-shard`) ---

/** Rebuild the shard of `name` at `position` (or the one disk `diskId` holds) from k other shards. Exactly one of the two. */
export interface ShardRepairRequest extends PgRef {
  name: string;
  position?: number;
  diskId?: number;
}

export interface ShardRepairResult {
  poolId: number;
  pg: number;
  name: string;
  position: number;
  /** The member whose shard was replaced. */
  diskId: number;
  /** The positions it was rebuilt from (k or more others at the object's version). */
  sources: number[];
  /** The version rebuilt ("epoch'version"). */
  version: string;
  /** Shard bytes written. */
  shardBytes: number;
}

export function decodeShardRepairRequest(header: Buffer): ShardRepairRequest {
  const doc = decodeControl(header, 'shard repair request');
  const r: ShardRepairRequest = {
    epoch: field.uint(doc, 'epoch'),
    poolId: field.uint(doc, 'poolId'),
    pg: field.uint(doc, 'pg'),
    name: field.string(doc, 'name', limits.objectNameBytesMax),
    ...(doc.position !== undefined ? { position: field.uint(doc, 'position') } : {}),
    ...(doc.diskId !== undefined ? { diskId: field.uint(doc, 'diskId') } : {}),
  };
  if ((r.position === undefined) === (r.diskId === undefined)) throw protocolError('a shard repair names a position or a disk, exactly one');
  return r;
}

export function decodeShardRepairResult(header: Buffer): ShardRepairResult {
  const doc = decodeControl(header, 'shard repair result');
  return {
    poolId: field.uint(doc, 'poolId'),
    pg: field.uint(doc, 'pg'),
    name: field.string(doc, 'name', limits.objectNameBytesMax),
    position: field.uint(doc, 'position'),
    diskId: field.uint(doc, 'diskId'),
    sources: field.intList(doc, 'sources', 64),
    version: field.string(doc, 'version', 64),
    shardBytes: field.uint(doc, 'shardBytes'),
  };
}

// --- heartbeats between pg peers (src/daemon/peer-heartbeats.ts) ---

/** A ping and its answer: who sends (or answers) and the map epoch it holds. Two varints, nothing else. */
export interface PeerPing {
  diskId: number;
  epoch: number;
}

export function encodePing(p: PeerPing): Buffer {
  return new Writer(12).varint(p.diskId).varint(p.epoch).finish();
}

export function decodePing(header: Buffer): PeerPing {
  const r = new Reader(header, 'ProtocolError', 'ping');
  const p = { diskId: r.varint(0xffff_ffff), epoch: r.varint() };
  r.end();
  return p;
}
