/**
 * `tessera s3`: the S3 gateway (gateways/s3) as a process of its own, talking
 * to the cluster through the client library. It follows the map service at
 * --map, keeps users, buckets and bucket indexes in --meta-pool and new
 * buckets' data in --data-pool (a bucket may name another pool at creation).
 * Prints one JSON line when it listens ({"event":"listening",...}: `tessera
 * up` and tests wait for it; with --metrics its metricsPort too). SIGTERM
 * or SIGINT stop accepting, drain the requests in flight (at most
 * drainTimeoutMs), then close the client. With --metrics HOST:PORT it serves
 * Prometheus metrics there (src/cli/s3-metrics.ts).
 */
import type { Io } from '../io/io.js';
import { TesseraClient } from '../client/client.js';
import { connectMapService } from '../../cluster/map-daemon.js';
import { S3Gateway } from '../../gateways/s3/gateway.js';
import type { MetricsServer } from '../metrics/http.js';
import { s3MetricsEndpoint } from './s3-metrics.js';

export interface S3CommandOptions {
  io: Io;
  /** "host:port" of the map service. */
  map: string;
  host: string;
  port: number;
  metaPool: string;
  dataPool: string;
  region?: string;
  /** Domains of virtual-host-style addressing (bucket.<domain>); default localhost. */
  domains?: string[];
  /** Index shards of the buckets it creates (gateways/s3/meta/bucket-index.ts; default 8). */
  indexShards?: number;
  /** Write-journal sweeps (gateways/s3/meta/journal.ts): grace period and interval; defaults 1 h and 10 min. */
  journalGraceMs?: number;
  journalSweepIntervalMs?: number;
  /**
   * Crash tests: the gateway kills itself (SIGKILL) at this point of its next
   * write that reaches it ('after-data', 'after-swap'); from TESSERA_S3_FAULT.
   */
  faultPoint?: string;
  /** GET responses one client may have in flight (the gateway's getsInflightPerClientMax; default limits.s3GetsInflightPerClientMax). */
  getsPerClientMax?: number;
  /** Serve Prometheus metrics here (src/cli/s3-metrics.ts; port 0: any free port, printed as metricsPort). */
  metrics?: { host: string; port: number };
  /** How long a stopping gateway waits for requests in flight before it exits anyway. */
  drainTimeoutMs?: number;
}

const DRAIN_TIMEOUT_MS = 10_000;
const CLIENT_TIMEOUT_MS = 60_000;

function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
}

function checkPools(client: TesseraClient, o: S3CommandOptions): void {
  const names = client.view.map.pools.map((p) => p.name);
  for (const [flag, pool] of [['--meta-pool', o.metaPool], ['--data-pool', o.dataPool]] as const) {
    if (!names.includes(pool)) throw new Error(`${flag} ${pool}: no such pool (the cluster has ${names.join(', ') || 'none'})`);
  }
  const meta = client.pool(o.metaPool);
  if (meta.redundancy.type !== 'replicated') throw new Error(`--meta-pool ${o.metaPool} must be a replicated pool (bucket indexes use omap)`);
}

export async function runS3(o: S3CommandOptions): Promise<number> {
  const signal = waitForSignal();
  const conn = connectMapService(o.io, o.map);
  let client: TesseraClient | null = null;
  let gateway: S3Gateway | null = null;
  let metricsServer: MetricsServer | null = null;
  const metrics = o.metrics ? s3MetricsEndpoint() : null;
  let sweeps = 0;
  try {
    client = await TesseraClient.connect({ io: o.io, mapService: conn.service, timeoutMs: CLIENT_TIMEOUT_MS });
    checkPools(client, o);
    gateway = await S3Gateway.start({
      io: o.io,
      client,
      host: o.host,
      port: o.port,
      metaPool: o.metaPool,
      defaultDataPool: o.dataPool,
      ...(o.region !== undefined ? { region: o.region } : {}),
      ...(o.domains !== undefined && o.domains.length > 0 ? { baseDomains: o.domains } : {}),
      ...(o.indexShards !== undefined ? { indexShards: o.indexShards } : {}),
      ...(o.journalGraceMs !== undefined ? { journalGraceMs: o.journalGraceMs } : {}),
      ...(o.journalSweepIntervalMs !== undefined ? { journalSweepIntervalMs: o.journalSweepIntervalMs } : {}),
      ...(o.getsPerClientMax !== undefined ? { getsInflightPerClientMax: o.getsPerClientMax } : {}),
      onJournalSweep: (stats) => {
        // The first sweep (at start) always reports; later ones when they did something.
        if (sweeps++ === 0 || stats.dataFreed > 0 || stats.failures > 0 || stats.recordsReleased > 0) process.stdout.write(`${JSON.stringify({ event: 'journal-swept', service: 's3', ...stats })}\n`);
      },
      ...(metrics ? { observer: metrics.observer } : {}),
      ...(o.faultPoint ? { faultPoint: (name: string) => (name === o.faultPoint ? process.kill(process.pid, 'SIGKILL') : undefined) } : {}),
    });
    if (metrics && o.metrics) metricsServer = await metrics.serve(gateway, o.metrics);
    process.stdout.write(`${JSON.stringify({ event: 'listening', service: 's3', host: o.host, port: gateway.port, ...(metricsServer ? { metricsPort: metricsServer.port } : {}), pid: process.pid })}\n`);
    await signal;
    await metricsServer?.close();
    metricsServer = null;
    const drained = gateway.close();
    const cancel = new AbortController();
    const deadline = o.io.clock.sleep(o.drainTimeoutMs ?? DRAIN_TIMEOUT_MS, cancel.signal).then(() => true, () => false);
    const timedOut = await Promise.race([drained.then(() => false), deadline]);
    cancel.abort();
    if (timedOut) process.stderr.write('tessera s3: requests still in flight after the drain timeout; stopping anyway\n');
    gateway = null;
    process.stdout.write(`${JSON.stringify({ event: 'stopped', service: 's3' })}\n`);
    return 0;
  } finally {
    if (metricsServer) await metricsServer.close();
    if (gateway) await gateway.close().catch(() => undefined);
    if (client) await client.close();
    await conn.close();
  }
}
