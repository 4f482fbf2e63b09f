/**
 * ObjectStore.check: a transaction's conditions decided without applying it
 * (what a replicated pool's primary decides a conditional write with). For
 * every transaction of a seeded random sequence over a few objects, check's
 * outcome (passes, or the error code) is the outcome transact then has on
 * the same state, and check changes nothing; the sequence is applied as it
 * goes (so conditions meet state in acknowledged groups not yet in RocksDB
 * as well as committed state), and conditions that depend on the
 * transaction's own earlier ops are included.
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { ObjectStore, type ObjectId, type StoreOp } from '../src/store/index.js';
import { isTesseraError } from '../src/lib/errors.js';
import { makeTempDir } from './helpers/tmp.js';
import { seededRng, testSeed, type Rng } from './helpers/random.js';

const io = systemIo();
const seed = testSeed();
const NAMES = ['a', 'b', 'c'];
const id = (name: string): ObjectId => ({ ns: 1, name });
const b = (s: string): Buffer => Buffer.from(s);

let dir: { path: string; remove: () => Promise<void> };
let store: ObjectStore;
beforeEach(async () => {
  dir = await makeTempDir('store-check');
  store = await ObjectStore.open({ io, path: dir.path, create: { clusterId: 'c1', diskId: 1 }, maintenance: { enabled: false } });
});
afterEach(async () => {
  await store.close();
  await dir.remove();
});

function randomOp(rng: Rng, name: string): StoreOp {
  const o = id(name);
  const small = (): Buffer => b(String(rng.int(3)));
  switch (rng.int(14)) {
    case 0:
      return { type: 'create', id: o, exclusive: rng.int(2) === 0 };
    case 1:
      return { type: 'remove', id: o, ifExists: rng.int(3) === 0 };
    case 2:
      return { type: 'writeFull', id: o, data: Buffer.alloc(rng.int(2) === 0 ? 10 : 5000, rng.int(256)) };
    case 3:
      return { type: 'append', id: o, data: b('xyz') };
    case 4:
      return { type: 'setXattr', id: o, name: 'x', value: small() };
    case 5:
      return { type: 'removeXattr', id: o, name: 'x' };
    case 6:
    case 7:
      return { type: 'assertXattr', id: o, name: 'x', value: rng.int(4) === 0 ? null : small() };
    case 8:
      return { type: 'assertExists', id: o };
    case 9:
      return { type: 'omapSet', id: o, entries: [[b(`k${rng.int(3)}`), small()]] };
    case 10:
    case 11:
      return { type: 'omapCompare', id: o, key: b(`k${rng.int(3)}`), value: rng.int(4) === 0 ? null : small() };
    case 12:
      return { type: 'omapRemoveKeys', id: o, keys: [b(`k${rng.int(3)}`)] };
    default:
      return rng.int(2) === 0 ? { type: 'omapClear', id: o } : { type: 'omapRemoveRange', id: o, startKey: b('k0'), endKey: b('k2') };
  }
}

const outcome = (p: Promise<void>): Promise<string> =>
  p.then(
    () => 'ok',
    (err: unknown) => (isTesseraError(err) ? err.code : Promise.reject(err)),
  );

async function image(name: string): Promise<string> {
  try {
    const [data, x, omap] = await Promise.all([store.read(id(name)), store.getXattrs(id(name)), store.omapList(id(name), { limit: 100 })]);
    return JSON.stringify({ data: data.toString('hex'), x: [...x].map(([k, v]) => `${k}=${v.toString()}`), omap: omap.entries.map(([k, v]) => `${k.toString()}=${v.toString()}`) });
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return 'absent';
    throw err;
  }
}

it(`decides every condition as transact then does, and changes nothing (seed ${seed})`, async () => {
  const rng = seededRng(seed);
  const seen = new Map<string, number>();
  for (let i = 0; i < 600; i++) {
    const name = NAMES[rng.int(NAMES.length)]!;
    const ops = Array.from({ length: 1 + rng.int(4) }, () => randomOp(rng, name));
    const before = await image(name);
    const checked = await outcome(store.check(ops));
    expect(await image(name), `check changed ${name}`).toBe(before);
    const applied = await outcome(store.transact(ops));
    expect(checked, `${JSON.stringify(ops.map((o) => o.type))} on ${before}`).toBe(applied);
    seen.set(applied, (seen.get(applied) ?? 0) + 1);
  }
  // The sequence met every kind of outcome.
  for (const code of ['ok', 'Conflict', 'NotFound', 'AlreadyExists']) expect(seen.get(code) ?? 0, code).toBeGreaterThan(0);
});

it('sees the transaction\'s own earlier ops', async () => {
  await store.transact([{ type: 'create', id: id('a') }]);
  await expect(store.check([{ type: 'remove', id: id('a') }, { type: 'create', id: id('a'), exclusive: true }])).resolves.toBeUndefined();
  await expect(store.check([{ type: 'setXattr', id: id('a'), name: 'x', value: b('1') }, { type: 'assertXattr', id: id('a'), name: 'x', value: b('1') }])).resolves.toBeUndefined();
  await expect(store.check([{ type: 'setXattr', id: id('a'), name: 'x', value: b('1') }, { type: 'assertXattr', id: id('a'), name: 'x', value: b('2') }])).rejects.toMatchObject({ code: 'Conflict' });
  await expect(store.check([{ type: 'omapSet', id: id('n'), entries: [[b('k'), b('v')]] }, { type: 'omapCompare', id: id('n'), key: b('k'), value: b('v') }])).resolves.toBeUndefined();
  await expect(store.check([{ type: 'writeFull', id: id('n'), data: b('x') }, { type: 'assertExists', id: id('n') }])).resolves.toBeUndefined();
  await expect(store.check([{ type: 'assertExists', id: id('n') }])).rejects.toMatchObject({ code: 'NotFound' });
  await expect(store.check([{ type: 'setXattr', id: id('a'), name: 'x', value: Buffer.alloc(70 * 1024) }])).rejects.toMatchObject({ code: 'LimitExceeded' });
});
