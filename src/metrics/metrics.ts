/**
 * Metric definitions, in one place: what the storage daemons, the map
 * service and the S3 gateway export in the Prometheus text format (served by ./http.ts). Every
 * set registers on a prom-client Registry its caller passes in (never the
 * global one), so one process may hold several sets and tests may read them.
 *
 * The narrow interface is OpObserver: a server reports each operation it
 * answered (name, outcome, seconds, payload bytes) and knows nothing of
 * prom-client. OpMetrics turns that into the three series every service
 * exports (a gateway can reuse it with its own prefix):
 *   PREFIX_ops_total{op,result}           counter, result "ok" | "error"
 *   PREFIX_op_bytes_total{op}             counter, payload bytes written (writes) or returned (reads)
 *   PREFIX_op_duration_seconds{op}        histogram
 * State is read when scraped (collect callbacks), never pushed: a scrape
 * costs one statfs of the store and a pass over the daemon's pgs.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface OpSample {
  op: string;
  ok: boolean;
  seconds: number;
  /** Payload bytes the operation wrote or returned. */
  bytes: number;
}

export interface OpObserver {
  observe(sample: OpSample): void;
}

/** Latency buckets from 0.5 ms to ~16 s (client ops on one machine up to large streamed reads). */
const LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 16];

export class OpMetrics implements OpObserver {
  private readonly ops: Counter<'op' | 'result'>;
  private readonly bytes: Counter<'op'>;
  private readonly duration: Histogram<'op'>;

  constructor(registry: Registry, prefix: string) {
    const registers = [registry];
    this.ops = new Counter({ name: `${prefix}_ops_total`, help: 'Operations answered, by operation and result', labelNames: ['op', 'result'], registers });
    this.bytes = new Counter({ name: `${prefix}_op_bytes_total`, help: 'Payload bytes written or returned, by operation', labelNames: ['op'], registers });
    this.duration = new Histogram({ name: `${prefix}_op_duration_seconds`, help: 'Time to answer an operation', labelNames: ['op'], buckets: LATENCY_BUCKETS_SECONDS, registers });
  }

  observe(s: OpSample): void {
    this.ops.inc({ op: s.op, result: s.ok ? 'ok' : 'error' });
    if (s.bytes > 0) this.bytes.inc({ op: s.op }, s.bytes);
    this.duration.observe({ op: s.op }, s.seconds);
  }
}

/** What a storage daemon's metrics read when scraped. */
export interface DaemonMetricsSource {
  /** Placement groups this disk is primary of, counted by state. */
  pgStates(): Record<string, number>;
  /** Placement groups this disk is a member of (primary or not). */
  pgCount(): number;
  space(): Promise<{ usedBytes: number; freeBytes: number; objects: number }>;
  /** The map epoch the daemon holds. */
  mapEpoch(): number;
  /** Stray copies (src/daemon/stray-cleanup.ts): pgs waiting to be removed, and pgs and objects removed since the daemon started. */
  strays?(): { pgsWaiting: number; pgsRemoved: number; objectsRemoved: number };
  /**
   * Recovery this daemon drives as primary (src/daemon/recovery-progress.ts): objects and bytes
   * recovered since it started, and what its pgs have left (bytes: an estimate, null when unknown).
   */
  recovery?(): { objectsRecovered: number; bytesRecovered: number; objectsLeft: number; bytesLeft: number | null; pgsRecovering: number };
  /**
   * The daemon's primary lease (src/daemon/lease.ts): whether it holds now, times it lapsed and client
   * requests refused because it had, since the daemon started.
   */
  lease?(): { held: boolean; lapses: number; refusals: number };
  /**
   * Heartbeats between pg peers (src/daemon/peer-heartbeats.ts): disks pinged and reported unreachable now,
   * pings unanswered and reports sent since the daemon started.
   */
  peers?(): { peers: number; reported: number; pingsFailed: number; reportsSent: number };
  /**
   * The store's group commit (src/store/commit.ts): groups committed and the transactions they held
   * since the daemon started (their ratio is the batching the commit achieves), and the time spent
   * appending and syncing the groups' log records.
   */
  commit?(): { groups: number; transactions: number; dataSyncMs: number };
  /** The store's data reads from its segment files (src/store/segments.ts): reads and bytes since the daemon started. */
  reads?(): { reads: number; bytes: number };
}

/**
 * Pg states a daemon reports even when it has none of them (so a dashboard sees 0, not nothing, and a
 * state that ends, like a pg's "+inconsistent" after its repair, drops back to 0).
 */
export const PG_STATES = ['active', 'peering', 'incomplete', 'active+inconsistent'] as const;

/**
 * A storage daemon's metrics: client ops (tessera_osd_*), its pgs by state,
 * its disk's space and objects, the map epoch it holds. The disk id is a
 * label on every series.
 */
export class DaemonMetrics implements OpObserver {
  private readonly clientOps: OpMetrics;

  constructor(registry: Registry, diskId: number, source: DaemonMetricsSource) {
    registry.setDefaultLabels({ disk: String(diskId) });
    this.clientOps = new OpMetrics(registry, 'tessera_osd');
    const registers = [registry];
    new Gauge({
      name: 'tessera_osd_pgs',
      help: 'Placement groups this disk is primary of, by state',
      labelNames: ['state'],
      registers,
      collect() {
        const counts = source.pgStates();
        for (const state of PG_STATES) this.set({ state }, counts[state] ?? 0);
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
    new Gauge({ name: 'tessera_osd_pg_members', help: 'Placement groups this disk is a member of', registers, collect() { this.set(source.pgCount()); } });
    // The three space gauges share one reading per scrape (prom-client collects them concurrently).
    let reading: Promise<{ usedBytes: number; freeBytes: number; objects: number }> | null = null;
    const space = (): Promise<{ usedBytes: number; freeBytes: number; objects: number }> =>
      (reading ??= source.space().finally(() => {
        reading = null;
      }));
    const spaceGauge = (name: string, help: string, pick: (s: { usedBytes: number; freeBytes: number; objects: number }) => number): void =>
      void new Gauge({
        name,
        help,
        registers,
        async collect() {
          this.set(pick(await space()));
        },
      });
    spaceGauge('tessera_disk_used_bytes', 'Bytes used on the disk (segments and metadata)', (s) => s.usedBytes);
    spaceGauge('tessera_disk_free_bytes', 'Bytes free for the store on the disk', (s) => s.freeBytes);
    spaceGauge('tessera_disk_objects', 'Objects in the disk store (client objects, pg logs and metadata objects)', (s) => s.objects);
    new Gauge({ name: 'tessera_map_epoch', help: 'Cluster map epoch held', registers, collect() { this.set(source.mapEpoch()); } });
    if (source.strays) strayMetrics(registers, source.strays.bind(source));
    if (source.recovery) recoveryMetrics(registers, source.recovery.bind(source));
    if (source.lease) leaseMetrics(registers, source.lease.bind(source));
    if (source.peers) peerMetrics(registers, source.peers.bind(source));
    if (source.commit) commitMetrics(registers, source.commit.bind(source));
    if (source.reads) {
      const reads = source.reads.bind(source);
      followingCounter(registers, 'tessera_store_reads_total', 'Data reads of the disk\'s store from its segment files (each verifies the chunk checksums it covers)', () => reads().reads);
      followingCounter(registers, 'tessera_store_read_bytes_total', 'Bytes those reads took from the segment files (whole checksum chunks)', () => reads().bytes);
    }
  }

  observe(sample: OpSample): void {
    this.clientOps.observe(sample);
  }
}

/**
 * A counter that follows a total the daemon keeps since it started (read at each scrape): raised by
 * what the total grew since the last scrape, times `scale` (e.g. 1/1000 for ms to seconds).
 */
function followingCounter(registers: Registry[], name: string, help: string, total: () => number, scale = 1): void {
  let counted = 0;
  new Counter({
    name,
    help,
    registers,
    collect() {
      const now = total();
      if (now > counted) this.inc((now - counted) * scale);
      counted = Math.max(counted, now);
    },
  });
}

/** A daemon's stray-copy series: pgs waiting, and counters of what it removed. */
function strayMetrics(registers: Registry[], read: NonNullable<DaemonMetricsSource['strays']>): void {
  new Gauge({ name: 'tessera_osd_stray_pgs', help: 'Pgs this disk holds a copy of without being a member, not yet removed (waiting until the pg is clean on its members)', registers, collect() { this.set(read().pgsWaiting); } });
  followingCounter(registers, 'tessera_osd_stray_pgs_removed_total', 'Stray pg copies this disk removed', () => read().pgsRemoved);
  followingCounter(registers, 'tessera_osd_stray_objects_removed_total', 'Objects of stray pg copies this disk removed', () => read().objectsRemoved);
}

/** A daemon's recovery series: counters of what it recovered since it started, gauges of what its pgs have left. */
function recoveryMetrics(registers: Registry[], read: NonNullable<DaemonMetricsSource['recovery']>): void {
  followingCounter(registers, 'tessera_osd_recovery_objects_total', 'Objects recovered or backfilled by this daemon as primary (made equal on a member)', () => read().objectsRecovered);
  followingCounter(registers, 'tessera_osd_recovery_bytes_total', 'Bytes recovered or backfilled by this daemon as primary (erasure-coded pools: shard bytes written)', () => read().bytesRecovered);
  new Gauge({ name: 'tessera_osd_recovery_objects_left', help: 'Objects the pgs this disk is primary of have left to recover or backfill (an estimate while a backfill lists)', registers, collect() { this.set(read().objectsLeft); } });
  new Gauge({
    name: 'tessera_osd_recovery_bytes_left',
    help: 'Estimated bytes the pgs this disk is primary of have left to recover or backfill (NaN while unknown: before the first copy)',
    registers,
    collect() {
      this.set(read().bytesLeft ?? NaN);
    },
  });
  new Gauge({ name: 'tessera_osd_pgs_recovering', help: 'Pgs this disk is primary of with recovery or backfill copies left', registers, collect() { this.set(read().pgsRecovering); } });
}

/** A daemon's lease series: held now (1/0), and counters of lapses and refusals. */
function leaseMetrics(registers: Registry[], read: NonNullable<DaemonMetricsSource['lease']>): void {
  new Gauge({ name: 'tessera_osd_lease_held', help: 'Whether this daemon holds its primary lease (1) and may serve clients, or not (0: cut off from the map daemon, or it is restarting)', registers, collect() { this.set(read().held ? 1 : 0); } });
  followingCounter(registers, 'tessera_osd_lease_lapses_total', 'Times this daemon\'s primary lease ran out (no heartbeat answered by the map daemon in time)', () => read().lapses);
  followingCounter(registers, 'tessera_osd_lease_refusals_total', 'Client requests refused (Unavailable) because the primary lease had lapsed', () => read().refusals);
}

/** A daemon's peer heartbeat series. */
function peerMetrics(registers: Registry[], read: NonNullable<DaemonMetricsSource['peers']>): void {
  new Gauge({ name: 'tessera_osd_peers_pinged', help: 'Disks this daemon pings (those it shares pgs with, and those it reports)', registers, collect() { this.set(read().peers); } });
  new Gauge({ name: 'tessera_osd_peers_reported', help: 'Disks this daemon reports unreachable to the map daemon now (no ping answered for the peer grace)', registers, collect() { this.set(read().reported); } });
  followingCounter(registers, 'tessera_osd_peer_pings_failed_total', 'Pings to peers that got no answer (timed out or failed)', () => read().pingsFailed);
  followingCounter(registers, 'tessera_osd_peer_reports_sent_total', 'Peer failure reports sent to the map daemon (each a reporter\'s whole set; refreshed every interval while not empty)', () => read().reportsSent);
}

/** The store's group-commit counters. */
function commitMetrics(registers: Registry[], read: NonNullable<DaemonMetricsSource['commit']>): void {
  followingCounter(registers, 'tessera_store_commit_groups_total', 'Group commits of the disk\'s store (one synced log append each)', () => read().groups);
  followingCounter(registers, 'tessera_store_commit_transactions_total', 'Store transactions those group commits made durable', () => read().transactions);
  followingCounter(registers, 'tessera_store_commit_data_sync_seconds_total', 'Time the group commits spent appending and syncing their log records', () => read().dataSyncMs, 1 / 1000);
}

/** What the map service's metrics read when scraped: a summary of the latest map. */
export interface MapMetricsSource {
  summary(): Promise<{ epoch: number; disks: ReadonlyArray<{ up: boolean; in: boolean }>; pools: number }>;
}

/**
 * The map service's metrics: the epoch, map changes since this process
 * started (epochs advanced, seen at scrapes), disks by up/in and pools.
 */
export class MapMetrics {
  constructor(registry: Registry, source: MapMetricsSource) {
    const registers = [registry];
    let reading: ReturnType<MapMetricsSource['summary']> | null = null;
    const summary = (): ReturnType<MapMetricsSource['summary']> =>
      (reading ??= source.summary().finally(() => {
        reading = null;
      }));
    let lastEpoch: number | null = null;
    new Gauge({
      name: 'tessera_map_epoch',
      help: 'Epoch of the latest cluster map',
      registers,
      async collect() {
        this.set((await summary()).epoch);
      },
    });
    new Counter({
      name: 'tessera_map_changes_total',
      help: 'Map epochs advanced since the map service started (counted at scrapes)',
      registers,
      async collect() {
        const { epoch } = await summary();
        if (lastEpoch !== null && epoch > lastEpoch) this.inc(epoch - lastEpoch);
        lastEpoch = Math.max(lastEpoch ?? epoch, epoch);
      },
    });
    new Gauge({
      name: 'tessera_map_disks',
      help: 'Disks in the map, by up (daemon alive) and in (takes data)',
      labelNames: ['up', 'in'],
      registers,
      async collect() {
        const counts = new Map<string, number>([['true/true', 0], ['true/false', 0], ['false/true', 0], ['false/false', 0]]);
        for (const d of (await summary()).disks) counts.set(`${d.up}/${d.in}`, counts.get(`${d.up}/${d.in}`)! + 1);
        for (const [key, n] of counts) {
          const [up, inside] = key.split('/') as [string, string];
          this.set({ up, in: inside }, n);
        }
      },
    });
    new Gauge({
      name: 'tessera_map_pools',
      help: 'Pools in the map',
      registers,
      async collect() {
        this.set((await summary()).pools);
      },
    });
  }
}

/**
 * One S3 request as the gateway answered it (gateways/s3/gateway.ts): its operation, whether it was
 * answered below 400 and written to its end (ok), seconds from arrival to its last response byte.
 */
export interface S3RequestSample {
  op: string;
  ok: boolean;
  seconds: number;
  /** Request body bytes read from the client (as sent: aws-chunked framing included). */
  receivedBytes: number;
  /** Response body bytes handed to the connection (none for HEAD, 204, 304). */
  sentBytes: number;
  /** Why it failed: an S3 error code of the gateway's table, or "Aborted" (ended before its last byte); null when ok. */
  errorCode: string | null;
}

/** What the S3 gateway's metrics read when scraped. */
export interface S3MetricsSource {
  /** GET responses holding a per-client slot, waiting for one, the clients with either, and GETs refused SlowDown since start (gateways/s3/client-gets.ts). */
  gets(): { clients: number; inflight: number; waiting: number; refusedTotal: number };
  /** Connections open to the gateway's S3 port. */
  connections(): Promise<number>;
  /** The striper's piece memory budget (every PUT and GET of the gateway): reserved now, and its size. */
  striperMemory(): { reservedBytes: number; budgetBytes: number };
}

/** What the gateway reports each request to (it knows nothing of prom-client). */
export interface S3RequestObserver {
  observe(sample: S3RequestSample): void;
}

/**
 * The closed label sets of the S3 series: `op` is one of `operations` (the router's table), `code` one of
 * `errorCodes` (the gateway's error table) or "Aborted"; anything else is counted as "Other", so no request
 * can add a series (bucket and key names never become labels).
 */
export interface S3LabelSets {
  operations: readonly string[];
  errorCodes: readonly string[];
}

/**
 * The S3 gateway's metrics (tessera_s3_*): per operation, OpMetrics's requests by result, body bytes
 * (received + sent) and duration (from arrival to the last response byte handed to the connection), body bytes received and
 * sent, failures by S3 error code; and, read at scrape time, the per-client GET slots (in flight,
 * waiting, refused), open connections and the striper's memory budget in use.
 */
export class S3Metrics implements S3RequestObserver {
  private readonly requests: OpMetrics;
  private readonly received: Counter<'op'>;
  private readonly sent: Counter<'op'>;
  private readonly errors: Counter<'op' | 'code'>;
  private readonly operations: ReadonlySet<string>;
  private readonly errorCodes: ReadonlySet<string>;

  constructor(registry: Registry, source: S3MetricsSource, labels: S3LabelSets) {
    this.operations = new Set(labels.operations);
    this.errorCodes = new Set([...labels.errorCodes, 'Aborted']);
    this.requests = new OpMetrics(registry, 'tessera_s3');
    const registers = [registry];
    this.received = new Counter({ name: 'tessera_s3_received_bytes_total', help: 'Request body bytes read from clients (aws-chunked framing included), by operation', labelNames: ['op'], registers });
    this.sent = new Counter({ name: 'tessera_s3_sent_bytes_total', help: 'Response body bytes handed to client connections, by operation', labelNames: ['op'], registers });
    this.errors = new Counter({ name: 'tessera_s3_errors_total', help: 'Requests answered with an error, by operation and S3 error code (Aborted: the response ended before its last byte)', labelNames: ['op', 'code'], registers });
    new Gauge({ name: 'tessera_s3_get_slots_inflight', help: 'GET responses streaming from the cluster that hold a per-client slot', registers, collect() { this.set(source.gets().inflight); } });
    new Gauge({ name: 'tessera_s3_get_slots_waiting', help: 'GETs waiting for one of their client\'s slots', registers, collect() { this.set(source.gets().waiting); } });
    new Gauge({ name: 'tessera_s3_get_clients', help: 'Clients (access keys, else addresses) with a GET holding or waiting for a slot', registers, collect() { this.set(source.gets().clients); } });
    followingCounter(registers, 'tessera_s3_get_refused_total', 'GETs refused SlowDown because their client had its slots in use (the wait ran out, or too many waited)', () => source.gets().refusedTotal);
    new Gauge({
      name: 'tessera_s3_connections',
      help: 'Connections open to the S3 port',
      registers,
      async collect() {
        this.set(await source.connections());
      },
    });
    new Gauge({ name: 'tessera_s3_striper_reserved_bytes', help: 'Piece bytes the striper holds reserved for PUTs and GETs in progress (read-ahead included)', registers, collect() { this.set(source.striperMemory().reservedBytes); } });
    new Gauge({ name: 'tessera_s3_striper_budget_bytes', help: 'The striper\'s piece memory budget', registers, collect() { this.set(source.striperMemory().budgetBytes); } });
  }

  observe(s: S3RequestSample): void {
    const op = this.operations.has(s.op) ? s.op : 'Other';
    this.requests.observe({ op, ok: s.ok, seconds: s.seconds, bytes: s.receivedBytes + s.sentBytes });
    if (s.receivedBytes > 0) this.received.inc({ op }, s.receivedBytes);
    if (s.sentBytes > 0) this.sent.inc({ op }, s.sentBytes);
    if (!s.ok) this.errors.inc({ op, code: s.errorCode !== null && this.errorCodes.has(s.errorCode) ? s.errorCode : 'Other' });
  }
}
