/**
 * `tessera daemon`: one storage daemon in the foreground. Prints one JSON line
 * when it listens ({"event":"listening",...}: scripts and tests wait for it);
 * SIGTERM or SIGINT drain requests in flight and close the store cleanly.
 */
import type { Io } from '../io/io.js';
import { StorageDaemon } from '../daemon/daemon.js';

export interface DaemonCommandOptions {
  io: Io;
  diskPath: string;
  host: string;
  port: number;
  clusterId?: string;
  diskId?: number;
}

export async function runDaemon(o: DaemonCommandOptions): Promise<number> {
  const identity = o.clusterId !== undefined && o.diskId !== undefined ? { clusterId: o.clusterId, diskId: o.diskId } : undefined;
  const daemon = await StorageDaemon.start({
    io: o.io,
    diskPath: o.diskPath,
    host: o.host,
    port: o.port,
    ...(identity ? { create: identity, expect: identity } : {}),
  });
  const id = daemon.store.identity;
  process.stdout.write(`${JSON.stringify({ event: 'listening', host: o.host, port: daemon.port, diskId: id.diskId, clusterId: id.clusterId, pid: process.pid })}\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await daemon.close();
  process.stdout.write(`${JSON.stringify({ event: 'stopped', diskId: id.diskId })}\n`);
  return 0;
}
