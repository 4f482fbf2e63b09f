/**
 * `tessera mapd`: one map daemon in the foreground, serving a cluster whose
 * map is in etcd (cluster/map-daemon.ts with `etcd`). Any number of them may
 * serve the same cluster: daemons and clients given all their addresses
 * (`--map A,B,...`) fail over between them, and failure detection is shared
 * through etcd with one elected judge (cluster/liveness-etcd.ts;
 * docs/operations.md, "Several map daemons"). The map must exist already
 * (`tessera up --etcd` creates it). Prints one JSON line when it listens
 * ({"event":"listening",...}); SIGTERM or SIGINT close it (the judge
 * resigns, so another takes over at once).
 */
import type { Io } from '../io/io.js';
import { startMapDaemon } from '../../cluster/map-daemon.js';
import type { LivenessOptions } from '../../cluster/liveness.js';

export interface MapdCommandOptions {
  io: Io;
  etcd: string[];
  clusterId: string;
  host: string;
  port: number;
  liveness: LivenessOptions;
}

export async function runMapd(o: MapdCommandOptions): Promise<number> {
  const mapd = await startMapDaemon({ io: o.io, etcd: { endpoints: o.etcd, clusterId: o.clusterId }, host: o.host, port: o.port, liveness: o.liveness });
  process.stdout.write(`${JSON.stringify({ event: 'listening', host: o.host, port: mapd.port, clusterId: o.clusterId, pid: process.pid })}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await mapd.close();
  process.stdout.write(`${JSON.stringify({ event: 'stopped', port: mapd.port })}\n`);
  return 0;
}
