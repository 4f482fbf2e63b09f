/**
 * Which cluster an admin command talks to: `--map HOST:PORT[,HOST:PORT...]`, or the client
 * file of `--data DIR` (default ./tessera-data, written by `tessera up`).
 * Opens the map service connection and, on demand, a TesseraClient; close()
 * releases both. Failures to find or reach the cluster are CliError (one
 * line for the user, exit code 1).
 */
import { resolve as resolvePath } from 'node:path';
import type { Io } from '../io/io.js';
import { TesseraClient } from '../client/client.js';
import { connectMapService, parseMapAddresses, type MapConnection } from '../../cluster/map-daemon.js';
import type { ClusterMap } from '../../cluster/map.js';
import { createTcpClient } from '../rpc/tcp.js';
import type { RpcClient } from '../rpc/types.js';
import { clientPath, layoutPath, mapAddressesOf, readJson, type ClientFile, type ClusterLayout } from './cluster-files.js';

/** An error meant for the user as it is: main prints its message on one line and exits 1. */
export class CliError extends Error {}

/** How long one call to the cluster may take before the command gives up. */
export const CLI_TIMEOUT_MS = 30_000;

export interface TargetOptions {
  io: Io;
  /** Data directory of `tessera up` (default ./tessera-data). */
  dataDir?: string;
  /** "host:port" of the map service (instead of --data). */
  map?: string;
}

export interface Cluster {
  io: Io;
  map: MapConnection;
  /** The data directory, when the cluster was found through one. */
  dataDir: string | null;
  /** "host:port[,host:port...]" of the map daemons (calls fail over between them). */
  address: string;
  /** The latest map; CliError if the map service does not answer within timeoutMs (default CLI_TIMEOUT_MS). */
  current(timeoutMs?: number): Promise<ClusterMap>;
  client(): Promise<TesseraClient>;
  close(): Promise<void>;
}

export const dataDirOf = (o: TargetOptions): string => resolvePath(o.dataDir ?? 'tessera-data');

export async function readLayout(io: Io, dataDir: string): Promise<ClusterLayout> {
  const layout = await readJson<ClusterLayout>(io, layoutPath(dataDir));
  if (!layout) throw new CliError(`no cluster layout in ${dataDir} (this command needs the --data DIR of a \`tessera up\` cluster)`);
  return layout;
}

export async function openCluster(o: TargetOptions): Promise<Cluster> {
  let address = o.map;
  let dataDir: string | null = null;
  if (address === undefined) {
    dataDir = dataDirOf(o);
    const file = await readJson<ClientFile>(o.io, clientPath(dataDir));
    if (!file) throw new CliError(`no cluster in ${dataDir} (give --data DIR of a \`tessera up\` cluster, or --map HOST:PORT)`);
    address = mapAddressesOf(file);
  }
  try {
    parseMapAddresses(address);
  } catch {
    throw new CliError(`--map wants HOST:PORT[,HOST:PORT...], got ${address}`);
  }
  const map = connectMapService(o.io, address);
  let client: TesseraClient | null = null;
  const where = address;
  const current = async (timeoutMs = CLI_TIMEOUT_MS): Promise<ClusterMap> => {
    try {
      return await map.service.current({ signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      throw new CliError(`cannot reach the map service at ${where}: ${(err as Error).message}`);
    }
  };
  return {
    io: o.io,
    map,
    dataDir,
    address,
    current,
    async client() {
      if (!client) {
        await current();
        client = await TesseraClient.connect({ io: o.io, mapService: map.service, timeoutMs: CLI_TIMEOUT_MS });
      }
      return client;
    },
    async close() {
      await client?.close();
      await map.close();
    },
  };
}

/** Runs fn on the cluster o names, closing the connection afterwards. */
export async function withCluster<T>(o: TargetOptions, fn: (c: Cluster) => Promise<T>): Promise<T> {
  const cluster = await openCluster(o);
  try {
    return await fn(cluster);
  } finally {
    await cluster.close();
  }
}

/** A table: columns padded to their widest cell, the last one not padded. */
export function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

/**
 * Asks every disk the map has up, in parallel, on a connection of its own with one attempt: what `ask` got
 * from it, or the error it got instead (the caller decides what a disk that did not answer means).
 */
export async function askUpDisks<T>(io: Io, map: ClusterMap, ask: (rpc: RpcClient) => Promise<T>): Promise<Map<number, T | Error>> {
  const result = new Map<number, T | Error>();
  await Promise.all(
    map.disks
      .filter((d) => d.up)
      .map(async (d) => {
        const at = d.address.lastIndexOf(':');
        const rpc = createTcpClient({ io, host: d.address.slice(0, at), port: Number(d.address.slice(at + 1)), limits: { rpcAttemptsMax: 1 } });
        try {
          result.set(d.id, await ask(rpc));
        } catch (err) {
          result.set(d.id, err instanceof Error ? err : new Error(String(err)));
        } finally {
          await rpc.close();
        }
      }),
  );
  return result;
}
