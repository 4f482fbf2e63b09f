/**
 * Scrubbing a store: every object is read and its checksums verified; a
 * corrupted segment shows up as a Corrupt error naming the object, other
 * objects scrub clean; digests of equal objects are equal and differ when
 * data, xattrs or omap differ (what replica comparison relies on).
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { open as fsOpen, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { systemIo } from '../src/io/system.js';
import { ObjectStore } from '../src/store/index.js';
import { digestObject, scrubNamespace } from '../src/store/scrub.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
let dir: Awaited<ReturnType<typeof makeTempDir>>;
let store: ObjectStore;

beforeEach(async () => {
  dir = await makeTempDir('scrub');
  store = await ObjectStore.open({ io, path: dir.path, create: { clusterId: 's', diskId: 1 }, maintenance: { enabled: false } });
});
afterEach(async () => {
  await store.close();
  await dir.remove();
});

it('finds exactly the corrupted object and digests equal objects equally', async () => {
  const a = randomBytes(2 * 1024 * 1024);
  await store.transact([{ type: 'writeFull', id: { ns: 4, name: 'victim' }, data: a }]);
  for (let i = 0; i < 20; i++) {
    await store.transact([
      { type: 'writeFull', id: { ns: 4, name: `ok-${i}` }, data: randomBytes(10_000 + i) },
      { type: 'omapSet', id: { ns: 4, name: `ok-${i}` }, entries: [[Buffer.from('k'), Buffer.from(String(i))]] },
    ]);
  }
  const clean = await scrubNamespace(store, { io, ns: 4 });
  expect(clean.objects).toBe(21);
  expect(clean.errors).toEqual([]);
  const seg = (await readdir(join(dir.path, 'segments'))).find((f) => f.endsWith('.seg'))!;
  const fh = await fsOpen(join(dir.path, 'segments', seg), 'r+');
  await fh.write(Buffer.from([0xff, 0x00, 0xff]), 0, 3, 1_000_000);
  await fh.close();
  const dirty = await scrubNamespace(store, { io, ns: 4 });
  expect(dirty.errors.map((e) => [e.name, e.code])).toEqual([['victim', 'Corrupt']]);

  const same1 = { ns: 5, name: 'x' };
  const same2 = { ns: 5, name: 'y' };
  const data = randomBytes(300_000);
  for (const id of [same1, same2]) {
    await store.transact([
      { type: 'writeFull', id, data },
      { type: 'setXattr', id, name: 'm', value: Buffer.from('1') },
      { type: 'omapSet', id, entries: [[Buffer.from('a'), Buffer.from('b')]] },
    ]);
  }
  const d1 = await digestObject(store, same1);
  expect(await digestObject(store, same2)).toEqual(d1);
  await store.transact([{ type: 'setXattr', id: same2, name: 'm', value: Buffer.from('2') }]);
  expect((await digestObject(store, same2)).xattrsCrc).not.toBe(d1.xattrsCrc);
  await store.transact([{ type: 'omapSet', id: same1, entries: [[Buffer.from('a'), Buffer.from('c')]] }]);
  expect((await digestObject(store, same1)).omapCrc).not.toBe(d1.omapCrc);
});
