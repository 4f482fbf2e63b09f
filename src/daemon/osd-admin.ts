/**
 * What the daemon tells operators, beside serving data: the pgStats query
 * (the states of the pgs this disk is primary of: `tessera status` asks
 * every up daemon) and the timing of client ops for metrics (the daemon
 * process turns the samples into Prometheus series: src/cli/daemon-metrics.ts).
 * Both wrap the daemon's cluster handler (src/daemon/osd-service.ts).
 */
import type { Clock } from '../io/io.js';
import { encodePgStats, OsdOpcode, type PgStatsReply } from '../protocol/osd-messages.js';
import type { RpcHandler } from '../rpc/types.js';
import type { Osd } from './osd.js';

/** The pgs this disk is primary of in the map it holds, with their states. */
export function pgStats(osd: Osd): PgStatsReply {
  const pgs: PgStatsReply['pgs'] = [];
  for (const pg of osd.pgs.values()) {
    if (pg.primary !== osd.diskId || !osd.view.map.pools.some((p) => p.id === pg.pool.id)) continue;
    // "+inconsistent": the last scrub left copies that differ (src/daemon/pg-scrub.ts).
    const state = pg.scrub.inconsistent > 0 ? `${pg.state}+inconsistent` : pg.state;
    pgs.push({ poolId: pg.pool.id, pg: pg.pg, state, intervalStart: pg.intervalStart });
  }
  return { diskId: osd.diskId, epoch: osd.view.epoch, pgs };
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
  return async (request) => (request.op === OsdOpcode.pgStats ? { header: encodePgStats(pgStats(osd)) } : observed(request));
}
