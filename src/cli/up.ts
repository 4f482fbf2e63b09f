/**
 * `tessera up`: the all-in-one cluster on local directories. This process
 * runs the map service (embedded, port --map-port) and supervises one storage
 * daemon process per disk: a daemon that exits is marked down in the map at
 * once and restarted with backoff. The first run creates the layout (hosts x
 * disks, failure domains in the map only: it is one machine) and two pools:
 * "rep" (replicated, size 3, min_size 2, one copy per host) and "ec"
 * (erasure-coded 4+2, one shard per disk). Running it again on the same
 * directory resumes the cluster with its data. SIGINT/SIGTERM stop every
 * daemon cleanly (SIGTERM each, by PID; SIGKILL after a timeout). With
 * `etcd` (--etcd URL[,URL...]) the map and pg history live in etcd instead of
 * the data directory (cluster/map-store-etcd.ts); give it on every run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { resolve as resolvePath, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Io } from '../io/io.js';
import { startMapDaemon, type MapDaemon } from '../../cluster/map-daemon.js';
import { addDisk, addHost, addRack, addSite, createPool, initialMap, setDiskState } from '../../cluster/map-edit.js';
import type { ClusterMap } from '../../cluster/map.js';
import { clientPath, layoutPath, readJson, writeJson, type ClusterLayout } from './cluster-files.js';

const tesseraBin = fileURLToPath(new URL('../bin/tessera.js', import.meta.url));
const STOP_TIMEOUT_MS = 15_000;
const RESTART_BACKOFF_MS = [500, 1000, 2000, 5000, 10_000];

export interface UpOptions {
  io: Io;
  dataDir: string;
  hosts: number;
  disksPerHost: number;
  basePort: number;
  mapPort: number;
  pgCount: number;
  /** etcd client URLs: keep the map in etcd rather than in dataDir/map (the default). */
  etcd?: string[];
}

interface Supervised {
  disk: ClusterLayout['disks'][number];
  child: ChildProcess | null;
  restarts: number;
}

function initialClusterMap(layout: ClusterLayout, o: UpOptions): ClusterMap {
  let map = addRack(addSite(initialMap({ clusterId: layout.clusterId }), { name: 'site0' }), { name: 'rack0', site: 'site0' });
  for (let h = 0; h < o.hosts; h++) map = addHost(map, { name: `host${h}`, rack: 'rack0' });
  for (const d of layout.disks) map = addDisk(map, { id: d.diskId, host: d.host, weight: 1, address: `${d.listenHost}:${d.port}`, up: false, in: true });
  map = createPool(map, { id: 1, name: 'rep', redundancy: { type: 'replicated', size: Math.min(3, o.hosts), minSize: Math.min(2, o.hosts) }, failureDomain: 'host', pgCount: o.pgCount });
  if (layout.disks.length >= 6) {
    map = createPool(map, { id: 2, name: 'ec', redundancy: { type: 'erasure', dataShards: 4, parityShards: 2 }, failureDomain: 'disk', pgCount: o.pgCount });
  }
  return map;
}

async function loadOrCreateLayout(o: UpOptions): Promise<{ layout: ClusterLayout; created: boolean }> {
  const dataDir = resolvePath(o.dataDir);
  await o.io.fs.mkdir(dataDir);
  const existing = await readJson<ClusterLayout>(o.io, layoutPath(dataDir));
  if (existing) return { layout: existing, created: false };
  const disks: ClusterLayout['disks'] = [];
  for (let h = 0; h < o.hosts; h++) {
    for (let d = 0; d < o.disksPerHost; d++) {
      const diskId = h * o.disksPerHost + d;
      disks.push({ diskId, host: `host${h}`, path: join(dataDir, 'disks', `disk${diskId}`), listenHost: '127.0.0.1', port: o.basePort + diskId });
    }
  }
  const layout: ClusterLayout = { clusterId: o.io.random.bytes(8).toString('hex'), mapPort: o.mapPort, disks };
  await writeJson(o.io, layoutPath(dataDir), layout);
  return { layout, created: true };
}

function startDaemon(s: Supervised, layout: ClusterLayout, onExit: (s: Supervised, code: number | null) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const { disk } = s;
    const args = [tesseraBin, 'daemon', '--disk', disk.path, '--listen', `${disk.listenHost}:${disk.port}`, '--cluster-id', layout.clusterId, '--disk-id', String(disk.diskId), '--map', `127.0.0.1:${layout.mapPort}`];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
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
      onExit(s, code);
    });
  });
}

function stopChild(io: Io, child: ChildProcess | null): Promise<void> {
  return new Promise<void>((resolve) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = io.clock.setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    child.once('exit', () => {
      io.clock.clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export async function runUp(o: UpOptions): Promise<number> {
  const { layout, created } = await loadOrCreateLayout(o);
  const dataDir = resolvePath(o.dataDir);
  const mapd: MapDaemon = await startMapDaemon({
    io: o.io,
    ...(o.etcd ? { etcd: { endpoints: o.etcd, clusterId: layout.clusterId } } : { dir: dataDir }),
    host: '127.0.0.1',
    port: layout.mapPort,
    ...(created ? { create: initialClusterMap(layout, o) } : {}),
  });
  let stopping = false;
  const supervised: Supervised[] = layout.disks.map((disk) => ({ disk, child: null, restarts: 0 }));
  const onExit = (s: Supervised, code: number | null): void => {
    if (stopping) return;
    void mapd.service.change((m) => setDiskState(m, s.disk.diskId, { up: false })).catch(() => undefined);
    const delayMs = RESTART_BACKOFF_MS[Math.min(s.restarts, RESTART_BACKOFF_MS.length - 1)]!;
    s.restarts++;
    process.stderr.write(`tessera up: daemon of disk ${s.disk.diskId} exited (${code}); marked down, restarting in ${delayMs} ms\n`);
    o.io.clock.setTimeout(() => {
      if (!stopping) startDaemon(s, layout, onExit).catch((err: Error) => process.stderr.write(`tessera up: ${err.message}\n`));
    }, delayMs);
  };
  const stopAll = async (): Promise<void> => {
    stopping = true;
    await Promise.all(supervised.map((s) => stopChild(o.io, s.child)));
    await mapd.close();
  };
  try {
    await Promise.all(supervised.map((s) => startDaemon(s, layout, onExit)));
  } catch (err) {
    await stopAll();
    throw err;
  }
  const map = await mapd.service.current();
  await writeJson(o.io, clientPath(dataDir), {
    clusterId: layout.clusterId,
    map: `127.0.0.1:${mapd.port}`,
    pools: map.pools.map((p) => ({ name: p.name, type: p.redundancy.type })),
  });
  process.stdout.write(
    [
      `tessera: cluster ${layout.clusterId} up in ${dataDir} (map epoch ${map.epoch})`,
      `  map service on 127.0.0.1:${mapd.port}${o.etcd ? ` (map in etcd: ${o.etcd.join(',')})` : ''}`,
      ...layout.disks.map((d) => `  disk ${d.diskId} (${d.host}): storage daemon on ${d.listenHost}:${d.port}, pid ${supervised[d.diskId]?.child?.pid}`),
      ...map.pools.map((p) => `  pool ${p.name}: ${p.redundancy.type === 'replicated' ? `replicated, size ${p.redundancy.size}` : `erasure-coded ${p.redundancy.dataShards}+${p.redundancy.parityShards}`}, ${p.pgCount} pgs, one per ${p.failureDomain}`),
      `  client file: ${clientPath(dataDir)}`,
      '  (no S3 gateway yet: see README)',
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
