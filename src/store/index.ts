/** src/store: one disk's object store. See store.ts for the API, docs/store.md for the format. */
export { ObjectStore, type ObjectStoreOptions } from './store.js';
export type { StoreIdentity, StoreLimits, SpaceOptions } from './core.js';
export type { MaintenanceOptions } from './maintenance.js';
export type { KvStore, KvOp, KvRange } from './kv.js';
export { openRocksKv } from './kv-rocksdb.js';
export * from './types.js';
