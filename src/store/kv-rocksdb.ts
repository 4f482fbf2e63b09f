/**
 * KvStore on RocksDB through the `rocksdb` npm binding (chosen by measurement:
 * docs/rocksdb-binding.md). Every call runs on libuv's thread pool; the
 * binding holds the database's LOCK file, so a second process opening the same
 * directory fails, which we turn into a Locked error.
 *
 * The binding crashes the process (SIGSEGV) on a call after close(), and an
 * iterator ended by close() never calls back: so every call is counted, calls
 * after close starts fail with Closed, and close() waits for the count to
 * reach zero before it closes the database.
 */
import { createRequire } from 'node:module';
import { TesseraError } from '../lib/errors.js';
import type { KvOp, KvRange, KvStore } from './kv.js';

const require = createRequire(import.meta.url);

type Callback<T = void> = (err: Error | null | undefined, value?: T) => void;
interface RocksIterator {
  next(cb: (err: Error | null | undefined, key?: Buffer, value?: Buffer) => void): void;
  end(cb: Callback): void;
}
interface RocksDb {
  open(options: Record<string, unknown>, cb: Callback): void;
  close(cb: Callback): void;
  get(key: Buffer, options: Record<string, unknown>, cb: Callback<Buffer>): void;
  getMany(keys: Buffer[], options: Record<string, unknown>, cb: Callback<Array<Buffer | undefined>>): void;
  batch(ops: KvOp[], options: Record<string, unknown>, cb: Callback): void;
  iterator(options: Record<string, unknown>): RocksIterator;
  approximateSize(start: Buffer, end: Buffer, cb: Callback<number>): void;
}

function promisify<T>(fn: (cb: Callback<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    fn((err, value) => (err ? reject(err) : resolve(value as T)));
  });
}

function isNotFound(err: unknown): boolean {
  return err instanceof Error && /NotFound/i.test(err.message);
}

export interface RocksKvOptions {
  path: string;
  /** Block cache size (default 64 MiB). */
  cacheBytes?: number;
  writeBufferBytes?: number;
}

export async function openRocksKv(options: RocksKvOptions): Promise<KvStore> {
  const factory = require('rocksdb') as (location: string) => RocksDb;
  const db = factory(options.path);
  try {
    await promisify<void>((cb) =>
      db.open(
        {
          createIfMissing: true,
          cacheSize: options.cacheBytes ?? 64 * 1024 * 1024,
          writeBufferSize: options.writeBufferBytes ?? 16 * 1024 * 1024,
          maxFileSize: 64 * 1024 * 1024,
          compression: true,
        },
        cb,
      ),
    );
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (/lock/i.test(message)) {
      throw new TesseraError('Locked', `metadata database ${options.path} is in use by another process (${message})`, { cause: err });
    }
    throw new TesseraError('Internal', `cannot open metadata database ${options.path}: ${message}`, { cause: err });
  }
  return new RocksKv(db);
}

class RocksKv implements KvStore {
  private closing = false;
  private inflight = 0;
  private drained: (() => void) | null = null;

  constructor(private readonly db: RocksDb) {}

  /** Counts a call for the duration of fn; refuses it once close has started. */
  private async guarded<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closing) throw new TesseraError('Closed', 'metadata database is closing');
    this.inflight++;
    try {
      return await fn();
    } finally {
      this.inflight--;
      if (this.inflight === 0) this.drained?.();
    }
  }

  get(key: Buffer): Promise<Buffer | undefined> {
    return this.guarded(async () => {
      try {
        return await promisify<Buffer>((cb) => this.db.get(key, { asBuffer: true, fillCache: true }, cb));
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    });
  }

  getMany(keys: readonly Buffer[]): Promise<Array<Buffer | undefined>> {
    if (keys.length === 0) return Promise.resolve([]);
    return this.guarded(() => promisify((cb) => this.db.getMany(keys as Buffer[], { asBuffer: true }, cb)));
  }

  write(ops: readonly KvOp[], options: { sync: boolean }): Promise<void> {
    if (ops.length === 0) return Promise.resolve();
    return this.guarded(() => promisify((cb) => this.db.batch(ops as KvOp[], { sync: options.sync }, cb)));
  }

  scan(range: KvRange): Promise<Array<[Buffer, Buffer]>> {
    return this.guarded(() => this.scanPage(range));
  }

  private async scanPage(range: KvRange): Promise<Array<[Buffer, Buffer]>> {
    const out: Array<[Buffer, Buffer]> = [];
    if (range.limit <= 0) return out;
    const it = this.db.iterator({
      ...(range.gte ? { gte: range.gte } : {}),
      ...(range.gt ? { gt: range.gt } : {}),
      ...(range.lt ? { lt: range.lt } : {}),
      ...(range.lte ? { lte: range.lte } : {}),
      reverse: range.reverse === true,
      limit: range.limit,
      keyAsBuffer: true,
      valueAsBuffer: true,
      highWaterMark: 256 * 1024,
    });
    try {
      for (;;) {
        const entry = await new Promise<[Buffer, Buffer] | undefined>((resolve, reject) => {
          it.next((err, key, value) => {
            if (err) reject(err);
            else resolve(key === undefined ? undefined : [key, value as Buffer]);
          });
        });
        if (!entry) break;
        out.push(entry);
      }
    } finally {
      await promisify<void>((cb) => it.end(cb));
    }
    return out;
  }

  approximateSizeBytes(): Promise<number> {
    return this.guarded(() => promisify((cb) => this.db.approximateSize(Buffer.from([0x00]), Buffer.from([0xff, 0xff]), cb)));
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    await promisify<void>((cb) => this.db.close(cb));
  }
}
