/**
 * Intervals below the pool's write quorum (min_size) serve reads only. Real
 * cluster, 3 daemon processes on 3 hosts, size 3 / min_size 2:
 *
 * - Such an interval may show a write its primary applied but never got
 *   acknowledged (the replicas were stopped), so a later interval must hear
 *   from its member: with that member down the pg stays incomplete (saying
 *   why), and the value it showed is what reads return once it is back
 *   (a review of 24b22c6, which stopped recording these intervals, read v2
 *   there and v1 after).
 * - A pg that never had its write quorum (a pool created while two disks were
 *   down) holds no data, so its records (neverWritable) bind no later
 *   interval: when its lone member goes and the two others come back, it goes
 *   active on them. test/cluster-stall met this at cluster start: a pg active
 *   on its one member up, stopped before the full interval's peering ended,
 *   stayed incomplete.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { systemIo } from '../src/io/system.js';
import { TesseraClient } from '../src/client/client.js';
import { isTesseraError } from '../src/lib/errors.js';
import { createPool } from '../cluster/map-edit.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { retryFor, sleep } from './helpers/wait.js';
import { expectPgsAtPrimaries } from './helpers/pg-states.js';

const REP = 'rep';
const FRESH = 'fresh';
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: REP, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 1 }],
    // Nothing is marked out during the test: the pgs keep their three members.
    liveness: { downGraceMs: 3000, outIntervalMs: 600_000, heartbeatIntervalMs: 250 },
  });
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

/** Every pg of the pool in `want` at its primary, in an interval at or after `sinceEpoch`; else throws saying which is not. */
const expectPgs = (poolName: string, want: 'active' | 'incomplete', sinceEpoch: number): Promise<void> => expectPgsAtPrimaries(cluster, poolName, want, sinceEpoch);

/** The map epoch once `ready` holds of it. */
function epochWhen(what: string, ready: (up: Set<number>) => boolean): Promise<number> {
  return retryFor(30_000, async () => {
    const map = await cluster.mapd.service.current();
    if (!ready(new Set(map.disks.filter((d) => d.up).map((d) => d.id)))) throw new Error(`waiting for ${what}`);
    return map.epoch;
  });
}

it('a read-only interval binds the next one to its member; a pg that never had its write quorum does not', async () => {
  const hasty = await TesseraClient.connect({ io: systemIo(), mapService: cluster.mapd.service, timeoutMs: 3000 });
  try {
    await cluster.client.transact(REP, 'x', [{ type: 'writeFull', data: Buffer.from('v1') }]);
    const { primary, acting } = cluster.client.view.pg(cluster.client.pool(REP), 0);
    const others = acting.filter((d) => d !== primary);
    expect(others.length).toBe(2);

    // A write the primary applies and never gets acknowledged: its replicas are stopped, then killed.
    for (const d of others) cluster.pauseDisk(d);
    const unacknowledged = hasty.transact(REP, 'x', [{ type: 'writeFull', data: Buffer.from('v2') }]).then(
      () => 'acknowledged',
      (err: unknown) => (err as Error).message,
    );
    await sleep(500);
    for (const d of others) await cluster.killDisk(d);
    const aloneEpoch = await epochWhen('the replicas down', (up) => others.every((d) => !up.has(d)));
    // A pool created now never has its write quorum: its pgs are active on the one disk up.
    let created = 0;
    await cluster.mapd.service.change((m) => {
      created = m.epoch + 1;
      return createPool(m, { id: 2, name: FRESH, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 });
    });
    await cluster.client.view.refresh();
    await retryFor(30_000, () => expectPgs(REP, 'active', aloneEpoch), 250);
    await retryFor(30_000, () => expectPgs(FRESH, 'active', created), 250);
    const shown = (await cluster.client.read(REP, 'x')).toString();
    expect(await unacknowledged).not.toBe('acknowledged');
    const refused = await hasty.transact(FRESH, 'while-alone', [{ type: 'writeFull', data: randomBytes(100) }]).then(
      () => null,
      (err: unknown) => err,
    );
    expect(isTesseraError(refused, 'NoQuorum'), String(refused)).toBe(true);

    // The lone member goes; the two others come back.
    await cluster.killDisk(primary);
    for (const d of others) await cluster.restartDisk(d);
    const backEpoch = await epochWhen('the replicas back', (up) => others.every((d) => up.has(d)));
    // The pool that never took writes goes active on them and takes writes.
    await retryFor(30_000, () => expectPgs(FRESH, 'active', backEpoch), 250);
    const written = new Map<string, Buffer>();
    for (let i = 0; i < 16; i++) {
      const data = randomBytes(300 + i * 41);
      await cluster.client.transact(FRESH, `after-${i}`, [{ type: 'writeFull', data }]);
      written.set(`after-${i}`, data);
    }
    // The other waits for the member that served it, and says so.
    await retryFor(30_000, () => expectPgs(REP, 'incomplete', backEpoch), 250);
    const busy = await hasty.read(REP, 'x').then(
      () => null,
      (err: unknown) => err,
    );
    expect(isTesseraError(busy, 'Busy') && /no member of the last interval/.test((busy as Error).message), String(busy)).toBe(true);

    // It comes back: reads return what it showed.
    await cluster.restartDisk(primary);
    const allEpoch = await epochWhen('every disk up', (up) => up.size === 3);
    await retryFor(30_000, () => expectPgs(REP, 'active', allEpoch), 250);
    await retryFor(30_000, () => expectPgs(FRESH, 'active', allEpoch), 250);
    expect((await cluster.client.read(REP, 'x')).toString()).toBe(shown);
    for (const [name, data] of written) expect((await cluster.client.read(FRESH, name)).equals(data), name).toBe(true);
  } finally {
    await hasty.close();
  }
}, 180_000);
