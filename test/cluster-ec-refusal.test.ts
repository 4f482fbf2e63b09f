/**
 * The erasure-coded counterpart of test/cluster-replica-refusal: one
 * member's store refuses a write while later writes of the same pg are in
 * flight to it, on a real cluster (3 daemon processes, EC 2+1, every disk in
 * every pg). The pg under test has disk 0 as its primary; disk 2 is
 * restarted with a capacity 1 MiB above its store's reserve (the map's full
 * ratio is never reached, so the primary sends the write), then paused
 * (SIGSTOP) while a 6 MiB write (3 MiB per shard) and small writes of the pg
 * are sent, until the primary has staged a version after the big one's (a
 * write stages on every member at once); resumed, it takes them
 * together and refuses the big stage NoSpace while it stages the small ones
 * (checked: its log says it rolled staged versions back).
 *
 * What must hold (docs/erasure-coding.md, "Peering and recovery"): no
 * version past the refused one commits anywhere (a version commits only
 * once every member staged it, and in order), so once the pg has peered the
 * three members' stored logs are the same entries and disk 2's has no gap;
 * the big write fails with an error naming NoSpace and is absent on every
 * member; every acknowledged write reads back byte-exact, from all three
 * members and with each one down (degraded reads), and its shards check out;
 * no staging object is left. An EC commit itself carries no data (moveRange),
 * so NoSpace refuses stages, not commits; a commit refused by a limit is
 * test/ec-commit-chain's case. Tried: this test still passes with the commit
 * head assertion removed and the wait for the previous version's commits
 * ignored (ec-write.ts stageAndCommit): the peering the refused stage starts
 * bumps the pg's generation, and the later versions stop before committing.
 * It guards the outcome end to end, not one of those lines.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { objectToPg } from '../cluster/placement.js';
import { setDiskState } from '../cluster/map-edit.js';
import { isTesseraError } from '../src/lib/errors.js';
import type { LogEntry } from '../src/protocol/osd-messages.js';
import { isStagingOf, readRecord, stagingNs } from '../src/daemon/ec-record.js';
import { PgLog } from '../src/daemon/pg-log.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { checkShards } from './cluster-ec-helpers.js';
import { listEveryPg, retryFor } from './helpers/wait.js';
import { expectAcknowledged, restartDisk, restartNearlyFull, writeWhilePaused } from './helpers/refusal.js';

const POOL = 'ec';
const MiB = 1024 * 1024;
const PRIMARY = 0;
const REFUSING = 2;
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 }, failureDomain: 'host', pgCount: 4 }],
    liveness: { heartbeatIntervalMs: 200, nearFullRatio: 0.98, fullRatio: 0.99 },
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

/** A disk's stored log of the pg (versions, in order), and its staging objects of the pg. */
async function storedState(diskId: number, pg: number): Promise<{ versions: string[]; stagings: string[] }> {
  const poolId = cluster.client.pool(POOL).id;
  const store = cluster.storeOf(diskId);
  try {
    const log = await PgLog.load(store, poolId, pg);
    const page = await store.listObjects({ ns: stagingNs(poolId), limit: 1000 });
    return { versions: log.entries.map((e) => `${e.epoch}'${e.version} ${e.object}`), stagings: page.objects.map((o) => o.name).filter((n) => isStagingOf(n, pg)) };
  } finally {
    await store.close();
  }
}

/** The entries of the versions a disk has staged for the pg (a staging object removed meanwhile is skipped). */
async function stagedOn(diskId: number, pg: number): Promise<LogEntry[]> {
  const ns = stagingNs(cluster.client.pool(POOL).id);
  const store = cluster.storeOf(diskId);
  try {
    const page = await store.listObjects({ ns, limit: 1000 });
    const names = page.objects.map((o) => o.name).filter((n) => isStagingOf(n, pg));
    const records = await Promise.all(names.map((name) => readRecord(store, { ns, name }).catch(() => null)));
    return records.flatMap((r) => (r ? [r.entry] : []));
  } finally {
    await store.close();
  }
}

it('a write one member refused while later writes of its pg were in flight: no gap, nothing of it left, every acknowledged write whole', async () => {
  const { client } = cluster;
  const info = client.pool(POOL);
  const pg = Array.from({ length: info.pgCount }, (_, p) => p).find((p) => client.view.pg(info, p).members[0] === PRIMARY);
  expect(pg, 'a pg with disk 0 first').toBeDefined();
  const members = client.view.pg(info, pg!).members;
  expect(members).toContain(REFUSING);
  const names = Array.from({ length: 2000 }, (_, i) => `e-${i}`).filter((n) => objectToPg(info, n) === pg);
  const [big, ...others] = names;
  const small = others.slice(0, 12);
  const before = others.slice(12, 15);
  expect(before.length).toBe(3);

  const acked = new Map<string, Buffer>();
  for (const name of before) {
    const data = randomBytes(8192);
    await client.put(POOL, name, data);
    acked.set(name, data);
  }

  // Disk 2 with 1 MiB above its store's reserve: a 3 MiB shard does not fit, small ones do.
  const capacityBytes = await restartNearlyFull(cluster, [POOL], REFUSING, MiB);

  const bigData = randomBytes(6 * MiB);
  const smallData = new Map(small.map((n, i) => [n, randomBytes(8192 + i)]));
  const outcomes = await writeWhilePaused(cluster, {
    pool: POOL,
    pausedDisk: REFUSING,
    big: [big!, bigData],
    small: [...smallData],
    // Each write stages on every member at once: once the primary has staged a version after the big one's, both
    // stages are on their way to disk 2 (none commits: disk 2 has staged nothing yet).
    sentOnAfterBig: {
      what: 'the primary to stage a small write after the big one',
      check: async () => {
        const records = await stagedOn(PRIMARY, pg!);
        const at = records.find((r) => r.object === big)?.version;
        return at !== undefined && records.some((r) => r.version > at);
      },
    },
  });
  const [bigOutcome, ...smallOutcomes] = outcomes;
  const described = outcomes.map((o, i) => `${i === 0 ? big : small[i - 1]}: ${o.status === 'fulfilled' ? `v${o.value.epoch}'${o.value.version}` : (o.reason as Error).message}`);
  console.log(JSON.stringify({ case: 'ec refusal', pg, members, capacityBytes, outcomes: described }));
  smallOutcomes.forEach((o, i) => {
    if (o.status === 'fulfilled') acked.set(small[i]!, smallData.get(small[i]!)!);
  });
  // Disk 2 had staged later versions when it refused the big one: peering rolled them back (their clients retried).
  const rolledBack = [...cluster.daemons.get(REFUSING)!.stderr().matchAll(new RegExp(`pg ${info.id}\\.${pg}: rolled \\d+ staged versions forward, (\\d+) back`, 'g'))].reduce((n, m) => n + Number(m[1]), 0);
  expect(rolledBack, `versions disk 2 staged after the one it refused, rolled back: ${cluster.daemons.get(REFUSING)!.stderr()}`).toBeGreaterThan(0);
  // The big write cannot be acknowledged (disk 2 has no room for its shard) and says why.
  expect(bigOutcome!.status).toBe('rejected');
  const err = (bigOutcome as PromiseRejectedResult).reason as Error;
  expect(isTesseraError(err) && ['Unavailable', 'Busy'].includes(err.code), String(err)).toBe(true);
  expect(err.message).toMatch(/NoSpace/);

  // Once the pg has peered: the three stored logs hold the same entries (disk 2's has no gap), no staging object left.
  await retryFor(60_000, () => listEveryPg(client, [POOL]));
  const states = await Promise.all(members.map((d) => storedState(d, pg!)));
  console.log(JSON.stringify({ case: 'ec refusal logs', rolledBackOnDisk2: rolledBack, entries: Object.fromEntries(members.map((d, i) => [d, states[i]!.versions.length])) }));
  for (const [i, d] of members.entries()) {
    expect(states[i]!.versions, `disk ${d}'s log`).toEqual(states[0]!.versions);
    expect(states[i]!.stagings, `disk ${d}'s staging objects`).toEqual([]);
  }
  expect(states[0]!.versions.some((v) => v.endsWith(` ${big}`)), `no member logged ${big}`).toBe(false);

  // Disk 2 back with its real capacity: every acknowledged write whole, its shards consistent; the big one absent.
  await restartDisk(cluster, [POOL], REFUSING);
  await expectAcknowledged(client, POOL, acked, 'all members up');
  for (const [name, data] of acked) await checkShards(cluster, POOL, name, data);
  await expect(client.read(POOL, big!)).rejects.toMatchObject({ code: 'NotFound' });
  await checkShards(cluster, POOL, big!, null);
  // Each member down in turn (degraded reads from the other two).
  for (const d of members) {
    await cluster.killDisk(d);
    await client.view.refresh();
    await expectAcknowledged(client, POOL, acked, `disk ${d} down`);
    await cluster.restartDisk(d);
    await cluster.mapd.service.change((m) => setDiskState(m, d, { up: true }));
    await retryFor(60_000, () => listEveryPg(client, [POOL]));
  }
}, 300_000);
