/**
 * How a primary reaches a pg's members during peering: itself directly (its
 * own store), the others through pg messages (query, fenced push, activate,
 * and for erasure-coded pgs resolve) and store reads.
 */
import { TesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import {
  compareVersions,
  decodeControl,
  encodeControl,
  encodePgRef,
  encodePush,
  memberInfoFromJson,
  OsdOpcode,
  type MemberInfo,
  type PgRef,
} from '../protocol/osd-messages.js';
import { encodeEcResolve, EcOpcode } from '../protocol/ec-messages.js';
import type { StoreOp } from '../store/types.js';
import { ecMemberInfo, ecResolveLocal, notePush } from './ec-member.js';
import { readHead } from './ec-record.js';
import type { MemberHandle } from './peering.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';
import { PgLog } from './pg-log.js';

const PEER_TIMEOUT_MS = 60_000;

/**
 * Peering's query of this member: a consistent snapshot. The pg stops taking
 * writes (it is peering), the writes whose store transactions are in flight
 * finish, and the log is reloaded if one of them landed after its interval
 * ended (its entry is in the store, not yet in memory). So the log reported
 * holds every write this store holds: a write that lands is never missing
 * from the history peering settles (it would not be recovered onto the
 * others, and a retry of it would be applied a second time).
 */
export async function queryMember(osd: Osd, pg: Pg): Promise<MemberInfo> {
  if (pg.ec) return ecMemberInfo(osd, pg);
  pg.state = 'peering';
  await pg.settleStoreWrites(osd.io.clock, limits.peeringWriteDrainMsMax);
  if (pg.logBehindStore) pg.resetLog(await PgLog.load(osd.store, pg.pool.id, pg.pg));
  return memberInfo(pg);
}

export function memberInfo(pg: Pg): MemberInfo {
  return {
    head: pg.log.head,
    tail: pg.log.tail,
    lastEpochStarted: pg.log.info.lastEpochStarted,
    lastActing: pg.log.info.lastActing,
    // A copy: the primary's own answer must not grow with entries remembered after the query.
    entries: [...pg.log.entries],
  };
}

/**
 * Persists the interval a member is activated in and makes its pg active. For the primary's
 * own activation, `stillCurrent` guards against a stale peering run making the pg active: one of a
 * past interval, or one of this interval that a repeer aborted while it was activating (the pg would take writes
 * while the new run peers, and the log its queries reported would miss them).
 */
export async function activateLocal(osd: Osd, pg: Pg, lastEpochStarted: number, lastActing: number[], stillCurrent?: () => boolean): Promise<void> {
  // Erasure-coded members keep their log in memory in step with the store (ec-member.ts): reload only after a recovery push.
  const current = pg.ec !== null && !pg.ec.logReplaced && compareVersions(await readHead(osd.store, pg.pool.id, pg.pg), pg.log.head) === 0;
  const log = current ? pg.log : await PgLog.load(osd.store, pg.pool.id, pg.pg);
  if (pg.ec) pg.ec.logReplaced = false;
  // Erasure-coded: the member's data now belongs to its position in this interval.
  const shard = pg.ec ? { shard: lastActing.indexOf(osd.diskId) } : {};
  await osd.store.transact(log.infoOps({ lastEpochStarted, lastActing, ...shard }));
  pg.resetLog(log);
  pg.ec?.resetMember(log.head);
  if (stillCurrent && !stillCurrent()) return; // a newer peering run (new interval, or a repeer) activates
  pg.state = 'active';
}

export function localHandle(osd: Osd, pg: Pg): MemberHandle {
  const interval = pg.intervalStart;
  // The peering run this handle serves (created within it): only that run, unaborted, may activate.
  const run = pg.peering;
  const current = (): boolean => pg.intervalStart === interval && pg.peering === run && !(run?.signal.aborted ?? false);
  return {
    diskId: osd.diskId,
    store: osd.store,
    info: () => queryMember(osd, pg),
    push: async (ops: StoreOp[]) => {
      await osd.store.transact(ops);
      notePush(osd, pg, ops);
    },
    activate: (lastEpochStarted, lastActing) => activateLocal(osd, pg, lastEpochStarted, lastActing, current),
    resolve: (commit) => ecResolveLocal(osd, pg, commit),
  };
}

export function remoteHandle(osd: Osd, pg: Pg, diskId: number): MemberHandle {
  const ref = (): PgRef => ({ epoch: osd.view.epoch, poolId: pg.pool.id, pg: pg.pg });
  const call = (op: number, header: Buffer, payload: readonly Uint8Array[] = []) =>
    osd.peers.rpc(diskId).call(op, header, payload, { timeoutMs: PEER_TIMEOUT_MS });
  return {
    diskId,
    store: osd.peers.store(diskId),
    async info() {
      const reply = await call(OsdOpcode.pgQuery, encodePgRef(ref()));
      return memberInfoFromJson(decodeControl(reply.header, 'pg query reply'));
    },
    async push(ops) {
      const { header, payload } = encodePush({ ...ref(), ops });
      await call(OsdOpcode.pgPush, header, payload);
    },
    async activate(lastEpochStarted, lastActing) {
      await call(OsdOpcode.pgActivate, encodeControl({ ...ref(), lastEpochStarted, lastActing }));
    },
    async resolve(commit) {
      await call(EcOpcode.resolve, encodeEcResolve({ ...ref(), commit }));
    },
  };
}

export function notPrimary(pg: Pg, epoch: number): TesseraError {
  return new TesseraError('StaleEpoch', `disk is not the primary of pg ${pg.key} in epoch ${epoch}`);
}
