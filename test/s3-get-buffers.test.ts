/**
 * GetObject's reused read buffers (the striper's chunksAt, gateways/s3/chunk-body.ts):
 * a buffer goes back to the pool only once the socket has written its bytes,
 * so it is never filled by another read while they may still be sent.
 * Through the AWS SDK against a gateway on a real cluster (rep pool, 4 MiB
 * pieces): objects of 4 MiB (inline in their manifest: one pooled read of
 * the object and its trailer) and 9 MiB + 5 (three pieces, the last short).
 * - Rounds of GETs of different objects: half of them left unread (the
 *   gateway's socket writes stay pending, their buffers lent) while GETs of
 *   the other half run to the end three times over and recycle buffers:
 *   every body is byte-exact, ranges across pieces too, and the pool did
 *   reuse buffers.
 * - GETs abandoned mid-body (the client destroys the response after a few
 *   hundred KiB) beside complete ones: the complete ones are byte-exact, and
 *   the striper's budget returns to zero (no chunk left reserved).
 * Checked by hand: releasing each chunk as reusable right after res.write
 * (before its write callback) makes both tests fail (bodies differ).
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { bytes, startS3Env, type S3TestEnv } from './helpers/s3.js';
import { sleep, waitFor } from './helpers/wait.js';

const MiB = 1024 * 1024;
let env: S3TestEnv;
let s3: S3Client;
const objects = new Map<string, Buffer>();

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
  await s3.send(new CreateBucketCommand({ Bucket: 'buf' }));
  for (let i = 0; i < 8; i++) {
    const data = randomBytes(i % 2 === 0 ? 4 * MiB : 9 * MiB + 5);
    objects.set(`o${i}`, data);
    await s3.send(new PutObjectCommand({ Bucket: 'buf', Key: `o${i}`, Body: data }));
  }
}, 240_000);
afterAll(async () => {
  await env?.stop();
});

async function get(key: string, range?: { start: number; end: number }): Promise<Readable> {
  const res = await s3.send(new GetObjectCommand({ Bucket: 'buf', Key: key, ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }));
  return res.Body as Readable;
}

it('concurrent GETs of different objects read back byte-exact while buffers are recycled', async () => {
  const before = env.gateway.services.striper.readBuffers().reusedCount;
  const keys = [...objects.keys()];
  for (let round = 0; round < 4; round++) {
    // Half the objects are left unread for a while: the gateway's socket writes of them stay pending, their buffers
    // lent, while GETs of the other half run to the end (three times over) and recycle buffers.
    const slowKeys = keys.filter((_, i) => (i + round) % 2 === 1);
    const fastKeys = keys.filter((_, i) => (i + round) % 2 === 0);
    const slow = await Promise.all(slowKeys.map((key) => get(key)));
    for (let pass = 0; pass < 3; pass++) {
      await Promise.all(
        fastKeys.map(async (key) => {
          const got = await bytes(await get(key));
          expect(got.equals(objects.get(key)!), `${key} round ${round}`).toBe(true);
        }),
      );
    }
    for (const [i, body] of slow.entries()) {
      const key = slowKeys[i]!;
      const got = await bytes(body);
      expect(got.length, key).toBe(objects.get(key)!.length);
      expect(got.equals(objects.get(key)!), `${key} (left unread) round ${round}`).toBe(true);
    }
  }
  // Ranges: inside a piece, across pieces, the short last piece, inside an inline object.
  const ranges = [
    { key: 'o1', start: 100, end: 200_000 },
    { key: 'o1', start: 4 * MiB - 10, end: 8 * MiB + 10 },
    { key: 'o3', start: 8 * MiB + 1, end: 9 * MiB + 4 },
    { key: 'o0', start: 3 * MiB, end: 4 * MiB - 1 },
  ];
  await Promise.all(
    ranges.map(async ({ key, start, end }) => {
      const got = await bytes(await get(key, { start, end }));
      expect(got.equals(objects.get(key)!.subarray(start, end + 1)), `${key} ${start}-${end}`).toBe(true);
    }),
  );
  expect(env.gateway.services.striper.readBuffers().reusedCount).toBeGreaterThan(before);
  await waitFor('the striper budget back to zero', 10_000, () => (env.gateway.services.striper.memory().reservedBytes === 0 ? true : undefined));
}, 240_000);

it('GETs abandoned mid-body do not corrupt other responses, and give their memory back', async () => {
  const keys = [...objects.keys()];
  for (let round = 0; round < 3; round++) {
    await Promise.all(
      keys.map(async (key, i) => {
        const body = await get(key);
        if ((i + round) % 2 === 0) {
          let seen = 0;
          for await (const chunk of body) {
            seen += (chunk as Buffer).length;
            if (seen >= 256 * 1024) break; // destroys the response: the connection closes mid-body
          }
          return;
        }
        await sleep(100);
        const got = await bytes(body);
        expect(got.equals(objects.get(key)!), `${key} round ${round}`).toBe(true);
      }),
    );
  }
  // Whatever the abandoned responses held (in flight, read ahead) is released once their connections close.
  await waitFor(
    () => `the striper budget back to zero (${env.gateway.services.striper.memory().reservedBytes} bytes reserved)`,
    20_000,
    () => (env.gateway.services.striper.memory().reservedBytes === 0 ? true : undefined),
  );
  // And the gateway still answers every object whole.
  for (const key of keys) expect((await bytes(await get(key))).equals(objects.get(key)!), key).toBe(true);
}, 240_000);
