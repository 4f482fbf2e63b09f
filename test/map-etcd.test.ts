/**
 * The etcd backends against a real one-member etcd (test/helpers/etcd.ts),
 * started once for this file and stopped by PID afterwards, also on failure.
 *
 * It proves: the map service conformance suite passes for EtcdMapStore
 * directly and for a map daemon on etcd seen through the rpc client; two
 * stores on the same key (as two map service processes would be) see each
 * other's updates and their concurrent changes all land, one epoch each;
 * the pg history in etcd is a compare-and-set per pg (exactly one of racing
 * puts wins); a watch rides out etcd being killed (kill -9) and restarted on
 * its data directory, and calls made while etcd is down fail Unavailable or
 * Timeout within their budget instead of hanging; a map of 5+ MiB goes through
 * (gRPC message bounds raised); bad endpoints are refused.
 * Each test uses its own key prefix, so tests never see each other's maps.
 *
 * Without /usr/bin/etcd every test here is skipped with a loud warning.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { EtcdClient, parseEtcdEndpoints } from '../cluster/etcd-client.js';
import { connectMapService, startMapDaemon, type MapConnection, type MapDaemon } from '../cluster/map-daemon.js';
import { addDisk, nextEpoch, setDiskState } from '../cluster/map-edit.js';
import type { MapService } from '../cluster/map-service.js';
import { EtcdMapStore } from '../cluster/map-store-etcd.js';
import type { ClusterMap } from '../cluster/map.js';
import { EtcdPgHistory } from '../cluster/pg-history-etcd.js';
import { systemIo } from '../src/io/system.js';
import { errorCodeOf, mapServiceConformance, sampleMap, waitFor, type MapServiceHarness } from './helpers/map-service-conformance.js';
import { skipWithoutEtcd, startEtcdCluster, type EtcdCluster } from './helpers/etcd.js';

const io = systemIo();
const skip = skipWithoutEtcd('etcd map service tests (test/map-etcd.test.ts)');

/** A key prefix no other test uses. */
const freshPrefix = (): string => `/tessera-test/${io.random.bytes(6).toString('hex')}`;

describe.skipIf(skip)('etcd backends on one member', () => {
  let etcd: EtcdCluster | null = null;
  const endpoints = (): string[] => etcd!.endpoints;
  beforeAll(async () => {
    etcd = await startEtcdCluster({ size: 1 });
  });
  afterAll(async () => {
    await etcd?.stop();
  });

  /** Closers run newest first; cleanup also deletes the prefix's keys. */
  function harness(open: (prefix: string, create?: ClusterMap) => Promise<{ service: MapService; close: () => Promise<void> }>): MapServiceHarness {
    const prefix = freshPrefix();
    const closeList: Array<() => Promise<void>> = [];
    const closeAll = async (): Promise<void> => {
      while (closeList.length > 0) await closeList.pop()!();
    };
    const make = async (create?: ClusterMap): Promise<MapService> => {
      const { service, close } = await open(prefix, create);
      closeList.push(close);
      return service;
    };
    return {
      create: (initial) => make(initial),
      async reopen() {
        await closeAll();
        return make();
      },
      openSecondOwner: () => make(),
      async cleanup() {
        try {
          await closeAll();
        } finally {
          await deletePrefix(prefix);
        }
      },
    };
  }

  async function deletePrefix(prefix: string): Promise<void> {
    const client = new EtcdClient({ io, endpoints: endpoints() });
    try {
      await client.run('test cleanup', undefined, (call) => client.etcd.delete().prefix(`${prefix}/`).options(call).exec());
    } finally {
      await client.close();
    }
  }

  const openStore = async (prefix: string, create?: ClusterMap): Promise<EtcdMapStore> =>
    EtcdMapStore.open({ io, endpoints: endpoints(), keyPrefix: prefix, clusterId: 'conformance', watchResyncMs: 500, ...(create ? { create } : {}) });

  mapServiceConformance(
    'etcd store',
    async () =>
      harness(async (prefix, create) => {
        const store = await openStore(prefix, create);
        return { service: store, close: () => store.close() };
      }),
    { singleOwner: false },
  );

  mapServiceConformance(
    'map daemon on etcd, rpc client over TCP',
    async () =>
      harness(async (prefix, create) => {
        const mapd: MapDaemon = await startMapDaemon({
          io,
          etcd: { endpoints: endpoints(), clusterId: 'conformance', keyPrefix: prefix },
          host: '127.0.0.1',
          port: 0,
          ...(create ? { create } : {}),
        });
        const conn: MapConnection = connectMapService(io, `127.0.0.1:${mapd.port}`);
        return {
          service: conn.service,
          close: async () => {
            await conn.close();
            await mapd.close();
          },
        };
      }),
    { singleOwner: false },
  );

  describe('several stores on one key', () => {
    const stores: EtcdMapStore[] = [];
    const prefix = freshPrefix();
    afterAll(async () => {
      await Promise.all(stores.map((s) => s.close()));
      await deletePrefix(prefix);
    });

    test('each sees the others\' updates; concurrent changes from all of them land, one epoch each', async () => {
      stores.push(await openStore(prefix, sampleMap('conformance')));
      stores.push(await openStore(prefix), await openStore(prefix));
      const [a, b, c] = stores as [EtcdMapStore, EtcdMapStore, EtcdMapStore];
      const seenByB: number[] = [];
      const abort = new AbortController();
      b.watch(0, (m) => seenByB.push(m.epoch), abort.signal);
      try {
        const m2 = await a.change((m) => setDiskState(m, 0, { up: false }));
        expect((await c.current()).epoch).toBe(m2.epoch);
        await waitFor(() => seenByB.at(-1) === 2, 'store b to see epoch 2');
        // A stale compare-and-set from c (it last read epoch 2) after b moved on fails Conflict.
        await b.change((m) => setDiskState(m, 1, { up: false }));
        expect(await errorCodeOf(c.update(2, nextEpoch(m2, (m) => setDiskState(m, 2, { up: false }))))).toBe('Conflict');
        const ids = Array.from({ length: 30 }, (_, i) => 200 + i);
        const results = await Promise.all(
          ids.map((id, i) => stores[i % 3]!.change((m) => addDisk(m, { id, host: `host${id % 3}`, weight: 1, address: `127.0.0.1:${9000 + id}` }))),
        );
        expect(results.map((m) => m.epoch).sort((x, y) => x - y)).toEqual(Array.from({ length: 30 }, (_, i) => i + 4));
        const final = await a.current();
        expect(final.epoch).toBe(33);
        for (const id of ids) expect(final.disks.filter((d) => d.id === id)).toHaveLength(1);
        await waitFor(() => seenByB.at(-1) === 33, 'store b to see epoch 33');
        expect([...seenByB].sort((x, y) => x - y)).toEqual(seenByB);
        expect(new Set(seenByB).size).toBe(seenByB.length);
      } finally {
        abort.abort();
      }
    });

    test('opening without a map is NotFound; a second create keeps the stored map', async () => {
      const other = freshPrefix();
      expect(await errorCodeOf(EtcdMapStore.open({ io, endpoints: endpoints(), keyPrefix: other, clusterId: 'nobody' }))).toBe('NotFound');
      const first = await openStore(other, sampleMap('conformance'));
      stores.push(first);
      await first.change((m) => setDiskState(m, 3, { up: false }));
      const second = await openStore(other, { ...sampleMap('conformance'), pools: [] });
      stores.push(second);
      expect((await second.current()).epoch).toBe(2);
      expect((await second.current()).pools).toHaveLength(1);
      await deletePrefix(other);
    });
  });

  describe('pg history', () => {
    let client: EtcdClient | null = null;
    afterAll(async () => {
      await client?.close();
    });

    test('get/put is a compare-and-set on the stored epoch, per pg', async () => {
      client = new EtcdClient({ io, endpoints: endpoints() });
      const prefix = freshPrefix();
      const history = new EtcdPgHistory({ client, clusterId: 'c1', keyPrefix: prefix });
      try {
        expect(await history.get(1, 7)).toBeNull();
        expect(await errorCodeOf(history.put(1, 7, 3, { epoch: 4, acting: [0, 1] }))).toBe('Conflict');
        await history.put(1, 7, null, { epoch: 4, acting: [0, 1, 2] });
        expect(await history.get(1, 7)).toEqual({ epoch: 4, acting: [0, 1, 2] });
        expect(await history.get(1, 8)).toBeNull();
        expect(await errorCodeOf(history.put(1, 7, null, { epoch: 5, acting: [0] }))).toBe('Conflict');
        expect(await errorCodeOf(history.put(1, 7, 3, { epoch: 5, acting: [0] }))).toBe('Conflict');
        expect(await errorCodeOf(history.put(1, 7, 4, { epoch: 4, acting: [0] }))).toBe('InvalidArgument');
        expect(await errorCodeOf(history.put(1, 7, 4, { epoch: 5, acting: [-2] }))).toBe('InvalidArgument');
        expect(await errorCodeOf(history.put(-1, 7, null, { epoch: 5, acting: [] }))).toBe('InvalidArgument');
        await history.put(1, 7, 4, { epoch: 6, acting: [3, -1, 2] });
        expect(await history.get(1, 7)).toEqual({ epoch: 6, acting: [3, -1, 2] });
        // Intervals that never had their write quorum say so (peering.ts intervalRecord).
        await history.put(1, 9, null, { epoch: 2, acting: [1], neverWritable: true });
        expect(await history.get(1, 9)).toEqual({ epoch: 2, acting: [1], neverWritable: true });
        // Racing primaries: each read epoch 6 and tries to record its own interval; exactly one wins.
        const racers = await Promise.all(
          Array.from({ length: 8 }, (_, i) => errorCodeOf(history.put(1, 7, 6, { epoch: 7 + i, acting: [i] }))),
        );
        expect(racers.filter((c) => c === 'none')).toHaveLength(1);
        expect(racers.filter((c) => c === 'Conflict')).toHaveLength(7);
        const winner = racers.indexOf('none');
        expect(await history.get(1, 7)).toEqual({ epoch: 7 + winner, acting: [winner] });
        await history.close();
        expect(await errorCodeOf(history.get(1, 7))).toBe('Closed');
      } finally {
        await history.close();
        await deletePrefix(prefix);
      }
    });
  });

  test('a map of 5+ MiB (beyond gRPC\'s default 4 MiB and etcd\'s default 1.5 MiB) is stored, read and watched', async () => {
    const small = sampleMap('big');
    const disks = Array.from({ length: 60_000 }, (_, i) => ({ id: i, host: `host${i % 3}`, weight: 1, address: `storage-node-${i}.example:${1 + (i % 65_535)}`, up: true, in: true }));
    const big: ClusterMap = { ...small, disks };
    const prefix = freshPrefix();
    const store = await openStore(prefix, { ...big, clusterId: 'conformance' });
    const abort = new AbortController();
    try {
      const seen: ClusterMap[] = [];
      store.watch(1, (m) => seen.push(m), abort.signal);
      const current = await store.current();
      expect(Buffer.byteLength(JSON.stringify(current))).toBeGreaterThan(5 * 1024 * 1024);
      expect(current.disks).toHaveLength(60_000);
      const m2 = await store.change((m) => setDiskState(m, 59_999, { up: false }));
      expect(m2.epoch).toBe(2);
      await waitFor(() => seen.length > 0, 'the big map to be watched', 20_000);
      expect(seen[0]!.disks[59_999]!.up).toBe(false);
    } finally {
      abort.abort();
      await store.close();
      await deletePrefix(prefix);
    }
  });

  test('bad endpoints and key prefixes are refused', async () => {
    expect(parseEtcdEndpoints(['127.0.0.1:2379', 'https://h:1'])).toEqual(['http://127.0.0.1:2379', 'https://h:1']);
    for (const bad of [[], ['ftp://h:1'], ['http://h'], ['http://h:1/path'], ['not a url']]) expect(() => parseEtcdEndpoints(bad)).toThrow(/etcd/);
    expect(await errorCodeOf(EtcdMapStore.open({ io, endpoints: endpoints(), keyPrefix: 'no-slash', create: sampleMap() }))).toBe('InvalidArgument');
    expect(await errorCodeOf(EtcdMapStore.open({ io, endpoints: endpoints(), clusterId: 'bad/id' }))).toBe('InvalidArgument');
  });
});

describe.skipIf(skip)('etcd killed and restarted', () => {
  let etcd: EtcdCluster | null = null;
  let store: EtcdMapStore | null = null;
  afterAll(async () => {
    await store?.close();
    await etcd?.stop();
  });

  test('a watch rides out kill -9 and restart of etcd; calls while it is down fail within their budget', async () => {
    etcd = await startEtcdCluster({ size: 1 });
    store = await EtcdMapStore.open({ io, endpoints: etcd.endpoints, create: sampleMap('restart'), callTimeoutMs: 2_000, watchResyncMs: 300 });
    const seen: number[] = [];
    const errors: string[] = [];
    const abort = new AbortController();
    store.watch(0, (m) => seen.push(m.epoch), abort.signal, { onError: (err) => errors.push(err.code) });
    try {
      await store.change((m) => setDiskState(m, 0, { up: false }));
      await waitFor(() => seen.at(-1) === 2, 'epoch 2');
      await etcd.members[0]!.kill();
      const started = Date.now();
      const down = await errorCodeOf(store.change((m) => setDiskState(m, 1, { up: false })));
      expect(['Unavailable', 'Timeout']).toContain(down);
      expect(Date.now() - started).toBeLessThan(10_000);
      await waitFor(() => errors.length > 0, 'the watch to report the lost stream', 10_000);
      await etcd.members[0]!.restart();
      // A read first: the client's channel may still be in its reconnect backoff for a moment (a call then
      // fails in its budget, 'waiting for name resolution'); a read retried is harmless, a change is not.
      const readDeadline = Date.now() + 20_000;
      for (;;) {
        const code = await errorCodeOf(store.current());
        if (code === 'none') break;
        expect(['Unavailable', 'Timeout']).toContain(code);
        if (Date.now() > readDeadline) throw new Error(`etcd still not answering 20 s after its restart: ${code}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const m3 = await store.change((m) => setDiskState(m, 2, { up: false }));
      expect(m3.epoch).toBe(3);
      await waitFor(() => seen.at(-1) === 3, 'epoch 3 after the restart', 20_000);
      expect(seen).toEqual([1, 2, 3]);
    } finally {
      abort.abort();
    }
  });
});
