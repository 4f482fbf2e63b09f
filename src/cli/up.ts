/**
 * `tessera up`: the all-in-one set of storage daemons on local directories,
 * each its own process (one per disk), supervised: a daemon that dies is
 * restarted with backoff. Running it again on the same data directory
 * resumes with the same disks and data. Ctrl-C (SIGINT) or SIGTERM stops
 * every daemon cleanly (SIGTERM each, by PID; SIGKILL after a timeout).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { resolve as resolvePath, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Io } from '../io/io.js';
import { clientPath, layoutPath, readJson, writeJson, type ClusterLayout } from './cluster-files.js';

const tesseraBin = fileURLToPath(new URL('../bin/tessera.js', import.meta.url));
const STOP_TIMEOUT_MS = 15_000;
const RESTART_BACKOFF_MS = [500, 1000, 2000, 5000, 10_000];

export interface UpOptions {
  io: Io;
  dataDir: string;
  disks: number;
  basePort: number;
}

interface Supervised {
  disk: ClusterLayout['disks'][number];
  child: ChildProcess | null;
  restarts: number;
}

async function loadOrCreateLayout(o: UpOptions): Promise<ClusterLayout> {
  const dataDir = resolvePath(o.dataDir);
  await o.io.fs.mkdir(dataDir);
  const existing = await readJson<ClusterLayout>(o.io, layoutPath(dataDir));
  if (existing) return existing;
  const layout: ClusterLayout = {
    clusterId: o.io.random.bytes(8).toString('hex'),
    disks: Array.from({ length: o.disks }, (_, i) => ({ diskId: i, path: join(dataDir, 'disks', `disk${i}`), host: '127.0.0.1', port: o.basePort + i })),
  };
  await writeJson(o.io, layoutPath(dataDir), layout);
  return layout;
}

function startDaemon(s: Supervised, clusterId: string, onExit: (s: Supervised, code: number | null) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const { disk } = s;
    const child = spawn(
      process.execPath,
      [tesseraBin, 'daemon', '--disk', disk.path, '--listen', `${disk.host}:${disk.port}`, '--cluster-id', clusterId, '--disk-id', String(disk.diskId)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    s.child = child;
    let listening = false;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!listening && line.includes('"listening"')) {
        listening = true;
        resolve();
      }
    });
    child.on('exit', (code) => {
      s.child = null;
      if (!listening) reject(new Error(`daemon for disk ${disk.diskId} exited with ${code} before listening`));
      else onExit(s, code);
    });
  });
}

export async function runUp(o: UpOptions): Promise<number> {
  const layout = await loadOrCreateLayout(o);
  const dataDir = resolvePath(o.dataDir);
  let stopping = false;
  const supervised: Supervised[] = layout.disks.map((disk) => ({ disk, child: null, restarts: 0 }));
  const onExit = (s: Supervised, code: number | null): void => {
    if (stopping) return;
    const delayMs = RESTART_BACKOFF_MS[Math.min(s.restarts, RESTART_BACKOFF_MS.length - 1)]!;
    s.restarts++;
    process.stderr.write(`tessera up: daemon of disk ${s.disk.diskId} exited (${code}); restarting in ${delayMs} ms\n`);
    o.io.clock.setTimeout(() => {
      if (!stopping) startDaemon(s, layout.clusterId, onExit).catch((err: Error) => process.stderr.write(`tessera up: ${err.message}\n`));
    }, delayMs);
  };
  const stopAll = async (): Promise<void> => {
    stopping = true;
    await Promise.all(
      supervised.map(
        (s) =>
          new Promise<void>((resolve) => {
            const child = s.child;
            if (!child || child.exitCode !== null) return resolve();
            const timer = o.io.clock.setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
            child.once('exit', () => {
              o.io.clock.clearTimeout(timer);
              resolve();
            });
            child.kill('SIGTERM');
          }),
      ),
    );
  };
  try {
    await Promise.all(supervised.map((s) => startDaemon(s, layout.clusterId, onExit)));
  } catch (err) {
    await stopAll();
    throw err;
  }
  await writeJson(o.io, clientPath(dataDir), {
    clusterId: layout.clusterId,
    daemons: layout.disks.map((d) => ({ diskId: d.diskId, address: `${d.host}:${d.port}` })),
  });
  process.stdout.write(
    [
      `tessera: cluster ${layout.clusterId} up in ${dataDir}`,
      ...layout.disks.map((d) => `  disk ${d.diskId}: storage daemon on ${d.host}:${d.port} (pid ${supervised[d.diskId]?.child?.pid}), data in ${d.path}`),
      `  client file: ${clientPath(dataDir)}`,
      '  (the cluster layer and the S3 gateway are not built yet: see README)',
      'Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  process.stdout.write('tessera: stopping\n');
  await stopAll();
  return 0;
}
