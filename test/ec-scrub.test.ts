/**
 * The erasure-coded deep scrub's parity check (src/daemon/ec-scrub.ts) on a
 * real store, shard by shard, for several geometries: stripes coded with the
 * pool's codec and written as the format lays them out (every position's
 * namespace in one store), then bytes of some shards overwritten with other
 * bytes (their checksums pass, as a bug in the write path would leave them).
 *
 * It proves that leaving each shard out in turn names exactly the wrong one
 * when one shard is wrong (data or parity, in the first or a later slice of
 * the check, with the right count of stripes), and names none when two shards
 * are wrong (in the same stripes, or each in other slices), and that with one
 * parity shard it is not tried. The cluster side (the repair, the listing) is
 * test/cluster-scrub.test.ts.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { ObjectStore } from '../src/store/index.js';
import { createErasureCodec } from '../native/index.js';
import { EcLayout } from '../src/daemon/ec-layout.js';
import { checkParity, type ParityCheck } from '../src/daemon/ec-scrub.js';
import { dataNs, encodeVersionValue, VERSION_XATTR } from '../src/daemon/pg-log.js';
import { limits } from '../src/lib/limits.js';
import { makeTempDir } from './helpers/tmp.js';
import { fastBytes, seededRng, testSeed } from './helpers/random.js';

const POOL = 7;
const UNIT = limits.ecStripeUnitBytes;
const SLICE = limits.ecRecoverySliceBytes;
const VERSION = encodeVersionValue({ epoch: 3, version: 9 });
const seed = testSeed();
const rng = seededRng(seed);
const io = systemIo();
let dir: Awaited<ReturnType<typeof makeTempDir>>;
let store: ObjectStore;

beforeAll(async () => {
  console.log(`ec-scrub seed: ${seed} (TESSERA_SEED=${seed} to replay)`);
  dir = await makeTempDir('ec-scrub');
  store = await ObjectStore.open({ io, path: `${dir.path}/s`, create: { clusterId: 'ec', diskId: 0 }, maintenance: { enabled: false } });
});
afterAll(async () => {
  await store?.close();
  await dir?.remove();
});

/** Writes an object's k + m shards (shardBytes each, random data), then `damage` (position -> shard offsets of a unit each) overwritten. */
async function plant(name: string, k: number, m: number, shardBytes: number, damage: Map<number, number[]>): Promise<void> {
  const codec = createErasureCodec({ dataShards: k, parityShards: m });
  const shards = Array.from({ length: k + m }, (_, p) => (p < k ? fastBytes(1 + rng.int(2 ** 30), shardBytes) : Buffer.alloc(shardBytes)));
  codec.encode(shards.slice(0, k), shards.slice(k));
  for (const [p, offsets] of damage) {
    for (const at of offsets) {
      const other = rng.bytes(UNIT);
      other[0] = shards[p]![at]! ^ 1; // surely other bytes
      other.copy(shards[p]!, at);
    }
  }
  for (let p = 0; p < k + m; p++) {
    const id = { ns: dataNs(POOL, p), name };
    await store.transact([
      { type: 'remove', id, ifExists: true },
      { type: 'create', id },
      { type: 'write', id, offsetBytes: 0, data: shards[p]! },
      { type: 'setXattr', id, name: VERSION_XATTR, value: VERSION },
    ]);
  }
}

function check(name: string, k: number, m: number, shardBytes: number): Promise<ParityCheck> {
  return checkParity({
    poolId: POOL,
    layout: new EcLayout(k, m),
    codec: createErasureCodec({ dataShards: k, parityShards: m }),
    name,
    stores: Array.from({ length: k + m }, () => store),
    version: VERSION,
    shardBytes,
    bytesPerSec: 0,
    clock: io.clock,
  });
}

/** The positions left out that leave the others consistent, as "position:stripes@first". */
function withoutOne(c: ParityCheck): string[] | null | 'ok' {
  if (c.kind === 'ok') return 'ok';
  expect(c.kind).toBe('wrong');
  if (c.kind !== 'wrong') return null;
  return c.withoutOne?.map((w) => `${w.position}:${w.stripes}@${w.firstOffsetBytes}`) ?? null;
}

it('4+2 over two slices: each shard wrong in turn is the only one that leaves the others consistent', async () => {
  const shardBytes = SLICE + 64 * UNIT;
  await plant('clean', 4, 2, shardBytes, new Map());
  expect(withoutOne(await check('clean', 4, 2, shardBytes))).toBe('ok');
  for (let p = 0; p < 6; p++) {
    const name = `one-${p}`;
    // Two stripes in the second slice, one in the first for the data positions.
    const offsets = p < 4 ? [5 * UNIT, SLICE + 2 * UNIT, SLICE + 63 * UNIT] : [SLICE + 7 * UNIT];
    await plant(name, 4, 2, shardBytes, new Map([[p, offsets]]));
    expect(withoutOne(await check(name, 4, 2, shardBytes)), name).toEqual([`${p}:${offsets.length}@${offsets[0]}`]);
  }
}, 60_000);

it('2+2 and 8+3: one wrong data shard is named; two wrong shards are not (none leaves the others consistent)', async () => {
  const shardBytes = 16 * UNIT;
  await plant('d22', 2, 2, shardBytes, new Map([[1, [UNIT]]]));
  expect(withoutOne(await check('d22', 2, 2, shardBytes))).toEqual([`1:1@${UNIT}`]);
  await plant('d83', 8, 3, shardBytes, new Map([[6, [0, 9 * UNIT]]]));
  expect(withoutOne(await check('d83', 8, 3, shardBytes))).toEqual(['6:2@0']);
  for (const [k, m] of [[2, 2], [4, 2], [8, 3]] as const) {
    // The same stripe of two shards, and two shards wrong in different stripes.
    await plant(`two-${k}${m}`, k, m, shardBytes, new Map([[0, [3 * UNIT]], [1, [3 * UNIT]]]));
    expect(withoutOne(await check(`two-${k}${m}`, k, m, shardBytes)), `${k}+${m} same stripe`).toEqual([]);
    await plant(`apart-${k}${m}`, k, m, shardBytes, new Map([[1, [2 * UNIT]], [k, [12 * UNIT]]]));
    expect(withoutOne(await check(`apart-${k}${m}`, k, m, shardBytes)), `${k}+${m} other stripes`).toEqual([]);
  }
}, 60_000);

it('4+2: two shards wrong each in another slice leave no single shard to blame', async () => {
  const shardBytes = SLICE + 8 * UNIT;
  await plant('slices', 4, 2, shardBytes, new Map([[0, [UNIT]], [2, [SLICE + UNIT]]]));
  expect(withoutOne(await check('slices', 4, 2, shardBytes))).toEqual([]);
}, 60_000);

it('2+1: leaving a shard out is not tried (any two shards decode)', async () => {
  const shardBytes = 8 * UNIT;
  await plant('d21', 2, 1, shardBytes, new Map([[1, [UNIT]]]));
  const c = await check('d21', 2, 1, shardBytes);
  expect(c).toMatchObject({ kind: 'wrong', checked: [2], withoutOne: null });
});
