/**
 * `tessera disk ls|add|out|in` and `tessera host add`: disks and hosts in
 * the cluster map (compare-and-set changes through the map service).
 *
 * disk out / in: an out disk gets no data mapped to it; placement remaps its
 * pgs at once and peering and backfill move the data (src/daemon/peering.ts).
 *
 * disk add (the all-in-one cluster of --data DIR; `tessera up` must be
 * running there; a disk elsewhere: --address, see diskAddRemote below):
 *   1. adds the disk to the map, down and out (no data maps to it yet), with
 *      the next disk id and the next free port;
 *   2. creates and initialises its store directory (DIR/disks/diskN);
 *   3. adds it to DIR/cluster.json; the supervisor of `tessera up` reads
 *      cluster.json every second and starts a daemon for every disk it does
 *      not run yet (src/cli/up.ts);
 *   4. waits until that daemon has marked the disk up, then marks it in, and
 *      data starts moving to it.
 * If no daemon comes up in time the disk stays out and the command says so
 * (exit 1); `tessera disk in N` later finishes the job.
 */
import { join } from 'node:path';
import type { Io } from '../io/io.js';
import { TesseraError } from '../lib/errors.js';
import { StoreClient } from '../protocol/store-client.js';
import { ObjectStore } from '../store/index.js';
import { addDisk, addHost, nextDiskId, setDiskState } from '../../cluster/map-edit.js';
import type { ClusterMap, DiskInfo } from '../../cluster/map.js';
import { layoutPath, mapPortsOf, s3MetricsPortOf, writeJson, type ClusterLayout } from './cluster-files.js';
import { askUpDisks, CliError, dataDirOf, readLayout, table, withCluster, type TargetOptions } from './target.js';

type Out = (text: string) => void;

const SPACE_TIMEOUT_MS = 3000;
const DISK_UP_WAIT_MS = 60_000;
const DISK_UP_POLL_MS = 250;
/** Metrics port = service port + this, unless the layout says otherwise (docs/operations.md). */
export const METRICS_PORT_OFFSET_DEFAULT = 1000;

export interface DiskSpace {
  usedBytes: number;
  freeBytes: number;
  objects: number;
}

/** Each up disk's space as its daemon reports it (statfs over the store protocol); an error message for those that do not answer. */
export async function diskSpaces(io: Io, map: ClusterMap): Promise<Map<number, DiskSpace | string>> {
  const answers = await askUpDisks(io, map, async (rpc): Promise<DiskSpace> => {
    const s = await new StoreClient(rpc, { timeoutMs: SPACE_TIMEOUT_MS }).statfs();
    return { usedBytes: s.usedBytes, freeBytes: s.freeBytes, objects: s.objects };
  });
  return new Map([...answers].map(([id, a]) => [id, a instanceof Error ? a.message : a]));
}

const mib = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;

export async function diskList(t: TargetOptions, json: boolean, out: Out): Promise<void> {
  await withCluster(t, async (c) => {
    const map = await c.current();
    const spaces = await diskSpaces(c.io, map);
    const rows = map.disks.map((d) => {
      const space = spaces.get(d.id);
      return { d, space: typeof space === 'object' ? space : undefined, error: typeof space === 'string' ? space : undefined };
    });
    if (json) {
      const docs = rows.map(({ d, space, error }) => ({ id: d.id, host: d.host, address: d.address, weight: d.weight, up: d.up, in: d.in, ...(space ?? {}), ...(error !== undefined ? { error } : {}) }));
      return out(`${JSON.stringify(docs)}\n`);
    }
    out(
      table([
        ['ID', 'HOST', 'ADDRESS', 'WEIGHT', 'STATE', 'OBJECTS', 'USED', 'FREE'],
        ...rows.map(({ d, space, error }) => [
          String(d.id),
          d.host,
          d.address,
          String(d.weight),
          `${d.up ? 'up' : 'down'},${d.in ? 'in' : 'out'}${error !== undefined ? ',unreachable' : ''}`,
          space ? String(space.objects) : '-',
          space ? mib(space.usedBytes) : '-',
          space ? mib(space.freeBytes) : '-',
        ]),
      ]),
    );
  });
}

export async function diskSetIn(t: TargetOptions, o: { diskId: number; in: boolean }, out: Out): Promise<void> {
  await withCluster(t, async (c) => {
    const before = (await c.current()).disks.find((d) => d.id === o.diskId);
    if (!before) throw new CliError(`no disk ${o.diskId}`);
    const next = await c.map.service.change((m) => setDiskState(m, o.diskId, { in: o.in }));
    const word = o.in ? 'in' : 'out';
    out(before.in === o.in ? `disk ${o.diskId} is already ${word} (map epoch ${next.epoch})\n` : `disk ${o.diskId} marked ${word} (map epoch ${next.epoch}); its pgs ${o.in ? 'map to it again' : 'move to other disks'}\n`);
  });
}

export async function hostAdd(t: TargetOptions, o: { name: string; rack?: string }, out: Out): Promise<void> {
  await withCluster(t, async (c) => {
    const map = await c.current();
    const rack = o.rack ?? (map.racks.length === 1 ? map.racks[0]!.name : undefined);
    if (rack === undefined) throw new CliError(`the map has ${map.racks.length} racks: say which with --rack`);
    const next = await c.map.service.change((m) => addHost(m, { name: o.name, rack }));
    out(`host ${o.name} added to rack ${rack} (map epoch ${next.epoch})\n`);
  });
}

/** Ports the layout already uses (services and their metrics). */
function usedPorts(layout: ClusterLayout): Set<number> {
  const ports = new Set<number>([...mapPortsOf(layout), layout.s3Port ?? 9000]);
  if (layout.mapMetricsPort !== undefined) ports.add(layout.mapMetricsPort);
  ports.add(s3MetricsPortOf(layout, METRICS_PORT_OFFSET_DEFAULT));
  for (const d of layout.disks) {
    ports.add(d.port);
    if (d.metricsPort !== undefined) ports.add(d.metricsPort);
  }
  return ports;
}

/** The next port after the highest disk port whose metrics port is free as well. */
function nextDiskPorts(layout: ClusterLayout): { port: number; metricsPort: number } {
  const used = usedPorts(layout);
  const offset = layout.metricsPortOffset ?? METRICS_PORT_OFFSET_DEFAULT;
  let port = Math.max(...layout.disks.map((d) => d.port)) + 1;
  while (used.has(port) || used.has(port + offset)) port++;
  if (port + offset > 65535) throw new CliError('no free port left for a new disk');
  return { port, metricsPort: port + offset };
}

async function waitForUp(c: { current(): Promise<ClusterMap>; io: Io }, diskId: number): Promise<DiskInfo | null> {
  const deadline = c.io.clock.monotonicMs() + DISK_UP_WAIT_MS;
  for (;;) {
    const disk = (await c.current()).disks.find((d) => d.id === diskId);
    if (disk?.up) return disk;
    if (c.io.clock.monotonicMs() > deadline) return null;
    await c.io.clock.sleep(DISK_UP_POLL_MS);
  }
}

export interface DiskAddOptions {
  host: string;
  weight: number;
  /** "host:port" its daemon will listen on: a disk on another machine (with --map); the all-in-one cluster picks the port itself. */
  address?: string;
  /** With address: wait (up to DISK_UP_WAIT_MS) for its daemon to mark it up, then mark it in. */
  wait?: boolean;
}

export async function diskAdd(t: TargetOptions, o: DiskAddOptions, out: Out): Promise<number> {
  if (o.address !== undefined) return diskAddRemote(t, { ...o, address: o.address }, out);
  if (o.wait === true) throw new CliError('--wait goes with --address (the all-in-one cluster always waits for the daemon it starts)');
  if (t.map !== undefined) throw new CliError('disk add --map needs --address HOST:PORT, where the new disk\'s daemon will listen (without --address it adds to the all-in-one cluster of --data DIR, which starts the daemon itself)');
  const dataDir = dataDirOf(t);
  const layout = await readLayout(t.io, dataDir);
  return withCluster(t, async (c) => {
    const map = await c.current();
    if (!map.hosts.some((h) => h.name === o.host)) throw new CliError(`no host ${o.host} (add it first: tessera host add ${o.host})`);
    const diskId = Math.max(nextDiskId(map), ...layout.disks.map((d) => d.diskId + 1));
    const { port, metricsPort } = nextDiskPorts(layout);
    const listenHost = '127.0.0.1';
    // 1. In the map, down and out: nothing maps to it until its daemon runs.
    await c.map.service.change((m) => addDisk(m, { id: diskId, host: o.host, weight: o.weight, address: `${listenHost}:${port}`, up: false, in: false }));
    // 2. Its store.
    const path = join(dataDir, 'disks', `disk${diskId}`);
    const identity = { clusterId: layout.clusterId, diskId };
    const store = await ObjectStore.open({ io: t.io, path, create: identity, expect: identity });
    await store.close();
    // 3. In cluster.json (re-read: the layout may have changed meanwhile); `tessera up` starts its daemon.
    const latest = await readLayout(t.io, dataDir);
    if (latest.disks.some((d) => d.diskId === diskId)) throw new TesseraError('Conflict', `disk ${diskId} appeared in ${layoutPath(dataDir)} meanwhile`);
    await writeJson(t.io, layoutPath(dataDir), { ...latest, disks: [...latest.disks, { diskId, host: o.host, path, listenHost, port, metricsPort }] });
    out(`disk ${diskId} added on host ${o.host} (${path}, daemon on ${listenHost}:${port}, metrics on ${listenHost}:${metricsPort}); waiting for its daemon\n`);
    // 4. Up, then in.
    if (!(await waitForUp(c, diskId))) {
      throw new CliError(`disk ${diskId} is in the map (out) and in ${layoutPath(dataDir)}, but no daemon marked it up within ${DISK_UP_WAIT_MS / 1000} s: is \`tessera up --data ${t.dataDir ?? 'tessera-data'}\` running? Once it is up: tessera disk in ${diskId}`);
    }
    const next = await c.map.service.change((m) => setDiskState(m, diskId, { in: true }));
    out(`disk ${diskId} is up and in (map epoch ${next.epoch}); data moves to it\n`);
    return diskId;
  });
}

/**
 * disk add --address, for a disk on another machine (or any cluster not run
 * by `tessera up` here): the command cannot create the directory or start
 * the daemon, so it
 *   1. adds the disk to the map with the next id, down and out, at ADDRESS
 *      (refused when another disk has that address);
 *   2. prints what to run on the disk's machine (its daemon initialises the
 *      directory on first start with the cluster id and disk id given);
 *   3. with --wait, waits for that daemon to mark the disk up, then marks it
 *      in; without, the operator runs `tessera disk in N` once it is up.
 */
async function diskAddRemote(t: TargetOptions, o: DiskAddOptions & { address: string }, out: Out): Promise<number> {
  return withCluster(t, async (c) => {
    const map = await c.current();
    if (!map.hosts.some((h) => h.name === o.host)) throw new CliError(`no host ${o.host} (add it first: tessera host add ${o.host})`);
    const taken = map.disks.find((d) => d.address === o.address);
    if (taken) throw new CliError(`disk ${taken.id} already has address ${o.address}`);
    let diskId = -1;
    const next = await c.map.service.change((m) => {
      diskId = nextDiskId(m);
      if (m.disks.some((d) => d.address === o.address)) throw new TesseraError('Conflict', `another disk took address ${o.address} meanwhile`);
      return addDisk(m, { id: diskId, host: o.host, weight: o.weight, address: o.address, up: false, in: false });
    });
    const mapArg = t.map ?? c.address;
    out(`disk ${diskId} added on host ${o.host} at ${o.address}, down and out (map epoch ${next.epoch})\n`);
    out(`on its machine run: tessera daemon --disk DIR --listen ${o.address} --cluster-id ${next.clusterId} --disk-id ${diskId} --map ${mapArg}\n`);
    if (o.wait !== true) {
      out(`once it is up: tessera disk in ${diskId} --map ${mapArg}\n`);
      return diskId;
    }
    if (!(await waitForUp(c, diskId))) {
      throw new CliError(`disk ${diskId} is in the map (down, out), but no daemon marked it up within ${DISK_UP_WAIT_MS / 1000} s; once its daemon runs: tessera disk in ${diskId} --map ${mapArg}`);
    }
    const inMap = await c.map.service.change((m) => setDiskState(m, diskId, { in: true }));
    out(`disk ${diskId} is up and in (map epoch ${inMap.epoch}); data moves to it\n`);
    return diskId;
  });
}
