/**
 * The metrics of a `tessera daemon --map ... --metrics HOST:PORT` process:
 * a Registry of its own with DaemonMetrics (src/metrics) read from the Osd
 * (pgs by state through the same pgStats the status command queries, the
 * store's statfs, the map epoch, the recovery it drives as primary, its primary lease) plus the client ops the Osd reports, served
 * at http://HOST:PORT/metrics.
 */
import { Registry } from 'prom-client';
import type { Osd } from '../daemon/osd.js';
import { pgStats, recoveryStats, type ClientOpSample } from '../daemon/osd-admin.js';
import { DaemonMetrics } from '../metrics/metrics.js';
import { serveMetrics, type MetricsServer } from '../metrics/http.js';

export interface DaemonMetricsEndpoint {
  /** Give to Osd.start as onClientOp (ops before serve() are dropped). */
  onClientOp(sample: ClientOpSample): void;
  /** Starts serving the Osd's metrics. */
  serve(osd: Osd, address: { host: string; port: number }): Promise<MetricsServer>;
}

export function daemonMetricsEndpoint(): DaemonMetricsEndpoint {
  let metrics: DaemonMetrics | null = null;
  return {
    onClientOp: (sample) => metrics?.observe(sample),
    async serve(osd, address) {
      const registry = new Registry();
      metrics = new DaemonMetrics(registry, osd.diskId, {
        pgStates() {
          const counts: Record<string, number> = {};
          for (const p of pgStats(osd).pgs) counts[p.state] = (counts[p.state] ?? 0) + 1;
          return counts;
        },
        pgCount: () => osd.pgs.size,
        space: async () => osd.store.statfs(),
        mapEpoch: () => osd.view.epoch,
        strays: () => osd.strays.figures(),
        recovery() {
          const r = recoveryStats(osd);
          let bytesLeft: number | null = 0;
          for (const p of r.pgs) bytesLeft = bytesLeft === null || p.bytesLeft === null ? null : bytesLeft + p.bytesLeft;
          return {
            objectsRecovered: r.objectsRecovered,
            bytesRecovered: r.bytesRecovered,
            objectsLeft: r.pgs.reduce((n, p) => n + Math.max(0, p.objectsTotal - p.objectsDone), 0),
            bytesLeft,
            pgsRecovering: r.pgs.length,
          };
        },
        lease: () => ({ held: osd.lease.holds(), lapses: osd.lease.lapses, refusals: osd.lease.refusals }),
        peers: () => osd.peerHeartbeats?.snapshot() ?? { peers: 0, reported: 0, pingsFailed: 0, reportsSent: 0 },
        commit: () => osd.store.commitStats(),
        reads: () => osd.store.readStats(),
      });
      try {
        return await serveMetrics({ registry, ...address });
      } catch (err) {
        throw new Error(`metrics on ${address.host}:${address.port}: ${(err as Error).message}`);
      }
    },
  };
}
