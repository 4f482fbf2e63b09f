/**
 * Recovery in `tessera status` and `tessera recovery watch`: the figures each
 * pg's current primary reports (pgStats: src/daemon/recovery-progress.ts)
 * summed over the cluster and over each pool, one row per pg that is not
 * active and clean (like `ceph pg ls`), and their text.
 *
 * Objects left are exact for log-based recovery and extrapolated while a
 * backfill still lists its source; bytes left are always an estimate (a pg's
 * own mean copied size, else the mean over the daemons that answered). Rates
 * are the daemons' recent windows summed; by pool from each daemon's per-pool
 * rate (absent from older daemons: their copies count in the cluster's rate
 * only). Pure: no I/O here.
 */
import type { PgRecoveryStat, PgStatsReply } from '../protocol/osd-admin-messages.js';

/** Recovery over the cluster, from the primaries' pgStats. */
export interface RecoveryStatus {
  /** Pgs with fewer members up than the pool's width, or with members being recovered or backfilled. */
  degradedPgs: number;
  /** Pgs whose primary copies the objects named by its log to members that miss them (before the pg serves I/O). */
  recoveringPgs: number;
  /** Pgs whose primary copies every object to members whose log shares nothing with its own. */
  backfillingPgs: number;
  /** Of the recovering and backfilling pgs, those active meanwhile (members filled in the background). */
  backgroundPgs: number;
  objectsLeft: number;
  /** An estimate; null while a pg has copied nothing yet and the daemons have no mean object size. */
  bytesLeft: number | null;
  /** objectsLeft is extrapolated (a backfill still lists its source); bytesLeft is always an estimate. */
  objectsEstimated: boolean;
  /** Over the daemons' recent window (RATE_WINDOW_MS), summed. */
  objectsPerSec: number;
  bytesPerSec: number;
  /** Seconds left at that rate (bytes when known, else objects); null when nothing is being copied. */
  etaSeconds: number | null;
  /** Objects and bytes the daemons that answered recovered since they started. */
  objectsRecovered: number;
  bytesRecovered: number;
}

/** One pool's recovery: the cluster's figures restricted to its pgs (totals since start are per daemon, not per pool). */
export type PoolRecoveryStatus = Omit<RecoveryStatus, 'objectsRecovered' | 'bytesRecovered'>;

/** A pg that is not active and clean (`status --json` pgsNotClean, `status --pgs`). */
export interface PgRow {
  /** "POOLID.PG". */
  pg: string;
  pool: string;
  state: string;
  /** The primary the map names (null: no member up). */
  primary: number | null;
  /** What its primary copies now (null: nothing: waiting for members, peering, or down). */
  recovery: 'recovery' | 'backfill' | null;
  /** Members are filled while the pg serves I/O. */
  background: boolean;
  objectsLeft: number | null;
  objectsEstimated: boolean;
  bytesLeft: number | null;
}

/** Whether recovery is over: no pg degraded, recovering or backfilling. */
export const recoveryDone = (r: PoolRecoveryStatus): boolean => r.degradedPgs === 0 && r.recoveringPgs === 0 && r.backfillingPgs === 0;

/** Bytes per object the daemons that answered recovered, or null before any copy. */
export function meanObjectBytes(reports: Map<number, PgStatsReply | null>): number | null {
  let objects = 0;
  let bytes = 0;
  for (const r of reports.values()) {
    objects += r?.recovery?.objectsRecovered ?? 0;
    bytes += r?.recovery?.bytesRecovered ?? 0;
  }
  return objects > 0 ? bytes / objects : null;
}

/** One pg's objects and bytes left (bytes from the pg's own estimate, else from the cluster's mean). */
export function pgLeft(p: PgRecoveryStat, mean: number | null): { objects: number; bytes: number | null } {
  const objects = Math.max(0, p.objectsTotal - p.objectsDone);
  return { objects, bytes: p.bytesLeft ?? (mean === null ? null : Math.round(objects * mean)) };
}

/** The figures of some pgs' recovery (`current`: reported by their current primaries) at a rate. */
export function recoveryFigures(o: { current: PgRecoveryStat[]; degradedPgs: number; mean: number | null; objectsPerSec: number; bytesPerSec: number }): PoolRecoveryStatus {
  let objectsLeft = 0;
  let bytesLeft: number | null = 0;
  for (const p of o.current) {
    const left = pgLeft(p, o.mean);
    objectsLeft += left.objects;
    bytesLeft = bytesLeft === null || left.bytes === null ? null : bytesLeft + left.bytes;
  }
  const etaSeconds =
    objectsLeft === 0 ? 0 : bytesLeft !== null && o.bytesPerSec > 0 ? bytesLeft / o.bytesPerSec : o.objectsPerSec > 0 ? objectsLeft / o.objectsPerSec : null;
  const backfilling = o.current.filter((p) => p.phase === 'backfill');
  return {
    degradedPgs: o.degradedPgs,
    recoveringPgs: o.current.length - backfilling.length,
    backfillingPgs: backfilling.length,
    backgroundPgs: o.current.filter((p) => p.background).length,
    objectsLeft,
    bytesLeft,
    objectsEstimated: o.current.some((p) => p.objectsEstimated),
    objectsPerSec: o.objectsPerSec,
    bytesPerSec: o.bytesPerSec,
    etaSeconds: etaSeconds === null ? null : Math.ceil(etaSeconds),
  };
}

/** Sums the recovery figures of each pg's current primary over the cluster (`current`: those the map says are primaries now). */
export function summarizeRecovery(reports: Map<number, PgStatsReply | null>, current: PgRecoveryStat[], degradedPgs: number): RecoveryStatus {
  let objectsRecovered = 0;
  let bytesRecovered = 0;
  let objectsPerSec = 0;
  let bytesPerSec = 0;
  for (const r of reports.values()) {
    if (!r?.recovery) continue;
    objectsRecovered += r.recovery.objectsRecovered;
    bytesRecovered += r.recovery.bytesRecovered;
    objectsPerSec += r.recovery.objectsPerSec;
    bytesPerSec += r.recovery.bytesPerSec;
  }
  return { ...recoveryFigures({ current, degradedPgs, mean: meanObjectBytes(reports), objectsPerSec, bytesPerSec }), objectsRecovered, bytesRecovered };
}

/** One pool's recovery: its pgs' figures at the rate the daemons report for that pool. */
export function summarizePoolRecovery(reports: Map<number, PgStatsReply | null>, poolId: number, current: PgRecoveryStat[], degradedPgs: number): PoolRecoveryStatus {
  let objectsPerSec = 0;
  let bytesPerSec = 0;
  for (const r of reports.values()) {
    for (const p of r?.recovery?.pools ?? []) {
      if (p.poolId !== poolId) continue;
      objectsPerSec += p.objectsPerSec;
      bytesPerSec += p.bytesPerSec;
    }
  }
  return recoveryFigures({ current, degradedPgs, mean: meanObjectBytes(reports), objectsPerSec, bytesPerSec });
}

/** "1.5 MiB" / "12 KiB" / "300 B". */
export function formatBytes(n: number): string {
  if (n >= 1024 * 1024 * 1024) return `${(n / 1024 / 1024 / 1024).toFixed(1)} GiB`;
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${Math.round(n)} B`;
}

/** "1h02m" / "3m05s" / "12s". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/** "120 objects (estimate), ~1.2 MiB". */
export function describeLeft(r: Pick<RecoveryStatus, 'objectsLeft' | 'bytesLeft' | 'objectsEstimated'>): string {
  const bytes = r.bytesLeft === null ? 'bytes unknown yet' : `~${formatBytes(r.bytesLeft)}`;
  return `${r.objectsLeft} objects${r.objectsEstimated ? ' (estimate)' : ''}, ${bytes}`;
}

/** "2.0 MiB/s, 20 objects/s". */
export const describeRate = (r: Pick<RecoveryStatus, 'bytesPerSec' | 'objectsPerSec'>): string => `${formatBytes(r.bytesPerSec)}/s, ${r.objectsPerSec.toFixed(1)} objects/s`;

export const describeEta = (r: Pick<RecoveryStatus, 'etaSeconds'>): string => (r.etaSeconds === null ? 'ETA unknown' : `ETA ${formatDuration(r.etaSeconds)}`);

/** "2 pgs degraded, 1 recovering, 1 backfilling (1 of them active meanwhile)". */
const describePgs = (r: PoolRecoveryStatus): string =>
  `${r.degradedPgs} pgs degraded, ${r.recoveringPgs} recovering, ${r.backfillingPgs} backfilling${r.backgroundPgs > 0 ? ` (${r.backgroundPgs} of them active meanwhile)` : ''}`;

/** The cluster's recovery lines, then one line per pool with work. */
export function renderRecovery(r: RecoveryStatus, pools: Array<{ name: string; recovery: PoolRecoveryStatus }>): string[] {
  if (recoveryDone(r)) return ['  recovery: none'];
  const lines = [`  recovery: ${describePgs(r)}`];
  if (r.recoveringPgs + r.backfillingPgs > 0) lines.push(`    left: ${describeLeft(r)}; rate ${describeRate(r)}; ${describeEta(r)}`);
  for (const p of pools) {
    if (recoveryDone(p.recovery)) continue;
    const copying = p.recovery.recoveringPgs + p.recovery.backfillingPgs > 0;
    lines.push(`    pool ${p.name}: ${describePgs(p.recovery)}${copying ? `; left ${describeLeft(p.recovery)}; rate ${describeRate(p.recovery)}; ${describeEta(p.recovery)}` : ''}`);
  }
  return lines;
}

/** `status --pgs`: a table of the pgs not active and clean (none: one line saying so). */
export function renderPgRows(rows: PgRow[]): string[] {
  if (rows.length === 0) return ['  pgs not active+clean: none'];
  const table = rows.map((p) => [
    p.pg,
    p.pool,
    p.state,
    p.primary === null ? '-' : String(p.primary),
    p.recovery === null ? '-' : `${p.recovery}${p.background ? ' (active)' : ''}`,
    p.objectsLeft === null ? '-' : `${p.objectsLeft}${p.objectsEstimated ? ' (est.)' : ''}`,
    p.bytesLeft === null ? '-' : `~${formatBytes(p.bytesLeft)}`,
  ]);
  const head = ['PG', 'POOL', 'STATE', 'PRIMARY', 'COPYING', 'OBJECTS LEFT', 'BYTES LEFT'];
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => `    ${cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}`;
  return [`  pgs not active+clean: ${rows.length}`, line(head), ...table.map(line)];
}
