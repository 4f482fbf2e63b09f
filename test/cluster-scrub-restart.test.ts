/**
 * What a scrub finds survives a restart of the pg's primary (its scrub
 * record: src/daemon/scrub-record.ts), on a real cluster (3 daemon
 * processes, one per host, a replicated pool of size 3: every disk holds
 * every pg), through the real `tessera` binary.
 *
 * Of two objects whose pgs have the same primary, one is removed from a
 * replica and the other's xattr changed on a replica (fenced pushes, as a buggy recovery would do); `pool scrub` finds
 * both (exit 1, no repair) and `tessera pg inconsistent --json` lists them.
 * Their primary is killed (kill -9, marked down: the pgs move to another
 * primary, which never scrubbed them) and started again
 * on its directory; once every pg is active again, `tessera pg inconsistent`
 * lists the same two and `tessera status` is HEALTH_ERR with the pgs
 * `+inconsistent`. Before the record, a restarted primary forgot them: the
 * listing was empty and status healthy until the next scrub. A repair then
 * clears the listing, and that too survives a restart.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { encodePush, OsdOpcode } from '../src/protocol/osd-messages.js';
import { createTcpClient } from '../src/rpc/index.js';
import type { StoreOp } from '../src/store/types.js';
import { objectToPg } from '../cluster/placement.js';
import { dataNs } from '../src/daemon/pg-log.js';
import { runTessera } from './helpers/daemon-process.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { waitFor } from './helpers/wait.js';

let cluster: TestCluster;
const POOL = 'rep';

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 4 }],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const tessera = (args: string[]): ReturnType<typeof runTessera> => runTessera(args, cluster.mapd.port);

function membersOf(name: string): number[] {
  const info = cluster.client.pool(POOL);
  return cluster.client.view.pg(info, objectToPg(info, name)).members;
}

/** A fenced store transaction on one member's copy (what recovery sends), to damage it on purpose. */
async function pushTo(diskId: number, name: string, ops: (id: { ns: number; name: string }) => StoreOp[]): Promise<void> {
  const info = cluster.client.pool(POOL);
  const rpc = createTcpClient({ io: cluster.io, host: '127.0.0.1', port: cluster.daemons.get(diskId)!.port });
  try {
    const { header, payload } = encodePush({ epoch: cluster.client.view.epoch, poolId: info.id, pg: objectToPg(info, name), ops: ops({ ns: dataNs(info.id, 0), name }) });
    await rpc.call(OsdOpcode.pgPush, header, payload, { timeoutMs: 30_000 });
  } finally {
    await rpc.close();
  }
}

/** `tessera pg inconsistent --json`: the listed inconsistencies as "object@disk:kinds", sorted. */
async function listedInconsistent(): Promise<{ listed: string[]; unrepaired: number }> {
  const r = await tessera(['pg', 'inconsistent', '--json']);
  expect(r.code, r.stderr + r.stdout).toBe(0);
  const doc = JSON.parse(r.stdout) as { unrepaired: number; inconsistencies: Array<{ object: string; diskId: number; kinds: string[] }> };
  return { listed: doc.inconsistencies.map((i) => `${i.object}@${i.diskId}:${i.kinds.join(',')}`).sort(), unrepaired: doc.unrepaired };
}

interface StatusJson {
  health: string;
  reasons: string[];
  disks: { total: number; up: number };
  pgs: { total: number; byState: Record<string, number> };
}

/** Kill -9 of the disk's daemon (marked down), started again; resolves once every disk is up and every pg active. */
async function killAndRestart(diskId: number): Promise<StatusJson> {
  await cluster.killDisk(diskId);
  await cluster.restartDisk(diskId);
  let last = '';
  return waitFor(() => `every pg active after disk ${diskId} restarted (last status: ${last})`, 60_000, async () => {
    const r = await tessera(['status', '--json']);
    last = r.stdout.trim();
    const s = JSON.parse(r.stdout) as StatusJson;
    if (s.disks?.up !== s.disks?.total || !s.pgs) return undefined;
    const active = Object.entries(s.pgs.byState).reduce((n, [state, count]) => n + (state.startsWith('active') && !state.includes('peering') ? count : 0), 0);
    return active === s.pgs.total && s.pgs.total > 0 ? s : undefined;
  }, 500);
}

it('a restarted primary still lists what its last scrub found, and status stays HEALTH_ERR', async () => {
  const { client } = cluster;
  for (let i = 0; i < 8; i++) await client.put(POOL, `r-${i}`, randomBytes(20_000 + i * 100));
  const clean = await tessera(['pool', 'scrub', POOL, '--json']);
  expect(clean.code, clean.stderr + clean.stdout).toBe(0);

  // Two objects whose pgs have one primary: the one restarted below.
  const names = Array.from({ length: 8 }, (_, i) => `r-${i}`);
  const a = names[0]!;
  const primary = membersOf(a)[0]!;
  const b = names.find((n) => n !== a && membersOf(n)[0] === primary)!;
  expect(b, 'a second object led by the same primary').toBeDefined();
  const missingOn = membersOf(a)[1]!;
  await pushTo(missingOn, a, (id) => [{ type: 'remove', id }]);
  const changedOn = membersOf(b)[2]!;
  await pushTo(changedOn, b, (id) => [{ type: 'setXattr', id, name: 'color', value: Buffer.from('green') }]);
  const expected = [`${a}@${missingOn}:missing`, `${b}@${changedOn}:xattrs`].sort();

  const scrub = await tessera(['pool', 'scrub', POOL, '--json']);
  expect(scrub.code, scrub.stderr).toBe(1);
  expect(await listedInconsistent()).toEqual({ listed: expected, unrepaired: 2 });

  // Their primary dies and comes back on its directory.
  const status = await killAndRestart(primary);
  expect(membersOf(a)[0]).toBe(primary);
  expect(membersOf(b)[0]).toBe(primary);
  expect(await listedInconsistent()).toEqual({ listed: expected, unrepaired: 2 });
  expect(status.health).toBe('HEALTH_ERR');
  expect(Object.keys(status.pgs.byState).some((s) => s.endsWith('+inconsistent'))).toBe(true);
  // The text listing says when (and how deep) the scrub ran.
  const text = await tessera(['pg', 'inconsistent']);
  expect(text.code, text.stderr).toBe(0);
  expect(text.stdout).toContain('2 inconsistencies in ');

  // A repair clears them, and the clean record survives a restart too.
  const repair = await tessera(['pool', 'scrub', POOL, '--repair']);
  expect(repair.code, repair.stdout + repair.stderr).toBe(0);
  expect(repair.stdout).toMatch(/2 inconsistencies, 2 repaired/);
  expect(await listedInconsistent()).toEqual({ listed: [], unrepaired: 0 });
  const after = await killAndRestart(primary);
  expect(after.health).toBe('HEALTH_OK');
  expect(await listedInconsistent()).toEqual({ listed: [], unrepaired: 0 });
}, 180_000);
