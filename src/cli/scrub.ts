/**
 * `tessera pg scrub POOL.PG` and `tessera pool scrub POOL`: scrubs pgs on
 * demand at their primaries (OsdOpcode.pgScrub; the comparison and repair
 * are src/daemon/pg-scrub.ts). --deep reads and verifies all data (else
 * metadata only: sizes, versions, xattrs, omap); --repair pushes the
 * authoritative copy to every member that differs. A pool's pgs are
 * scrubbed one at a time.
 *
 * Prints a table of the inconsistencies (object, disk, kinds, repaired,
 * detail) and a summary line, or with --json one document
 * {pgs: [result...], inconsistencies, repaired, unrepaired, notScrubbed}.
 * Exit code 1 when an inconsistency is left unrepaired or a pg could not be
 * scrubbed; else 0.
 *
 * `tessera pg inconsistent [POOL | POOL.PG]` lists what the last scrub of
 * each pg (on demand or in the background) left unrepaired, as its current
 * primary keeps it (OsdOpcode.pgInconsistent; in its scrub record on disk,
 * so across restarts; a pg whose primary moved to a disk that never scrubbed
 * it shows nothing until that disk's first scrub), without scrubbing
 * anything; per pg at most limits.scrubInconsistenciesKeptMax are listed and
 * the rest counted. Exit code 1 when an up disk did not answer
 * (its pgs are not listed); else 0.
 */
import type { Io } from '../io/io.js';
import { isTesseraError, toTesseraError } from '../lib/errors.js';
import { encodeControl, OsdOpcode } from '../protocol/osd-messages.js';
import { decodePgInconsistentReply, decodePgScrubResult, type PgInconsistentReply, type PgInconsistentRequest, type PgScrubResult } from '../protocol/osd-admin-messages.js';
import { createTcpClient } from '../rpc/tcp.js';
import type { ClusterMap, PoolInfo } from '../../cluster/map.js';
import { buildPlacementIndex, HOLE, pgPlacement } from '../../cluster/placement.js';
import { askUpDisks, CliError, table, withCluster, type Cluster, type TargetOptions } from './target.js';

/** One pg's scrub can read a whole pg's data on every member. */
const PG_SCRUB_TIMEOUT_MS = 30 * 60_000;
const ATTEMPTS_MAX = 10;
/** A disk's answer to the pgInconsistent query (from memory). */
const QUERY_TIMEOUT_MS = 5000;
const RETRY_MS = 1000;

export interface ScrubCommandOptions {
  deep: boolean;
  repair: boolean;
  json: boolean;
  /** Members' deep read pace (default: the daemons' scrub default). */
  bytesPerSec?: number;
}

type Out = (text: string) => void;

/** A pg that could not be scrubbed: why. */
interface PgFailure {
  poolId: number;
  pg: number;
  error: string;
}

export function poolNamed(map: ClusterMap, name: string): PoolInfo {
  const pool = map.pools.find((p) => p.name === name);
  if (!pool) throw new CliError(`no pool ${name}`);
  return pool;
}

/** A request to a pg's primary (callPrimary): the opcode, the header for the map found, how to read the answer. */
export interface PrimaryCall<T> {
  op: number;
  request: (map: ClusterMap, pool: PoolInfo) => Record<string, unknown>;
  decode: (header: Buffer) => T;
  timeoutMs: number;
  /** Error codes after which the call is tried again with a fresh map (an unreachable primary always is). */
  retry: readonly string[];
  /** What is asked, for the message after the last attempt ("pg scrub of POOL pg N"). */
  what: string;
}

/** Asks the pg's primary; retried through map changes and peering (the codes in call.retry, unreachable). */
export async function callPrimary<T>(io: Io, c: Cluster, poolName: string, pg: number, call: PrimaryCall<T>): Promise<T> {
  let last: unknown;
  for (let attempt = 0; attempt < ATTEMPTS_MAX; attempt++) {
    if (attempt > 0) await io.clock.sleep(RETRY_MS);
    const map = await c.current();
    const pool = poolNamed(map, poolName);
    if (pg >= pool.pgCount) throw new CliError(`pool ${pool.name} has ${pool.pgCount} pgs (0..${pool.pgCount - 1}), not ${pg}`);
    const index = buildPlacementIndex(map);
    const { primary } = pgPlacement(map, index, pool, pg);
    const disk = primary === HOLE ? undefined : map.disks.find((d) => d.id === primary);
    if (!disk) {
      last = new CliError(`pg ${pool.id}.${pg} has no member up`);
      continue;
    }
    const at = disk.address.lastIndexOf(':');
    const rpc = createTcpClient({ io, host: disk.address.slice(0, at), port: Number(disk.address.slice(at + 1)), limits: { rpcAttemptsMax: 1 } });
    try {
      const reply = await rpc.call(call.op, encodeControl(call.request(map, pool)), [], { timeoutMs: call.timeoutMs });
      return call.decode(reply.header);
    } catch (err) {
      last = err;
      if (isTesseraError(err) && !call.retry.includes(err.code)) throw err;
    } finally {
      await rpc.close();
    }
  }
  throw last instanceof CliError ? last : new CliError(`${call.what} failed ${ATTEMPTS_MAX} times: ${toTesseraError(last).message}`);
}

/** Asks the pg's primary to scrub it; retried through map changes and peering (StaleEpoch, Busy, unreachable). */
function scrubOne(io: Io, c: Cluster, poolName: string, pg: number, o: ScrubCommandOptions): Promise<PgScrubResult> {
  return callPrimary(io, c, poolName, pg, {
    op: OsdOpcode.pgScrub,
    request: (map, pool) => ({ epoch: map.epoch, poolId: pool.id, pg, deep: o.deep, repair: o.repair, ...(o.bytesPerSec !== undefined ? { bytesPerSec: o.bytesPerSec } : {}) }),
    decode: decodePgScrubResult,
    timeoutMs: PG_SCRUB_TIMEOUT_MS,
    retry: ['StaleEpoch', 'Busy', 'Unavailable', 'Timeout', 'Closed', 'NoQuorum'],
    what: `pg scrub of ${poolName} pg ${pg}`,
  });
}

function report(results: PgScrubResult[], failures: PgFailure[], o: ScrubCommandOptions, out: Out): number {
  const all = results.flatMap((r) => r.inconsistencies.map((i) => ({ ...i, pgid: `${r.poolId}.${r.pg}` })));
  const repaired = all.filter((i) => i.repaired).length;
  const notScrubbed = results.filter((r) => !r.scrubbed);
  const summary = { inconsistencies: all.length, repaired, unrepaired: all.length - repaired, notScrubbed: notScrubbed.length + failures.length };
  if (o.json) {
    out(`${JSON.stringify({ deep: o.deep, repair: o.repair, pgs: results, failures, ...summary })}\n`);
  } else {
    if (all.length > 0) {
      out(table([['PG', 'OBJECT', 'DISK', 'KINDS', 'REPAIRED', 'DETAIL'], ...all.map((i) => [i.pgid, i.object, String(i.diskId), i.kinds.join(','), i.repaired ? 'yes' : 'no', i.detail])]));
    }
    for (const r of notScrubbed) out(`pg ${r.poolId}.${r.pg} not scrubbed: ${r.note ?? 'unknown reason'}\n`);
    for (const f of failures) out(`pg ${f.poolId}.${f.pg} not scrubbed: ${f.error}\n`);
    const objects = results.reduce((n, r) => n + r.objects, 0);
    out(`${o.deep ? 'deep ' : ''}scrub of ${results.length} pgs, ${objects} objects: ${all.length} inconsistencies, ${repaired} repaired${summary.notScrubbed > 0 ? `, ${summary.notScrubbed} pgs not scrubbed` : ''}\n`);
  }
  return summary.unrepaired > 0 || summary.notScrubbed > 0 ? 1 : 0;
}

/** "POOL.PG" (POOL: a pool name or id) -> the pool and the pg number. */
function parsePgid(map: ClusterMap, pgid: string): { pool: PoolInfo; pg: number } {
  const m = /^(.+)\.(\d+)$/.exec(pgid);
  if (!m) throw new CliError(`a pg is POOL.PG (pool name or id, then the pg number), got ${pgid}`);
  const pool = map.pools.find((p) => p.name === m[1] || String(p.id) === m[1]);
  if (!pool) throw new CliError(`no pool ${m[1]}`);
  return { pool, pg: Number(m[2]) };
}

/** `tessera pg scrub POOL.PG` (POOL: a pool name or id). */
export async function pgScrub(t: TargetOptions, o: ScrubCommandOptions & { pgid: string }, out: Out): Promise<number> {
  return withCluster(t, async (c) => {
    const { pool, pg } = parsePgid(await c.current(), o.pgid);
    const result = await scrubOne(t.io, c, pool.name, pg, o);
    return report([result], [], o, out);
  });
}

/** `tessera pool scrub POOL`: every pg of the pool, one at a time; a pg that fails is reported and the others go on. */
export async function poolScrub(t: TargetOptions, o: ScrubCommandOptions & { pool: string }, out: Out): Promise<number> {
  return withCluster(t, async (c) => {
    const pool = poolNamed(await c.current(), o.pool);
    const results: PgScrubResult[] = [];
    const failures: PgFailure[] = [];
    for (let pg = 0; pg < pool.pgCount; pg++) {
      try {
        results.push(await scrubOne(t.io, c, pool.name, pg, o));
      } catch (err) {
        failures.push({ poolId: pool.id, pg, error: err instanceof CliError ? err.message : toTesseraError(err).message });
      }
    }
    return report(results, failures, o, out);
  });
}

/** One listed inconsistency, with its pg and how its last scrub ran. */
interface ListedInconsistency {
  pgid: string;
  object: string;
  diskId: number;
  kinds: string[];
  authDiskId: number | null;
  detail: string;
  deep: boolean;
  scrubbedAgoMs: number;
}

/** `tessera pg inconsistent [POOL | POOL.PG]`: what the pgs' last scrubs left unrepaired, from their current primaries. */
export async function pgInconsistent(t: TargetOptions, o: { what?: string; json: boolean }, out: Out): Promise<number> {
  return withCluster(t, async (c) => {
    const map = await c.current();
    let request: PgInconsistentRequest = {};
    if (o.what !== undefined) {
      const pool = map.pools.find((p) => p.name === o.what || String(p.id) === o.what);
      if (pool) request = { poolId: pool.id };
      else {
        const { pool: p, pg } = parsePgid(map, o.what);
        if (pg >= p.pgCount) throw new CliError(`pool ${p.name} has ${p.pgCount} pgs (0..${p.pgCount - 1}), not ${pg}`);
        request = { poolId: p.id, pg };
      }
    }
    const answers = await askUpDisks(t.io, map, async (rpc) => decodePgInconsistentReply((await rpc.call(OsdOpcode.pgInconsistent, encodeControl(request), [], { timeoutMs: QUERY_TIMEOUT_MS, idempotent: true })).header));
    const replies = new Map<number, PgInconsistentReply | string>([...answers].map(([id, a]) => [id, a instanceof Error ? toTesseraError(a).message : a]));
    // Only each pg's current primary speaks for it (a former primary may still hold an older scrub's findings).
    const index = buildPlacementIndex(map);
    const listed: ListedInconsistency[] = [];
    const pgs: Array<{ pgid: string; unrepaired: number; listed: number }> = [];
    for (const [diskId, reply] of [...replies].sort(([a], [b]) => a - b)) {
      if (typeof reply === 'string') continue;
      for (const p of reply.pgs) {
        const pool = map.pools.find((x) => x.id === p.poolId);
        if (!pool || p.pg >= pool.pgCount || pgPlacement(map, index, pool, p.pg).primary !== diskId) continue;
        const pgid = `${p.poolId}.${p.pg}`;
        pgs.push({ pgid, unrepaired: p.unrepaired, listed: p.inconsistencies.length });
        for (const i of p.inconsistencies) listed.push({ pgid, object: i.object, diskId: i.diskId, kinds: i.kinds, authDiskId: i.authDiskId, detail: i.detail, deep: p.deep, scrubbedAgoMs: p.scrubbedAgoMs });
      }
    }
    const silent = [...replies].filter(([, r]) => typeof r === 'string').map(([diskId, r]) => ({ diskId, error: r as string }));
    const unrepaired = pgs.reduce((n, p) => n + p.unrepaired, 0);
    if (o.json) {
      out(`${JSON.stringify({ pgs, inconsistencies: listed, unrepaired, disksNotAnswering: silent })}\n`);
    } else {
      if (listed.length > 0) {
        const ago = (ms: number): string => (ms < 120_000 ? `${Math.round(ms / 1000)}s` : ms < 7_200_000 ? `${Math.round(ms / 60_000)}m` : `${Math.round(ms / 3_600_000)}h`);
        out(
          table([
            ['PG', 'OBJECT', 'DISK', 'KINDS', 'GOOD COPY', 'SCRUB', 'DETAIL'],
            ...listed.map((i) => [i.pgid, i.object, String(i.diskId), i.kinds.join(','), i.authDiskId === null ? '-' : `disk ${i.authDiskId}`, `${i.deep ? 'deep ' : ''}${ago(i.scrubbedAgoMs)} ago`, i.detail]),
          ]),
        );
      }
      for (const p of pgs) if (p.unrepaired > p.listed) out(`pg ${p.pgid}: and ${p.unrepaired - p.listed} more not listed\n`);
      for (const s of silent) out(`disk ${s.diskId} did not answer (${s.error}): the pgs it leads are not listed\n`);
      const more = unrepaired > listed.length ? ` (${listed.length} listed)` : '';
      out(`${unrepaired} inconsistencies${more} in ${pgs.length} pgs, as each pg's last scrub left them${unrepaired > 0 ? '; repair with tessera pg scrub POOL.PG --deep --repair' : ''}\n`);
    }
    return silent.length > 0 ? 1 : 0;
  });
}
