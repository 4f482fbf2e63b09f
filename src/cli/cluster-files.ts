/**
 * The files `tessera up` keeps in its data directory:
 *   cluster.json  the layout it created (cluster id, hosts, disks and ports, map service port)
 *   client.json   what clients and scripts need to reach the cluster: the map
 *                 service address and the pools (mode 0600: it will carry
 *                 admin credentials)
 *   map/          the map service's files (cluster map epochs, pg history)
 *   disks/diskN/  each disk's store
 * Documented in docs/operations.md.
 */
import { join } from 'node:path';
import type { Io } from '../io/io.js';

export interface ClusterLayout {
  clusterId: string;
  mapPort: number;
  disks: Array<{ diskId: number; host: string; path: string; listenHost: string; port: number }>;
}

export interface ClientFile {
  clusterId: string;
  /** "host:port" of the map service. */
  map: string;
  pools: Array<{ name: string; type: string }>;
}

export async function readJson<T>(io: Io, path: string): Promise<T | null> {
  if (!(await io.fs.stat(path))) return null;
  return JSON.parse((await io.fs.readFile(path)).toString('utf8')) as T;
}

export const layoutPath = (dataDir: string): string => join(dataDir, 'cluster.json');
export const clientPath = (dataDir: string): string => join(dataDir, 'client.json');

export async function writeJson(io: Io, path: string, value: unknown): Promise<void> {
  await io.fs.writeFileAtomic(path, Buffer.from(`${JSON.stringify(value, null, 2)}\n`));
}
