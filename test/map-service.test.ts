/**
 * Runs the map service conformance suite against every backend this issue
 * ships: the embedded store on a temporary directory, and the rpc client
 * (cluster/map-client.ts) talking to a map server (cluster/map-server.ts)
 * over the in-process transport and over real loopback TCP. Each harness
 * closes everything it opened and removes its directory, also on failure.
 */
import { MapClient } from '../cluster/map-client.js';
import { MapServer } from '../cluster/map-server.js';
import type { MapService } from '../cluster/map-service.js';
import { EmbeddedMapStore } from '../cluster/map-store-embedded.js';
import type { ClusterMap } from '../cluster/map.js';
import { systemIo } from '../src/io/system.js';
import { createInProcessTransport, createTcpClient, createTcpServer } from '../src/rpc/index.js';
import type { RpcClient, RpcHandler, RpcServer } from '../src/rpc/types.js';
import { mapServiceConformance, type MapServiceHarness } from './helpers/map-service-conformance.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();

/** Closers run newest first; each runs once. */
class Closers {
  private readonly list: Array<() => Promise<unknown>> = [];
  add(close: () => Promise<unknown>): void {
    this.list.push(close);
  }
  async runAll(): Promise<void> {
    const errors: unknown[] = [];
    while (this.list.length > 0) await this.list.pop()!().catch((err: unknown) => errors.push(err));
    if (errors.length > 0) throw errors[0];
  }
}

/** Common part: a temp dir with an embedded store; `front` puts a service in front of the store. */
async function storeHarness(front: (store: EmbeddedMapStore, closers: Closers) => Promise<MapService>): Promise<MapServiceHarness> {
  const dir = await makeTempDir('map');
  let closers = new Closers();
  const openStore = async (create?: ClusterMap): Promise<MapService> => {
    const store = await EmbeddedMapStore.open({ io, path: dir.path, ...(create ? { create } : {}) });
    closers.add(() => store.close());
    return front(store, closers);
  };
  return {
    create: (initial) => openStore(initial),
    async reopen() {
      await closers.runAll();
      closers = new Closers();
      return openStore();
    },
    openSecondOwner: () => EmbeddedMapStore.open({ io, path: dir.path }),
    async cleanup() {
      try {
        await closers.runAll();
      } finally {
        await dir.remove();
      }
    },
  };
}

async function rpcFront(store: EmbeddedMapStore, closers: Closers, connect: (handler: RpcHandler) => Promise<RpcClient>): Promise<MapService> {
  const server = new MapServer({ io, service: store });
  let rpc: RpcClient;
  try {
    rpc = await connect(server.handler);
  } finally {
    // Runs before the transport's server closes, so waiting polls are answered, not drained.
    closers.add(() => server.close());
  }
  closers.add(() => rpc.close());
  const client = new MapClient({ io, rpc, watchWaitMs: 1_000, callTimeoutMs: 5_000 });
  closers.add(() => client.close());
  return client;
}

async function tcpConnect(handler: RpcHandler, closers: Closers): Promise<RpcClient> {
  const server: RpcServer = await createTcpServer({ io, host: '127.0.0.1', port: 0, handler });
  closers.add(() => server.close({ drainTimeoutMs: 2_000 }));
  return createTcpClient({ io, host: '127.0.0.1', port: server.port });
}

mapServiceConformance('embedded', () => storeHarness(async (store) => store), { singleOwner: true });
mapServiceConformance(
  'rpc client, in-process transport',
  () => storeHarness((store, closers) => rpcFront(store, closers, async (handler) => createInProcessTransport(handler, { io }))),
  { singleOwner: true },
);
mapServiceConformance(
  'rpc client, TCP',
  () => storeHarness((store, closers) => rpcFront(store, closers, (handler) => tcpConnect(handler, closers))),
  { singleOwner: true },
);
