/**
 * The erasure-coded object format without a cluster: seeded random client
 * transactions (writes at offsets, appends, truncates, zeros, writeFull,
 * remove, create, xattrs, conditionals) applied two ways on real stores:
 * to a plain reference object, and as EC writes (plan, read-modify-write,
 * encode, stage and commit transactions) on six stores, one per shard of a
 * 4+2 layout. After every transaction any k shards must decode to the
 * reference bytes, and size, xattrs and existence must agree; a failing
 * transaction must fail the same way on both and change nothing. A small
 * stripe unit (64 B) makes stripe boundaries frequent. Also: the pure rule
 * that settles pending versions at peering, and the primary's object locks
 * and write byte budget. The seed is printed; TESSERA_SEED=<seed> replays it.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { ObjectStore, type StoreOp } from '../src/store/index.js';
import { createErasureCodec } from '../native/index.js';
import { EcLayout } from '../src/daemon/ec-layout.js';
import { planTransaction, type EcObjectMeta } from '../src/daemon/ec-plan.js';
import { encodePlan, recordFor } from '../src/daemon/ec-encode.js';
import { commitOps, decodeSize, encodeRecord, readHead, stageOps } from '../src/daemon/ec-record.js';
import { copyRange, readRange, readRangeBytes, readRangePieces, readStripes, type ShardReader } from '../src/daemon/ec-shards.js';
import { dataNs, PgLog, VERSION_XATTR } from '../src/daemon/pg-log.js';
import { newestMember, planResolve } from '../src/daemon/ec-resolve.js';
import type { LogEntry } from '../src/protocol/osd-messages.js';
import { makeTempDir } from './helpers/tmp.js';
import { seededRng, testSeed } from './helpers/random.js';

const POOL = 3;
const PG = 5;
const seed = testSeed();
const rng = seededRng(seed);
const io = systemIo();
const layout = new EcLayout(4, 2, 64);
const codec = createErasureCodec({ dataShards: 4, parityShards: 2 });
let dir: Awaited<ReturnType<typeof makeTempDir>>;
let reference: ObjectStore;
const shards: ObjectStore[] = [];
const logs: PgLog[] = [];

beforeAll(async () => {
  console.log(`cluster-ec-format seed: ${seed} (TESSERA_SEED=${seed} to replay)`);
  dir = await makeTempDir('ec-format');
  const open = (i: number) => ObjectStore.open({ io, path: `${dir.path}/s${i}`, create: { clusterId: 'ec', diskId: i }, maintenance: { enabled: false } });
  reference = await open(99);
  for (let p = 0; p < layout.width; p++) {
    shards.push(await open(p));
    logs.push(await PgLog.load(shards[p]!, POOL, PG));
  }
});
afterAll(async () => {
  await reference?.close();
  for (const s of shards) await s.close();
  await dir?.remove();
});

const NAMES = ['a', 'b', 'c'];
const XATTRS = ['x1', 'x2', 'x3'];

type ObjectOp = StoreOp extends infer T ? (T extends unknown ? Omit<T, 'id'> : never) : never;

function randomOp(): ObjectOp {
  const size = (): number => (rng.float() < 0.2 ? rng.int(4000) : rng.int(400));
  switch (rng.int(12)) {
    case 0:
      return { type: 'writeFull', data: rng.bytes(size()) };
    case 1:
    case 2:
    case 3:
      return { type: 'write', offsetBytes: size(), data: rng.bytes(1 + rng.int(rng.float() < 0.2 ? 1500 : 150)) };
    case 4:
      return { type: 'append', data: rng.bytes(rng.int(300)) };
    case 5:
      return { type: 'truncate', sizeBytes: size() };
    case 6:
      return { type: 'zero', offsetBytes: size(), lengthBytes: rng.int(700) };
    case 7:
      return { type: 'remove', ifExists: rng.float() < 0.7 };
    case 8:
      return { type: 'setXattr', name: rng.pick(XATTRS), value: rng.bytes(rng.int(20)) };
    case 9:
      return { type: 'removeXattr', name: rng.pick(XATTRS) };
    case 10:
      return { type: 'create', exclusive: rng.float() < 0.3 };
    default:
      return { type: 'assertExists' };
  }
}

function reader(stores: Array<ObjectStore | null>): ShardReader {
  return { poolId: POOL, layout, codec, stores };
}

async function metaOf(name: string): Promise<EcObjectMeta> {
  try {
    const x = await shards[0]!.getXattrs({ ns: dataNs(POOL, 0), name });
    return { exists: true, sizeBytes: decodeSize(x.get('_s')), xattrs: new Map([...x].filter(([n]) => !n.startsWith('_'))) };
  } catch {
    return { exists: false, sizeBytes: 0, xattrs: new Map() };
  }
}

async function ecWrite(name: string, ops: StoreOp[], version: number): Promise<void> {
  const meta = await metaOf(name);
  const all = reader(shards);
  const plan = await planTransaction(meta, ops, layout, async (stripes) => {
    const out = new Map<number, Buffer>();
    for (const s of stripes) out.set(s, await readStripes(all, name, s, 1));
    return out;
  });
  const encoded = encodePlan(plan, layout, codec);
  const entry: LogEntry = { epoch: 1, version, object: name, kind: plan.exists ? 'modify' : 'delete', request: null };
  for (let p = 0; p < layout.width; p++) {
    const record = recordFor(plan, encoded, entry, p);
    await shards[p]!.transact(stageOps(POOL, PG, record, encodeRecord(record), Buffer.concat(encoded.shards[p]!)));
  }
  for (let p = 0; p < layout.width; p++) {
    const record = recordFor(plan, encoded, entry, p);
    await shards[p]!.transact(commitOps(POOL, PG, record, logs[p]!.head, logs[p]!));
    logs[p]!.remember(entry);
  }
}

async function check(name: string): Promise<void> {
  const ref = await reference.stat({ ns: 1, name }).then(
    () => true,
    () => false,
  );
  const meta = await metaOf(name);
  expect(meta.exists, `${name} exists`).toBe(ref);
  if (!ref) return;
  const data = await reference.read({ ns: 1, name });
  const x = await reference.getXattrs({ ns: 1, name });
  expect(meta.sizeBytes, `${name} size`).toBe(data.length);
  expect([...meta.xattrs].sort().map(([n, v]) => `${n}=${v.toString('hex')}`)).toEqual([...x].sort().map(([n, v]) => `${n}=${v.toString('hex')}`));
  // Any k shards decode to the reference: drop two random positions.
  const lost = new Set([rng.int(6), rng.int(6)]);
  const degraded = reader(shards.map((s, p) => (lost.has(p) ? null : s)));
  expect((await readRange(degraded, name, 0, data.length)).equals(data), `${name} decodes without ${[...lost]}`).toBe(true);
  if (data.length > 0) {
    const off = rng.int(data.length);
    const len = rng.int(data.length - off) + 1;
    expect((await readRange(reader(shards), name, off, len)).equals(data.subarray(off, off + len)), `${name} range`).toBe(true);
  }
  for (let p = 0; p < layout.width; p++) {
    const st = await shards[p]!.stat({ ns: dataNs(POOL, p), name });
    expect(st.sizeBytes, `shard ${p} length`).toBe(layout.shardBytes(data.length));
  }
}

it('EC transactions equal the same transactions on a plain object', async () => {
  let version = 0;
  let failed = 0;
  for (let round = 0; round < 300; round++) {
    const name = rng.pick(NAMES);
    const ops = Array.from({ length: 1 + rng.int(3) }, randomOp);
    let refError: string | null = null;
    await reference.transact(ops.map((op) => ({ ...op, id: { ns: 1, name } }) as StoreOp)).catch((e: { code: string }) => (refError = e.code));
    let ecError: string | null = null;
    try {
      await ecWrite(name, ops.map((op) => ({ ...op, id: { ns: 0, name } }) as StoreOp), version + 1);
      version++;
    } catch (e) {
      ecError = (e as { code: string }).code;
    }
    expect(ecError, `round ${round}: ${JSON.stringify(ops.map((o) => o.type))}`).toBe(refError);
    if (refError) failed++;
    await check(name);
  }
  expect(failed).toBeGreaterThan(0);
  for (let p = 0; p < layout.width; p++) expect((await readHead(shards[p]!, POOL, PG)).version).toBe(version);
});

it('a shard read given the version leaves out a shard at another version (rebuilt from k others) and reports it; too few at it: Unavailable', async () => {
  const name = 'versioned';
  const data = rng.bytes(1000);
  await ecWrite(name, [{ type: 'writeFull', id: { ns: 0, name }, data }], (await readHead(shards[0]!, POOL, PG)).version + 1);
  const version = await shards[0]!.getXattr({ ns: dataNs(POOL, 0), name }, VERSION_XATTR);
  const other = Buffer.from(version);
  other[other.length - 1]! ^= 1;
  const setVersion = (p: number, v: Buffer) => shards[p]!.transact([{ type: 'setXattr', id: { ns: dataNs(POOL, p), name }, name: VERSION_XATTR, value: v }]);
  const seen: number[] = [];
  const checked: ShardReader = { ...reader(shards), version, onOtherVersion: (p) => seen.push(p) };
  expect((await readRange(checked, name, 0, data.length)).equals(data)).toBe(true);
  expect(seen).toEqual([]);
  await setVersion(1, other);
  expect((await readRange(checked, name, 0, data.length)).equals(data)).toBe(true);
  expect((await readRange(checked, name, 100, 300)).equals(data.subarray(100, 400))).toBe(true);
  expect(seen.length).toBeGreaterThan(0);
  expect(new Set(seen)).toEqual(new Set([1]));
  await setVersion(4, other);
  await setVersion(5, other);
  await expect(readRange(checked, name, 0, data.length)).rejects.toMatchObject({ code: 'Unavailable' });
  for (const p of [1, 4, 5]) await setVersion(p, version);
  expect((await readRange(checked, name, 0, data.length)).equals(data)).toBe(true);
});

it('a range is read from exactly the shard spans that hold it and copied out unit by unit (copyRange), also in parts and degraded', async () => {
  const name = 'ranges';
  const data = rng.bytes(layout.stripeBytes * 5 + 100);
  await ecWrite(name, [{ type: 'writeFull', id: { ns: 0, name }, data }], (await readHead(shards[0]!, POOL, PG)).version + 1);
  const reads: Array<{ position: number; offsetBytes: number; lengthBytes: number }> = [];
  const counted = shards.map((s, position) => ({ ...s, read: (id: { ns: number; name: string }, o: { offsetBytes?: number; lengthBytes?: number }) => (reads.push({ position, offsetBytes: o.offsetBytes!, lengthBytes: o.lengthBytes! }), s.read(id, o)) }) as unknown as ObjectStore);
  for (let round = 0; round < 200; round++) {
    const off = rng.int(data.length);
    const len = rng.int(data.length - off) + 1;
    reads.length = 0;
    const range = await readRangeBytes(reader(counted), name, off, len);
    // One read per data shard the range touches, of exactly the bytes its pieces cover there.
    const spans = new Map<number, { from: number; to: number }>();
    for (const p of layout.pieces(off, len)) {
      const sp = spans.get(p.shard);
      if (!sp) spans.set(p.shard, { from: p.shardOffsetBytes, to: p.shardOffsetBytes + p.lengthBytes });
      else sp.to = p.shardOffsetBytes + p.lengthBytes;
    }
    expect(reads.map((r) => `${r.position}:${r.offsetBytes}+${r.lengthBytes}`).sort()).toEqual([...spans].map(([d, sp]) => `${d}:${sp.from}+${sp.to - sp.from}`).sort());
    const out = Buffer.alloc(len + 3);
    copyRange(layout, range, off, len, out, 3);
    expect(out.subarray(3).equals(data.subarray(off, off + len)), `range ${off}+${len}`).toBe(true);
    const from = off + rng.int(len);
    const n = rng.int(off + len - from + 1);
    const part = Buffer.alloc(n);
    copyRange(layout, range, from, n, part, 0);
    expect(part.equals(data.subarray(from, from + n)), `part ${from}+${n} of ${off}+${len}`).toBe(true);
    expect(Buffer.concat(await readRangePieces(reader(shards), name, off, len)).equals(data.subarray(off, off + len))).toBe(true);
  }
  const degraded = await readRangeBytes(reader(shards.map((s, p) => (p === 1 ? null : s))), name, 10, data.length - 20);
  expect(degraded.stripes).not.toBeNull();
  const out = Buffer.alloc(data.length - 20);
  copyRange(layout, degraded, 10, out.length, out, 0);
  expect(out.equals(data.subarray(10, data.length - 10))).toBe(true);
});

it('refuses omap ops and reserved xattr names', async () => {
  await expect(planTransaction({ exists: false, sizeBytes: 0, xattrs: new Map() }, [{ type: 'omapSet', id: { ns: 0, name: 'a' }, entries: [] }], layout, async () => new Map())).rejects.toMatchObject({
    code: 'NotSupported',
  });
  await expect(planTransaction({ exists: false, sizeBytes: 0, xattrs: new Map() }, [{ type: 'setXattr', id: { ns: 0, name: 'a' }, name: '_v', value: Buffer.alloc(1) }], layout, async () => new Map())).rejects.toMatchObject({
    code: 'InvalidArgument',
  });
});

it('settles pending versions: forward when every member staged them, back from the first one missing', () => {
  const e = (version: number, object = 'o'): LogEntry => ({ epoch: 2, version, object, kind: 'modify', request: { client: 'ab', seq: version } });
  const head = { epoch: 2, version: 3 };
  const entries = [e(1), e(2), e(3)];
  const member = (position: number, staged: number[], h = head, lastEpochStarted = 2) => ({
    position,
    lastEpochStarted,
    shard: position,
    head: h,
    tail: { epoch: 0, version: 0 },
    entries: entries.filter((x) => x.version <= h.version),
    stagings: staged.map((v) => ({ shard: position, entry: e(v) })),
  });
  // 4 and 5 staged everywhere, 6 missing on member 2: forward 4, 5; back 6.
  const plan = planResolve([member(0, [4, 5, 6]), member(1, [4, 5, 6]), member(2, [4, 5]), member(3, [4, 5, 6])]);
  expect(plan.forward.map((x) => x.version)).toEqual([4, 5]);
  expect(plan.commit.map((c) => c.map((x) => x.version))).toEqual([[4, 5], [4, 5], [4, 5], [4, 5]]);
  // A member behind commits what it staged of the authoritative log, in order.
  const behind = planResolve([member(0, []), member(1, [3], { epoch: 2, version: 2 })]);
  expect(behind.commit.map((c) => c.map((x) => x.version))).toEqual([[], [3]]);
  // A staging of another write under the same version (rolled back, reused) is not committed.
  const other = planResolve([member(0, []), { ...member(1, [], { epoch: 2, version: 2 }), stagings: [{ shard: 1, entry: e(3, 'other') }] }]);
  expect(other.commit[1]).toEqual([]);
  // A longer log from an older interval (a primary that committed alone, then crashed; rolled back since) is not authoritative.
  const divergent = planResolve([member(0, [], { epoch: 2, version: 4 }, 1), member(1, []), member(2, [])]);
  expect(newestMember([member(0, [], { epoch: 2, version: 4 }, 1), member(1, [])])).toBe(1);
  expect(divergent.commit).toEqual([[], [], []]);
  // A member whose data belongs to another position commits nothing, so nothing past the head rolls forward.
  const moved = planResolve([member(0, [4]), { ...member(1, [4]), shard: 3 }]);
  expect(moved.forward).toEqual([]);
  expect(moved.commit).toEqual([[], []]);
});

it('object locks: shared readers together, writers alone and in arrival order, bounded waits', async () => {
  const { ObjectLocks, ByteBudget } = await import('../src/daemon/ec-locks.js');
  const locks = new ObjectLocks(io.clock);
  const order: string[] = [];
  const r1 = await locks.acquire('o', 'shared', 1000);
  const r2 = await locks.acquire('o', 'shared', 1000);
  const w = locks.acquire('o', 'exclusive', 1000).then((release) => {
    order.push('w');
    return release;
  });
  const r3 = locks.acquire('o', 'shared', 1000).then((release) => {
    order.push('r3');
    return release;
  });
  await expect(locks.acquire('o', 'exclusive', 20)).rejects.toMatchObject({ code: 'Busy' });
  r1();
  r2();
  (await w)();
  (await r3)();
  expect(order).toEqual(['w', 'r3']);
  expect(locks.size).toBe(0);
  const budget = new ByteBudget(io.clock, 100);
  const a = await budget.reserve(80, 1000);
  await expect(budget.reserve(30, 20)).rejects.toMatchObject({ code: 'Busy' });
  const b = budget.reserve(1000, 1000);
  a();
  (await b)();
});

it('keeps a commit record longer than an xattr value in the staging object\'s omap', async () => {
  const { readRecord, stagingId } = await import('../src/daemon/ec-record.js');
  const entry: LogEntry = { epoch: 7, version: 1, object: 'big', kind: 'modify', request: { client: 'cd'.repeat(16), seq: 9 } };
  const setXattrs: Array<[string, Buffer]> = [0, 1, 2].map((i) => [`x${i}`, rng.bytes(60 * 1024)]);
  const record = { entry, shard: 0, exists: true, recreate: true, cutShardBytes: null, shardBytes: 128, runs: [{ offsetBytes: 0, lengthBytes: 128 }], sizeBytes: 300, setXattrs, removeXattrs: [] };
  const encoded = encodeRecord(record);
  expect(encoded.length).toBeGreaterThan(64 * 1024);
  await shards[0]!.transact(stageOps(POOL, PG + 1, record, encoded, rng.bytes(128)));
  const back = await readRecord(shards[0]!, stagingId(POOL, PG + 1, 0, entry));
  expect(encodeRecord(back).equals(encoded)).toBe(true);
});
