/**
 * `tessera recovery watch`: recovery progress, redrawn every --interval-ms
 * (1000) until recovery is over, from the same figures `tessera status`
 * shows (every up daemon's pgStats: src/cli/status.ts pgSummary).
 *
 * Each update: a bar and percentage, objects and bytes left, the rate and
 * the ETA, and the pgs degraded / recovering / backfilling. The percentage
 * is of the most work seen left since the watch started (bytes when known,
 * else objects): pgs that finish drop out of the daemons' reports, so the
 * figures of the work already done are not summed anywhere.
 *
 * On a terminal the line is redrawn in place; otherwise (a pipe, a log) one
 * line per update; --json prints one JSON document per update. Recovery is
 * over when no pg is degraded, recovering or backfilling and every pg is
 * active: exit 0. Ctrl-C: exit 130. --once prints one update and exits 0 when
 * recovery is over, 1 when work is left (a check for scripts).
 */
import type { ClusterMap } from '../../cluster/map.js';
import { pgReports, pgSummary, recoveryDone, describeEta, describeLeft, describeRate, formatBytes, type RecoveryStatus } from './status.js';
import { CliError, openCluster, type TargetOptions } from './target.js';

export interface RecoveryWatchOptions extends TargetOptions {
  intervalMs: number;
  once: boolean;
  json: boolean;
  /** Where updates go (default stdout) and whether it is a terminal (redraw in place). */
  out?: { write(text: string): unknown; isTTY?: boolean; columns?: number };
  /** Stops the watch (default: SIGINT). */
  signal?: AbortSignal;
}

const QUERY_TIMEOUT_MS = 3000;
const BAR_WIDTH = 30;

interface Update {
  recovery: RecoveryStatus;
  /** Pgs whose primary does not report them active (peering, unknown, down, incomplete). */
  notActivePgs: number;
  done: boolean;
}

async function sample(o: RecoveryWatchOptions, current: () => Promise<ClusterMap>): Promise<Update> {
  const map = await current();
  const { states, recovery } = pgSummary(map, await pgReports(o.io, map));
  const notActivePgs = states.filter((s) => !s.startsWith('active')).length;
  return { recovery, notActivePgs, done: recoveryDone(recovery) && notActivePgs === 0 };
}

/** The most work seen left, for the percentage. */
interface Peak {
  objects: number;
  bytes: number;
}

function renderLine(u: Update, peak: Peak): string {
  const r = u.recovery;
  const pgs = `${r.degradedPgs} degraded, ${r.recoveringPgs} recovering, ${r.backfillingPgs} backfilling${u.notActivePgs > 0 ? `, ${u.notActivePgs} not active` : ''}`;
  if (u.done) return `recovery done: every pg active and complete (${formatBytes(r.bytesRecovered)}, ${r.objectsRecovered} objects recovered by the daemons since they started)`;
  if (r.recoveringPgs + r.backfillingPgs === 0) return `recovery: nothing being copied; pgs: ${pgs}`;
  const byBytes = r.bytesLeft !== null && peak.bytes > 0;
  const fraction = byBytes ? 1 - r.bytesLeft! / peak.bytes : peak.objects > 0 ? 1 - r.objectsLeft / peak.objects : 0;
  const filled = Math.round(Math.min(1, Math.max(0, fraction)) * BAR_WIDTH);
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
  return `${bar} ${(fraction * 100).toFixed(1).padStart(5)}%  left ${describeLeft(r)}  ${describeRate(r)}  ${describeEta(r)}  pgs: ${pgs}`;
}

export async function runRecoveryWatch(o: RecoveryWatchOptions): Promise<number> {
  if (!(o.intervalMs > 0)) throw new CliError('--interval-ms wants a positive number of milliseconds');
  const out = o.out ?? process.stdout;
  const tty = out.isTTY === true && !o.json;
  const stop = new AbortController();
  const onSigint = (): void => stop.abort();
  if (o.signal) o.signal.addEventListener('abort', onSigint, { once: true });
  else process.once('SIGINT', onSigint);
  const cluster = await openCluster(o);
  const peak: Peak = { objects: 0, bytes: 0 };
  let drawn = false;
  const show = (line: string, json: unknown): void => {
    if (o.json) out.write(`${JSON.stringify(json)}\n`);
    else if (tty) {
      // Cut to the terminal's width: a wrapped line would not be redrawn in place.
      const width = out.columns !== undefined && out.columns > 1 ? out.columns - 1 : Infinity;
      out.write(`\r\x1b[2K${line.length > width ? line.slice(0, width) : line}`);
      drawn = true;
    } else out.write(`${line}\n`);
  };
  try {
    for (;;) {
      let u: Update | null = null;
      try {
        u = await sample(o, () => cluster.current(QUERY_TIMEOUT_MS));
      } catch (err) {
        if (!(err instanceof CliError)) throw err;
        if (o.once) throw err;
        show(`map service unreachable: ${err.message}`, { error: err.message });
      }
      if (u) {
        peak.objects = Math.max(peak.objects, u.recovery.objectsLeft);
        peak.bytes = Math.max(peak.bytes, u.recovery.bytesLeft ?? 0);
        show(renderLine(u, peak), { ...u.recovery, notActivePgs: u.notActivePgs, done: u.done });
        if (u.done || o.once) return u.done ? 0 : 1;
      }
      await o.io.clock.sleep(o.intervalMs, stop.signal).catch(() => undefined);
      if (stop.signal.aborted) return 130;
    }
  } finally {
    if (drawn) out.write('\n');
    if (!o.signal) process.removeListener('SIGINT', onSigint);
    await cluster.close();
  }
}
