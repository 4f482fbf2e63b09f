/**
 * `tessera daemon`: one storage daemon in the foreground. With --map it
 * joins a cluster (placement groups, replication, recovery; src/daemon/osd.ts);
 * without, it serves its store alone (src/daemon/daemon.ts). Prints one JSON
 * line when it listens ({"event":"listening",...}: scripts and tests wait for
 * it); SIGTERM or SIGINT drain requests in flight and close the store cleanly.
 * With --metrics HOST:PORT a cluster daemon serves Prometheus metrics there
 * (src/metrics: client ops, pgs by state, disk space, map epoch). It scrubs
 * the pgs it is primary of in the background (src/daemon/pg-scrub.ts).
 */
import type { Io } from '../io/io.js';
import { StorageDaemon } from '../daemon/daemon.js';
import { Osd } from '../daemon/osd.js';
import { ScrubScheduler, type ScrubScheduleOptions } from '../daemon/scrub-scheduler.js';
import { connectMapService } from '../../cluster/map-daemon.js';
import { daemonMetricsEndpoint } from './daemon-metrics.js';
import type { RecoveryThrottleOptions } from '../daemon/recovery-throttle.js';
import type { MetricsServer } from '../metrics/http.js';

export interface DaemonCommandOptions {
  io: Io;
  diskPath: string;
  host: string;
  port: number;
  clusterId?: string;
  diskId?: number;
  /** "host:port[,host:port...]" of the map service (several map daemons on etcd: failover): join the cluster. */
  map?: string;
  /** Serve Prometheus metrics here (cluster daemons only; src/cli/daemon-metrics.ts). */
  metrics?: { host: string; port: number };
  /** Cap on the bytes the store may use (default: the file system's size); full ratios apply to it. */
  capacityBytes?: number;
  /** Background scrub of the pgs this daemon is primary of (src/daemon/pg-scrub.ts; defaults in src/lib/limits.ts). */
  scrub?: ScrubScheduleOptions;
  /** Pace of the recovery this daemon drives as primary (src/daemon/recovery-throttle.ts; defaults in src/lib/limits.ts). */
  recovery?: RecoveryThrottleOptions;
  /** How long a clean stop may take after SIGTERM/SIGINT before the process exits without one (default STOP_TIMEOUT_MS_DEFAULT). */
  stopTimeoutMs?: number;
}

/**
 * A stop that does not finish in time (a step waiting on a peer or the map service) ends the process anyway, as Ceph's
 * fast shutdown does: every acknowledged write is already durable, and the store opens after it as after a crash.
 */
export const STOP_TIMEOUT_MS_DEFAULT = 30_000;
/** The exit code of a stop that timed out (EX_SOFTWARE); src/bin/tessera.ts exits at once on it (something may still hold the event loop). */
export const EXIT_STOP_TIMED_OUT = 70;

/** Runs the stop steps in order; false if they did not all end within timeoutMs (step.name then says where it waits). */
async function stopWithin(io: Io, timeoutMs: number, step: { name: string }, steps: Array<[string, () => Promise<unknown>]>): Promise<boolean> {
  const run = (async () => {
    for (const [name, stop] of steps) {
      step.name = name;
      await stop();
    }
    return true;
  })();
  let timer: ReturnType<Io['clock']['setTimeout']> | undefined;
  const late = new Promise<false>((resolve) => (timer = io.clock.setTimeout(() => resolve(false), timeoutMs)));
  try {
    return await Promise.race([run, late]);
  } finally {
    io.clock.clearTimeout(timer!);
  }
}

function waitForSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
}

export async function runDaemon(o: DaemonCommandOptions): Promise<number> {
  const identity = o.clusterId !== undefined && o.diskId !== undefined ? { clusterId: o.clusterId, diskId: o.diskId } : undefined;
  if (o.map) {
    if (!identity) throw new Error('a cluster daemon needs --cluster-id and --disk-id');
    const conn = connectMapService(o.io, o.map, {
      onSwitch: (from, to, cause) => console.error(`disk ${identity.diskId}: map daemon ${from} unreachable (${cause.code}: ${cause.message}): map calls and heartbeats now go to ${to}`),
    });
    const metrics = daemonMetricsEndpoint();
    let metricsServer: MetricsServer | null = null;
    let osd: Osd;
    try {
      osd = await Osd.start({
        io: o.io,
        diskPath: o.diskPath,
        host: o.host,
        port: o.port,
        identity,
        mapService: conn.service,
        pgHistory: conn.history,
        onClientOp: metrics.onClientOp,
        liveness: conn.liveness,
        peerReports: conn.peerReports,
        ...(o.recovery ? { recovery: o.recovery } : {}),
        ...(o.capacityBytes !== undefined ? { store: { space: { capacityBytes: o.capacityBytes } } } : {}),
      });
    } catch (err) {
      await conn.close();
      throw err;
    }
    if (o.metrics) metricsServer = await metrics.serve(osd, o.metrics).catch(async (err: unknown) => (await osd.close(), await conn.close(), Promise.reject(err)));
    const scrubs = new ScrubScheduler(osd, o.scrub);
    process.stdout.write(`${JSON.stringify({ event: 'listening', host: o.host, port: osd.port, ...(metricsServer ? { metricsPort: metricsServer.port } : {}), diskId: identity.diskId, clusterId: identity.clusterId, pid: process.pid })}\n`);
    await waitForSignal();
    const stopTimeoutMs = o.stopTimeoutMs ?? STOP_TIMEOUT_MS_DEFAULT;
    const step = { name: '' };
    const stopped = await stopWithin(o.io, stopTimeoutMs, step, [
      ['scrubs', () => scrubs.close()],
      ['metrics server', async () => metricsServer?.close()],
      ['storage daemon', () => osd.close()],
      ['map connection', () => conn.close()],
    ]);
    if (!stopped) {
      const where = step.name === 'storage daemon' ? `storage daemon: ${osd.closeStep}` : step.name;
      console.error(`disk ${identity.diskId}: not stopped ${stopTimeoutMs} ms after the signal (waiting in: ${where}); exiting without a clean close (the store opens as after a crash; nothing acknowledged is lost)`);
      return EXIT_STOP_TIMED_OUT;
    }
    process.stdout.write(`${JSON.stringify({ event: 'stopped', diskId: identity.diskId })}\n`);
    return 0;
  }
  const daemon = await StorageDaemon.start({
    io: o.io,
    diskPath: o.diskPath,
    host: o.host,
    port: o.port,
    ...(identity ? { create: identity, expect: identity } : {}),
  });
  const id = daemon.store.identity;
  process.stdout.write(`${JSON.stringify({ event: 'listening', host: o.host, port: daemon.port, diskId: id.diskId, clusterId: id.clusterId, pid: process.pid })}\n`);
  await waitForSignal();
  await daemon.close();
  process.stdout.write(`${JSON.stringify({ event: 'stopped', diskId: id.diskId })}\n`);
  return 0;
}
