/**
 * How a primary reaches a pg's members during peering: itself directly (its
 * own store), the others through pg messages (query, fenced push, activate)
 * and store reads.
 */
import { TesseraError } from '../lib/errors.js';
import {
  decodeControl,
  encodeControl,
  encodePgRef,
  encodePush,
  memberInfoFromJson,
  OsdOpcode,
  type MemberInfo,
  type PgRef,
} from '../protocol/osd-messages.js';
import type { StoreOp } from '../store/types.js';
import type { MemberHandle } from './peering.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';
import { PgLog } from './pg-log.js';

const PEER_TIMEOUT_MS = 60_000;

export function memberInfo(pg: Pg): MemberInfo {
  return {
    head: pg.log.head,
    tail: pg.log.tail,
    lastEpochStarted: pg.log.info.lastEpochStarted,
    lastActing: pg.log.info.lastActing,
    entries: pg.log.entries,
  };
}

/**
 * Persists the interval a member is activated in and makes its pg active; `interval`
 * (the primary's own activation) guards against a stale peering run activating a newer interval.
 */
export async function activateLocal(osd: Osd, pg: Pg, lastEpochStarted: number, lastActing: number[], interval?: number): Promise<void> {
  const log = await PgLog.load(osd.store, pg.pool.id, pg.pg);
  await osd.store.transact(log.infoOps({ lastEpochStarted, lastActing }));
  pg.resetLog(log);
  if (interval !== undefined && pg.intervalStart !== interval) return; // a new interval began meanwhile: its peering activates
  pg.state = 'active';
}

export function localHandle(osd: Osd, pg: Pg): MemberHandle {
  const interval = pg.intervalStart;
  return {
    diskId: osd.diskId,
    store: osd.store,
    info: async () => memberInfo(pg),
    push: (ops: StoreOp[]) => osd.store.transact(ops),
    activate: (lastEpochStarted, lastActing) => activateLocal(osd, pg, lastEpochStarted, lastActing, interval),
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
  };
}

export function notPrimary(pg: Pg, epoch: number): TesseraError {
  return new TesseraError('StaleEpoch', `disk is not the primary of pg ${pg.key} in epoch ${epoch}`);
}
