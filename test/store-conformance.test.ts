/**
 * Runs the store conformance suite against each StoreApi implementation: the
 * in-process ObjectStore, a daemon's store through the in-process rpc
 * transport, and a real daemon process over loopback TCP.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { ObjectStore, type StoreApi } from '../src/store/index.js';
import { StoreClient } from '../src/protocol/store-client.js';
import { createInProcessTransport, createTcpClient } from '../src/rpc/index.js';
import { storeHandler } from '../src/daemon/store-service.js';
import { makeTempDir } from './helpers/tmp.js';
import { storeConformance } from './helpers/store-conformance.js';
import { killAllDaemons, startDaemonProcess, type DaemonProcess } from './helpers/daemon-process.js';

const io = systemIo();

describe('ObjectStore (in process)', () => {
  let dir: Awaited<ReturnType<typeof makeTempDir>>;
  let store: ObjectStore;
  beforeAll(async () => {
    dir = await makeTempDir('conf-local');
    store = await ObjectStore.open({ io, path: dir.path, create: { clusterId: 'c', diskId: 0 } });
  });
  afterAll(async () => {
    await store?.close();
    await dir?.remove();
  });
  storeConformance(() => store);
});

describe('daemon store over the in-process transport', () => {
  let dir: Awaited<ReturnType<typeof makeTempDir>>;
  let store: ObjectStore;
  let client: StoreClient;
  beforeAll(async () => {
    dir = await makeTempDir('conf-inproc');
    store = await ObjectStore.open({ io, path: dir.path, create: { clusterId: 'c', diskId: 0 } });
    client = new StoreClient(createInProcessTransport(storeHandler(store), { io }));
  });
  afterAll(async () => {
    await client?.close();
    await store?.close();
    await dir?.remove();
  });
  storeConformance((): StoreApi => client);
});

describe('daemon process over TCP', () => {
  let dir: Awaited<ReturnType<typeof makeTempDir>>;
  let daemon: DaemonProcess;
  let client: StoreClient;
  beforeAll(async () => {
    dir = await makeTempDir('conf-tcp');
    daemon = await startDaemonProcess({ diskPath: dir.path, clusterId: 'c', diskId: 0 });
    client = new StoreClient(createTcpClient({ io, host: '127.0.0.1', port: daemon.port }));
  });
  afterAll(async () => {
    await client?.close();
    await daemon?.stop();
    await killAllDaemons();
    await dir?.remove();
  });
  storeConformance((): StoreApi => client);
});
