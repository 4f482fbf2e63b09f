/**
 * Scrub of a placement group, run by its primary: every acting
 * member (backfilling ones excepted) builds a scrub map of its copies of the
 * pg (per object: size, version xattr, crc32c of the xattrs and of the omap;
 * deep: also of the data, read whole, which verifies every stored checksum),
 * the primary compares them object by object, and reports each member whose
 * copy differs from the authoritative one: missing, extra (the pg log says
 * the object was deleted), corrupt (a checksum failed there), version, size,
 * data, xattrs or omap.
 *
 * The authoritative copy: among the readable copies of the newest version,
 * the primary's if it is one of them, else the digest most members share.
 * Writes land on members at slightly different times, so a first pass only
 * names suspects: each is compared again once no write of it is in flight,
 * and with --repair once more under the pg's write gate (pg-repair.ts), where
 * the authoritative copy is pushed to every member that differs (the
 * recovery copy: data, xattrs with the version, omap), or removed where the
 * log says it was deleted.
 *
 * Erasure-coded pgs: each member holds its shard position's object, so the
 * comparison is of presence, version and readability (a deep scrub reads
 * every shard whole, verifying its chunk checksums: the primary's parity
 * check reads them, so the members' maps are shallow and each shard is read
 * once; a shard that fails that read, and every suspect, is read deep by its
 * members under the object's lock); a bad shard is rebuilt
 * from k good ones by the recovery rebuild (ec-recovery.ts), under the
 * object's lock (writes of it hold it from staging to commit); never when
 * fewer than k members hold the authoritative version (reported, left).
 * Shards of a version fewer than k members hold that the pg log says never
 * committed are not authoritative (mayBeCommitted). A deep scrub also codes
 * each object's parity again from its data shards and compares it with the
 * stored parity (ec-scrub.ts): a parity shard whose bytes are wrong but whose
 * checksums match is reported ('parity') when another parity shard agrees
 * with the data. When every parity shard differs, a data shard may be the
 * wrong one: with two or more parity shards, the one data shard whose
 * absence leaves every other shard consistent is reported ('shard'). Either
 * is rebuilt (parity from the data; a 'shard' from the others, the same
 * rebuild under the same lock) only when the parity shards checked tell
 * those w wrong shards from w + 1 (p >= 2w + 1, parityOf); otherwise, when
 * no shard or more than one explains it (two shards wrong), and always with
 * one parity shard, coding from the shards could make the damage permanent,
 * so it is reported and left (`tessera pg inconsistent`).
 *
 * Only the pg's primary in the interval the scrub began in compares, repairs
 * and writes the scrub record (primaryIn); a pg whose pool was removed
 * meanwhile writes none.
 *
 * What a scrub leaves unrepaired and when it ran are kept on the pg and in
 * its scrub record on disk (scrub-record.ts), so they survive a restart.
 *
 * Limits: a scrub holds every member's map of the pg in memory
 * (scrubObjectsPerPgMax objects), pages of scrubMapPageObjectsMax; members
 * pace their deep reads (bytesPerSec), the primary its parity checks (one
 * object at a time, bytesPerSec over all shards: an erasure-coded deep
 * scrub's only paced reads). The background scheduler (scrub-scheduler.ts) scrubs
 * one pg at a time.
 */
import { crc32c } from '../../native/index.js';
import { isTesseraError, TesseraError, toTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { pgSortKeyRange } from '../lib/hash.js';
import { compareVersions, encodeControl, OsdOpcode, zeroVersion } from '../protocol/osd-messages.js';
import { decodeScrubMapReply, SCRUB_NAMES_MAX, type Inconsistency, type InconsistencyKind, type PgScrubResult, type ScrubMapEntry, type ScrubMapReply, type ScrubMapRequest } from '../protocol/osd-admin-messages.js';
import type { ObjectId, StoreApi } from '../store/types.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';
import { dataNs, decodeVersionValue, encodeVersionValue, VERSION_XATTR } from './pg-log.js';
import { copyObject } from './peering.js';
import { positionOf } from './ec-member.js';
import { rebuildObject, type RecoveryMember } from './ec-recovery.js';
import { withPgQuiet } from './pg-repair.js';
import { notPrimary } from './members.js';
import { checkParity, type WrongShard } from './ec-scrub.js';
import { HOLE } from '../../cluster/placement.js';
import { scrubRecordOps } from './scrub-record.js';

const READ_PIECE_BYTES = 4 * 1024 * 1024;
const OMAP_PAGE = 1000;
const SCRUB_MAP_TIMEOUT_MS = 300_000;

type Digest = Exclude<ScrubMapEntry, { error: string }>;
const isDigest = (e: ScrubMapEntry | undefined): e is Digest => e !== undefined && !('error' in e);

// --- member side: the scrub map ---

/** One object's scrub map entry; null when it is absent. Deep reads are paced at bytesPerSec. */
async function entryOf(osd: Osd, id: ObjectId, deep: boolean, bytesPerSec: number): Promise<ScrubMapEntry | null> {
  const store: StoreApi = osd.store;
  try {
    const { sizeBytes } = await store.stat(id);
    const xattrs = await store.getXattrs(id);
    const v = xattrs.get(VERSION_XATTR);
    const version = v ? decodeVersionValue(v) : zeroVersion;
    let xattrsCrc = 0;
    const sorted = [...xattrs].filter(([k]) => k !== VERSION_XATTR).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [k, value] of sorted) xattrsCrc = crc32c(value, crc32c(Buffer.from(`${k}\0`), xattrsCrc));
    let omapCrc = 0;
    let omapKeys = 0;
    let afterKey: Buffer | undefined;
    for (;;) {
      const page = await store.omapList(id, { limit: OMAP_PAGE, ...(afterKey ? { afterKey } : {}) });
      for (const [k, value] of page.entries) omapCrc = crc32c(value, crc32c(k, omapCrc));
      omapKeys += page.entries.length;
      if (!page.more || page.entries.length === 0) break;
      afterKey = page.entries[page.entries.length - 1]![0];
    }
    let dataCrc: number | null = null;
    if (deep) {
      dataCrc = 0;
      for (let at = 0; at < sizeBytes; at += READ_PIECE_BYTES) {
        dataCrc = crc32c(await store.read(id, { offsetBytes: at, lengthBytes: Math.min(READ_PIECE_BYTES, sizeBytes - at) }), dataCrc);
      }
      if (bytesPerSec > 0 && sizeBytes > 0) await osd.io.clock.sleep((sizeBytes / bytesPerSec) * 1000);
    }
    return { name: id.name, sizeBytes, version, dataCrc, xattrsCrc, omapCrc, omapKeys };
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return null;
    const e = toTesseraError(err);
    return { name: id.name, error: `${e.code}: ${e.message}` };
  }
}

/** Where this member keeps the pg's objects: erasure-coded pgs, the namespace of its shard position. */
const localNs = (osd: Osd, pg: Pg): number => (pg.ec ? dataNs(pg.pool.id, positionOf(osd, pg)) : pg.objectId('x').ns);

/** A page of this member's scrub map of the pg (the objects named, or the pg's objects from the cursor on). */
export async function scrubMapPage(osd: Osd, pg: Pg, q: ScrubMapRequest): Promise<ScrubMapReply> {
  const rate = q.bytesPerSec ?? limits.scrubBytesPerSecDefault;
  const entries: ScrubMapEntry[] = [];
  const ns = localNs(osd, pg);
  const add = async (name: string): Promise<void> => {
    const e = await entryOf(osd, { ns, name }, q.deep, rate);
    if (e) entries.push(e);
  };
  if (q.names) {
    for (const name of q.names) await add(name);
    return { entries };
  }
  const page = await osd.store.listObjects({
    ns,
    sortKeyRange: pgSortKeyRange(pg.pg, Math.log2(pg.pool.pgCount)),
    limit: limits.scrubMapPageObjectsMax,
    ...(q.cursor !== undefined ? { cursor: q.cursor } : {}),
  });
  for (const o of page.objects) await add(o.name);
  return { entries, ...(page.cursor ? { cursor: page.cursor } : {}) };
}

// --- primary side ---

export interface PgScrubOptions {
  deep: boolean;
  repair: boolean;
  /** Members' deep read pace; default limits.scrubBytesPerSecDefault (0: unpaced). */
  bytesPerSec?: number;
}

type MemberMap = Map<string, ScrubMapEntry>;

/** A member's scrub map of the pg (whole, or of the objects named). */
async function memberMap(osd: Osd, pg: Pg, diskId: number, o: PgScrubOptions, names?: string[]): Promise<MemberMap> {
  const map: MemberMap = new Map();
  const ask = async (q: ScrubMapRequest): Promise<ScrubMapReply> => {
    const withRate = { ...q, ...(o.bytesPerSec !== undefined ? { bytesPerSec: o.bytesPerSec } : {}) };
    if (diskId === osd.diskId) return scrubMapPage(osd, pg, withRate);
    const reply = await osd.peers.rpc(diskId).call(OsdOpcode.pgScrubMap, encodeControl(withRate), [], { timeoutMs: SCRUB_MAP_TIMEOUT_MS });
    return decodeScrubMapReply(reply.header);
  };
  const ref = { epoch: osd.view.epoch, poolId: pg.pool.id, pg: pg.pg, deep: o.deep };
  if (names) {
    for (let i = 0; i < names.length; i += SCRUB_NAMES_MAX) {
      for (const e of (await ask({ ...ref, names: names.slice(i, i + SCRUB_NAMES_MAX) })).entries) map.set(e.name, e);
    }
    return map;
  }
  let cursor: string | undefined;
  do {
    const page = await ask({ ...ref, ...(cursor !== undefined ? { cursor } : {}) });
    for (const e of page.entries) map.set(e.name, e);
    if (map.size > limits.scrubObjectsPerPgMax) throw new TesseraError('LimitExceeded', `pg ${pg.key}: more than ${limits.scrubObjectsPerPgMax} objects on disk ${diskId}; not scrubbed`);
    cursor = page.cursor;
  } while (cursor !== undefined);
  return map;
}

const digestKey = (d: Digest, deep: boolean): string => `${d.sizeBytes}/${deep ? d.dataCrc : ''}/${d.xattrsCrc}/${d.omapCrc}/${d.omapKeys}`;
const showVersion = (v: { epoch: number; version: number }): string => `${v.epoch}'${v.version}`;

/** The newest log entry of an object in the primary's log (the log is bounded: older writes are not there). */
function lastLogEntry(pg: Pg, name: string): { kind: string; epoch: number; version: number } | undefined {
  const entries = pg.log.entries;
  for (let i = entries.length - 1; i >= 0; i--) if (entries[i]!.object === name) return entries[i];
  return undefined;
}

/**
 * Erasure-coded: whether shards at version `v` could be of a committed write of `name`. A commit needs every
 * acting member, and the primary's log holds every commit past its tail: a version past the tail that no
 * entry of the object has was never committed (a write that failed between stage and commit, left by a bug).
 */
function mayBeCommitted(pg: Pg, name: string, v: { epoch: number; version: number }): boolean {
  return compareVersions(v, pg.log.tail) <= 0 || pg.log.entries.some((e) => e.object === name && e.epoch === v.epoch && e.version === v.version);
}

/**
 * Compares one object's copies; the inconsistencies (each member that differs from the authoritative copy).
 * Erasure-coded pgs: each member holds a different shard, so only presence, readability (deep: every
 * chunk checksum) and version are compared; authDiskId names a member with a good shard (the repair
 * rebuilds from k of them; null when fewer than k members hold the authoritative version: it cannot). Shards
 * of a version fewer than k members hold and the pg log says never committed are never authoritative: they
 * are reported as a wrong version (rebuilt at the committed one), or as extra when no member has another.
 */
export function judgeObject(pg: Pg, name: string, members: number[], maps: Map<number, MemberMap>, deep: boolean): Inconsistency[] {
  const ec = pg.ec !== null;
  const copies = members.map((diskId) => ({ diskId, e: maps.get(diskId)!.get(name) }));
  const readable = copies.filter((c): c is { diskId: number; e: Digest } => isDigest(c.e));
  const holders = (v: Digest['version']): number => readable.filter((c) => compareVersions(c.e.version, v) === 0).length;
  const isUncommitted = (d: Digest): boolean => pg.ec !== null && holders(d.version) < pg.ec.layout.dataShards && !mayBeCommitted(pg, name, d.version);
  const uncommitted = new Set(readable.filter((c) => isUncommitted(c.e)).map((c) => c.diskId));
  const good = readable.filter((c) => !uncommitted.has(c.diskId));
  let newest: Digest | undefined;
  for (const c of good) if (!newest || compareVersions(c.e.version, newest.version) > 0) newest = c.e;
  const last = lastLogEntry(pg, name);
  const out: Inconsistency[] = [];
  const add = (diskId: number, kinds: InconsistencyKind[], detail: string, authDiskId: number | null): void => {
    out.push({ object: name, diskId, kinds, detail, authDiskId, repaired: false });
  };
  const neverCommitted = (d: Digest): string => `version ${showVersion(d.version)}, which no pg log entry has (a write that never committed)`;
  if (last?.kind === 'delete' && (!newest || compareVersions(last, newest.version) >= 0)) {
    for (const c of copies) if (c.e) add(c.diskId, ['extra'], `present; the pg log deleted it at ${showVersion(last)}`, null);
    return out;
  }
  if (!newest) {
    for (const c of copies) {
      if (isDigest(c.e)) add(c.diskId, ['extra'], `${neverCommitted(c.e)}; no member has a committed version`, null);
      else if (c.e) add(c.diskId, [c.e.error.startsWith('Corrupt') ? 'corrupt' : 'error'], `${c.e.error}; no member has a good copy`, null);
      else if (uncommitted.size === 0) add(c.diskId, ['missing'], 'absent; no member has a good copy', null);
    }
    return out;
  }
  // Readable copies of the newest version, grouped by digest: the primary's group, else the largest.
  const groups = new Map<string, number[]>();
  for (const c of good) {
    if (compareVersions(c.e.version, newest.version) !== 0) continue;
    const k = ec ? 'shard' : digestKey(c.e, deep);
    groups.set(k, [...(groups.get(k) ?? []), c.diskId]);
  }
  let chosen: number[] = [];
  for (const g of groups.values()) if (g.includes(members[0]!) || (!chosen.includes(members[0]!) && g.length > chosen.length)) chosen = g;
  const authDiskId = chosen[0]!;
  const auth = good.find((c) => c.diskId === authDiskId)!.e;
  // Erasure-coded: a rebuild reads k shards of the authoritative version; with fewer, report only.
  const cannot = pg.ec !== null && chosen.length < pg.ec.layout.dataShards;
  const from = cannot ? null : authDiskId;
  const note = cannot ? `; only ${chosen.length} shards at version ${showVersion(auth.version)}, ${pg.ec!.layout.dataShards} needed to rebuild` : '';
  for (const c of copies) {
    if (chosen.includes(c.diskId)) continue;
    if (!c.e) {
      add(c.diskId, ['missing'], `absent (disk ${authDiskId} holds version ${showVersion(auth.version)})${note}`, from);
      continue;
    }
    if ('error' in c.e) {
      add(c.diskId, [c.e.error.startsWith('Corrupt') ? 'corrupt' : 'error'], c.e.error + note, from);
      continue;
    }
    const kinds: InconsistencyKind[] = [];
    const details: string[] = [];
    const d = c.e;
    if (compareVersions(d.version, auth.version) !== 0) {
      kinds.push('version');
      details.push(`${uncommitted.has(c.diskId) ? neverCommitted(d) : `version ${showVersion(d.version)}`}, not ${showVersion(auth.version)}${note}`);
    }
    if (ec) {
      add(c.diskId, kinds, details.join('; '), from);
      continue;
    }
    if (d.sizeBytes !== auth.sizeBytes) (kinds.push('size'), details.push(`size ${d.sizeBytes}, not ${auth.sizeBytes}`));
    if (deep && d.dataCrc !== auth.dataCrc) (kinds.push('data'), details.push('data digest differs'));
    if (d.xattrsCrc !== auth.xattrsCrc) (kinds.push('xattrs'), details.push('xattrs differ'));
    if (d.omapCrc !== auth.omapCrc || d.omapKeys !== auth.omapKeys) (kinds.push('omap'), details.push(`omap differs (${d.omapKeys} keys, not ${auth.omapKeys})`));
    add(c.diskId, kinds, details.join('; '), authDiskId);
  }
  return out;
}

/**
 * Erasure-coded: whether a deep scrub's parity check reads every member's shard of each object it checks
 * whole: every data position is a member and at least one parity position is (else parityOf checks nothing,
 * and the members' own deep reads verify the shards).
 */
function parityReadsEveryShard(pg: Pg, members: number[]): boolean {
  const ec = pg.ec;
  if (!ec) return false;
  const at = (p: number): boolean => pg.positions[p] !== undefined && pg.positions[p] !== HOLE && members.includes(pg.positions[p]!);
  const k = ec.layout.dataShards;
  return Array.from({ length: k }, (_, p) => p).every(at) && Array.from({ length: ec.layout.parityShards }, (_, j) => k + j).some(at);
}

/**
 * Erasure-coded, deep: the parity check of one object (ec-scrub.ts) whose members all hold a readable shard
 * at one version, every data position among them; its parity inconsistencies, 'changed' when a write moved
 * it meanwhile, 'unreadable' when a shard read failed (a checksum, say: the members' deep maps say which), or
 * null when it cannot be checked (a hole, a member without a good shard: what judgeObject reports, or nothing
 * to check).
 */
async function parityOf(osd: Osd, pg: Pg, name: string, members: number[], maps: Map<number, MemberMap>, bytesPerSec: number): Promise<Inconsistency[] | 'changed' | 'unreadable' | null> {
  const ec = pg.ec;
  if (!ec) return null;
  const digests = members.map((d) => maps.get(d)?.get(name));
  if (!digests.every(isDigest)) return null;
  const first = digests[0]!;
  if (digests.some((d) => compareVersions(d.version, first.version) !== 0)) return null;
  const stores: Array<StoreApi | null> = pg.positions.map((d) => (d !== HOLE && members.includes(d) ? osd.memberHandle(pg, d).store : null));
  for (let p = 0; p < ec.layout.dataShards; p++) if (!stores[p]) return null;
  const shardBytes = Math.max(...digests.map((d) => d.sizeBytes));
  const check = await checkParity({ poolId: pg.pool.id, layout: ec.layout, codec: ec.codec, name, stores, version: encodeVersionValue(first.version), shardBytes, bytesPerSec, clock: osd.io.clock });
  if (check.kind === 'changed' || check.kind === 'unreadable') return check.kind;
  if (check.kind !== 'wrong') return null;
  const stripes = shardBytes / ec.layout.unitBytes;
  // The object's shards are a word of the code restricted to the shards checked: k data + `checked` parity, of
  // distance checked + 1. When some parity shard agrees with the data, the fewest wrong shards that explain it are the
  // parity shards that differ (w of them); when none agrees, one data shard may explain it (withoutOne). Either is
  // the right explanation only if no other pattern of at most w + 1 wrong shards gives the same bytes, which the
  // distance guarantees from checked >= 2w + 1 on (correct w, detect w + 1). Below that, the finding is reported,
  // never rebuilt: two data shards swapped, say, leave an all-ones parity row agreeing and another differing, which
  // looks exactly like that other parity shard alone wrong; rebuilding it from the data would make the loss permanent.
  const wrongAt = new Set(check.parity.map((w) => w.position));
  const agreeing = check.checked.filter((p) => !wrongAt.has(p));
  const culprit = agreeing.length === 0 && check.withoutOne?.length === 1 ? check.withoutOne[0]! : null;
  if (culprit && culprit.position < ec.layout.dataShards) return [wrongDataShard(pg, name, check.checked, culprit, stripes, stores)];
  const repairable = agreeing.length > 0 && correctable(check.parity.length, check.checked.length);
  const why =
    agreeing.length > 0
      ? `; parity shard${agreeing.length > 1 ? 's' : ''} ${agreeing.join(', ')} agree${agreeing.length > 1 ? '' : 's'} with the data` +
        (repairable ? '' : `; with ${check.checked.length} parity shards checked, ${check.parity.length} wrong parity shard${check.parity.length > 1 ? 's' : ''} cannot be told from wrong data shards (two swapped, say): not repaired (rebuilding parity from wrong data would make the loss permanent)`)
      : check.checked.length === 1
        ? '; a data shard or this parity shard is wrong, and with one parity shard it cannot be told which: not repaired (rebuilding parity from a wrong data shard would make it permanent)'
        : `; every parity shard (${check.checked.join(', ')}) differs, and ${check.withoutOne?.length ? `${check.withoutOne.length} shards (${check.withoutOne.map((w) => w.position).join(', ')}) each` : 'no shard'} left out leave${check.withoutOne?.length ? '' : 's'} the others consistent: more than one shard may be wrong: not repaired (rebuilding from a wrong shard would make it permanent)`;
  return check.parity.map((w) => ({
    object: name,
    diskId: pg.positions[w.position]!,
    kinds: ['parity'],
    detail: `parity shard ${w.position} differs from the parity of the data shards in ${w.stripes} of ${stripes} stripes (first at shard byte ${w.firstOffsetBytes}); its checksums pass${why}`,
    // The rebuild codes it from the data shards: a data member names where the good copy comes from. Not repairable: none.
    authDiskId: repairable ? pg.positions[0]! : null,
    repaired: false,
  }));
}

/** Whether `wrong` shards found by the parity check can be rebuilt: `checked` parity shards compared tell them from `wrong` + 1 (distance >= 2 wrong + 2). */
const correctable = (wrong: number, checked: number): boolean => checked >= 2 * wrong + 1;

/**
 * Erasure-coded, deep: the one data shard whose absence leaves every other shard read consistent (ec-scrub.ts
 * withoutOne), while every parity shard differs from the parity of the data. With 3 or more parity shards checked
 * it is rebuilt from the others (repairEcObject: any k of them decode the same bytes; authDiskId names one of
 * them); with 2, two other shards wrong in one pattern (swapped, say) look exactly like it: named, not rebuilt.
 */
function wrongDataShard(pg: Pg, name: string, checked: number[], w: WrongShard, stripes: number, stores: ReadonlyArray<StoreApi | null>): Inconsistency {
  const others = stores.map((s, p) => (s && p !== w.position ? p : -1)).filter((p) => p >= 0);
  const repairable = correctable(1, checked.length);
  return {
    object: name,
    diskId: pg.positions[w.position]!,
    kinds: ['shard'],
    detail:
      `data shard ${w.position} differs from what the other ${others.length} shards (${others.join(', ')}) decode to in ${w.stripes} of ${stripes} stripes (first at shard byte ${w.firstOffsetBytes}); ` +
      `its checksums pass; every parity shard (${checked.join(', ')}) differs from the parity of the data, and without this shard every other one agrees` +
      (repairable ? '' : `; with ${checked.length} parity shards checked this cannot be told from two other shards wrong: not repaired (rebuilding it from wrong shards would make the loss permanent)`),
    authDiskId: repairable ? pg.positions[others[0]!]! : null,
    repaired: false,
  };
}

function judgeAll(pg: Pg, members: number[], maps: Map<number, MemberMap>, deep: boolean, names: Iterable<string>): Map<string, Inconsistency[]> {
  const found = new Map<string, Inconsistency[]>();
  for (const name of names) {
    const bad = judgeObject(pg, name, members, maps, deep);
    if (bad.length > 0) found.set(name, bad);
  }
  return found;
}

/** Pushes the authoritative copy (or the removal) to each member that differs; marks what it fixed. */
async function repairObject(osd: Osd, pg: Pg, name: string, bad: Inconsistency[], signal: AbortSignal): Promise<void> {
  for (const inc of bad) {
    const target = osd.memberHandle(pg, inc.diskId);
    if (inc.kinds.includes('extra')) {
      await target.push([{ type: 'remove', id: pg.objectId(name), ifExists: true }]);
    } else if (inc.authDiskId !== null) {
      await copyObject(pg, osd.memberHandle(pg, inc.authDiskId), target, name, signal);
    } else {
      continue;
    }
    inc.repaired = true;
  }
}

/**
 * Erasure-coded: rebuilds the shards of `name` the members in `bad` hold wrongly from k members whose
 * shard is good (ec-recovery.ts), or removes them where the log deleted the object. Each bad shard is
 * replaced once its new bytes are built (rebuildObject's replace: a corrupt or wrong shard carries the
 * right version), never removed first: a rebuild that fails partway leaves at least the redundancy there was.
 * Only what has a source is rebuilt (an ambiguous parity mismatch has none: parityOf). A wrong data shard
 * ('shard') is rebuilt from every other member (any k of them decode the same bytes: parityOf checked it).
 */
async function repairEcObject(osd: Osd, pg: Pg, name: string, members: number[], bad: Inconsistency[], signal: AbortSignal): Promise<void> {
  const member = (diskId: number): RecoveryMember => ({ position: pg.positions.indexOf(diskId), handle: osd.memberHandle(pg, diskId) });
  const shard = (m: RecoveryMember): ObjectId => ({ ns: dataNs(pg.pool.id, m.position), name });
  const rebuild = bad.filter((i) => !i.kinds.includes('extra') && i.authDiskId !== null);
  for (const inc of bad.filter((i) => i.kinds.includes('extra'))) {
    const m = member(inc.diskId);
    await m.handle.push([{ type: 'remove', id: shard(m), ifExists: true }]);
    inc.repaired = true;
  }
  if (rebuild.length === 0) return;
  const badDisks = new Set(bad.map((i) => i.diskId));
  // Parity that differs from the data is coded again from the data shards alone (the data is authoritative).
  const dataOnly = rebuild.some((i) => i.kinds.includes('parity'));
  const sources = members
    .filter((d) => !badDisks.has(d))
    .map(member)
    .filter((m) => !dataOnly || m.position < pg.ec!.layout.dataShards);
  // Never remove a shard that cannot be rebuilt (judgeObject names no source then; this is the backstop).
  if (sources.length < pg.ec!.layout.dataShards) return;
  const targets = rebuild.map((i) => member(i.diskId));
  await rebuildObject({ pg, ec: pg.ec!, sources, signal }, name, targets, true);
  for (const inc of rebuild) inc.repaired = true;
}

/** Runs fn while no write of the object is in flight: erasure-coded, under its lock; replicated, under the pg's write gate. */
async function withObjectQuiet<T>(osd: Osd, pg: Pg, name: string, fn: () => Promise<T>): Promise<T> {
  if (!pg.ec) return withPgQuiet(osd, pg, fn);
  const unlock = await pg.ec.locks.acquire(name, 'exclusive', limits.ecWaitMsMax);
  try {
    return await fn();
  } finally {
    unlock();
  }
}

/**
 * One object, with no write of it in flight: compared on every member once
 * more, then repaired from what is there now. What it found, each marked
 * repaired or not.
 */
async function compareAndRepair(osd: Osd, pg: Pg, name: string, members: number[], interval: number, deep: boolean, signal: AbortSignal): Promise<Inconsistency[]> {
  return withObjectQuiet(osd, pg, name, async () => {
    // A write that failed while this waited made the pg peer again: it settles the object, not this.
    if (!primaryIn(osd, pg, interval)) throw new TesseraError('Busy', `pg ${pg.key}: a new interval began during the scrub`);
    pg.requireActive();
    const now = new Map<number, MemberMap>();
    await Promise.all(members.map(async (d) => now.set(d, await memberMap(osd, pg, d, { deep, repair: true, bytesPerSec: 0 }, [name]))));
    let found = judgeObject(pg, name, members, now, deep);
    if (found.length === 0 && pg.ec && deep) {
      const parity = await parityOf(osd, pg, name, members, now, 0);
      if (Array.isArray(parity)) found = parity;
    }
    if (pg.ec) await repairEcObject(osd, pg, name, members, found, signal);
    else await repairObject(osd, pg, name, found, signal);
    return found;
  });
}

/**
 * Read repair of one object a client read found damaged (src/daemon/read-repairs.ts): a deep
 * comparison of it on the pg's acting members in the interval `interval`, and the repair of what
 * differs, as `pg scrub --deep --repair` does for each object it finds.
 */
export function repairObjectNow(osd: Osd, pg: Pg, name: string, interval: number, signal: AbortSignal): Promise<Inconsistency[]> {
  pg.requireActive();
  return compareAndRepair(osd, pg, name, pg.acting.filter((d) => !pg.backfilling.has(d)), interval, true, signal);
}

/**
 * Scrubs one pg this daemon is primary of (and repairs it if asked). Records
 * the count of inconsistencies left unrepaired on the pg (pgStats shows
 * "+inconsistent"), and when it was scrubbed.
 */
export async function scrubPg(osd: Osd, pg: Pg, o: PgScrubOptions): Promise<PgScrubResult> {
  const startedMs = osd.io.clock.monotonicMs();
  const members = pg.acting.filter((d) => !pg.backfilling.has(d));
  const result: PgScrubResult = { poolId: pg.pool.id, pg: pg.pg, deep: o.deep, scrubbed: false, members, objects: 0, bytesRead: 0, inconsistencies: [] };
  // requireActive holds on replicas too: a scrub queued behind another (scrubPgSerialized) may find this disk no longer primary.
  pg.requireActive();
  const interval = pg.intervalStart;
  if (!primaryIn(osd, pg, interval)) throw notPrimary(pg, osd.view.epoch);
  const skipped = { count: 0 };
  // Erasure-coded, deep: when the parity check reads every member's shards whole (each read verifying their
  // checksums), the members' maps are shallow: each shard is read once. Suspects are still read deep (below).
  const primaryReads = o.deep && parityReadsEveryShard(pg, members);
  const maps = new Map<number, MemberMap>();
  await Promise.all(members.map(async (d) => maps.set(d, await memberMap(osd, pg, d, primaryReads ? { ...o, deep: false } : o))));
  const names = new Set<string>();
  for (const m of maps.values()) for (const n of m.keys()) names.add(n);
  result.objects = names.size;
  if (o.deep) for (const m of maps.values()) for (const e of m.values()) if (isDigest(e)) result.bytesRead += e.sizeBytes;
  // Suspects are compared again once no write of them is in flight (a write reaches members at different times).
  let suspects = judgeAll(pg, members, maps, o.deep, names);
  if (suspects.size > 0) {
    const again = new Map<number, MemberMap>();
    const fetch = async (names: string[], bytesPerSec?: number): Promise<void> => {
      await Promise.all(
        members.map(async (d) => {
          const m = await memberMap(osd, pg, d, bytesPerSec === undefined ? o : { ...o, bytesPerSec }, names);
          again.set(d, new Map([...(again.get(d) ?? []), ...m]));
        }),
      );
    };
    if (pg.ec) {
      // Erasure-coded writes hold their object's lock from staging to commit: compared under it, shared.
      // (Unpaced reads: writes of the object wait meanwhile.) An object whose lock does not come is skipped.
      for (const name of [...suspects.keys()]) {
        const unlock = await lockOrSkip(osd, pg, name, skipped);
        if (!unlock) {
          suspects.delete(name);
          continue;
        }
        try {
          await fetch([name], 0);
        } finally {
          unlock();
        }
      }
    } else {
      for (const name of suspects.keys()) await pg.objectSettled(name);
      await fetch([...suspects.keys()]);
    }
    for (const d of members) if (!again.has(d)) again.set(d, new Map());
    suspects = judgeAll(pg, members, again, o.deep, suspects.keys());
  }
  if (pg.ec && o.deep) await checkPgParity(osd, pg, members, maps, names, suspects, interval, o.bytesPerSec ?? limits.scrubBytesPerSecDefault, skipped);
  if (o.repair && suspects.size > 0) {
    const signal = new AbortController().signal;
    for (const name of [...suspects.keys()]) {
      if (!primaryIn(osd, pg, interval)) throw new TesseraError('Busy', `pg ${pg.key}: a new interval began during the scrub`);
      pg.requireActive();
      const bad = await compareAndRepair(osd, pg, name, members, interval, o.deep, signal);
      if (bad.length > 0) suspects.set(name, bad);
      else suspects.delete(name);
    }
  }
  const all = [...suspects.values()].flat();
  result.inconsistencies = all.slice(0, limits.scrubInconsistenciesReportedMax);
  result.scrubbed = true;
  const notes: string[] = [];
  if (all.length > result.inconsistencies.length) notes.push(`${all.length} inconsistencies, the first ${result.inconsistencies.length} listed`);
  if (skipped.count > 0) notes.push(`${skipped.count} objects not compared again (each stayed locked by writes for ${limits.ecWaitMsMax} ms)`);
  if (notes.length > 0) result.note = notes.join('; ');
  await recordScrub(osd, pg, interval, o.deep, all.filter((i) => !i.repaired));
  const unrepaired = all.filter((i) => !i.repaired).length;
  if (all.length > 0) {
    console.error(`disk ${osd.diskId}: pg ${pg.key}: ${o.deep ? 'deep ' : ''}scrub found ${all.length} inconsistencies (${all.length - unrepaired} repaired) in ${osd.io.clock.monotonicMs() - startedMs} ms`);
  }
  return result;
}

/**
 * Erasure-coded, deep: the parity of every object not already suspect, coded again from its data shards
 * and compared (parityOf), one object at a time, paced. A difference, or a version that moved while it was
 * read, is compared again under the object's lock (shared: no write of it meanwhile) from a fresh map of
 * it; what still differs joins the suspects.
 */
async function checkPgParity(osd: Osd, pg: Pg, members: number[], maps: Map<number, MemberMap>, names: Iterable<string>, suspects: Map<string, Inconsistency[]>, interval: number, bytesPerSec: number, skipped: { count: number }): Promise<void> {
  for (const name of names) {
    if (suspects.has(name)) continue;
    if (!primaryIn(osd, pg, interval)) throw new TesseraError('Busy', `pg ${pg.key}: a new interval began during the scrub`);
    const first = await parityOf(osd, pg, name, members, maps, bytesPerSec);
    if (first === null || (Array.isArray(first) && first.length === 0)) continue;
    const unlock = await lockOrSkip(osd, pg, name, skipped);
    if (!unlock) continue;
    let again: Inconsistency[] | 'changed' | 'unreadable' | null;
    try {
      // A shard that did not read (a checksum failed), or an object written since the members' maps: the
      // members read it deep and say which shard is bad, as their deep scrub map would have (the members'
      // maps were shallow: scrubPg, primaryReads). A write since then (a partial overwrite, an xattr) keeps
      // an old corrupt chunk under the new version: a shallow look would miss it (review of 57c75d3).
      const deep = !Array.isArray(first);
      const now = new Map<number, MemberMap>();
      await Promise.all(members.map(async (d) => now.set(d, await memberMap(osd, pg, d, { deep, repair: false, bytesPerSec: 0 }, [name]))));
      // Changed in another way meanwhile (deleted, a member's shard at another version): the next scrub looks.
      // Unpaced (as compareAndRepair): writes of the object wait for the lock meanwhile, at most limits.ecWaitMsMax.
      const bad = judgeObject(pg, name, members, now, deep);
      again = bad.length > 0 ? (deep ? bad : null) : await parityOf(osd, pg, name, members, now, 0);
    } finally {
      unlock();
    }
    if (Array.isArray(again) && again.length > 0) suspects.set(name, again);
  }
}

/**
 * Whether this disk is still the pg's primary in `interval` and the pg still this daemon's (a removed pool's pg
 * is dropped from osd.pgs and its interval ended, osd.ts onMap). Only then does a scrub repair or record.
 */
export function primaryIn(osd: Osd, pg: Pg, interval: number): boolean {
  return interval !== 0 && pg.intervalStart === interval && pg.primary === osd.diskId && osd.pgs.get(pg.key) === pg && osd.view.map.pools.some((p) => p.id === pg.pool.id);
}

/** The object's lock, shared; null (counted in `skipped`, logged) when writes held it past limits.ecWaitMsMax. */
async function lockOrSkip(osd: Osd, pg: Pg, name: string, skipped: { count: number }): Promise<(() => void) | null> {
  try {
    return await pg.ec!.locks.acquire(name, 'shared', limits.ecWaitMsMax);
  } catch (err) {
    if (!isTesseraError(err, 'Busy')) throw err;
    skipped.count++;
    console.error(`disk ${osd.diskId}: pg ${pg.key}: scrub skipped ${name}: ${toTesseraError(err).message} (the next scrub compares it)`);
    return null;
  }
}

/**
 * Keeps what a scrub of the pg found and when it ran, on the pg and in its scrub record on disk (scrub-record.ts);
 * nothing when this disk is no longer its primary in `interval` or the pg is gone (its pool removed: the purge
 * must not be followed by a new record).
 */
async function recordScrub(osd: Osd, pg: Pg, interval: number, deep: boolean, left: Inconsistency[]): Promise<void> {
  if (!primaryIn(osd, pg, interval)) return;
  const s = pg.scrub;
  s.inconsistent = left.length;
  s.left = left.slice(0, limits.scrubInconsistenciesKeptMax);
  s.lastDeep = deep;
  s.scrubbedAtMs = osd.io.clock.nowMs();
  if (deep) s.deepScrubbedAtMs = s.scrubbedAtMs;
  s.retryAtMs = 0;
  try {
    await osd.store.transact(scrubRecordOps(pg.pool.id, pg.pg, { scrubbedAtMs: s.scrubbedAtMs, deepScrubbedAtMs: s.deepScrubbedAtMs, lastDeep: deep, unrepaired: s.inconsistent, kept: s.left }));
  } catch (err) {
    // Kept in memory all the same: a restart forgets it (the pg counts as scrubbed when its record says).
    console.error(`disk ${osd.diskId}: pg ${pg.key}: scrub record not written: ${toTesseraError(err).message}`);
  }
}

/** Runs scrubs of one pg one after another (a scrub on demand waits for the background one). */
export async function scrubPgSerialized(osd: Osd, pg: Pg, o: PgScrubOptions): Promise<PgScrubResult> {
  const before = pg.scrub.running;
  const run = (async () => {
    await before?.catch(() => undefined);
    return scrubPg(osd, pg, o);
  })();
  pg.scrub.running = run;
  try {
    return await run;
  } finally {
    if (pg.scrub.running === run) pg.scrub.running = null;
  }
}
