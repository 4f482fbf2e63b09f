/**
 * `tessera pg repair-shard POOL OBJECT (--position N | --disk ID) [--json]`:
 * rebuilds one named shard of an object of an erasure-coded pool from k of
 * the others, at the object's pg's primary (OsdOpcode.pgRepairShard; the
 * rebuild, its lock and its refusals are src/daemon/shard-repair.ts). For
 * the operator who knows which shard is wrong where a scrub cannot tell
 * (docs/operations.md, "Scrub").
 *
 * What the map shows is checked here first (a pool that is not
 * erasure-coded, a position out of range, a disk that holds no shard of the
 * pg); the primary checks again against its interval. Prints what was
 * rebuilt (or with --json the result document); exit 0. A refusal is one
 * line on stderr and exit 1; retried only through map changes and peering
 * (StaleEpoch, Busy, an unreachable primary).
 */
import { objectToPg, buildPlacementIndex, pgPlacement, HOLE } from '../../cluster/placement.js';
import { OsdOpcode } from '../protocol/osd-messages.js';
import { decodeShardRepairResult, type ShardRepairResult } from '../protocol/osd-admin-messages.js';
import { callPrimary, poolNamed } from './scrub.js';
import { CliError, withCluster, type TargetOptions } from './target.js';

/** One shard of one object: read and written once, slice by slice. */
const REPAIR_SHARD_TIMEOUT_MS = 30 * 60_000;

export interface RepairShardOptions {
  pool: string;
  name: string;
  position?: number;
  diskId?: number;
  json: boolean;
}

type Out = (text: string) => void;

export async function pgRepairShard(t: TargetOptions, o: RepairShardOptions, out: Out): Promise<number> {
  if ((o.position === undefined) === (o.diskId === undefined)) throw new CliError('name the shard with --position N or --disk ID (one of them)');
  return withCluster(t, async (c) => {
    const map = await c.current();
    const pool = poolNamed(map, o.pool);
    if (pool.redundancy.type !== 'erasure') throw new CliError(`pool ${pool.name} is not erasure-coded (it keeps whole copies): repair its copies with tessera pg scrub ${pool.name}.PG --deep --repair`);
    const width = pool.redundancy.dataShards + pool.redundancy.parityShards;
    if (o.position !== undefined && o.position >= width) throw new CliError(`pool ${pool.name} is ${pool.redundancy.dataShards}+${pool.redundancy.parityShards}: shard positions are 0..${width - 1}, not ${o.position}`);
    const pg = objectToPg(pool, o.name);
    if (o.diskId !== undefined) {
      // The acting set (a temporary acting set included), by position: where the primary looks for the shard.
      const { acting } = pgPlacement(map, buildPlacementIndex(map), pool, pg);
      if (!acting.includes(o.diskId)) throw new CliError(`disk ${o.diskId} holds no shard of ${o.name} (pg ${pool.id}.${pg}, acting disks by position: ${acting.map((d) => (d === HOLE ? '-' : String(d))).join(', ')})`);
    }
    const result: ShardRepairResult = await callPrimary(t.io, c, pool.name, pg, {
      op: OsdOpcode.pgRepairShard,
      request: (m, p) => ({ epoch: m.epoch, poolId: p.id, pg, name: o.name, ...(o.position !== undefined ? { position: o.position } : { diskId: o.diskId }) }),
      decode: decodeShardRepairResult,
      timeoutMs: REPAIR_SHARD_TIMEOUT_MS,
      retry: ['StaleEpoch', 'Busy', 'Timeout', 'Closed'],
      what: `repair of shard ${o.position ?? `on disk ${o.diskId}`} of ${o.name}`,
    });
    if (o.json) out(`${JSON.stringify(result)}\n`);
    else out(`rebuilt shard ${result.position} of ${result.name} (pg ${result.poolId}.${result.pg}) on disk ${result.diskId} from positions ${result.sources.join(', ')}: ${result.shardBytes} bytes, version ${result.version}\n`);
    return 0;
  });
}
