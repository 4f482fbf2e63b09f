/**
 * Writes in flight to a member that stops (SIGSTOP) on a real cluster (8
 * daemon processes, 4 hosts, short liveness timings): when the map marks the
 * disk down, its pgs' interval ends and the primary's sub-writes to it stop
 * waiting (Pg.endInterval aborts them) instead of running to their 30 s
 * timeout: a replicated pool's repops, an erasure-coded pool's stage and
 * commit calls (ec-write.ts). The client retries with the same request id and
 * the pg log deduplicates the retry (every write here is an exclusive create:
 * a retry applied twice would fail AlreadyExists). Every acknowledged write
 * reads back byte-exact after SIGCONT.
 *
 * The slowest write is printed; it must be shorter than the sub-write timeout
 * (a write that waited for the timeout cannot be).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { limits } from '../src/lib/limits.js';
import { randomBytes } from 'node:crypto';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { buildPlacementIndex, pgPlacement } from '../cluster/placement.js';
import type { ClusterMap } from '../cluster/map.js';
import { sleep, waitFor } from './helpers/wait.js';

// As in cluster-failures.test.ts: a grace of several heartbeats (the daemons and the test share 2 cores).
const DOWN_GRACE_MS = 3000;
const OUT_INTERVAL_MS = 3000;
const WRITERS = 8;
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 4,
    disksPerHost: 2,
    pools: [
      { name: 'rep', redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 16 },
      { name: 'ec', redundancy: { type: 'erasure', dataShards: 2, parityShards: 2 }, failureDomain: 'host', pgCount: 16 },
    ],
    liveness: { downGraceMs: DOWN_GRACE_MS, outIntervalMs: OUT_INTERVAL_MS, heartbeatIntervalMs: 250 },
  });
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

const currentMap = (): Promise<ClusterMap> => cluster.mapd.service.current();

// ec 2+2 over the 4 hosts: with one member down its pgs keep k+1 = 3 acting shards and take writes (no remapping).
const cases = [
  { pool: 'rep', victim: 3, timeoutMs: limits.repopTimeoutMs, what: 'a stopped replica' },
  { pool: 'ec', victim: 5, timeoutMs: limits.ecSubWriteTimeoutMs, what: 'a stopped erasure-coded member' },
];

it.each(cases)('writes in flight to $what fail over when its pgs re-peer, each applied once ($pool)', async ({ pool: POOL, victim, timeoutMs }) => {
  const map0 = await currentMap();
  const pool = map0.pools.find((p) => p.name === POOL)!;
  const index = buildPlacementIndex(map0);
  // The victim is a member but not the primary of some pgs: writes to those are the ones that wait on its sub-writes.
  const replicaPgs = Array.from({ length: pool.pgCount }, (_, pg) => pg).filter((pg) => {
    const p = pgPlacement(map0, index, pool, pg);
    return p.acting.includes(victim) && p.primary !== victim;
  });
  expect(replicaPgs.length).toBeGreaterThan(0);

  const acked = new Map<string, Buffer>();
  let stopped = false;
  let writeMsMax = 0;
  let slowest = '';
  let writes = 0;
  const writers = Array.from({ length: WRITERS }, async (_, w) => {
    for (let round = 0; !stopped; round++) {
      const name = `w${w}-${round}`;
      const data = randomBytes(1000 + ((round * 7919 + w * 131) % 30_000));
      const t = Date.now();
      // Exclusive: a retry the pg log did not recognise as the same request would fail AlreadyExists.
      await cluster.client.transact(POOL, name, [{ type: 'create', exclusive: true }, { type: 'writeFull', data }]);
      const ms = Date.now() - t;
      if (ms > writeMsMax) {
        writeMsMax = ms;
        slowest = name;
      }
      acked.set(name, data);
      writes++;
    }
  });
  const failed: unknown[] = [];
  const running = Promise.all(writers.map((p) => p.catch((err: unknown) => void failed.push(err))));

  await sleep(1000);
  const t0 = Date.now();
  cluster.pauseDisk(victim);
  let downMs = 0;
  try {
    await waitFor('down', 15_000, async () => ((await currentMap()).disks.find((d) => d.id === victim)!.up ? undefined : true));
    downMs = Date.now() - t0;
    // Writes go on for a while with the disk down (size 3, min_size 2), past the out.
    await sleep(OUT_INTERVAL_MS + 2000);
    stopped = true;
    await running;
  } finally {
    stopped = true;
    cluster.resumeDisk(victim);
  }
  const stallMs = Date.now() - t0;
  console.log(JSON.stringify({ case: `${POOL}-member-sigstop`, downGraceMs: DOWN_GRACE_MS, downMs, writers: WRITERS, writes, writeMsMax, slowest, stallMs, replicaPgs: replicaPgs.length }));
  expect(failed).toEqual([]);
  expect(writes).toBeGreaterThan(WRITERS);
  // Not a speed check: a write that waited for its repop to time out takes
  // longer than the timeout itself; an aborted one is retried well before.
  expect(writeMsMax).toBeLessThan(timeoutMs);

  await waitFor('up and in again', 20_000, async () => {
    const d = (await currentMap()).disks.find((x) => x.id === victim)!;
    return d.up && d.in ? true : undefined;
  });
  for (const [name, data] of acked) expect((await cluster.client.read(POOL, name)).equals(data), name).toBe(true);
}, 120_000);
