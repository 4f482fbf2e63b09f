/**
 * The map service as a process role: the map and the pg history registry,
 * served over rpc on one port (map opcodes 100-119, pg history 120-129).
 * They live either in one directory (the embedded store, one process owns
 * it) or in etcd (`etcd` instead of `dir`: any number of map daemons may
 * serve the same cluster at once; one EtcdClient shared by both, closed
 * last). `tessera up` runs it in its own process; tests run it in theirs.
 * It also runs failure detection (cluster/liveness.ts: heartbeats, opcode
 * 130; peer failure reports, opcode 131, cluster/peer-reports.ts; disks
 * marked down, out, near full and full).
 * Daemons and clients reach it with connectMapService(), which takes several
 * addresses (map daemons on one etcd) and fails over between them.
 */
import { join } from 'node:path';
import type { Io } from '../src/io/io.js';
import { TesseraError } from '../src/lib/errors.js';
import { FailoverRpcClient, failoverServersMax } from '../src/rpc/failover.js';
import { createTcpClient, createTcpServer } from '../src/rpc/tcp.js';
import type { RpcClient, RpcServer } from '../src/rpc/types.js';
import { MapClient } from './map-client.js';
import { mapOpcodeMax, mapOpcodeMin } from './map-protocol.js';
import { MapServer } from './map-server.js';
import type { MapService } from './map-service.js';
import { EmbeddedMapStore } from './map-store-embedded.js';
import type { ProcessProbe } from './map-lock.js';
import { EtcdClient } from './etcd-client.js';
import { EtcdMapStore, etcdKeyPrefixDefault } from './map-store-etcd.js';
import { EtcdLivenessRecords } from './liveness-etcd.js';
import type { ClusterMap } from './map.js';
import { EmbeddedPgHistory, PgHistoryClient, pgHistoryHandler, PgHistoryOpcode, type PgHistory } from './pg-history.js';
import { EtcdPgHistory } from './pg-history-etcd.js';
import { LivenessClient, LivenessMonitor, LivenessOpcode, resolveLiveness, type LivenessOptions, type LivenessReporter } from './liveness.js';
import { PeerReportClient, PeerReportOpcode, type PeerReporter } from './peer-reports.js';

export interface MapDaemon {
  port: number;
  service: MapService;
  history: PgHistory;
  liveness: LivenessMonitor;
  close(): Promise<void>;
}

/** Where an etcd-backed map daemon keeps the map (cluster/map-store-etcd.ts). */
export interface MapDaemonEtcdOptions {
  /** etcd client URLs, e.g. ["http://10.0.0.1:2379", ...]. */
  endpoints: readonly string[];
  /** The cluster served; may be left out when `create` is given. */
  clusterId?: string;
  /** Default "/tessera". */
  keyPrefix?: string;
  /** Budget of each etcd call (default etcdDefaults.callTimeoutMs). */
  callTimeoutMs?: number;
}

interface Backend {
  service: MapService;
  history: PgHistory;
  /** etcd: liveness shared with the other map daemons (made for the monitor, which closes it). */
  records?: (downGraceMs: number) => EtcdLivenessRecords;
  close(): Promise<void>;
}

async function openEmbedded(io: Io, dir: string, create: ClusterMap | undefined, probe: ProcessProbe | undefined): Promise<Backend> {
  const service = await EmbeddedMapStore.open({ io, path: join(dir, 'map'), ...(create ? { create } : {}), ...(probe ? { probe } : {}) });
  const history = await EmbeddedPgHistory.open(io, join(dir, 'map'));
  return { service, history, close: async () => (await history.close(), await service.close()) };
}

async function openEtcd(io: Io, etcd: MapDaemonEtcdOptions, create: ClusterMap | undefined): Promise<Backend> {
  const client = new EtcdClient({ io, endpoints: etcd.endpoints, ...(etcd.callTimeoutMs !== undefined ? { callTimeoutMs: etcd.callTimeoutMs } : {}) });
  try {
    const keyPrefix = etcd.keyPrefix !== undefined ? { keyPrefix: etcd.keyPrefix } : {};
    const service = await EtcdMapStore.open({ io, client, ...keyPrefix, ...(etcd.clusterId !== undefined ? { clusterId: etcd.clusterId } : {}), ...(create ? { create } : {}) });
    const history = new EtcdPgHistory({ client, clusterId: service.clusterId, ...keyPrefix });
    const records = (downGraceMs: number): EtcdLivenessRecords =>
      new EtcdLivenessRecords({
        client,
        store: service,
        keyPrefix: etcd.keyPrefix ?? etcdKeyPrefixDefault,
        // etcd counts lease TTLs in whole seconds: rounded up, so a record never expires before the grace.
        ttlSeconds: Math.max(1, Math.ceil(downGraceMs / 1000)),
        identity: 'map daemon (starting)',
        log: (message) => console.error(message),
      });
    return { service, history, records, close: async () => (await history.close(), await service.close(), await client.close()) };
  } catch (err) {
    await client.close();
    throw err;
  }
}

/** Serves the map from `dir` (embedded) or from `etcd`: exactly one of them. */
export async function startMapDaemon(options: {
  io: Io;
  dir?: string;
  etcd?: MapDaemonEtcdOptions;
  host: string;
  port: number;
  create?: ClusterMap;
  /** Failure detection and full ratios (defaults in src/lib/limits.ts). */
  liveness?: LivenessOptions;
  /** How the embedded store's lock tells a live owner (default: /proc through io.fs; the simulation, test/sim, has its own processes). */
  probe?: ProcessProbe;
}): Promise<MapDaemon> {
  const { io } = options;
  if ((options.dir === undefined) === (options.etcd === undefined)) throw new TesseraError('InvalidArgument', 'map daemon: give either dir or etcd');
  const backend = options.etcd ? await openEtcd(io, options.etcd, options.create) : await openEmbedded(io, options.dir!, options.create, options.probe);
  const { service, history } = backend;
  const mapServer = new MapServer({ io, service });
  const historyHandler = pgHistoryHandler(history);
  let liveness: LivenessMonitor;
  let records: EtcdLivenessRecords | undefined;
  let server: RpcServer;
  try {
    // With etcd, other map daemons may serve the same map and receive other disks' heartbeats: liveness is shared there.
    const resolved = resolveLiveness(options.liveness);
    records = backend.records?.(resolved.downGraceMs);
    const { downGraceMs, outIntervalMs, heartbeatIntervalMs, leaseMs } = resolved;
    await records?.agreeOnSettings({ downGraceMs, outIntervalMs, heartbeatIntervalMs, leaseMs });
    liveness = new LivenessMonitor(io, service, options.liveness, records);
  } catch (err) {
    await mapServer.close();
    await backend.close();
    throw err;
  }
  try {
    server = await createTcpServer({
      io,
      host: options.host,
      port: options.port,
      handler: (request) => {
        if (request.op >= mapOpcodeMin && request.op <= mapOpcodeMax) return mapServer.handler(request);
        if (request.op === PgHistoryOpcode.get || request.op === PgHistoryOpcode.put) return historyHandler(request);
        if (request.op === LivenessOpcode.heartbeat) return liveness.handler(request);
        if (request.op === PeerReportOpcode.report || request.op === PeerReportOpcode.accused) return liveness.reportHandler(request);
        throw new TesseraError('NotSupported', `unknown operation ${request.op}`);
      },
    });
  } catch (err) {
    await liveness.close();
    await mapServer.close();
    await backend.close();
    throw err;
  }
  if (records) records.identity = `${options.host}:${server.port}`;
  return {
    port: server.port,
    service,
    history,
    liveness,
    async close() {
      await liveness.close();
      await mapServer.close();
      await server.close({ drainTimeoutMs: 2000 });
      await backend.close();
    },
  };
}

export interface MapConnection {
  service: MapService;
  history: PgHistory;
  /** Where a storage daemon sends its heartbeats. */
  liveness: LivenessReporter;
  /** Where a storage daemon reports the peers it cannot reach (cluster/peer-reports.ts). */
  peerReports: PeerReporter;
  rpc: RpcClient;
  close(): Promise<void>;
}

/**
 * The map service and pg history of the map daemons at "host:port[,host:port...]" (several: map daemons of one
 * cluster on etcd, any of which serves every call; calls fail over from one that is unreachable to the next,
 * src/rpc/failover.ts). `onSwitch` is told when calls move to another map daemon.
 */
export function connectMapService(io: Io, address: string, o: { onSwitch?: (from: string, to: string, cause: TesseraError) => void } = {}): MapConnection {
  const addresses = parseMapAddresses(address);
  const clients = addresses.map((a) => {
    const at = a.lastIndexOf(':');
    return createTcpClient({ io, host: a.slice(0, at), port: Number(a.slice(at + 1)) });
  });
  const rpc: RpcClient = clients.length === 1 ? clients[0]! : new FailoverRpcClient({ clock: io.clock, clients, names: addresses, ...(o.onSwitch ? { onSwitch: o.onSwitch } : {}) });
  const service = new MapClient({ io, rpc });
  return {
    service,
    history: new PgHistoryClient(rpc),
    liveness: new LivenessClient(rpc, undefined, addresses.length),
    peerReports: new PeerReportClient(rpc),
    rpc,
    async close() {
      await service.close();
      await rpc.close();
    },
  };
}

/** "host:port[,host:port...]" -> the addresses (InvalidArgument if one is not host:port, or too many). */
export function parseMapAddresses(address: string): string[] {
  const addresses = address.split(',').map((a) => a.trim()).filter((a) => a !== '');
  if (addresses.length === 0 || addresses.length > failoverServersMax) throw new TesseraError('InvalidArgument', `map service address: 1 to ${failoverServersMax} HOST:PORT, comma-separated; got "${address}"`);
  for (const a of addresses) if (!/^[^:,]+:\d{1,5}$/.test(a)) throw new TesseraError('InvalidArgument', `map service address "${a}" is not HOST:PORT`);
  return addresses;
}
