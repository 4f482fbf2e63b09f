/**
 * Failure detection: storage daemons heartbeat the map daemon, which marks a
 * silent disk down after a grace period and out after a longer interval, and
 * records each disk's space state (near full, full) from the figures the
 * heartbeats carry. Runs in the map daemon beside the map server (opcode 130).
 *
 * - Peer reports (cluster/peer-reports.ts, opcode 131): a disk reported
 *   unreachable by peers of minDownReporters other hosts is refused at its
 *   heartbeats (Fenced): no lease, no receipt recorded, no record refreshed,
 *   no mark up. The ordinary grace then marks it down, after its last lease
 *   ended; the argument below needs nothing more. With shared records the
 *   reports are stored in etcd and every monitor reloads them at each check.
 * - A heartbeat from a disk marked down marks it up again (whoever marked it
 *   down: this monitor, `tessera up` when the process exited, an operator),
 *   and in again if this monitor had marked it out.
 * - Only disks this monitor has seen up (in a map or by a heartbeat) are
 *   marked out: a disk that never started stays in until an operator decides.
 * - Every check folds all its decisions into one map change (one epoch).
 * - State is in memory: a restarted map daemon gives every up disk a fresh
 *   grace period and forgets which disks it marked out (they are marked in
 *   by an operator then).
 * - Shared records (`records`, with etcd: cluster/liveness-etcd.ts): several
 *   map daemons serve one map, and a daemon's heartbeats may go to any of
 *   them (it fails over when its map daemon is unreachable). Each heartbeat
 *   refreshes the disk's record in etcd, which expires downGraceMs after the
 *   refresh unless refreshed again; every monitor reads the records at each
 *   check, and exactly one, the judge (elected through etcd, with a lease of
 *   its own), marks disks down and out. A disk is up to the judge while its
 *   record exists; once it saw a record expire the grace has passed already
 *   (etcd counted it); a disk it never saw a record of gets a grace from when
 *   this monitor started or saw it marked up. The judge's changes are fenced
 *   in etcd: stored only while it holds its lease and only if the records of
 *   the disks it marks down are absent. Which disks this monitor marked out
 *   is shared too (a heartbeat to any map daemon marks them in again).
 *   Without records (the embedded backend: one map daemon) the monitor judges
 *   every disk of the map from the heartbeats it receives itself.
 *
 * - Leases: every heartbeat reply grants the daemon a lease of `leaseMs`
 *   (default half of downGraceMs), counted by the daemon from when it *sent*
 *   that heartbeat; a primary serves client reads and acknowledges writes
 *   only while its lease holds (src/daemon/lease.ts). Why a lease always ends
 *   before this monitor can mark the disk down (and so before another primary
 *   can take over its pgs): the heartbeat was sent before it was received;
 *   the monitor records the *receipt* (lastSeenMs) and marks the disk down
 *   only after downGraceMs more of silence; so on a timeline of real time the
 *   lease ends at most leaseMs (daemon's clock) after the send, and the mark
 *   comes at least downGraceMs (monitor's clock) after the receipt. With
 *   monotonic clocks on both sides whose rates differ from real time by at
 *   most a fraction r, that holds while leaseMs / (1 - r) < downGraceMs / (1 + r):
 *   r < 1/3 for the default half (r < 1/7 at the allowed maximum, 3/4);
 *   real clocks drift by about 1e-4. Network delay, a slow reply, a resent
 *   heartbeat (the rpc may send it again; the daemon keeps the first send
 *   time) and this monitor's own stalls (it then extends every grace) only
 *   widen the gap. A restarted monitor starts every grace afresh, after the
 *   last receipt of its previous incarnation.
 *   With shared records (etcd) and failover between map daemons, the grace is
 *   counted by etcd instead: the map daemon that receives a heartbeat (any
 *   of them) refreshes the disk's record before it answers: it keeps alive
 *   the lease the record is on, or creates the record on a lease granted
 *   then, both after the receipt, so after the send, and sees the record on
 *   that lease afterwards (revision Q); the record then exists until at
 *   least that keepalive or grant + TTL (TTL = downGraceMs rounded up to
 *   whole seconds, on the etcd leader's clock; a leader change only extends
 *   leases; a present record is never moved to another lease, so nothing
 *   shortens its life: cluster/liveness-etcd.ts, which also says what an
 *   etcd leader cut off but not yet stepped down may do to a keepalive). The
 *   judge's mark down is stored only if the record is absent (the same etcd
 *   transaction), so at a revision M after the record expired. The reply's
 *   epoch is read at the refresh's revision Q or later: if Q < M the lease
 *   (send + leaseMs) ends before the record's expiry, so before M, under the
 *   same clock-rate condition with etcd's clock for the monitor's; if Q > M
 *   the reply names an epoch at least M's, and the daemon renews only once it
 *   holds that map, in which it is down (its pgs in a new interval). So it
 *   does not matter which map daemon answered, nor whether the one that did
 *   has died since, nor how long the judge waited. Not covered: a host
 *   suspended as a whole (CLOCK_MONOTONIC does not advance while a machine
 *   sleeps), and marks by others than the judge: `tessera up` marks a daemon
 *   down when its process exits (no lease to fear), an operator's `disk out`
 *   of a daemon that is alive but unreachable should wait for the judge's
 *   mark.
 *
 * Bounds: the maps kept are one (the latest, from a watch); lastSeen holds one
 * entry per disk of the map; peer reports one entry per reporting disk of the
 * map (cluster/peer-reports.ts).
 */
import type { Io, TimerHandle } from '../src/io/io.js';
import { Reader, Writer } from '../src/lib/codec.js';
import { TesseraError, invalid, toTesseraError } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import type { RpcClient, RpcHandler } from '../src/rpc/types.js';
import { setDiskSpace, setDiskState } from './map-edit.js';
import type { MapEdit, MapService } from './map-service.js';
import type { ClusterMap, DiskSpaceState } from './map.js';
import { accusations, decodePeerReport, encodeAccused, encodePeerSettings, PeerReportOpcode, PeerReports, type PeerReport, type PeerSettings } from './peer-reports.js';

export const LivenessOpcode = { heartbeat: 130 } as const;

export interface HeartbeatReport {
  diskId: number;
  /** The map epoch the daemon holds (informational). */
  epoch: number;
  usedBytes: number;
  totalBytes: number;
}

export interface HeartbeatReply {
  /** When to send the next heartbeat. */
  heartbeatIntervalMs: number;
  /** The newest map epoch the map daemon has. */
  epoch: number;
  /**
   * How long after sending this heartbeat its daemon may serve as a primary (a lease renewed by every reply;
   * absent from a map daemon too old to grant leases: the daemon then serves unfenced).
   */
  leaseMs?: number;
}

/** A daemon's side: where its heartbeats go. */
export interface LivenessReporter {
  /** How many map daemons the heartbeats may go to (several: they fail over, and time out sooner). Default 1. */
  readonly mapDaemons?: number;
  heartbeat(report: HeartbeatReport, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<HeartbeatReply>;
}

/**
 * Liveness shared by several map daemons (cluster/liveness-etcd.ts on etcd). Records expire downGraceMs (rounded
 * up to whole seconds) after their last refresh; see the module comment for the guarantees the monitor relies on.
 */
export interface LivenessRecords {
  /** Refreshes the disk's record; resolves with a map epoch read at the refresh or later. */
  refresh(diskId: number, signal?: AbortSignal): Promise<number>;
  /** The disks whose records exist now. */
  present(signal?: AbortSignal): Promise<Set<number>>;
  /** Whether this monitor is the judge now (campaigns when nobody is; renews its hold when it is). */
  lead(signal?: AbortSignal): Promise<boolean>;
  /** Whether the judge marked this disk out (a heartbeat then marks it in). */
  markedOut(diskId: number, signal?: AbortSignal): Promise<boolean>;
  /** The judge's change: stored only while it leads and none of `silent` has a record (else null); `out` recorded as marked out by it. */
  judge(edit: MapEdit, o: { silent: readonly number[]; out: readonly number[]; signal?: AbortSignal }): Promise<ClusterMap | null>;
  /** Stores a reporter's peer reports (cluster/peer-reports.ts) for every map daemon; an empty set removes them. They lapse after ttlMs. */
  putReports?(report: PeerReport, ttlMs: number, signal?: AbortSignal): Promise<void>;
  /** Every reporter's peer reports stored now. */
  reports?(signal?: AbortSignal): Promise<Array<{ reporter: number; epoch: number; targets: number[] }>>;
  /** A heartbeat's change (up, in, space); `back` are no longer marked out. */
  change(edit: MapEdit, o: { back: readonly number[]; signal?: AbortSignal }): Promise<ClusterMap>;
  close(): Promise<void>;
}

export interface LivenessOptions {
  /** Silence after which an up disk is marked down. Default limits.livenessDownGraceMsDefault. */
  downGraceMs?: number;
  /** Time down after which an in disk is marked out. Default limits.livenessOutIntervalMsDefault. */
  outIntervalMs?: number;
  /** The interval daemons are asked to heartbeat at. Default downGraceMs / 4, within the limits. */
  heartbeatIntervalMs?: number;
  /**
   * The lease each heartbeat reply grants (from the heartbeat's send time). Default downGraceMs x
   * limits.leaseGraceRatioDefault (half); at most leaseGraceRatioMax of it, at least two heartbeat intervals.
   */
  leaseMs?: number;
  /** used / total at which a disk is near full, and full. Defaults limits.diskNearFullRatioDefault, diskFullRatioDefault. */
  nearFullRatio?: number;
  fullRatio?: number;
  /**
   * Heartbeats between pg peers (cluster/peer-reports.ts): a peer silent this long is reported by the daemons that
   * ping it. Default downGraceMs; at least two heartbeat intervals.
   */
  peerGraceMs?: number;
  /** Distinct hosts whose reports make a disk lose its lease and be marked down. Default limits.minDownReportersDefault (2). */
  minDownReporters?: number;
}

export interface ResolvedLiveness {
  downGraceMs: number;
  outIntervalMs: number;
  heartbeatIntervalMs: number;
  leaseMs: number;
  nearFullRatio: number;
  fullRatio: number;
  peerGraceMs: number;
  minDownReporters: number;
}

export function resolveLiveness(o: LivenessOptions = {}): ResolvedLiveness {
  const downGraceMs = o.downGraceMs ?? limits.livenessDownGraceMsDefault;
  const outIntervalMs = o.outIntervalMs ?? limits.livenessOutIntervalMsDefault;
  const heartbeatIntervalMs = o.heartbeatIntervalMs ?? Math.min(limits.heartbeatIntervalMsMax, Math.max(limits.heartbeatIntervalMsMin, Math.floor(downGraceMs / 4)));
  const leaseMs = o.leaseMs ?? Math.floor(downGraceMs * limits.leaseGraceRatioDefault);
  const nearFullRatio = o.nearFullRatio ?? limits.diskNearFullRatioDefault;
  const fullRatio = o.fullRatio ?? limits.diskFullRatioDefault;
  if (!(downGraceMs > 0 && outIntervalMs > 0)) throw invalid(`liveness: downGraceMs (${downGraceMs}) and outIntervalMs (${outIntervalMs}) must be > 0`);
  if (!(leaseMs > 0 && leaseMs <= downGraceMs * limits.leaseGraceRatioMax)) {
    throw invalid(`liveness: leaseMs ${leaseMs} must be > 0 and at most ${limits.leaseGraceRatioMax} of downGraceMs ${downGraceMs} (a lease must end before the disk can be marked down)`);
  }
  if (heartbeatIntervalMs < limits.heartbeatIntervalMsMin || heartbeatIntervalMs > limits.heartbeatIntervalMsMax || heartbeatIntervalMs * 2 > leaseMs) {
    throw invalid(`liveness: heartbeatIntervalMs ${heartbeatIntervalMs} must be in [${limits.heartbeatIntervalMsMin}, ${limits.heartbeatIntervalMsMax}] and at most half of leaseMs ${leaseMs} (downGraceMs ${downGraceMs})`);
  }
  if (!(nearFullRatio > 0 && nearFullRatio <= fullRatio && fullRatio <= 1)) throw invalid(`liveness: need 0 < nearFullRatio (${nearFullRatio}) <= fullRatio (${fullRatio}) <= 1`);
  const peerGraceMs = o.peerGraceMs ?? downGraceMs;
  const minDownReporters = o.minDownReporters ?? limits.minDownReportersDefault;
  if (!(Number.isSafeInteger(peerGraceMs) && peerGraceMs >= 2 * heartbeatIntervalMs)) throw invalid(`liveness: peerGraceMs ${peerGraceMs} must be at least two heartbeat intervals (${heartbeatIntervalMs} ms): peers are pinged once per interval`);
  if (!(Number.isSafeInteger(minDownReporters) && minDownReporters >= 1)) throw invalid(`liveness: minDownReporters ${minDownReporters} must be a whole number >= 1`);
  return { downGraceMs, outIntervalMs, heartbeatIntervalMs, leaseMs, nearFullRatio, fullRatio, peerGraceMs, minDownReporters };
}

export function spaceState(usedBytes: number, totalBytes: number, o: Pick<ResolvedLiveness, 'nearFullRatio' | 'fullRatio'>): DiskSpaceState | undefined {
  if (totalBytes <= 0) return undefined;
  const ratio = usedBytes / totalBytes;
  if (ratio >= o.fullRatio) return 'full';
  if (ratio >= o.nearFullRatio) return 'nearFull';
  return undefined;
}

export class LivenessMonitor {
  readonly options: ResolvedLiveness;
  readonly handler: RpcHandler;
  /** Peer failure reports (opcode 131, cluster/peer-reports.ts). */
  readonly reportHandler: RpcHandler;
  private latest: ClusterMap | null = null;
  private readonly lastSeenMs = new Map<number, number>();
  private readonly downSinceMs = new Map<number, number>();
  /** Disks seen up at some point (only those are marked out automatically). */
  private readonly seenUp = new Set<number>();
  /** Shared records: disks whose record this monitor saw at its last check. */
  private readonly recorded = new Set<number>();
  /** Disks this monitor marked out: a heartbeat marks them in again (without shared records). */
  private readonly markedOut = new Set<number>();
  private readonly startedMs: number;
  /** Failure reports between peers (cluster/peer-reports.ts); with shared records, reloaded from them at every check. */
  private readonly peerReports = new PeerReports();
  /** Per disk, the map epoch at which this monitor saw it come up (a report made before counts no more). */
  private readonly upFromEpoch = new Map<number, number>();
  /** Disks accused by their peers now (refused leases), with who accuses them (for the log). */
  private readonly accused = new Map<number, string>();
  private readonly subscription = new AbortController();
  private readonly records: LivenessRecords | null;
  private timer: TimerHandle | null = null;
  private checking: Promise<void> | null = null;
  private lastCheckMs: number | null = null;
  private closed = false;

  constructor(
    private readonly io: Pick<Io, 'clock'>,
    private readonly service: MapService,
    options: LivenessOptions = {},
    /** Liveness shared with other map daemons (etcd: cluster/liveness-etcd.ts); closed with this monitor. */
    records?: LivenessRecords,
  ) {
    this.options = resolveLiveness(options);
    this.records = records ?? null;
    this.startedMs = io.clock.monotonicMs();
    this.handler = (request) => this.handle(request.op, request.header);
    this.reportHandler = async (request) => {
      if (request.op === PeerReportOpcode.accused) return { header: encodeAccused([...this.accused].map(([diskId, by]) => ({ diskId, by }))) };
      if (request.op !== PeerReportOpcode.report) throw new TesseraError('NotSupported', `unknown peer report operation ${request.op}`);
      return { header: encodePeerSettings(await this.peerReport(decodePeerReport(request.header))) };
    };
    service.watch(0, (map) => this.observe(map), this.subscription.signal, { onError: () => undefined });
    this.schedule();
  }

  /** Stops checking; heartbeats are refused (Closed); resigns as the judge. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.subscription.abort();
    if (this.timer !== null) this.io.clock.clearTimeout(this.timer);
    await this.checking;
    await this.records?.close();
  }

  /** Records a heartbeat; marks the disk up (and in, if the failure detector marked it out) and its space state. */
  async heartbeat(report: HeartbeatReport): Promise<HeartbeatReply> {
    if (this.closed) throw new TesseraError('Closed', 'liveness monitor is closing');
    // Accused by its peers: no lease, no record refreshed, no receipt recorded, no mark up. So it is marked down once
    // downGraceMs passed since the last heartbeat that was granted one (the lease argument above is unchanged).
    this.refuseAccused(report.diskId);
    // Shared records: the record first, then the epoch read after it (the lease argument in the module comment).
    const refreshedEpoch = this.records ? await this.records.refresh(report.diskId) : 0;
    const now = this.io.clock.monotonicMs();
    this.lastSeenMs.set(report.diskId, now);
    this.seenUp.add(report.diskId);
    let map = this.latest ?? (await this.service.current());
    const disk = map.disks.find((d) => d.id === report.diskId);
    if (!disk) throw new TesseraError('NotFound', `disk ${report.diskId} is not in the map`);
    const space = spaceState(report.usedBytes, report.totalBytes, this.options);
    const bringIn = !disk.in && (this.records ? await this.records.markedOut(disk.id) : this.markedOut.has(disk.id));
    if (!disk.up || bringIn || disk.space !== space) {
      const edit = (m: ClusterMap): ClusterMap => {
        const d = m.disks.find((x) => x.id === report.diskId);
        if (!d) return m;
        const state = { up: true, ...(!d.in && bringIn ? { in: true } : {}) };
        return setDiskSpace(setDiskState(m, d.id, state), d.id, space);
      };
      map = this.records ? await this.records.change(edit, { back: bringIn ? [disk.id] : [] }) : await this.service.change(edit);
      this.markedOut.delete(report.diskId);
      this.downSinceMs.delete(report.diskId);
      this.observe(map);
    }
    return { heartbeatIntervalMs: this.options.heartbeatIntervalMs, epoch: Math.max(map.epoch, refreshedEpoch), leaseMs: this.options.leaseMs };
  }

  /** A reporter's peer reports (its whole set, replacing the previous one); answers the settings reporters use. */
  async peerReport(report: PeerReport): Promise<PeerSettings> {
    if (this.closed) throw new TesseraError('Closed', 'liveness monitor is closing');
    const map = this.latest ?? (await this.service.current());
    const from = map.disks.find((d) => d.id === report.reporter);
    if (!from) throw new TesseraError('NotFound', `disk ${report.reporter} is not in the map`);
    const ttlMs = this.reportTtlMs;
    // Shared: stored for every map daemon before this one acts on it (a failure leaves the reporter to send it again).
    await this.records?.putReports?.(report, ttlMs);
    const { added, withdrawn } = this.peerReports.set(report.reporter, report.epoch, report.targets, this.io.clock.monotonicMs() + ttlMs);
    for (const t of added) console.error(`liveness: disk ${report.reporter} (${from.host}) reports disk ${t} unreachable (no ping answered for ${this.options.peerGraceMs} ms; its epoch ${report.epoch})`);
    for (const t of withdrawn) console.error(`liveness: disk ${report.reporter} withdrew its report of disk ${t} (it answers again)`);
    this.review(map);
    return { peerGraceMs: this.options.peerGraceMs, pingIntervalMs: this.options.heartbeatIntervalMs };
  }

  /**
   * How long a report counts after its last refresh: peerReportTtlIntervals intervals, and never less than the
   * down grace. A reporter refreshes every interval, but a loaded reporter can be late by more than a few short
   * intervals (tests use 250 ms): its report lapsed, the accused disk's next heartbeat was taken, and a disk still
   * cut from its peers came back up for a while. A report standing for the down grace outlives no reporter: one
   * that died or lost the map daemon is marked down within it, and a down reporter's reports do not count.
   */
  private get reportTtlMs(): number {
    return Math.max(limits.peerReportTtlIntervals * this.options.heartbeatIntervalMs, this.options.downGraceMs);
  }

  /** Fenced (no lease) while enough peers on other hosts report the disk unreachable (as of the last review). */
  private refuseAccused(diskId: number): void {
    const by = this.accused.get(diskId);
    if (by === undefined) return;
    throw new TesseraError('Fenced', `reported unreachable by ${by}: no primary lease until they reach it again; it is marked down once its last lease has ended`);
  }

  /**
   * Decides which disks are accused from the reports held now (at every report and every check; cluster/peer-reports.ts
   * `accusations`), and logs those that became so (their leases stop) and those no longer so.
   */
  private review(map: ClusterMap): void {
    const now = accusations({ map, reports: this.peerReports.reports, nowMs: this.io.clock.monotonicMs(), minDownReporters: this.options.minDownReporters, upFromEpoch: (id) => this.upFromEpoch.get(id) ?? 0 });
    for (const [target, a] of now) {
      const by = `disks ${a.reporters.join(',')} (hosts ${a.hosts.join(',')})`;
      if (!this.accused.has(target)) console.error(`liveness: disk ${target} reported unreachable by ${by}: its heartbeats get no lease from now on, and it is marked down once its last lease has ended`);
      this.accused.set(target, by);
    }
    for (const target of [...this.accused.keys()]) {
      if (now.has(target)) continue;
      console.error(`liveness: disk ${target} no longer reported unreachable by ${this.options.minDownReporters} hosts (reports withdrawn or lapsed): its heartbeats get leases again`);
      this.accused.delete(target);
    }
  }

  /** Disks accused by their peers now, with who accuses them (`tessera status` could show them; logged on change). */
  accusedDisks(): ReadonlyMap<number, string> {
    return this.accused;
  }

  private observe(map: ClusterMap): void {
    const previous = this.latest;
    if (previous !== null && map.epoch <= previous.epoch) return;
    this.latest = map;
    const now = this.io.clock.monotonicMs();
    for (const d of map.disks) {
      if (!d.up) {
        // Down: counted from when this monitor first saw it so (followers too: a new judge continues the count).
        if (!this.downSinceMs.has(d.id)) this.downSinceMs.set(d.id, now);
        continue;
      }
      this.downSinceMs.delete(d.id);
      this.seenUp.add(d.id);
      // Marked up (by its daemon at start, or an operator): its grace starts now, not when this monitor started.
      if (previous !== null && previous.disks.find((x) => x.id === d.id)?.up !== true) {
        this.lastSeenMs.set(d.id, Math.max(now, this.lastSeenMs.get(d.id) ?? 0));
        this.upFromEpoch.set(d.id, map.epoch);
      }
    }
  }

  private get checkEveryMs(): number {
    return Math.max(10, Math.min(this.options.heartbeatIntervalMs, Math.floor(this.options.outIntervalMs / 4)));
  }

  private schedule(): void {
    if (this.closed) return;
    const everyMs = this.checkEveryMs;
    this.timer = this.io.clock.setTimeout(() => {
      this.checking = this.check()
        .catch((err) => console.error(`liveness check failed: ${toTesseraError(err).message}`))
        .finally(() => {
          this.checking = null;
          this.schedule();
        });
    }, everyMs);
  }

  /** Shared records: who has one now; a record gone since the last check expired (its grace is over). Whether this monitor judges. */
  private async readRecords(now: number): Promise<{ judge: boolean; present: Set<number> | null }> {
    if (this.records === null) return { judge: true, present: null };
    const present = await this.records.present();
    for (const id of present) this.lastSeenMs.set(id, now);
    for (const id of this.recorded) if (!present.has(id)) this.lastSeenMs.set(id, -Infinity);
    this.recorded.clear();
    for (const id of present) this.recorded.add(id);
    return { judge: await this.records.lead(), present };
  }

  /** Drops lapsed peer reports; with shared records, takes every map daemon's reports as stored now. */
  private async reloadReports(now: number): Promise<void> {
    if (this.records?.reports) {
      const stored = await this.records.reports();
      const seen = new Set<number>();
      for (const r of stored) {
        seen.add(r.reporter);
        this.peerReports.set(r.reporter, r.epoch, r.targets, now + this.reportTtlMs);
      }
      for (const reporter of [...this.peerReports.reports.keys()]) if (!seen.has(reporter)) this.peerReports.set(reporter, 0, [], 0);
    }
    for (const reporter of this.peerReports.expire(now)) console.error(`liveness: the reports of disk ${reporter} lapsed (not refreshed for ${this.reportTtlMs} ms)`);
  }

  /** Marks silent disks down and long-down disks out, in one map change. */
  private async check(): Promise<void> {
    if (this.latest === null || this.closed) return;
    const now = this.io.clock.monotonicMs();
    const { downGraceMs, outIntervalMs } = this.options;
    // This process itself stalled (its event loop held up): heartbeats may be waiting unread. Extend
    // everyone's grace by the stall rather than take our own delay for the disks' silence.
    const stalledMs = this.lastCheckMs === null ? 0 : now - this.lastCheckMs - 2 * this.checkEveryMs;
    this.lastCheckMs = now;
    if (stalledMs > 0) {
      for (const [id, seen] of this.lastSeenMs) this.lastSeenMs.set(id, seen + stalledMs);
      return;
    }
    const { judge, present } = await this.readRecords(now);
    await this.reloadReports(now);
    const map = this.latest;
    this.review(map);
    if (!judge || this.closed) return;
    const silent = (id: number): boolean => !present?.has(id) && now - (this.lastSeenMs.get(id) ?? this.startedMs) > downGraceMs;
    const toDown: number[] = [];
    const toOut: number[] = [];
    for (const d of map.disks) {
      if (d.up) {
        if (silent(d.id)) toDown.push(d.id);
        continue;
      }
      const since = this.downSinceMs.get(d.id);
      if (since !== undefined && d.in && this.seenUp.has(d.id) && now - since > outIntervalMs) toOut.push(d.id);
    }
    if (toDown.length === 0 && toOut.length === 0) return;
    const edit = (m: ClusterMap): ClusterMap => {
      let edited = m;
      for (const id of toDown) {
        const d = edited.disks.find((x) => x.id === id);
        // A heartbeat may have arrived meanwhile.
        if (d?.up && silent(id)) edited = setDiskState(edited, id, { up: false });
      }
      for (const id of toOut) {
        const d = edited.disks.find((x) => x.id === id);
        if (d && !d.up && d.in) edited = setDiskState(edited, id, { in: false });
      }
      return edited;
    };
    const next = this.records ? await this.records.judge(edit, { silent: toDown, out: toOut }) : await this.service.change(edit);
    // A record came back (a heartbeat), or this monitor is no longer the judge: the next check decides again.
    if (next === null) return;
    for (const id of toDown) {
      if (next.disks.find((d) => d.id === id)?.up) continue;
      const by = this.accused.get(id);
      if (by !== undefined) console.error(`liveness: disk ${id} marked down: reported unreachable by ${by}, and its last lease has ended (no heartbeat granted one for ${downGraceMs} ms), epoch ${next.epoch}`);
      else console.error(`liveness: disk ${id} marked down (no heartbeat for ${downGraceMs} ms), epoch ${next.epoch}`);
    }
    for (const id of toOut) {
      if (next.disks.find((d) => d.id === id)?.in === false) {
        this.markedOut.add(id);
        console.error(`liveness: disk ${id} marked out (down for ${outIntervalMs} ms), epoch ${next.epoch}`);
      }
    }
    this.observe(next);
  }

  private async handle(op: number, header: Buffer): Promise<{ header: Buffer }> {
    if (op !== LivenessOpcode.heartbeat) throw new TesseraError('NotSupported', `unknown liveness operation ${op}`);
    const reply = await this.heartbeat(decodeReport(header));
    return { header: new Writer(24).varint(reply.heartbeatIntervalMs).varint(reply.epoch).varint(reply.leaseMs ?? 0).finish() };
  }
}

function encodeReport(r: HeartbeatReport): Buffer {
  return new Writer(32).varint(r.diskId).varint(r.epoch).varint(r.usedBytes).varint(r.totalBytes).finish();
}

function decodeReport(header: Buffer): HeartbeatReport {
  const r = new Reader(header, 'ProtocolError', 'heartbeat');
  const report = { diskId: r.varint(0xffff_ffff), epoch: r.varint(), usedBytes: r.varint(), totalBytes: r.varint() };
  r.end();
  return report;
}

/** A reply: interval, epoch, then the lease (absent from map daemons that grant none; 0 reads as absent). */
export function decodeReply(header: Buffer): HeartbeatReply {
  const r = new Reader(header, 'ProtocolError', 'heartbeat reply');
  const out: HeartbeatReply = { heartbeatIntervalMs: r.varint(), epoch: r.varint() };
  if (r.remainingBytes > 0) {
    const leaseMs = r.varint();
    if (leaseMs > 0) out.leaseMs = leaseMs;
  }
  r.end();
  return out;
}

/** The heartbeat rpc of a map daemon in another process. */
export class LivenessClient implements LivenessReporter {
  constructor(
    private readonly rpc: RpcClient,
    private readonly timeoutMs: number = limits.heartbeatTimeoutMsMax,
    /** The map daemons `rpc` fails over between. */
    readonly mapDaemons: number = 1,
  ) {}

  async heartbeat(report: HeartbeatReport, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<HeartbeatReply> {
    const reply = await this.rpc.call(LivenessOpcode.heartbeat, encodeReport(report), [], {
      // Resent on a new connection if need be: the daemon counts its lease from the first send, so a resend only shortens it.
      idempotent: true,
      timeoutMs: options.timeoutMs ?? this.timeoutMs,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return decodeReply(reply.header);
  }
}
