/**
 * The primary lease and the heartbeats that renew it.
 *
 * A daemon cut off from the map daemon (and so, soon, marked down while its
 * pgs move to other primaries) may still be reachable by a client holding an
 * old map. Replicated writes need every acting member and members refuse
 * older intervals, but a read is served by the primary alone, so without
 * more it could answer from its old copy after a new primary took newer
 * writes. The lease closes that: each heartbeat reply from the map daemon
 * lets this daemon serve as a primary until the heartbeat's *send* time +
 * the reply's `leaseMs`; the map daemon marks a disk down only downGraceMs
 * after it *received* its last heartbeat, and leaseMs is a fraction of that
 * (the argument, with its clock assumptions, is in cluster/liveness.ts). So a
 * lease always ends before the disk can be marked down, before any other
 * primary of its pgs exists. Client requests are checked when they arrive
 * and again before they are answered (osd-service.ts): nothing is read or
 * acknowledged after the lease ends. A write so refused may have been
 * applied; it is not acknowledged, and the client's retry (same request id)
 * is answered from the pg log by whichever primary serves it.
 *
 * A reply that names a newer map epoch than this daemon holds renews the
 * lease only once the daemon holds that epoch: a primary healed from a
 * partition must first learn that it was marked down (a new interval) before
 * it serves again, or its renewed lease would cover its old, stale interval.
 *
 * When the map daemon itself is away (restarting), every lease lapses leaseMs
 * after the last answered heartbeat: client I/O pauses (Unavailable, which
 * clients retry) and resumes with the first answer; heartbeats are retried
 * every quarter interval meanwhile so the pause ends soon after it is back.
 * With several map daemons (etcd; the reporter fails over between them) a
 * heartbeat that fails goes to the next one, soon enough that the lease holds
 * (heartbeatTimeoutMs below): which map daemon answers does not matter to the
 * lease argument (cluster/liveness.ts).
 *
 * A disk its peers report unreachable (cluster/peer-reports.ts) has its
 * heartbeats refused (`Fenced`, logged as a failed heartbeat naming the
 * reporters): its lease runs out like a cut-off primary's, and it is marked
 * down only after that.
 *
 * The hot path is one monotonic clock read and a compare (`check`).
 */
import type { Clock, Io } from '../io/io.js';
import { TesseraError, toTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { HeartbeatReply, LivenessReporter } from '../../cluster/liveness.js';
import type { MapView } from '../../cluster/map-view.js';

export class PrimaryLease {
  /** Monotonic time (this process's clock) until which the lease holds. */
  private untilMs = -Infinity;
  private enforced: boolean;
  private lapseNoticed = false;
  private unfencedLogged = false;
  /** Times the lease ran out (each logged), and client requests refused meanwhile: metrics. */
  lapses = 0;
  refusals = 0;

  constructor(
    private readonly clock: Pick<Clock, 'monotonicMs'>,
    private readonly log: (message: string) => void,
    /** False: no map daemon grants leases here (no heartbeats at all): client I/O is not fenced. */
    enforced: boolean,
  ) {
    this.enforced = enforced;
  }

  /** Whether this daemon may serve clients as a primary now. */
  holds(): boolean {
    return !this.enforced || this.clock.monotonicMs() < this.untilMs;
  }

  /** Milliseconds left (negative once lapsed; Infinity when not enforced). */
  remainingMs(): number {
    return this.enforced ? this.untilMs - this.clock.monotonicMs() : Infinity;
  }

  /** Unavailable (clients retry, with a fresh map) unless the lease holds. */
  check(): void {
    if (!this.enforced) return;
    const nowMs = this.clock.monotonicMs();
    if (nowMs < this.untilMs) return;
    this.refusals++;
    this.noticeLapse(nowMs);
    throw new TesseraError('Unavailable', `primary lease lapsed ${this.lapsedFor(nowMs)}: no heartbeat answered by the map daemon in time (cut off, or the map daemon is restarting); retry with a newer map`);
  }

  /** A heartbeat sent at sentMs (this clock) was answered with a lease of leaseMs: holds until sentMs + leaseMs (never shortened). */
  renew(sentMs: number, leaseMs: number): void {
    this.enforced = true;
    const nowMs = this.clock.monotonicMs();
    const untilMs = sentMs + leaseMs;
    if (untilMs <= this.untilMs) return;
    if (this.lapseNoticed && untilMs > nowMs) {
      this.log(`primary lease renewed after it lapsed ${this.lapsedFor(nowMs)}: serving clients again`);
      this.lapseNoticed = false;
    }
    this.untilMs = untilMs;
  }

  /** A map daemon that grants no lease (an older version): I/O is served unfenced, and the operator told once. */
  unfenced(): void {
    this.enforced = false;
    if (!this.unfencedLogged) this.log('the map daemon grants no primary lease (an older version): client reads and writes are not fenced by lease');
    this.unfencedLogged = true;
  }

  /** Logs (once per lapse) that the lease ran out; called by checks and after every heartbeat. */
  noticeLapse(nowMs = this.clock.monotonicMs()): void {
    if (!this.enforced || this.lapseNoticed || nowMs < this.untilMs) return;
    this.lapseNoticed = true;
    this.lapses++;
    this.log(`primary lease lapsed ${this.lapsedFor(nowMs)} (no heartbeat answered in time): refusing client reads and writes (Unavailable) until the map daemon answers`);
  }

  private lapsedFor(nowMs: number): string {
    return this.untilMs === -Infinity ? '(none granted yet)' : `${Math.round(nowMs - this.untilMs)} ms ago`;
  }
}

export interface HeartbeatOptions {
  io: Io;
  reporter: LivenessReporter;
  lease: PrimaryLease;
  view: MapView;
  diskId: number;
  /** The store's figures as last refreshed, and a refresh in the background (never awaited by a heartbeat). */
  space(): { usedBytes: number; totalBytes: number };
  refreshSpace(): void;
  signal: AbortSignal;
  log(message: string): void;
}

/**
 * Heartbeats the map daemon at the interval it asks for until the signal aborts, renewing the lease.
 * `firstReply` settles after the first attempt (and the lease it granted, if any); `stopped` when the loop ends.
 */
export function startHeartbeats(o: HeartbeatOptions): { firstReply: Promise<void>; stopped: Promise<void> } {
  const { clock } = o.io;
  const { signal, lease } = o;
  let firstDone!: () => void;
  const firstReply = new Promise<void>((resolve) => (firstDone = resolve));
  // One map fetch at a time, however many replies name a newer epoch while it runs.
  let refreshing: Promise<void> | null = null;
  const refresh = (): Promise<void> =>
    (refreshing ??= o.view.refresh().then(
      () => {
        refreshing = null;
      },
      () => {
        refreshing = null;
      },
    ));
  const stopped = (async () => {
    let intervalMs: number = limits.heartbeatIntervalMsDefault;
    let timeoutMs: number = limits.heartbeatTimeoutMsMax;
    let failing = false;
    let first = true;
    let spaceRefreshedMs = -Infinity;
    while (!signal.aborted) {
      try {
        // Space figures are refreshed in the background at most every heartbeatIntervalMsDefault: a heartbeat
        // never waits for the file system (its thread pool may be busy with recovery).
        if (clock.monotonicMs() - spaceRefreshedMs >= limits.heartbeatIntervalMsDefault) {
          spaceRefreshedMs = clock.monotonicMs();
          o.refreshSpace();
        }
        const space = o.space();
        const sentMs = clock.monotonicMs();
        const reply = await o.reporter.heartbeat({ diskId: o.diskId, epoch: o.view.epoch, usedBytes: space.usedBytes, totalBytes: space.totalBytes }, { signal, timeoutMs });
        intervalMs = Math.min(limits.heartbeatIntervalMsMax, Math.max(limits.heartbeatIntervalMsMin, reply.heartbeatIntervalMs));
        if (reply.leaseMs !== undefined) timeoutMs = heartbeatTimeoutMs(intervalMs, reply.leaseMs, o.reporter.mapDaemons ?? 1);
        const granted = grant(o, reply, sentMs, refresh);
        // Only the first waits for the map it names (start-up); later ones never hold the next heartbeat back.
        if (first) await granted;
        failing = false;
      } catch (err) {
        if (!signal.aborted && !failing) o.log(`heartbeat failed: ${toTesseraError(err).message}`);
        failing = true;
      }
      if (first) {
        first = false;
        firstDone();
      }
      lease.noticeLapse();
      // Failing: try again soon, so a lease lapsed while the map daemon restarted comes back soon after it does.
      const sleepMs = failing ? Math.max(limits.heartbeatIntervalMsMin, Math.floor(intervalMs / 4)) : intervalMs;
      await clock.sleep(sleepMs, signal).catch(() => undefined);
    }
    firstDone();
  })();
  return { firstReply, stopped };
}

/**
 * How long a heartbeat waits for its reply. One map daemon: up to the lease (a later reply renews nothing). Several
 * (they fail over): half of what the lease leaves after one interval, so that a heartbeat to a map daemon that went
 * silent (no reset: its host is gone) times out, and the next one (after a quarter interval) goes to another map
 * daemon, before the lease ends: interval + timeout + interval / 4 < lease while the interval is at most half the
 * lease (the monitor's rule). A map daemon killed (its connections reset, connects refused) fails over within the
 * same heartbeat.
 */
export function heartbeatTimeoutMs(intervalMs: number, leaseMs: number, mapDaemons: number): number {
  const oneMs = Math.min(limits.heartbeatTimeoutMsMax, Math.max(intervalMs, leaseMs));
  if (mapDaemons <= 1) return oneMs;
  return Math.min(oneMs, Math.max(limits.heartbeatIntervalMsMin, Math.floor((leaseMs - intervalMs) / 2)));
}

/** Renews the lease from a reply, once this daemon holds the map epoch the reply names (fetched if need be). */
async function grant(o: HeartbeatOptions, reply: HeartbeatReply, sentMs: number, refresh: () => Promise<void>): Promise<void> {
  if (reply.leaseMs === undefined) {
    o.lease.unfenced();
    if (reply.epoch > o.view.epoch) await refresh();
    return;
  }
  if (reply.epoch > o.view.epoch) {
    // This daemon may have been marked down meanwhile: its pgs' new intervals must start (onMap) before it serves again.
    await refresh();
    if (o.view.epoch < reply.epoch) return;
  }
  o.lease.renew(sentMs, reply.leaseMs);
}
