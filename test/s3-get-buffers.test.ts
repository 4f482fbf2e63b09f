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
 * - HTTP pipelining over a raw socket (presigned GETs, several requests in
 *   one write on a keep-alive connection): read to the end, every body is
 *   byte-exact; closed unread, the budget returns to zero (Node never emits
 *   'close' on a response still queued behind another: its chunks and the
 *   read-ahead were held forever before the writer also ended on the
 *   connection's close), and a GET afterwards is byte-exact.
 * - A second gateway with a short responseStallMs: pipelined GETs left
 *   unread on an open connection are cut by the gateway, the budget returns
 *   to zero, and a GET read to the end through it is byte-exact.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { S3Gateway } from '../gateways/s3/gateway.js';
import { bytes, startS3Env, type S3TestEnv } from './helpers/s3.js';
import { pipelined, presignedGet as presignedGetOf, responsesOf } from './helpers/s3-raw.js';
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
  // Larger than what the loopback connection's buffers take in while its client reads nothing.
  const big = randomBytes(40 * MiB);
  objects.set('big', big);
  await s3.send(new PutObjectCommand({ Bucket: 'buf', Key: 'big', Body: big }));
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
  const keys = [...objects.keys()].filter((k) => k !== 'big');
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
  const keys = [...objects.keys()].filter((k) => k !== 'big');
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

/** The request target of a presigned GET of key (bucket buf, the test user's keys) on the gateway at endpoint. */
const presignedGet = (endpoint: string, key: string): Promise<string> =>
  presignedGetOf({ endpoint, accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey, bucket: 'buf', key });

/** Resolves once the striper's reservation has been non-zero and unchanged for a second (the responses are stuck). */
async function reservationSettled(gateway: S3Gateway): Promise<number> {
  let last = -1;
  let same = 0;
  return waitFor('a settled reservation', 30_000, () => {
    const now = gateway.services.striper.memory().reservedBytes;
    same = now === last && now > 0 ? same + 1 : 0;
    last = now;
    return same >= 10 ? now : undefined;
  });
}

const budgetZero = (gateway: S3Gateway) => (): true | undefined => (gateway.services.striper.memory().reservedBytes === 0 ? true : undefined);
const reserved = (gateway: S3Gateway) => (): string => `the striper budget back to zero (${gateway.services.striper.memory().reservedBytes} bytes reserved)`;

it('pipelined GETs read to the end are byte-exact', async () => {
  const keys = ['big', 'o1', 'o0', 'o3'];
  const targets = await Promise.all(keys.map((key) => presignedGet(env.endpoint, key)));
  const responses = await responsesOf(await pipelined(env.gateway.port, targets, { lastCloses: true, read: true }));
  expect(responses.map((r) => r.status)).toEqual(keys.map(() => 200));
  for (const [i, key] of keys.entries()) expect(responses[i]!.body.equals(objects.get(key)!), key).toBe(true);
  await waitFor(reserved(env.gateway), 20_000, budgetZero(env.gateway));
}, 240_000);

it('pipelined GETs on a connection closed unread give their memory back', async () => {
  const target = await presignedGet(env.endpoint, 'big');
  for (let i = 0; i < 3; i++) {
    // Two GETs in one write; the second response is queued behind the first, which the client never reads.
    const socket = await pipelined(env.gateway.port, [target, target], { lastCloses: false, read: false });
    await reservationSettled(env.gateway);
    socket.destroy();
  }
  await waitFor(reserved(env.gateway), 20_000, budgetZero(env.gateway));
  expect((await bytes(await get('big'))).equals(objects.get('big')!)).toBe(true);
  await waitFor(reserved(env.gateway), 20_000, budgetZero(env.gateway));
}, 240_000);

it('a gateway cuts GET responses whose client reads nothing for responseStallMs', async () => {
  const gateway = await env.gatewayWith({ journalSweepIntervalMs: 0, responseStallMs: 2000 });
  try {
    const endpoint = `http://127.0.0.1:${gateway.port}`;
    const target = await presignedGet(endpoint, 'big');
    // Open, never read, never closed by the client: the gateway closes it.
    const socket = await pipelined(gateway.port, [target, target], { lastCloses: false, read: false });
    expect(await reservationSettled(gateway)).toBeGreaterThan(0);
    await waitFor(reserved(gateway), 60_000, budgetZero(gateway));
    // The gateway closed the connection: read now, the client gets what was sent, then the end, short of the bodies.
    let received = 0;
    socket.on('data', (b: Buffer) => (received += b.length));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.resume();
    await closed;
    expect(received).toBeGreaterThan(0);
    expect(received).toBeLessThan(2 * objects.get('big')!.length);
    // A client that reads is not cut.
    const responses = await responsesOf(await pipelined(gateway.port, [target, await presignedGet(endpoint, 'o1')], { lastCloses: true, read: true }));
    expect(responses.map((r) => r.status)).toEqual([200, 200]);
    expect(responses[0]!.body.equals(objects.get('big')!)).toBe(true);
    expect(responses[1]!.body.equals(objects.get('o1')!)).toBe(true);
    await waitFor(reserved(gateway), 20_000, budgetZero(gateway));
  } finally {
    await gateway.close();
  }
}, 240_000);
