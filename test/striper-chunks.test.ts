/**
 * The striper's chunksAt: getAt's bytes as chunks that lend reused buffers
 * (striper-buffers.ts), on a real cluster (6 daemon processes, 3 hosts, a
 * replicated pool). It proves:
 * - whole objects and ranges (striped across pieces, the short last piece,
 *   inline with its trailer) read back byte-exact, each piece or inline read
 *   of at least half a buffer landing in a pooled buffer (its ArrayBuffer is
 *   the pool's size), a smaller one in a buffer of its own;
 * - a chunk released reusable gives its buffer to the next read (the same
 *   ArrayBuffer comes back); one released not reusable never does; a second
 *   release does nothing;
 * - the budget holds every chunk until it is released (beyond the read-ahead),
 *   and an abandoned iteration gives back its read-ahead: reserved bytes
 *   return to zero;
 * - a replaced generation is Conflict, a lost piece Corrupt, as getAt, and
 *   the failed reads' buffers go back to the pool.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Striper, type StripedChunk } from '../src/client/striper.js';
import { GENERATION_CHARS } from '../src/client/striper-layout.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';

const REP = 'rep';
const MiB = 1024 * 1024;
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 2,
    pools: [{ name: REP, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 16 }],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

async function drain(chunks: AsyncGenerator<StripedChunk>, reusable = true): Promise<{ data: Buffer; buffers: ArrayBufferLike[] }> {
  const parts: Buffer[] = [];
  const buffers: ArrayBufferLike[] = [];
  for await (const chunk of chunks) {
    parts.push(Buffer.from(chunk.data)); // a copy: the chunk's buffer may be reused once released
    buffers.push(chunk.data.buffer);
    chunk.release(reusable);
    chunk.release(!reusable); // a second release does nothing
  }
  return { data: Buffer.concat(parts), buffers };
}

it('reads whole objects and ranges byte-exact into reused buffers, given back only when released reusable', async () => {
  const striper = new Striper(cluster.client, { pieceBytes: MiB, concurrency: 2 });
  const bufferBytes = MiB + GENERATION_CHARS;
  const big = randomBytes(3 * MiB + 100);
  const bigRef = await striper.put(REP, 'big', big);
  expect(bigRef.pieceBytes).toBe(MiB);
  const inline = randomBytes(MiB - 1000);
  const inlineRef = await striper.put(REP, 'inline', inline);
  expect(inlineRef.pieceBytes).toBe(0);

  const whole = await drain(striper.chunksAt(REP, 'big', bigRef));
  expect(whole.data.equals(big)).toBe(true);
  // Three whole pieces in pooled buffers; the last piece (100 bytes) is under half a buffer: its own.
  expect(whole.buffers.slice(0, 3).every((b) => b.byteLength === bufferBytes)).toBe(true);
  expect(whole.buffers[3]!.byteLength).not.toBe(bufferBytes);
  const pooled = new Set(whole.buffers.slice(0, 3));
  expect(striper.readBuffers().freeCount).toBeGreaterThanOrEqual(2);

  // The next reads take the buffers given back.
  const again = await drain(striper.chunksAt(REP, 'inline', inlineRef));
  expect(again.data.equals(inline)).toBe(true);
  expect(pooled.has(again.buffers[0]!)).toBe(true);
  for (const [offsetBytes, lengthBytes] of [[MiB - 10, MiB + 20], [3 * MiB, 100], [10, 2 * MiB]] as const) {
    const got = await drain(striper.chunksAt(REP, 'big', bigRef, { offsetBytes, lengthBytes }));
    expect(got.data.equals(big.subarray(offsetBytes, offsetBytes + lengthBytes)), `${offsetBytes}+${lengthBytes}`).toBe(true);
  }
  const part = await drain(striper.chunksAt(REP, 'inline', inlineRef, { offsetBytes: 1000, lengthBytes: 600_000 }));
  expect(part.data.equals(inline.subarray(1000, 601_000))).toBe(true);

  // Released not reusable: the buffers never come back.
  const kept = await drain(striper.chunksAt(REP, 'big', bigRef), false);
  const after = await drain(striper.chunksAt(REP, 'big', bigRef));
  expect(after.data.equals(big)).toBe(true);
  const keptPooled = kept.buffers.filter((b) => b.byteLength === bufferBytes);
  expect(keptPooled.length).toBe(3);
  for (const b of after.buffers) expect(keptPooled.includes(b)).toBe(false);
  expect(striper.memory().reservedBytes).toBe(0);
}, 120_000);

it('holds each chunk in the budget until released; an abandoned iteration gives back its read-ahead', async () => {
  const striper = new Striper(cluster.client, { pieceBytes: MiB, concurrency: 2 });
  const data = randomBytes(6 * MiB);
  const ref = await striper.put(REP, 'held', data);
  const chunks = striper.chunksAt(REP, 'held', ref);
  const first = (await chunks.next()).value as StripedChunk;
  const second = (await chunks.next()).value as StripedChunk;
  // Both taken and not released: still reserved, beside what is read ahead.
  expect(striper.memory().reservedBytes).toBeGreaterThanOrEqual(2 * MiB);
  expect(Buffer.concat([first.data, second.data]).equals(data.subarray(0, 2 * MiB))).toBe(true);
  await chunks.return(undefined);
  // The read-ahead goes back once its reads settle; the two taken stay the caller's until released.
  for (let i = 0; i < 100 && striper.memory().reservedBytes > 2 * MiB; i++) await new Promise((r) => setTimeout(r, 50));
  expect(striper.memory().reservedBytes).toBe(2 * MiB);
  first.release(true);
  second.release(false);
  expect(striper.memory().reservedBytes).toBe(0);
}, 120_000);

it('a replaced generation is Conflict, a lost piece Corrupt; the failed reads give their buffers back', async () => {
  const striper = new Striper(cluster.client, { pieceBytes: MiB, concurrency: 2 });
  const v1 = randomBytes(2 * MiB);
  const ref1 = await striper.put(REP, 'moving', v1);
  const inline1 = await striper.put(REP, 'moving-inline', randomBytes(MiB - 5));
  await striper.put(REP, 'moving-inline', randomBytes(MiB - 5));
  await expect(drain(striper.chunksAt(REP, 'moving-inline', inline1))).rejects.toMatchObject({ code: 'Conflict' });
  const ref2 = await striper.put(REP, 'moving', randomBytes(2 * MiB));
  await expect(drain(striper.chunksAt(REP, 'moving', ref1))).rejects.toMatchObject({ code: 'Conflict' });
  await cluster.client.remove(REP, `moving\0${ref2.generation}\0${1}`);
  await expect(drain(striper.chunksAt(REP, 'moving', ref2))).rejects.toMatchObject({ code: 'Corrupt' });
  for (let i = 0; i < 100 && striper.memory().reservedBytes > 0; i++) await new Promise((r) => setTimeout(r, 50));
  expect(striper.memory().reservedBytes).toBe(0);
  const { freeCount, allocatedCount } = striper.readBuffers();
  // Every buffer taken came back (none is lent: each chunk was released reusable or its read failed).
  expect(freeCount).toBe(allocatedCount);
}, 120_000);
