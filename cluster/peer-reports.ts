/**
 * Failure reports between pg peers (Ceph's OSD failure reports), kept by the
 * map daemon: storage daemons ping the disks they share pgs with
 * (src/daemon/peer-heartbeats.ts) and report those silent for peerGraceMs.
 * A disk that still reaches the map daemon but not its peers (a host cut off
 * from the other hosts only) keeps heartbeating the map daemon; without
 * these reports it would stay up while every pg it is in stalls.
 *
 * The rules (`accusation`, pure so they can be tested alone): a report
 * counts while it has not lapsed (a reporter refreshes its reports every
 * heartbeat interval; each lapses peerReportTtlIntervals intervals after its
 * last refresh, and no sooner than the down grace: cluster/liveness.ts
 * reportTtlMs), its reporter is up in the map and on another host than the
 * target, and it was made at an epoch no older than the one at which the
 * target last came up (a report about an earlier life of the target does not
 * count). The target is *accused* once the counted reports come from at least
 * minDownReporters distinct hosts (Ceph's mon_osd_min_down_reporters, subtree
 * level host); the reports of a disk accused themselves do not count
 * (`accusations`: one side of a split is accused, not both). What an accusation does is cluster/liveness.ts's business: no
 * more leases for the target, and a mark down once the last one has ended.
 *
 * The report rpc (opcode 131): a reporter sends the whole set of disks it
 * reports now (empty: it withdraws every report), with the map epoch it
 * holds; the set replaces the reporter's previous one. So a lost withdrawal
 * is repaired by the next report, and a reporter that died leaves reports
 * that lapse. The reply carries the settings the reporter uses (grace, ping
 * interval), so the map daemon's options are the only ones.
 *
 * Bounds: one entry per reporting disk of the map (reports from disks the map
 * does not have are refused), each naming at most limits.peerReportTargetsMax
 * disks.
 */
import { Reader, Writer } from '../src/lib/codec.js';
import { TesseraError, invalid, limitExceeded } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import type { RpcClient } from '../src/rpc/types.js';
import type { ClusterMap } from './map.js';

/** 131: a reporter's reports; 132: the disks a map daemon holds accused now, with who accuses them (`tessera status`). */
export const PeerReportOpcode = { report: 131, accused: 132 } as const;

/** A disk accused now and who accuses it ("disks 1,2 (hosts host1,host2)"), as one map daemon sees it. */
export interface AccusedDisk {
  diskId: number;
  by: string;
}

/** A reporter's open reports: the disks it cannot reach now. */
export interface PeerReport {
  reporter: number;
  /** The map epoch the reporter holds. */
  epoch: number;
  /** The disks it reports silent (empty: none; every earlier report withdrawn). */
  targets: number[];
}

/** What the map daemon tells reporters to use. */
export interface PeerSettings {
  /** A peer silent this long is reported. */
  peerGraceMs: number;
  /** How often peers are pinged and open reports refreshed. */
  pingIntervalMs: number;
}

export interface PeerReporter {
  report(report: PeerReport, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<PeerSettings>;
}

/** One reporter's reports as the map daemon holds them. */
export interface HeldReport {
  epoch: number;
  targets: ReadonlySet<number>;
  /** Monotonic time (the map daemon's clock) after which they no longer count unless refreshed. */
  expiresMs: number;
}

export interface Accusation {
  /** Whether the counted reports come from enough distinct hosts. */
  accused: boolean;
  /** Reporters whose reports count, and their hosts (sorted). */
  reporters: number[];
  hosts: string[];
}

/**
 * Whether `target` is accused by the reports held, under the rules of the module comment. `upFromEpoch`: the map
 * epoch at which the target was last seen coming up (0 when unknown).
 */
export function accusation(o: {
  map: ClusterMap;
  target: number;
  reports: ReadonlyMap<number, HeldReport>;
  nowMs: number;
  minDownReporters: number;
  upFromEpoch: number;
  /** Reporters whose reports do not count (disks accused themselves: `accusations`). */
  excluded?: ReadonlySet<number>;
}): Accusation {
  const targetDisk = o.map.disks.find((d) => d.id === o.target);
  const reporters: number[] = [];
  const hosts = new Set<string>();
  if (targetDisk) {
    for (const [reporter, held] of o.reports) {
      if (!held.targets.has(o.target) || held.expiresMs <= o.nowMs || held.epoch < o.upFromEpoch || o.excluded?.has(reporter)) continue;
      const from = o.map.disks.find((d) => d.id === reporter);
      if (!from || !from.up || from.id === o.target || from.host === targetDisk.host) continue;
      reporters.push(reporter);
      hosts.add(from.host);
    }
  }
  reporters.sort((a, b) => a - b);
  return { accused: hosts.size >= o.minDownReporters, reporters, hosts: [...hosts].sort() };
}

/**
 * Every disk accused by the reports held, decided one target at a time: those reported by the most hosts first (then
 * by id), and reports from a disk already accused do not count for the next. So a cluster split in two halves that
 * cannot reach each other, each reporting the other, has one half accused, not both (which would mark every disk
 * down, then up, in turn); it is the same decision for every map daemon that holds the same reports.
 */
export function accusations(o: {
  map: ClusterMap;
  reports: ReadonlyMap<number, HeldReport>;
  nowMs: number;
  minDownReporters: number;
  upFromEpoch: (diskId: number) => number;
}): Map<number, Accusation> {
  const targets = new Set<number>();
  for (const held of o.reports.values()) for (const t of held.targets) targets.add(t);
  const first = [...targets].map((target) => ({ target, hosts: accusation({ ...o, target, upFromEpoch: o.upFromEpoch(target) }).hosts.length }));
  first.sort((a, b) => b.hosts - a.hosts || a.target - b.target);
  const accused = new Map<number, Accusation>();
  const excluded = new Set<number>();
  for (const { target } of first) {
    const a = accusation({ ...o, target, upFromEpoch: o.upFromEpoch(target), excluded });
    if (!a.accused) continue;
    accused.set(target, a);
    excluded.add(target);
  }
  return accused;
}

/**
 * The reports one map daemon holds: per reporter, its latest set. `set` replaces a reporter's reports (an empty set
 * removes them); `expire` forgets lapsed ones.
 */
export class PeerReports {
  private readonly held = new Map<number, HeldReport>();

  get reports(): ReadonlyMap<number, HeldReport> {
    return this.held;
  }

  /** Replaces `reporter`'s reports; returns the targets it newly reports and those it no longer does. */
  set(reporter: number, epoch: number, targets: readonly number[], expiresMs: number): { added: number[]; withdrawn: number[] } {
    const before = this.held.get(reporter)?.targets ?? new Set<number>();
    const after = new Set(targets);
    if (after.size === 0) this.held.delete(reporter);
    else this.held.set(reporter, { epoch, targets: after, expiresMs });
    return { added: [...after].filter((t) => !before.has(t)), withdrawn: [...before].filter((t) => !after.has(t)) };
  }

  /** Drops lapsed reports; returns the reporters dropped. */
  expire(nowMs: number): number[] {
    const dropped: number[] = [];
    for (const [reporter, held] of this.held) {
      if (held.expiresMs <= nowMs) {
        this.held.delete(reporter);
        dropped.push(reporter);
      }
    }
    return dropped;
  }
}

export function encodePeerReport(r: PeerReport): Buffer {
  if (r.targets.length > limits.peerReportTargetsMax) throw limitExceeded(`a peer report names ${r.targets.length} disks (at most ${limits.peerReportTargetsMax})`);
  const w = new Writer(16 + 5 * r.targets.length).varint(r.reporter).varint(r.epoch).varint(r.targets.length);
  for (const t of r.targets) w.varint(t);
  return w.finish();
}

export function decodePeerReport(header: Buffer): PeerReport {
  const r = new Reader(header, 'ProtocolError', 'peer report');
  const reporter = r.varint(0xffff_ffff);
  const epoch = r.varint();
  const count = r.varint();
  if (count > limits.peerReportTargetsMax) throw limitExceeded(`a peer report names ${count} disks (at most ${limits.peerReportTargetsMax})`);
  const targets: number[] = [];
  for (let i = 0; i < count; i++) targets.push(r.varint(0xffff_ffff));
  r.end();
  if (targets.includes(reporter)) throw invalid(`disk ${reporter} reports itself`);
  return { reporter, epoch, targets };
}

export function encodePeerSettings(s: PeerSettings): Buffer {
  return new Writer(16).varint(s.peerGraceMs).varint(s.pingIntervalMs).finish();
}

export function decodePeerSettings(header: Buffer): PeerSettings {
  const r = new Reader(header, 'ProtocolError', 'peer report reply');
  const s = { peerGraceMs: r.varint(), pingIntervalMs: r.varint() };
  r.end();
  if (!(s.peerGraceMs > 0 && s.pingIntervalMs >= limits.heartbeatIntervalMsMin && s.pingIntervalMs <= limits.heartbeatIntervalMsMax)) {
    throw new TesseraError('ProtocolError', `peer report reply: grace ${s.peerGraceMs} ms, ping interval ${s.pingIntervalMs} ms out of range`);
  }
  return s;
}

const ACCUSED_BY_BYTES_MAX = 4096;

export function encodeAccused(list: readonly AccusedDisk[]): Buffer {
  const kept = list.slice(0, limits.peerReportTargetsMax);
  const w = new Writer(16 + kept.length * 64).varint(kept.length);
  for (const a of kept) w.varint(a.diskId).string(a.by.slice(0, ACCUSED_BY_BYTES_MAX / 4));
  return w.finish();
}

export function decodeAccused(header: Buffer): AccusedDisk[] {
  const r = new Reader(header, 'ProtocolError', 'accused disks');
  const count = r.varint(limits.peerReportTargetsMax);
  const out: AccusedDisk[] = [];
  for (let i = 0; i < count; i++) out.push({ diskId: r.varint(0xffff_ffff), by: r.string(ACCUSED_BY_BYTES_MAX) });
  r.end();
  return out;
}

/** The report rpc of a map daemon in another process (the connection the daemon heartbeats on). */
export class PeerReportClient implements PeerReporter {
  constructor(private readonly rpc: RpcClient) {}

  async report(report: PeerReport, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<PeerSettings> {
    const reply = await this.rpc.call(PeerReportOpcode.report, encodePeerReport(report), [], {
      // The set replaces the reporter's previous one: sending it twice is harmless.
      idempotent: true,
      timeoutMs: options.timeoutMs ?? limits.heartbeatTimeoutMsMax,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return decodePeerSettings(reply.header);
  }
}
