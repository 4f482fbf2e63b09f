/**
 * Read repair and pg scrub on a real cluster (3 daemon processes, one per
 * host, a replicated pool of size 3 and an erasure-coded 2+1 pool: every
 * disk holds every pg).
 *
 * Read repair: bytes flipped in the primary's segment file make its copy fail
 * its checksum; a client read still returns the object byte-exact (the
 * primary fetched a replica's copy) and the primary's own copy is good again.
 *
 * Scrub, through the real `tessera` binary: one object's bytes flipped on a
 * replica, one object removed from a replica, one object's xattr changed on a
 * replica (fenced pushes, as a buggy recovery would do); a shallow scrub
 * finds the two metadata differences, `pool scrub --deep` exactly the three;
 * `--repair` fixes them; a second deep scrub is clean, `tessera status` is
 * healthy again, and every object reads back byte-exact from every member.
 *
 * Erasure-coded (a 2+1 pool on the same disks): a data shard's bytes flipped
 * on disk and a parity shard removed: a deep scrub finds exactly those,
 * --repair rebuilds them from the other shards, and every shard checks out
 * (one version, parity consistent, data equal).
 *
 * Read repair, erasure-coded: a data shard's bytes flipped on disk; a client
 * read returns the object byte-exact (degraded) and the primary rebuilds the
 * shard in the background (src/daemon/read-repairs.ts): the member's copy
 * reads again, every shard checks out, a deep scrub of the pg is clean.
 *
 * Erasure-coded parity: a parity shard's bytes overwritten with other bytes
 * through the store (its checksums pass): a deep scrub codes the parity
 * again from the data shards and names it. With one parity shard (2+1) that
 * is ambiguous (a data shard written wrong looks the same): --repair leaves
 * it, reported. A data shard written wrong: reported the same way, and after
 * --repair the good bytes still decode from the other shards. On a 2+3 pool
 * (its own 5-disk cluster) one wrong parity shard is unambiguous (the others
 * agree with the data): --repair rebuilds that shard alone; a wrong data
 * shard is the only shard whose absence leaves the others consistent: named
 * ('shard'), rebuilt from the others, and read back with each other member
 * stopped; two wrong shards (or two swapped) are reported and left as they
 * were. On 3+2 (two parity shards: one wrong shard cannot be told from two)
 * the same findings are reported and nothing is rebuilt.
 *
 * Background: daemons deep-scrubbing every 1.5 s notice a corrupt replica
 * copy on their own (status HEALTH_ERR, "pgs inconsistent", and `tessera pg
 * inconsistent` lists it) until a repair.
 *
 * `tessera pg inconsistent` (whole cluster, one pool, one pg) lists exactly
 * what the last scrubs left unrepaired, and nothing after the repair.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { encodePush, OsdOpcode } from '../src/protocol/osd-messages.js';
import { createTcpClient } from '../src/rpc/index.js';
import type { ReadOptions, StoreOp } from '../src/store/types.js';
import { runTessera } from './helpers/daemon-process.js';
import { checkShards } from './cluster-ec-helpers.js';
import { isTesseraError } from '../src/lib/errors.js';
import { objectToPg } from '../cluster/placement.js';
import { dataNs, encodeVersionValue, VERSION_XATTR } from '../src/daemon/pg-log.js';
import { SIZE_XATTR } from '../src/daemon/ec-record.js';
import { Writer } from '../src/lib/codec.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { corruptObjectOnDisk } from './helpers/corrupt.js';
import { seededRng } from './helpers/random.js';
import { retryFor } from './helpers/wait.js';

let cluster: TestCluster;
const POOL = 'rep';
const EC_POOL = 'ec';

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [
      { name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 },
      { name: EC_POOL, redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 }, failureDomain: 'host', pgCount: 4 },
    ],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

function membersOf(name: string): number[] {
  const info = cluster.client.pool(POOL);
  return cluster.client.view.pg(info, objectToPg(info, name)).members;
}

/** A direct read of one disk's copy: the bytes, or the error code. */
async function directRead(diskId: number, name: string, options: ReadOptions = {}): Promise<Buffer | string> {
  const store = cluster.storeOf(diskId);
  try {
    return await store.read({ ns: dataNs(cluster.client.pool(POOL).id, 0), name }, options);
  } catch (err) {
    return isTesseraError(err) ? err.code : String(err);
  } finally {
    await store.close();
  }
}

it('read repair: a corrupt primary copy is served from a replica and repaired', async () => {
  const { client } = cluster;
  const data = randomBytes(64 * 1024);
  await client.put(POOL, 'rr-1', data);
  await client.transact(POOL, 'rr-1', [
    { type: 'setXattr', name: 'color', value: Buffer.from('red') },
    { type: 'omapSet', entries: [[Buffer.from('k'), Buffer.from('v')]] },
  ]);
  const version = (await client.stat(POOL, 'rr-1')).version;
  const primary = membersOf('rr-1')[0]!;
  const places = await corruptObjectOnDisk(cluster.diskDir(primary), data, seededRng(1));
  expect(places.length).toBeGreaterThan(0);
  expect(await directRead(primary, 'rr-1')).toBe('Corrupt');
  expect((await client.read(POOL, 'rr-1')).equals(data)).toBe(true);
  const repaired = await directRead(primary, 'rr-1');
  expect(Buffer.isBuffer(repaired) && repaired.equals(data)).toBe(true);
  expect((await client.getXattrs(POOL, 'rr-1')).get('color')?.toString()).toBe('red');
  expect((await client.omapGet(POOL, 'rr-1', [Buffer.from('k')]))[0]?.toString()).toBe('v');
  expect((await client.stat(POOL, 'rr-1')).version).toEqual(version);
  // A large object (streamed out in pieces) corrupt only in its third MiB: still read whole and verified before
  // the reply, so the Corrupt reaches read repair instead of failing the reply mid-stream.
  const big = randomBytes(3 * 1024 * 1024 + 5);
  await client.put(POOL, 'rr-big', big);
  const bigPrimary = membersOf('rr-big')[0]!;
  const bigPlaces = await corruptObjectOnDisk(cluster.diskDir(bigPrimary), big.subarray(2 * 1024 * 1024 + 1), seededRng(2));
  expect(bigPlaces.length).toBeGreaterThan(0);
  // (A direct read of its last MiB alone: a whole direct read fails mid-stream, Unavailable.)
  expect(await directRead(bigPrimary, 'rr-big', { offsetBytes: 2 * 1024 * 1024, lengthBytes: 1024 * 1024 + 5 })).toBe('Corrupt');
  expect((await client.read(POOL, 'rr-big')).equals(big)).toBe(true);
  const bigRepaired = await directRead(bigPrimary, 'rr-big');
  expect(Buffer.isBuffer(bigRepaired) && bigRepaired.equals(big)).toBe(true);
}, 60_000);

/** Runs the tessera binary against the test cluster's map service. */
const tessera = (args: string[], on: TestCluster = cluster): ReturnType<typeof runTessera> => runTessera(args, on.mapd.port);

/** A fenced store transaction on one member's copy (what recovery sends), to damage it on purpose. */
async function pushTo(diskId: number, name: string, ops: (id: { ns: number; name: string }) => StoreOp[], pool = POOL, shard = 0): Promise<void> {
  const info = cluster.client.pool(pool);
  const rpc = createTcpClient({ io: cluster.io, host: '127.0.0.1', port: cluster.daemons.get(diskId)!.port });
  try {
    const { header, payload } = encodePush({ epoch: cluster.client.view.epoch, poolId: info.id, pg: objectToPg(info, name), ops: ops({ ns: dataNs(info.id, shard), name }) });
    await rpc.call(OsdOpcode.pgPush, header, payload, { timeoutMs: 30_000 });
  } finally {
    await rpc.close();
  }
}

interface ScrubJson {
  inconsistencies: number;
  repaired: number;
  unrepaired: number;
  notScrubbed: number;
  pgs: Array<{ inconsistencies: Array<{ object: string; diskId: number; kinds: string[]; repaired: boolean; detail: string }> }>;
}

/** `tessera pg inconsistent [what] --json`: the listed inconsistencies as "object@disk:kinds", sorted. */
async function listedInconsistent(what: string[] = [], on: TestCluster = cluster): Promise<{ listed: string[]; unrepaired: number }> {
  const r = await tessera(['pg', 'inconsistent', ...what, '--json'], on);
  expect(r.code, r.stderr + r.stdout).toBe(0);
  const doc = JSON.parse(r.stdout) as { unrepaired: number; inconsistencies: Array<{ object: string; diskId: number; kinds: string[] }> };
  return { listed: doc.inconsistencies.map((i) => `${i.object}@${i.diskId}:${i.kinds.join(',')}`).sort(), unrepaired: doc.unrepaired };
}

const found = (doc: ScrubJson): string[] =>
  doc.pgs
    .flatMap((p) => p.inconsistencies.map((i) => `${i.object}@${i.diskId}:${i.kinds.join(',')}${i.repaired ? ':repaired' : ''}`))
    .sort();

it('pool scrub finds a corrupt, a missing and a changed replica copy; --repair fixes them', async () => {
  const { client } = cluster;
  const objects = new Map<string, Buffer>();
  for (let i = 0; i < 12; i++) {
    const data = randomBytes(i % 3 === 0 ? 300 : 40_000 + i * 1000);
    objects.set(`s-${i}`, data);
    await client.put(POOL, `s-${i}`, data);
    if (i % 2 === 0) await client.transact(POOL, `s-${i}`, [{ type: 'omapSet', entries: [[Buffer.from('k'), Buffer.from(`v${i}`)]] }]);
  }
  const clean = await tessera(['pool', 'scrub', POOL, '--deep', '--json']);
  expect(clean.code, clean.stderr + clean.stdout).toBe(0);
  expect(found(JSON.parse(clean.stdout) as ScrubJson)).toEqual([]);

  const corruptOn = membersOf('s-1')[1]!;
  expect((await corruptObjectOnDisk(cluster.diskDir(corruptOn), objects.get('s-1')!, seededRng(2))).length).toBeGreaterThan(0);
  const missingOn = membersOf('s-2')[2]!;
  await pushTo(missingOn, 's-2', (id) => [{ type: 'remove', id }]);
  const changedOn = membersOf('s-4')[1]!;
  await pushTo(changedOn, 's-4', (id) => [{ type: 'setXattr', id, name: 'color', value: Buffer.from('green') }]);
  const expected = [`s-1@${corruptOn}:corrupt`, `s-2@${missingOn}:missing`, `s-4@${changedOn}:xattrs`].sort();

  const shallow = await tessera(['pool', 'scrub', POOL, '--json']);
  expect(shallow.code).toBe(1);
  expect(found(JSON.parse(shallow.stdout) as ScrubJson)).toEqual([`s-2@${missingOn}:missing`, `s-4@${changedOn}:xattrs`].sort());
  const deep = await tessera(['pool', 'scrub', POOL, '--deep', '--json']);
  expect(deep.code).toBe(1);
  expect(found(JSON.parse(deep.stdout) as ScrubJson)).toEqual(expected);
  const status = await tessera(['status', '--json']);
  const health = JSON.parse(status.stdout) as { health: string; reasons: string[] };
  expect(health.health).toBe('HEALTH_ERR');
  expect(health.reasons.join('\n')).toMatch(/inconsistent/);
  // The listing shows what the last scrubs left, without scrubbing again; narrowed to a pool and to one pg.
  expect(await listedInconsistent()).toEqual({ listed: expected, unrepaired: 3 });
  expect(await listedInconsistent([POOL])).toEqual({ listed: expected, unrepaired: 3 });
  expect(await listedInconsistent([EC_POOL])).toEqual({ listed: [], unrepaired: 0 });
  const info = client.pool(POOL);
  expect((await listedInconsistent([`${POOL}.${objectToPg(info, 's-2')}`])).listed).toContain(`s-2@${missingOn}:missing`);
  const text = await tessera(['pg', 'inconsistent']);
  expect(text.code, text.stderr).toBe(0);
  expect(text.stdout).toMatch(/^PG +OBJECT +DISK +KINDS/m);
  expect(text.stdout).toContain('3 inconsistencies in ');
  const bad = await tessera(['pg', 'inconsistent', 'nosuchpool.1']);
  expect(bad.code).toBe(1);
  expect(bad.stderr).toContain('no pool nosuchpool');

  const repair = await tessera(['pool', 'scrub', POOL, '--deep', '--repair']);
  expect(repair.code, repair.stdout + repair.stderr).toBe(0);
  expect(repair.stdout).toMatch(/3 inconsistencies, 3 repaired/);
  const again = await tessera(['pool', 'scrub', POOL, '--deep', '--json']);
  expect(again.code, again.stdout).toBe(0);
  expect(found(JSON.parse(again.stdout) as ScrubJson)).toEqual([]);
  expect((JSON.parse((await tessera(['status', '--json'])).stdout) as { health: string }).health).toBe('HEALTH_OK');
  expect(await listedInconsistent()).toEqual({ listed: [], unrepaired: 0 });

  for (const [name, data] of objects) {
    expect((await client.read(POOL, name)).equals(data), name).toBe(true);
    for (const diskId of membersOf(name)) {
      const copy = await directRead(diskId, name);
      expect(Buffer.isBuffer(copy) && copy.equals(data), `${name} on disk ${diskId}`).toBe(true);
    }
  }
}, 120_000);

it('pool scrub of an erasure-coded pool finds a corrupt and a missing shard; --repair rebuilds them', async () => {
  const { client } = cluster;
  const info = client.pool(EC_POOL);
  const positions = (name: string): number[] => client.view.pg(info, objectToPg(info, name)).members;
  const objects = new Map<string, Buffer>();
  for (let i = 0; i < 6; i++) {
    const data = randomBytes(100_000 + i * 3000);
    objects.set(`e-${i}`, data);
    await client.put(EC_POOL, `e-${i}`, data);
  }
  const clean = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--json']);
  expect(clean.code, clean.stderr + clean.stdout).toBe(0);
  expect(found(JSON.parse(clean.stdout) as ScrubJson)).toEqual([]);

  // Position 1 holds data: the object's own bytes are in its segment file.
  const corruptOn = positions('e-1')[1]!;
  expect((await corruptObjectOnDisk(cluster.diskDir(corruptOn), objects.get('e-1')!, seededRng(3))).length).toBeGreaterThan(0);
  const missingOn = positions('e-2')[2]!;
  await pushTo(missingOn, 'e-2', (id) => [{ type: 'remove', id }], EC_POOL, 2);

  const deep = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--json']);
  expect(deep.code).toBe(1);
  expect(found(JSON.parse(deep.stdout) as ScrubJson)).toEqual([`e-1@${corruptOn}:corrupt`, `e-2@${missingOn}:missing`].sort());
  const repair = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--repair']);
  expect(repair.code, repair.stdout + repair.stderr).toBe(0);
  expect(repair.stdout).toMatch(/2 inconsistencies, 2 repaired/);
  const again = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--json']);
  expect(again.code, again.stdout).toBe(0);
  for (const [name, data] of objects) {
    expect((await client.read(EC_POOL, name)).equals(data), name).toBe(true);
    await checkShards(cluster, EC_POOL, name, data);
  }
}, 120_000);

/**
 * Shards that only a write which never committed could have left (their version is past the pg log's tail
 * and no log entry has it; fewer than k members hold it), planted by fenced pushes: on one member of an
 * object no member holds, and over one member's shard of an object every member holds at an older version.
 * A deep scrub names exactly those shards; --repair removes the first and rebuilds the second at the
 * committed version, and never removes good shards it cannot rebuild from.
 */
it('read repair, erasure-coded: a read meeting a corrupt shard is served degraded and the shard is rebuilt in the background', async () => {
  const { client } = cluster;
  const info = client.pool(EC_POOL);
  const data = randomBytes(120_000);
  await client.put(EC_POOL, 'rr-1', data);
  const pg = objectToPg(info, 'rr-1');
  // Position 1 holds data: the object's own bytes are in its segment file.
  const corruptOn = client.view.pg(info, pg).members[1]!;
  expect((await corruptObjectOnDisk(cluster.diskDir(corruptOn), data, seededRng(5))).length).toBeGreaterThan(0);
  const shard = async (): Promise<Buffer | string> => {
    const store = cluster.storeOf(corruptOn);
    try {
      return await store.read({ ns: dataNs(info.id, 1), name: 'rr-1' });
    } catch (err) {
      return isTesseraError(err) ? err.code : String(err);
    } finally {
      await store.close();
    }
  };
  expect(await shard()).toBe('Corrupt');

  // The client gets the object byte-exact (rebuilt from the other two shards)...
  expect((await client.read(EC_POOL, 'rr-1')).equals(data)).toBe(true);
  // ...and the corrupt shard is rebuilt without a scrub.
  const deadline = Date.now() + 30_000;
  while (typeof (await shard()) === 'string' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  expect(Buffer.isBuffer(await shard()), 'shard 1 of rr-1 readable again').toBe(true);
  await checkShards(cluster, EC_POOL, 'rr-1', data);
  const deep = await tessera(['pg', 'scrub', `${EC_POOL}.${pg}`, '--deep', '--json']);
  expect(deep.code, deep.stdout + deep.stderr).toBe(0);
  expect(found(JSON.parse(deep.stdout) as ScrubJson)).toEqual([]);
  expect((await client.read(EC_POOL, 'rr-1')).equals(data)).toBe(true);
}, 90_000);

it('pool scrub of an erasure-coded pool finds shards of a version no log holds; --repair removes or rebuilds them', async () => {
  const { client } = cluster;
  const info = client.pool(EC_POOL);
  const positions = (name: string): number[] => client.view.pg(info, objectToPg(info, name)).members;
  const data = randomBytes(90_000);
  await client.put(EC_POOL, 'u-kept', data);
  const clean = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--json']);
  expect(clean.code, clean.stderr + clean.stdout).toBe(0);
  const never = { epoch: client.view.epoch, version: 1_000_000 };
  const orphanShard = (sizeBytes: number, shard: Buffer) => (id: { ns: number; name: string }): StoreOp[] => [
    { type: 'remove', id, ifExists: true },
    { type: 'create', id },
    { type: 'write', id, offsetBytes: 0, data: shard },
    { type: 'setXattr', id, name: SIZE_XATTR, value: new Writer(10).varint(sizeBytes).finish() },
    { type: 'setXattr', id, name: VERSION_XATTR, value: encodeVersionValue(never) },
  ];
  const aloneOn = positions('u-alone')[1]!;
  await pushTo(aloneOn, 'u-alone', orphanShard(8192, randomBytes(4096)), EC_POOL, 1);
  const overOn = positions('u-kept')[0]!;
  await pushTo(overOn, 'u-kept', orphanShard(data.length, randomBytes(45_056)), EC_POOL, 0);
  await expect(client.read(EC_POOL, 'u-alone')).rejects.toMatchObject({ code: 'NotFound' });

  const deep = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--json']);
  expect(deep.code, deep.stderr).toBe(1);
  expect(found(JSON.parse(deep.stdout) as ScrubJson)).toEqual([`u-alone@${aloneOn}:extra`, `u-kept@${overOn}:version`].sort());
  const repair = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--repair']);
  expect(repair.code, repair.stdout + repair.stderr).toBe(0);
  expect(repair.stdout).toMatch(/2 inconsistencies, 2 repaired/);
  const again = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--json']);
  expect(again.code, again.stdout).toBe(0);
  await expect(client.read(EC_POOL, 'u-alone')).rejects.toMatchObject({ code: 'NotFound' });
  await checkShards(cluster, EC_POOL, 'u-alone', null);
  expect((await client.read(EC_POOL, 'u-kept')).equals(data)).toBe(true);
  await checkShards(cluster, EC_POOL, 'u-kept', data);
}, 120_000);

/**
 * Parity shards whose bytes are wrong but whose checksums pass (a fenced write of other bytes over them, as
 * a bug in the write path would leave): reads are unaffected (every data shard is up), a shallow scrub and
 * each shard's own checksums see nothing; a deep scrub codes the parity again from the data shards and
 * names exactly those shards ('parity'). With one parity shard nothing says whether the parity or a data
 * shard is wrong: --repair leaves them (reported, listed by `pg inconsistent`), the parity bytes untouched.
 * One object fits one slice of the check, the other spans two (wrong in its second).
 */
it('deep scrub of an erasure-coded 2+1 pool finds parity shards that differ from their data; --repair leaves them (ambiguous)', async () => {
  const { client } = cluster;
  const info = client.pool(EC_POOL);
  const positions = (name: string): number[] => client.view.pg(info, objectToPg(info, name)).members;
  const small = randomBytes(100_000);
  const big = randomBytes(3 * 1024 * 1024 + 5);
  await client.put(EC_POOL, 'p-small', small);
  await client.put(EC_POOL, 'p-big', big);
  const clean = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--json']);
  expect(clean.code, clean.stderr + clean.stdout).toBe(0);
  expect(found(JSON.parse(clean.stdout) as ScrubJson)).toEqual([]);

  // Position 2 is the parity shard (2+1); one stripe unit of it overwritten with other bytes.
  const smallOn = positions('p-small')[2]!;
  await pushTo(smallOn, 'p-small', (id) => [{ type: 'write', id, offsetBytes: 3 * 4096, data: randomBytes(4096) }], EC_POOL, 2);
  const bigOn = positions('p-big')[2]!;
  await pushTo(bigOn, 'p-big', (id) => [{ type: 'write', id, offsetBytes: 1024 * 1024 + 5 * 4096, data: randomBytes(4096) }], EC_POOL, 2);
  const parityShard = async (diskId: number, name: string): Promise<Buffer> => {
    const store = cluster.storeOf(diskId);
    try {
      return await store.read({ ns: dataNs(info.id, 2), name });
    } finally {
      await store.close();
    }
  };
  // Their checksums pass: each reads whole.
  const plantedSmall = await parityShard(smallOn, 'p-small');
  const plantedBig = await parityShard(bigOn, 'p-big');
  expect(plantedSmall.length).toBe(13 * 4096);
  expect(plantedBig.length).toBe(Math.ceil(big.length / 8192) * 4096);
  expect((await client.read(EC_POOL, 'p-small')).equals(small)).toBe(true);

  const shallow = await tessera(['pool', 'scrub', EC_POOL, '--json']);
  expect(shallow.code, shallow.stdout).toBe(0);
  const expected = [`p-big@${bigOn}:parity`, `p-small@${smallOn}:parity`].sort();
  const deep = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--json']);
  expect(deep.code, deep.stderr).toBe(1);
  expect(found(JSON.parse(deep.stdout) as ScrubJson)).toEqual(expected);
  expect(await listedInconsistent([EC_POOL])).toEqual({ listed: expected, unrepaired: 2 });
  // m = 1: the parity or a data shard may be wrong; --repair must not code parity from data that may be wrong.
  const repair = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--repair', '--json']);
  expect(repair.code, repair.stdout + repair.stderr).toBe(1);
  const repairDoc = JSON.parse(repair.stdout) as ScrubJson;
  expect(found(repairDoc)).toEqual(expected);
  expect(repairDoc.repaired).toBe(0);
  for (const i of repairDoc.pgs.flatMap((p) => p.inconsistencies)) expect(i.detail).toMatch(/cannot be told which: not repaired/);
  expect(await listedInconsistent([EC_POOL])).toEqual({ listed: expected, unrepaired: 2 });
  expect((await parityShard(smallOn, 'p-small')).equals(plantedSmall), 'p-small parity left as it was').toBe(true);
  expect((await parityShard(bigOn, 'p-big')).equals(plantedBig), 'p-big parity left as it was').toBe(true);
  for (const [name, data] of [['p-small', small], ['p-big', big]] as const) {
    expect((await client.read(EC_POOL, name)).equals(data), name).toBe(true);
  }
  // Out of the way of the next tests' pool scrubs.
  await client.remove(EC_POOL, 'p-small');
  await client.remove(EC_POOL, 'p-big');
}, 120_000);

/** Shard `position` of `name` read straight from one disk's store (pool `pool` of `on`). */
async function shardOf(on: TestCluster, pool: string, diskId: number, position: number, name: string): Promise<Buffer> {
  const store = on.storeOf(diskId);
  try {
    return await store.read({ ns: dataNs(on.client.pool(pool).id, position), name });
  } finally {
    await store.close();
  }
}

/**
 * A data shard whose bytes are wrong but whose checksums pass: reads return the wrong bytes (every data shard
 * is up); a deep scrub sees the parity differ. --repair must not code the parity again from that data (fc83f7e
 * did, and the good bytes were gone): once the wrong data shard is removed, a read decodes the original bytes
 * from the other data shard and the parity, and a repair then rebuilds the data shard from them.
 */
it('deep scrub, erasure-coded 2+1: a data shard with wrong bytes is reported and --repair does not make it permanent', async () => {
  const { client } = cluster;
  const info = client.pool(EC_POOL);
  const data = randomBytes(100_000);
  await client.put(EC_POOL, 'd-wrong', data);
  const [, dataOn, parityOn] = client.view.pg(info, objectToPg(info, 'd-wrong')).members as [number, number, number];
  // Position 1 holds data (not the primary's position, whose shard a read opens first).
  await pushTo(dataOn, 'd-wrong', (id) => [{ type: 'write', id, offsetBytes: 2 * 4096, data: randomBytes(4096) }], EC_POOL, 1);
  const parityBefore = await shardOf(cluster, EC_POOL, parityOn, 2, 'd-wrong');
  expect((await client.read(EC_POOL, 'd-wrong')).equals(data), 'the planted bytes are read').toBe(false);

  const deep = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--json']);
  expect(deep.code, deep.stderr).toBe(1);
  expect(found(JSON.parse(deep.stdout) as ScrubJson)).toEqual([`d-wrong@${parityOn}:parity`]);
  const repair = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--repair', '--json']);
  expect(repair.code, repair.stdout + repair.stderr).toBe(1);
  expect(found(JSON.parse(repair.stdout) as ScrubJson)).toEqual([`d-wrong@${parityOn}:parity`]);
  expect(await listedInconsistent([EC_POOL])).toEqual({ listed: [`d-wrong@${parityOn}:parity`], unrepaired: 1 });
  expect((await shardOf(cluster, EC_POOL, parityOn, 2, 'd-wrong')).equals(parityBefore), 'parity left as it was').toBe(true);

  // The wrong data shard gone: the original bytes decode from data shard 0 and the parity.
  await pushTo(dataOn, 'd-wrong', (id) => [{ type: 'remove', id }], EC_POOL, 1);
  expect((await client.read(EC_POOL, 'd-wrong')).equals(data), 'original bytes after --repair').toBe(true);
  const rebuild = await tessera(['pool', 'scrub', EC_POOL, '--deep', '--repair']);
  expect(rebuild.code, rebuild.stdout + rebuild.stderr).toBe(0);
  expect(rebuild.stdout).toMatch(/1 inconsistencies, 1 repaired/);
  await checkShards(cluster, EC_POOL, 'd-wrong', data);
  expect(await listedInconsistent([EC_POOL])).toEqual({ listed: [], unrepaired: 0 });
  await client.remove(EC_POOL, 'd-wrong');
}, 120_000);

/**
 * 2+3 and 3+2 (5 hosts, their own cluster), shards written with other bytes whose checksums pass. With p parity
 * shards checked the code has distance p + 1: w wrong shards are told apart from w + 1 only when p >= 2w + 1.
 * 2+3 (p = 3):
 * - one wrong parity shard while the others agree with the data: --repair rebuilds that shard alone;
 * - a wrong data shard makes every parity shard differ; decoding without each shard in turn, only that one leaves
 *   the others consistent: the deep scrub names it ('shard', on its member) and --repair rebuilds it from the
 *   others (an object of one slice, wrong in data shard 1; one of two slices, wrong in the primary's own data
 *   shard 0, second slice). A second deep scrub is clean, and with each other member stopped in turn the reads
 *   return the original bytes (so a decode uses the rebuilt shard);
 * - two shards wrong (a data and a parity shard), and the two data shards swapped: no single shard explains it:
 *   reported, nothing rebuilt, every shard as it was.
 * 3+2 (p = 2): nothing found this way is rebuilt, every shard stays as it was:
 * - one wrong parity shard (the other agrees): reported, not repaired;
 * - one wrong data shard: named ('shard'), not repaired;
 * - data shards 0 and 1 swapped: the all-ones parity row still agrees and the other differs, exactly what a wrong
 *   parity shard alone looks like (and, before this rule, --repair rebuilt that parity shard from the swapped
 *   data); reported, not repaired.
 */
it('deep scrub, erasure-coded: one wrong shard is rebuilt only where it cannot be two (2+3); 3+2 reports and leaves', async () => {
  const P23 = 'ec23';
  const P32 = 'ec32';
  const own = await startTestCluster({
    hosts: 5,
    disksPerHost: 1,
    pools: [
      { name: P23, redundancy: { type: 'erasure', dataShards: 2, parityShards: 3 }, failureDomain: 'host', pgCount: 2 },
      { name: P32, redundancy: { type: 'erasure', dataShards: 3, parityShards: 2 }, failureDomain: 'host', pgCount: 2 },
    ],
  });
  try {
    const { client } = own;
    const membersIn = (pool: string, name: string): number[] => {
      const info = client.pool(pool);
      return client.view.pg(info, objectToPg(info, name)).members;
    };
    const push = async (pool: string, diskId: number, name: string, position: number, ops: (id: { ns: number; name: string }) => StoreOp[]): Promise<void> => {
      const info = client.pool(pool);
      const rpc = createTcpClient({ io: own.io, host: '127.0.0.1', port: own.daemons.get(diskId)!.port });
      try {
        const { header, payload } = encodePush({ epoch: client.view.epoch, poolId: info.id, pg: objectToPg(info, name), ops: ops({ ns: dataNs(info.id, position), name }) });
        await rpc.call(OsdOpcode.pgPush, header, payload, { timeoutMs: 30_000 });
      } finally {
        await rpc.close();
      }
    };
    const overwrite = (pool: string, name: string, position: number, offsetBytes: number): Promise<void> =>
      push(pool, membersIn(pool, name)[position]!, name, position, (id) => [{ type: 'write', id, offsetBytes, data: randomBytes(4096) }]);
    const shards = (pool: string, name: string): Promise<Buffer[]> => Promise.all(membersIn(pool, name).map((d, p) => shardOf(own, pool, d, p, name)));
    /** Data shards 0 and 1 hold each other's bytes (a position mix-up). */
    const swap01 = async (pool: string, name: string): Promise<void> => {
      const [s0, s1] = await shards(pool, name);
      const on = membersIn(pool, name);
      await push(pool, on[0]!, name, 0, (id) => [{ type: 'write', id, offsetBytes: 0, data: s1! }]);
      await push(pool, on[1]!, name, 1, (id) => [{ type: 'write', id, offsetBytes: 0, data: s0! }]);
    };
    const scrub = (pool: string, repair: boolean): ReturnType<typeof tessera> => tessera(['pool', 'scrub', pool, '--deep', ...(repair ? ['--repair'] : []), '--json'], own);

    // 2+3: one wrong shard is found and rebuilt.
    const objects = new Map([
      ['q-parity', randomBytes(90_000)],
      ['q-data', randomBytes(70_000)],
      ['q-big', randomBytes(3 * 1024 * 1024 + 5)],
    ]);
    for (const [name, data] of objects) await client.put(P23, name, data);
    const clean = await scrub(P23, false);
    expect(clean.code, clean.stderr + clean.stdout).toBe(0);
    await overwrite(P23, 'q-parity', 3, 4096);
    await overwrite(P23, 'q-data', 1, 4096);
    // Shard 0 is the primary's own; 1.5 MiB long: the check's second slice.
    await overwrite(P23, 'q-big', 0, 1024 * 1024 + 3 * 4096);
    const agreeingParity = await Promise.all([2, 4].map((p) => shardOf(own, P23, membersIn(P23, 'q-parity')[p]!, p, 'q-parity')));
    expect((await client.read(P23, 'q-data')).equals(objects.get('q-data')!), 'the planted bytes are read').toBe(false);
    const expected = [`q-parity@${membersIn(P23, 'q-parity')[3]}:parity`, `q-data@${membersIn(P23, 'q-data')[1]}:shard`, `q-big@${membersIn(P23, 'q-big')[0]}:shard`].sort();

    const deep = await scrub(P23, false);
    expect(deep.code, deep.stderr).toBe(1);
    const deepDoc = JSON.parse(deep.stdout) as ScrubJson;
    expect(found(deepDoc)).toEqual(expected);
    const details = new Map(deepDoc.pgs.flatMap((p) => p.inconsistencies.map((i) => [i.object, i.detail] as const)));
    expect(details.get('q-data')).toMatch(/^data shard 1 differs from what the other 4 shards \(0, 2, 3, 4\) decode to in 1 of 9 stripes \(first at shard byte 4096\)/);
    expect(details.get('q-big')).toMatch(/^data shard 0 differs .* in 1 of 385 stripes \(first at shard byte 1060864\)/);
    expect(await listedInconsistent([P23], own)).toEqual({ listed: expected, unrepaired: 3 });

    const repair = await scrub(P23, true);
    expect(repair.code, repair.stdout + repair.stderr).toBe(0);
    expect(found(JSON.parse(repair.stdout) as ScrubJson)).toEqual(expected.map((e) => `${e}:repaired`));
    expect(await listedInconsistent([P23], own)).toEqual({ listed: [], unrepaired: 0 });
    const again = await scrub(P23, false);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(found(JSON.parse(again.stdout) as ScrubJson)).toEqual([]);
    for (const [name, data] of objects) {
      expect((await client.read(P23, name)).equals(data), name).toBe(true);
      await checkShards(own, P23, name, data);
    }
    for (const [i, p] of [2, 4].entries()) {
      expect((await shardOf(own, P23, membersIn(P23, 'q-parity')[p]!, p, 'q-parity')).equals(agreeingParity[i]!), `agreeing parity shard ${p} untouched`).toBe(true);
    }

    // Each other member stopped in turn: the read decodes with the rebuilt shard.
    const rebuiltOn = new Map([['q-data', membersIn(P23, 'q-data')[1]!], ['q-big', membersIn(P23, 'q-big')[0]!]]);
    for (const stopped of own.diskIds) {
      await own.killDisk(stopped);
      for (const [name, on] of rebuiltOn) {
        if (on === stopped) continue;
        expect((await client.read(P23, name)).equals(objects.get(name)!), `${name} with disk ${stopped} stopped`).toBe(true);
      }
      await own.restartDisk(stopped);
      await client.view.refresh();
      await retryFor(60_000, async () => {
        const h = JSON.parse((await tessera(['status', '--json'], own)).stdout) as { health: string; reasons: string[] };
        if (h.health !== 'HEALTH_OK') throw new Error(`disk ${stopped} back: ${JSON.stringify(h)}`);
      }, 500);
    }

    // 2+3, two shards wrong (a data and a parity shard; two data shards swapped): no single shard explains the stripes.
    const two = randomBytes(60_000);
    const swapped = randomBytes(50_000);
    await client.put(P23, 'q-two', two);
    await client.put(P23, 'q-swap', swapped);
    await overwrite(P23, 'q-two', 1, 2 * 4096);
    await overwrite(P23, 'q-two', 3, 5 * 4096);
    await swap01(P23, 'q-swap');
    const before = new Map([['q-two', await shards(P23, 'q-two')], ['q-swap', await shards(P23, 'q-swap')]]);
    const reported = ['q-two', 'q-swap'].flatMap((n) => [2, 3, 4].map((p) => `${n}@${membersIn(P23, n)[p]}:parity`)).sort();
    const repairTwo = await scrub(P23, true);
    expect(repairTwo.code, repairTwo.stdout + repairTwo.stderr).toBe(1);
    const twoDoc = JSON.parse(repairTwo.stdout) as ScrubJson;
    expect(found(twoDoc)).toEqual(reported);
    expect(twoDoc.repaired).toBe(0);
    for (const i of twoDoc.pgs.flatMap((p) => p.inconsistencies)) expect(i.detail).toMatch(/no shard left out leaves the others consistent: more than one shard may be wrong: not repaired/);
    expect(await listedInconsistent([P23], own)).toEqual({ listed: reported, unrepaired: 6 });
    for (const [name, was] of before) {
      const after = await shards(P23, name);
      was.forEach((b, p) => expect(after[p]!.equals(b), `${name} shard ${p} as it was`).toBe(true));
    }

    // 3+2: found, named, never rebuilt.
    const small = new Map([
      ['r-parity', randomBytes(90_000)],
      ['r-data', randomBytes(70_000)],
      ['r-swap', randomBytes(60_000)],
    ]);
    for (const [name, data] of small) await client.put(P32, name, data);
    await overwrite(P32, 'r-parity', 4, 4096);
    await overwrite(P32, 'r-data', 1, 4096);
    await swap01(P32, 'r-swap');
    const before32 = new Map(await Promise.all([...small.keys()].map(async (n) => [n, await shards(P32, n)] as const)));
    const repair32 = await scrub(P32, true);
    expect(repair32.code, repair32.stdout + repair32.stderr).toBe(1);
    const doc32 = JSON.parse(repair32.stdout) as ScrubJson;
    expect(doc32.repaired).toBe(0);
    const byObject = new Map<string, Array<{ diskId: number; kinds: string[]; detail: string }>>();
    for (const i of doc32.pgs.flatMap((p) => p.inconsistencies)) byObject.set(i.object, [...(byObject.get(i.object) ?? []), i]);
    expect(byObject.get('r-parity')!.map((i) => `${i.diskId}:${i.kinds.join(',')}`)).toEqual([`${membersIn(P32, 'r-parity')[4]}:parity`]);
    expect(byObject.get('r-parity')![0]!.detail).toMatch(/parity shard 3 agrees with the data; with 2 parity shards checked, 1 wrong parity shard cannot be told from wrong data shards .*: not repaired/);
    expect(byObject.get('r-data')!.map((i) => `${i.diskId}:${i.kinds.join(',')}`)).toEqual([`${membersIn(P32, 'r-data')[1]}:shard`]);
    expect(byObject.get('r-data')![0]!.detail).toMatch(/with 2 parity shards checked this cannot be told from two other shards wrong: not repaired/);
    // The swap: before, --repair rebuilt a parity shard (or a correct data shard) from the swapped ones.
    expect(byObject.get('r-swap')?.length, 'the swap is reported').toBeGreaterThan(0);
    for (const i of byObject.get('r-swap')!) expect(i.detail).toMatch(/not repaired/);
    for (const [name, was] of before32) {
      const after = await shards(P32, name);
      was.forEach((b, p) => expect(after[p]!.equals(b), `${name} shard ${p} as it was`).toBe(true));
    }
  } finally {
    await own.stop();
  }
}, 300_000);

it('background deep scrub finds a corrupt replica copy: status turns HEALTH_ERR until a repair', async () => {
  const own = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 4 }],
    daemonArgs: ['--scrub-interval-ms', '0', '--deep-scrub-interval-ms', '1500'],
  });
  try {
    const data = randomBytes(50_000);
    await own.client.put(POOL, 'bg-1', data);
    const info = own.client.pool(POOL);
    const replica = own.client.view.pg(info, objectToPg(info, 'bg-1')).members[1]!;
    expect((await corruptObjectOnDisk(own.diskDir(replica), data, seededRng(4))).length).toBeGreaterThan(0);
    const health = async (): Promise<{ health: string; reasons: string[] }> => JSON.parse((await tessera(['status', '--json'], own)).stdout) as { health: string; reasons: string[] };
    const waitFor = async (want: (h: { health: string; reasons: string[] }) => boolean, what: string): Promise<void> => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const h = await health();
        if (want(h)) return;
        if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(h)}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    };
    await waitFor((h) => h.health === 'HEALTH_ERR' && h.reasons.some((r) => r.includes('1 pgs inconsistent')), 'background scrub');
    // What the background scrub found is listed without another scrub.
    expect(await listedInconsistent([], own)).toEqual({ listed: [`bg-1@${replica}:corrupt`], unrepaired: 1 });
    const repair = await tessera(['pool', 'scrub', POOL, '--deep', '--repair'], own);
    expect(repair.code, repair.stdout + repair.stderr).toBe(0);
    expect(repair.stdout).toMatch(/1 inconsistencies, 1 repaired/);
    await waitFor((h) => h.health === 'HEALTH_OK', 'after the repair');
    expect((await own.client.read(POOL, 'bg-1')).equals(data)).toBe(true);
  } finally {
    await own.stop();
  }
}, 90_000);
