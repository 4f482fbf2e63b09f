/**
 * A write one replica's store refuses while later writes of the same pg
 * commit there (the gap c229564 made replicated peering see), on a real
 * cluster: 2 daemon processes, one per host, a replicated pool of size 2
 * (min_size 1), so every pg has both disks. The pg under test has disk 0 as
 * its primary and disk 1 as its replica.
 *
 * The refusal: disk 1 restarted with a capacity 1 MiB above its store's
 * reserve (the map's full ratio is never reached, so the primary sends the
 * write), then paused (SIGSTOP) while a 3 MiB write and small writes of the
 * same pg are sent, until the primary's own log holds a small write after the
 * big one (the primary sends a write on as it applies it); resumed, disk 1's
 * store takes them in one go: the big one is
 * refused NoSpace, the small ones after it commit. The test checks that this
 * happened (a small write acknowledged with a version after the big one's,
 * which needs disk 1's commit, while disk 1 holds no copy of the big one).
 *
 * Then the pg peers again (disk 1, with no room for the big object, is left
 * out of the acting set meanwhile: docs/operations.md, "Full disks"): disk 1
 * is killed and restarted with its real capacity (and brought back into the
 * acting set), later writes go in between, and the test asserts what a user
 * sees: every acknowledged write reads back byte-exact with disk 0 as primary
 * and, once disk 0 is killed, with disk 1 as primary; the big write, if it was
 * not acknowledged, failed with a typed error naming the pg and NoSpace, and
 * reads back either absent or whole; with disk 0 back, a deep scrub of the pg is clean
 * (the members are identical). Before c229564 (equal heads: nothing copied)
 * disk 1 never gets the big object, which the retry of the big write found
 * in the primary's log and acknowledged: with disk 1 as primary it reads
 * NotFound (this test fails so on c229564^).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { objectToPg } from '../cluster/placement.js';
import { setDiskState } from '../cluster/map-edit.js';
import { isTesseraError } from '../src/lib/errors.js';
import { compareVersions, type LogEntry } from '../src/protocol/osd-messages.js';
import { PgLog } from '../src/daemon/pg-log.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { runTessera } from './helpers/daemon-process.js';
import { listEveryPg, retryFor, waitFor } from './helpers/wait.js';
import { expectAcknowledged, restartDisk, restartNearlyFull, writeWhilePaused, copyOn as copyOnDisk } from './helpers/refusal.js';

const POOL = 'rep';
const MiB = 1024 * 1024;
const PRIMARY = 0;
const REPLICA = 1;
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 2,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 2, minSize: 1 }, failureDomain: 'host', pgCount: 8 }],
    liveness: { heartbeatIntervalMs: 200, nearFullRatio: 0.98, fullRatio: 0.99 },
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

/** Runs the tessera binary against the test cluster's map service. */
const tessera = (args: string[]): ReturnType<typeof runTessera> => runTessera(args, cluster.mapd.port);

/** One disk's copy of an object of the pool, from its store: the bytes, or the error code. */
const copyOn = (diskId: number, name: string): Promise<Buffer | string> => copyOnDisk(cluster, POOL, diskId, name);

/** A disk's stored log of the pg. */
async function storedLog(diskId: number, pg: number): Promise<LogEntry[]> {
  const store = cluster.storeOf(diskId);
  try {
    return (await PgLog.load(store, cluster.client.pool(POOL).id, pg)).entries;
  } finally {
    await store.close();
  }
}

async function expectScrubClean(pg: number, when: string): Promise<void> {
  const r = await tessera(['pg', 'scrub', `${POOL}.${pg}`, '--deep', '--json']);
  expect(r.code, `${when}: deep scrub of pg ${pg}: ${r.stdout}${r.stderr}`).toBe(0);
  expect((JSON.parse(r.stdout) as { inconsistencies: number }).inconsistencies, `${when}: ${r.stdout}`).toBe(0);
}

it('a write one replica refused while later writes of its pg committed there: no acknowledged write lost, members identical', async () => {
  const { client } = cluster;
  const info = client.pool(POOL);
  // A pg whose primary is disk 0 and replica disk 1, and names in it.
  const pg = Array.from({ length: info.pgCount }, (_, p) => p).find((p) => client.view.pg(info, p).members.join() === `${PRIMARY},${REPLICA}`);
  expect(pg, 'a pg with disk 0 first').toBeDefined();
  const names = Array.from({ length: 2000 }, (_, i) => `o-${i}`).filter((n) => objectToPg(info, n) === pg);
  const [big, ...others] = names;
  const small = others.slice(0, 12);
  const later = others.slice(12, 16);
  const before = others.slice(16, 19);
  expect(later.length + before.length).toBe(7);

  const acked = new Map<string, Buffer>();
  for (const name of before) {
    const data = randomBytes(4096);
    await client.put(POOL, name, data);
    acked.set(name, data);
  }

  // Disk 1 with 1 MiB above its store's reserve: the 3 MiB write does not fit, 4 KiB ones do.
  const capacityBytes = await restartNearlyFull(cluster, [POOL], REPLICA, MiB);

  // Disk 1 paused while the big write and the small ones reach the primary (which applies them and sends them on,
  // in version order): resumed, its store takes them together, refuses the big one, commits the others.
  const bigData = randomBytes(3 * MiB);
  const smallData = new Map(small.map((n, i) => [n, randomBytes(4096 + i)]));
  const outcomes = await writeWhilePaused(cluster, {
    pool: POOL,
    pausedDisk: REPLICA,
    big: [big!, bigData],
    small: [...smallData],
    // The primary applies a write and sends it to the replica at once: once its own log holds a small write after
    // the big one, both are on their way to disk 1.
    sentOnAfterBig: {
      what: 'the primary to apply a small write after the big one',
      check: async () => {
        const log = await storedLog(PRIMARY, pg!);
        const at = log.find((e) => e.object === big)?.version;
        return at !== undefined && log.some((e) => e.version > at);
      },
    },
  });
  const [bigOutcome, ...smallOutcomes] = outcomes;
  const described = outcomes.map((o, i) => `${i === 0 ? big : small[i - 1]}: ${o.status === 'fulfilled' ? `v${o.value.epoch}'${o.value.version}` : (o.reason as Error).message}`);
  console.log(JSON.stringify({ case: 'refusal', pg, capacityBytes, outcomes: described }));
  smallOutcomes.forEach((o, i) => {
    if (o.status === 'fulfilled') acked.set(small[i]!, smallData.get(small[i]!)!);
  });

  // The refusal happened as planned: disk 1 has no copy of the big object, and a small write with a later version
  // was acknowledged (every member, disk 1 too, committed it).
  const bigVersion = (await storedLog(PRIMARY, pg!)).filter((e) => e.object === big).pop();
  expect(bigVersion, `the primary logged ${big}`).toBeDefined();
  expect(await copyOn(REPLICA, big!)).toBe('NotFound');
  const after = smallOutcomes.filter((o) => o.status === 'fulfilled' && compareVersions(o.value, bigVersion!) > 0);
  expect(after.length, `small writes acknowledged after ${big}'s version ${bigVersion!.version}: ${described.join('; ')}`).toBeGreaterThan(0);
  if (bigOutcome!.status === 'fulfilled') {
    acked.set(big!, bigData);
  } else {
    // Not acknowledged: a typed, retryable error that names the pg and says why (the replica's store has no room:
    // the write's own failure, or, while the pg peers and cannot copy the object there, the last peering run's).
    const err = bigOutcome!.reason as Error;
    expect(isTesseraError(err) && ['Unavailable', 'Busy'].includes(err.code), String(err)).toBe(true);
    expect(err.message).toContain(`pg ${info.id}.${pg}`);
    expect(err.message).toMatch(/NoSpace/);
  }

  // The pg peers again: disk 1 killed (disk 0 serves alone: min_size 1, and takes later writes), then back with its
  // real capacity.
  await cluster.killDisk(REPLICA);
  await retryFor(60_000, () => listEveryPg(client, [POOL]));
  for (const name of later) {
    const data = randomBytes(2048);
    await client.put(POOL, name, data);
    acked.set(name, data);
  }
  await restartDisk(cluster, [POOL], REPLICA);
  // Disk 1 may have been left out of the pg's acting set for want of room (toofull: a temporary acting set without
  // it); with its real capacity the primary brings it back. Until then it is not a copy, and the pg would be down
  // without disk 0.
  await waitFor('disk 1 back in the acting set', 60_000, async () => (((await cluster.mapd.service.current()).pgTemp ?? []).some((t) => t.pool === info.id && t.pg === pg) ? undefined : true));
  await retryFor(60_000, () => listEveryPg(client, [POOL]));

  // What a user sees: every acknowledged write, with disk 0 as primary, then with disk 1 (disk 0 killed).
  await expectAcknowledged(client, POOL, acked, 'disk 0 primary');
  await cluster.killDisk(PRIMARY);
  await client.view.refresh();
  expect(client.view.pg(info, pg!).primary).toBe(REPLICA);
  await expectAcknowledged(client, POOL, acked, 'disk 1 primary');
  // The big write, if not acknowledged, is whole or absent (not torn).
  const bigRead = await client.read(POOL, big!).catch((err: unknown) => (isTesseraError(err) ? err.code : String(err)));
  expect(bigRead === 'NotFound' || (Buffer.isBuffer(bigRead) && bigRead.equals(bigData)), `${big} reads ${Buffer.isBuffer(bigRead) ? `${bigRead.length} other bytes` : bigRead}`).toBe(true);
  // Disk 0 back: the same, and the members are identical (a deep scrub finds nothing).
  await cluster.restartDisk(PRIMARY);
  await cluster.mapd.service.change((m) => setDiskState(m, PRIMARY, { up: true }));
  await retryFor(60_000, () => listEveryPg(client, [POOL]));
  await expectAcknowledged(client, POOL, acked, 'disk 0 back');
  await expectScrubClean(pg!, 'disk 0 back');
}, 240_000);
