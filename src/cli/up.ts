/**
 * `tessera up`: the all-in-one cluster on local directories, serving S3. This
 * process runs the map service (embedded, port --map-port) and supervises one
 * storage daemon process per disk and one S3 gateway process (`tessera s3`,
 * 127.0.0.1:--s3-port, default 9000): a child that exits is restarted with
 * backoff (a daemon is first marked down in the map, at once). The first run
 * creates the layout (hosts x disks, failure domains in the map only: it is
 * one machine), two pools: "rep" (replicated, size 3, min_size 2, one copy per
 * host) and "ec" (erasure-coded 4+2, one shard per disk), and an S3 admin
 * user with generated keys, which go to the owner-only client file
 * (client.json) before they go to the cluster; every run makes sure that user
 * exists, so resuming keeps the same keys. The secret is printed on the first
 * run only. Running it again on the same directory resumes the cluster with
 * its data. SIGINT/SIGTERM stop the gateway, then every daemon (SIGTERM each,
 * by PID; SIGKILL after a timeout), then the map service. With `etcd` (--etcd
 * URL[,URL...]) the map and pg history live in etcd instead of the data
 * directory (cluster/map-store-etcd.ts); give it on every run. Then the map
 * service is `mapDaemons` (default 3) `tessera mapd` processes on consecutive
 * ports from --map-port, supervised like the daemons: every daemon, the
 * gateway, this process and the client file get all their addresses, and
 * fail over between them (src/rpc/failover.ts), so one map daemon's death
 * stops nothing. Without etcd the embedded store has one owner: one map
 * daemon, in this process.
 *
 * Metrics: every daemon serves Prometheus metrics on its port +
 * --metrics-port-offset (default 1000), the S3 gateway on the S3 port + the
 * offset (`tessera s3 --metrics`; with --s3-port 0 any free port, kept across
 * its restarts), and this process serves the map service's on the map port +
 * the offset; the ports are kept in cluster.json (layouts written before a
 * port existed get it derived and written on the next run). Disks added
 * later (`tessera disk add` appends them to cluster.json) are noticed by
 * reading cluster.json every second: a disk this process does not supervise
 * yet gets its daemon started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { resolve as resolvePath, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Io } from '../io/io.js';
import { TesseraClient } from '../client/client.js';
import { UserStore } from '../../gateways/s3/meta/users.js';
import { connectMapService, startMapDaemon } from '../../cluster/map-daemon.js';
import { addDisk, addHost, addRack, addSite, createPool, initialMap, setDiskState } from '../../cluster/map-edit.js';
import type { ClusterMap } from '../../cluster/map.js';
import type { MapService } from '../../cluster/map-service.js';
import { EtcdMapStore } from '../../cluster/map-store-etcd.js';
import type { LivenessOptions } from '../../cluster/liveness.js';
import { clientPath, layoutPath, mapPortsOf, readJson, s3MetricsPortOf, S3_PORT_DEFAULT, writeJson, type ClientFile, type ClientFileS3, type ClusterLayout } from './cluster-files.js';
import { ensureS3User, generateCredentials } from './user.js';
import { Registry } from 'prom-client';
import { MapMetrics } from '../metrics/metrics.js';
import { serveMetrics, type MetricsServer } from '../metrics/http.js';
import { METRICS_PORT_OFFSET_DEFAULT } from './disk-admin.js';
import { failoverServersMax } from '../rpc/failover.js';

const tesseraBin = fileURLToPath(new URL('../bin/tessera.js', import.meta.url));
const STOP_TIMEOUT_MS = 15_000;
const RESTART_BACKOFF_MS = [500, 1000, 2000, 5000, 10_000];
/**
 * The gateway's V8 heap sizing (docs/s3-api.md, "Garbage collection in the
 * gateway"). Semi-spaces of 64 MiB instead of 16: a small request allocates
 * tens of KiB of short-lived objects (headers, SigV4 strings, the entry's
 * JSON and base64, promises, rpc frames), and scavenges were 12.7% of the
 * gateway's CPU samples under 4 KiB requests. An initial old generation of
 * 256 MiB: the bodies of large requests are off-heap buffers (4 MiB pieces,
 * socket chunks), and with V8's default limits their churn started a full
 * mark-compact every few 4 MiB GETs (--trace-gc: "external memory pressure",
 * "GC in old space requested"; 48.6% of the samples in GC); with this, a
 * third as many (measured, 73 against 24 under the same GETs).
 * Costs RSS: garbage buffers may wait for the limit before they are freed.
 * A gateway started by hand needs them on node's command line
 * (--initial-heap-size is not allowed in NODE_OPTIONS).
 */
const S3_NODE_ARGS = ['--max-semi-space-size=64', '--initial-heap-size=256'];
const S3_REGION = 'us-east-1';
const META_POOL = 'rep';
const DATA_POOL = 'rep';
const ADMIN_NAME = 'admin';
/** Map daemons `up --etcd` runs unless told (--map-daemons): with one dead, or being restarted, two still serve. */
const MAP_DAEMONS_ETCD_DEFAULT = 3;
/** How long the first writes (the admin user) may wait for the replicated pool to become active. */
const BOOTSTRAP_TIMEOUT_MS = 120_000;
/** How often cluster.json is read for disks added by `tessera disk add`. */
const LAYOUT_POLL_MS = 1000;

export interface UpOptions {
  io: Io;
  dataDir: string;
  hosts: number;
  disksPerHost: number;
  basePort: number;
  mapPort: number;
  pgCount: number;
  /** Port of the S3 gateway: given, else the layout's, else 9000 (0: any free port). */
  s3Port?: number;
  /** etcd client URLs: keep the map in etcd rather than in dataDir/map (the default). */
  etcd?: string[];
  /** Map daemon processes on etcd (ports mapPort, mapPort + 1, ...): default the layout's count, else 3; without etcd only 1. */
  mapDaemons?: number;
  /** Metrics port = service port + this (default: the layout's, else 1000). */
  metricsPortOffset?: number;
  /** Domains of the S3 gateway's virtual-host-style addressing (`tessera s3 --domain`); default localhost. */
  s3Domains?: string[];
  /** GET responses one S3 client may have in flight (`tessera s3 --gets-per-client-max`; default limits.s3GetsInflightPerClientMax). */
  s3GetsPerClientMax?: number;
  /** Index shards of new buckets (`tessera s3 --index-shards`); default 8. */
  s3IndexShards?: number;
  /** Failure detection and full ratios of the map daemon (cluster/liveness.ts; defaults in src/lib/limits.ts). */
  liveness?: LivenessOptions;
  /** More `tessera daemon` flags for every daemon (recovery and scrub pace). */
  daemonArgs?: string[];
}

/** A child process `up` keeps running: restarted with backoff when it exits. */
interface Supervised {
  label: string;
  /** Arguments after the tessera entry point; the listen address is fixed once the first start bound it. */
  args: () => string[];
  child: ChildProcess | null;
  restarts: number;
  port: number | null;
  /** Runs when the child exits while `up` is not stopping (before the restart). */
  onCrash?: () => void;
  /** Node flags of this child (before TESSERA_CHILD_NODE_ARGS, which can override them). */
  nodeArgs?: readonly string[];
  /** The metrics port its listening line reported (null until then, or if it serves none). */
  metricsPort?: number | null;
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
  if (existing) {
    // Layouts written before metrics existed get their metrics ports now.
    if (existing.mapMetricsPort !== undefined && existing.s3MetricsPort !== undefined && existing.disks.every((d) => d.metricsPort !== undefined)) return { layout: existing, created: false };
    const offset = existing.metricsPortOffset ?? o.metricsPortOffset ?? METRICS_PORT_OFFSET_DEFAULT;
    const layout: ClusterLayout = {
      ...existing,
      metricsPortOffset: offset,
      mapMetricsPort: existing.mapMetricsPort ?? existing.mapPort + offset,
      s3MetricsPort: s3MetricsPortOf({ ...existing, metricsPortOffset: offset }, offset),
      disks: existing.disks.map((d) => ({ ...d, metricsPort: d.metricsPort ?? d.port + offset })),
    };
    await writeJson(o.io, layoutPath(dataDir), layout);
    return { layout, created: false };
  }
  const offset = o.metricsPortOffset ?? METRICS_PORT_OFFSET_DEFAULT;
  const disks: ClusterLayout['disks'] = [];
  for (let h = 0; h < o.hosts; h++) {
    for (let d = 0; d < o.disksPerHost; d++) {
      const diskId = h * o.disksPerHost + d;
      disks.push({ diskId, host: `host${h}`, path: join(dataDir, 'disks', `disk${diskId}`), listenHost: '127.0.0.1', port: o.basePort + diskId, metricsPort: o.basePort + diskId + offset });
    }
  }
  const s3Port = o.s3Port ?? S3_PORT_DEFAULT;
  const layout: ClusterLayout = {
    clusterId: o.io.random.bytes(8).toString('hex'),
    mapPort: o.mapPort,
    s3Port,
    metricsPortOffset: offset,
    mapMetricsPort: o.mapPort + offset,
    s3MetricsPort: s3MetricsPortOf({ clusterId: '', mapPort: o.mapPort, s3Port, metricsPortOffset: offset, disks: [] }, offset),
    disks,
  };
  await writeJson(o.io, layoutPath(dataDir), layout);
  return { layout, created: true };
}

/** Starts the child; resolves with the port from its {"event":"listening"} line. */
function startChild(s: Supervised, onExit: (s: Supervised, code: number | null) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    // TESSERA_CHILD_NODE_ARGS: node flags for every child (e.g. "--cpu-prof --cpu-prof-dir=DIR" to profile a cluster).
    const nodeArgs = [...(s.nodeArgs ?? []), ...(process.env.TESSERA_CHILD_NODE_ARGS ?? '').split(' ').filter(Boolean)];
    // stdin: a pipe only this process holds; when it closes (this process exited, even by kill -9) the child stops
    // (src/bin/tessera.ts): no orphan keeps a port or a disk.
    const child = spawn(process.execPath, [...nodeArgs, tesseraBin, ...s.args()], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, TESSERA_EXIT_WITH_PARENT: '1' } });
    s.child = child;
    let listening = false;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (listening || !line.includes('"listening"')) return;
      listening = true;
      const listened = JSON.parse(line) as { port: number; metricsPort?: number };
      s.port = listened.port;
      if (listened.metricsPort !== undefined) s.metricsPort = listened.metricsPort;
      resolve(s.port);
    });
    child.on('exit', (code) => {
      s.child = null;
      if (!listening) reject(new Error(`${s.label} exited with ${code} before listening`));
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

/** The S3 admin user: the client file's, else new credentials (written to the client file before the cluster). */
async function adminUser(o: UpOptions, service: MapService, file: ClientFile): Promise<{ s3: ClientFileS3; created: boolean }> {
  const previous = (await readJson<ClientFile>(o.io, clientPath(resolvePath(o.dataDir))))?.s3;
  const s3: ClientFileS3 = previous ?? { endpoint: '', region: S3_REGION, metaPool: META_POOL, dataPool: DATA_POOL, admin: generateCredentials(o.io, ADMIN_NAME) };
  if (!previous) await writeJson(o.io, clientPath(resolvePath(o.dataDir)), { ...file, s3 });
  const client = await TesseraClient.connect({ io: o.io, mapService: service, timeoutMs: BOOTSTRAP_TIMEOUT_MS });
  try {
    const outcome = await ensureS3User(new UserStore(o.io, client, s3.metaPool, 0), s3.admin);
    return { s3, created: !previous || outcome === 'created' };
  } finally {
    await client.close();
  }
}

/**
 * The map daemons' ports: --map-daemons (else the layout's count on etcd, else 3) consecutive from the layout's
 * map port; one without etcd. Refuses a count the failover client cannot take and ports the layout gives others.
 */
function mapPortsFor(o: UpOptions, layout: ClusterLayout): number[] {
  const count = o.mapDaemons ?? (o.etcd ? (layout.mapPorts?.length ?? MAP_DAEMONS_ETCD_DEFAULT) : 1);
  if (!Number.isInteger(count) || count < 1 || count > failoverServersMax) throw new Error(`--map-daemons wants 1 to ${failoverServersMax}, got ${count}`);
  if (!o.etcd && count !== 1) throw new Error(`--map-daemons ${count} needs --etcd: the map in the data directory has a single owner`);
  const ports = Array.from({ length: count }, (_, i) => (layout.mapPort === 0 ? 0 : layout.mapPort + i));
  const others = new Set<number>([layout.s3Port ?? S3_PORT_DEFAULT, s3MetricsPortOf(layout, METRICS_PORT_OFFSET_DEFAULT), ...(layout.mapMetricsPort !== undefined ? [layout.mapMetricsPort] : [])]);
  for (const d of layout.disks) [d.port, d.metricsPort].forEach((p) => p !== undefined && others.add(p));
  const clash = ports.find((p) => p !== 0 && others.has(p));
  if (clash !== undefined) throw new Error(`map daemon port ${clash} is another service's in ${layoutPath(resolvePath(o.dataDir))}: give fewer --map-daemons`);
  return ports;
}

/** tessera mapd flags for the liveness options up was given (every map daemon of a cluster must use the same). */
function livenessArgs(l: LivenessOptions | undefined): string[] {
  const flags: Array<[string, number | undefined]> = [
    ['--down-grace-ms', l?.downGraceMs],
    ['--out-interval-ms', l?.outIntervalMs],
    ['--lease-ms', l?.leaseMs],
    ['--near-full-ratio', l?.nearFullRatio],
    ['--full-ratio', l?.fullRatio],
    ['--peer-grace-ms', l?.peerGraceMs],
    ['--min-down-reporters', l?.minDownReporters],
  ];
  return flags.flatMap(([flag, v]) => (v === undefined ? [] : [flag, String(v)]));
}

/**
 * The map service as `up` runs it: in this process on the embedded store (dataDir/map), or, with etcd, one
 * `tessera mapd` process per port, supervised (restarted with backoff, on the same port), which this process
 * reaches like any client: through all of them (failover).
 */
interface MapRole {
  service: MapService;
  /** "host:port" of every map daemon, in failover order. */
  addresses(): string[];
  /** The map daemon processes (etcd; none when the map daemon runs in this process). */
  children: Supervised[];
  /** Stops the map daemon processes (SIGTERM each, by PID: a judge resigns) or the one in this process. */
  close(): Promise<void>;
}

async function startEmbeddedMap(o: UpOptions, layout: ClusterLayout, created: boolean): Promise<MapRole> {
  const mapd = await startMapDaemon({
    io: o.io,
    dir: resolvePath(o.dataDir),
    host: '127.0.0.1',
    port: layout.mapPort,
    ...(created ? { create: initialClusterMap(layout, o) } : {}),
    ...(o.liveness ? { liveness: o.liveness } : {}),
  });
  return { service: mapd.service, addresses: () => [`127.0.0.1:${mapd.port}`], children: [], close: () => mapd.close() };
}

interface EtcdMapOptions {
  etcd: string[];
  layout: ClusterLayout;
  created: boolean;
  ports: number[];
  onExit: (s: Supervised, code: number | null) => void;
  /** Called before the started map daemons are stopped because another failed to start (no restarts then). */
  onAbort: () => void;
}

async function startEtcdMap(o: UpOptions, { etcd, layout, created, ports, onExit, onAbort }: EtcdMapOptions): Promise<MapRole> {
  // The first run writes the first map into etcd (kept if etcd holds one already); the map daemons only serve it.
  if (created) await (await EtcdMapStore.open({ io: o.io, endpoints: etcd, clusterId: layout.clusterId, create: initialClusterMap(layout, o) })).close();
  const children: Supervised[] = ports.map((port, i) => {
    const s: Supervised = {
      label: `map daemon ${i}`,
      // A restarted map daemon keeps the port its first start bound (the others and the client file name it).
      args: () => ['mapd', '--etcd', etcd.join(','), '--cluster-id', layout.clusterId, '--listen', `127.0.0.1:${s.port ?? port}`, ...livenessArgs(o.liveness)],
      child: null,
      restarts: 0,
      port: null,
    };
    return s;
  });
  const results = await Promise.allSettled(children.map((s) => startChild(s, onExit)));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const stopChildren = (): Promise<unknown> => Promise.all(children.map((s) => stopChild(o.io, s.child)));
  if (failed) {
    onAbort();
    await stopChildren();
    throw failed.reason;
  }
  const addresses = children.map((s) => `127.0.0.1:${s.port}`);
  const conn = connectMapService(o.io, addresses.join(','), {
    onSwitch: (from, to, cause) => process.stderr.write(`tessera up: map daemon ${from} unreachable (${cause.code}: ${cause.message}): its own map calls now go to ${to}\n`),
  });
  return {
    service: conn.service,
    addresses: () => addresses,
    children,
    async close() {
      await conn.close();
      await stopChildren();
    },
  };
}

function summary(o: UpOptions, layout: ClusterLayout, mapRole: MapRole, map: ClusterMap, daemons: Supervised[], gateway: Supervised, s3: ClientFileS3, adminCreated: boolean): string {
  const dataDir = resolvePath(o.dataDir);
  const { admin } = s3;
  const mapLines = o.etcd
    ? [
        `  map in etcd (${o.etcd.join(',')}), served by ${mapRole.children.length} map daemons (clients fail over between them):`,
        ...mapRole.children.map((s, i) => `    map daemon ${i} on ${mapRole.addresses()[i]}, pid ${s.child?.pid}`),
      ]
    : [`  map service on ${mapRole.addresses()[0]}`];
  return [
    `tessera: cluster ${layout.clusterId} up in ${dataDir} (map epoch ${map.epoch})`,
    ...mapLines,
    `  map service metrics: http://127.0.0.1:${layout.mapMetricsPort}/metrics`,
    ...layout.disks.map((d, i) => `  disk ${d.diskId} (${d.host}): storage daemon on ${d.listenHost}:${d.port}, pid ${daemons[i]?.child?.pid}, metrics http://${d.listenHost}:${d.metricsPort}/metrics`),
    ...map.pools.map((p) => `  pool ${p.name}: ${p.redundancy.type === 'replicated' ? `replicated, size ${p.redundancy.size}` : `erasure-coded ${p.redundancy.dataShards}+${p.redundancy.parityShards}`}, ${p.pgCount} pgs, one per ${p.failureDomain}`),
    `  S3 endpoint: ${s3.endpoint} (gateway pid ${gateway.child?.pid}; region ${s3.region}, path-style${o.s3Domains?.length ? ` or virtual-host-style under ${o.s3Domains.join(', ')}` : ''}; users, buckets and indexes in pool ${s3.metaPool}, new buckets' data in pool ${s3.dataPool})`,
    `  S3 gateway metrics: http://127.0.0.1:${gateway.metricsPort}/metrics`,
    ...(adminCreated
      ? [`  S3 admin user "${admin.displayName}" created; its keys (shown only now, and kept in the client file):`, `    AWS_ACCESS_KEY_ID=${admin.accessKeyId}`, `    AWS_SECRET_ACCESS_KEY=${admin.secretAccessKey}`]
      : [`  S3 admin user "${admin.displayName}": access key ${admin.accessKeyId} (secret key in the client file)`]),
    `  client file: ${clientPath(dataDir)}`,
    'Ctrl-C stops everything.',
    '',
  ].join('\n');
}

export async function runUp(o: UpOptions): Promise<number> {
  // Listen from the start: a signal during start-up stops everything once it is up, not this process alone.
  const signalled = new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  let { layout, created } = await loadOrCreateLayout(o);
  const dataDir = resolvePath(o.dataDir);
  const mapPorts = mapPortsFor(o, layout);
  if (mapPortsOf(layout).join() !== mapPorts.join()) {
    layout = { ...layout, mapPorts };
    await writeJson(o.io, layoutPath(dataDir), layout);
  }
  let stopping = false;
  const onExit = (s: Supervised, code: number | null): void => {
    if (stopping) return;
    s.onCrash?.();
    const delayMs = RESTART_BACKOFF_MS[Math.min(s.restarts, RESTART_BACKOFF_MS.length - 1)]!;
    s.restarts++;
    process.stderr.write(`tessera up: ${s.label} exited (${code})${s.onCrash ? '; marked down' : ''}, restarting in ${delayMs} ms\n`);
    o.io.clock.setTimeout(() => {
      if (stopping) return;
      startChild(s, onExit).then(
        () => process.stdout.write(`tessera up: ${s.label} restarted, pid ${s.child?.pid}\n`),
        (err: Error) => process.stderr.write(`tessera up: ${err.message}\n`),
      );
    }, delayMs);
  };
  const mapRole: MapRole = o.etcd
    ? await startEtcdMap(o, { etcd: o.etcd, layout, created, ports: mapPorts, onExit, onAbort: () => (stopping = true) })
    : await startEmbeddedMap(o, layout, created);
  const mapAddress = mapRole.addresses().join(',');
  const superviseDisk = (disk: ClusterLayout['disks'][number]): Supervised => ({
    label: `daemon of disk ${disk.diskId}`,
    args: () => [
      'daemon', '--disk', disk.path, '--listen', `${disk.listenHost}:${disk.port}`, '--cluster-id', layout.clusterId, '--disk-id', String(disk.diskId), '--map', mapAddress,
      ...(disk.metricsPort !== undefined ? ['--metrics', `${disk.listenHost}:${disk.metricsPort}`] : []),
      ...(o.daemonArgs ?? []),
    ],
    child: null,
    restarts: 0,
    port: null,
    onCrash: () => void mapRole.service.change((m) => setDiskState(m, disk.diskId, { up: false })).catch(() => undefined),
  });
  const daemons: Supervised[] = layout.disks.map(superviseDisk);
  const supervised = new Set(layout.disks.map((d) => d.diskId));
  const s3Port = o.s3Port ?? layout.s3Port ?? S3_PORT_DEFAULT;
  const s3MetricsPort = s3MetricsPortOf(layout, METRICS_PORT_OFFSET_DEFAULT);
  const gateway: Supervised = {
    label: 'S3 gateway',
    // A restarted gateway keeps the ports its first start bound (with --s3-port 0 too).
    args: () => ['s3', '--map', mapAddress, '--listen', `127.0.0.1:${gateway.port ?? s3Port}`, '--metrics', `127.0.0.1:${gateway.metricsPort ?? s3MetricsPort}`, '--meta-pool', META_POOL, '--data-pool', DATA_POOL, '--region', S3_REGION, ...(o.s3Domains ?? []).flatMap((d) => ['--domain', d]), ...(o.s3GetsPerClientMax !== undefined ? ['--gets-per-client-max', String(o.s3GetsPerClientMax)] : []), ...(o.s3IndexShards !== undefined ? ['--index-shards', String(o.s3IndexShards)] : [])],
    child: null,
    restarts: 0,
    port: null,
    nodeArgs: S3_NODE_ARGS,
    metricsPort: null,
  };
  // Disks `tessera disk add` appended to cluster.json: start their daemons.
  let layoutPoll: ReturnType<Io['clock']['setTimeout']> | null = null;
  const pollLayout = async (): Promise<void> => {
    const latest = await readJson<ClusterLayout>(o.io, layoutPath(dataDir)).catch(() => null);
    for (const disk of latest?.disks ?? []) {
      if (stopping || supervised.has(disk.diskId)) continue;
      supervised.add(disk.diskId);
      const s = superviseDisk(disk);
      daemons.push(s);
      startChild(s, onExit).then(
        () => process.stdout.write(`tessera up: disk ${disk.diskId} (${disk.host}) added: storage daemon on ${disk.listenHost}:${disk.port}, pid ${s.child?.pid}\n`),
        (err: Error) => process.stderr.write(`tessera up: ${err.message}\n`),
      );
    }
  };
  const scheduleLayoutPoll = (): void => {
    layoutPoll = o.io.clock.setTimeout(() => {
      if (!stopping) void pollLayout().finally(() => !stopping && scheduleLayoutPoll());
    }, LAYOUT_POLL_MS);
  };
  const metricsRegistry = new Registry();
  new MapMetrics(metricsRegistry, {
    summary: async () => {
      const m = await mapRole.service.current();
      return { epoch: m.epoch, disks: m.disks, pools: m.pools.length };
    },
  });
  let metricsServer: MetricsServer | null = null;
  const stopAll = async (): Promise<void> => {
    stopping = true;
    if (layoutPoll !== null) o.io.clock.clearTimeout(layoutPoll);
    await metricsServer?.close();
    await stopChild(o.io, gateway.child);
    await Promise.all(daemons.map((s) => stopChild(o.io, s.child)));
    await mapRole.close();
  };
  let map: ClusterMap;
  let s3: ClientFileS3;
  let adminCreated: boolean;
  try {
    if (layout.mapMetricsPort !== undefined) metricsServer = await serveMetrics({ registry: metricsRegistry, host: '127.0.0.1', port: layout.mapMetricsPort });
    await Promise.all(daemons.map((s) => startChild(s, onExit)));
    scheduleLayoutPoll();
    map = await mapRole.service.current();
    const addresses = mapRole.addresses();
    const file: ClientFile = { clusterId: layout.clusterId, map: addresses[0]!, ...(addresses.length > 1 ? { maps: addresses } : {}), pools: map.pools.map((p) => ({ name: p.name, type: p.redundancy.type })) };
    const admin = await adminUser(o, mapRole.service, file);
    adminCreated = admin.created;
    const port = await startChild(gateway, onExit);
    s3 = { ...admin.s3, endpoint: `http://127.0.0.1:${port}` };
    await writeJson(o.io, clientPath(dataDir), { ...file, s3 });
  } catch (err) {
    await stopAll();
    throw err;
  }
  process.stdout.write(summary(o, layout, mapRole, map, daemons, gateway, s3, adminCreated));
  await signalled;
  process.stdout.write('tessera: stopping\n');
  await stopAll();
  return 0;
}
