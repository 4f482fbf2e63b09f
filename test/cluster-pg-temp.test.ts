/**
 * Temporary acting sets (map.pgTemp, Ceph's pg_temp) on a real cluster (8
 * daemon processes on 4 hosts, a replicated pool): a disk is added whose
 * computed placement makes it the primary of some pgs that hold more objects
 * than a primary may copy before serving (limits.recoveryInlineObjectsMax).
 * Instead of keeping those pgs from I/O until the new disk is filled, its
 * daemon hands each of them to a member that has the data; that member
 * serves reads and writes and fills the new disk in the background (slowly
 * here: the recovery throttle is set low), then gives the pg back.
 *
 * What a user observes, asserted: a write to such a pg is acknowledged while
 * the new disk still lacks objects of the pg (without the temporary acting
 * set, the write would wait for the whole fill); `tessera status` shows the
 * pg remapped; in the end the new disk is the pg's primary, no temporary
 * acting set is left, every object is byte-exact on each member and through
 * the client.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { addDisk, nextDiskId } from '../cluster/map-edit.js';
import { buildPlacementIndex, objectToPg, pgMembers, pgPlacement } from '../cluster/placement.js';
import { dataNs } from '../src/daemon/pg-log.js';
import { limits } from '../src/lib/limits.js';
import { pgSummary } from '../src/cli/status.js';
import type { ClusterMap, PoolInfo } from '../cluster/map.js';
import { waitFor } from './helpers/wait.js';

const POOL = 'rep';
const OBJECT_BYTES = 16 * 1024;
/** Slow enough that filling one pg takes many seconds (objects per pg x OBJECT_BYTES / this). */
const RECOVERY_BYTES_PER_SEC = 128 * 1024;
let cluster: TestCluster;
const objects = new Map<string, Buffer>();

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 4,
    disksPerHost: 2,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 32 }],
    daemonArgs: ['--recovery-bytes-per-sec', String(RECOVERY_BYTES_PER_SEC), '--recovery-ops-inflight', '1'],
  });
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

const currentMap = (): Promise<ClusterMap> => cluster.mapd.service.current();
const poolOf = (map: ClusterMap): PoolInfo => map.pools.find((p) => p.name === POOL)!;

/** Names of objects of pool pg `pg`, `count` of them, starting the search at `from`. */
function namesInPg(pool: PoolInfo, pg: number, count: number, prefix: string): string[] {
  const names: string[] = [];
  for (let i = 0; names.length < count; i++) {
    const name = `${prefix}-${i}`;
    if (objectToPg(pool, name) === pg) names.push(name);
  }
  return names;
}

/** Objects of the pg the disk's store holds byte-exact. */
async function heldBy(diskId: number, pool: PoolInfo, names: readonly string[]): Promise<number> {
  const store = cluster.storeOf(diskId);
  try {
    let held = 0;
    for (const name of names) {
      const copy = await store.read({ ns: dataNs(pool.id, 0), name }).catch(() => null);
      if (copy?.equals(objects.get(name)!)) held++;
    }
    return held;
  } finally {
    await store.close();
  }
}

it('a pg whose new primary must be filled keeps serving from a member with the data, then moves to it', async () => {
  const map0 = await currentMap();
  const pool = poolOf(map0);
  // Where the disk about to be added lands (placement is a pure function of the map).
  const newDisk = nextDiskId(map0);
  const planned = addDisk(map0, { id: newDisk, host: 'host0', weight: 1, address: '127.0.0.1:1', up: false, in: true });
  const plannedIndex = buildPlacementIndex(planned);
  const targets = Array.from({ length: pool.pgCount }, (_, pg) => pg).filter((pg) => pgMembers(plannedIndex, pool, pg)[0] === newDisk);
  expect(targets.length, 'pgs whose computed primary is the new disk').toBeGreaterThan(0);
  // More objects in those pgs than a primary copies before serving; a few in every other pg.
  const perTarget = limits.recoveryInlineObjectsMax + 16;
  const byPg = new Map<number, string[]>();
  for (let pg = 0; pg < pool.pgCount; pg++) byPg.set(pg, namesInPg(pool, pg, targets.includes(pg) ? perTarget : 4, `obj-${pg}`));
  for (const names of byPg.values()) for (const name of names) objects.set(name, randomBytes(OBJECT_BYTES));
  const all = [...objects.keys()];
  for (let i = 0; i < all.length; i += 16) await Promise.all(all.slice(i, i + 16).map((n) => cluster.client.put(POOL, n, objects.get(n)!)));

  expect(await cluster.addDisk({ host: 'host0' })).toBe(newDisk);
  const target = targets[0]!;
  const targetNames = byPg.get(target)!;
  // The new disk's daemon peers the pg as its computed primary and hands it to a member with the data.
  const remapped = await waitFor(`a temporary acting set for pg ${pool.id}.${target}`, 60_000, async () => {
    const m = await currentMap();
    const temp = m.pgTemp?.find((t) => t.pool === pool.id && t.pg === target);
    return temp ? m : undefined;
  });
  const placement = pgPlacement(remapped, buildPlacementIndex(remapped), poolOf(remapped), target);
  expect(placement.members[0]).toBe(newDisk);
  expect(placement.primary).not.toBe(newDisk);
  expect(placement.acting).toContain(newDisk);
  const status = pgSummary(remapped, new Map());
  expect(status.states.some((s) => s.includes('+remapped')), JSON.stringify(status.states)).toBe(true);

  // A write to the pg is acknowledged while the new disk is still being filled.
  const [extra] = namesInPg(pool, target, 1, 'during');
  const data = randomBytes(OBJECT_BYTES);
  await cluster.client.put(POOL, extra!, data);
  objects.set(extra!, data);
  targetNames.push(extra!);
  const heldAfterWrite = await heldBy(newDisk, pool, targetNames);
  console.log(JSON.stringify({ case: 'write-during-fill', pg: `${pool.id}.${target}`, objects: targetNames.length, heldByNewDiskAfterWrite: heldAfterWrite }));
  expect(heldAfterWrite, 'objects of the pg on the new disk when the write was acknowledged').toBeLessThan(targetNames.length);
  expect((await cluster.client.read(POOL, extra!)).equals(data)).toBe(true);

  // Then the pg moves to its computed primary: no temporary acting set is left, every copy is in place.
  const final = await waitFor('every temporary acting set cleared', 180_000, async () => {
    const m = await currentMap();
    return (m.pgTemp ?? []).length === 0 ? m : undefined;
  });
  const finalIndex = buildPlacementIndex(final);
  for (const pg of targets) expect(pgPlacement(final, finalIndex, poolOf(final), pg).primary).toBe(newDisk);
  let missing = '';
  await waitFor(() => `full redundancy (${missing})`, 60_000, async () => {
    for (const [pg, names] of byPg) {
      for (const id of pgMembers(finalIndex, pool, pg)) {
        const held = await heldBy(id, pool, names);
        missing = `pg ${pg} on disk ${id}: ${held} of ${names.length}`;
        if (held !== names.length) return undefined;
      }
    }
    return true;
  });
  for (const [name, bytes] of objects) expect((await cluster.client.read(POOL, name)).equals(bytes), name).toBe(true);
}, 300_000);
