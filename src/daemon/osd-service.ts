/**
 * The daemon's answers to the cluster messages (src/protocol/osd-messages.ts).
 *
 * As primary: client writes (ordered by pg version, applied locally and on
 * every other acting member, acknowledged when all have them), reads (after
 * any write of the object in flight has finished, so an unacknowledged write
 * is never shown; a local copy that fails its checksum is replaced by a
 * replica's and the read served from it: read repair, pg-repair.ts),
 * listings. As member: replicated writes in version order,
 * and peering's query, fenced pushes and activation. Erasure-coded pgs go
 * through src/daemon/ec-write.ts, ec-read.ts and ec-member.ts (two-phase
 * shard writes, resolve at peering).
 *
 * Every request first waits for the map epoch its sender has seen; a sender
 * whose epoch predates the pg's current interval is told StaleEpoch.
 *
 * Client requests (ops, reads, listings) are served only under the
 * daemon's primary lease (src/daemon/lease.ts): checked when one arrives and
 * again before it is answered, so a primary cut off from the map daemon
 * (soon marked down, its pgs served by others) neither shows old bytes nor
 * acknowledges a write once its lease is over; it answers Unavailable, which
 * clients retry with a fresh map.
 */
import { isTesseraError, TesseraError, invalid } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { validateTransaction } from '../store/validate.js';
import { pgSortKeyRange } from '../lib/hash.js';
import { encodeObjectPage, encodeOmapPage, encodeOmapValues, encodeXattrs } from '../protocol/store-messages.js';
import { decodeControl, decodeList, decodeOp, decodePgRef, decodePush, decodeRead, decodeRepop, encodeControl, encodeObjectStat, encodeRepop, encodeVersion, field, OsdOpcode, type Eversion, type LogEntry, type OpRequest, type PgRef, type ReadRequest } from '../protocol/osd-messages.js';
import { decodePgScrubRequest, decodeScrubMapRequest, decodeShardRepairRequest } from '../protocol/osd-admin-messages.js';
import { decodeEcCommit, decodeEcResolve, decodeEcStage, EcOpcode } from '../protocol/ec-messages.js';
import type { RpcHandler, RpcHandlerReply } from '../rpc/types.js';
import type { StoreOp } from '../store/types.js';
import { activateLocal, notPrimary, queryMember } from './members.js';
import type { Osd } from './osd.js';
import { isConditional, requestKey, writeQuorum, type DecisionPoint, type Pg } from './pg.js';
import { dataNs, decodeVersionValue, metaObject, PgLog, VERSION_XATTR } from './pg-log.js';
import { ecCommit, ecResolveLocal, ecStage, notePush, positionOf } from './ec-member.js';
import { ecClientRead } from './ec-read.js';
import { readRepair } from './pg-repair.js';
import { scrubMapPage, scrubPgSerialized } from './pg-scrub.js';
import { repairShard } from './shard-repair.js';
import { ecPrimaryWrite } from './ec-write.js';
import { pieceBuffers, wholeReadReply, type PieceBuffers } from './store-service.js';

const EMPTY = Buffer.alloc(0);

export function osdHandler(osd: Osd, buffers: PieceBuffers = pieceBuffers()): RpcHandler {
  const client = async <T>(serve: () => Promise<T>): Promise<T> => {
    osd.lease.check();
    osd.clientRequestsInflight++;
    try {
      const reply = await serve();
      // Everything the reply holds was read (or made durable) before this check, so before the lease ended, so
      // before any other primary of the pg could exist. A write refused here may be applied: it is not
      // acknowledged, and a retry with its request id is answered from the pg log.
      osd.lease.check();
      return reply;
    } finally {
      osd.clientRequestsInflight--;
      osd.clientRequestLastEndedMs = osd.io.clock.monotonicMs();
    }
  };
  return async ({ op, header, payload }): Promise<RpcHandlerReply> => {
    switch (op) {
      case OsdOpcode.op:
        return client(async () => ({ header: encodeVersion(await clientWrite(osd, decodeOp(header, payload))) }));
      case OsdOpcode.read:
        return client(() => clientRead(osd, decodeRead(header), buffers));
      case OsdOpcode.list:
        return client(() => clientList(osd, header));
      case OsdOpcode.repop:
        await replicaWrite(osd, header, payload);
        return { header: EMPTY };
      case OsdOpcode.pgQuery: {
        const pg = await memberPg(osd, decodePgRef(header));
        return { header: encodeControl(await queryMember(osd, pg)) };
      }
      case EcOpcode.stage: {
        const m = decodeEcStage(header, payload);
        await ecStage(osd, await memberPg(osd, m), m.record, m.data);
        return { header: EMPTY };
      }
      case EcOpcode.commit: {
        const m = decodeEcCommit(header);
        await ecCommit(osd, await memberPg(osd, m), m.shard, m.entry);
        return { header: EMPTY };
      }
      case EcOpcode.resolve: {
        const m = decodeEcResolve(header);
        await ecResolveLocal(osd, await memberPg(osd, m), m.commit);
        return { header: EMPTY };
      }
      case OsdOpcode.pgPush: {
        const push = decodePush(header, payload);
        const pg = await memberPg(osd, push);
        await osd.store.transact(push.ops);
        notePush(osd, pg, push.ops);
        // Replicated: recovery replaced this member's log; the next query must see it (a member recovered
        // while its pg is active without it is queried again before it is activated).
        const meta = metaObject(pg.pool.id, pg.pg);
        if (!pg.ec && push.ops.some((o) => o.id.ns === meta.ns && o.id.name === meta.name)) pg.resetLog(await PgLog.load(osd.store, pg.pool.id, pg.pg));
        return { header: EMPTY };
      }
      case OsdOpcode.pgScrub: {
        const q = decodePgScrubRequest(header);
        const pg = await primaryPg(osd, q);
        const result = await scrubPgSerialized(osd, pg, { deep: q.deep, repair: q.repair, ...(q.bytesPerSec !== undefined ? { bytesPerSec: q.bytesPerSec } : {}) });
        return { header: encodeControl(result) };
      }
      case OsdOpcode.pgRepairShard: {
        const q = decodeShardRepairRequest(header);
        return { header: encodeControl(await repairShard(osd, await primaryPg(osd, q), q)) };
      }
      case OsdOpcode.pgScrubMap: {
        const q = decodeScrubMapRequest(header);
        return { header: encodeControl(await scrubMapPage(osd, await memberPg(osd, q), q)) };
      }
      case OsdOpcode.pgActivate: {
        const doc = decodeControl(header, 'pg activate');
        const ref = { epoch: field.uint(doc, 'epoch'), poolId: field.uint(doc, 'poolId'), pg: field.uint(doc, 'pg') };
        const pg = await memberPg(osd, ref);
        await activateLocal(osd, pg, field.uint(doc, 'lastEpochStarted'), field.intList(doc, 'lastActing', 64));
        return { header: EMPTY };
      }
      default:
        throw new TesseraError('NotSupported', `unknown operation ${op}`);
    }
  };
}

/** The pg of a request to its primary, once the map has the sender's epoch; StaleEpoch if this disk is not its primary. */
async function primaryPg(osd: Osd, ref: PgRef): Promise<Pg> {
  await osd.catchUp(ref.epoch);
  const pool = osd.view.pool(ref.poolId);
  if (ref.pg >= pool.pgCount) throw invalid(`pg ${ref.pg} is beyond pool ${pool.id}'s ${pool.pgCount} pgs`);
  const pg = await osd.pgFor(ref.poolId, ref.pg);
  osd.syncInterval(pg);
  if (osd.view.pg(pool, ref.pg).primary !== osd.diskId || pg.primary !== osd.diskId) throw notPrimary(pg, osd.view.epoch);
  return pg;
}

/** The pg of a message from its primary; StaleEpoch if the message predates the current interval. */
async function memberPg(osd: Osd, ref: PgRef): Promise<Pg> {
  await osd.catchUp(ref.epoch);
  const pg = await osd.pgFor(ref.poolId, ref.pg);
  osd.syncInterval(pg);
  if (ref.epoch < pg.intervalStart) throw new TesseraError('StaleEpoch', `pg ${pg.key}: message of epoch ${ref.epoch} predates interval ${pg.intervalStart}`);
  return pg;
}

/** Writes need min_size members (replicated) or k+1 shards (erasure-coded: one failure from losing the ability to read). */
function checkWriteQuorum(pg: Pg): void {
  const r = pg.pool.redundancy;
  const quorum = writeQuorum(pg.pool);
  const writable = pg.acting.length - pg.backfilling.size;
  if (r.type === 'replicated' && writable < quorum) {
    throw new TesseraError('NoQuorum', `pg ${pg.key} has ${writable} of ${r.size} members up and complete, min_size ${r.minSize}`);
  }
  if (r.type === 'erasure' && pg.acting.length < quorum) {
    throw new TesseraError('NoQuorum', `pg ${pg.key} has ${pg.acting.length} of ${r.dataShards + r.parityShards} shards up; writes need ${quorum}`);
  }
}

/** Ops that add no data: a request made only of these is allowed on a full pg (deletes free space). */
const spaceFreeingOps = new Set<StoreOp['type']>(['remove', 'removeXattr', 'omapRemoveKeys', 'omapRemoveRange', 'omapClear', 'assertXattr', 'assertExists', 'omapCompare']);

/** Writes to a pg with a full member are refused (Full) before any disk runs out; deletes go on. */
function checkNotFull(osd: Osd, pg: Pg, req: OpRequest): void {
  if (req.ops.every((op) => spaceFreeingOps.has(op.type))) return;
  for (const id of pg.acting) {
    if (osd.view.map.disks.find((d) => d.id === id)?.space === 'full') {
      throw new TesseraError('Full', `pg ${pg.key}: disk ${id} is full (over the full ratio); writes are refused until space is freed or disks are added, deletes work`);
    }
  }
}

async function clientWrite(osd: Osd, req: OpRequest): Promise<Eversion> {
  const pg = await primaryPg(osd, req);
  pg.requireActive();
  checkWriteQuorum(pg);
  const done = pg.log.versionOf(req.request.client, req.request.seq);
  if (done) return done;
  checkNotFull(osd, pg, req);
  const key = requestKey(req.request);
  const running = pg.inflightRequests.get(key);
  if (running) return running;
  const write = pg.ec ? ecPrimaryWrite(osd, pg, req) : primaryWrite(osd, pg, req);
  pg.inflightRequests.set(key, write);
  if (!pg.ec) pg.trackObject(req.object, write);
  try {
    return await write;
  } finally {
    pg.inflightRequests.delete(key);
  }
}

/**
 * A replicated write at its primary. Writes of one object take versions in arrival order
 * (Pg.withObjectTurn); writes of different objects never wait for each other. A conditional write
 * (compare-and-set: assertXattr, omapCompare, exclusive create...) is decided here before it takes a
 * version: once the local store transactions of the object's earlier writes have settled, the store
 * evaluates its conditions (ObjectStore.check) against what it holds; a failed condition answers the
 * client with the condition's error and consumes no version. A write that holds then goes like any
 * other: local apply and repops at once. Every member applies it on the same state in the same order,
 * so the store's own check there passes; if it ever fails, the write fails, is never acknowledged,
 * and the pg peers again (as for any write that did not reach every member).
 */
async function primaryWrite(osd: Osd, pg: Pg, req: OpRequest): Promise<Eversion> {
  const conditional = req.ops.some(isConditional);
  const last = req.ops[req.ops.length - 1];
  const kind = last?.type === 'remove' ? 'delete' : 'modify';
  return pg.withObjectTurn(req.object, async (turn) => {
    let decided: DecisionPoint | null = null;
    for (let attempt = 1; conditional && decided === null; attempt++) {
      const point = await pg.decisionPoint();
      await turn.earlierApplied();
      // An earlier write of the object that failed here made the pg peer again (its local failure does that
      // synchronously, before this wakes): decided on the state peering settles, this would mean nothing.
      if (!pg.decisionHolds(point)) throw new TesseraError('Busy', `pg ${pg.key}: the pg left active while a conditional write of ${req.object} waited; retry`);
      await osd.store.check(pg.clientOps(req.object, req.ops));
      if (pg.decisionHolds(point)) decided = point;
      else if (pg.state !== 'active' || attempt >= 3) throw new TesseraError('Busy', `pg ${pg.key}: the pg changed while a conditional write of ${req.object} was decided; retry`);
      // else: a repair ran meanwhile (same versions, maybe other bytes): decide again.
    }
    let replicated!: Promise<void>;
    let version!: Eversion;
    await pg.withGate(false, async () => {
      const interval = pg.intervalStart;
      // Aborts when the interval ends: repops to a member that left (stopped, died) fail then, not at their timeout.
      const intervalSignal = pg.intervalAbort.signal;
      // The wait may have run into a peering: its query already reported this member's log.
      pg.requireActive();
      if (decided && !pg.decisionHolds(decided)) throw new TesseraError('Busy', `pg ${pg.key}: the pg changed after a conditional write of ${req.object} was decided; retry`);
      version = pg.nextVersion(osd.view.epoch);
      const entry: LogEntry = { ...version, object: req.object, kind, request: req.request };
      let txn;
      try {
        txn = pg.buildWrite(req.object, req.ops, entry);
        // What every member's store would refuse (the client's ops with the version and log ops added) is refused
        // here with its own error: sent on, it would fail everywhere, the pg would peer again and the client retry
        // without end.
        validateTransaction(txn, limits);
      } catch (err) {
        pg.releaseVersion(version);
        throw err;
      }
      // Tracked: a peering query waits for it, so the log it reports holds it if the store does.
      const local = pg.trackStoreWrite(osd.store.transact(txn), entry, interval);
      // First reaction to the local outcome: on failure the pg peers again before anything waiting for this
      // transaction (the object's next conditional write) runs.
      let repeered = false;
      local.catch((err: unknown) => {
        if (decided && isTesseraError(err) && ['Conflict', 'NotFound', 'AlreadyExists'].includes(err.code)) {
          console.error(`disk ${osd.diskId}: pg ${pg.key}: conditional write ${version.version} of ${req.object}, decided here, failed its store check: ${err.code} ${err.message}; peering again`);
        }
        if (pg.intervalStart === interval && !repeered) {
          repeered = true;
          osd.repeer(pg);
        }
      });
      turn.versionTaken(local);
      // Members being backfilled get this write from the log when they join (peering.ts, backfillLater).
      const others = pg.acting.filter((d) => d !== osd.diskId && !pg.backfilling.has(d));
      const repops = others.map((d) => {
        const { header, payload } = encodeRepop({ epoch: osd.view.epoch, poolId: pg.pool.id, pg: pg.pg, entry, ops: txn });
        return osd.peers.rpc(d).call(OsdOpcode.repop, header, payload, { timeoutMs: limits.repopTimeoutMs, signal: intervalSignal });
      });
      replicated = Promise.all([local, ...repops]).then(
        () => undefined,
        (err: unknown) => {
          // Some member may lack this write while others have it: the pg must settle before serving again.
          // (Synchronously, so a retry of this request cannot find the entry in the log before that.)
          if (pg.intervalStart === interval && !repeered) {
            repeered = true;
            osd.repeer(pg);
          }
          throw new TesseraError('Unavailable', `pg ${pg.key}: write ${version.version} did not reach every member: ${(err as Error).message}`, { cause: err });
        },
      );
    });
    await replicated;
    return version;
  });
}

async function replicaWrite(osd: Osd, header: Buffer, payload: Buffer): Promise<void> {
  const repop = decodeRepop(header, payload);
  const pg = await memberPg(osd, repop);
  // Submitted to the store in arrival order (the primary sends in version order on one connection).
  const submit = (): { done: Promise<void> } => {
    pg.requireActive();
    const expected = pg.log.head.version + pg.replicaBacklog + 1;
    if (repop.entry.version !== expected) {
      throw new TesseraError('Conflict', `pg ${pg.key}: repop version ${repop.entry.version}, expected ${expected}`);
    }
    pg.replicaBacklog++;
    // Tracked: a peering query waits for it, so the log it reports holds it if the store does.
    return { done: pg.trackStoreWrite(osd.store.transact(repop.ops), repop.entry, pg.intervalStart, () => pg.replicaBacklog--) };
  };
  const step = pg.replicaChain.then(submit, submit);
  pg.replicaChain = step.catch(() => ({ done: Promise.resolve() }));
  const { done } = await step;
  await done;
}

async function clientRead(osd: Osd, q: ReadRequest, buffers: PieceBuffers): Promise<RpcHandlerReply> {
  const pg = await primaryPg(osd, q);
  pg.requireActive();
  if (pg.ec) return ecClientRead(osd, pg, q, buffers);
  await pg.objectSettled(q.object);
  try {
    return await readLocal(osd, pg, q, buffers);
  } catch (err) {
    // The primary's copy failed its checksum: serve and keep a replica's good copy instead (pg-repair.ts).
    if (!isTesseraError(err, 'Corrupt')) throw err;
    await readRepair(osd, pg, q.object, err);
    return readLocal(osd, pg, q, buffers);
  }
}

async function readLocal(osd: Osd, pg: Pg, q: ReadRequest, buffers: PieceBuffers): Promise<RpcHandlerReply> {
  const id = pg.objectId(q.object);
  const store = osd.store;
  switch (q.kind) {
    case 'data':
      // Read whole and verified before the reply (Corrupt anywhere reaches read repair), into pooled pieces.
      return wholeReadReply(store, id, q.options, buffers);
    case 'stat': {
      const [s, x] = await Promise.all([store.stat(id), store.getXattrs(id)]);
      const v = x.get(VERSION_XATTR);
      const version = v ? decodeVersionValue(v) : { epoch: 0, version: 0 };
      return { header: encodeObjectStat({ ...s, xattrCount: [...x.keys()].filter((k) => !k.startsWith('_')).length, version }) };
    }
    case 'xattrs': {
      const x = await store.getXattrs(id);
      for (const k of [...x.keys()]) if (k.startsWith('_')) x.delete(k);
      return { header: encodeXattrs(x) };
    }
    case 'omapGet':
      return { header: encodeOmapValues(await store.omapGet(id, q.keys)) };
    case 'omapList':
      return { header: encodeOmapPage(await store.omapList(id, q.options)) };
  }
}

async function clientList(osd: Osd, header: Buffer): Promise<RpcHandlerReply> {
  const { limit, cursor, ...ref } = decodeList(header);
  const pg = await primaryPg(osd, ref);
  pg.requireActive();
  const page = await osd.store.listObjects({
    ns: pg.ec ? dataNs(pg.pool.id, positionOf(osd, pg)) : pg.objectId('x').ns,
    sortKeyRange: pgSortKeyRange(pg.pg, Math.log2(pg.pool.pgCount)),
    limit: Math.max(1, limit),
    ...(cursor !== undefined ? { cursor } : {}),
  });
  return { header: encodeObjectPage(page) };
}
