/**
 * Rebuilding one named shard of an erasure-coded object on an operator's
 * word (`tessera pg repair-shard`, OsdOpcode.pgRepairShard), run by the pg's
 * primary. A scrub cannot always say which shard is wrong (a parity mismatch
 * with one parity shard, or two: docs/operations.md, "Scrub"); an operator
 * who knows (a disk with bad sectors, say) names the shard by position or by
 * the disk that holds it, and it is rebuilt from k of the other members'
 * shards with the recovery rebuild (ec-recovery.ts rebuildObject, replace):
 * under the object's exclusive lock (no write of it in flight: an EC write
 * holds it from staging to commit), while this disk is the pg's primary in
 * the interval the request began in and the pg is active, and the shard is
 * replaced only once its new bytes are built (one transaction, or a
 * temporary object moved into place): a rebuild that fails leaves it as it
 * was.
 *
 * Refused, with a typed error and nothing written: a pool that is not
 * erasure-coded (NotSupported), an object whose name is not in this pg, a
 * position out of range or a disk that holds no shard of the pg
 * (InvalidArgument), a position without an acting member (Unavailable), an
 * object no other member holds (NotFound), a named shard at a newer version
 * than every other (Conflict: the others are behind, a rebuild would roll it
 * back), fewer than k other shards at the object's version or readable
 * (Unavailable).
 *
 * Bounds: one object; (k + 1) slices of limits.ecRecoverySliceBytes in memory.
 */
import { TesseraError, invalid, isTesseraError, toTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { compareVersions, type Eversion } from '../protocol/osd-messages.js';
import type { ShardRepairRequest, ShardRepairResult } from '../protocol/osd-admin-messages.js';
import { HOLE, objectToPg } from '../../cluster/placement.js';
import { rebuildObject, type RecoveryMember } from './ec-recovery.js';
import { dataNs, decodeVersionValue, VERSION_XATTR } from './pg-log.js';
import { primaryIn } from './pg-scrub.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';

const showVersion = (v: Eversion): string => `${v.epoch}'${v.version}`;

/** The position the request names (by position or by disk); InvalidArgument / Unavailable when it names none usable. */
function positionOf(pg: Pg, q: ShardRepairRequest): number {
  const width = pg.ec!.layout.width;
  if (q.position !== undefined) {
    if (q.position >= width) throw invalid(`pool ${pg.pool.name} is ${pg.ec!.layout.dataShards}+${pg.ec!.layout.parityShards}: shard positions are 0..${width - 1}, not ${q.position}`);
    return q.position;
  }
  const position = pg.positions.indexOf(q.diskId!);
  if (position < 0) throw invalid(`disk ${q.diskId} holds no shard of pg ${pg.key} (its members by position: ${pg.positions.map((d) => (d === HOLE ? '-' : String(d))).join(', ')})`);
  return position;
}

/** The shard's version on one member; null when it has none or it does not read. */
async function versionOn(osd: Osd, pg: Pg, diskId: number, position: number, name: string): Promise<Eversion | null> {
  try {
    const v = (await osd.memberHandle(pg, diskId).store.getXattrs({ ns: dataNs(pg.pool.id, position), name })).get(VERSION_XATTR);
    return v ? decodeVersionValue(v) : null;
  } catch (err) {
    if (isTesseraError(err, 'NotFound') || isTesseraError(err, 'Corrupt')) return null;
    throw err;
  }
}

/** Rebuilds the named shard of an erasure-coded object of `pg` (this disk its primary) from k others. */
export async function repairShard(osd: Osd, pg: Pg, q: ShardRepairRequest): Promise<ShardRepairResult> {
  const ec = pg.ec;
  if (!ec) throw new TesseraError('NotSupported', `pool ${pg.pool.name} is not erasure-coded: a replicated copy is repaired by tessera pg scrub --deep --repair`);
  if (objectToPg(pg.pool, q.name) !== pg.pg) throw invalid(`object ${q.name} is in pg ${pg.pool.id}.${objectToPg(pg.pool, q.name)}, not ${pg.key}`);
  pg.requireActive();
  const interval = pg.intervalStart;
  const position = positionOf(pg, q);
  const diskId = pg.positions[position]!;
  const acting = (d: number): boolean => d !== HOLE && pg.acting.includes(d) && !pg.backfilling.has(d);
  if (!acting(diskId)) throw new TesseraError('Unavailable', `pg ${pg.key}: shard position ${position} has no acting member now (disk ${diskId === HOLE ? 'none' : diskId}); it is rebuilt when a member takes it`);
  const unlock = await pg.ec!.locks.acquire(q.name, 'exclusive', limits.ecWaitMsMax);
  try {
    if (!primaryIn(osd, pg, interval)) throw new TesseraError('Busy', `pg ${pg.key}: a new interval began; ask again`);
    pg.requireActive();
    const others: RecoveryMember[] = pg.positions.flatMap((d, p) => (p !== position && acting(d) ? [{ position: p, handle: osd.memberHandle(pg, d) }] : []));
    const versions = await Promise.all(others.map((m) => versionOn(osd, pg, pg.positions[m.position]!, m.position, q.name)));
    let newest: Eversion | null = null;
    for (const v of versions) if (v && (!newest || compareVersions(v, newest) > 0)) newest = v;
    if (!newest) throw new TesseraError('NotFound', `pg ${pg.key}: no other member holds a shard of ${q.name}`);
    const sources = others.filter((_, i) => versions[i] && compareVersions(versions[i]!, newest!) === 0);
    const k = ec.layout.dataShards;
    const refuse = (why: string): TesseraError => new TesseraError('Unavailable', `pg ${pg.key}: shard ${position} of ${q.name} not rebuilt (nothing was changed): ${why}`);
    if (sources.length < k) throw refuse(`${sources.length} other shards at version ${showVersion(newest)} (positions ${sources.map((s) => s.position).join(', ') || 'none'}), ${k} needed`);
    const own = await versionOn(osd, pg, diskId, position, q.name);
    if (own && compareVersions(own, newest) > 0) {
      throw new TesseraError('Conflict', `pg ${pg.key}: shard ${position} of ${q.name} on disk ${diskId} is at version ${showVersion(own)}, newer than the others' ${showVersion(newest)}: not rebuilt from them`);
    }
    let shardBytes: number;
    try {
      shardBytes = await rebuildObject({ pg, ec, sources, signal: new AbortController().signal }, q.name, [{ position, handle: osd.memberHandle(pg, diskId) }], true);
    } catch (err) {
      // readShardSlices: fewer than k of the sources read (a checksum failed, say); the shard was not replaced.
      if (isTesseraError(err, 'Unavailable')) throw refuse(`fewer than ${k} of the other shards (positions ${sources.map((s) => s.position).join(', ')}) read: ${toTesseraError(err).message}`);
      throw err;
    }
    console.error(`disk ${osd.diskId}: pg ${pg.key}: shard ${position} of ${q.name} on disk ${diskId} rebuilt from positions ${sources.map((s) => s.position).join(', ')} (operator's request)`);
    return { poolId: pg.pool.id, pg: pg.pg, name: q.name, position, diskId, sources: sources.map((s) => s.position), version: showVersion(newest), shardBytes };
  } finally {
    unlock();
  }
}
