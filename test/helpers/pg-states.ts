/**
 * What each pg's primary says of it (OsdOpcode.pgStats, asked of every up
 * disk): its state and the epoch its interval started in, for tests that wait
 * for pgs to be active or incomplete in an interval after some map change.
 */
import { createTcpClient } from '../../src/rpc/index.js';
import { OsdOpcode } from '../../src/protocol/osd-messages.js';
import { decodePgStats } from '../../src/protocol/osd-admin-messages.js';
import type { TestCluster } from './cluster.js';

export interface PgAtPrimary {
  state: string;
  intervalStart: number;
  primary: number;
  acting: number[];
}

/** Each pg of the pool, as its primary (in the client's refreshed map) reports it; absent when it did not. */
export async function pgsAtPrimaries(cluster: TestCluster, poolName: string): Promise<Map<number, PgAtPrimary>> {
  const map = await cluster.client.view.refresh();
  const pool = cluster.client.pool(poolName);
  const reported = new Map<string, { state: string; intervalStart: number }>();
  for (const d of map.disks.filter((x) => x.up)) {
    const at = d.address.lastIndexOf(':');
    const rpc = createTcpClient({ io: cluster.io, host: d.address.slice(0, at), port: Number(d.address.slice(at + 1)) });
    try {
      const stats = decodePgStats((await rpc.call(OsdOpcode.pgStats, Buffer.alloc(0), [], { timeoutMs: 5000 })).header);
      for (const s of stats.pgs) if (s.poolId === pool.id) reported.set(`${s.pg}@${d.id}`, s);
    } finally {
      await rpc.close();
    }
  }
  const out = new Map<number, PgAtPrimary>();
  for (let pg = 0; pg < pool.pgCount; pg++) {
    const { primary, acting } = cluster.client.view.pg(pool, pg);
    const s = reported.get(`${pg}@${primary}`);
    if (s) out.set(pg, { state: s.state, intervalStart: s.intervalStart, primary, acting });
  }
  return out;
}

/** Throws, saying which, unless every pg of the pool is `want` at its primary in an interval started at or after sinceEpoch. */
export async function expectPgsAtPrimaries(cluster: TestCluster, poolName: string, want: string, sinceEpoch: number): Promise<void> {
  const pool = cluster.client.pool(poolName);
  const pgs = await pgsAtPrimaries(cluster, poolName);
  for (let pg = 0; pg < pool.pgCount; pg++) {
    const s = pgs.get(pg);
    if (s?.state !== want || s.intervalStart < sinceEpoch) {
      const { primary, acting } = cluster.client.view.pg(pool, pg);
      throw new Error(`pg ${pool.id}.${pg} (acting ${acting.join(',')}) at its primary ${primary}: ${s ? `${s.state} since epoch ${s.intervalStart}` : 'not reported'}, want ${want} since ${sinceEpoch}`);
    }
  }
}
