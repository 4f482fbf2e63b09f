/**
 * The client's reads into memory the caller owns (ObjectReadOptions.into), on
 * a real cluster (6 daemon processes, 3 hosts x 2 disks) with a replicated
 * pool (size 3) and an erasure-coded one (4+2):
 * - one buffer reused across whole reads and ranges of objects from 0 B to
 *   5 MiB (ranges past the end, inside one stripe unit, across shards): each
 *   result is byte-exact and a view of that buffer, from its start;
 * - concurrent reads, each into its own buffer, do not cross;
 * - a buffer too small is refused InvalidArgument: before anything is sent
 *   when lengthBytes says so, once the reply's length is known otherwise;
 *   the same buffer then serves a read that fits;
 * - a reply corrupted on the way (one byte flipped as it lands in the
 *   caller's buffer, at the client's network seam over real TCP) is never
 *   presented: corrupted once, the read is retried on a new connection and
 *   returns the right bytes; corrupted every time, the read fails.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TesseraClient } from '../src/client/client.js';
import type { Io, ReadInto } from '../src/io/io.js';
import { isTesseraError } from '../src/lib/errors.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';

const KiB = 1024;
const MiB = 1024 * KiB;
let cluster: TestCluster;
const objects = new Map<string, Buffer>();
const sizes = [0, 1, 100, 4 * KiB + 1, 20_000, MiB + 3, 4 * MiB, 5 * MiB + 17];

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 2,
    pools: [
      { name: 'rep', redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 },
      { name: 'ec', redundancy: { type: 'erasure', dataShards: 4, parityShards: 2 }, failureDomain: 'disk', pgCount: 8 },
    ],
  });
  for (const pool of ['rep', 'ec']) {
    for (const [i, size] of sizes.entries()) {
      const data = randomBytes(size);
      objects.set(`${pool}/o${i}`, data);
      await cluster.client.put(pool, `o${i}`, data);
    }
  }
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

/** The result is a view of `into` from its start, holding `expected`. */
function expectViewOf(got: Buffer, into: Buffer, expected: Buffer, what: string): void {
  expect(got.buffer, what).toBe(into.buffer);
  expect(got.byteOffset, what).toBe(into.byteOffset);
  expect(got.byteLength, what).toBe(expected.byteLength);
  expect(got.equals(expected), what).toBe(true);
}

describe.each(['rep', 'ec'])('pool %s', (pool) => {
  it('one reused buffer: whole objects and ranges of every size, each a view of it', async () => {
    const { client } = cluster;
    const into = Buffer.alloc(6 * MiB, 0xaa);
    for (const [i, size] of sizes.entries()) {
      const data = objects.get(`${pool}/o${i}`)!;
      expectViewOf(await client.read(pool, `o${i}`, { into }), into, data, `o${i} whole`);
      const ranges: Array<[number, number]> = [
        [0, 1],
        [7, 4096],
        [size >> 1, MiB],
        [Math.max(0, size - 10), 4 * MiB],
        [size, 10],
        [3 * KiB, 2 * MiB + 5],
      ];
      for (const [offsetBytes, lengthBytes] of ranges) {
        const expected = data.subarray(Math.min(offsetBytes, size), Math.min(offsetBytes + lengthBytes, size));
        expectViewOf(await client.read(pool, `o${i}`, { into, offsetBytes, lengthBytes }), into, expected, `o${i} [${offsetBytes}, +${lengthBytes})`);
      }
      // The plain read (a new buffer per read) agrees.
      expect((await client.read(pool, `o${i}`)).equals(data)).toBe(true);
    }
  });

  it('concurrent reads, each into its own buffer, do not cross', async () => {
    const { client } = cluster;
    const big = sizes.map((s, i) => [s, i] as const).filter(([s]) => s >= MiB);
    const buffers = Array.from({ length: 12 }, () => Buffer.allocUnsafe(6 * MiB));
    for (let round = 0; round < 3; round++) {
      await Promise.all(
        buffers.map(async (into, k) => {
          const i = big[(k + round) % big.length]![1];
          expectViewOf(await client.read(pool, `o${i}`, { into }), into, objects.get(`${pool}/o${i}`)!, `o${i} into buffer ${k}`);
        }),
      );
    }
  });

  it('a buffer too small is refused (InvalidArgument), and the same buffer then serves a read that fits', async () => {
    const { client } = cluster;
    const into = Buffer.alloc(MiB);
    const big = sizes.indexOf(4 * MiB);
    // Known before sending: the range asks for more than the buffer holds (even of a short object).
    await expect(client.read(pool, 'o2', { into, lengthBytes: MiB + 1 })).rejects.toMatchObject({ code: 'InvalidArgument' });
    // Known from the reply: the whole object is larger than the buffer.
    await expect(client.read(pool, `o${big}`, { into })).rejects.toMatchObject({ code: 'InvalidArgument', message: expect.stringMatching(/too small/) });
    await expect(client.read(pool, `o${big}`, { into, offsetBytes: 2 * MiB })).rejects.toMatchObject({ code: 'InvalidArgument' });
    const data = objects.get(`${pool}/o${big}`)!;
    expectViewOf(await client.read(pool, `o${big}`, { into, offsetBytes: 3 * MiB }), into, data.subarray(3 * MiB), 'the last MiB');
    expectViewOf(await client.read(pool, `o${big}`, { into, offsetBytes: 5, lengthBytes: MiB }), into, data.subarray(5, 5 + MiB), 'a MiB at 5');
  });
});

/**
 * An Io whose connections flip one byte of what lands in a buffer `target`
 * returns true for (the caller's `into`), in the first `times` such reads.
 */
function corruptingIo(io: Io, target: (landed: Uint8Array) => boolean, times: number): { io: Io; flipped: () => number } {
  let flipped = 0;
  const net = {
    ...io.net,
    connect(options: Parameters<Io['net']['connect']>[0]) {
      const inner = options.readInto;
      if (inner === undefined) return io.net.connect(options);
      let last: Uint8Array | null = null;
      const readInto: ReadInto = {
        readBuffer: () => (last = inner.readBuffer()),
        onRead: (nread) => {
          if (last !== null && flipped < times && target(last) && nread > 0) {
            flipped++;
            last[nread >> 1]! ^= 0x40;
          }
          inner.onRead(nread);
        },
      };
      return io.net.connect({ ...options, readInto });
    },
  };
  return { io: { ...io, net }, flipped: () => flipped };
}

describe('a reply corrupted as it lands in the caller buffer', () => {
  it.each(['rep', 'ec'])('pool %s: corrupted once, the read is retried and returns the right bytes; every time, it fails', async (pool) => {
    const i = sizes.indexOf(4 * MiB);
    const data = objects.get(`${pool}/o${i}`)!;
    const into = Buffer.alloc(6 * MiB);
    const lands = (landed: Uint8Array): boolean => landed.buffer === into.buffer;

    const once = corruptingIo(cluster.io, lands, 1);
    const client = await TesseraClient.connect({ io: once.io, mapService: cluster.mapd.service, timeoutMs: 20_000 });
    try {
      expectViewOf(await client.read(pool, `o${i}`, { into }), into, data, 'after one corrupted reply');
      expect(once.flipped()).toBe(1);
    } finally {
      await client.close();
    }

    const always = corruptingIo(cluster.io, lands, Infinity);
    const failing = await TesseraClient.connect({ io: always.io, mapService: cluster.mapd.service, timeoutMs: 5_000, retryBackoffMsMin: 50, retryBackoffMsMax: 200 });
    try {
      const err = await failing.read(pool, `o${i}`, { into }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(isTesseraError(err, 'Unavailable'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/payload checksum mismatch/);
      expect(always.flipped()).toBeGreaterThanOrEqual(2);
    } finally {
      await failing.close();
    }
  });
});
