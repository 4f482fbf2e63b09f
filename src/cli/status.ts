/**
 * `tessera status`: the cluster at a glance, from the map and the daemons.
 *   health   HEALTH_OK | HEALTH_WARN | HEALTH_ERR, with one reason a line
 *   disks    how many are up and in; each disk's state, objects and space
 *   pools    redundancy and pg count
 *   pgs      every pg of every pool by state: the state its primary reports
 *            (OsdOpcode.pgStats: active, peering, incomplete), "down" when no
 *            member is up, "unknown" when its primary did not answer; and
 *            "+degraded" when fewer members than the pool's width are up,
 *            "+inconsistent" when the last scrub left copies that differ
 *   recovery pgs degraded (fewer members up than the pool's width, or
 *            members being filled), recovering (log-based copies before the
 *            pg serves I/O) and backfilling (every object copied, possibly
 *            while the pg is active); objects and bytes left (bytes always an
 *            estimate; objects too while a backfill still lists its source);
 *            the rate over the daemons' recent window (about 10 s) and the ETA
 *            at that rate; the same by pool, and (--pgs; --json always) one
 *            row per pg not active and clean. From the primaries' pgStats
 *            (src/daemon/recovery-progress.ts; summed in ./status-recovery.ts).
 *   leases   disks whose primary lease lapsed (their pgStats `lease`): they
 *            refuse client I/O until the map daemon answers their heartbeats
 *   capacity used and free bytes over the disks that answered
 *   map      each map daemon the command was given (--map A,B,C or the
 *            client file's `maps`), asked for its map on its own: the epoch
 *            it answers with, or why it did not answer
 * HEALTH_ERR: pgs down or incomplete, or inconsistent (their primary's last
 * scrub found copies that differ: "+inconsistent"). HEALTH_WARN: disks down, unreachable
 * or out, pgs not active (peering, unknown) or degraded, disks near full or
 * full, pgs recovering or backfilling, disks their peers report unreachable
 * (refused leases by a map daemon: cluster/peer-reports.ts), disks whose
 * primary lease lapsed, a map daemon not answering while
another does. Exit code 1 when the map service or a disk that is in is down or
 * unreachable, or on HEALTH_ERR; else 0. `--json` prints the same as one
 * JSON document.
 */
import type { Io } from '../io/io.js';
import { nativeStatus } from '../../native/index.js';
import { decodeEpoch, MapOpcode } from '../../cluster/map-protocol.js';
import { parseMapAddresses } from '../../cluster/map-daemon.js';
import { decodeAccused, PeerReportOpcode, type AccusedDisk } from '../../cluster/peer-reports.js';
import { OsdOpcode } from '../protocol/osd-messages.js';
import { decodePgStats, type PgRecoveryStat, type PgStatsReply } from '../protocol/osd-admin-messages.js';
import { describeLeft, renderPgRows, renderRecovery, summarizePoolRecovery, summarizeRecovery, pgLeft, meanObjectBytes, type PgRow, type PoolRecoveryStatus, type RecoveryStatus } from './status-recovery.js';
import { createTcpClient } from '../rpc/tcp.js';
import type { ClusterMap } from '../../cluster/map.js';
import { poolWidth } from '../../cluster/map.js';
import { buildPlacementIndex, HOLE, pgPlacement, pgTempActing } from '../../cluster/placement.js';
import { diskSpaces, type DiskSpace } from './disk-admin.js';
import { describeRedundancy } from './pool.js';
import { askUpDisks, CliError, openCluster, type TargetOptions } from './target.js';

export { describeEta, describeLeft, describeRate, formatBytes, formatDuration, recoveryDone, type PgRow, type PoolRecoveryStatus, type RecoveryStatus } from './status-recovery.js';

const QUERY_TIMEOUT_MS = 3000;
const mib = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;

/** What one map daemon answered when asked for its map on its own. */
export interface MapDaemonStatus {
  address: string;
  reachable: boolean;
  /** The epoch of the map it answered with. */
  epoch?: number;
  /** Why it did not answer (unreachable, timed out, or its map store failed). */
  error?: string;
  /** Disks it refuses leases to because their peers report them unreachable (cluster/peer-reports.ts); absent from older map daemons. */
  accused?: AccusedDisk[];
}

/** Asks each map daemon of `address` ("host:port[,host:port...]") for its map, one connection each, no failover. */
export async function mapDaemonStatuses(io: Io, address: string): Promise<MapDaemonStatus[]> {
  return Promise.all(
    parseMapAddresses(address).map(async (a): Promise<MapDaemonStatus> => {
      const at = a.lastIndexOf(':');
      const rpc = createTcpClient({ io, host: a.slice(0, at), port: Number(a.slice(at + 1)), limits: { rpcAttemptsMax: 1 } });
      try {
        const reply = await rpc.call(MapOpcode.current, Buffer.alloc(0), [], { timeoutMs: QUERY_TIMEOUT_MS, idempotent: true });
        const epoch = decodeEpoch(reply.header, 'map current reply');
        // An older map daemon does not know the query (NotSupported), or it failed: nothing to say about accusations.
        const accused = await rpc.call(PeerReportOpcode.accused, Buffer.alloc(0), [], { timeoutMs: QUERY_TIMEOUT_MS, idempotent: true }).then(
          (r) => decodeAccused(r.header),
          () => undefined,
        );
        return { address: a, reachable: true, epoch, ...(accused ? { accused } : {}) };
      } catch (err) {
        return { address: a, reachable: false, error: (err as Error).message };
      } finally {
        await rpc.close();
      }
    }),
  );
}

/** Each up disk's pg report (pgStats), or null when it did not answer. */
export async function pgReports(io: Io, map: ClusterMap): Promise<Map<number, PgStatsReply | null>> {
  const answers = await askUpDisks(io, map, async (rpc) => decodePgStats((await rpc.call(OsdOpcode.pgStats, Buffer.alloc(0), [], { timeoutMs: QUERY_TIMEOUT_MS, idempotent: true })).header));
  return new Map([...answers].map(([id, a]) => [id, a instanceof Error ? null : a]));
}

/** A disk whose primary lease does not hold, as its pgStats said. */
export interface LapsedLease {
  diskId: number;
  /** How long ago it ended (null: none was granted since the daemon started). */
  lapsedForMs: number | null;
  /** Client requests it refused for want of a lease since it started. */
  refusals: number;
}

export interface ClusterStatus {
  clusterId: string;
  epoch: number;
  health: 'HEALTH_OK' | 'HEALTH_WARN' | 'HEALTH_ERR';
  reasons: string[];
  disks: { total: number; up: number; in: number; list: Array<{ id: number; host: string; address: string; up: boolean; in: boolean; space?: string; reachable: boolean } & Partial<DiskSpace>> };
  pools: Array<{ id: number; name: string; redundancy: string; pgCount: number; pgs: Record<string, number>; recovery: PoolRecoveryStatus }>;
  pgs: { total: number; byState: Record<string, number> };
  recovery: RecoveryStatus;
  /** Every pg not active and clean (degraded, copying, not active, down...), by pool and pg. */
  pgsNotClean: PgRow[];
  /** Disks up in the map whose primary lease lapsed: they refuse client I/O until the map daemon answers (src/daemon/lease.ts). */
  lapsedLeases: LapsedLease[];
  /** Copies of pgs disks are no longer members of, summed over the disks that answered (src/daemon/stray-cleanup.ts). */
  strays: { pgsWaiting: number; pgsRemoved: number; objectsRemoved: number };
  capacity: { usedBytes: number; freeBytes: number; objects: number };
  /** Each map daemon asked on its own (empty when the caller gave none). */
  mapDaemons: MapDaemonStatus[];
  /** Exit code: 1 when a disk that is in is down or unreachable, or on HEALTH_ERR. */
  failing: boolean;
}

/** Counts of each pg state, "active" first. */
function countStates(states: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const s of states) counts[s] = (counts[s] ?? 0) + 1;
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => (a === 'active' ? -1 : b === 'active' ? 1 : a.localeCompare(b))));
}

/** Every pg's state as its current primary reports it, by pool, the recovery of the cluster and of each pool, and the pgs not clean. */
export function pgSummary(map: ClusterMap, reports: Map<number, PgStatsReply | null>): { pools: ClusterStatus['pools']; states: string[]; recovery: RecoveryStatus; pgsNotClean: PgRow[] } {
  const reported = new Map<string, string>();
  for (const [diskId, r] of reports) for (const p of r?.pgs ?? []) reported.set(`${p.poolId}.${p.pg}`, `${diskId}:${p.state}`);
  const recovering = new Map<string, { diskId: number; stat: PgRecoveryStat }>();
  for (const [diskId, r] of reports) for (const p of r?.recovery?.pgs ?? []) recovering.set(`${p.poolId}.${p.pg}`, { diskId, stat: p });
  const index = buildPlacementIndex(map);
  const mean = meanObjectBytes(reports);
  const all: string[] = [];
  const current: PgRecoveryStat[] = [];
  const pgsNotClean: PgRow[] = [];
  let degradedPgs = 0;
  const pools = map.pools.map((pool) => {
    const states: string[] = [];
    const poolCurrent: PgRecoveryStat[] = [];
    let poolDegraded = 0;
    for (let pg = 0; pg < pool.pgCount; pg++) {
      const { members, acting, primary } = pgPlacement(map, index, pool, pg);
      let state: string;
      let degraded = false;
      let copying: PgRecoveryStat | null = null;
      if (primary === HOLE) state = 'down';
      else {
        const r = reported.get(`${pool.id}.${pg}`);
        state = r !== undefined && r.startsWith(`${primary}:`) ? r.slice(r.indexOf(':') + 1) : 'unknown';
        // Served by a temporary acting set while its computed primary is filled.
        if (pgTempActing(map, members, pool, pg)) state += '+remapped';
        if (acting.filter((d) => d !== HOLE).length < poolWidth(pool)) {
          state += '+degraded';
          degraded = true;
        }
        const rec = recovering.get(`${pool.id}.${pg}`);
        if (rec && rec.diskId === primary) {
          copying = rec.stat;
          poolCurrent.push(rec.stat);
          degraded = true;
        }
      }
      if (degraded) poolDegraded++;
      states.push(state);
      if (state !== 'active' || copying) pgsNotClean.push(pgRow({ poolId: pool.id, pool: pool.name, pg, state, primary, copying, mean }));
    }
    all.push(...states);
    current.push(...poolCurrent);
    degradedPgs += poolDegraded;
    const recovery = summarizePoolRecovery(reports, pool.id, poolCurrent, poolDegraded);
    return { id: pool.id, name: pool.name, redundancy: describeRedundancy(pool.redundancy), pgCount: pool.pgCount, pgs: countStates(states), recovery };
  });
  return { pools, states: all, recovery: summarizeRecovery(reports, current, degradedPgs), pgsNotClean };
}

function pgRow(o: { poolId: number; pool: string; pg: number; state: string; primary: number; copying: PgRecoveryStat | null; mean: number | null }): PgRow {
  const left = o.copying ? pgLeft(o.copying, o.mean) : null;
  return {
    pg: `${o.poolId}.${o.pg}`,
    pool: o.pool,
    state: o.state,
    primary: o.primary === HOLE ? null : o.primary,
    recovery: o.copying?.phase ?? null,
    background: o.copying?.background ?? false,
    objectsLeft: left?.objects ?? null,
    objectsEstimated: o.copying?.objectsEstimated ?? false,
    bytesLeft: left?.bytes ?? null,
  };
}

/**
 * The disks whose daemons said their primary lease does not hold (daemons older than the lease field say nothing).
 * A daemon granted none yet that has not noticed a lapse either (lapses 0) is starting: it listens, and is marked up,
 * just before its first heartbeat is answered; not a warning. One whose first heartbeat failed has noticed it.
 */
export function lapsedLeases(reports: Map<number, PgStatsReply | null>): LapsedLease[] {
  const out: LapsedLease[] = [];
  for (const [diskId, r] of reports) {
    const l = r?.lease;
    if (l && !l.held && (l.lapsedForMs !== null || l.lapses > 0)) out.push({ diskId, lapsedForMs: l.lapsedForMs, refusals: l.refusals });
  }
  return out.sort((a, b) => a.diskId - b.diskId);
}

/** "primary lease lapsed on disk 0 (4.2 s ago), disk 3 (none granted yet): ..." */
export function describeLapsedLeases(list: LapsedLease[]): string {
  const each = list.map((l) => `disk ${l.diskId} (${l.lapsedForMs === null ? 'none granted yet' : `${(l.lapsedForMs / 1000).toFixed(1)} s ago`})`).join(', ');
  return `primary lease lapsed on ${each}: refusing client reads and writes (Unavailable) until the map daemon answers its heartbeats`;
}

/** mapAddress: the map daemons to ask one by one ("host:port[,host:port...]"); omitted, none are. */
export async function clusterStatus(io: Io, map: ClusterMap, mapAddress?: string): Promise<ClusterStatus> {
  const [spaces, reports, mapDaemons] = await Promise.all([diskSpaces(io, map), pgReports(io, map), mapAddress === undefined ? [] : mapDaemonStatuses(io, mapAddress)]);
  const { pools, states: all, recovery, pgsNotClean } = pgSummary(map, reports);
  const lapsed = lapsedLeases(reports);
  const byState = countStates(all);
  const reasons: string[] = [];
  let err = false;
  const disks = map.disks.map((d) => {
    const s = spaces.get(d.id);
    const space = (d as { space?: string }).space;
    return { id: d.id, host: d.host, address: d.address, up: d.up, in: d.in, reachable: typeof s === 'object', ...(typeof s === 'object' ? s : {}), ...(space !== undefined ? { space } : {}) };
  });
  const down = disks.filter((d) => !d.up);
  const unreachable = disks.filter((d) => d.up && !d.reachable);
  const out = disks.filter((d) => !d.in);
  const full = disks.filter((d) => d.space !== undefined);
  const ids = (list: Array<{ id: number }>): string => list.map((d) => d.id).join(', ');
  const count = (state: (s: string) => boolean): number => Object.entries(byState).reduce((n, [s, k]) => n + (state(s) ? k : 0), 0);
  const pgDown = count((s) => s === 'down' || s.startsWith('incomplete'));
  if (pgDown > 0) {
    err = true;
    reasons.push(`${pgDown} pgs down or incomplete (no member up, or history lost): their objects are unavailable`);
  }
  const silentMaps = mapDaemons.filter((m) => !m.reachable);
  if (silentMaps.length > 0) {
    reasons.push(`${silentMaps.length} of ${mapDaemons.length} map daemons not answering: ${silentMaps.map((m) => m.address).join(', ')} (the others serve the cluster)`);
  }
  if (down.length > 0) reasons.push(`${down.length} disks down: ${ids(down)}`);
  // Accused by their peers (any map daemon says so): no lease; marked down once the last one ended, up once they reach it.
  const accused = new Map<number, string>();
  for (const m of mapDaemons) for (const a of m.accused ?? []) if (!accused.has(a.diskId)) accused.set(a.diskId, a.by);
  for (const [diskId, by] of [...accused].sort((x, y) => x[0] - y[0])) {
    reasons.push(`disk ${diskId} reported unreachable by its peers, ${by}: no primary lease until they reach it again (down once its last lease ended)`);
  }
  if (lapsed.length > 0) reasons.push(describeLapsedLeases(lapsed));
  if (unreachable.length > 0) reasons.push(`${unreachable.length} disks up in the map but not answering: ${ids(unreachable)}`);
  if (out.length > 0) reasons.push(`${out.length} disks out: ${ids(out)}`);
  for (const d of full) reasons.push(`disk ${d.id} is ${d.space}`);
  const notActive = count((s) => !s.startsWith('active') && s !== 'down' && !s.startsWith('incomplete'));
  if (notActive > 0) reasons.push(`${notActive} pgs not active yet (peering or not reported)`);
  const inconsistent = count((s) => s.includes('+inconsistent'));
  if (inconsistent > 0) {
    err = true;
    reasons.push(`${inconsistent} pgs inconsistent (their last scrub found copies that differ: tessera pg inconsistent lists them; tessera pg scrub POOL.PG --deep --repair)`);
  }
  const degraded = count((s) => s.endsWith('+degraded'));
  if (degraded > 0) reasons.push(`${degraded} pgs degraded (fewer members up than the pool's width)`);
  if (recovery.recoveringPgs + recovery.backfillingPgs > 0) {
    reasons.push(`${recovery.recoveringPgs} pgs recovering, ${recovery.backfillingPgs} backfilling: ${describeLeft(recovery)} left`);
  }
  const strays = { pgsWaiting: 0, pgsRemoved: 0, objectsRemoved: 0 };
  for (const r of reports.values()) {
    if (!r?.strays) continue;
    strays.pgsWaiting += r.strays.pgsWaiting;
    strays.pgsRemoved += r.strays.pgsRemoved;
    strays.objectsRemoved += r.strays.objectsRemoved;
  }
  const capacity = { usedBytes: 0, freeBytes: 0, objects: 0 };
  for (const d of disks) {
    capacity.usedBytes += d.usedBytes ?? 0;
    capacity.freeBytes += d.freeBytes ?? 0;
    capacity.objects += d.objects ?? 0;
  }
  return {
    clusterId: map.clusterId,
    epoch: map.epoch,
    health: err ? 'HEALTH_ERR' : reasons.length > 0 ? 'HEALTH_WARN' : 'HEALTH_OK',
    reasons,
    disks: { total: disks.length, up: disks.length - down.length, in: disks.length - out.length, list: disks },
    pools,
    pgs: { total: all.length, byState },
    recovery,
    pgsNotClean,
    lapsedLeases: lapsed,
    strays,
    capacity,
    mapDaemons,
    failing: err || disks.some((d) => d.in && (!d.up || !d.reachable)),
  };
}

const states = (counts: Record<string, number>): string => Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(', ') || 'none';

function renderMapDaemons(s: ClusterStatus, mapAddress: string): string[] {
  if (s.mapDaemons.length <= 1) return [`  map: epoch ${s.epoch}, map service ${mapAddress}`];
  return [
    `  map: epoch ${s.epoch}, ${s.mapDaemons.filter((m) => m.reachable).length} of ${s.mapDaemons.length} map daemons answering`,
    ...s.mapDaemons.map((m) => `    map daemon ${m.address}: ${m.reachable ? `up, epoch ${m.epoch}` : `UNREACHABLE (${m.error})`}`),
  ];
}

function render(s: ClusterStatus, mapAddress: string, showPgs: boolean): string {
  const native = nativeStatus();
  const lines = [
    `cluster ${s.clusterId}`,
    `  health: ${s.health}`,
    ...s.reasons.map((r) => `    ${r}`),
    ...renderMapDaemons(s, mapAddress),
    `  disks: ${s.disks.total} total, ${s.disks.up} up, ${s.disks.in} in`,
    ...s.disks.list.map((d) => {
      const state = `${d.up ? 'up' : 'DOWN'}, ${d.in ? 'in' : 'out'}`;
      const space = d.usedBytes !== undefined ? `, ${d.objects} objects, ${mib(d.usedBytes)} used, ${mib(d.freeBytes!)} free` : d.up ? ', UNREACHABLE' : '';
      return `    disk ${d.id} ${d.address} (${d.host}): ${state}${space}${d.space !== undefined ? `, ${d.space}` : ''}`;
    }),
    `  pools: ${s.pools.length}`,
    ...s.pools.map((p) => `    pool ${p.name} (id ${p.id}): ${p.redundancy}, ${p.pgCount} pgs: ${states(p.pgs)}`),
    `  pgs: ${s.pgs.total} total: ${states(s.pgs.byState)}`,
    ...renderRecovery(s.recovery, s.pools),
    ...(showPgs ? renderPgRows(s.pgsNotClean) : []),
    ...(s.strays.pgsWaiting + s.strays.pgsRemoved > 0
      ? [`  stray copies: ${s.strays.pgsWaiting} pgs to remove once clean on their members; ${s.strays.pgsRemoved} removed (${s.strays.objectsRemoved} objects) since the daemons started`]
      : []),
    `  capacity: ${mib(s.capacity.usedBytes)} used, ${mib(s.capacity.freeBytes)} free, ${s.capacity.objects} objects (disks that answered)`,
    `  checksum: ${native.checksum}, erasure coding: ${native.codec}`,
    '',
  ];
  return lines.join('\n');
}

/** pgs: list the pgs not active and clean in the text (--json always has them). */
export async function runStatus(o: TargetOptions & { json?: boolean; pgs?: boolean }): Promise<number> {
  const cluster = await openCluster(o);
  try {
    let map: ClusterMap;
    try {
      map = await cluster.current(QUERY_TIMEOUT_MS);
    } catch (err) {
      if (!(err instanceof CliError)) throw err;
      if (o.json) process.stdout.write(`${JSON.stringify({ health: 'HEALTH_ERR', reasons: [err.message] })}\n`);
      else process.stdout.write(`health: HEALTH_ERR\n  ${err.message}\n`);
      return 1;
    }
    const s = await clusterStatus(o.io, map, cluster.address);
    const { failing, ...doc } = s;
    process.stdout.write(o.json ? `${JSON.stringify(doc)}\n` : render(s, cluster.address, o.pgs === true));
    return failing ? 1 : 0;
  } finally {
    await cluster.close();
  }
}
