/**
 * A cluster to inject faults into: the map service in a process of its own
 * (test/helpers/map-daemon-main.ts, so it can be killed -9 and restarted on
 * its port and directory), one storage daemon process per disk, and a client
 * in the test process that reaches the map service over TCP like any other.
 *
 * With a NetnsLab (test/helpers/netns.ts) every host is a network namespace:
 * its daemons run inside it (`ip netns exec`) and listen on the host's own
 * address, which is what they advertise in the map; the map service listens
 * on the bridge address in the root namespace. Without one, everything runs
 * on 127.0.0.1 and hosts are failure domains of the map only.
 *
 * Daemon faults act on the process by PID (SIGKILL, SIGSTOP/SIGCONT); markUp
 * and markDown edit the map as failure detection would (explicit, so the
 * schedule does not depend on grace periods).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { systemIo } from '../../src/io/system.js';
import { TesseraClient } from '../../src/client/client.js';
import { connectMapService, startMapDaemon, type MapConnection } from '../../cluster/map-daemon.js';
import { addDisk, addHost, addRack, addSite, createPool, initialMap, setDiskState } from '../../cluster/map-edit.js';
import type { ClusterMap } from '../../cluster/map.js';
import type { LivenessOptions } from '../../cluster/liveness.js';
import { StoreClient } from '../../src/protocol/store-client.js';
import { createTcpClient } from '../../src/rpc/index.js';
import { makeTempDir } from './tmp.js';
import { tesseraBin } from './daemon-process.js';
import type { NetnsLab } from './netns.js';
import type { TestPool } from './cluster.js';

const mapMain = fileURLToPath(new URL('../../dist/test/helpers/map-daemon-main.js', import.meta.url));

/** A child process that prints {"event":"listening","port":N} when it is ready. */
export interface Proc {
  pid: number;
  port: number;
  child: ChildProcess;
  exited: Promise<void>;
  stderr(): string;
}

/**
 * Daemon log lines that name a state the product tolerates but should never reach (src/daemon/pg-log.ts: a
 * log holding entries below its tail), each with the log before it: kept for the suite's summary, since a
 * daemon's stderr tail is lost when it is killed and restarted.
 */
export const anomalies: string[] = [];
const ANOMALY = /at or below the tail .* left out/;
const ANOMALIES_MAX = 20;

async function spawnListening(argv: string[], what: string): Promise<Proc> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-20_000);
    if (ANOMALY.test(d.toString()) && anomalies.length < ANOMALIES_MAX) anomalies.push(`${what}:\n${stderr.slice(-6000)}`);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"listening"')) resolve((JSON.parse(line) as { port: number }).port);
    });
    void exited.then(() => reject(new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before listening: ${stderr}`)));
  });
  return { pid: child.pid!, port, child, exited, stderr: () => stderr };
}

const alive = (p: Proc): boolean => p.child.exitCode === null && p.child.signalCode === null;

async function killProc(p: Proc, signal: NodeJS.Signals): Promise<void> {
  if (alive(p)) {
    if (signal === 'SIGKILL') p.child.kill('SIGCONT');
    p.child.kill(signal);
  }
  await p.exited;
}

export interface FaultCluster {
  client: TesseraClient;
  /** The test's own connection to the map service (markUp/markDown go through it). */
  map: MapConnection;
  mapAddress: string;
  hosts: number;
  diskIds: number[];
  hostOf(diskId: number): number;
  diskDir(diskId: number): string;
  /** Disk ids whose daemon process runs (stopped or not). */
  running(): number[];
  kill9(diskId: number): Promise<void>;
  /** Starts the disk's daemon (more `tessera daemon` flags: e.g. --capacity-bytes). */
  start(diskId: number, extraArgs?: string[]): Promise<void>;
  pause(diskId: number): void;
  resume(diskId: number): void;
  markDown(diskIds: number[]): Promise<void>;
  markUp(diskIds: number[]): Promise<void>;
  /** kill -9 the map service process and, downMs later, start it again on the same port and directory. */
  restartMap(downMs?: number): Promise<void>;
  /** A running daemon's store, read directly (the caller closes it). */
  storeOf(diskId: number): StoreClient;
  stderrOf(diskId: number): string;
  stop(): Promise<void>;
}

export async function startFaultCluster(o: {
  hosts: number;
  disksPerHost: number;
  pools: TestPool[];
  lab?: NetnsLab;
  clientTimeoutMs?: number;
  /** The map daemon's failure detection (default: cluster/liveness.ts's; the schedule marks disks itself). */
  liveness?: LivenessOptions;
}): Promise<FaultCluster> {
  if (!existsSync(mapMain)) throw new Error(`${mapMain} is missing: run npm run build first`);
  const io = systemIo();
  const dir = await makeTempDir('faults');
  const clusterId = 'faultcluster';
  const { lab } = o;
  const hostAddress = (h: number): string => (lab ? lab.address(h) : '127.0.0.1');
  const mapHost = lab ? lab.rootAddress : '127.0.0.1';
  let map: ClusterMap = addRack(addSite(initialMap({ clusterId }), { name: 'site0' }), { name: 'rack0', site: 'site0' });
  const diskIds: number[] = [];
  for (let h = 0; h < o.hosts; h++) {
    map = addHost(map, { name: `host${h}`, rack: 'rack0' });
    for (let d = 0; d < o.disksPerHost; d++) {
      const id = h * o.disksPerHost + d;
      diskIds.push(id);
      map = addDisk(map, { id, host: `host${h}`, weight: 1, address: `${hostAddress(h)}:1`, up: false, in: true });
    }
  }
  o.pools.forEach((p, i) => {
    map = createPool(map, { id: i + 1, name: p.name, redundancy: p.redundancy, failureDomain: p.failureDomain, pgCount: p.pgCount });
  });
  const mapDir = `${dir.path}/mapd`;
  // Create the map directory here, then serve it from its own process.
  await (await startMapDaemon({ io, dir: mapDir, host: '127.0.0.1', port: 0, create: map })).close();
  const daemons = new Map<number, Proc>();
  let mapProc: Proc | null = null;
  let mapConn: MapConnection | null = null;
  let client: TesseraClient | null = null;
  const hostOf = (diskId: number): number => Math.floor(diskId / o.disksPerHost);
  const diskDir = (diskId: number): string => `${dir.path}/disk${diskId}`;
  let mapAddress = '';

  // Set by stopAll: a process whose start was under way then (a fault's restart when the run is interrupted) is
  // killed as soon as it listens, not left running after the test.
  let stopped = false;
  const unlessStopped = async (proc: Proc): Promise<Proc> => {
    if (!stopped) return proc;
    await killProc(proc, 'SIGKILL');
    throw new Error('the fault cluster was stopped while a process started');
  };
  const startMap = async (port: number): Promise<void> => {
    mapProc = await unlessStopped(await spawnListening([process.execPath, mapMain, mapDir, mapHost, String(port), ...(o.liveness ? [JSON.stringify(o.liveness)] : [])], 'map service'));
    mapAddress = `${mapHost}:${mapProc.port}`;
  };
  const start = async (diskId: number, extraArgs: string[] = []): Promise<void> => {
    const h = hostOf(diskId);
    const argv = [...(lab ? lab.execPrefix(h) : []), process.execPath, tesseraBin, 'daemon', '--disk', diskDir(diskId), '--listen', `${hostAddress(h)}:0`];
    argv.push('--cluster-id', clusterId, '--disk-id', String(diskId), '--map', mapAddress, ...extraArgs);
    daemons.set(diskId, await unlessStopped(await spawnListening(argv, `daemon ${diskId}`)));
  };
  const stopAll = async (): Promise<void> => {
    stopped = true;
    await client?.close().catch(() => undefined);
    await mapConn?.close().catch(() => undefined);
    await Promise.all([...daemons.values()].map((d) => killProc(d, 'SIGKILL')));
    if (mapProc) await killProc(mapProc, 'SIGKILL');
    await dir.remove();
  };
  try {
    await startMap(0);
    await Promise.all(diskIds.map((id) => start(id)));
    mapConn = connectMapService(io, mapAddress);
    client = await TesseraClient.connect({ io, mapService: mapConn.service, timeoutMs: o.clientTimeoutMs ?? 60_000 });
  } catch (err) {
    await stopAll();
    throw err;
  }
  const setUp = async (ids: number[], up: boolean): Promise<void> => {
    await mapConn!.service.change((m) => ids.reduce((acc, id) => setDiskState(acc, id, { up }), m));
  };
  return {
    client,
    map: mapConn,
    get mapAddress() {
      return mapAddress;
    },
    hosts: o.hosts,
    diskIds,
    hostOf,
    diskDir,
    running: () => [...daemons.keys()],
    async kill9(diskId) {
      const d = daemons.get(diskId);
      if (d) await killProc(d, 'SIGKILL');
      daemons.delete(diskId);
    },
    start,
    pause(diskId) {
      daemons.get(diskId)?.child.kill('SIGSTOP');
    },
    resume(diskId) {
      daemons.get(diskId)?.child.kill('SIGCONT');
    },
    markDown: (ids) => setUp(ids, false),
    markUp: (ids) => setUp(ids, true),
    async restartMap(downMs = 0) {
      const port = mapProc!.port;
      await killProc(mapProc!, 'SIGKILL');
      if (downMs > 0) await new Promise((resolve) => setTimeout(resolve, downMs));
      await startMap(port);
    },
    storeOf(diskId) {
      const d = daemons.get(diskId);
      if (!d) throw new Error(`disk ${diskId} is not running`);
      return new StoreClient(createTcpClient({ io, host: hostAddress(hostOf(diskId)), port: d.port }), { timeoutMs: 20_000 });
    },
    stderrOf: (diskId) => daemons.get(diskId)?.stderr() ?? '',
    stop: stopAll,
  };
}
