/**
 * A storage daemon: owns one disk's ObjectStore and serves it over the rpc
 * transport. Lifecycle: open the store (which takes the disk's lock), listen,
 * serve; close() stops taking requests, drains those in flight, then closes
 * the store. The cluster layer (placement groups, replication) will sit on
 * top of the same store and transport.
 */
import type { Io } from '../io/io.js';
import { createTcpServer } from '../rpc/tcp.js';
import type { RpcLimits } from '../rpc/options.js';
import type { RpcHandler, RpcServer } from '../rpc/types.js';
import { ObjectStore, type ObjectStoreOptions, type StoreIdentity } from '../store/index.js';
import { storeHandler } from './store-service.js';

export interface DaemonOptions {
  io: Io;
  diskPath: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Initialize the disk with this identity if it holds no store yet. */
  create?: StoreIdentity;
  /** Refuse a disk of another cluster or with another id. */
  expect?: Partial<StoreIdentity>;
  store?: Partial<Omit<ObjectStoreOptions, 'io' | 'path' | 'create' | 'expect'>>;
  rpcLimits?: Partial<RpcLimits>;
  drainTimeoutMs?: number;
}

export class StorageDaemon {
  private closing: Promise<void> | null = null;

  private constructor(
    readonly store: ObjectStore,
    private readonly server: RpcServer,
    private readonly drainTimeoutMs: number,
  ) {}

  static async start(options: DaemonOptions): Promise<StorageDaemon> {
    const store = await ObjectStore.open({
      ...options.store,
      io: options.io,
      path: options.diskPath,
      ...(options.create ? { create: options.create } : {}),
      ...(options.expect ? { expect: options.expect } : {}),
    });
    try {
      const handler: RpcHandler = storeHandler(store);
      const server = await createTcpServer({
        io: options.io,
        host: options.host,
        port: options.port,
        handler,
        ...(options.rpcLimits ? { limits: options.rpcLimits } : {}),
      });
      return new StorageDaemon(store, server, options.drainTimeoutMs ?? 10_000);
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  get port(): number {
    return this.server.port;
  }

  /** Drains requests in flight, then closes the store. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.server.close({ drainTimeoutMs: this.drainTimeoutMs });
      await this.store.close();
    })();
    return this.closing;
  }
}
