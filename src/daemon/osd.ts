/**
 * The storage daemon in a cluster: one disk's store, served to clients and
 * peers through placement groups. It follows the cluster map (MapView),
 * keeps a Pg for every pg this disk is a member of (replicated and
 * erasure-coded pools), peers the pgs it is primary of at the start of each
 * interval, and answers (src/daemon/osd-service.ts) client ops as primary
 * and replication / recovery messages as a member.
 *
 * Lifecycle: start() opens the store, listens, marks the disk up (with its
 * address) in the map, begins following it and heartbeating the map daemon
 * (cluster/liveness.ts: liveness and space used; a disk marked down while
 * alive is marked up again by its next heartbeat; each reply renews the
 * primary lease client I/O is served under: src/daemon/lease.ts) and
 * pinging the disks it shares pgs with (src/daemon/peer-heartbeats.ts: the
 * silent ones are reported to the map daemon); close()
 * stops the heartbeats, marks it down, drains requests, closes the store.
 *
 * Recovery and backfill this daemon drives as primary go through one
 * RecoveryThrottle (src/daemon/recovery-throttle.ts).
 */
import type { Io } from '../io/io.js';
import { TesseraError, toTesseraError } from '../lib/errors.js';
import { createTcpServer } from '../rpc/tcp.js';
import type { RpcHandler, RpcServer } from '../rpc/types.js';
import { ObjectStore, type ObjectStoreOptions, type StoreIdentity } from '../store/index.js';
import type { MapService } from '../../cluster/map-service.js';
import { MapView } from '../../cluster/map-view.js';
import type { PgHistory } from '../../cluster/pg-history.js';
import { setDiskAddress, setDiskState, setPgTemp } from '../../cluster/map-edit.js';
import type { ClusterMap } from '../../cluster/map.js';
import { buildPlacementIndex, HOLE, pgMembers, pgTempActing } from '../../cluster/placement.js';
import { limits } from '../lib/limits.js';
import { createErasureCodec } from '../../native/index.js';
import { EcStagingIndex } from './ec-index.js';
import { EcLayout } from './ec-layout.js';
import { ByteBudget } from './ec-locks.js';
import { peerEc } from './ec-peering.js';
import { EcCodecs, EcPgState } from './ec-state.js';
import { Peers } from './peers.js';
import { Pg } from './pg.js';
import { loadScrubRecord } from './scrub-record.js';
import { PgLog } from './pg-log.js';
import { peer, type MemberHandle } from './peering.js';
import { localHandle, remoteHandle } from './members.js';
import { osdHandler } from './osd-service.js';
import { withAdmin, type ClientOpSample } from './osd-admin.js';
import { PoolPurger } from './pool-purge.js';
import { StrayCleaner, type StrayCleanerOptions } from './stray-cleanup.js';
import { ReadRepairs } from './read-repairs.js';
import { pieceBuffers, storeHandler } from './store-service.js';
import { RecoveryThrottle, type RecoveryThrottleOptions } from './recovery-throttle.js';
import { RecoveryProgress } from './recovery-progress.js';
import type { LivenessReporter } from '../../cluster/liveness.js';
import { PrimaryLease, startHeartbeats } from './lease.js';
import type { PeerReporter } from '../../cluster/peer-reports.js';
import { PeerHeartbeats } from './peer-heartbeats.js';

export interface OsdOptions {
  io: Io;
  diskPath: string;
  host: string;
  port: number;
  identity: StoreIdentity;
  mapService: MapService;
  pgHistory: PgHistory;
  store?: Partial<Omit<ObjectStoreOptions, 'io' | 'path' | 'create' | 'expect'>>;
  /** How long a request waits for a map epoch its sender has seen. */
  epochWaitMs?: number;
  /** Delay before a failed peering is tried again. */
  peeringRetryMs?: number;
  /** Told of every client op answered (write, read, list): metrics. */
  onClientOp?: (sample: ClientOpSample) => void;
  /** Where heartbeats go (the map daemon); none: no heartbeats (the disk is marked down after the grace). */
  liveness?: LivenessReporter;
  /** Where reports of unreachable peers go (the map daemon); none: peers are not pinged (src/daemon/peer-heartbeats.ts). */
  peerReports?: PeerReporter;
  /** Pace of the recovery and backfill this daemon drives (defaults in src/lib/limits.ts). */
  recovery?: RecoveryThrottleOptions;
  /** Removal of this disk's copies of pgs it left (src/daemon/stray-cleanup.ts). */
  strays?: StrayCleanerOptions;
}

const STORE_OPCODE_MAX = 19;

/**
 * A replicated pg's temporary acting set without `out`: the acting set in force (the pg's temporary
 * one, or its computed members; down members kept, so they rejoin as they come up) less those disks.
 */
function actingWithout(map: ClusterMap, pg: Pg, out: readonly number[]): number[] {
  const index = buildPlacementIndex(map);
  const pool = map.pools.find((p) => p.id === pg.pool.id) ?? pg.pool;
  const members = pgMembers(index, pool, pg.pg);
  return (pgTempActing(map, members, pool, pg.pg) ?? members).filter((d) => !out.includes(d));
}

export class Osd {
  readonly pgs = new Map<string, Pg>();
  readonly peers: Peers;
  /** Deletes what removed pools left in the store (src/daemon/pool-purge.ts). */
  readonly purger: PoolPurger;
  /** Removes this disk's copies of pgs it is no longer a member of, once they are clean elsewhere (src/daemon/stray-cleanup.ts). */
  readonly strays: StrayCleaner;
  /** Erasure-coded shards a read found corrupt, rebuilt in the background (read-repairs.ts). */
  readonly readRepairs: ReadRepairs = new ReadRepairs(this);
  /** Erasure codecs by geometry, shared by the daemon's pgs. */
  readonly ecCodecs = new EcCodecs(createErasureCodec);
  /** Encoded shard bytes of erasure-coded writes in flight at this primary. */
  readonly ecWriteBudget: ByteBudget;
  private closing: Promise<void> | null = null;
  private unsubscribe: (() => void) | null = null;
  private readonly pgLoads = new Map<string, Promise<Pg>>();
  /** Client requests (ops, reads, listings) being served, and when the last one ended: recovery yields to them. */
  clientRequestsInflight = 0;
  clientRequestLastEndedMs = -Infinity;
  readonly recovery: RecoveryThrottle;
  /** Copies planned and made by the pgs this daemon peers as primary (src/daemon/recovery-progress.ts). */
  readonly recoveryProgress: RecoveryProgress;
  private readonly heartbeats = new AbortController();
  private heartbeatLoop: Promise<void> | null = null;
  /** Pings the disks this one shares pgs with and reports the silent ones (src/daemon/peer-heartbeats.ts). */
  peerHeartbeats: PeerHeartbeats | null = null;
  private peerLoop: Promise<void> | null = null;
  /** Client I/O as a primary is served only while this holds (src/daemon/lease.ts); renewed by heartbeat replies. */
  readonly lease: PrimaryLease;

  private constructor(
    readonly options: OsdOptions,
    readonly store: ObjectStore,
    readonly view: MapView,
    private server: RpcServer | null,
    /** Staging objects of erasure-coded writes in this store, by pg. */
    readonly ecStagings: EcStagingIndex,
  ) {
    this.peers = new Peers(options.io, view);
    this.purger = new PoolPurger(store, (message) => console.error(`disk ${options.identity.diskId}: ${message}`));
    this.strays = new StrayCleaner(this, options.strays);
    this.ecWriteBudget = new ByteBudget(options.io.clock, limits.ecWriteBytesInflightMax);
    this.recovery = new RecoveryThrottle(options.io.clock, options.recovery, { inflight: () => this.clientRequestsInflight, lastEndedMs: () => this.clientRequestLastEndedMs });
    this.recoveryProgress = new RecoveryProgress(options.io.clock);
    this.lease = new PrimaryLease(options.io.clock, (message) => console.error(`disk ${options.identity.diskId}: ${message}`), options.liveness !== undefined);
  }

  get diskId(): number {
    return this.options.identity.diskId;
  }

  get io(): Io {
    return this.options.io;
  }

  get epochWaitMs(): number {
    return this.options.epochWaitMs ?? 10_000;
  }

  static async start(options: OsdOptions): Promise<Osd> {
    const { io } = options;
    const store = await ObjectStore.open({ ...options.store, io, path: options.diskPath, create: options.identity, expect: options.identity });
    let osd: Osd | null = null;
    try {
      const view = await MapView.start(io, options.mapService);
      const ecPools = view.map.pools.filter((p) => p.redundancy.type === 'erasure').map((p) => p.id);
      osd = new Osd(options, store, view, null, await EcStagingIndex.build(store, ecPools));
      const self = osd;
      // One pool of read piece buffers for both: a daemon is the primary of some pgs and a member of others.
      const buffers = pieceBuffers();
      const storeReads = storeHandler(store, { readOnly: true, buffers });
      const cluster = withAdmin(self, osdHandler(self, buffers), options.onClientOp);
      const handler: RpcHandler = (request) => (request.op <= STORE_OPCODE_MAX ? storeReads(request) : cluster(request));
      self.server = await createTcpServer({ io, host: options.host, port: options.port, handler });
      const address = `${options.host}:${self.server.port}`;
      await options.mapService.change((m) => setDiskState(setDiskAddress(m, self.diskId, address), self.diskId, { up: true }));
      await view.refresh();
      self.unsubscribe = view.onChange((map) => self.onMap(map));
      self.onMap(view.map);
      // The first reply grants the lease: the daemon serves clients as soon as start() returns.
      await self.startHeartbeats();
      return self;
    } catch (err) {
      if (osd) await osd.close().catch(() => undefined);
      else await store.close();
      throw err;
    }
  }

  /** Reports liveness and space to the map daemon, at the interval it asks for, until close; resolves after the first reply. */
  private startHeartbeats(): Promise<void> {
    const reporter = this.options.liveness;
    if (!reporter) return Promise.resolve();
    const { firstReply, stopped } = startHeartbeats({
      io: this.io,
      reporter,
      lease: this.lease,
      view: this.view,
      diskId: this.diskId,
      space: () => this.store.space(),
      refreshSpace: () => void this.store.refreshSpace().catch(() => undefined),
      signal: this.heartbeats.signal,
      log: (message) => console.error(`disk ${this.diskId}: ${message}`),
    });
    this.heartbeatLoop = stopped;
    if (this.options.peerReports) {
      const peers = new PeerHeartbeats({
        io: this.io,
        view: this.view,
        diskId: this.diskId,
        reporter: this.options.peerReports,
        signal: this.heartbeats.signal,
        log: (message) => console.error(`disk ${this.diskId}: ${message}`),
      });
      this.peerHeartbeats = peers;
      this.peerLoop = peers.run().catch((err: unknown) => console.error(`disk ${this.diskId}: peer heartbeats stopped: ${toTesseraError(err).message}`));
    }
    return firstReply;
  }

  get port(): number {
    return this.server?.port ?? 0;
  }

  /** Every pg this disk is a member of: new intervals start peering. */
  private onMap(map: ClusterMap): void {
    for (const [key, pg] of this.pgs) {
      const pool = map.pools.find((p) => p.id === pg.pool.id);
      if (!pool) {
        // A removed pool: forgotten, and its objects deleted (the purger).
        pg.peering?.abort();
        pg.endInterval();
        this.pgs.delete(key);
      } else if (pg.intervalStart !== 0 && !this.view.pg(pool, pg.pg).members.includes(this.diskId)) {
        // No longer a member (marked out, or placement moved the pg): if the pg maps here again, that
        // is a new interval to peer (others may have written meanwhile), never the old one resumed.
        pg.peering?.abort();
        pg.peering = null;
        pg.endInterval();
        pg.intervalStart = 0;
        pg.state = 'peering';
        pg.peeringFailure = null;
        this.strays.noteLeft(pool.id, pg.pg);
      }
    }
    this.purger.onMap(map);
    // Stray copies: the store is scanned once (the first map), pgs waiting for their primary's go-ahead are asked again.
    this.strays.start();
    this.strays.poke();
    for (const pool of map.pools) {
      for (let pg = 0; pg < pool.pgCount; pg++) {
        const placement = this.view.pg(pool, pg);
        if (!placement.members.includes(this.diskId)) continue;
        // A loaded pg is compared now, against this very map (the view calls onMap as it accepts each one):
        // no epoch the view accepted is passed over (maybeNewInterval treats an epoch it never compared as a change).
        const loaded = this.pgs.get(`${pool.id}.${pg}`);
        if (loaded) {
          this.maybeNewInterval(loaded, map);
          continue;
        }
        void this.pgFor(pool.id, pg).then(
          (p) => this.maybeNewInterval(p, map),
          (err) => console.error(`disk ${this.diskId}: pg ${pool.id}.${pg}: ${toTesseraError(err).message}`),
        );
      }
    }
  }

  /** The Pg of (pool, pg), loading its log from the store the first time. */
  pgFor(poolId: number, pg: number): Promise<Pg> {
    const key = `${poolId}.${pg}`;
    const existing = this.pgs.get(key);
    if (existing) return Promise.resolve(existing);
    let loading = this.pgLoads.get(key);
    if (!loading) {
      // Never beside a removal batch of a stray copy (src/daemon/stray-cleanup.ts): the log read is the store's as it is
      // now, and the Pg is in this.pgs before the next batch looks (a batch drops the Pg of a pg this disk left).
      loading = this.strays.exclusive(key, async () => {
        // The log, and what this disk's last scrub of the pg as its primary found and when (src/daemon/scrub-record.ts),
        // read side by side.
        const [log, record] = await Promise.all([
          PgLog.load(this.store, poolId, pg),
          loadScrubRecord(this.store, poolId, pg).catch((err: unknown) => {
            console.error(`disk ${this.diskId}: pg ${poolId}.${pg}: scrub record not read: ${toTesseraError(err).message}`);
            return null;
          }),
        ]);
        const pool = this.view.pool(poolId);
        const p = new Pg(pool, pg, log);
        if (record) {
          Object.assign(p.scrub, { scrubbedAtMs: record.scrubbedAtMs, deepScrubbedAtMs: record.deepScrubbedAtMs, lastDeep: record.lastDeep, inconsistent: record.unrepaired, left: record.kept });
        }
        if (pool.redundancy.type === 'erasure') {
          const layout = EcLayout.forPool(pool);
          p.ec = new EcPgState(this.io.clock, layout, this.ecCodecs.get(layout), log.head);
        }
        this.pgs.set(key, p);
        this.pgLoads.delete(key);
        return p;
      });
      this.pgLoads.set(key, loading);
    }
    return loading;
  }

  /** Brings a pg's interval up to date with the map held now (requests call it before their checks). */
  syncInterval(pg: Pg): void {
    this.maybeNewInterval(pg, this.view.map);
  }

  /**
   * A new interval starts when the pg's acting set or primary changes: the pg
   * goes back to peering, and its primary peers it. A pg seen for the first
   * time by this process starts a new interval at the epoch held now (it
   * cannot know whether the acting set changed while it was away). So does a
   * pg that did not see every epoch since it last compared: the map service
   * may skip epochs (its watch delivers at least the latest), and a daemon
   * stopped or cut off while it was marked down and up again goes straight
   * to an epoch with the acting set it had, while another primary took
   * writes without it. Keeping its old interval, it served reads from its
   * stale copy (erasure-coded: its own shard's old size with the other
   * shards' new bytes, seed 475731535 of the fault suite).
   */
  private maybeNewInterval(pg: Pg, map: ClusterMap): void {
    if (map.epoch < this.view.epoch) return; // a newer map's pass handles it
    const missedEpochs = pg.mapEpoch !== 0 && map.epoch > pg.mapEpoch + 1;
    const lastSeen = pg.mapEpoch;
    pg.mapEpoch = Math.max(pg.mapEpoch, map.epoch);
    const placement = this.view.pg(pg.pool, pg.pg);
    const acting = placement.acting.filter((d) => d !== HOLE);
    // Erasure-coded pgs compare positions (with holes): shard i lives on position i.
    const same = placement.acting.join() === pg.positions.join() && placement.primary === pg.primary;
    if (pg.intervalStart !== 0 && !missedEpochs && same) return;
    if (pg.intervalStart !== 0 && same && placement.primary === this.diskId) {
      console.error(`disk ${this.diskId}: pg ${pg.key}: map epochs ${lastSeen + 1}..${map.epoch - 1} not seen (the acting set may have changed meanwhile): new interval at ${map.epoch}`);
    }
    // Writes in flight to the old acting set stop waiting for it (a stopped member would hold them to the repop timeout).
    pg.endInterval();
    pg.intervalStart = map.epoch;
    pg.acting = acting;
    pg.positions = [...placement.acting];
    pg.primary = placement.primary;
    pg.state = 'peering';
    pg.backfilling.clear();
    pg.tooFull.clear();
    pg.peering?.abort();
    pg.peering = null;
    pg.peeringFailure = null;
    pg.incompleteWhy = null;
    if (pg.primary === this.diskId) this.startPeering(pg);
  }

  /** A write could not reach every member: settle the pg's history again before it serves more I/O. */
  repeer(pg: Pg): void {
    if (pg.primary !== this.diskId || this.closing) return;
    pg.state = 'peering';
    pg.peering?.abort();
    this.startPeering(pg);
  }

  private startPeering(pg: Pg): void {
    const abort = new AbortController();
    pg.peering = abort;
    pg.ec?.newGeneration();
    const interval = pg.intervalStart;
    const peerFn = pg.ec ? peerEc : peer;
    const run = async (): Promise<void> => {
      try {
        const result = await peerFn(pg, {
          history: this.options.pgHistory,
          signal: abort.signal,
          handle: (diskId) => this.memberHandle(pg, diskId),
          reloadLocal: async () => pg.resetLog(await PgLog.load(this.store, pg.pool.id, pg.pg)),
          pace: (o, copy) => this.recovery.run({ ...o, signal: abort.signal }, copy),
          backfillLater: (backfill) => this.backfillInBackground(pg, abort.signal, interval, backfill),
          progress: this.recoveryProgress.begin(pg),
          setTemp: async (acting) => {
            const map = await this.options.mapService.change((m) => setPgTemp(m, pg.pool.id, pg.pg, acting), { signal: abort.signal });
            console.error(`disk ${this.diskId}: pg ${pg.key}: ${acting ? `temporary acting set ${acting.join(',')}` : 'temporary acting set cleared'}, epoch ${map.epoch}`);
          },
          hasTemp: () => pgTempActing(this.view.map, this.view.pg(pg.pool, pg.pg).members, pg.pool, pg.pg) !== null,
          leaveOut: async (out) => {
            const map = await this.options.mapService.change((m) => setPgTemp(m, pg.pool.id, pg.pg, actingWithout(m, pg, out)), { signal: abort.signal });
            console.error(`disk ${this.diskId}: pg ${pg.key}: disk(s) ${out.join(',')} left out (toofull), acting set ${actingWithout(map, pg, []).join(',')}, epoch ${map.epoch}`);
            // The new interval starts here before this run goes on (it ends with it).
            await this.view.waitForEpoch(map.epoch, this.epochWaitMs).catch(() => undefined);
          },
          leftOut: () => this.leftOut(pg),
          bringBackLater: (out, attempt) => this.bringBackInBackground(pg, abort.signal, interval, out, attempt),
        });
        if (abort.signal.aborted || pg.intervalStart !== interval) return;
        if (result === 'remapped') {
          pg.peeringFailure = null; // this run did not fail: the pg waits for its new acting set
          // The map change that starts the new interval is on its way; peer again if it never comes.
          this.io.clock.setTimeout(() => {
            if (!abort.signal.aborted && pg.intervalStart === interval && !this.closing) void run();
          }, Math.max(this.options.peeringRetryMs ?? 1000, 5000));
          return;
        }
        pg.peeringFailure = null;
        pg.state = result;
      } catch (err) {
        if (abort.signal.aborted || pg.intervalStart !== interval || this.closing) return;
        const e = toTesseraError(err);
        if (e.code === 'StaleEpoch') await this.view.refresh().catch(() => undefined);
        else {
          // A client refused while the pg peers learns why it does not serve (e.g. a member's store has no room for a copy).
          pg.peeringFailure = `${e.code} ${e.message}`;
          console.error(`disk ${this.diskId}: pg ${pg.key}: peering failed, retrying: ${e.code} ${e.message}`);
        }
        this.io.clock.setTimeout(() => {
          if (!abort.signal.aborted && pg.intervalStart === interval && !this.closing) void run();
        }, this.options.peeringRetryMs ?? 1000);
      }
    };
    void run();
  }

  /**
   * Runs a deferred backfill while the pg serves I/O; then stops new I/O, lets the writes in flight
   * finish and peers again, which brings the backfilled members up to date from the log.
   */
  private backfillInBackground(pg: Pg, signal: AbortSignal, interval: number, backfill: () => Promise<void>): void {
    const current = (): boolean => !signal.aborted && pg.intervalStart === interval && !this.closing;
    void (async () => {
      const startedMs = this.io.clock.monotonicMs();
      try {
        await backfill();
        console.error(`disk ${this.diskId}: pg ${pg.key}: backfilled disk(s) ${[...pg.backfilling].join(',')} in ${this.io.clock.monotonicMs() - startedMs} ms while active`);
      } catch (err) {
        if (!current()) return;
        console.error(`disk ${this.diskId}: pg ${pg.key}: backfill failed, peering again: ${toTesseraError(err).message}`);
        await this.io.clock.sleep(this.options.peeringRetryMs ?? 1000, signal).catch(() => undefined);
      }
      if (!current()) return;
      pg.state = 'peering';
      await Promise.allSettled([...pg.inflightRequests.values()]);
      if (current()) this.repeer(pg);
    })();
  }

  /** Members of a replicated pg the temporary acting set leaves out (toofull) that are up now. */
  private leftOut(pg: Pg): number[] {
    const { members, acting } = this.view.pg(pg.pool, pg.pg);
    const up = new Set(this.view.map.disks.filter((d) => d.up).map((d) => d.id));
    return pgTempActing(this.view.map, members, pg.pool, pg.pg) === null ? [] : members.filter((d) => !acting.includes(d) && up.has(d));
  }

  /**
   * Brings members left out for want of room (toofull) up to date while the pg serves I/O without them:
   * `attempt` is retried after a doubling delay (limits.tooFullRetryMs*), sooner when the map changes one
   * of those disks (its space state, a restart); once it succeeds the temporary acting set is cleared, and
   * the new interval catches them up from the log and counts them as copies again.
   */
  private bringBackInBackground(pg: Pg, signal: AbortSignal, interval: number, out: number[], attempt: () => Promise<void>): void {
    const current = (): boolean => !signal.aborted && pg.intervalStart === interval && !this.closing;
    pg.tooFull = new Set(out);
    void (async () => {
      let delayMs: number = limits.tooFullRetryMsMin;
      let lastReason = '';
      for (;;) {
        await this.untilDisksChange(out, delayMs, signal);
        if (!current()) return;
        try {
          await attempt();
          break;
        } catch (err) {
          if (!current()) return;
          const e = toTesseraError(err);
          const reason = `${e.code} ${e.message}`;
          if (reason !== lastReason) console.error(`disk ${this.diskId}: pg ${pg.key}: disk(s) ${out.join(',')} still cannot be brought back (retrying, up to every ${limits.tooFullRetryMsMax} ms): ${reason}`);
          lastReason = reason;
          delayMs = Math.min(delayMs * 2, limits.tooFullRetryMsMax);
        }
      }
      console.error(`disk ${this.diskId}: pg ${pg.key}: disk(s) ${out.join(',')} filled while active; back into the acting set`);
      for (let delay: number = limits.tooFullRetryMsMin; current(); delay = Math.min(delay * 2, limits.tooFullRetryMsMax)) {
        try {
          const map = await this.options.mapService.change((m) => setPgTemp(m, pg.pool.id, pg.pg, null), { signal });
          console.error(`disk ${this.diskId}: pg ${pg.key}: temporary acting set cleared, epoch ${map.epoch}`);
          return;
        } catch (err) {
          if (!current()) return;
          console.error(`disk ${this.diskId}: pg ${pg.key}: clearing the temporary acting set failed, retrying: ${toTesseraError(err).message}`);
          await this.io.clock.sleep(delay, signal).catch(() => undefined);
        }
      }
    })();
  }

  /** Resolves after delayMs, when the map changes one of the disks (space, up, address), or on abort. */
  private async untilDisksChange(diskIds: number[], delayMs: number, signal: AbortSignal): Promise<void> {
    const wake = new AbortController();
    const of = (map: ClusterMap): string => JSON.stringify(map.disks.filter((d) => diskIds.includes(d.id)));
    const unsubscribe = this.view.onChange((map, previous) => {
      if (of(map) !== of(previous)) wake.abort();
    });
    const stop = (): void => wake.abort();
    signal.addEventListener('abort', stop, { once: true });
    try {
      await this.io.clock.sleep(delayMs, wake.signal).catch(() => undefined);
    } finally {
      unsubscribe();
      signal.removeEventListener('abort', stop);
    }
  }

  memberHandle(pg: Pg, diskId: number): MemberHandle {
    return diskId === this.diskId ? localHandle(this, pg) : remoteHandle(this, pg, diskId);
  }

  /** Waits until the map holds `epoch` (a peer or client has seen it). */
  async catchUp(epoch: number): Promise<void> {
    if (this.closing) throw new TesseraError('Closed', 'daemon is closing');
    await this.view.waitForEpoch(epoch, this.epochWaitMs);
  }

  /** The step close() is in (for a stop that takes too long: src/cli/daemon.ts says where it waits). */
  closeStep = '';

  /** Marks the disk down, drains requests, closes. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.unsubscribe?.();
      for (const pg of this.pgs.values()) pg.peering?.abort();
      this.closeStep = 'stray removal';
      await this.strays.close();
      this.closeStep = 'read repairs';
      await this.readRepairs.close();
      // No heartbeat may mark the disk up again after it is marked down.
      this.heartbeats.abort();
      this.closeStep = 'heartbeat in flight';
      await this.heartbeatLoop;
      this.closeStep = 'peer heartbeats';
      await this.peerLoop;
      this.closeStep = 'marking itself down in the map';
      await this.options.mapService.change((m) => setDiskState(m, this.diskId, { up: false })).catch(() => undefined);
      this.closeStep = 'draining requests';
      await this.server?.close({ drainTimeoutMs: 10_000 });
      this.view.close();
      this.closeStep = 'peer connections';
      await this.peers.close();
      this.closeStep = 'purger';
      await this.purger.close();
      this.closeStep = 'store';
      await this.store.close();
      this.closeStep = 'closed';
    })();
    return this.closing;
  }
}
