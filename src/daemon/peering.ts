/**
 * Peering and recovery, run by a pg's primary at the start of every interval
 * (a change of the pg's acting set). Before the pg serves any I/O:
 *
 * 1. Ask every acting member for its log and last interval.
 * 2. Read the pg's last active interval from the pg history registry; go on
 *    only if at least one of its members answered (it holds every write that
 *    interval acknowledged); otherwise the pg is incomplete, and waits.
 * 3. The authoritative log is the one with the newest head. If the primary
 *    itself would need a long fill, hand the pg to a member holding the data
 *    (a temporary acting set in the map, tempActingSet) and stop: the new
 *    interval peers again there, and that primary clears the entry once every
 *    member is complete. Otherwise recover the
 *    primary from it, then every other member from the primary: members whose
 *    log overlaps get the objects named by the entries they miss or hold in
 *    excess (divergent: written but never acknowledged); the others are
 *    backfilled (every object compared). Each member's log becomes the
 *    authoritative one. A member whose store refuses those copies NoSpace
 *    (toofull) is left out instead (replicated pools): a temporary acting
 *    set without it, so the next interval goes active without it and
 *    records its history without it (it is neither a copy nor served from);
 *    the primary of that interval refills it in the background and then
 *    clears the entry, and the interval after catches it up from the log.
 * 4. Record this interval in the registry (compare-and-set), then activate
 *    every member. An interval below the write quorum (fewer than min_size
 *    complete members) is recorded too: it serves reads of what its members
 *    hold, which may include a write applied there but never acknowledged,
 *    and a later interval without them could lose what it showed. While no
 *    interval of the pg could ever take writes the record says so
 *    (neverWritable): no store holds any of its data, and the next interval
 *    need not hear from those members. Without that, a pg that went active
 *    on its one member up at cluster start waited, incomplete, for that
 *    member alone once it stopped (test/cluster-stall).
 *
 * Objects are copied whole (data, xattrs, omap) through fenced pushes; large
 * omaps are staged under a temporary name and moved into place, so a member
 * never holds half an object under its real name. Copies go through the
 * daemon's recovery throttle (ctx.pace: bytes/s, copies at once): those the
 * pg waits for before it activates are blocking (ahead of every background
 * copy); a deferred backfill's are background (held back while clients are
 * active); within each, pgs with fewer up-to-date members first.
 */
import { isTesseraError, TesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { pgSortKeyRange } from '../lib/hash.js';
import { compareVersions, type Eversion, type LogEntry, type MemberInfo } from '../protocol/osd-messages.js';
import type { ObjectId, StoreApi, StoreOp } from '../store/types.js';
import type { PgHistory, PgIntervalRecord } from '../../cluster/pg-history.js';
import { metaNs, PgLog } from './pg-log.js';
import { writeQuorum, type Pg } from './pg.js';
import type { BackfillListing, RecoveryProgressSink } from './recovery-progress.js';

export interface MemberHandle {
  diskId: number;
  info(): Promise<MemberInfo>;
  /** Reads of the member's store. */
  store: StoreApi;
  /** A fenced transaction on the member's store. */
  push(ops: StoreOp[]): Promise<void>;
  activate(lastEpochStarted: number, lastActing: number[]): Promise<void>;
  /** Erasure-coded pools: commit these staged versions in order, remove the member's other staging objects. */
  resolve(commit: LogEntry[]): Promise<void>;
}

export interface PeeringContext {
  history: PgHistory;
  handle(diskId: number): MemberHandle;
  signal: AbortSignal;
  /** Called when the primary's own log was rewritten by recovery. */
  reloadLocal(): Promise<void>;
  /** Runs one object copy under the daemon's recovery throttle (recovery-throttle.ts). Default: at once. */
  pace?: Pace;
  /**
   * Replicated pools: given, members that need a backfill (their log shares nothing with the
   * primary's) or more than limits.recoveryInlineObjectsMax objects recovered are brought up to
   * date after the pg goes active without them, if at least min_size members are complete. `run`
   * copies them; when it resolves the caller peers the pg again (same interval), which catches
   * them up from the log (the writes made meanwhile) and activates them.
   */
  backfillLater?: (run: () => Promise<void>) => void;
  /**
   * Replicated pools: sets (or, null, clears) the pg's temporary acting set in the map (map.pgTemp),
   * resolving once the map service has the change; the new interval that follows peers the pg again.
   */
  setTemp?: (acting: number[] | null) => Promise<void>;
  /** The map holds a temporary acting set for this pg that applies now. */
  hasTemp?: () => boolean;
  /**
   * Replicated pools: leaves these acting members out of the acting set (a temporary acting set in the
   * map without them), resolving once the map service has the change: their store refused recovery's
   * copies for want of room (NoSpace, toofull). The new interval that follows peers the pg without them.
   */
  leaveOut?: (diskIds: number[]) => Promise<void>;
  /** Members left out of the acting set that are up (the computed members the temporary acting set lacks). */
  leftOut?: () => number[];
  /**
   * Given, members left out are brought up to date while the pg is active without them: `attempt` copies
   * them (it fails with NoSpace while they still have no room); the caller retries it with a bounded
   * backoff and, once it resolves, clears the temporary acting set (a new interval catches them up from
   * the log and counts them as copies again).
   */
  bringBackLater?: (diskIds: number[], attempt: () => Promise<void>) => void;
  /** Told of the copies this run plans and makes (src/daemon/recovery-progress.ts: status and metrics). */
  progress?: RecoveryProgressSink;
}

/**
 * Runs a copy of sizeBytes when the recovery throttle allows. priority: lower first (the pg's members
 * at the authoritative head); blocking: the pg waits for it before it serves I/O.
 */
export type Pace = (o: { priority: number; sizeBytes: number; blocking: boolean }, copy: () => Promise<void>) => Promise<void>;

/** A copy's pacing within one recovery: the throttle, and the pg's priority. */
interface Copying {
  signal: AbortSignal;
  pace: (sizeBytes: number, copy: () => Promise<void>) => Promise<void>;
  progress?: RecoveryProgressSink | undefined;
  /** Members at the source's head: where a copy goes to when the source's copy fails its checksum. */
  alternates?: MemberHandle[];
}

const COPY_CONCURRENCY = 4;
const OMAP_PAGE = 1000;
const LIST_PAGE = 1000;

/**
 * The record of this interval: neverWritable while it and every interval before it (the stored
 * record, or none) were below the pool's write quorum, so no store holds any of the pg's data.
 */
export function intervalRecord(pg: Pg, record: PgIntervalRecord | null, acting: number[], actingCount: number): PgIntervalRecord {
  const neverWritable = actingCount < writeQuorum(pg.pool) && (record === null || record.neverWritable === true);
  return { epoch: pg.intervalStart, acting, ...(neverWritable ? { neverWritable: true as const } : {}) };
}

export function checkAborted(signal: AbortSignal): void {
  if (signal.aborted) throw new TesseraError('Aborted', 'peering interrupted by a new interval');
}

/** 'remapped': the pg waits for the temporary acting set it asked for (a new interval). */
export type PeeringResult = 'active' | 'incomplete' | 'remapped';

export async function peer(pg: Pg, ctx: PeeringContext): Promise<PeeringResult> {
  const members = pg.acting;
  const handles = members.map((id) => ctx.handle(id));
  const infos = await Promise.all(handles.map((h) => h.info()));
  checkAborted(ctx.signal);
  const record = await ctx.history.get(pg.pool.id, pg.pg);
  if (record && record.neverWritable !== true && !record.acting.some((d) => members.includes(d))) {
    pg.incompleteWhy = `no member of the last interval that could take writes (epoch ${record.epoch}, disks ${record.acting.join(',')}) is acting: waiting for one of them`;
    return 'incomplete';
  }
  // The newest head; among equal heads the log with the most entries above every tail (one member's store may
  // have refused a write that a later one of the pg followed: its log has a gap the others fill).
  const floor = infos.reduce((t, i) => (compareVersions(i.tail, t) > 0 ? i.tail : t), infos[0]!.tail);
  const held = infos.map((info) => info.entries.filter((e) => compareVersions(e, floor) > 0).length);
  let auth = 0;
  infos.forEach((info, i) => {
    const newer = compareVersions(info.head, infos[auth]!.head);
    if (newer > 0 || (newer === 0 && held[i]! > held[auth]!)) auth = i;
  });
  // The primary needs a fill, too long to keep the pg from serving: hand it to a member with the data (map.pgTemp).
  const temp = auth !== 0 ? tempActingSet(pg, ctx, members, infos, auth) : null;
  if (temp) {
    await ctx.setTemp!(temp);
    return 'remapped';
  }
  // The primary (members[0]) first catches up from the authoritative member, then serves as the source for the others.
  if (auth !== 0) {
    const atAuthHead = handles.filter((_, i) => i !== 0 && compareVersions(infos[i]!.head, infos[auth]!.head) === 0);
    const first: Copying = { signal: ctx.signal, progress: ctx.progress, alternates: atAuthHead, pace: paceOf(ctx, 0, true) };
    try {
      await recoverMember(pg, handles[0]!, infos[0]!, handles[auth]!, infos[auth]!, first);
    } catch (err) {
      // The primary's own store has no room for what it misses: the pg goes on without it (toofull).
      if (!canLeaveOut(pg, ctx, members, [members[0]!], err)) throw err;
      await leaveOut(pg, ctx, [members[0]!], err);
      return 'remapped';
    }
    await ctx.reloadLocal();
  }
  const source = handles[0]!;
  const sourceInfo = auth === 0 ? infos[0]! : infos[auth]!;
  // Members already at the authoritative head: the fewer, the sooner this pg's copies run.
  const upToDate = infos.filter((i) => compareVersions(i.head, sourceInfo.head) === 0).length;
  const alternates = handles.filter((_, i) => i !== 0 && compareVersions(infos[i]!.head, sourceInfo.head) === 0);
  const copying: Copying = { signal: ctx.signal, progress: ctx.progress, alternates, pace: paceOf(ctx, upToDate, true) };
  // Members to backfill after activation (the pg serves I/O meanwhile, without them).
  const r = pg.pool.redundancy;
  let later = ctx.backfillLater && r.type === 'replicated' ? members.slice(1).filter((_, i) => objectsToRecover(infos[i + 1]!, sourceInfo) > limits.recoveryInlineObjectsMax) : [];
  if (members.length - later.length < (r.type === 'replicated' ? r.minSize : 0)) later = [];
  const active = members.filter((d) => !later.includes(d));
  const recovered = await Promise.allSettled(handles.slice(1).map((h, i) => (later.includes(h.diskId) ? undefined : recoverMember(pg, h, infos[i + 1]!, source, sourceInfo, copying))));
  checkAborted(ctx.signal);
  // Members whose store had no room for their copies (NoSpace): the pg goes on without them (toofull), if it can.
  const failed = recovered.flatMap((r, i) => (r.status === 'rejected' ? [{ diskId: members[i + 1]!, err: r.reason as unknown }] : []));
  const tooFull = failed.filter((f) => isTesseraError(f.err, 'NoSpace')).map((f) => f.diskId);
  const other = failed.find((f) => !isTesseraError(f.err, 'NoSpace'));
  if (other) throw other.err;
  if (failed.length > 0) {
    if (!canLeaveOut(pg, ctx, members, tooFull, failed[0]!.err)) throw failed[0]!.err;
    await leaveOut(pg, ctx, tooFull, failed[0]!.err);
    return 'remapped';
  }
  // A record of this very interval stands: its members (possibly fewer, while others were backfilled) hold every write.
  const sameInterval = record && record.epoch === pg.intervalStart;
  if (!sameInterval) await ctx.history.put(pg.pool.id, pg.pg, record?.epoch ?? null, intervalRecord(pg, record, active, active.length));
  checkAborted(ctx.signal);
  pg.backfilling = new Set(later);
  // The log as it is now: the backfilled members get it, and the writes after it come from the log at the next run.
  const snapshot: MemberInfo = { ...sourceInfo, entries: sourceInfo.entries.slice() };
  await activateMembers(pg, handles.filter((h) => active.includes(h.diskId)), (h) => h.activate(pg.intervalStart, active));
  if (later.length > 0) {
    const background: Copying = { ...copying, pace: paceOf(ctx, upToDate, false) };
    ctx.backfillLater!(async () => {
      for (const id of later) {
        try {
          await recoverMember(pg, handles[members.indexOf(id)]!, infos[members.indexOf(id)]!, source, snapshot, background);
        } catch (err) {
          // Its store has no room for the backfill (backfill_toofull): left out, brought back later with a backoff.
          if (!canLeaveOut(pg, ctx, members, [id], err)) throw err;
          await leaveOut(pg, ctx, [id], err);
          throw new TesseraError('Aborted', `pg ${pg.key}: disk ${id} left out (toofull): a new interval follows`);
        }
      }
    });
  } else if ((ctx.leftOut?.() ?? []).length > 0 && ctx.bringBackLater) {
    // Members left out for want of room (toofull): filled up to this log while the pg serves I/O without them,
    // retried until they have room; then the temporary acting set goes and a new interval catches them up.
    const leftOut = ctx.leftOut!();
    const background: Copying = { ...copying, pace: paceOf(ctx, upToDate, false) };
    ctx.bringBackLater(leftOut, async () => {
      for (const id of leftOut) {
        const h = ctx.handle(id);
        await recoverMember(pg, h, await h.info(), source, snapshot, background);
      }
    });
  } else if (ctx.hasTemp?.()) {
    // Every member is complete: the computed primary takes the pg back (a new interval; it peers from an identical log).
    await ctx.setTemp!(null);
  }
  return 'active';
}

/**
 * Whether the pg can go on without `out` (members whose store refused recovery's copies): a replicated
 * pool, the refusal NoSpace, and at least one member left to serve it. With fewer than min_size left it
 * serves reads only (writes are refused NoQuorum: osd-service.ts), rather than no I/O at all.
 */
function canLeaveOut(pg: Pg, ctx: PeeringContext, members: readonly number[], out: readonly number[], err: unknown): boolean {
  if (!ctx.leaveOut || pg.pool.redundancy.type !== 'replicated' || !isTesseraError(err, 'NoSpace')) return false;
  return out.length > 0 && members.some((d) => !out.includes(d));
}

/**
 * Leaves members out of the acting set (a temporary acting set in the map without them). The pg's
 * history is recorded by the interval that follows, whose acting set lacks them: they are not counted as
 * copies, and never serve, until they are brought back (a later interval that catches them up first).
 */
async function leaveOut(pg: Pg, ctx: PeeringContext, out: number[], err: unknown): Promise<void> {
  console.error(`pg ${pg.key}: disk(s) ${out.join(',')} have no room to be brought up to date (${(err as Error).message}); the pg goes on without them (toofull)`);
  await ctx.leaveOut!(out);
}

/** A recovery's pacing through ctx.pace, at the pg's priority and class. */
function paceOf(ctx: PeeringContext, priority: number, blocking: boolean): Copying['pace'] {
  const { pace } = ctx;
  return pace ? (sizeBytes, copy) => pace({ priority, sizeBytes, blocking }, copy) : (_sizeBytes, copy) => copy();
}

/**
 * The temporary acting set to ask for, or null: when this (computed) primary would need more than
 * limits.recoveryInlineObjectsMax objects copied before the pg could serve I/O, and at least min_size
 * members need no more than that. Those members come first (the authoritative one leads), the others
 * after, to be filled in the background by the new primary.
 */
function tempActingSet(pg: Pg, ctx: PeeringContext, members: number[], infos: MemberInfo[], auth: number): number[] | null {
  const r = pg.pool.redundancy;
  if (!ctx.setTemp || !ctx.backfillLater || r.type !== 'replicated') return null;
  const authInfo = infos[auth]!;
  if (objectsToRecover(infos[0]!, authInfo) <= limits.recoveryInlineObjectsMax) return null;
  const complete = members.filter((_, i) => i !== 0 && objectsToRecover(infos[i]!, authInfo) <= limits.recoveryInlineObjectsMax);
  if (complete.length < r.minSize) return null;
  const lead = members[auth]!;
  return [lead, ...complete.filter((d) => d !== lead), ...members.filter((d) => d !== lead && !complete.includes(d))];
}

/**
 * Activates the other members first, then the primary: the primary takes writes once it is active,
 * and a repop to a member not yet active would fail (Busy) and make the pg peer again.
 */
export async function activateMembers(pg: Pg, handles: readonly MemberHandle[], activate: (h: MemberHandle) => Promise<void>): Promise<void> {
  await Promise.all(handles.filter((h) => h.diskId !== pg.primary).map(activate));
  await Promise.all(handles.filter((h) => h.diskId === pg.primary).map(activate));
}

/**
 * Whether the target's log is the source's: the same head, and the same entries over the whole of the
 * source's log (the target's may reach further back). Equal heads alone are not enough: a transaction
 * refused by one member's store (no space there) while a later one of the pg committed leaves a gap that
 * the others do not have.
 */
export function sameLog(target: MemberInfo, source: MemberInfo): boolean {
  if (compareVersions(target.head, source.head) !== 0 || compareVersions(target.tail, source.tail) > 0) return false;
  const mine = target.entries.filter((e) => compareVersions(e, source.tail) > 0);
  return mine.length === source.entries.length && mine.every((e, i) => e.version === source.entries[i]!.version && e.epoch === source.entries[i]!.epoch);
}

/** Objects a member's recovery copies: those its log misses or holds in excess; Infinity when it needs a backfill. */
function objectsToRecover(target: MemberInfo, source: MemberInfo): number {
  if (sameLog(target, source)) return 0;
  const common = commonPoint(target, source);
  if (!(common && compareVersions(common, source.tail) >= 0)) return Infinity;
  const changed = [...source.entries, ...target.entries].filter((e) => compareVersions(e, common) > 0);
  return new Set(changed.map((e) => e.object)).size;
}

/**
 * The newest version up to which both logs hold the same entries, or null when there is none. Found from the
 * newest entry they share, then moved back before the first entry, above both tails, that one of them lacks
 * (a gap in one log: everything after it is recovered).
 */
export function commonPoint(target: MemberInfo, source: MemberInfo): Eversion | null {
  const bySource = new Map(source.entries.map((e) => [e.version, e.epoch]));
  for (let i = target.entries.length - 1; i >= 0; i--) {
    const e = target.entries[i]!;
    if (bySource.get(e.version) === e.epoch) return agreedUpTo(target, source, e);
  }
  // No shared entry: fine if the target's head is the source's tail or within the gap the source still covers.
  if (compareVersions(target.head, source.tail) === 0) return target.head;
  if (target.entries.length === 0 && compareVersions(target.head, source.tail) > 0 && bySource.get(target.head.version) === target.head.epoch) return target.head;
  return null;
}

/** `point` (an entry both logs hold), or the last entry before the first one above both tails that only one log holds; null when that is the first. */
function agreedUpTo(target: MemberInfo, source: MemberInfo, point: Eversion): Eversion | null {
  const floor = compareVersions(target.tail, source.tail) > 0 ? target.tail : source.tail;
  const within = (e: Eversion): boolean => compareVersions(e, floor) > 0 && compareVersions(e, point) <= 0;
  const t = target.entries.filter(within);
  const s = source.entries.filter(within);
  for (let i = 0; i < Math.max(t.length, s.length); i++) {
    const a = t[i];
    const b = s[i];
    if (a && b && a.version === b.version && a.epoch === b.epoch) continue;
    if (i === 0) return null;
    return t[i - 1]!;
  }
  return point;
}

async function recoverMember(pg: Pg, target: MemberHandle, tInfo: MemberInfo, source: MemberHandle, sInfo: MemberInfo, copying: Copying): Promise<void> {
  const { signal } = copying;
  if (target.diskId === source.diskId) return;
  if (sameLog(tInfo, sInfo)) return;
  const common = commonPoint(tInfo, sInfo);
  if (common && compareVersions(common, sInfo.tail) >= 0) {
    const missing = sInfo.entries.filter((e) => compareVersions(e, common) > 0);
    const divergent = tInfo.entries.filter((e) => compareVersions(e, common) > 0);
    const objects = new Set<string>([...missing, ...divergent].map((e: LogEntry) => e.object));
    copying.progress?.planned(objects.size);
    await forEachBounded([...objects], COPY_CONCURRENCY, (name) => copyReported(pg, source, target, name, copying));
  } else {
    await backfill(pg, source, target, copying);
  }
  checkAborted(signal);
  await target.push(PgLog.replaceOps(pg.pool.id, pg.pg, sInfo.tail, sInfo.entries, { lastEpochStarted: tInfo.lastEpochStarted, lastActing: tInfo.lastActing }));
}

async function listPg(pg: Pg, store: StoreApi, into: (name: string) => Promise<void>, signal: AbortSignal, listing?: BackfillListing): Promise<void> {
  const bits = Math.log2(pg.pool.pgCount);
  let cursor: string | undefined;
  for (;;) {
    checkAborted(signal);
    const page = await store.listObjects({ ns: pg.objectId('x').ns, sortKeyRange: pgSortKeyRange(pg.pg, bits), limit: LIST_PAGE, ...(cursor ? { cursor } : {}) });
    listing?.page(page.objects.length, page.objects[page.objects.length - 1]?.sortKey ?? null, !page.cursor);
    for (const o of page.objects) await into(o.name);
    if (!page.cursor) return;
    cursor = page.cursor;
  }
}

async function backfill(pg: Pg, source: MemberHandle, target: MemberHandle, copying: Copying): Promise<void> {
  const { signal } = copying;
  const sourceNames = new Set<string>();
  const batch: string[] = [];
  await listPg(pg, source.store, async (name) => {
    sourceNames.add(name);
    batch.push(name);
    if (batch.length >= 64) await forEachBounded(batch.splice(0), COPY_CONCURRENCY, (n) => copyReported(pg, source, target, n, copying));
  }, signal, copying.progress?.backfill());
  await forEachBounded(batch.splice(0), COPY_CONCURRENCY, (n) => copyReported(pg, source, target, n, copying));
  const extra: string[] = [];
  await listPg(pg, target.store, async (name) => {
    if (!sourceNames.has(name)) extra.push(name);
  }, signal);
  for (let i = 0; i < extra.length; i += 256) {
    await target.push(extra.slice(i, i + 256).map((name) => ({ type: 'remove' as const, id: pg.objectId(name), ifExists: true })));
  }
}

async function sizeOf(store: StoreApi, id: ObjectId): Promise<number | null> {
  try {
    return (await store.stat(id)).sizeBytes;
  } catch (err) {
    if ((err as { code?: string }).code === 'NotFound') return null;
    throw err;
  }
}

/** copyObject under the recovery's pacing, reported to its progress (the bytes of the copy made; 0 for a removal). */
async function copyReported(pg: Pg, source: MemberHandle, target: MemberHandle, name: string, copying: Copying): Promise<void> {
  let copiedBytes = 0;
  const paced: Copying['pace'] = (sizeBytes, copy) =>
    copying.pace(sizeBytes, async () => {
      await copy();
      copiedBytes = sizeBytes;
    });
  try {
    await copyObject(pg, source, target, name, copying.signal, paced);
  } catch (err) {
    if (!isTesseraError(err, 'Corrupt')) throw err;
    await copyAroundCorruption(pg, source, target, name, copying, paced, err);
  }
  copying.progress?.copied(copiedBytes);
}

/**
 * The source's copy of an object failed its checksum (latent corruption found by recovery): copy it
 * from a member at the same head instead, and mend the source's copy from there too. Without one
 * whose copy reads, the error stands (the pg peers again later; scrub reports the object).
 */
async function copyAroundCorruption(pg: Pg, source: MemberHandle, target: MemberHandle, name: string, copying: Copying, paced: Copying['pace'], cause: TesseraError): Promise<void> {
  for (const alternate of copying.alternates ?? []) {
    if (alternate.diskId === source.diskId || alternate.diskId === target.diskId) continue;
    try {
      await copyObject(pg, alternate, target, name, copying.signal, paced);
    } catch (err) {
      if (isTesseraError(err, 'Corrupt')) continue;
      throw err;
    }
    console.error(`pg ${pg.key}: object ${name} on disk ${source.diskId} failed its checksum during recovery; copied from disk ${alternate.diskId}, which mends disk ${source.diskId} too`);
    await copyObject(pg, alternate, source, name, copying.signal);
    return;
  }
  throw cause;
}

/** Makes the target's copy of an object equal the source's (or absent); the copy runs when `pace` lets it. */
export async function copyObject(
  pg: Pg,
  source: MemberHandle,
  target: MemberHandle,
  name: string,
  signal: AbortSignal,
  pace: Copying['pace'] = (_bytes, copy) => copy(),
): Promise<void> {
  checkAborted(signal);
  const id = pg.objectId(name);
  const sizeBytes = await sizeOf(source.store, id);
  if (sizeBytes === null) {
    await target.push([{ type: 'remove', id, ifExists: true }]);
    return;
  }
  await pace(sizeBytes, () => copyPresent(pg, source, target, id, signal));
}

async function copyPresent(pg: Pg, source: MemberHandle, target: MemberHandle, id: ObjectId, signal: AbortSignal): Promise<void> {
  checkAborted(signal);
  const [data, xattrs, firstPage] = await Promise.all([source.store.read(id), source.store.getXattrs(id), source.store.omapList(id, { limit: OMAP_PAGE })]);
  const body = (dest: ObjectId): StoreOp[] => [
    { type: 'remove', id: dest, ifExists: true },
    { type: 'writeFull', id: dest, data },
    ...[...xattrs].map(([n, value]) => ({ type: 'setXattr' as const, id: dest, name: n, value })),
    ...(firstPage.entries.length > 0 ? [{ type: 'omapSet' as const, id: dest, entries: firstPage.entries }] : []),
  ];
  if (!firstPage.more) {
    await target.push(body(id));
    return;
  }
  const staging: ObjectId = { ns: metaNs(pg.pool.id), name: `staging.${pg.pg}.${pg.nextStagingId()}` };
  await target.push(body(staging));
  let after = firstPage.entries[firstPage.entries.length - 1]![0];
  for (;;) {
    checkAborted(signal);
    const page = await source.store.omapList(id, { limit: OMAP_PAGE, afterKey: after });
    if (page.entries.length > 0) await target.push([{ type: 'omapSet', id: staging, entries: page.entries }]);
    if (!page.more || page.entries.length === 0) break;
    after = page.entries[page.entries.length - 1]![0];
  }
  await target.push([{ type: 'move', id: staging, to: id }]);
}

export async function forEachBounded<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}
