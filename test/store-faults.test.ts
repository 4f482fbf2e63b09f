/**
 * What the store does with bad bytes on disk and a full disk: corrupt segment
 * data, a truncated segment, corrupt inline data: reads of the damaged object
 * fail with Corrupt and never return the bad bytes; other objects still read.
 * Out of space: writes fail NoSpace, nothing acknowledged is lost, deletes
 * work, and after compaction the space is usable again.
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { open as fsOpen, readdir, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32c } from '../native/index.js';
import { systemIo } from '../src/io/system.js';
import { ObjectStore, openRocksKv, type ObjectId, type ReadPiece } from '../src/store/index.js';
import { isTesseraError, type ErrorCodeName } from '../src/lib/errors.js';
import { objectKey } from '../src/store/keys.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
const id = (name: string): ObjectId => ({ ns: 1, name });
let dir: Awaited<ReturnType<typeof makeTempDir>>;

async function errorCode(p: Promise<unknown>): Promise<ErrorCodeName | 'ok'> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (isTesseraError(err)) return err.code;
    throw err;
  }
}

const open = (extra: Partial<Parameters<typeof ObjectStore.open>[0]> = {}): Promise<ObjectStore> =>
  ObjectStore.open({ io, path: dir.path, create: { clusterId: 'f', diskId: 1 }, maintenance: { enabled: false }, ...extra });

beforeEach(async () => {
  dir = await makeTempDir('faults');
});
afterEach(async () => {
  await dir.remove();
});

async function onlySegment(): Promise<string> {
  const files = (await readdir(join(dir.path, 'segments'))).filter((f) => f.endsWith('.seg'));
  expect(files.length).toBe(1);
  return join(dir.path, 'segments', files[0]!);
}

it('a flipped byte in segment data fails that object\'s reads with Corrupt; others still read', async () => {
  const store = await open();
  const a = randomBytes(1024 * 1024);
  const bData = randomBytes(1024 * 1024);
  await store.transact([{ type: 'writeFull', id: id('a'), data: a }]);
  await store.transact([{ type: 'writeFull', id: id('b'), data: bData }]);
  const seg = await onlySegment();
  const fh = await fsOpen(seg, 'r+');
  const one = Buffer.alloc(1);
  await fh.read(one, 0, 1, 5000);
  one[0] = one[0]! ^ 0x40;
  await fh.write(one, 0, 1, 5000);
  await fh.close();
  expect(await errorCode(store.read(id('a')))).toBe('Corrupt');
  // a range outside the damaged chunk still reads
  expect((await store.read(id('a'), { offsetBytes: 512 * 1024, lengthBytes: 1000 })).equals(a.subarray(512 * 1024, 512 * 1024 + 1000))).toBe(true);
  expect((await store.read(id('b'))).equals(bData)).toBe(true);
  await store.close();
});

it('a truncated segment fails reads of what was cut off with Corrupt', async () => {
  let store = await open();
  await store.transact([{ type: 'writeFull', id: id('a'), data: randomBytes(100_000) }]);
  const keep = randomBytes(100_000);
  await store.transact([{ type: 'writeFull', id: id('z'), data: keep }]);
  await store.close();
  const seg = await onlySegment();
  await truncate(seg, 150_000);
  store = await open();
  expect(await errorCode(store.read(id('z')))).toBe('Corrupt');
  expect((await store.read(id('a'))).length).toBe(100_000);
  await store.close();
});

it('corrupt inline data fails with Corrupt; other objects still read', async () => {
  let store = await open();
  await store.transact([
    { type: 'writeFull', id: id('small'), data: Buffer.from('the quick brown fox') },
    { type: 'writeFull', id: id('other'), data: Buffer.from('fine') },
  ]);
  await store.close();
  const kv = await openRocksKv({ path: join(dir.path, 'db') });
  const key = objectKey(id('small'));
  const value = Buffer.from((await kv.get(key))!);
  value[value.length - 3] = value[value.length - 3]! ^ 0x01; // inside the inline bytes (they end the record)
  await kv.write([{ type: 'put', key, value }], { sync: true });
  await kv.close();
  store = await open();
  expect(await errorCode(store.read(id('small')))).toBe('Corrupt');
  expect((await store.read(id('other'))).toString()).toBe('fine');
  await store.close();
});

it('a garbled object record fails with Corrupt, not a crash', async () => {
  let store = await open();
  await store.transact([{ type: 'writeFull', id: id('g'), data: randomBytes(50_000) }]);
  await store.close();
  const kv = await openRocksKv({ path: join(dir.path, 'db') });
  await kv.write([{ type: 'put', key: objectKey(id('g')), value: Buffer.from([1, 0xff, 0xff, 0xff]) }], { sync: true });
  await kv.close();
  store = await open();
  expect(await errorCode(store.read(id('g')))).toBe('Corrupt');
  expect(await errorCode(store.stat(id('g')))).toBe('Corrupt');
  await store.close();
});

it('a full store refuses writes with NoSpace, keeps what it acknowledged, still deletes, and recovers space', async () => {
  const store = await open({
    space: { capacityBytes: 48 * 1024 * 1024, reserveBytes: 2 * 1024 * 1024 },
    limits: { segmentBytesMax: 4 * 1024 * 1024 },
  });
  const written = new Map<string, Buffer>();
  let refused = 0;
  for (let i = 0; i < 80 && refused === 0; i++) {
    const data = randomBytes(1024 * 1024);
    const code = await errorCode(store.transact([{ type: 'writeFull', id: id(`f${i}`), data }]));
    if (code === 'ok') written.set(`f${i}`, data);
    else {
      expect(code).toBe('NoSpace');
      refused++;
    }
  }
  expect(refused).toBe(1);
  expect(written.size).toBeGreaterThan(20);
  for (const [name, data] of written) expect((await store.read(id(name))).equals(data)).toBe(true);
  // deletes still work when full, and metadata-only writes that add no data
  const names = [...written.keys()];
  for (const name of names.slice(0, 20)) {
    await store.transact([{ type: 'remove', id: id(name) }]);
    written.delete(name);
  }
  await store.runMaintenance();
  await store.refreshSpace();
  await store.transact([{ type: 'writeFull', id: id('after'), data: randomBytes(4 * 1024 * 1024) }]);
  for (const [name, data] of written) expect((await store.read(id(name))).equals(data)).toBe(true);
  await store.close();
});

it('compaction reclaims the space of deleted and overwritten data and keeps the rest intact', async () => {
  const store = await open({ limits: { segmentBytesMax: 4 * 1024 * 1024 } });
  const kept = new Map<string, Buffer>();
  for (let i = 0; i < 60; i++) {
    const data = randomBytes(512 * 1024);
    await store.transact([{ type: 'writeFull', id: id(`c${i}`), data }]);
    if (i % 5 === 0) kept.set(`c${i}`, data);
  }
  for (let i = 0; i < 60; i++) if (i % 5 !== 0) await store.transact([{ type: 'remove', id: id(`c${i}`) }]);
  await store.refreshSpace();
  const before = store.space();
  const result = await store.runMaintenance();
  await store.refreshSpace();
  const after = store.space();
  expect(result.segmentsCompacted).toBeGreaterThan(0);
  expect(after.usedBytes).toBeLessThan(before.usedBytes / 2);
  expect(after.deadBytes).toBeLessThan(before.deadBytes / 4);
  for (const [name, data] of kept) expect((await store.read(id(name))).equals(data)).toBe(true);
  await store.close();
  const reopened = await open();
  for (const [name, data] of kept) expect((await reopened.read(id(name))).equals(data)).toBe(true);
  await reopened.close();
});

it('a streaming read returns the version it started with, whatever happens to the object meanwhile', async () => {
  const store = await open({ limits: { segmentBytesMax: 2 * 1024 * 1024 } });
  const original = randomBytes(3 * 1024 * 1024);
  await store.transact([{ type: 'writeFull', id: id('s'), data: original }]);
  const stream = await store.readStream(id('s'), { pieceBytes: 256 * 1024 });
  expect(stream.lengthBytes).toBe(original.length);
  const it = stream.chunks[Symbol.asyncIterator]();
  const first = (await it.next()).value as ReadPiece;
  // Each piece carries the crc32c of its bytes (combined from the verified chunk checksums).
  expect(first.crc32c).toBe(crc32c(first.bytes));
  const pieces: Buffer[] = [first.bytes];
  // Overwrite, remove, and compact everything: the segments it reads from must outlive the stream.
  await store.transact([{ type: 'writeFull', id: id('s'), data: randomBytes(3 * 1024 * 1024) }]);
  await store.transact([{ type: 'remove', id: id('s') }]);
  for (let i = 0; i < 4; i++) await store.transact([{ type: 'writeFull', id: id(`filler${i}`), data: randomBytes(1024 * 1024) }]);
  await store.runMaintenance();
  for (let n = await it.next(); !n.done; n = await it.next()) {
    expect(n.value.crc32c).toBe(crc32c(n.value.bytes));
    pieces.push(n.value.bytes);
  }
  expect(Buffer.concat(pieces).equals(original)).toBe(true);
  await store.runMaintenance();
  await store.close();
});

it('read-ahead: pieces come in order and exact, a corrupt piece read ahead fails the stream in its turn, every buffer not handed out is given back', async () => {
  const store = await open();
  const MiB = 1024 * 1024;
  const data = randomBytes(5 * MiB + 3);
  await store.transact([{ type: 'writeFull', id: id('r'), data }]);
  /** A budget of `ahead` buffers read ahead; counts every buffer lent and given back unused. */
  const reader = (ahead: number) => {
    const lent = new Set<Buffer>();
    const stats = { onDemand: 0, readAhead: 0, unused: 0 };
    let budget = ahead;
    const take = (n: number): Buffer => {
      const b = Buffer.alloc(n, 0xee);
      lent.add(b);
      return b;
    };
    return {
      lent,
      stats,
      options: {
        pieceBytes: MiB,
        allocate: (n: number) => (stats.onDemand++, take(n)),
        readAhead: { piecesMax: 4, allocate: (n: number) => (budget-- > 0 ? (stats.readAhead++, take(n)) : null) },
        unused: (b: Buffer) => {
          expect(lent.delete(b)).toBe(true);
          stats.unused++;
        },
      },
    };
  };
  // Whole: six pieces, some read ahead (two, then the budget refuses), the rest on demand, nothing left over.
  const whole = reader(2);
  const got: Buffer[] = [];
  for await (const piece of (await store.readStream(id('r'), whole.options)).chunks) {
    expect(piece.crc32c).toBe(crc32c(piece.bytes));
    expect(whole.lent.delete(piece.bytes)).toBe(true);
    got.push(piece.bytes);
  }
  expect(Buffer.concat(got).equals(data)).toBe(true);
  expect(whole.stats).toEqual({ onDemand: 4, readAhead: 2, unused: 0 });
  expect(whole.lent.size).toBe(0);
  // Abandoned after its first piece: the pieces read ahead come back (after their reads finished).
  const abandoned = reader(10);
  const it1 = (await store.readStream(id('r'), abandoned.options)).chunks[Symbol.asyncIterator]();
  const first = (await it1.next()).value as ReadPiece;
  expect(first.bytes.equals(data.subarray(0, MiB))).toBe(true);
  abandoned.lent.delete(first.bytes);
  await it1.return?.();
  expect(abandoned.stats.readAhead).toBe(3);
  expect(abandoned.stats.unused).toBe(3);
  expect(abandoned.lent.size).toBe(0);
  // A corrupt byte in the fourth piece, which is read ahead with the first: pieces 1-3 come exact, then Corrupt.
  const seg = await onlySegment();
  const fh = await fsOpen(seg, 'r+');
  const at = 32 + 3 * MiB + 100; // after the log record's header
  const one = Buffer.alloc(1);
  await fh.read(one, 0, 1, at);
  one[0] = one[0]! ^ 0x40;
  await fh.write(one, 0, 1, at);
  await fh.close();
  const failing = reader(10);
  const pieces: Buffer[] = [];
  let code: ErrorCodeName | 'ok' = 'ok';
  try {
    for await (const piece of (await store.readStream(id('r'), failing.options)).chunks) {
      failing.lent.delete(piece.bytes);
      pieces.push(piece.bytes);
    }
  } catch (err) {
    code = isTesseraError(err) ? err.code : 'ok';
  }
  expect(code).toBe('Corrupt');
  expect(pieces.length).toBe(3);
  expect(Buffer.concat(pieces).equals(data.subarray(0, 3 * MiB))).toBe(true);
  // The failed piece and any read after it came back unused.
  expect(failing.lent.size).toBe(0);
  expect(failing.stats.unused).toBeGreaterThan(0);
  await store.close();
});
