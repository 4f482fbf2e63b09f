/**
 * The KvStore conformance suite, run against RocksDB (production) and the
 * in-memory store used to simulate crashes: atomic batches, point and multi
 * reads, bounded range scans both ways, and (memory only) loss of exactly
 * the unsynced writes on crash.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openRocksKv, type KvStore } from '../src/store/index.js';
import { MemoryKvDisk } from '../src/store/kv-memory.js';
import { makeTempDir } from './helpers/tmp.js';

const b = (s: string): Buffer => Buffer.from(s);
const keysOf = (rows: Array<[Buffer, Buffer]>): string[] => rows.map(([k]) => k.toString());

function kvConformance(name: string, open: () => Promise<{ kv: KvStore; cleanup: () => Promise<void> }>): void {
  describe(name, () => {
    let cleanup: (() => Promise<void>) | undefined;
    afterEach(async () => {
      await cleanup?.();
      cleanup = undefined;
    });
    const fresh = async (): Promise<KvStore> => {
      const o = await open();
      cleanup = o.cleanup;
      return o.kv;
    };

    it('writes batches atomically and reads them back', async () => {
      const kv = await fresh();
      await kv.write([{ type: 'put', key: b('a'), value: b('1') }, { type: 'put', key: b('b'), value: b('2') }], { sync: true });
      await kv.write([{ type: 'del', key: b('a') }, { type: 'put', key: b('c'), value: b('3') }], { sync: false });
      expect(await kv.get(b('a'))).toBeUndefined();
      expect((await kv.get(b('b')))?.toString()).toBe('2');
      expect((await kv.getMany([b('a'), b('b'), b('c'), b('zz')])).map((v) => v?.toString())).toEqual([undefined, '2', '3', undefined]);
    });

    it('scans ranges in byte order, both ways, bounded', async () => {
      const kv = await fresh();
      const keys = ['a', 'a\x00', 'ab', 'b', 'b\xff', 'c'].map((k) => Buffer.from(k, 'latin1'));
      await kv.write(keys.map((key) => ({ type: 'put' as const, key, value: b('v') })), { sync: false });
      const all = await kv.scan({ limit: 100 });
      expect(all.map(([k]) => k.toString('latin1'))).toEqual(['a', 'a\x00', 'ab', 'b', 'b\xff', 'c']);
      expect(keysOf(await kv.scan({ gt: b('a'), lt: b('b'), limit: 100 }))).toEqual(['a\x00', 'ab']);
      expect(keysOf(await kv.scan({ gte: b('a'), lte: b('b'), limit: 2 }))).toEqual(['a', 'a\x00']);
      expect((await kv.scan({ gte: b('ab'), reverse: true, limit: 2 })).map(([k]) => k.toString('latin1'))).toEqual(['c', 'b\xff']);
      expect(await kv.scan({ gte: b('x'), limit: 10 })).toEqual([]);
    });
  });
}

kvConformance('RocksDB', async () => {
  const dir = await makeTempDir('kv');
  const kv = await openRocksKv({ path: dir.path });
  return {
    kv,
    cleanup: async () => {
      await kv.close();
      await dir.remove();
    },
  };
});

kvConformance('memory', async () => {
  const kv = new MemoryKvDisk().open();
  return { kv, cleanup: () => kv.close() };
});

describe('memory kv crash semantics', () => {
  it('a crash loses exactly the writes after the last synced one', async () => {
    const disk = new MemoryKvDisk();
    const kv = disk.open();
    await kv.write([{ type: 'put', key: b('a'), value: b('1') }], { sync: false });
    await kv.write([{ type: 'put', key: b('b'), value: b('2') }], { sync: true });
    await kv.write([{ type: 'put', key: b('c'), value: b('3') }], { sync: false });
    disk.crash();
    await expect(kv.get(b('a'))).rejects.toMatchObject({ code: 'Closed' });
    const after = disk.open();
    expect((await after.getMany([b('a'), b('b'), b('c')])).map((v) => v?.toString())).toEqual(['1', '2', undefined]);
  });
});
