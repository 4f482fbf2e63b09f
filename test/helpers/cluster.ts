/**
 * A real cluster for tests: the map service in this process (embedded store,
 * served over TCP), one storage daemon process per disk on its own temporary
 * directory, and a client. Hosts are a failure domain of the map only (one
 * machine). killDisk() is kill -9 plus marking the disk down in the map (what
 * `tessera up` does when a daemon exits); restartDisk() starts it again on its
 * directory. pauseDisk()/resumeDisk() SIGSTOP/SIGCONT a daemon (failure
 * detection notices: cluster/liveness.ts, timings in `liveness`); addDisk()
 * adds a disk to the map and starts its daemon. stop() resumes paused
 * daemons before it stops them.
 */
import { systemIo } from '../../src/io/system.js';
import { TesseraClient } from '../../src/client/client.js';
import { startMapDaemon, type MapDaemon } from '../../cluster/map-daemon.js';
import { addDisk, addHost, addRack, addSite, createPool, initialMap, nextDiskId, setDiskState } from '../../cluster/map-edit.js';
import type { LivenessOptions } from '../../cluster/liveness.js';
import type { ClusterMap, FailureDomain, PoolRedundancy } from '../../cluster/map.js';
import { StoreClient } from '../../src/protocol/store-client.js';
import { createTcpClient } from '../../src/rpc/index.js';
import { makeTempDir } from './tmp.js';
import { killAllDaemons, startDaemonProcess, type DaemonProcess } from './daemon-process.js';

export interface TestPool {
  name: string;
  redundancy: PoolRedundancy;
  failureDomain: FailureDomain;
  pgCount: number;
}

export interface TestCluster {
  io: ReturnType<typeof systemIo>;
  mapd: MapDaemon;
  client: TesseraClient;
  daemons: Map<number, DaemonProcess>;
  diskIds: number[];
  killDisk(diskId: number): Promise<void>;
  restartDisk(diskId: number): Promise<void>;
  /** SIGSTOP / SIGCONT the disk's daemon process (nothing is marked in the map: failure detection does that). */
  pauseDisk(diskId: number): void;
  resumeDisk(diskId: number): void;
  /** Adds a disk (weight 1 unless given) to a host of the map and starts its daemon; resolves with its id. */
  addDisk(o: { host: string; weight?: number }): Promise<number>;
  /** The store of a running daemon, read directly (its store protocol; the caller closes it). */
  storeOf(diskId: number): StoreClient;
  /** The disk's directory (its segment files are under segments/). */
  diskDir(diskId: number): string;
  /** Resolves when every pg of every pool is active on its primary (polls with reads). */
  stop(): Promise<void>;
}

export async function startTestCluster(o: {
  hosts: number;
  disksPerHost: number;
  pools: TestPool[];
  clusterId?: string;
  /** The map daemon's failure detection and full ratios (defaults: src/lib/limits.ts). */
  liveness?: LivenessOptions;
  /** Store capacity of every daemon (--capacity-bytes); default the file system's. */
  capacityBytes?: number;
  /** More `tessera daemon` flags for every daemon (e.g. the scrub schedule). */
  daemonArgs?: string[];
}): Promise<TestCluster> {
  const io = systemIo();
  const dir = await makeTempDir('cluster');
  const clusterId = o.clusterId ?? 'testcluster';
  let map: ClusterMap = addRack(addSite(initialMap({ clusterId }), { name: 'site0' }), { name: 'rack0', site: 'site0' });
  const diskIds: number[] = [];
  for (let h = 0; h < o.hosts; h++) {
    map = addHost(map, { name: `host${h}`, rack: 'rack0' });
    for (let d = 0; d < o.disksPerHost; d++) {
      const id = h * o.disksPerHost + d;
      diskIds.push(id);
      map = addDisk(map, { id, host: `host${h}`, weight: 1, address: '127.0.0.1:1', up: false, in: true });
    }
  }
  o.pools.forEach((p, i) => {
    map = createPool(map, { id: i + 1, name: p.name, redundancy: p.redundancy, failureDomain: p.failureDomain, pgCount: p.pgCount });
  });
  const mapd = await startMapDaemon({ io, dir: `${dir.path}/mapd`, host: '127.0.0.1', port: 0, create: map, ...(o.liveness ? { liveness: o.liveness } : {}) });
  const mapAddress = `127.0.0.1:${mapd.port}`;
  const daemons = new Map<number, DaemonProcess>();
  const start = async (diskId: number): Promise<void> => {
    daemons.set(diskId, await startDaemonProcess({ diskPath: `${dir.path}/disk${diskId}`, clusterId, diskId, map: mapAddress, ...(o.capacityBytes !== undefined ? { capacityBytes: o.capacityBytes } : {}), ...(o.daemonArgs ? { extraArgs: o.daemonArgs } : {}) }));
  };
  const paused = new Set<number>();
  const signal = (diskId: number, sig: 'SIGSTOP' | 'SIGCONT'): void => {
    const d = daemons.get(diskId);
    if (!d) throw new Error(`disk ${diskId} is not running`);
    process.kill(d.pid, sig);
  };
  try {
    await Promise.all(diskIds.map(start));
    const client = await TesseraClient.connect({ io, mapService: mapd.service, timeoutMs: 60_000 });
    return {
      io,
      mapd,
      client,
      daemons,
      diskIds,
      async killDisk(diskId) {
        paused.delete(diskId);
        await daemons.get(diskId)?.kill();
        daemons.delete(diskId);
        await mapd.service.change((m) => setDiskState(m, diskId, { up: false }));
      },
      restartDisk: start,
      pauseDisk(diskId) {
        signal(diskId, 'SIGSTOP');
        paused.add(diskId);
      },
      resumeDisk(diskId) {
        signal(diskId, 'SIGCONT');
        paused.delete(diskId);
      },
      async addDisk(a) {
        let id = -1;
        await mapd.service.change((m) => {
          id = nextDiskId(m);
          return addDisk(m, { id, host: a.host, weight: a.weight ?? 1, address: '127.0.0.1:1', up: false, in: true });
        });
        diskIds.push(id);
        await start(id);
        return id;
      },
      diskDir: (diskId) => `${dir.path}/disk${diskId}`,
      storeOf(diskId) {
        const d = daemons.get(diskId);
        if (!d) throw new Error(`disk ${diskId} is not running`);
        return new StoreClient(createTcpClient({ io, host: '127.0.0.1', port: d.port }), { timeoutMs: 60_000 });
      },
      async stop() {
        for (const id of paused) {
          const d = daemons.get(id);
          if (d) process.kill(d.pid, 'SIGCONT');
        }
        paused.clear();
        if (process.env.TESSERA_DEBUG) for (const [id, d] of daemons) console.log(`--- disk ${id} stderr ---\n${d.stderr()}`);
        await client.close();
        await Promise.all([...daemons.values()].map((d) => d.stop()));
        await killAllDaemons();
        await mapd.close();
        await dir.remove();
      },
    };
  } catch (err) {
    await killAllDaemons();
    await mapd.close();
    await dir.remove();
    throw err;
  }
}
