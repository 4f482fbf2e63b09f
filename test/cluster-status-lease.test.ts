/**
 * `tessera status` shows a disk whose primary lease lapsed, on a real cluster
 * through the real `tessera` binary (3 hosts x 1 disk, default liveness
 * timings: grace 20 s, lease 10 s, heartbeats every 5 s; one reporter host
 * is enough, minDownReporters 1).
 *
 * How the lease is made to lapse while the map daemon still answers the
 * operator: the way it happens to a host cut off from its peers
 * (cluster/peer-reports.ts). The test reports disk 0 unreachable to the map
 * daemon on behalf of disk 1 (the report rpc, op 131, which disk 1's own
 * daemon would send); the map daemon then refuses disk 0's heartbeats
 * (Fenced), and its lease runs out 10 s after its last granted heartbeat,
 * while it keeps answering pgStats. Between that lapse and the mark down
 * (20 s after that heartbeat) the status must say HEALTH_WARN with the disk
 * and how long ago its lease lapsed (text and --json lapsedLeases), as the
 * daemon's own log does. The report withdrawn, the next heartbeat renews the
 * lease and the status no longer names it.
 *
 * Also, from reply structs: which replies count as lapsed (not a daemon
 * starting, before its first heartbeat is answered; not an older daemon).
 *
 * Nothing is timed: every wait polls with a generous bound (the window
 * between lapse and mark down is about 10 s; the probe takes about 1 s).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { runTessera } from './helpers/daemon-process.js';
import { connectMapService, type MapConnection } from '../cluster/map-daemon.js';
import { describeLapsedLeases, lapsedLeases, type ClusterStatus } from '../src/cli/status.js';
import type { PgStatsReply } from '../src/protocol/osd-admin-messages.js';
import { waitFor } from './helpers/wait.js';

const VICTIM = 0;
const REPORTER = 1;
let cluster: TestCluster;
let conn: MapConnection;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: 'rep', redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 4 }],
    liveness: { minDownReporters: 1 },
  });
  conn = connectMapService(cluster.io, `127.0.0.1:${cluster.mapd.port}`);
}, 120_000);

afterAll(async () => {
  await conn?.close();
  await cluster?.stop();
});

const tessera = (args: string[]): ReturnType<typeof runTessera> => runTessera(args, cluster.mapd.port);
const status = async (): Promise<ClusterStatus> => JSON.parse((await tessera(['status', '--json'])).stdout) as ClusterStatus;
const report = async (targets: number[]): Promise<void> => {
  await conn.peerReports.report({ reporter: REPORTER, epoch: (await cluster.mapd.service.current()).epoch, targets });
};

it('a disk whose primary lease lapsed: status warns with the disk and how long ago, until the lease is renewed', async () => {
  const before = await waitFor('a healthy cluster', 60_000, async () => {
    const s = await status();
    return s.health === 'HEALTH_OK' ? s : undefined;
  });
  expect(before.lapsedLeases).toEqual([]);

  await report([VICTIM]);
  const seen = await waitFor(
    `disk ${VICTIM}'s lapsed lease in the status`,
    60_000,
    async () => {
      await report([VICTIM]); // a refresh, as a reporter sends every interval
      const s = await status();
      const lapsed = s.lapsedLeases.find((l) => l.diskId === VICTIM);
      if (!lapsed) return undefined;
      // The same state in text (within the lapse's window: the disk is marked down about 10 s after it).
      const text = (await tessera(['status'])).stdout;
      return /primary lease lapsed on disk 0 \(/.test(text) ? { s, lapsed, text } : undefined;
    },
    500,
  );
  console.log(seen.text);
  expect(seen.s.health).toBe('HEALTH_WARN');
  expect(seen.lapsed.lapsedForMs).not.toBeNull();
  expect(seen.s.lapsedLeases.map((l) => l.diskId)).toEqual([VICTIM]);
  expect(seen.s.reasons.some((r) => /^primary lease lapsed on disk 0 \(\d+\.\d s ago\): refusing client reads and writes/.test(r))).toBe(true);
  expect(seen.text).toMatch(/health: HEALTH_WARN\n(    .*\n)*    primary lease lapsed on disk 0 \(\d+\.\d s ago\): refusing client reads and writes \(Unavailable\) until the map daemon answers its heartbeats\n/);
  // What the daemon's own log says.
  expect(cluster.daemons.get(VICTIM)!.stderr()).toMatch(/primary lease lapsed/);

  // Withdrawn: the next heartbeat is granted (marked up again first if it was marked down meanwhile).
  await report([]);
  const after = await waitFor('the lease renewed and every disk up', 90_000, async () => {
    const s = await status();
    return s.lapsedLeases.length === 0 && s.disks.list.every((d) => d.up && d.reachable) ? s : undefined;
  }, 500);
  expect(after.reasons.some((r) => r.includes('primary lease lapsed'))).toBe(false);
  expect(cluster.daemons.get(VICTIM)!.stderr()).toMatch(/primary lease renewed after it lapsed/);
}, 240_000);

it('which replies count as a lapsed lease, and how the reason reads', () => {
  const reply = (diskId: number, lease?: PgStatsReply['lease']): PgStatsReply => ({ diskId, epoch: 3, pgs: [], ...(lease ? { lease } : {}) });
  const reports = new Map<number, PgStatsReply | null>([
    [5, reply(5, { held: false, lapsedForMs: 4200, lapses: 2, refusals: 9 })],
    [1, reply(1, { held: true, lapsedForMs: null, lapses: 1, refusals: 3 })],
    [2, reply(2, { held: false, lapsedForMs: null, lapses: 0, refusals: 0 })], // starting: first heartbeat not answered yet
    [3, reply(3, { held: false, lapsedForMs: null, lapses: 1, refusals: 0 })], // its first heartbeat failed
    [4, reply(4)], // an older daemon
    [6, null], // did not answer
  ]);
  const lapsed = lapsedLeases(reports);
  expect(lapsed).toEqual([
    { diskId: 3, lapsedForMs: null, refusals: 0 },
    { diskId: 5, lapsedForMs: 4200, refusals: 9 },
  ]);
  expect(describeLapsedLeases(lapsed)).toBe(
    'primary lease lapsed on disk 3 (none granted yet), disk 5 (4.2 s ago): refusing client reads and writes (Unavailable) until the map daemon answers its heartbeats',
  );
});
