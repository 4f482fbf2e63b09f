/**
 * What the map service's rpc face adds to the MapService contract (the
 * shared suite runs in map-service.test.ts): the server validates what
 * arrives (an invalid map is InvalidArgument, a malformed header
 * ProtocolError, an unknown op NotSupported) and changes nothing then; watch
 * long-polls end after their wait, wake at once on a new epoch, are bounded
 * in number and answered on close; the client's watch rides out failures
 * with backoff (telling onError) and stops on abort; a resent update that
 * already landed reports success. Each test closes what it opened.
 */
import { afterEach, expect, test } from 'vitest';
import { MapClient } from '../cluster/map-client.js';
import { encodeMap } from '../cluster/map-codec.js';
import { nextEpoch, setDiskState } from '../cluster/map-edit.js';
import { MapOpcode, encodeEpoch, encodeWatchRequest } from '../cluster/map-protocol.js';
import { MapServer } from '../cluster/map-server.js';
import { EmbeddedMapStore } from '../cluster/map-store-embedded.js';
import type { ClusterMap } from '../cluster/map.js';
import { systemIo } from '../src/io/system.js';
import { TesseraError } from '../src/lib/errors.js';
import { Writer } from '../src/lib/codec.js';
import { limits } from '../src/lib/limits.js';
import { createInProcessTransport } from '../src/rpc/index.js';
import type { RpcClient, RpcHandler } from '../src/rpc/types.js';
import { errorCodeOf, sampleMap, waitFor } from './helpers/map-service-conformance.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

interface Setup {
  store: EmbeddedMapStore;
  server: MapServer;
  rpc: RpcClient;
  /** Calls of the handler, counted. */
  calls: () => number;
}

/** Store + server + in-process transport; `wrap` may put a faulty layer in front of the handler. */
async function setup(options: { watchWaitersMax?: number; wrap?: (h: RpcHandler) => RpcHandler } = {}): Promise<Setup> {
  const dir = await makeTempDir('maprpc');
  cleanups.push(() => dir.remove());
  const store = await EmbeddedMapStore.open({ io, path: dir.path, create: sampleMap() });
  cleanups.push(() => store.close());
  const server = new MapServer({ io, service: store, ...(options.watchWaitersMax ? { watchWaitersMax: options.watchWaitersMax } : {}) });
  cleanups.push(() => server.close());
  let count = 0;
  const inner = options.wrap ? options.wrap(server.handler) : server.handler;
  const rpc = createInProcessTransport((request) => {
    count++;
    return inner(request);
  }, { io });
  cleanups.push(() => rpc.close());
  return { store, server, rpc, calls: () => count };
}

function client(rpc: RpcClient, watchWaitMs = 1_000): MapClient {
  const c = new MapClient({ io, rpc, watchWaitMs, callTimeoutMs: 5_000 });
  cleanups.push(() => c.close());
  return c;
}

async function codeOfCall(rpc: RpcClient, op: number, header: Uint8Array, payload: Uint8Array[] = []): Promise<string> {
  return errorCodeOf(rpc.call(op, header, payload, { timeoutMs: 5_000 }));
}

test('the server refuses invalid maps and malformed requests, changing nothing', async () => {
  const { store, rpc } = await setup();
  const before = await store.current();
  const bad = structuredClone(before) as ClusterMap & { epoch: number };
  bad.epoch = 2;
  bad.pools[0]!.pgCount = 100;
  expect(await codeOfCall(rpc, MapOpcode.update, encodeEpoch(1), [Buffer.from(JSON.stringify(bad))])).toBe('InvalidArgument');
  expect(await codeOfCall(rpc, MapOpcode.update, encodeEpoch(1), [Buffer.from('{"clusterId": "conformance", ')])).toBe('InvalidArgument');
  expect(await codeOfCall(rpc, MapOpcode.update, encodeEpoch(1), [])).toBe('InvalidArgument');
  const good = encodeMap(nextEpoch(before, (m) => setDiskState(m, 0, { up: false })));
  expect(await codeOfCall(rpc, MapOpcode.update, Buffer.from([0x80]), [good])).toBe('ProtocolError');
  expect(await codeOfCall(rpc, MapOpcode.update, Buffer.concat([encodeEpoch(1), Buffer.from([0])]), [good])).toBe('ProtocolError');
  const tooLong = new Writer(16).varint(1).varint(limits.mapWatchWaitMsMax + 1).finish();
  expect(await codeOfCall(rpc, MapOpcode.watch, tooLong)).toBe('ProtocolError');
  expect(await codeOfCall(rpc, 110, Buffer.alloc(0))).toBe('NotSupported');
  expect(await store.current()).toEqual(before);
  expect(await codeOfCall(rpc, MapOpcode.update, encodeEpoch(1), [good])).toBe('none');
  expect((await store.current()).epoch).toBe(2);
});

test('a watch poll answers empty after its wait, and at once when a newer epoch lands', async () => {
  const { store, rpc } = await setup();
  const started = Date.now();
  const idle = await rpc.call(MapOpcode.watch, encodeWatchRequest({ sinceEpoch: 1, waitMs: 150 }), [], { timeoutMs: 5_000 });
  expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  expect(idle.payload.length).toBe(0);
  const poll = rpc.call(MapOpcode.watch, encodeWatchRequest({ sinceEpoch: 1, waitMs: 30_000 }), [], { timeoutMs: 35_000 });
  await new Promise((resolve) => setTimeout(resolve, 20));
  const changedAt = Date.now();
  await store.change((m) => setDiskState(m, 0, { up: false }));
  const reply = await poll;
  expect(Date.now() - changedAt).toBeLessThan(5_000);
  expect((JSON.parse(reply.payload.toString()) as ClusterMap).epoch).toBe(2);
  const old = await rpc.call(MapOpcode.watch, encodeWatchRequest({ sinceEpoch: 0, waitMs: 30_000 }), [], { timeoutMs: 5_000 });
  expect((JSON.parse(old.payload.toString()) as ClusterMap).epoch).toBe(2);
});

test('waiting polls are bounded (Busy beyond), answered on close, and refused after', async () => {
  const { server, rpc } = await setup({ watchWaitersMax: 2 });
  const poll = (): Promise<unknown> => rpc.call(MapOpcode.watch, encodeWatchRequest({ sinceEpoch: 1, waitMs: 30_000 }), [], { timeoutMs: 35_000 });
  const waiting = [poll(), poll()];
  await waitFor(() => server.waitingPolls === 2, 'two waiting polls');
  expect(await errorCodeOf(poll())).toBe('Busy');
  await server.close();
  const replies = (await Promise.all(waiting)) as Array<{ payload: Buffer }>;
  expect(replies.map((r) => r.payload.length)).toEqual([0, 0]);
  expect(server.waitingPolls).toBe(0);
  expect(await errorCodeOf(poll())).toBe('Closed');
});

test('the client watch rides out failures with backoff, tells onError, and stops on abort', async () => {
  let failuresLeft = 4;
  const { store, rpc, calls } = await setup({
    wrap: (handler) => async (request) => {
      if (request.op === MapOpcode.watch && failuresLeft > 0) {
        failuresLeft--;
        throw new TesseraError('Unavailable', 'map server unreachable (test)');
      }
      return handler(request);
    },
  });
  const c = client(rpc, 200);
  const errors: string[] = [];
  const seen: number[] = [];
  const abort = new AbortController();
  c.watch(1, (m) => seen.push(m.epoch), abort.signal, { onError: (err) => errors.push(err.code) });
  await store.change((m) => setDiskState(m, 0, { up: false }));
  await waitFor(() => seen.includes(2), 'epoch 2 after the failures');
  expect(errors).toEqual(['Unavailable', 'Unavailable', 'Unavailable', 'Unavailable']);
  abort.abort();
  await new Promise((resolve) => setTimeout(resolve, 50));
  const callsAfterAbort = calls();
  await store.change((m) => setDiskState(m, 1, { up: false }));
  await new Promise((resolve) => setTimeout(resolve, 500));
  expect(calls()).toBe(callsAfterAbort);
  expect(seen).toEqual([2]);
});

test('an update resent after it already landed reports success; a real conflict stays Conflict', async () => {
  const { store, rpc } = await setup();
  const c = client(rpc);
  const m1 = await c.current();
  const m2 = nextEpoch(m1, (m) => setDiskState(m, 0, { up: false }));
  expect((await c.update(1, m2)).epoch).toBe(2);
  expect(await c.update(1, m2)).toEqual(m2);
  const other = nextEpoch(m1, (m) => setDiskState(m, 1, { up: false }));
  expect(await errorCodeOf(c.update(1, other))).toBe('Conflict');
  expect(await store.current()).toEqual(m2);
});

test('an onMap that throws ends its watch and reaches onError', async () => {
  const { store, rpc } = await setup();
  const c = client(rpc, 200);
  const errors: string[] = [];
  let calls = 0;
  c.watch(
    0,
    () => {
      calls++;
      throw new Error('subscriber bug');
    },
    new AbortController().signal,
    { onError: (err) => errors.push(err.message) },
  );
  await waitFor(() => errors.length === 1, 'the error');
  await store.change((m) => setDiskState(m, 0, { up: false }));
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(calls).toBe(1);
  expect(errors).toEqual(['subscriber bug']);
});
