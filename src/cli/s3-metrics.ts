/**
 * The metrics of an S3 gateway (`tessera s3 --metrics HOST:PORT`, and the
 * one `tessera up` runs): a Registry of its own with S3Metrics (src/metrics),
 * fed the requests the gateway reports (give `observer` to S3Gateway.start)
 * and, once serve() has the gateway, reading its GET slots, connections and
 * striper budget at each scrape; served at http://HOST:PORT/metrics. The
 * label sets are the router's operation names and the error table's codes.
 */
import { Registry } from 'prom-client';
import type { S3Gateway } from '../../gateways/s3/gateway.js';
import { operationLabels } from '../../gateways/s3/router.js';
import { s3Statuses } from '../../gateways/s3/errors.js';
import { S3Metrics, type S3RequestObserver } from '../metrics/metrics.js';
import { serveMetrics, type MetricsServer } from '../metrics/http.js';

export interface S3MetricsEndpoint {
  /** Give to S3Gateway.start as `observer`. */
  observer: S3RequestObserver;
  registry: Registry;
  /** Reads the gateway's state at scrapes from now on, and serves the registry. */
  serve(gateway: S3Gateway, address: { host: string; port: number }): Promise<MetricsServer>;
}

export function s3MetricsEndpoint(): S3MetricsEndpoint {
  const registry = new Registry();
  let gateway: S3Gateway | null = null;
  const metrics = new S3Metrics(
    registry,
    {
      gets: () => gateway?.clientGets() ?? { clients: 0, inflight: 0, waiting: 0, refusedTotal: 0 },
      connections: async () => (gateway ? gateway.connections() : 0),
      striperMemory: () => gateway?.striperMemory() ?? { reservedBytes: 0, budgetBytes: 0 },
    },
    { operations: operationLabels, errorCodes: Object.keys(s3Statuses) },
  );
  return {
    observer: metrics,
    registry,
    async serve(g, address) {
      gateway = g;
      try {
        return await serveMetrics({ registry, ...address });
      } catch (err) {
        throw new Error(`metrics on ${address.host}:${address.port}: ${(err as Error).message}`);
      }
    },
  };
}
