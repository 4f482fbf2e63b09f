/**
 * A member's side of erasure-coded pgs (the primary runs the same code for
 * its own shard):
 *
 * - stage: store the new chunk bytes and commit record of a version in a
 *   staging object (phase 1), any order;
 * - commit: apply a staged version in ONE store transaction (phase 2),
 *   strictly in version order (a commit waits, bounded, for its turn);
 * - query: for peering, a consistent snapshot: stop taking sub-writes (the
 *   pg goes back to peering), let those in flight finish, reload the log
 *   from the store, list the staging objects;
 * - resolve: commit the versions peering rolled forward (in order, from the
 *   staging objects) and remove every other staging object and recovery
 *   temporary of the pg (rolled back).
 */
import { TesseraError, toTesseraError } from '../lib/errors.js';
import { assert } from '../lib/assert.js';
import { limits } from '../lib/limits.js';
import { compareVersions, type LogEntry, type MemberInfo } from '../protocol/osd-messages.js';
import type { ObjectId, StoreOp } from '../store/types.js';
import { commitOps, decodeRecord, isRecoveryTempOf, isStagingOf, readHead, readRecord, sameEntry, stageOps, stagingId, stagingName, stagingNs, type EcCommitRecord } from './ec-record.js';
import type { EcPgState } from './ec-state.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';
import { memberInfo } from './members.js';
import { metaObject, PgLog } from './pg-log.js';

const REMOVE_BATCH = 256;

export function ecOf(pg: Pg): EcPgState {
  if (!pg.ec) throw new TesseraError('ProtocolError', `pg ${pg.key} is not erasure-coded`);
  return pg.ec;
}

export function positionOf(osd: Osd, pg: Pg): number {
  const p = pg.positions.indexOf(osd.diskId);
  if (p < 0) throw new TesseraError('StaleEpoch', `disk ${osd.diskId} is not an acting member of pg ${pg.key}`);
  return p;
}

/** Phase 1 on this member. */
export async function ecStage(osd: Osd, pg: Pg, encoded: Buffer, data: Buffer): Promise<void> {
  const ec = ecOf(pg);
  pg.requireActive();
  const record = decodeRecord(encoded, 'ProtocolError');
  if (record.shard !== positionOf(osd, pg)) throw new TesseraError('StaleEpoch', `pg ${pg.key}: shard ${record.shard} is not this member's`);
  if (record.entry.version <= ec.lastSubmitted.version) throw new TesseraError('Conflict', `pg ${pg.key}: version ${record.entry.version} is already committed here`);
  const runBytes = record.runs.reduce((n, r) => n + r.lengthBytes, 0);
  if (runBytes !== data.length) throw new TesseraError('ProtocolError', `EC stage carries ${data.length} bytes for runs of ${runBytes}`);
  await ec.track(osd.store.transact(stageOps(pg.pool.id, pg.pg, record, encoded, data)));
  osd.ecStagings.add(stagingId(pg.pool.id, pg.pg, record.shard, record.entry));
  ec.staged.set(stagingName(pg.pg, record.shard, record.entry), record);
}

/** Phase 2 on this member: resolves once the version is durable here. */
export async function ecCommit(osd: Osd, pg: Pg, shard: number, entry: LogEntry): Promise<void> {
  const ec = ecOf(pg);
  pg.requireActive();
  await ec.track(commitInTurn(osd, pg, ec, shard, entry));
}

async function commitInTurn(osd: Osd, pg: Pg, ec: EcPgState, shard: number, entry: LogEntry): Promise<void> {
  await ec.awaitTurn(entry.version, limits.ecWaitMsMax);
  pg.requireActive();
  const name = stagingName(pg.pg, shard, entry);
  const record = ec.staged.get(name) ?? (await readStaged(osd, pg, shard, entry));
  if (!sameEntry(record.entry, entry) || record.shard !== shard) throw new TesseraError('Conflict', `pg ${pg.key}: staging ${name} holds another write`);
  if (ec.lastSubmitted.version !== entry.version - 1) throw new TesseraError('Conflict', `pg ${pg.key}: commit order changed while version ${entry.version} waited`);
  // On top of the last commit submitted here, asserted in the store (commitOps): if the store refuses that one
  // (no space, a limit), this one fails too, so the log never has a gap (ec-peering.ts compares heads).
  const ops = commitOps(pg.pool.id, pg.pg, record, ec.lastSubmitted, pg.log);
  ec.submitted(entry);
  ec.staged.delete(name);
  const txn = osd.store.transact(ops);
  const remembered = ec.rememberChain
    .then(() => txn)
    .then(() => {
      osd.ecStagings.remove(stagingId(pg.pool.id, pg.pg, shard, entry));
      // The entry is in the store: the log in memory must show it (unless a reload already did).
      if (entry.version > pg.log.head.version) pg.log.remember(entry);
    });
  ec.rememberChain = remembered.catch(() => undefined);
  await remembered;
}

async function readStaged(osd: Osd, pg: Pg, shard: number, entry: LogEntry): Promise<EcCommitRecord> {
  try {
    return await readRecord(osd.store, stagingId(pg.pool.id, pg.pg, shard, entry));
  } catch (err) {
    if (toTesseraError(err).code === 'NotFound') throw new TesseraError('Conflict', `pg ${pg.key}: version ${entry.version} was not staged here`);
    throw err;
  }
}

interface Stagings {
  records: Map<string, EcCommitRecord>;
  /** Staging objects without a readable record, and recovery temporaries: garbage. */
  garbage: string[];
}

/** The pg's staging objects and recovery temporaries in this member's store (from the daemon's index). */
async function listStagings(osd: Osd, pg: Pg): Promise<Stagings> {
  const out: Stagings = { records: new Map(), garbage: [] };
  const ns = stagingNs(pg.pool.id);
  for (const name of osd.ecStagings.names(pg.pool.id, pg.pg).sort()) {
    if (isRecoveryTempOf(name, pg.pg)) out.garbage.push(name);
    if (!isStagingOf(name, pg.pg)) continue;
    try {
      out.records.set(name, await readRecord(osd.store, { ns, name }));
    } catch (err) {
      const code = toTesseraError(err).code;
      if (code === 'NotFound') osd.ecStagings.remove({ ns, name });
      else if (code === 'Corrupt') out.garbage.push(name);
      else throw err;
    }
  }
  return out;
}

/** Stops sub-writes, waits for those in flight, and reloads the log if a recovery push replaced it. */
async function quiesce(osd: Osd, pg: Pg, ec: EcPgState): Promise<void> {
  pg.state = 'peering';
  ec.abortTurns();
  await ec.drain(limits.ecWaitMsMax);
  const stored = await readHead(osd.store, pg.pool.id, pg.pg);
  if (ec.logReplaced || compareVersions(stored, pg.log.head) !== 0) {
    pg.resetLog(await PgLog.load(osd.store, pg.pool.id, pg.pg));
    ec.logReplaced = false;
  }
  ec.resetMember(pg.log.head);
}

/** A recovery push landed in this member's store: keep the staging index and the log in memory true. */
export function notePush(osd: Osd, pg: Pg, ops: readonly StoreOp[]): void {
  if (!pg.ec) return;
  osd.ecStagings.notePush(ops);
  const meta = metaObject(pg.pool.id, pg.pg);
  if (ops.some((op) => op.id.ns === meta.ns && op.id.name === meta.name)) pg.ec.logReplaced = true;
}

/** Peering's query of an erasure-coded member. */
export async function ecMemberInfo(osd: Osd, pg: Pg): Promise<MemberInfo> {
  const ec = ecOf(pg);
  await quiesce(osd, pg, ec);
  const { records } = await listStagings(osd, pg);
  return {
    ...memberInfo(pg),
    shard: pg.log.info.shard ?? -1,
    stagings: [...records.values()].map((r) => ({ shard: r.shard, entry: r.entry })),
  };
}

/** Commits `commit` (in order, while each is the next version and staged here), removes every other staging object of the pg. */
export async function ecResolveLocal(osd: Osd, pg: Pg, commit: readonly LogEntry[]): Promise<void> {
  const ec = ecOf(pg);
  await quiesce(osd, pg, ec);
  const position = positionOf(osd, pg);
  const { records, garbage } = await listStagings(osd, pg);
  const staged = records.size;
  for (const e of commit) {
    const name = stagingName(pg.pg, position, e);
    const record = records.get(name);
    if (!record || !sameEntry(record.entry, e) || record.shard !== position || e.version !== pg.log.head.version + 1) break;
    assert(pg.log.info.shard === undefined || pg.log.info.shard === position, `pg ${pg.key}: rolling forward on the member's own shard`);
    await osd.store.transact(commitOps(pg.pool.id, pg.pg, record, pg.log.head, pg.log));
    osd.ecStagings.remove({ ns: stagingNs(pg.pool.id), name });
    pg.log.remember(e);
    records.delete(name);
  }
  await removeStagings(osd, pg, [...records.keys(), ...garbage]);
  ec.resetMember(pg.log.head);
  if (staged > 0) console.error(`disk ${osd.diskId}: pg ${pg.key}: rolled ${staged - records.size} staged versions forward, ${records.size} back (head ${pg.log.head.version})`);
}

async function removeStagings(osd: Osd, pg: Pg, names: string[]): Promise<void> {
  const ns = stagingNs(pg.pool.id);
  for (let i = 0; i < names.length; i += REMOVE_BATCH) {
    const ops: StoreOp[] = names.slice(i, i + REMOVE_BATCH).map((name) => ({ type: 'remove', id: { ns, name } as ObjectId, ifExists: true }));
    await osd.store.transact(ops);
    osd.ecStagings.notePush(ops);
  }
}
