/**
 * The daemon's read path end to end (store -> storeHandler -> rpc over
 * loopback TCP -> StoreClient), where the frame trailer of a streamed read is
 * combined from the chunk checksums the store verified instead of computed
 * again, and piece buffers are reused once written.
 *
 * Proves: large, unaligned, holey and repeated reads return exactly the bytes
 * written (a reused buffer overwritten too early, or a wrong combined crc,
 * would show as wrong bytes or a checksum mismatch); a corrupt byte on disk in
 * a small object or in the first piece of a large one fails the read with
 * Corrupt; one in a later piece fails the call (the reply is already on the
 * wire: the connection closes, Unavailable) and no bytes are returned; other
 * objects still read. Many concurrent large reads on one connection (which
 * sends one reply at a time and reads the next ones ahead) all arrive exact,
 * and the bytes held read ahead stay within the connection's bound.
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { open as fsOpen, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Io } from '../src/io/io.js';
import { systemIo } from '../src/io/system.js';
import { ObjectStore, type ObjectId } from '../src/store/index.js';
import { storeHandler, type ReadAheadStats } from '../src/daemon/store-service.js';
import { StoreClient } from '../src/protocol/store-client.js';
import { createTcpClient, createTcpServer } from '../src/rpc/tcp.js';
import type { RpcServer } from '../src/rpc/types.js';
import { isTesseraError, type ErrorCodeName } from '../src/lib/errors.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
const MiB = 1024 * 1024;
const id = (name: string): ObjectId => ({ ns: 1, name });
let dir: Awaited<ReturnType<typeof makeTempDir>>;
let store: ObjectStore;
let server: RpcServer;
let client: StoreClient;

beforeEach(async () => {
  dir = await makeTempDir('dread');
  store = await ObjectStore.open({ io, path: dir.path, create: { clusterId: 'r', diskId: 1 }, maintenance: { enabled: false } });
  server = await createTcpServer({ io, host: '127.0.0.1', port: 0, handler: storeHandler(store) });
  client = new StoreClient(createTcpClient({ io, host: '127.0.0.1', port: server.port }), { timeoutMs: 20_000 });
});
afterEach(async () => {
  await client?.close();
  await server?.close({ drainTimeoutMs: 1000 });
  await store?.close();
  await dir?.remove();
});

async function errorCode(p: Promise<unknown>): Promise<ErrorCodeName | 'ok'> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (isTesseraError(err)) return err.code;
    throw err;
  }
}

/** Flips one byte of the only segment file at offsetBytes. */
async function flipByte(offsetBytes: number): Promise<void> {
  const files = (await readdir(join(dir.path, 'segments'))).filter((f) => f.endsWith('.seg'));
  expect(files.length).toBe(1);
  const fh = await fsOpen(join(dir.path, 'segments', files[0]!), 'r+');
  const one = Buffer.alloc(1);
  await fh.read(one, 0, 1, offsetBytes);
  one[0] = one[0]! ^ 0x40;
  await fh.write(one, 0, 1, offsetBytes);
  await fh.close();
}

/** Where a byte of an object that starts at the first data byte of the only segment is: after the log record header. */
const logRecordHeaderBytes = 32;

it('large, unaligned, holey and repeated reads return exactly the bytes written', async () => {
  const big = randomBytes(5 * MiB + 777);
  await store.transact([{ type: 'writeFull', id: id('big'), data: big }]);
  // Holes: an object written at two offsets, zeros between.
  const tail = randomBytes(300_000);
  await store.transact([
    { type: 'write', id: id('holey'), offsetBytes: 100_000, data: randomBytes(1) },
    { type: 'write', id: id('holey'), offsetBytes: 3 * MiB + 5, data: tail },
  ]);
  const holey = await store.read(id('holey'));
  // Many reads at once: piece buffers are reused across them.
  const reads = await Promise.all(Array.from({ length: 12 }, () => client.read(id('big'))));
  for (const r of reads) expect(r.equals(big)).toBe(true);
  expect((await client.read(id('holey'))).equals(holey)).toBe(true);
  for (const [offsetBytes, lengthBytes] of [[1, 2 * MiB], [65535, 3 * MiB + 2], [4 * MiB - 3, undefined], [12345, 100]] as const) {
    const got = await client.read(id('big'), { offsetBytes, lengthBytes });
    expect(got.equals(big.subarray(offsetBytes, lengthBytes === undefined ? undefined : offsetBytes + lengthBytes))).toBe(true);
  }
  expect((await client.read(id('holey'), { offsetBytes: 99_999 })).equals(holey.subarray(99_999))).toBe(true);
});

it('a corrupt byte on disk in a small object fails its read with Corrupt', async () => {
  const small = randomBytes(MiB);
  await store.transact([{ type: 'writeFull', id: id('small'), data: small }]);
  await flipByte(logRecordHeaderBytes + 5000);
  expect(await errorCode(client.read(id('small')))).toBe('Corrupt');
});

it('a corrupt byte in a large object: Corrupt in the first piece, a failed call in a later one, never bad bytes', async () => {
  const big = randomBytes(4 * MiB);
  await store.transact([{ type: 'writeFull', id: id('big'), data: big }]);
  const other = randomBytes(2 * MiB);
  await store.transact([{ type: 'writeFull', id: id('other'), data: other }]);
  await flipByte(logRecordHeaderBytes + 3 * MiB + 10);
  const late = await errorCode(client.read(id('big')));
  expect(late === 'Corrupt' || late === 'Unavailable', late).toBe(true);
  await flipByte(logRecordHeaderBytes + 3 * MiB + 10);
  expect((await client.read(id('big'))).equals(big)).toBe(true);
  await flipByte(logRecordHeaderBytes + 70_000);
  expect(await errorCode(client.read(id('big')))).toBe('Corrupt');
  expect((await client.read(id('other'))).equals(other)).toBe(true);
});

it('concurrent reads of every size class stay exact while the client stalls its sockets and loses connections', async () => {
  // The fault suite once saw a reader lose frame sync ('bad frame: magic 0x0') after its daemon was paused:
  // this drives the pooled read path (in-memory replies of pool buffers, streamed pieces released on write)
  // through long stalls (the server's writes back up, streams wait for 'drain') and dropped connections.
  const sizes = [0, 100, 4000, 300_000, MiB / 2 - 1, MiB / 2, 700_000, MiB, MiB + 1, MiB + 40_000, 2 * MiB + 12_345];
  const objects = sizes.map((sizeBytes, i) => ({ id: id(`s${i}`), data: randomBytes(sizeBytes) }));
  for (const o of objects) await store.transact([{ type: 'writeFull', id: o.id, data: o.data }]);
  const sockets = new Set<Duplex>();
  const stalling: Io = {
    ...io,
    net: {
      ...io.net,
      connect: async (options) => {
        const socket = await io.net.connect(options);
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
        return socket;
      },
    },
  };
  const clients = [0, 1].map(() => new StoreClient(createTcpClient({ io: stalling, host: '127.0.0.1', port: server.port }), { timeoutMs: 20_000 }));
  const failures: string[] = [];
  let reads = 0;
  let seed = 7;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const endMs = Date.now() + 3_000;
  const worker = async (w: number): Promise<void> => {
    const c = clients[w % clients.length]!;
    while (Date.now() < endMs) {
      const o = objects[random(objects.length)]!;
      const kind = random(10);
      try {
        if (kind < 2) {
          expect((await c.stat(o.id)).sizeBytes).toBe(o.data.length);
          continue;
        }
        const offsetBytes = kind < 6 ? 0 : random(o.data.length + 1);
        const lengthBytes = kind < 6 ? undefined : random(o.data.length - offsetBytes + 1);
        const got = await c.read(o.id, lengthBytes === undefined ? {} : { offsetBytes, lengthBytes });
        if (!got.equals(o.data.subarray(offsetBytes, lengthBytes === undefined ? undefined : offsetBytes + lengthBytes))) failures.push(`wrong bytes: ${o.id.name} @${offsetBytes}+${lengthBytes}`);
        reads++;
      } catch (err) {
        failures.push(String((err as Error).message));
      }
    }
  };
  const chaos = async (): Promise<void> => {
    for (let round = 0; Date.now() < endMs; round++) {
      await sleep(20 + random(200));
      const now = [...sockets];
      if (round % 7 === 6) {
        // A lost connection: idempotent reads are sent again on the next one.
        now[random(now.length)]?.destroy();
        continue;
      }
      for (const s of now) s.pause();
      await sleep(50 + random(400));
      for (const s of now) s.resume();
    }
  };
  try {
    await Promise.all([chaos(), ...Array.from({ length: 16 }, (_, w) => worker(w))]);
  } finally {
    for (const c of clients) await c.close();
  }
  expect(failures).toEqual([]);
  expect(reads).toBeGreaterThan(50);
}, 30_000);

it('many concurrent large reads on one connection arrive exact, with read-ahead within its bound', async () => {
  const readAheadBytesMax = 3 * MiB;
  const stats: ReadAheadStats = { peakBytes: 0, piecesReadAhead: 0 };
  const bounded = await createTcpServer({ io, host: '127.0.0.1', port: 0, handler: storeHandler(store, { readAheadBytesMax, readAheadStats: stats }) });
  // One TcpClient: one connection, so every reply below queues on the same socket.
  const one = new StoreClient(createTcpClient({ io, host: '127.0.0.1', port: bounded.port }), { timeoutMs: 20_000 });
  try {
    const objects = [MiB + 1, 2 * MiB, 3 * MiB + 5, 4 * MiB, 5 * MiB + 4097].map((sizeBytes, i) => ({ id: id(`c${i}`), data: randomBytes(sizeBytes) }));
    for (const o of objects) await store.transact([{ type: 'writeFull', id: o.id, data: o.data }]);
    const reads = Array.from({ length: 48 }, (_, i) => {
      const o = objects[i % objects.length]!;
      const offsetBytes = i % 3 === 0 ? 0 : (i * 7919) % (o.data.length - MiB);
      const lengthBytes = i % 3 === 0 ? undefined : MiB + 1 + ((i * 104_729) % (o.data.length - offsetBytes - MiB));
      const want = o.data.subarray(offsetBytes, lengthBytes === undefined ? undefined : offsetBytes + lengthBytes);
      return { want, got: one.read(o.id, lengthBytes === undefined ? {} : { offsetBytes, lengthBytes }) };
    });
    const wrong = [];
    for (const [i, r] of reads.entries()) if (!(await r.got).equals(r.want)) wrong.push(i);
    expect(wrong).toEqual([]);
    // Pieces were read ahead (a stream read more than the piece asked for)...
    expect(stats.piecesReadAhead).toBeGreaterThan(0);
    // ...and never more than the bound, plus the piece a stream being sent is writing and the one it reads next
    // (48 first pieces read at once, as before, would hold 48 MiB).
    expect(stats.peakBytes).toBeGreaterThan(0);
    expect(stats.peakBytes).toBeLessThanOrEqual(readAheadBytesMax + 2 * MiB);
    // The connection holds nothing once every reply is written: a later read still starts, and is exact.
    expect((await one.read(objects[4]!.id)).equals(objects[4]!.data)).toBe(true);
  } finally {
    await one.close();
    await bounded.close({ drainTimeoutMs: 1000 });
  }
});
