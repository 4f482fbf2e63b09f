/**
 * The files `tessera up` keeps in its data directory:
 *   cluster.json  the layout it created (cluster id, hosts, disks and ports, map service port)
 *   client.json   what clients and scripts need to reach the cluster: the map
 *                 service addresses, the pools, the S3 endpoint and the S3
 *                 admin user's keys (mode 0600: it carries the admin secret).
 *                 `map` is one "host:port" as it always was (the first map
 *                 daemon); `maps` lists every map daemon (`up --etcd` runs
 *                 several): readers use mapAddressesOf() to fail over.
 *   map/          the map service's files (cluster map epochs, pg history)
 *   disks/diskN/  each disk's store
 * Documented in docs/operations.md.
 */
import { join } from 'node:path';
import type { Io } from '../io/io.js';

export interface ClusterLayout {
  clusterId: string;
  mapPort: number;
  /** Ports of every map daemon (`up --etcd` runs several, consecutive from mapPort); absent in older layouts: [mapPort]. */
  mapPorts?: number[];
  /** Port of the S3 gateway (absent in layouts written before it ran: 9000). */
  s3Port?: number;
  /** Prometheus metrics of the map service (served by `tessera up`); absent in older layouts: mapPort + metricsPortOffset. */
  mapMetricsPort?: number;
  /**
   * Prometheus metrics of the S3 gateway (`tessera s3 --metrics`); absent in older layouts: s3Port + metricsPortOffset
   * (s3MetricsPortOf). 0 when the S3 port is 0 (any free port: the gateway reports the one it bound).
   */
  s3MetricsPort?: number;
  /** Metrics port = service port + this offset (default 1000) for services added later (`tessera disk add`). */
  metricsPortOffset?: number;
  /** metricsPort: the daemon's Prometheus metrics (absent in older layouts: port + metricsPortOffset). */
  disks: Array<{ diskId: number; host: string; path: string; listenHost: string; port: number; metricsPort?: number }>;
}

export interface ClientFile {
  clusterId: string;
  /** "host:port" of the (first) map daemon: all that readers written before `maps` existed know. */
  map: string;
  /** "host:port" of every map daemon, in failover order (absent in older files: just `map`). */
  maps?: string[];
  pools: Array<{ name: string; type: string }>;
  /** The S3 gateway `tessera up` runs, and its admin user. */
  s3?: ClientFileS3;
}

export interface S3Credentials {
  /** The canonical user id (64 hex) S3 returns as Owner. */
  userId: string;
  displayName: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface ClientFileS3 {
  /** "http://host:port", path-style addressing. */
  endpoint: string;
  region: string;
  /** Replicated pool of users, buckets and bucket indexes. */
  metaPool: string;
  /** Default data pool of new buckets. */
  dataPool: string;
  admin: S3Credentials;
}

export async function readJson<T>(io: Io, path: string): Promise<T | null> {
  if (!(await io.fs.stat(path))) return null;
  return JSON.parse((await io.fs.readFile(path)).toString('utf8')) as T;
}

/** The S3 port of a layout written before it had one. */
export const S3_PORT_DEFAULT = 9000;

/** The S3 gateway's metrics port: the layout's, else derived from its S3 port (0, any free port, stays 0). */
export function s3MetricsPortOf(layout: ClusterLayout, metricsPortOffsetDefault: number): number {
  if (layout.s3MetricsPort !== undefined) return layout.s3MetricsPort;
  const s3Port = layout.s3Port ?? S3_PORT_DEFAULT;
  return s3Port === 0 ? 0 : s3Port + (layout.metricsPortOffset ?? metricsPortOffsetDefault);
}

/** The layout's map daemon ports. */
export const mapPortsOf = (layout: ClusterLayout): number[] => layout.mapPorts ?? [layout.mapPort];

/** "host:port[,host:port...]" of every map daemon the client file names (connectMapService fails over between them). */
export const mapAddressesOf = (file: ClientFile): string => (file.maps?.length ? file.maps : [file.map]).join(',');

export const layoutPath = (dataDir: string): string => join(dataDir, 'cluster.json');
export const clientPath = (dataDir: string): string => join(dataDir, 'client.json');

export async function writeJson(io: Io, path: string, value: unknown): Promise<void> {
  await io.fs.writeFileAtomic(path, Buffer.from(`${JSON.stringify(value, null, 2)}\n`));
}
