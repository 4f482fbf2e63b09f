/**
 * A pg with one member out of room keeps serving (Ceph's backfill_toofull /
 * recovery_toofull), on a real cluster: 3 daemon processes, one per host, a
 * replicated pool of size 3 and min_size 2 (every pg has every disk).
 *
 * One replica of the pg under test is restarted with a capacity 1 MiB above
 * its store's reserve (the map's full ratio is never reached, so the primary
 * sends it writes); a 3 MiB write to the pg does not fit there: its store
 * refuses it NoSpace, the pg peers again, and recovery's copy of the object
 * to that member fails NoSpace too. Before, the pg then stayed peering and
 * refused every request Busy (reads and deletes too) until the member had
 * room; this test fails so on the code before it (the big write and the
 * reads time out Busy). Now the primary leaves the member out of the acting
 * set (a temporary acting set in the map without it): the pg goes active,
 * degraded, with two members (min_size), so the big write is acknowledged
 * with two durable copies, reads of the objects written before, deletes and
 * new writes work, and `tessera status` shows the pg `+toofull` and
 * degraded. The full member holds no copy of the big object meanwhile.
 *
 * The same again with the pg's primary out of room (the pg moves to another
 * member the same way).
 *
 * Then the member is restarted with its real capacity: the primary brings it
 * back (fills it, clears the temporary acting set, catches it up from the
 * log), every pg is active and clean, and every acknowledged object is
 * byte-exact on all three members' stores (the deleted one absent
 * everywhere); a deep scrub of the pg finds nothing.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { TesseraClient } from '../src/client/client.js';
import { objectToPg } from '../cluster/placement.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { runTessera } from './helpers/daemon-process.js';
import { waitFor } from './helpers/wait.js';
import { restartDisk, restartNearlyFull, copyOn as copyOnDisk } from './helpers/refusal.js';

const POOL = 'rep';
const MiB = 1024 * 1024;
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 }],
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

/** The pool's pg states as `tessera status --json` reports them (state -> count). */
async function pgStates(): Promise<Record<string, number>> {
  const r = await tessera(['status', '--json']);
  const doc = JSON.parse(r.stdout) as { pools: Array<{ name: string; pgs: Record<string, number> }> };
  return doc.pools.find((p) => p.name === POOL)!.pgs;
}

it.each([
  { role: 'replica', prefix: 'r', position: 1 },
  { role: 'primary', prefix: 'p', position: 0 },
])('a $role out of room is left out: the pg serves reads, deletes and writes degraded, and it is brought back once it has room', async ({ prefix, position }) => {
  const { client } = cluster;
  const info = client.pool(POOL);
  const names = Array.from({ length: 2000 }, (_, i) => `${prefix}-${i}`);
  // Each case its own pg (the replica case takes the first name's, the primary case the first other one's).
  const pg = objectToPg(info, names.find((n) => prefix === 'r' || objectToPg(info, n) !== objectToPg(info, 'r-0'))!);
  const inPg = names.filter((n) => objectToPg(info, n) === pg);
  const [big, ...others] = inPg;
  const before = others.slice(0, 6);
  const later = others.slice(6, 10);
  expect(later.length).toBe(4);
  const members = client.view.pg(info, pg).members;
  expect(members.length).toBe(3);
  const full = members[position]!;

  const acked = new Map<string, Buffer>();
  for (const name of before) {
    const data = randomBytes(64 * 1024);
    await client.put(POOL, name, data);
    acked.set(name, data);
  }

  // The replica with 1 MiB above its store's reserve: the 3 MiB write does not fit there.
  const capacityBytes = await restartNearlyFull(cluster, [POOL], full, MiB);

  // A client that gives up after 20 s: a pg refusing I/O makes its calls fail rather than wait.
  const short = await TesseraClient.connect({ io: cluster.io, mapService: cluster.mapd.service, timeoutMs: 20_000 });
  try {
    const bigData = randomBytes(3 * MiB);
    const bigOutcome = await short.put(POOL, big!, bigData).then(
      () => 'acknowledged',
      (err: unknown) => (err as Error).message,
    );
    console.log(JSON.stringify({ case: `toofull ${prefix}`, pg, members, full, capacityBytes, bigOutcome }));
    // Reads of what was there before (refused Busy while the pg peered, before).
    for (const [name, data] of acked) {
      const got = await short.read(POOL, name).catch((err: unknown) => (err as Error).message);
      expect(Buffer.isBuffer(got) && got.equals(data), `read of ${name} with disk ${full} out of room: ${Buffer.isBuffer(got) ? `${got.length} other bytes` : got}`).toBe(true);
    }
    expect(bigOutcome, `the big write with disk ${full} out of room`).toBe('acknowledged');
    acked.set(big!, bigData);
    expect(await copyOn(full, big!), `disk ${full} has no room for ${big}`).toBe('NotFound');

    // The pg is active without the full member: left out of the acting set (a temporary acting set), still a member.
    const map = await cluster.mapd.service.current();
    const temp = map.pgTemp?.find((t) => t.pool === info.id && t.pg === pg);
    expect(temp, `a temporary acting set for pg ${info.id}.${pg}`).toBeDefined();
    expect(temp!.up).toEqual(members);
    expect(temp!.acting).not.toContain(full);
    expect(temp!.acting.length).toBe(2);
    // Status: the pg is degraded, and says why.
    const states = await waitFor('status to show the pg toofull', 30_000, async () => {
      const s = await pgStates();
      return Object.keys(s).some((k) => k.includes('toofull')) ? s : undefined;
    });
    const tooFullState = Object.keys(states).find((k) => k.includes('toofull'))!;
    expect(tooFullState).toMatch(/^active\+toofull/);
    expect(tooFullState).toContain('+degraded');

    // Deletes and new writes of the pg work, with two copies (min_size 2).
    const victim = before[0]!;
    await short.remove(POOL, victim);
    acked.delete(victim);
    await expect(short.stat(POOL, victim)).rejects.toMatchObject({ code: 'NotFound' });
    for (const name of later) {
      const data = randomBytes(8192);
      await short.put(POOL, name, data);
      acked.set(name, data);
    }
    for (const [name, data] of acked) expect((await short.read(POOL, name)).equals(data), name).toBe(true);

    // Room given back (its real capacity): the member is filled, rejoins the acting set and is caught up.
    await restartDisk(cluster, [POOL], full);
    let seen: Record<string, number> = {};
    await waitFor(
      () => `pg ${info.id}.${pg} active and clean with every member (status ${JSON.stringify(seen)})`,
      120_000,
      async () => {
        seen = await pgStates();
        const m = await cluster.mapd.service.current();
        if ((m.pgTemp ?? []).some((t) => t.pool === info.id && t.pg === pg)) return undefined;
        return seen.active === info.pgCount ? true : undefined;
      },
      500,
    );
    await client.view.refresh();
    expect(client.view.pg(info, pg).acting).toEqual(members);
    for (const d of members) {
      for (const [name, data] of acked) {
        const got = await copyOn(d, name);
        expect(Buffer.isBuffer(got) && got.equals(data), `disk ${d}: acknowledged ${name} (${data.length} bytes) reads ${Buffer.isBuffer(got) ? `${got.length} other bytes` : got}`).toBe(true);
      }
      expect(await copyOn(d, victim), `disk ${d}: deleted ${victim}`).toBe('NotFound');
    }
    for (const [name, data] of acked) expect((await client.read(POOL, name)).equals(data), name).toBe(true);
    const scrub = await tessera(['pg', 'scrub', `${POOL}.${pg}`, '--deep', '--json']);
    expect(scrub.code, `deep scrub: ${scrub.stdout}${scrub.stderr}`).toBe(0);
    expect((JSON.parse(scrub.stdout) as { inconsistencies: number }).inconsistencies, scrub.stdout).toBe(0);
  } finally {
    await short.close();
  }
}, 300_000);
