/**
 * What only the in-process store does: limits set per store, persistence
 * across close and reopen, identity checks. The operations themselves are in
 * the conformance suite (helpers/store-conformance.ts).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { systemIo } from '../src/io/system.js';
import { ObjectStore, type ObjectId, type ObjectStoreOptions } from '../src/store/index.js';
import { rejectsWith } from './helpers/store-conformance.js';
import { pgSortKeyRange } from '../src/lib/hash.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
const id = (name: string, ns = 1): ObjectId => ({ ns, name });
const b = (s: string): Buffer => Buffer.from(s);


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

describe('limits', () => {
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

describe('commit order', () => {
  it('transactions waiting for room in the commit queue commit in submission order (a small one never overtakes a large one)', async () => {
    await store.close();
    store = await open({ limits: { commitQueueBytesMax: 3 * 1024 * 1024 } });
    const big = Buffer.alloc(2 * 1024 * 1024, 1);
    const order: string[] = [];
    const submitted = [
      store.transact([{ type: 'writeFull', id: id('a'), data: big }]).then(() => order.push('a (2 MiB)')),
      // b does not fit next to a: it waits for room; c would fit, but must wait behind b.
      store.transact([{ type: 'writeFull', id: id('b'), data: big }]).then(() => order.push('b (2 MiB)')),
      store.transact([{ type: 'writeFull', id: id('c'), data: b('small') }]).then(() => order.push('c (5 B)')),
    ];
    await Promise.all(submitted);
    expect(order).toEqual(['a (2 MiB)', 'b (2 MiB)', 'c (5 B)']);
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
