/**
 * A primary's erasure-coded writes. Under the object's exclusive lock:
 *
 * 1. plan the client's ops against the object's state (its own shard's
 *    xattrs), reading the stripes a partial write only partly covers (from
 *    the data shards, or any k shards when one is missing);
 * 2. encode the new stripes (whole object, or the touched stripes only);
 * 3. take the next pg version, then phase 1: every acting member stages its
 *    chunks with the commit record; phase 2, once every member has staged and
 *    the previous version's commits went out: every member commits (one store
 *    transaction each, in version order);
 * 4. acknowledge when every acting member has committed durably.
 *
 * Any failure after the version was taken fails the write (the client
 * retries) and makes the pg peer again, which rolls the version forward or
 * back on every member. Writes need k+1 acting shards (checked by the caller).
 * Memory: the shard bytes of writes in flight (rewritten stripes x (k+m) x
 * unit) are reserved in the daemon's byte budget (limits.ecWriteBytesInflightMax).
 */
import { TesseraError, toTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { encodeEcCommit, encodeEcStage, EcOpcode } from '../protocol/ec-messages.js';
import type { Eversion, LogEntry, OpRequest } from '../protocol/osd-messages.js';
import type { StoreOp } from '../store/types.js';
import { validateTransaction } from '../store/validate.js';
import { HOLE } from '../../cluster/placement.js';
import { ecCommit, ecOf, ecStage, positionOf } from './ec-member.js';
import { encodePlan, planStripes, recordFor, type EncodedWrite } from './ec-encode.js';
import { planTransaction, type EcObjectMeta, type EcPlan } from './ec-plan.js';
import { decodeSize, encodeRecord, SIZE_XATTR } from './ec-record.js';
import { readStripes, type ShardReader } from './ec-shards.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';
import { dataNs, VERSION_XATTR } from './pg-log.js';

/** Reads of an object's shards from the pg's acting members (this daemon's own store for its position). */
export function shardReader(osd: Osd, pg: Pg): ShardReader {
  const ec = ecOf(pg);
  return {
    poolId: pg.pool.id,
    layout: ec.layout,
    codec: ec.codec,
    stores: pg.positions.map((d) => (d === HOLE ? null : d === osd.diskId ? osd.store : osd.peers.store(d))),
  };
}

/** The object's state from this daemon's own shard, and that shard's version (`_v` value; none when absent). */
export async function loadMeta(osd: Osd, pg: Pg, name: string): Promise<{ meta: EcObjectMeta; version: Buffer | undefined }> {
  let x: Map<string, Buffer>;
  try {
    x = await osd.store.getXattrs({ ns: dataNs(pg.pool.id, positionOf(osd, pg)), name });
  } catch (err) {
    if (toTesseraError(err).code === 'NotFound') return { meta: { exists: false, sizeBytes: 0, xattrs: new Map() }, version: undefined };
    throw err;
  }
  const xattrs = new Map([...x].filter(([n]) => !n.startsWith('_')));
  return { meta: { exists: true, sizeBytes: decodeSize(x.get(SIZE_XATTR)), xattrs }, version: x.get(VERSION_XATTR) };
}

async function loadStripes(reader: ShardReader, name: string, stripes: number[]): Promise<Map<number, Buffer>> {
  const sorted = [...stripes].sort((a, b) => a - b);
  const groups: Array<{ first: number; count: number }> = [];
  for (const s of sorted) {
    const g = groups[groups.length - 1];
    if (g && g.first + g.count === s) g.count++;
    else groups.push({ first: s, count: 1 });
  }
  const out = new Map<number, Buffer>();
  const sb = reader.layout.stripeBytes;
  await Promise.all(
    groups.map(async (g) => {
      const bytes = await readStripes(reader, name, g.first, g.count);
      for (let i = 0; i < g.count; i++) out.set(g.first + i, bytes.subarray(i * sb, (i + 1) * sb));
    }),
  );
  return out;
}

interface MemberLink {
  stage(record: Buffer, data: readonly Uint8Array[]): Promise<void>;
  commit(shard: number, entry: LogEntry): Promise<void>;
}

/** intervalSignal: aborts when the pg's interval ends, so sub-writes to a member that left (stopped, died) fail then, not at their timeout. */
function linkTo(osd: Osd, pg: Pg, diskId: number, intervalSignal: AbortSignal): MemberLink {
  if (diskId === osd.diskId) return { stage: (r, d) => ecStage(osd, pg, r, Buffer.concat(d)), commit: (s, e) => ecCommit(osd, pg, s, e) };
  const ref = () => ({ epoch: osd.view.epoch, poolId: pg.pool.id, pg: pg.pg });
  const options = { timeoutMs: limits.ecSubWriteTimeoutMs, signal: intervalSignal };
  return {
    async stage(record, data) {
      const { header, payload } = encodeEcStage({ ...ref(), record, data });
      await osd.peers.rpc(diskId).call(EcOpcode.stage, header, payload, options);
    },
    async commit(shard, entry) {
      await osd.peers.rpc(diskId).call(EcOpcode.commit, encodeEcCommit({ ...ref(), shard, entry }), [], options);
    },
  };
}

export async function ecPrimaryWrite(osd: Osd, pg: Pg, req: OpRequest): Promise<Eversion> {
  const ec = ecOf(pg);
  const generation = ec.generation;
  const shardId = { ns: dataNs(pg.pool.id, positionOf(osd, pg)), name: req.object };
  validateTransaction(req.ops.map((op) => ({ ...op, id: shardId }) as StoreOp), limits);
  const unlock = await ec.locks.acquire(req.object, 'exclusive', limits.ecWaitMsMax);
  try {
    const { meta, version } = await loadMeta(osd, pg, req.object);
    // Old stripes only from shards at this shard's version (a read-modify-write never mixes two versions).
    let otherVersion = false;
    const reader: ShardReader = { ...shardReader(osd, pg), version, onOtherVersion: () => (otherVersion = true), onCorrupt: () => osd.readRepairs.request(pg, req.object) };
    const plan = await planTransaction(meta, req.ops, ec.layout, (stripes) => loadStripes(reader, req.object, stripes)).finally(() => {
      // Members disagree on a committed object while the pg is active: peering rebuilds the stale shards first.
      if (otherVersion && ec.generation === generation && pg.state === 'active') osd.repeer(pg);
    });
    if (otherVersion) throw new TesseraError('Unavailable', `pg ${pg.key}: object ${req.object} has shards at another version than the primary's; peering again`);
    const budgetBytes = planStripes(plan, ec.layout) * ec.layout.unitBytes * ec.layout.width;
    const unreserve = await osd.ecWriteBudget.reserve(budgetBytes, limits.ecWaitMsMax);
    try {
      const encoded = encodePlan(plan, ec.layout, ec.codec);
      return await stageAndCommit(osd, pg, req, plan, encoded, generation);
    } finally {
      unreserve();
    }
  } finally {
    unlock();
  }
}

async function stageAndCommit(osd: Osd, pg: Pg, req: OpRequest, plan: EcPlan, encoded: EncodedWrite, generation: number): Promise<Eversion> {
  const ec = ecOf(pg);
  pg.requireActive();
  if (ec.generation !== generation) throw new TesseraError('Busy', `pg ${pg.key} peered again during the write`);
  // Sub-writes stop waiting when the interval ends (the client retries with its request id, as after a timeout).
  const intervalSignal = pg.intervalAbort.signal;
  const members = pg.positions.flatMap((diskId, position) => (diskId === HOLE ? [] : [{ position, link: linkTo(osd, pg, diskId, intervalSignal) }]));
  const interval = pg.intervalStart;
  const version = pg.nextVersion(osd.view.epoch);
  const entry: LogEntry = { ...version, object: req.object, kind: plan.exists ? 'modify' : 'delete', request: req.request };
  const turn = ec.takeCommitTurn();
  try {
    await Promise.all(members.map((m) => m.link.stage(encodeRecord(recordFor(plan, encoded, entry, m.position)), encoded.shards[m.position]!)));
    await turn.previous;
    if (ec.generation !== generation || pg.state !== 'active') throw new TesseraError('Busy', `pg ${pg.key} is peering`);
    const commits = members.map((m) => m.link.commit(m.position, entry));
    turn.dispatched();
    await Promise.all(commits);
    return version;
  } catch (err) {
    turn.failed(err);
    // Some members may have staged or committed this version: peering settles it (forward or back) before more I/O.
    if (ec.generation === generation && pg.intervalStart === interval) osd.repeer(pg);
    const e = toTesseraError(err);
    throw new TesseraError('Unavailable', `pg ${pg.key}: write ${version.version} did not complete on every member: ${e.code} ${e.message}`, { cause: err });
  }
}
