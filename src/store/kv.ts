/**
 * The store's view of an ordered key/value engine: atomic batches that can be
 * synced, point reads, and bounded range scans from a fixed view. RocksDB is
 * the production implementation (kv-rocksdb.ts); the in-memory one
 * (kv-memory.ts, which the simulation in test/sim uses) implements the same
 * interface and loses unsynced batches on crash.
 */

export type KvOp = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };

export interface KvRange {
  gte?: Buffer;
  gt?: Buffer;
  lt?: Buffer;
  lte?: Buffer;
  reverse?: boolean;
  /** Entries returned at most; required, so every scan is bounded. */
  limit: number;
}

export interface KvStore {
  get(key: Buffer): Promise<Buffer | undefined>;
  /** Reads every key from one consistent view. */
  getMany(keys: readonly Buffer[]): Promise<Array<Buffer | undefined>>;
  /** Applies every op or none; with sync, durable before it resolves. */
  write(ops: readonly KvOp[], options: { sync: boolean }): Promise<void>;
  /** One page of a range, read from one consistent view. */
  scan(range: KvRange): Promise<Array<[Buffer, Buffer]>>;
  /** Approximate bytes on disk. */
  approximateSizeBytes(): Promise<number>;
  close(): Promise<void>;
}
