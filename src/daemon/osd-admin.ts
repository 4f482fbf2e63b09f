/**
 * What the daemon tells operators, beside serving data: the pgStats query
 * (the states of the pgs this disk is primary of, the recovery they run and
 * the stray copies this disk still holds:
 * `tessera status` and `tessera recovery watch` ask every up daemon), the
 * pgInconsistent query (what each of those pgs' last scrub left unrepaired:
 * `tessera pg inconsistent`) and the timing of client ops for metrics (the daemon
 * process turns the samples into Prometheus series: src/cli/daemon-metrics.ts).
 * Both wrap the daemon's cluster handler (src/daemon/osd-service.ts), as
 * does pgClean (another disk asks whether a pg is clean before it removes its
 * stray copy: src/daemon/stray-cleanup.ts) and the ping of peer heartbeats
 * (answered at once: src/daemon/peer-heartbeats.ts).
 */
import type { Clock } from '../io/io.js';
import { limits } from '../lib/limits.js';
import { encodeControl, OsdOpcode } from '../protocol/osd-messages.js';
import { decodePgCleanRequest, decodePgInconsistentRequest, decodePing, encodePgStats, encodePing, type PgInconsistentReply, type PgInconsistentReport, type PgInconsistentRequest, type LeaseStat, type PgRecoveryStat, type PgStatsReply, type RecoveryStats } from '../protocol/osd-admin-messages.js';
import type { RpcHandler } from '../rpc/types.js';
import type { Osd } from './osd.js';
import { pgCleanState } from './stray-cleanup.js';

/** The pgs this disk is primary of in the map it holds, with their states and recovery. */
export function pgStats(osd: Osd): PgStatsReply {
  const pgs: PgStatsReply['pgs'] = [];
  for (const pg of osd.pgs.values()) {
    if (pg.primary !== osd.diskId || !osd.view.map.pools.some((p) => p.id === pg.pool.id)) continue;
    // "+inconsistent": the last scrub left copies that differ (src/daemon/pg-scrub.ts).
    // "+toofull": members left out of the acting set for want of room, brought back when they have it (peering.ts).
    let state: string = pg.state === 'active' && pg.tooFull.size > 0 ? `${pg.state}+toofull` : pg.state;
    if (pg.scrub.inconsistent > 0) state += '+inconsistent';
    pgs.push({ poolId: pg.pool.id, pg: pg.pg, state, intervalStart: pg.intervalStart });
  }
  return { diskId: osd.diskId, epoch: osd.view.epoch, pgs, recovery: recoveryStats(osd), strays: osd.strays.figures(), lease: leaseStat(osd) };
}

/** The primary lease as `tessera status` shows it: a daemon whose lease lapsed refuses client I/O (src/daemon/lease.ts). */
export function leaseStat(osd: Osd): LeaseStat {
  const { lease } = osd;
  const held = lease.holds();
  const remainingMs = lease.remainingMs();
  // remainingMs is -Infinity before any lease was granted.
  const lapsedForMs = held || !Number.isFinite(remainingMs) ? null : Math.max(0, Math.round(-remainingMs));
  return { held, lapsedForMs, lapses: lease.lapses, refusals: lease.refusals };
}

/**
 * pgInconsistent: what the last scrub of each pg this disk is primary of left unrepaired (pgs with
 * none are not listed), at most limits.scrubInconsistenciesReportedMax inconsistencies in all (each pg
 * keeps its first limits.scrubInconsistenciesKeptMax, and the count of all). After a restart, as the
 * pg's scrub record on disk holds it (src/daemon/scrub-record.ts).
 */
export function pgInconsistent(osd: Osd, q: PgInconsistentRequest): PgInconsistentReply {
  const pgs: PgInconsistentReport[] = [];
  let room = limits.scrubInconsistenciesReportedMax;
  const nowMs = osd.io.clock.nowMs();
  const sorted = [...osd.pgs.values()].sort((a, b) => a.pool.id - b.pool.id || a.pg - b.pg);
  for (const pg of sorted) {
    if (pg.primary !== osd.diskId || pg.scrub.inconsistent === 0 || !osd.view.map.pools.some((p) => p.id === pg.pool.id)) continue;
    if ((q.poolId !== undefined && pg.pool.id !== q.poolId) || (q.pg !== undefined && pg.pg !== q.pg)) continue;
    const inconsistencies = pg.scrub.left.slice(0, room);
    room -= inconsistencies.length;
    pgs.push({ poolId: pg.pool.id, pg: pg.pg, deep: pg.scrub.lastDeep, scrubbedAgoMs: Math.max(0, nowMs - pg.scrub.scrubbedAtMs), unrepaired: pg.scrub.inconsistent, inconsistencies });
  }
  return { diskId: osd.diskId, epoch: osd.view.epoch, pgs };
}

/**
 * The recovery this disk runs as primary: a pg counts while its peering run has copies planned and
 * it is still peering (recovery before it serves I/O) or filling members in the background
 * (pg.backfilling); a pg that went active with every member complete has nothing left.
 */
export function recoveryStats(osd: Osd): RecoveryStats {
  const progress = osd.recoveryProgress;
  const pgs: PgRecoveryStat[] = [];
  for (const key of progress.keys()) {
    const pg = osd.pgs.get(key);
    if (!pg || pg.primary !== osd.diskId || !osd.view.map.pools.some((p) => p.id === pg.pool.id)) {
      progress.forget(key);
      continue;
    }
    const run = progress.of(key);
    const background = pg.state === 'active' && pg.backfilling.size > 0;
    if (!run || !(pg.state === 'peering' || background)) continue;
    const f = run.figures();
    // Copies all made, the pg not yet active again (it catches up from the log next): nothing to report.
    if (f.objectsDone >= f.objectsTotal && !f.objectsEstimated) continue;
    pgs.push({ poolId: pg.pool.id, pg: pg.pg, background, ...f });
  }
  const rate = progress.rate();
  return {
    objectsRecovered: progress.totals.objects,
    bytesRecovered: progress.totals.bytes,
    objectsPerSec: rate.objectsPerSec,
    bytesPerSec: rate.bytesPerSec,
    rateWindowMs: rate.windowMs,
    pgs,
    pools: rate.pools,
  };
}

/** One client op as the metrics see it (src/metrics: OpSample). */
export interface ClientOpSample {
  op: 'write' | 'read' | 'list';
  ok: boolean;
  seconds: number;
  /** Payload bytes written (write) or returned (read). */
  bytes: number;
}

const CLIENT_OPS: Record<number, ClientOpSample['op']> = { [OsdOpcode.op]: 'write', [OsdOpcode.read]: 'read', [OsdOpcode.list]: 'list' };

/** Times the client ops (write, read, list) of `handler` and reports each to `observe`; other ops pass through. */
function observeClientOps(handler: RpcHandler, clock: Clock, observe: (sample: ClientOpSample) => void): RpcHandler {
  return async (request) => {
    const op = CLIENT_OPS[request.op];
    if (op === undefined) return handler(request);
    const startMs = clock.monotonicMs();
    const report = (ok: boolean, bytes: number): void => observe({ op, ok, seconds: (clock.monotonicMs() - startMs) / 1000, bytes });
    try {
      const reply = await handler(request);
      const payload = reply.payload;
      const out = payload === undefined ? 0 : 'lengthBytes' in payload ? payload.lengthBytes : payload.reduce((n, b) => n + b.byteLength, 0);
      report(true, op === 'write' ? request.payload.length : out);
      return reply;
    } catch (err) {
      report(false, 0);
      throw err;
    }
  };
}

/** The cluster handler with the pgStats query and, given an observer, client ops timed. */
export function withAdmin(osd: Osd, handler: RpcHandler, onClientOp?: (sample: ClientOpSample) => void): RpcHandler {
  const observed = onClientOp ? observeClientOps(handler, osd.io.clock, onClientOp) : handler;
  return async (request) => {
    // A peer's ping (src/daemon/peer-heartbeats.ts): answered at once, whatever the pgs, the lease or the epoch.
    if (request.op === OsdOpcode.ping) {
      decodePing(request.header);
      return { header: encodePing({ diskId: osd.diskId, epoch: osd.view.epoch }) };
    }
    if (request.op === OsdOpcode.pgStats) return { header: encodePgStats(pgStats(osd)) };
    if (request.op === OsdOpcode.pgInconsistent) return { header: encodeControl(pgInconsistent(osd, decodePgInconsistentRequest(request.header))) };
    // Another disk asks before it removes its stray copy of the pg (src/daemon/stray-cleanup.ts).
    if (request.op === OsdOpcode.pgClean) return { header: encodeControl(await pgCleanState(osd, decodePgCleanRequest(request.header))) };
    return observed(request);
  };
}
