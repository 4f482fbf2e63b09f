/**
 * What the embedded map store adds to the MapService contract (the shared
 * suite is in map-service.test.ts): its files (one checksummed file per
 * epoch, history bounded, leftovers cleaned, corruption refused rather than
 * rolled back), its creation rules, exact compare-and-set under concurrent
 * updates, and its lock: stale locks of dead processes (or of an earlier
 * incarnation of a pid) are taken over, live ones refused, racing openers
 * get exactly one owner, and an owner whose lock was taken stops writing.
 * Every test works in its own temporary directory, removed afterwards.
 */
import { spawn } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { nextEpoch, setDiskState, setDiskWeight } from '../cluster/map-edit.js';
import { systemProcessProbe } from '../cluster/map-lock.js';
import { EmbeddedMapStore } from '../cluster/map-store-embedded.js';
import { mapFileName } from '../cluster/map-store-files.js';
import { systemIo } from '../src/io/system.js';
import { errorCodeOf, sampleMap } from './helpers/map-service-conformance.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
let dir: Awaited<ReturnType<typeof makeTempDir>>;
const opened: EmbeddedMapStore[] = [];

async function open(options: { create?: boolean | string; historyEpochsKept?: number } = {}): Promise<EmbeddedMapStore> {
  const create = options.create === undefined || options.create === false ? undefined : sampleMap(typeof options.create === 'string' ? options.create : 'conformance');
  const store = await EmbeddedMapStore.open({ io, path: dir.path, ...(create ? { create } : {}), ...(options.historyEpochsKept ? { historyEpochsKept: options.historyEpochsKept } : {}) });
  opened.push(store);
  return store;
}

const epochFiles = async (): Promise<string[]> => (await readdir(dir.path)).filter((n) => n.startsWith('epoch-')).sort();

/** The highest lock generation and its record. */
async function topLock(): Promise<{ name: string; record: Record<string, unknown> }> {
  const names = (await readdir(dir.path)).filter((n) => /^LOCK\.\d+$/.test(n)).sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)));
  const name = names.at(-1)!;
  return { name, record: JSON.parse(await readFile(join(dir.path, name), 'utf8')) as Record<string, unknown> };
}

/** A pid that just exited (reaped), so no process has it for now. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

beforeEach(async () => {
  dir = await makeTempDir('mapstore');
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
  await dir.remove();
});

describe('files', () => {
  test('one checksummed file per epoch, the last few kept, lock released on close', async () => {
    const store = await open({ create: true, historyEpochsKept: 3 });
    for (let i = 0; i < 5; i++) await store.change((m) => setDiskWeight(m, 0, i + 2));
    expect(await epochFiles()).toEqual([mapFileName(4), mapFileName(5), mapFileName(6)]);
    const text = (await readFile(join(dir.path, mapFileName(6)))).toString();
    expect(text.split('\n')[0]).toMatch(/^tessera-map 1 6 \d+ [0-9a-f]{8}$/);
    expect(JSON.parse(text.slice(text.indexOf('\n') + 1))).toEqual(await store.current());
    await store.close();
    expect(await topLock()).toMatchObject({ name: 'LOCK.1', record: { released: true } });
    const reopened = await open({ historyEpochsKept: 2 });
    expect((await reopened.current()).epoch).toBe(6);
    expect(await epochFiles()).toEqual([mapFileName(5), mapFileName(6)]);
  });

  test('a missing map is NotFound without create; create resumes a map of the same cluster, refuses another', async () => {
    expect(await errorCodeOf(EmbeddedMapStore.open({ io, path: join(dir.path, 'absent') }))).toBe('NotFound');
    expect(await errorCodeOf(open())).toBe('NotFound');
    const store = await open({ create: true });
    await store.change((m) => setDiskState(m, 0, { up: false }));
    await store.close();
    const resumed = await open({ create: true });
    expect((await resumed.current()).epoch).toBe(2);
    await resumed.close();
    expect(await errorCodeOf(open({ create: 'another' }))).toBe('WrongCluster');
    expect((await topLock()).record).toMatchObject({ released: true });
  });

  test('a corrupt or torn newest epoch refuses to open (no silent rollback), and releases the lock', async () => {
    const store = await open({ create: true });
    await store.change((m) => setDiskState(m, 0, { up: false }));
    await store.close();
    const newest = join(dir.path, mapFileName(2));
    const good = await readFile(newest);
    const flipped = Buffer.from(good);
    flipped[flipped.length - 5] = flipped[flipped.length - 5]! ^ 0x01;
    await writeFile(newest, flipped);
    expect(await errorCodeOf(open())).toBe('Corrupt');
    await writeFile(newest, good.subarray(0, good.length - 10));
    expect(await errorCodeOf(open())).toBe('Corrupt');
    await writeFile(newest, good.subarray(0, 20));
    expect(await errorCodeOf(open())).toBe('Corrupt');
    expect((await topLock()).record).toMatchObject({ released: true });
    await writeFile(newest, good);
    expect((await (await open()).current()).epoch).toBe(2);
  });

  test('leftover temporary files are removed on open', async () => {
    await (await open({ create: true })).close();
    await writeFile(join(dir.path, `.${mapFileName(2)}.tmp`), 'half');
    await writeFile(join(dir.path, '.LOCK.1.tmp'), '{}');
    await open();
    expect((await readdir(dir.path)).sort()).toEqual(['LOCK.2', mapFileName(1)]);
  });
});

test('concurrent updates against one epoch: exactly one wins, the rest Conflict', async () => {
  const store = await open({ create: true });
  const base = await store.current();
  const codes = await Promise.all(Array.from({ length: 20 }, (_, i) => errorCodeOf(store.update(1, nextEpoch(base, (m) => setDiskWeight(m, 0, i + 2))))));
  expect(codes.filter((c) => c === 'none')).toHaveLength(1);
  expect(codes.filter((c) => c === 'Conflict')).toHaveLength(19);
  expect((await store.current()).epoch).toBe(2);
  expect(await epochFiles()).toEqual([mapFileName(1), mapFileName(2)]);
});

test('a failed epoch write stops the store (Unavailable) until it is reopened; the disk decides', async () => {
  let failWrites = false;
  const faulty = { ...io, fs: { ...io.fs, writeFileAtomic: (path: string, data: Uint8Array) => (failWrites ? Promise.reject(new Error('EIO (test)')) : io.fs.writeFileAtomic(path, data)) } };
  const store = await EmbeddedMapStore.open({ io: faulty, path: dir.path, create: sampleMap() });
  opened.push(store);
  await store.change((m) => setDiskWeight(m, 0, 2));
  failWrites = true;
  expect(await errorCodeOf(store.change((m) => setDiskWeight(m, 0, 3)))).toBe('Unavailable');
  failWrites = false;
  expect(await errorCodeOf(store.current())).toBe('Unavailable');
  expect(await errorCodeOf(store.change((m) => setDiskWeight(m, 0, 4)))).toBe('Unavailable');
  await store.close();
  const reopened = await open();
  expect(await reopened.current()).toMatchObject({ epoch: 2, disks: expect.arrayContaining([expect.objectContaining({ id: 0, weight: 2 })]) });
});

describe('lock', () => {
  const lockRecord = (pid: number, incarnation: string, token = 'other'): string => JSON.stringify({ pid, incarnation, token, acquiredAtMs: 0 });

  /** Generation 1 is released by a clean close; generation 2 is planted by each test. */
  const plant = (text: string): Promise<void> => writeFile(join(dir.path, 'LOCK.2'), text);
  beforeEach(async () => {
    await (await open({ create: true })).close();
    opened.pop();
  });

  test('a lock left by a dead process is taken over, older generations removed', async () => {
    await plant(lockRecord(await deadPid(), 'x/1'));
    const store = await open();
    expect((await store.current()).epoch).toBe(1);
    expect(await topLock()).toMatchObject({ name: 'LOCK.3', record: { pid: process.pid } });
    expect((await readdir(dir.path)).filter((n) => n.startsWith('LOCK'))).toEqual(['LOCK.3']);
  });

  test('a lock of an earlier incarnation of a live pid is taken over; the live owner is refused', async () => {
    const me = await systemProcessProbe(io).self();
    await plant(lockRecord(me.pid, `${me.incarnation}-earlier`));
    await open();
    expect(await errorCodeOf(open())).toBe('Locked');
  });

  test('an unparsable lock (its writer died mid-create) is taken over after a grace period', async () => {
    await plant('');
    await open();
    expect((await topLock()).name).toBe('LOCK.3');
  });

  test('racing openers of a released or stale lock: exactly one owner, every round', async () => {
    const dead = await deadPid();
    for (let round = 0; round < 12; round++) {
      const top = await topLock();
      if (round % 2 === 1) await writeFile(join(dir.path, `LOCK.${Number(top.name.slice(5)) + 1}`), lockRecord(dead, 'x/1'));
      const results = await Promise.allSettled(Array.from({ length: 8 }, () => EmbeddedMapStore.open({ io, path: dir.path })));
      const owners = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      for (const r of results) if (r.status === 'rejected') expect((r.reason as { code: string }).code, String(r.reason)).toBe('Locked');
      expect(owners, `round ${round}`).toHaveLength(1);
      await owners[0]!.change((m) => setDiskWeight(m, 0, round + 2));
      await Promise.all(owners.map((o) => o.close()));
    }
  });

  test('an owner whose lock was taken stops before writing anything (Locked from then on)', async () => {
    const store = await open();
    const me = await systemProcessProbe(io).self();
    await writeFile(join(dir.path, 'LOCK.3'), lockRecord(me.pid, me.incarnation, 'thief'));
    expect(await errorCodeOf(store.change((m) => setDiskState(m, 0, { up: false })))).toBe('Locked');
    expect(await epochFiles()).toEqual([mapFileName(1)]);
    expect(await errorCodeOf(store.current())).toBe('Locked');
    await store.close();
    expect(await topLock()).toMatchObject({ name: 'LOCK.3', record: { token: 'thief' } });
  });
});
