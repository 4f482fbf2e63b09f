/**
 * `tessera pg repair-shard` on a real cluster (3 daemon processes, one per
 * host, an erasure-coded 2+1 pool and a replicated pool), through the real
 * `tessera` binary.
 *
 * A data shard written with other bytes whose checksums pass (a fenced push,
 * as a buggy write path would): a deep scrub reports its parity shard
 * (`parity`; with one parity shard it cannot tell which is wrong) and
 * `--repair` leaves it. The operator names the data shard by position: it is
 * rebuilt from the other two, a deep scrub is clean, every shard checks out
 * and the object reads back byte-exact. The same by disk id for a parity
 * shard of an object of two rebuild slices (its temporary object moved into
 * place).
 *
 * Refusals (exit 1, one line on stderr, nothing changed): a replicated pool,
 * a position out of range, a disk that holds no shard, both or neither of
 * --position and --disk, an object no member holds, and fewer than k other
 * shards readable (data shard 0's bytes flipped on disk, so it fails its
 * checksum, when shard 1 is asked for: the request is refused and shard 1 is
 * as it was; shard 0 is then rebuilt from shards 1 and 2 on request).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { objectToPg } from '../cluster/placement.js';
import { encodePush, OsdOpcode } from '../src/protocol/osd-messages.js';
import { createTcpClient } from '../src/rpc/index.js';
import type { StoreOp } from '../src/store/types.js';
import { dataNs } from '../src/daemon/pg-log.js';
import { runTessera } from './helpers/daemon-process.js';
import { checkShards } from './cluster-ec-helpers.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { corruptObjectOnDisk } from './helpers/corrupt.js';
import { seededRng } from './helpers/random.js';

let cluster: TestCluster;
const EC_POOL = 'ec';
const REP_POOL = 'rep';

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 1,
    pools: [
      { name: EC_POOL, redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 }, failureDomain: 'host', pgCount: 4 },
      { name: REP_POOL, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 4 },
    ],
    daemonArgs: ['--scrub-interval-ms', '0', '--deep-scrub-interval-ms', '0'],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const tessera = (args: string[]): ReturnType<typeof runTessera> => runTessera(args, cluster.mapd.port);
const positionsOf = (name: string): number[] => {
  const info = cluster.client.pool(EC_POOL);
  return cluster.client.view.pg(info, objectToPg(info, name)).members;
};

/** A fenced store transaction on one member's shard (what recovery sends), to damage it on purpose. */
async function pushTo(diskId: number, name: string, position: number, ops: (id: { ns: number; name: string }) => StoreOp[]): Promise<void> {
  const info = cluster.client.pool(EC_POOL);
  const rpc = createTcpClient({ io: cluster.io, host: '127.0.0.1', port: cluster.daemons.get(diskId)!.port });
  try {
    const { header, payload } = encodePush({ epoch: cluster.client.view.epoch, poolId: info.id, pg: objectToPg(info, name), ops: ops({ ns: dataNs(info.id, position), name }) });
    await rpc.call(OsdOpcode.pgPush, header, payload, { timeoutMs: 30_000 });
  } finally {
    await rpc.close();
  }
}

async function shardOf(name: string, position: number): Promise<Buffer> {
  const store = cluster.storeOf(positionsOf(name)[position]!);
  try {
    return await store.read({ ns: dataNs(cluster.client.pool(EC_POOL).id, position), name });
  } finally {
    await store.close();
  }
}

/** A deep scrub of the object's pg: its findings as "object@disk:kinds", and the exit code. */
async function deepScrub(name: string, repair = false): Promise<{ code: number; found: string[] }> {
  const info = cluster.client.pool(EC_POOL);
  const r = await tessera(['pg', 'scrub', `${EC_POOL}.${objectToPg(info, name)}`, '--deep', '--json', ...(repair ? ['--repair'] : [])]);
  const doc = JSON.parse(r.stdout) as { pgs: Array<{ inconsistencies: Array<{ object: string; diskId: number; kinds: string[] }> }> };
  return { code: r.code, found: doc.pgs.flatMap((p) => p.inconsistencies.map((i) => `${i.object}@${i.diskId}:${i.kinds.join(',')}`)).sort() };
}

it('a data shard with wrong bytes (checksums pass) is rebuilt by position; a parity shard by disk id', async () => {
  const { client } = cluster;
  const data = randomBytes(300_000);
  await client.put(EC_POOL, 'w-data', data);
  const [, dataOn, parityOn] = positionsOf('w-data') as [number, number, number];
  const good = await shardOf('w-data', 1);
  await pushTo(dataOn, 'w-data', 1, (id) => [{ type: 'write', id, offsetBytes: 5 * 4096, data: randomBytes(4096) }]);
  expect((await shardOf('w-data', 1)).equals(good)).toBe(false);
  // 2+1: the scrub sees the parity differ and cannot tell which shard is wrong; --repair leaves it.
  expect(await deepScrub('w-data', true)).toEqual({ code: 1, found: [`w-data@${parityOn}:parity`] });

  const r = await tessera(['pg', 'repair-shard', EC_POOL, 'w-data', '--position', '1']);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(new RegExp(`^rebuilt shard 1 of w-data \\(pg \\d+\\.\\d+\\) on disk ${dataOn} from positions 0, 2: ${good.length} bytes, version \\d+'\\d+\\n$`));
  expect((await shardOf('w-data', 1)).equals(good), 'the data shard holds its original bytes').toBe(true);
  expect(await deepScrub('w-data')).toEqual({ code: 0, found: [] });
  expect((await client.read(EC_POOL, 'w-data')).equals(data)).toBe(true);
  await checkShards(cluster, EC_POOL, 'w-data', data);

  // Two rebuild slices (a 1.5 MiB shard): written to a temporary object, moved into place.
  const big = randomBytes(3 * 1024 * 1024 + 5);
  await client.put(EC_POOL, 'w-parity', big);
  const bigParityOn = positionsOf('w-parity')[2]!;
  const goodParity = await shardOf('w-parity', 2);
  await pushTo(bigParityOn, 'w-parity', 2, (id) => [{ type: 'write', id, offsetBytes: 1024 * 1024 + 3 * 4096, data: randomBytes(4096) }]);
  expect(await deepScrub('w-parity', true)).toEqual({ code: 1, found: [`w-parity@${bigParityOn}:parity`] });
  const byDisk = await tessera(['pg', 'repair-shard', EC_POOL, 'w-parity', '--disk', String(bigParityOn), '--json']);
  expect(byDisk.code, byDisk.stderr).toBe(0);
  expect(JSON.parse(byDisk.stdout)).toMatchObject({ name: 'w-parity', position: 2, diskId: bigParityOn, sources: [0, 1], shardBytes: goodParity.length });
  expect((await shardOf('w-parity', 2)).equals(goodParity)).toBe(true);
  expect(await deepScrub('w-parity')).toEqual({ code: 0, found: [] });
  expect((await client.read(EC_POOL, 'w-parity')).equals(big)).toBe(true);
  await checkShards(cluster, EC_POOL, 'w-parity', big);
}, 180_000);

it('refuses clearly, changing nothing: not erasure-coded, out of range, not a member, no object, fewer than k readable', async () => {
  const { client } = cluster;
  await client.put(REP_POOL, 'rep-1', randomBytes(10_000));
  const data = randomBytes(200_000);
  await client.put(EC_POOL, 'x-1', data);
  const refused = async (args: string[], message: RegExp): Promise<void> => {
    const r = await tessera(['pg', 'repair-shard', ...args]);
    expect(r.code, r.stdout).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
  };
  await refused([REP_POOL, 'rep-1', '--position', '0'], /pool rep is not erasure-coded/);
  await refused([EC_POOL, 'x-1', '--position', '3'], /2\+1: shard positions are 0\.\.2, not 3/);
  await refused([EC_POOL, 'x-1', '--disk', '7'], /disk 7 holds no shard of x-1/);
  await refused([EC_POOL, 'x-1'], /--position and --disk/);
  await refused([EC_POOL, 'x-1', '--position', '1', '--disk', '1'], /--position and --disk/);
  await refused([EC_POOL, 'no-such-object', '--position', '0'], /NotFound: .*no other member holds a shard of no-such-object/);

  // Shard 0 fails its checksum: shard 1 has one readable other shard (2), k = 2.
  const before = await shardOf('x-1', 1);
  const shard0 = await shardOf('x-1', 0);
  expect((await corruptObjectOnDisk(cluster.diskDir(positionsOf('x-1')[0]!), shard0, seededRng(11))).length).toBeGreaterThan(0);
  await refused([EC_POOL, 'x-1', '--position', '1'], /Unavailable: .*shard 1 of x-1 not rebuilt \(nothing was changed\): fewer than 2 of the other shards \(positions 0, 2\) read/);
  expect((await shardOf('x-1', 1)).equals(before), 'shard 1 as it was').toBe(true);
  // The corrupt shard itself is rebuilt from the other two.
  const r = await tessera(['pg', 'repair-shard', EC_POOL, 'x-1', '--position', '0']);
  expect(r.code, r.stderr).toBe(0);
  expect((await shardOf('x-1', 0)).equals(shard0)).toBe(true);
  expect(await deepScrub('x-1')).toEqual({ code: 0, found: [] });
  expect((await client.read(EC_POOL, 'x-1')).equals(data)).toBe(true);
  await checkShards(cluster, EC_POOL, 'x-1', data);
}, 180_000);
