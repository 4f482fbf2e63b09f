/**
 * The store conformance suite: what every StoreApi implementation must do,
 * run against the in-process ObjectStore and against a storage daemon over
 * the in-process and TCP transports (test/store-conformance.test.ts).
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { ObjectId, StoreApi } from '../../src/store/index.js';
import { isTesseraError } from '../../src/lib/errors.js';
import { pgSortKeyRange } from '../../src/lib/hash.js';

const b = (s: string): Buffer => Buffer.from(s);

export async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
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

/** Registers the suite; getStore returns the implementation under test (fresh and empty per suite). */
export function storeConformance(getStore: () => StoreApi): void {
  // Each test gets namespaces of its own, so one store can serve the whole suite.
  let ns = 1000;
  const id = (name: string, inNs = ns): ObjectId => ({ ns: inNs, name });
  let store: StoreApi;
  const fresh = (): void => {
    ns += 2;
    store = getStore();
  };
  describe('data', () => {
    beforeEach(fresh);
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
      expect((await store.listObjects({ ns, limit: 10 })).objects.map((o) => o.name)).toEqual(['r']);
    });

    it('moves an object (data, xattrs, omap) over another atomically', async () => {
      const a = id('mv-a');
      const target = id('mv-b');
      const data = randomBytes(300_000);
      await store.transact([
        { type: 'writeFull', id: a, data },
        { type: 'setXattr', id: a, name: 'x', value: b('1') },
        { type: 'omapSet', id: a, entries: [[b('k'), b('v')]] },
        { type: 'writeFull', id: target, data: b('old') },
        { type: 'omapSet', id: target, entries: [[b('old'), b('1')]] },
      ]);
      await store.transact([{ type: 'move', id: a, to: target }]);
      await rejectsWith(store.stat(a), 'NotFound');
      expect((await store.read(target)).equals(data)).toBe(true);
      expect((await store.getXattr(target, 'x')).toString()).toBe('1');
      expect((await store.omapList(target, { limit: 10 })).entries.map(([k]) => k.toString())).toEqual(['k']);
      await rejectsWith(store.transact([{ type: 'move', id: a, to: target }]), 'NotFound');
    });

    it('moves a byte range from a staging object into place', async () => {
      const target = id('mr-target');
      const staging = id('mr-staging');
      const base = randomBytes(200_000);
      const patch = randomBytes(50_000);
      await store.transact([
        { type: 'writeFull', id: target, data: base },
        { type: 'writeFull', id: staging, data: patch },
      ]);
      await store.transact([
        { type: 'moveRange', id: target, offsetBytes: 180_000, from: staging, fromOffsetBytes: 0, lengthBytes: 50_000 },
        { type: 'remove', id: staging },
      ]);
      const expected = Buffer.concat([base.subarray(0, 180_000), patch]);
      expect((await store.read(target)).equals(expected)).toBe(true);
      await rejectsWith(store.stat(staging), 'NotFound');
      const small = id('mr-small');
      await store.transact([{ type: 'writeFull', id: small, data: b('0123456789') }, { type: 'writeFull', id: staging, data: b('abc') }]);
      await store.transact([{ type: 'moveRange', id: small, offsetBytes: 4, from: staging, fromOffsetBytes: 1, lengthBytes: 2 }]);
      expect((await store.read(small)).toString()).toBe('0123bc6789');
      expect((await store.read(staging)).equals(Buffer.from([0x61, 0, 0]))).toBe(true);
    });

    it('create exclusive fails on an existing object', async () => {
      await store.transact([{ type: 'create', id: id('c'), exclusive: true }]);
      await rejectsWith(store.transact([{ type: 'create', id: id('c'), exclusive: true }]), 'AlreadyExists');
    });
  });

  describe('xattrs', () => {
    beforeEach(fresh);
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
    it('a read with ifXattr returns the bytes only while the xattr holds the value, else Conflict', async () => {
      // Inline, a small read, and one the daemon streams (from 512 KiB) with and without a length.
      for (const sizeBytes of [100, 100 * 1024, 2 * 1024 * 1024 + 5]) {
        const o = id(`cond-${sizeBytes}`);
        const data = randomBytes(sizeBytes);
        await store.transact([{ type: 'writeFull', id: o, data }, { type: 'setXattr', id: o, name: '_v', value: b('7') }]);
        expect((await store.read(o, { ifXattr: { name: '_v', value: b('7') } })).equals(data)).toBe(true);
        const part = { offsetBytes: 10, lengthBytes: sizeBytes - 20 };
        expect((await store.read(o, { ...part, ifXattr: { name: '_v', value: b('7') } })).equals(data.subarray(10, sizeBytes - 10))).toBe(true);
        await rejectsWith(store.read(o, { ifXattr: { name: '_v', value: b('8') } }), 'Conflict');
        await rejectsWith(store.read(o, { ...part, ifXattr: { name: '_v', value: b('77') } }), 'Conflict');
        await rejectsWith(store.read(o, { ifXattr: { name: 'absent', value: b('7') } }), 'Conflict');
        await store.transact([{ type: 'setXattr', id: o, name: '_v', value: b('8') }]);
        await rejectsWith(store.read(o, { ...part, ifXattr: { name: '_v', value: b('7') } }), 'Conflict');
        expect((await store.read(o, { ...part, ifXattr: { name: '_v', value: b('8') } })).equals(data.subarray(10, sizeBytes - 10))).toBe(true);
      }
      await rejectsWith(store.read(id('cond-none'), { ifXattr: { name: '_v', value: b('7') } }), 'NotFound');
    });
  });

  describe('omap', () => {
    beforeEach(fresh);
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
    });

    it('compares an omap value atomically with other changes', async () => {
      const o = id('cas');
      await store.transact([{ type: 'omapCompare', id: o, key: b('k'), value: null }, { type: 'omapSet', id: o, entries: [[b('k'), b('1')]] }]);
      await rejectsWith(store.transact([{ type: 'omapCompare', id: o, key: b('k'), value: null }, { type: 'omapSet', id: o, entries: [[b('k'), b('x')]] }]), 'Conflict');
      await store.transact([{ type: 'omapCompare', id: o, key: b('k'), value: b('1') }, { type: 'omapSet', id: o, entries: [[b('k'), b('2')]] }]);
      await rejectsWith(store.transact([{ type: 'omapCompare', id: o, key: b('k'), value: b('1') }, { type: 'omapSet', id: o, entries: [[b('k'), b('3')]] }]), 'Conflict');
      expect((await store.omapGet(o, [b('k')]))[0]?.toString()).toBe('2');
      // Many concurrent compare-and-sets of one key: exactly one wins per value.
      const results = await Promise.allSettled(
        Array.from({ length: 10 }, (_, i) => store.transact([{ type: 'omapCompare', id: o, key: b('k'), value: b('2') }, { type: 'omapSet', id: o, entries: [[b('k'), b(`w${i}`)]] }])),
      );
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
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
    beforeEach(fresh);
    it('lists objects of a namespace in stable order, paginated and by sort-key range', async () => {
      const names = Array.from({ length: 300 }, (_, i) => `obj-${i}`);
      await store.transact(names.map((n) => ({ type: 'create' as const, id: id(n) })));
      await store.transact([{ type: 'create', id: id('other', ns + 1) }]);
      const seen: string[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page = await store.listObjects({ ns, limit: 70, ...(cursor ? { cursor } : {}) });
        seen.push(...page.objects.map((o) => o.name));
        if (!page.cursor) break;
        cursor = page.cursor;
      }
      expect(seen.length).toBe(300);
      expect(new Set(seen).size).toBe(300);
      const again = await store.listObjects({ ns, limit: 1000 });
      expect(again.objects.map((o) => o.name)).toEqual(seen);
      // the 8 placement-group ranges partition the namespace
      let total = 0;
      for (let pg = 0; pg < 8; pg++) {
        const page = await store.listObjects({ ns, limit: 1000, sortKeyRange: pgSortKeyRange(pg, 3) });
        total += page.objects.length;
      }
      expect(total).toBe(300);
    });
  });

  describe('transactions and limits', () => {
    beforeEach(fresh);
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
  });
}
