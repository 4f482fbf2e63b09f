/**
 * GET responses in flight per client (gateways/s3/client-gets.ts): a gateway
 * with getsInflightPerClientMax 2 on a real cluster (rep pool), a 40 MiB
 * object (more than the loopback connection's buffers take in, so a GET
 * whose client stops reading stays in flight) and a 1 KiB one (inline: answered
 * from memory, not counted). Held GETs are raw node:net connections that read
 * the response head and then nothing (test/helpers/s3-raw.ts).
 * - Access keys: a header-signed request counts against its key, a presigned
 *   one against its key and the holder's address (URLs are handed to
 *   others). With two GETs of one presigned URL held from 127.0.0.1, the
 *   URL's next GET from there is 503 SlowDown, while the key's owner (SDK,
 *   header-signed), the URL from 127.0.0.3, another key's GET, and the first
 *   key's HEAD and inline GET succeed; once the held responses are read to
 *   the end (byte-exact) the counts return to 0 and the URL reads again.
 * - Anonymous clients, by remote address (127.0.0.2 and 127.0.0.3 both reach
 *   the gateway on 127.0.0.1): two GETs pipelined on one connection from
 *   127.0.0.2 and never read (the second response waits behind the first,
 *   not attached to the socket: the case of ae0b8d0) hold its two slots; its
 *   next GET is SlowDown, 127.0.0.3's is not; closing the connection gives
 *   both slots back (the map holds no entry) and 127.0.0.2 reads again.
 * - Over the limit a GET waits for a slot (first come, first served): on a
 *   gateway that waits up to 60 s, with two GETs held, a third waits (counted
 *   as waiting, nothing refused), a fourth whose connection closes while it
 *   waits leaves the queue, and once one held response is read to the end
 *   the third gets its slot and reads the object byte-exact; then every count
 *   is 0. (The gateway of the first two tests waits 500 ms before SlowDown.)
 * - Pipelined GETs on one connection take slots in the order they arrived
 *   (their responses leave in that order): on a gateway with a limit of 1
 *   and a 3 s wait, a GET of a multipart object's part (a longer way to its
 *   first piece) pipelined before a plain GET gets its slot first: both
 *   answered, 206 then 200, byte-exact, nothing refused (before, the second
 *   took the slot, the first waited for it until SlowDown, and the close
 *   that carries SlowDown lost both); twelve GETs pipelined on one
 *   connection are all answered byte-exact, with no listener warning.
 * The first test fails on the code before the limit (the third GET succeeds).
 */
import { randomBytes } from 'node:crypto';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { S3Gateway } from '../gateways/s3/gateway.js';
import { addUser, codeOf, type TestUser } from './helpers/s3-access.js';
import { bytes, errorOf, startS3Env, type S3TestEnv } from './helpers/s3.js';
import { heldGet, pipelined, presignedGet, responsesOf, type RawGetResponse } from './helpers/s3-raw.js';
import { waitFor } from './helpers/wait.js';

const MiB = 1024 * 1024;
const BUCKET = 'gets';
let env: S3TestEnv;
let gateway: S3Gateway;
/** A gateway whose GETs over the limit wait up to 60 s (the queue test). */
let queueing: S3Gateway | undefined;
/** A gateway with a limit of 1 and a 3 s wait (the pipelining tests). */
let ordered: S3Gateway | undefined;
let endpoint: string;
let other: TestUser;
const clients: S3Client[] = [];
const big = randomBytes(40 * MiB);
const tiny = randomBytes(1024);
const mid = randomBytes(6 * MiB);
const parts = [randomBytes(5 * MiB), randomBytes(1 * MiB)];

function s3For(credentials: { accessKeyId: string; secretAccessKey: string }): S3Client {
  const c = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials, maxAttempts: 1 });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  env = await startS3Env();
  const s3 = env.s3();
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'big', Body: big, ACL: 'public-read' }));
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'tiny', Body: tiny, ACL: 'public-read' }));
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: 'mp', ACL: 'public-read' }));
  const etags: string[] = [];
  for (const [i, part] of parts.entries()) etags.push((await s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: 'mp', UploadId, PartNumber: i + 1, Body: part }))).ETag!);
  await s3.send(new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: 'mp', UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ PartNumber: i + 1, ETag })) } }));
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'mid', Body: mid, ACL: 'public-read' }));
  other = await addUser(env, 'other', 'other@example.com');
  // Refusals here come after half a second of waiting (the queue's own test below waits longer).
  gateway = await gatewayWith(2, 500);
  endpoint = `http://127.0.0.1:${gateway.port}`;
}, 240_000);
afterAll(async () => {
  for (const c of clients) c.destroy();
  await queueing?.close();
  await ordered?.close();
  await gateway?.close();
  await env?.stop();
});

/** A gateway on the test cluster with this per-client GET limit and slot wait. */
function gatewayWith(getsInflightPerClientMax: number, getSlotWaitMs: number): Promise<S3Gateway> {
  return env.gatewayWith({ journalSweepIntervalMs: 0, getsInflightPerClientMax, getSlotWaitMs });
}

/** One GET read to the end on its own connection (from localAddress when given). */
async function rawGet(target: string, localAddress?: string): Promise<RawGetResponse> {
  const responses = await responsesOf(await pipelined(gateway.port, [target], { lastCloses: true, read: true, ...(localAddress ? { localAddress } : {}) }));
  expect(responses.length).toBe(1);
  return responses[0]!;
}

const countsAre = (want: { clients: number; inflight: number }) => (): true | undefined => {
  const now = gateway.clientGets();
  return now.clients === want.clients && now.inflight === want.inflight ? true : undefined;
};
const counts = (): string => `GET counts ${JSON.stringify(gateway.clientGets())}`;
const budgetZero = (): true | undefined => (gateway.services.striper.memory().reservedBytes === 0 ? true : undefined);

it('a presigned URL with its limit of GETs unread from one address gets SlowDown; its owner, another address and another key do not; read to the end, the slots come back', async () => {
  const owner = s3For({ accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey });
  const target = await presignedGet({ endpoint, accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey, bucket: BUCKET, key: 'big' });
  const held = [await heldGet(gateway.port, target), await heldGet(gateway.port, target)];
  expect(held.map((h) => h.status)).toEqual([200, 200]);
  // The URL's next GET from that address is refused (after the half-second wait).
  const refused = await rawGet(target);
  expect([refused.status, codeOf(refused.body)]).toEqual([503, 'SlowDown']);
  // A presigned URL counts with its holder's address: the key's owner (header-signed), and the URL used from
  // another address, are other clients.
  expect((await bytes((await owner.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'big' }))).Body)).equals(big)).toBe(true);
  const elsewhere = await rawGet(target, '127.0.0.3');
  expect(elsewhere.status).toBe(200);
  expect(elsewhere.body.equals(big)).toBe(true);
  // Another key reads the same object whole.
  const theirs = await s3For(other).send(new GetObjectCommand({ Bucket: BUCKET, Key: 'big' }));
  expect((await bytes(theirs.Body)).equals(big)).toBe(true);
  // What streams nothing from the cluster is not counted: a HEAD, an inline object.
  expect((await owner.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'big' }))).ContentLength).toBe(big.length);
  expect((await bytes((await owner.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'tiny' }))).Body)).equals(tiny)).toBe(true);
  await waitFor(counts, 20_000, countsAre({ clients: 1, inflight: 2 }));
  expect(gateway.clientGets().refusedTotal).toBe(1);
  // The held responses, read to the end, are whole; their slots come back.
  for (const h of held) {
    const [response, ...more] = await responsesOf(h.socket, h.received);
    expect(more.length).toBe(0);
    expect(response!.status).toBe(200);
    expect(response!.body.equals(big)).toBe(true);
  }
  await waitFor(counts, 20_000, countsAre({ clients: 0, inflight: 0 }));
  const again = await rawGet(target);
  expect(again.status).toBe(200);
  expect(again.body.equals(big)).toBe(true);
  await waitFor(counts, 20_000, countsAre({ clients: 0, inflight: 0 }));
  await waitFor('the striper budget back to zero', 20_000, budgetZero);
}, 240_000);

it('anonymous GETs count by address; a connection closed unread (a pipelined GET behind another too) gives its slots back', async () => {
  const refusedBefore = gateway.clientGets().refusedTotal;
  const target = `/${BUCKET}/big`;
  // Two GETs in one write from 127.0.0.2, never read: the second response is queued behind the first.
  const socket = await pipelined(gateway.port, [target, target], { lastCloses: false, read: false, localAddress: '127.0.0.2' });
  await waitFor(counts, 30_000, countsAre({ clients: 1, inflight: 2 }));
  const refused = await rawGet(target, '127.0.0.2');
  expect([refused.status, codeOf(refused.body)]).toEqual([503, 'SlowDown']);
  // Another address, and a signed request from the same address, are other clients.
  const elsewhere = await rawGet(target, '127.0.0.3');
  expect(elsewhere.status).toBe(200);
  expect(elsewhere.body.equals(big)).toBe(true);
  const signed = await rawGet(await presignedGet({ endpoint, accessKeyId: other.accessKeyId, secretAccessKey: other.secretAccessKey, bucket: BUCKET, key: 'big' }), '127.0.0.2');
  expect(signed.status).toBe(200);
  expect(signed.body.equals(big)).toBe(true);
  await waitFor(counts, 20_000, countsAre({ clients: 1, inflight: 2 }));
  expect(gateway.clientGets().refusedTotal).toBe(refusedBefore + 1);
  // Closed unread: both slots come back, the pipelined response's too (no 'close' on it: the connection's close ends it).
  socket.destroy();
  await waitFor(counts, 20_000, countsAre({ clients: 0, inflight: 0 }));
  await waitFor('the striper budget back to zero', 20_000, budgetZero);
  const again = await rawGet(target, '127.0.0.2');
  expect(again.status).toBe(200);
  expect(again.body.equals(big)).toBe(true);
  await waitFor(counts, 20_000, countsAre({ clients: 0, inflight: 0 }));
}, 240_000);

it('over the limit a GET waits for a slot: it gets one when a held response ends; one whose connection closes leaves the queue', async () => {
  queueing = await gatewayWith(2, 60_000);
  const q = queueing;
  const stats = (): string => `GET counts ${JSON.stringify(q.clientGets())}`;
  const are = (want: { clients: number; inflight: number; waiting: number }) => (): true | undefined => {
    const now = q.clientGets();
    return now.clients === want.clients && now.inflight === want.inflight && now.waiting === want.waiting ? true : undefined;
  };
  const qEndpoint = `http://127.0.0.1:${q.port}`;
  const target = await presignedGet({ endpoint: qEndpoint, accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey, bucket: BUCKET, key: 'big' });
  const held = [await heldGet(q.port, target), await heldGet(q.port, target)];
  expect(held.map((h) => h.status)).toEqual([200, 200]);
  await waitFor(stats, 20_000, are({ clients: 1, inflight: 2, waiting: 0 }));
  // A third GET waits; so does a fourth, whose connection then closes.
  const third = responsesOf(await pipelined(q.port, [target], { lastCloses: true, read: true }));
  await waitFor(stats, 20_000, are({ clients: 1, inflight: 2, waiting: 1 }));
  const fourth = await pipelined(q.port, [target], { lastCloses: false, read: false });
  await waitFor(stats, 20_000, are({ clients: 1, inflight: 2, waiting: 2 }));
  fourth.destroy();
  await waitFor(stats, 20_000, are({ clients: 1, inflight: 2, waiting: 1 }));
  // One held response read to the end: its slot goes to the third, which reads the object whole.
  const [first] = await responsesOf(held[0]!.socket, held[0]!.received);
  expect(first!.body.equals(big)).toBe(true);
  const [got, ...more] = await third;
  expect(more.length).toBe(0);
  expect(got!.status).toBe(200);
  expect(got!.body.equals(big)).toBe(true);
  held[1]!.socket.destroy();
  await waitFor(stats, 20_000, are({ clients: 0, inflight: 0, waiting: 0 }));
  // Only the fourth, gone while it waited, was refused.
  expect(q.clientGets().refusedTotal).toBe(1);
}, 240_000);

it('pipelined GETs on one connection take their slots in arrival order: a part GET before a plain one, twelve in a row', async () => {
  ordered = await gatewayWith(1, 3000);
  const o = ordered;
  const warnings: string[] = [];
  const onWarning = (w: Error): void => {
    warnings.push(`${w.name}: ${w.message}`);
  };
  process.on('warning', onWarning);
  try {
    for (let round = 0; round < 3; round++) {
      const rs = await responsesOf(await pipelined(o.port, [`/${BUCKET}/mp?partNumber=1`, `/${BUCKET}/mid`], { lastCloses: true, read: true }));
      expect(rs.map((r) => r.status), `round ${round}: ${rs.map((r) => (r.status >= 300 ? r.body.toString() : r.status)).join(' | ')}`).toEqual([206, 200]);
      expect(rs[0]!.body.equals(parts[0]!)).toBe(true);
      expect(rs[1]!.body.equals(mid)).toBe(true);
    }
    const twelve = await responsesOf(await pipelined(o.port, Array.from({ length: 12 }, () => `/${BUCKET}/mid`), { lastCloses: true, read: true }));
    expect(twelve.map((r) => r.status)).toEqual(Array.from({ length: 12 }, () => 200));
    for (const r of twelve) expect(r.body.equals(mid)).toBe(true);
  } finally {
    process.off('warning', onWarning);
  }
  expect(o.clientGets().refusedTotal).toBe(0);
  expect(warnings.filter((w) => w.includes('MaxListeners'))).toEqual([]);
  await waitFor(() => `GET counts ${JSON.stringify(o.clientGets())}`, 20_000, () => (o.clientGets().clients === 0 && o.clientGets().inflight === 0 ? true : undefined));
}, 240_000);
