/**
 * Recovery progress on a real cluster, through the real `tessera` binary
 * (4 hosts x 1 disk, a replicated pool of size 3, daemons with a slow
 * recovery throttle so the copies take a while and progress is observable):
 *
 * - healthy: `status --json` shows no recovery work and `recovery watch
 *   --once` exits 0;
 * - a disk killed and marked out (a member of pool bf's one pg, whose log
 *   was trimmed by more writes than it holds, so its new member is
 *   backfilled; the other pool's new members recover from the log): its pgs
 *   remap; `status --json` shows pgs recovering, objects and bytes left, and
 *   the text status a recovery line; per pool, the pools' figures add up to
 *   the cluster's, a pool being copied shows objects left that fall to 0 (polled
 *   while the watch runs), `--pgs` and `--json` list the pgs being copied
 *   (state, primary, objects left); `recovery watch` (stdout a pipe: one
 *   line per update) prints a progress bar, shows the backfill, and ends
 *   with exit 0 once every pg is active and complete; then status shows no work, and
 *   every daemon's metrics count the objects and bytes recovered with none
 *   left;
 * - the disk restarted and marked in (objects written meanwhile): the pgs
 *   move back (log-based recovery), and the watch again ends with exit 0;
 * - an erasure-coded pool (2+1, a cluster of its own): a disk out, its
 *   shards rebuilt elsewhere; the rebuilt objects and shard bytes are
 *   counted and the watch ends with exit 0.
 *
 * Nothing is timed: the throttle only makes the work last long enough to be
 * seen; every wait polls with a generous bound.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { runTessera } from './helpers/daemon-process.js';
import { setDiskState } from '../cluster/map-edit.js';
import { pgMembers } from '../cluster/placement.js';
import { LOG_ENTRIES_MAX } from '../src/daemon/pg-log.js';
import { clusterStatus, type ClusterStatus, type RecoveryStatus } from '../src/cli/status.js';
import { runRecoveryWatch } from '../src/cli/recovery.js';
import { waitFor } from './helpers/wait.js';

const POOL = 'rep';
/** One pg, written more times than its log holds (LOG_ENTRIES_MAX): a new member shares no log with it and is backfilled. */
const BACKFILL_POOL = 'bf';
const BACKFILL_OBJECTS = 150;
let victim = -1;
let cluster: TestCluster;
let clusterStopped = false;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 4,
    disksPerHost: 1,
    pools: [
      { name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 },
      { name: BACKFILL_POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 1 },
    ],
    // About 100 KB/s of copies per primary: the backfill below lasts several seconds.
    daemonArgs: ['--recovery-bytes-per-sec', '100000', '--metrics', '127.0.0.1:0'],
  });
  // 8 pgs, about 40 objects each (more than limits.recoveryInlineObjectsMax: some pgs fill the new member while active).
  const names = Array.from({ length: 320 }, (_, i) => `obj-${i}`);
  for (let i = 0; i < names.length; i += 16) await Promise.all(names.slice(i, i + 16).map((n) => cluster.client.put(POOL, n, randomBytes(12_000))));
  const writes = LOG_ENTRIES_MAX + 400;
  for (let i = 0; i < writes; i += 32) {
    await Promise.all(Array.from({ length: Math.min(32, writes - i) }, (_, j) => cluster.client.put(BACKFILL_POOL, `b-${(i + j) % BACKFILL_OBJECTS}`, randomBytes(6_000))));
  }
  // The victim: a non-primary member of the bf pool's pg.
  const map = await cluster.mapd.service.current();
  const members = pgMembers(map, map.pools.find((p) => p.name === BACKFILL_POOL)!, 0);
  victim = members[members.length - 1]!;
}, 240_000);

afterAll(async () => {
  if (!clusterStopped) await cluster?.stop();
});

/** Runs the tessera binary against the test cluster's map service. */
const tessera = (args: string[], on: TestCluster = cluster): ReturnType<typeof runTessera> => runTessera(args, on.mapd.port);

interface StatusDoc {
  health: string;
  pgs: { total: number; byState: Record<string, number> };
  recovery: RecoveryStatus;
  pools: ClusterStatus['pools'];
  pgsNotClean: ClusterStatus['pgsNotClean'];
}

/** The pools' figures add up to the cluster's (one snapshot of the same reports). */
function expectPoolsAddUp(s: StatusDoc): void {
  const sum = (f: (r: StatusDoc['pools'][number]['recovery']) => number): number => s.pools.reduce((n, p) => n + f(p.recovery), 0);
  expect(sum((r) => r.degradedPgs)).toBe(s.recovery.degradedPgs);
  expect(sum((r) => r.recoveringPgs)).toBe(s.recovery.recoveringPgs);
  expect(sum((r) => r.backfillingPgs)).toBe(s.recovery.backfillingPgs);
  expect(sum((r) => r.objectsLeft)).toBe(s.recovery.objectsLeft);
  // Every pg being copied has its row, with the objects its primary reports left.
  const copying = s.pgsNotClean.filter((p) => p.recovery !== null);
  expect(copying.length).toBe(s.recovery.recoveringPgs + s.recovery.backfillingPgs);
  expect(copying.reduce((n, p) => n + p.objectsLeft!, 0)).toBe(s.recovery.objectsLeft);
  for (const p of copying) expect(p.primary).not.toBeNull();
}

const status = async (on: TestCluster = cluster): Promise<StatusDoc> => JSON.parse((await tessera(['status', '--json'], on)).stdout) as StatusDoc;

/** Polls until no pg is degraded, recovering or backfilling and every pg is active. */
const settled = (timeoutMs: number, on: TestCluster = cluster): Promise<StatusDoc> =>
  waitFor('recovery to finish', timeoutMs, async () => {
    const s = await status(on);
    const r = s.recovery;
    return r.degradedPgs === 0 && r.recoveringPgs === 0 && r.backfillingPgs === 0 && s.pgs.byState.active === s.pgs.total ? s : undefined;
  });

/** One disk's Prometheus text, as name{labels} -> value. */
async function scrape(diskId: number): Promise<Map<string, number>> {
  const port = cluster.daemons.get(diskId)!.metricsPort!;
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const series = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    series.set(line.slice(0, at).replace(/\{.*\}$/, ''), Number(line.slice(at + 1)));
  }
  return series;
}

it('healthy: no recovery work; recovery watch --once exits 0', async () => {
  const s = await settled(60_000);
  expect(s.recovery).toMatchObject({ degradedPgs: 0, recoveringPgs: 0, backfillingPgs: 0, objectsLeft: 0, etaSeconds: 0 });
  const once = await tessera(['recovery', 'watch', '--once']);
  expect(once.stderr).toBe('');
  expect(once.code).toBe(0);
  expect(once.stdout).toMatch(/^recovery done/);
  expect((await tessera(['status'])).stdout).toMatch(/recovery: none/);
  // On a terminal the line is redrawn in place (carriage return, erase line), then ends with a newline.
  let drawn = '';
  const code = await runRecoveryWatch({ io: cluster.io, map: `127.0.0.1:${cluster.mapd.port}`, intervalMs: 1000, once: true, json: false, out: { isTTY: true, write: (t: string) => (drawn += t) }, signal: new AbortController().signal });
  expect(code).toBe(0);
  expect(drawn).toMatch(/^\r\x1b\[2Krecovery done.*\n$/);
}, 90_000);

it('a disk out: status shows the backfill left, recovery watch draws progress and exits 0 when done', async () => {
  await cluster.killDisk(victim);
  await cluster.mapd.service.change((m) => setDiskState(m, victim, { in: false }));
  const busy = await waitFor('status to show recovery work', 60_000, async () => {
    const s = await status();
    return s.recovery.recoveringPgs + s.recovery.backfillingPgs > 0 && s.recovery.objectsLeft > 0 ? s : undefined;
  });
  expect(busy.recovery.degradedPgs).toBeGreaterThanOrEqual(busy.recovery.recoveringPgs + busy.recovery.backfillingPgs);
  expect(busy.health).not.toBe('HEALTH_OK');
  expectPoolsAddUp(busy);
  // The pool with the most work left: polled below (while the watch runs) until its objects left fall to 0.
  const watched = busy.pools.reduce((a, b) => (b.recovery.objectsLeft > a.recovery.objectsLeft ? b : a));
  expect(watched.recovery.objectsLeft).toBeGreaterThan(0);
  expect(watched.recovery.recoveringPgs + watched.recovery.backfillingPgs).toBeGreaterThan(0);
  expect(busy.pgsNotClean.some((p) => p.pool === watched.name && p.recovery !== null && p.objectsLeft! > 0)).toBe(true);
  const text = (await tessera(['status', '--pgs'])).stdout;
  console.log(text);
  if (!/recovery: none/.test(text)) {
    expect(text).toMatch(/recovery: \d+ pgs degraded, \d+ recovering, \d+ backfilling/);
    expect(text).toMatch(/\n    pool \w+: \d+ pgs degraded, \d+ recovering, \d+ backfilling/);
    expect(text).toMatch(/\n  pgs not active\+clean: \d+\n    PG +POOL +STATE +PRIMARY +COPYING +OBJECTS LEFT +BYTES LEFT\n/);
  }
  const seen: number[] = [watched.recovery.objectsLeft];
  const poll = waitFor(`pool ${watched.name}'s objects left to reach 0`, 120_000, async () => {
    const s = (await clusterStatus(cluster.io, await cluster.mapd.service.current())) as unknown as StatusDoc;
    expectPoolsAddUp(s);
    const left = s.pools.find((p) => p.id === watched.id)!.recovery;
    seen.push(left.objectsLeft);
    return left.objectsLeft === 0 && left.recoveringPgs + left.backfillingPgs === 0 ? true : undefined;
  }, 300);
  poll.catch(() => undefined); // awaited below, after the watch
  // While work is left, --once says so (exit 1) with a progress line.
  const once = await tessera(['recovery', 'watch', '--once']);
  if (once.code === 1) expect(once.stdout).toMatch(/%|nothing being copied/);
  else expect(once.stdout).toMatch(/^recovery done/);

  const watch = await tessera(['recovery', 'watch', '--interval-ms', '300']);
  expect(watch.stderr).toBe('');
  expect(watch.code).toBe(0);
  const lines = watch.stdout.trimEnd().split('\n');
  expect(watch.stdout).not.toContain('\r'); // not a terminal: one line per update
  expect(lines[lines.length - 1]).toMatch(/^recovery done/);
  const bars = lines.filter((l) => /^\[[#-]+\]\s+[\d.]+%  left \d+ objects/.test(l));
  const backfilling = lines.filter((l) => /, [1-9]\d* backfilling/.test(l));
  console.log(`recovery watch: ${lines.length} updates, ${bars.length} with a bar, ${backfilling.length} with a backfill; first: ${lines[0]}`);
  expect(bars.length).toBeGreaterThan(0);
  expect(backfilling.length).toBeGreaterThan(0);
  await poll;
  console.log(`pool ${watched.name}: objects left as polled: ${seen.join(' ')}`);
  expect(seen[seen.length - 1]).toBe(0);
  expect(Math.max(...seen)).toBeGreaterThan(0);

  const after = await settled(60_000);
  expect(after.recovery).toMatchObject({ recoveringPgs: 0, backfillingPgs: 0, objectsLeft: 0 });
  for (const p of after.pools) expect(p.recovery).toMatchObject({ degradedPgs: 0, recoveringPgs: 0, backfillingPgs: 0, objectsLeft: 0 });
  expect(after.pgsNotClean).toEqual([]);
  expect(after.recovery.objectsRecovered).toBeGreaterThan(0);
  expect(after.recovery.bytesRecovered).toBeGreaterThan(0);
  let objectsRecovered = 0;
  for (const id of cluster.diskIds.filter((d) => d !== victim)) {
    const m = await scrape(id);
    expect(m.get('tessera_osd_recovery_objects_left')).toBe(0);
    expect(m.get('tessera_osd_pgs_recovering')).toBe(0);
    objectsRecovered += m.get('tessera_osd_recovery_objects_total') ?? 0;
    expect(m.get('tessera_osd_recovery_bytes_total')).toBeGreaterThanOrEqual(0);
  }
  expect(objectsRecovered).toBeGreaterThan(0);
  expect((await tessera(['recovery', 'watch', '--once'])).code).toBe(0);
}, 240_000);

it('the disk back in: its pgs move back and the watch ends with exit 0', async () => {
  // Written while the disk is out: its pgs' logs on it are behind.
  await Promise.all(Array.from({ length: 24 }, (_, i) => cluster.client.put(POOL, `later-${i}`, randomBytes(8_000))));
  await cluster.restartDisk(victim);
  await cluster.mapd.service.change((m) => setDiskState(m, victim, { in: true }));
  const watch = await tessera(['recovery', 'watch', '--interval-ms', '300', '--json']);
  expect(watch.code).toBe(0);
  const docs = watch.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as RecoveryStatus & { done: boolean });
  expect(docs[docs.length - 1]!.done).toBe(true);
  expect(docs.every((d) => typeof d.objectsLeft === 'number' && typeof d.degradedPgs === 'number')).toBe(true);
  await settled(60_000);
  for (let i = 0; i < 24; i++) expect((await cluster.client.read(POOL, `later-${i}`)).length).toBe(8_000);
}, 240_000);

it('erasure-coded pool: shards rebuilt after a disk out are counted, the watch ends with exit 0', async () => {
  // One cluster at a time (2 cores; and stop() ends every daemon this process started).
  clusterStopped = true;
  await cluster.stop();
  const ec = await startTestCluster({
    hosts: 4,
    disksPerHost: 1,
    clusterId: 'ecprogress',
    pools: [{ name: 'ec', redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 }, failureDomain: 'host', pgCount: 4 }],
  });
  try {
    for (let i = 0; i < 96; i += 16) await Promise.all(Array.from({ length: 16 }, (_, j) => ec.client.put('ec', `e-${i + j}`, randomBytes(20_000))));
    const before = await settled(60_000, ec);
    await ec.killDisk(3);
    await ec.mapd.service.change((m) => setDiskState(m, 3, { in: false }));
    const watch = await tessera(['recovery', 'watch', '--interval-ms', '300'], ec);
    expect(watch.stderr).toBe('');
    expect(watch.code).toBe(0);
    const after = await settled(60_000, ec);
    expect(after.recovery.objectsRecovered).toBeGreaterThan(before.recovery.objectsRecovered);
    expect(after.recovery.bytesRecovered).toBeGreaterThan(before.recovery.bytesRecovered);
    for (let i = 0; i < 96; i++) expect((await ec.client.read('ec', `e-${i}`)).length).toBe(20_000);
  } finally {
    await ec.stop();
  }
}, 240_000);
