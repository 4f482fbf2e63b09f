/**
 * The per-disk object store, operation by operation, on a real directory with
 * RocksDB: data (inline and in segments, overwrites, holes, truncate, zero),
 * xattrs, omap, listings, transactions, limits, reopen.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { systemIo } from '../src/io/system.js';
import { ObjectStore, type ObjectId, type ObjectStoreOptions } from '../src/store/index.js';
import { isTesseraError } from '../src/lib/errors.js';
import { pgSortKeyRange } from '../src/lib/hash.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
const id = (name: string, ns = 1): ObjectId => ({ ns, name });
const b = (s: string): Buffer => Buffer.from(s);

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (isTesseraError(err)) {
      expect(err.code).toBe(code);
      return;
    }
    throw err;
  }
  throw new Error(`expected ${code}, but it succeeded`);
}

let dir: { path: string; remove: () => Promise<void> };
let store: ObjectStore;
const open = (extra: Partial<ObjectStoreOptions> = {}): Promise<ObjectStore> =>
  ObjectStore.open({ io, path: dir.path, create: { clusterId: 'c1', diskId: 7 }, maintenance: { enabled: false }, ...extra });

beforeEach(async () => {
  dir = await makeTempDir('store');
  store = await open();
});
afterEach(async () => {
  await store.close();
  await dir.remove();
});

describe('data', () => {
  it('writes and reads small (inline) and large (segment) objects', async () => {
    const small = randomBytes(100);
    const big = randomBytes(9 * 1024 * 1024 + 123);
    await store.transact([{ type: 'writeFull', id: id('small'), data: small }]);
    await store.transact([{ type: 'writeFull', id: id('big'), data: big }]);
    expect((await store.read(id('small'))).equals(small)).toBe(true);
    expect((await store.read(id('big'))).equals(big)).toBe(true);
    expect((await store.read(id('big'), { offsetBytes: 4 * 1024 * 1024 - 10, lengthBytes: 20 })).equals(big.subarray(4 * 1024 * 1024 - 10, 4 * 1024 * 1024 + 10))).toBe(true);
    expect((await store.stat(id('big'))).sizeBytes).toBe(big.length);
    const empty = id('empty');
    await store.transact([{ type: 'writeFull', id: empty, data: Buffer.alloc(0) }]);
    expect((await store.read(empty)).length).toBe(0);
  });

  it('overwrites in place at offsets, leaving holes as zeros', async () => {
    const o = id('vol');
    const model = Buffer.alloc(3 * 1024 * 1024);
    const base = randomBytes(1024 * 1024);
    await store.transact([{ type: 'write', id: o, offsetBytes: 1024 * 1024, data: base }]);
    base.copy(model, 1024 * 1024);
    for (let i = 0; i < 50; i++) {
      const off = Math.floor(Math.random() * (model.length - 8192));
      const data = randomBytes(1 + Math.floor(Math.random() * 8192));
      await store.transact([{ type: 'write', id: o, offsetBytes: off, data }]);
      data.copy(model, off);
    }
    const size = (await store.stat(o)).sizeBytes;
    expect((await store.read(o)).equals(model.subarray(0, size))).toBe(true);
  });

  it('grows an inline object into segments and keeps its bytes', async () => {
    const o = id('grow');
    const first = randomBytes(1000);
    const second = randomBytes(70_000);
    await store.transact([{ type: 'writeFull', id: o, data: first }]);
    await store.transact([{ type: 'append', id: o, data: second }]);
    expect((await store.read(o)).equals(Buffer.concat([first, second]))).toBe(true);
  });

  it('truncates, extends and zeroes', async () => {
    const o = id('t');
    const data = randomBytes(200_000);
    await store.transact([{ type: 'writeFull', id: o, data }]);
    await store.transact([{ type: 'truncate', id: o, sizeBytes: 150_000 }]);
    expect((await store.read(o)).equals(data.subarray(0, 150_000))).toBe(true);
    await store.transact([{ type: 'truncate', id: o, sizeBytes: 160_000 }]);
    const expected = Buffer.concat([data.subarray(0, 150_000), Buffer.alloc(10_000)]);
    expect((await store.read(o)).equals(expected)).toBe(true);
    await store.transact([{ type: 'zero', id: o, offsetBytes: 1000, lengthBytes: 5000 }]);
    expected.fill(0, 1000, 6000);
    expect((await store.read(o)).equals(expected)).toBe(true);
    // zero never changes the size
    await store.transact([{ type: 'zero', id: o, offsetBytes: 150_000, lengthBytes: 1_000_000 }]);
    expect((await store.stat(o)).sizeBytes).toBe(160_000);
    // inline objects too
    const s = id('s');
    await store.transact([{ type: 'writeFull', id: s, data: b('hello world') }]);
    await store.transact([{ type: 'zero', id: s, offsetBytes: 0, lengthBytes: 5 }, { type: 'truncate', id: s, sizeBytes: 8 }]);
    expect((await store.read(s)).equals(Buffer.concat([Buffer.alloc(5), b(' wo')]))).toBe(true);
  });

  it('reads past the end return what exists; missing objects are NotFound', async () => {
    await store.transact([{ type: 'writeFull', id: id('x'), data: b('abc') }]);
    expect((await store.read(id('x'), { offsetBytes: 2, lengthBytes: 100 })).toString()).toBe('c');
    expect((await store.read(id('x'), { offsetBytes: 10 })).length).toBe(0);
    await rejectsWith(store.read(id('nope')), 'NotFound');
    await rejectsWith(store.stat(id('nope')), 'NotFound');
  });

  it('removes objects with their xattrs and omap', async () => {
    const o = id('r');
    await store.transact([
      { type: 'writeFull', id: o, data: randomBytes(100_000) },
      { type: 'setXattr', id: o, name: 'a', value: b('1') },
      { type: 'omapSet', id: o, entries: [[b('k'), b('v')]] },
    ]);
    await store.transact([{ type: 'remove', id: o }]);
    await rejectsWith(store.read(o), 'NotFound');
    await rejectsWith(store.transact([{ type: 'remove', id: o }]), 'NotFound');
    await store.transact([{ type: 'remove', id: o, ifExists: true }]);
    await store.transact([{ type: 'create', id: o }]);
    expect((await store.getXattrs(o)).size).toBe(0);
    expect((await store.omapList(o, { limit: 10 })).entries).toEqual([]);
    expect(store.space().objects).toBe(1);
  });

  it('create exclusive fails on an existing object', async () => {
    await store.transact([{ type: 'create', id: id('c'), exclusive: true }]);
    await rejectsWith(store.transact([{ type: 'create', id: id('c'), exclusive: true }]), 'AlreadyExists');
  });
});

describe('xattrs', () => {
  it('sets, gets, lists, removes and asserts', async () => {
    const o = id('x');
    await store.transact([
      { type: 'setXattr', id: o, name: 'v', value: b('1') },
      { type: 'setXattr', id: o, name: 'w', value: b('2') },
    ]);
    expect((await store.getXattr(o, 'v')).toString()).toBe('1');
    expect([...(await store.getXattrs(o)).keys()].sort()).toEqual(['v', 'w']);
    await store.transact([{ type: 'removeXattr', id: o, name: 'w' }]);
    await rejectsWith(store.getXattr(o, 'w'), 'NotFound');
    await store.transact([{ type: 'assertXattr', id: o, name: 'v', value: b('1') }, { type: 'setXattr', id: o, name: 'v', value: b('2') }]);
    await rejectsWith(store.transact([{ type: 'assertXattr', id: o, name: 'v', value: b('1') }, { type: 'setXattr', id: o, name: 'v', value: b('3') }]), 'Conflict');
    expect((await store.getXattr(o, 'v')).toString()).toBe('2');
    await store.transact([{ type: 'assertXattr', id: o, name: 'none', value: null }]);
  });
});

describe('omap', () => {
  it('sets, gets, lists in order with pagination both ways, removes keys and ranges, clears', async () => {
    const o = id('dir');
    const keys = Array.from({ length: 250 }, (_, i) => `k${String(i).padStart(4, '0')}`);
    await store.transact([{ type: 'omapSet', id: o, entries: keys.map((k) => [b(k), b(`v-${k}`)] as const) }]);
    const got = await store.omapGet(o, [b('k0003'), b('missing')]);
    expect(got[0]?.toString()).toBe('v-k0003');
    expect(got[1]).toBeUndefined();
    const listed: string[] = [];
    let after: Buffer | undefined;
    for (;;) {
      const page = await store.omapList(o, { limit: 64, ...(after ? { afterKey: after } : {}) });
      listed.push(...page.entries.map(([k]) => k.toString()));
      if (!page.more) break;
      after = page.entries[page.entries.length - 1]![0];
    }
    expect(listed).toEqual(keys);
    const reversed: string[] = [];
    after = undefined;
    for (;;) {
      const page = await store.omapList(o, { limit: 100, reverse: true, ...(after ? { afterKey: after } : {}) });
      reversed.push(...page.entries.map(([k]) => k.toString()));
      if (!page.more) break;
      after = page.entries[page.entries.length - 1]![0];
    }
    expect(reversed).toEqual([...keys].reverse());
    const prefixed = await store.omapList(o, { limit: 100, prefix: b('k001') });
    expect(prefixed.entries.map(([k]) => k.toString())).toEqual(keys.slice(10, 20));
    await store.transact([{ type: 'omapRemoveKeys', id: o, keys: [b('k0000'), b('k0001')] }]);
    await store.transact([{ type: 'omapRemoveRange', id: o, startKey: b('k0100'), endKey: b('k0200') }]);
    const rest = await store.omapList(o, { limit: 1000 });
    expect(rest.entries.map(([k]) => k.toString())).toEqual([...keys.slice(2, 100), ...keys.slice(200)]);
    await store.transact([{ type: 'omapClear', id: o }]);
    expect((await store.omapList(o, { limit: 10 })).entries).toEqual([]);
    await store.transact([{ type: 'omapSet', id: o, entries: [[b('new'), b('1')]] }]);
    expect((await store.omapList(o, { limit: 10 })).entries.map(([k]) => k.toString())).toEqual(['new']);
    // the old keys are purged in the background
    await store.runMaintenance();
  });

  it('a range removal sees keys set earlier in the same group commit', async () => {
    const o = id('g');
    await Promise.all([
      store.transact([{ type: 'omapSet', id: o, entries: [[b('a1'), b('x')], [b('b1'), b('y')]] }]),
      store.transact([{ type: 'omapRemoveRange', id: o, startKey: b('a'), endKey: b('b') }]),
    ]);
    expect((await store.omapList(o, { limit: 10 })).entries.map(([k]) => k.toString())).toEqual(['b1']);
  });
});

describe('listing', () => {
  it('lists objects of a namespace in stable order, paginated and by sort-key range', async () => {
    const names = Array.from({ length: 300 }, (_, i) => `obj-${i}`);
    await store.transact(names.map((n) => ({ type: 'create' as const, id: id(n, 5) })));
    await store.transact([{ type: 'create', id: id('other', 6) }]);
    const seen: string[] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = await store.listObjects({ ns: 5, limit: 70, ...(cursor ? { cursor } : {}) });
      seen.push(...page.objects.map((o) => o.name));
      if (!page.cursor) break;
      cursor = page.cursor;
    }
    expect(seen.length).toBe(300);
    expect(new Set(seen).size).toBe(300);
    const again = await store.listObjects({ ns: 5, limit: 1000 });
    expect(again.objects.map((o) => o.name)).toEqual(seen);
    // the 8 placement-group ranges partition the namespace
    let total = 0;
    for (let pg = 0; pg < 8; pg++) {
      const page = await store.listObjects({ ns: 5, limit: 1000, sortKeyRange: pgSortKeyRange(pg, 3) });
      total += page.objects.length;
    }
    expect(total).toBe(300);
  });
});

describe('transactions and limits', () => {
  it('applies all operations or none', async () => {
    const a = id('a');
    await store.transact([{ type: 'writeFull', id: a, data: b('before') }]);
    await rejectsWith(
      store.transact([
        { type: 'writeFull', id: a, data: b('after') },
        { type: 'omapSet', id: id('b'), entries: [[b('k'), b('v')]] },
        { type: 'removeXattr', id: id('missing'), name: 'x' },
      ]),
      'NotFound',
    );
    expect((await store.read(a)).toString()).toBe('before');
    await rejectsWith(store.stat(id('b')), 'NotFound');
  });

  it('a failing transaction in a group does not affect the others', async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        store.transact(i % 3 === 0 ? [{ type: 'writeFull', id: id(`g${i}`), data: b('x') }, { type: 'assertExists', id: id('nope') }] : [{ type: 'writeFull', id: id(`g${i}`), data: b(`v${i}`) }]),
      ),
    );
    for (let i = 0; i < 20; i++) {
      expect(results[i]!.status).toBe(i % 3 === 0 ? 'rejected' : 'fulfilled');
      if (i % 3 === 0) await rejectsWith(store.stat(id(`g${i}`)), 'NotFound');
      else expect((await store.read(id(`g${i}`))).toString()).toBe(`v${i}`);
    }
  });

  it('refuses what exceeds a limit and changes nothing', async () => {
    const smallDir = await makeTempDir('limits');
    const small = await ObjectStore.open({ io, path: smallDir.path, create: { clusterId: 'c', diskId: 1 }, limits: { objectSizeBytesMax: 1024 * 1024 } });
    try {
      await rejectsWith(small.transact([{ type: 'writeFull', id: id('big'), data: Buffer.alloc(1024 * 1024 + 1) }]), 'LimitExceeded');
      await rejectsWith(small.transact([{ type: 'write', id: id('big'), offsetBytes: 1024 * 1024, data: b('x') }]), 'LimitExceeded');
      await rejectsWith(small.transact([{ type: 'create', id: id('n'.repeat(3000)) }]), 'LimitExceeded');
      await rejectsWith(small.transact([{ type: 'setXattr', id: id('x'), name: 'x', value: Buffer.alloc(65 * 1024) }]), 'LimitExceeded');
      await rejectsWith(small.transact([{ type: 'omapSet', id: id('x'), entries: [[Buffer.alloc(5000), b('v')]] }]), 'LimitExceeded');
      await rejectsWith(small.transact(Array.from({ length: 1025 }, () => ({ type: 'create' as const, id: id('x') }))), 'LimitExceeded');
      await rejectsWith(small.transact([{ type: 'write', id: id('x'), offsetBytes: -1, data: b('x') }]), 'InvalidArgument');
      await rejectsWith(small.transact([]), 'InvalidArgument');
      expect(small.space().objects).toBe(0);
    } finally {
      await small.close();
      await smallDir.remove();
    }
  });
});

describe('persistence', () => {
  it('keeps everything across close and reopen', async () => {
    const big = randomBytes(5 * 1024 * 1024);
    await store.transact([
      { type: 'writeFull', id: id('p1'), data: big },
      { type: 'writeFull', id: id('p2'), data: b('small') },
      { type: 'setXattr', id: id('p2'), name: 'x', value: b('y') },
      { type: 'omapSet', id: id('p3'), entries: [[b('k'), b('v')]] },
    ]);
    await store.close();
    store = await open();
    expect((await store.read(id('p1'))).equals(big)).toBe(true);
    expect((await store.read(id('p2'))).toString()).toBe('small');
    expect((await store.getXattr(id('p2'), 'x')).toString()).toBe('y');
    expect((await store.omapGet(id('p3'), [b('k')]))[0]?.toString()).toBe('v');
    expect(store.space().objects).toBe(3);
    expect(store.space().logicalBytes).toBe(big.length + 5);
    // new writes after reopen go to a new segment and read back
    await store.transact([{ type: 'writeFull', id: id('p4'), data: big }]);
    expect((await store.read(id('p4'))).equals(big)).toBe(true);
  });

  it('refuses another cluster\'s disk and an unknown format', async () => {
    await store.close();
    await rejectsWith(ObjectStore.open({ io, path: dir.path, expect: { clusterId: 'other' } }), 'WrongCluster');
    const { readFile, writeFile } = await import('node:fs/promises');
    const sbPath = `${dir.path}/superblock`;
    const original = await readFile(sbPath);
    const { crc32c } = await import('../native/index.js');
    const body = JSON.stringify({ ...JSON.parse(original.toString().split('\n')[0]!), formatVersion: 99 });
    await writeFile(sbPath, `${body}\n${crc32c(Buffer.from(body)).toString(16)}\n`);
    await rejectsWith(ObjectStore.open({ io, path: dir.path }), 'UnsupportedFormat');
    await writeFile(sbPath, original);
    await rejectsWith(ObjectStore.open({ io, path: `${dir.path}/nothing-here` }), 'NotFound');
    store = await open();
  });
});
