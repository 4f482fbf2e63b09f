/**
 * Heartbeats between pg peers (Ceph's OSD heartbeats). Every ping interval
 * this daemon pings each disk it shares a pg with (the up members of its pgs,
 * and any disk it reports now), on connections of their own (a ping never
 * waits behind replication traffic; one ping in flight per peer). A peer
 * that answered no ping for peerGraceMs is reported to the map daemon
 * (cluster/peer-reports.ts: the whole set of disks this one reports, sent
 * whenever it changes and every interval while it is not empty, so reports
 * are refreshed while peers stay silent); a reported peer that answers again
 * is withdrawn from the set at once. The map daemon decides: reports from
 * enough hosts and the peer gets no more leases, then is marked down
 * (cluster/liveness.ts).
 *
 * Grace and interval are the map daemon's (the report's reply carries them);
 * until the first reply nothing is pinged. A map daemon that does not know
 * the report rpc (an older version) answers NotSupported: peer heartbeats are
 * off, said once in the log.
 *
 * Not a peer's silence: a new peer (a map change made it one, or it came up,
 * or moved to another address) gets a fresh grace; when this daemon itself
 * stalled (its loop late by more than an interval) every peer's silence is
 * shortened by the stall.
 *
 * Bounds: at most limits.peerPingTargetsMax peers (the lowest disk ids when
 * there are more, said once in the log); one ping in flight per peer, each
 * with a timeout; reports name at most limits.peerReportTargetsMax disks.
 */
import type { Io } from '../io/io.js';
import { isTesseraError, toTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { ConnectionPool } from '../protocol/connections.js';
import { OsdOpcode } from '../protocol/osd-messages.js';
import { decodePing, encodePing } from '../protocol/osd-admin-messages.js';
import type { MapView } from '../../cluster/map-view.js';
import type { ClusterMap } from '../../cluster/map.js';
import { HOLE } from '../../cluster/placement.js';
import type { PeerReporter, PeerSettings } from '../../cluster/peer-reports.js';

export interface PeerHeartbeatOptions {
  io: Io;
  view: MapView;
  diskId: number;
  reporter: PeerReporter;
  signal: AbortSignal;
  log(message: string): void;
}

interface PeerState {
  address: string;
  /** Up in the map when last looked at: one that comes up (a new life) gets a fresh grace. */
  up: boolean;
  /** Monotonic time of the last answer (or when it became a peer: a fresh grace). */
  lastAnswerMs: number;
  pinging: boolean;
}

/** Counters for metrics and tests. */
export interface PeerHeartbeatStats {
  peers: number;
  /** Peers reported now. */
  reported: number;
  pingsFailed: number;
  reportsSent: number;
}

export class PeerHeartbeats {
  private readonly peers = new Map<number, PeerState>();
  /** The set the map daemon last accepted from this reporter. */
  private sent: number[] = [];
  private settings: PeerSettings | null = null;
  private readonly pool: ConnectionPool;
  private truncatedLogged = false;
  private readonly stats = { pingsFailed: 0, reportsSent: 0 };

  constructor(private readonly o: PeerHeartbeatOptions) {
    // One attempt per ping: a ping that could not go out is simply a ping not answered.
    this.pool = new ConnectionPool(o.io, { rpcAttemptsMax: 1 });
  }

  snapshot(): PeerHeartbeatStats {
    return { peers: this.peers.size, reported: this.sent.length, ...this.stats };
  }

  /** Pings and reports until the signal aborts; then closes its connections. */
  async run(): Promise<void> {
    const { clock } = this.o.io;
    const { signal } = this.o;
    let lastTickMs: number | null = null;
    let failingSince: number | null = null;
    try {
      while (!signal.aborted) {
        const intervalMs = this.settings?.pingIntervalMs ?? limits.heartbeatIntervalMsDefault;
        const nowMs = clock.monotonicMs();
        // Late by more than an interval: this process stalled, which is no peer's silence.
        if (lastTickMs !== null && nowMs - lastTickMs > 2 * intervalMs) {
          const stalledMs = nowMs - lastTickMs - intervalMs;
          for (const p of this.peers.values()) p.lastAnswerMs += stalledMs;
        }
        lastTickMs = nowMs;
        try {
          if (this.settings === null) await this.report([]);
          else await this.tick(this.settings);
          failingSince = null;
        } catch (err) {
          const e = toTesseraError(err);
          if (e.code === 'NotSupported') {
            this.o.log('the map daemon does not take peer failure reports (an older version): heartbeats between peers are off');
            return;
          }
          if (!signal.aborted && failingSince === null) this.o.log(`peer failure report not delivered (retrying every interval): ${e.code} ${e.message}`);
          failingSince ??= nowMs;
        }
        await clock.sleep(this.settings?.pingIntervalMs ?? intervalMs, signal).catch(() => undefined);
      }
    } finally {
      await this.pool.close();
    }
  }

  /** One round: the peer set brought up to date, pings sent, the reported set sent if it changed or is not empty. */
  private async tick(settings: PeerSettings): Promise<void> {
    const nowMs = this.o.io.clock.monotonicMs();
    this.updatePeers(this.o.view.map, nowMs);
    for (const [diskId, peer] of this.peers) if (!peer.pinging) this.ping(diskId, peer, settings);
    const silent: number[] = [];
    for (const [diskId, peer] of this.peers) if (nowMs - peer.lastAnswerMs > settings.peerGraceMs) silent.push(diskId);
    silent.sort((a, b) => a - b);
    const targets = silent.slice(0, limits.peerReportTargetsMax);
    if (targets.length === 0 && this.sent.length === 0) return;
    const before = new Set(this.sent);
    await this.report(targets);
    for (const t of targets) if (!before.has(t)) this.o.log(`reporting disk ${t} unreachable to the map daemon: no answer to pings for ${Math.round(nowMs - this.peers.get(t)!.lastAnswerMs)} ms (grace ${settings.peerGraceMs} ms)`);
    for (const t of before) if (!targets.includes(t)) this.o.log(`disk ${t} answers pings again: report withdrawn`);
  }

  private async report(targets: number[]): Promise<void> {
    const timeoutMs = Math.min(limits.heartbeatTimeoutMsMax, Math.max(limits.heartbeatIntervalMsMin, this.settings?.pingIntervalMs ?? limits.heartbeatTimeoutMsMax));
    this.settings = await this.o.reporter.report({ reporter: this.o.diskId, epoch: this.o.view.epoch, targets }, { signal: this.o.signal, timeoutMs });
    this.sent = targets;
    this.stats.reportsSent++;
  }

  /**
   * The disks to ping: the up members of every pg this disk is a member of, and those reported now (down or not:
   * their answer withdraws the report). A new peer, or one at a new address, starts with a fresh grace.
   */
  private updatePeers(map: ClusterMap, nowMs: number): void {
    const { view, diskId } = this.o;
    const wanted = new Set<number>(this.sent);
    for (const pool of map.pools) {
      for (let pg = 0; pg < pool.pgCount; pg++) {
        const placement = view.pg(pool, pg);
        if (!placement.members.includes(diskId)) continue;
        for (const d of placement.acting) if (d !== HOLE && d !== diskId) wanted.add(d);
      }
    }
    let ids = [...wanted].sort((a, b) => a - b);
    if (ids.length > limits.peerPingTargetsMax) {
      if (!this.truncatedLogged) this.o.log(`shares pgs with ${ids.length} disks: pinging the first ${limits.peerPingTargetsMax} only (limits.peerPingTargetsMax)`);
      this.truncatedLogged = true;
      ids = ids.slice(0, limits.peerPingTargetsMax);
    }
    const keep = new Set(ids);
    for (const id of [...this.peers.keys()]) if (!keep.has(id)) this.peers.delete(id);
    for (const id of ids) {
      const address = view.address(id);
      if (address === null) {
        this.peers.delete(id);
        continue;
      }
      const up = view.isUp(id);
      const known = this.peers.get(id);
      if (known && known.address === address && (known.up || !up)) {
        known.up = up;
        continue;
      }
      if (known) Object.assign(known, { address, up, lastAnswerMs: nowMs });
      else this.peers.set(id, { address, up, lastAnswerMs: nowMs, pinging: false });
    }
  }

  /** One ping in flight per peer; an answer from that very disk counts; a ping that timed out drops its connection. */
  private ping(diskId: number, peer: PeerState, settings: PeerSettings): void {
    const { io, signal } = this.o;
    peer.pinging = true;
    const timeoutMs = Math.max(limits.heartbeatIntervalMsMin, Math.min(settings.peerGraceMs, 2 * settings.pingIntervalMs));
    let rpc;
    try {
      rpc = this.pool.get(peer.address);
    } catch {
      peer.pinging = false;
      return;
    }
    void rpc
      .call(OsdOpcode.ping, encodePing({ diskId: this.o.diskId, epoch: this.o.view.epoch }), [], { timeoutMs, signal })
      .then(
        (reply) => {
          let from: number | null = null;
          try {
            from = decodePing(reply.header).diskId;
          } catch {
            this.stats.pingsFailed++;
          }
          if (from === diskId) peer.lastAnswerMs = Math.max(peer.lastAnswerMs, io.clock.monotonicMs());
        },
        (err: unknown) => {
          this.stats.pingsFailed++;
          // A connection that swallowed a ping may be black-holed: the next ping opens a new one.
          if (!signal.aborted && (isTesseraError(err, 'Timeout') || isTesseraError(err, 'Unavailable'))) this.pool.forget(peer.address);
        },
      )
      .finally(() => {
        peer.pinging = false;
      });
  }
}
