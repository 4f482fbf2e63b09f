/**
 * Peering of an erasure-coded pg, run by its primary at the start of every
 * interval (and after a failed write). Positions matter: member i holds
 * shard i, and a down member leaves a hole. Before the pg serves I/O:
 *
 * 1. Query every acting member: its log, the position its data belongs to,
 *    its staging objects (the query stops the member's sub-writes and waits
 *    for those in flight, so the snapshot is consistent). Fewer than k acting
 *    members: incomplete. When no member was acting in the last active
 *    interval (pg history), that interval's disks are queried instead and
 *    the newest log among them is the authority (pastAuthority); fewer than
 *    k of them answering: incomplete.
 * 2. Settle two-phase writes (ec-resolve.ts): each member commits the
 *    versions rolled forward and drops the others; query again.
 * 3. The newest head is authoritative; members holding exactly that log are
 *    the sources (at least k are needed if anyone must be rebuilt). Heads are
 *    enough here, unlike replicated logs (peering.ts sameLog, commonPoint): an
 *    EC member's log has no gap. Its commits form a chain in its store (each
 *    asserts the previous `head`: ec-record.ts commitOps, built on the last
 *    commit submitted there: ec-member.ts commitInTurn), and the store rejects a
 *    refused transaction alone, without its changes; so a commit the store
 *    refuses (no space, a limit) fails every later one there until peering,
 *    and that member is behind, seen by its head. A write is acknowledged only
 *    once every acting member committed it (ec-write.ts), and a refused stage
 *    leaves the version committed nowhere (rolled back, ec-resolve.ts).
 *    test/ec-commit-chain.test.ts. When the
 *    members at their own position are fewer than k (a disk added or moved
 *    shifted positions), the disks that held each position in the last
 *    active interval (pg history) are read too, members or not: one whose
 *    stored log is the authoritative one and belongs to that position is a
 *    read-only source there (its shards stay under that position until the
 *    pg is clean: stray cleanup keeps them). Others get the objects named by
 *    the entries they miss or hold in excess rebuilt from the sources, or are
 *    backfilled; then their log becomes the authoritative one (a member read
 *    at the position it left has that position's objects removed only then).
 * 4. Record the interval in the pg history registry, activate every member.
 */
import { compareVersions, type MemberInfo } from '../protocol/osd-messages.js';
import { HOLE } from '../../cluster/placement.js';
import { ecOf } from './ec-member.js';
import type { PgIntervalRecord } from '../../cluster/pg-history.js';
import { headOps, readHead } from './ec-record.js';
import { backfill, rebuildObjects, removePosition, type RecoveryContext, type RecoveryMember } from './ec-recovery.js';
import { newestMember, planResolve } from './ec-resolve.js';
import { activateMembers, checkAborted, commonPoint, intervalRecord, type MemberHandle, type PeeringContext } from './peering.js';
import type { Pg } from './pg.js';
import { PgLog } from './pg-log.js';

interface Member extends RecoveryMember {
  diskId: number;
}

const shardOfInfo = (i: MemberInfo): number => i.shard ?? -1;

/** Whether the member's log and shard objects belong to its position (a fresh member owns nothing yet, trivially). */
function ownsPosition(info: MemberInfo, position: number): boolean {
  return shardOfInfo(info) === position || (shardOfInfo(info) === -1 && info.entries.length === 0 && info.head.version === 0);
}

export async function peerEc(pg: Pg, ctx: PeeringContext): Promise<'active' | 'incomplete'> {
  const ec = ecOf(pg);
  const positions = [...pg.positions];
  const members: Member[] = positions.flatMap((diskId, position) => (diskId === HOLE ? [] : [{ diskId, position, handle: ctx.handle(diskId) }]));
  if (members.length < ec.layout.dataShards) {
    pg.incompleteWhy = `${members.length} shards acting, ${ec.layout.dataShards} needed to read`;
    return 'incomplete';
  }
  let infos = await Promise.all(members.map((m) => m.handle.info()));
  checkAborted(ctx.signal);
  const record = await ctx.history.get(pg.pool.id, pg.pg);
  // No current member was acting in the last active interval: its history is on that interval's disks alone.
  let authority: MemberInfo | undefined;
  if (record && record.neverWritable !== true && !record.acting.some((d) => d !== HOLE && members.some((m) => m.diskId === d))) {
    authority = (await pastAuthority(pg, ctx, record)) ?? undefined;
    if (!authority) {
      pg.incompleteWhy = `no member of the last interval that could take writes (epoch ${record.epoch}, disks ${record.acting.join(',')}) is acting, and fewer than ${ec.layout.dataShards} of its disks answered: waiting for them`;
      return 'incomplete';
    }
  }
  // Every member resolves, even with nothing staged: it also drops recovery temporaries of aborted runs.
  const plan = planResolve(members.map((m, i) => ({ ...infos[i]!, position: m.position, shard: shardOfInfo(infos[i]!), stagings: infos[i]!.stagings ?? [] })));
  await Promise.all(members.map((m, i) => m.handle.resolve(plan.commit[i]!)));
  checkAborted(ctx.signal);
  infos = await Promise.all(members.map((m) => m.handle.info()));
  checkAborted(ctx.signal);
  // A record of intervals that never took writes names no holder of any data: every empty member is a source.
  const neverWritable = record?.neverWritable === true;
  const recovered = await recover(pg, ctx, members, infos, neverWritable ? null : record, authority, neverWritable);
  if (recovered === 'incomplete') return 'incomplete';
  checkAborted(ctx.signal);
  const sameInterval = record && record.epoch === pg.intervalStart && record.acting.join() === positions.join();
  if (!sameInterval) await ctx.history.put(pg.pool.id, pg.pg, record?.epoch ?? null, intervalRecord(pg, record, positions, members.length));
  checkAborted(ctx.signal);
  await activateMembers(pg, members.map((m) => m.handle), (h) => h.activate(pg.intervalStart, positions));
  return 'active';
}

/** A handle that only reads a disk's store: a past position's holder is a source, never written to by this run. */
function readOnly(handle: MemberHandle): MemberHandle {
  const refuse = (): Promise<never> => Promise.reject(new Error(`disk ${handle.diskId} is a read-only recovery source`));
  return { diskId: handle.diskId, store: handle.store, info: refuse, push: refuse, activate: refuse, resolve: refuse };
}

/**
 * Sources at the last active interval's positions that no current member
 * supplies: the disk that held position p then, if its stored log (read from
 * its store: it takes no sub-writes for this pg, the interval's current
 * members were quiesced by the query) still belongs to p and has the
 * authoritative head, so every shard it holds at p is at its latest version.
 * A disk that cannot be read is skipped (it may be down): fewer than k
 * sources leaves the pg incomplete.
 */
async function pastSources(pg: Pg, ctx: PeeringContext, record: PgIntervalRecord | null, sources: readonly Member[], auth: MemberInfo): Promise<Member[]> {
  const found: Member[] = [];
  if (!record) return found;
  for (const [position, diskId] of record.acting.entries()) {
    if (diskId === HOLE || sources.some((s) => s.position === position)) continue;
    const handle = ctx.handle(diskId);
    try {
      const log = await PgLog.load(handle.store, pg.pool.id, pg.pg);
      const head = await readHead(handle.store, pg.pool.id, pg.pg);
      if (log.info.shard !== position || compareVersions(head, auth.head) !== 0) continue;
      found.push({ diskId, position, handle: readOnly(handle) });
    } catch (err) {
      checkAborted(ctx.signal);
      console.error(`pg ${pg.key}: disk ${diskId}, position ${position} in epoch ${record.epoch}, could not be read: ${String(err)}`);
    }
  }
  return found;
}

/**
 * The authoritative log when no current member was acting in the last active
 * interval (a disk added moved every position of the pg while a holder of
 * one was down): the disks that held the positions then are queried as
 * members are. The query makes each catch up to this run's epoch, which ends
 * the old interval there (its primary's sub-writes of an older epoch are
 * refused from then on) and waits for the sub-writes in flight, so no write
 * of that interval can be acknowledged after this. Every acknowledged write
 * was committed on every acting member of its interval, so the newest log
 * among the holders still at their position holds them all. Fewer than k of
 * them answering: null (the pg waits, incomplete, for more to come back).
 */
async function pastAuthority(pg: Pg, ctx: PeeringContext, record: PgIntervalRecord): Promise<MemberInfo | null> {
  const ec = ecOf(pg);
  const answers: MemberInfo[] = [];
  for (const [position, diskId] of record.acting.entries()) {
    if (diskId === HOLE) continue;
    try {
      const info = await ctx.handle(diskId).info();
      if (shardOfInfo(info) === position) answers.push(info);
    } catch (err) {
      checkAborted(ctx.signal);
      console.error(`pg ${pg.key}: disk ${diskId}, position ${position} in epoch ${record.epoch}, did not answer: ${String(err)}`);
    }
  }
  checkAborted(ctx.signal);
  if (answers.length < ec.layout.dataShards) {
    console.error(`pg ${pg.key}: no member was acting in epoch ${record.epoch} and ${answers.length} of its disks answered, ${ec.layout.dataShards} needed: waiting for more`);
    return null;
  }
  const auth = answers[newestMember(answers)]!;
  console.error(`pg ${pg.key}: no member was acting in epoch ${record.epoch}: its log (head ${auth.head.epoch}'${auth.head.version}) from ${answers.length} of its disks`);
  return auth;
}

/**
 * Rebuilds the members not at the authoritative head or not at their own position. noData: no
 * interval of the pg ever took writes (a neverWritable record), so a member whose log is empty
 * holds nothing at any position and is a source as it is (a disk added since may have shifted the
 * positions: nothing needs rebuilding, activation relabels each member's shard).
 */
async function recover(pg: Pg, ctx: PeeringContext, members: Member[], infos: MemberInfo[], record: PgIntervalRecord | null, authority: MemberInfo | undefined, noData: boolean): Promise<'done' | 'incomplete'> {
  const ec = ecOf(pg);
  const auth = authority ?? infos[newestMember(infos)]!;
  const empty = (i: number): boolean => noData && infos[i]!.entries.length === 0 && infos[i]!.head.version === 0;
  const isSource = (i: number): boolean => (empty(i) || ownsPosition(infos[i]!, members[i]!.position)) && compareVersions(infos[i]!.head, auth.head) === 0;
  const sources = members.filter((_, i) => isSource(i));
  const targets = members.map((m, i) => ({ m, info: infos[i]! })).filter((_, i) => !isSource(i));
  if (targets.length === 0) return 'done';
  if (sources.length < ec.layout.dataShards) {
    const past = await pastSources(pg, ctx, record, sources, auth);
    checkAborted(ctx.signal);
    if (past.length > 0) console.error(`pg ${pg.key}: reading positions ${past.map((s) => `${s.position} from disk ${s.diskId}`).join(', ')} where the last active interval left them`);
    sources.push(...past);
  }
  if (sources.length < ec.layout.dataShards) {
    pg.incompleteWhy = `${sources.length} members hold the newest log, ${ec.layout.dataShards} needed to rebuild ${targets.length} others: waiting for more members`;
    return 'incomplete';
  }
  sources.sort((a, b) => Number(b.diskId === pg.primary) - Number(a.diskId === pg.primary));
  // Through the recovery throttle, blocking (the pg activates once its shards are rebuilt); pgs with fewer shards beyond the k needed to read go first.
  const margin = sources.length - ec.layout.dataShards;
  const pace = ctx.pace;
  const rctx: RecoveryContext = { pg, ec, sources, signal: ctx.signal, progress: ctx.progress, pace: pace ? (sizeBytes, copy) => pace({ priority: margin, sizeBytes, blocking: true }, copy) : undefined };
  const objects = new Map<string, Member[]>();
  const backfills: Array<{ m: Member; previous: number }> = [];
  for (const { m, info } of targets) {
    const common = ownsPosition(info, m.position) ? commonPoint(info, auth) : null;
    if (!common || compareVersions(common, auth.tail) < 0) {
      backfills.push({ m, previous: shardOfInfo(info) });
      continue;
    }
    const after = (e: { epoch: number; version: number }): boolean => compareVersions(e, common) > 0;
    for (const e of [...auth.entries.filter(after), ...info.entries.filter(after)]) {
      const list = objects.get(e.object) ?? [];
      if (!list.includes(m)) list.push(m);
      objects.set(e.object, list);
    }
  }
  await rebuildObjects(rctx, objects);
  // A member whose previous position is a source in this run keeps that position's objects until every target is
  // rebuilt and its log has moved to the new position (emptied earlier, a run cut short would leave it looking like a
  // source there with its shards gone). (Cut short between the two, they are left behind.)
  const readFrom = (b: { m: Member; previous: number }): boolean => sources.some((s) => s.diskId === b.m.diskId && s.position === b.previous);
  for (const b of backfills) await backfill(rctx, b.m, readFrom(b) ? -1 : b.previous);
  checkAborted(ctx.signal);
  for (const { m, info } of targets) {
    const interval = { lastEpochStarted: info.lastEpochStarted, lastActing: info.lastActing, shard: m.position };
    await m.handle.push([...PgLog.replaceOps(pg.pool.id, pg.pg, auth.tail, auth.entries, interval), ...headOps(pg.pool.id, pg.pg, auth.head)]);
  }
  for (const b of backfills) if (readFrom(b)) await removePosition(rctx, b.m, b.previous);
  // A target's log in memory is reloaded when it is activated (the push marked it replaced).
  return 'done';
}
