/**
 * Proves how many cluster operations a small S3 request costs: every
 * TesseraClient call the gateway makes is counted (the client the gateway
 * runs on, wrapped), for a 4 KiB PUT of a new key, an overwrite, a GET and a
 * HEAD, and for a 4 MiB GET. The counts are the gateway's cost model (docs/s3-api.md, "Cluster
 * operations per request"); a change that adds one should show up here.
 * Then a second gateway on the same cluster, whose object reads use cached
 * bucket records, must answer as if it had read them (grants, a bucket
 * deleted and recreated, revocations).
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';

let env: S3TestEnv;
let s3: S3Client;
const calls: string[] = [];

beforeAll(async () => {
  // Caches long enough that a slow machine's gap between the warm request and the counted one does not expire them.
  env = await startS3Env({ bucketCacheMs: 120_000, accessKeyCacheMs: 120_000 });
  // The start-up sweep's calls (it lists buckets and journals) must not be counted as a request's.
  await env.startupSweep;
  s3 = env.s3();
  const client = env.cluster.client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  for (const method of ['transact', 'read', 'stat', 'getXattrs', 'omapGet', 'omapList', 'list']) {
    const original = client[method]!.bind(client);
    client[method] = (...args: unknown[]) => {
      calls.push(`${method} ${String(args[1])}`);
      return original(...args);
    };
  }
  await s3.send(new CreateBucketCommand({ Bucket: 'ops' }));
}, 120_000);

afterAll(async () => {
  await env?.stop();
});

async function counted(run: () => Promise<unknown>): Promise<string[]> {
  await run(); // warm: the access key and the bucket record are read once per process, not per request
  calls.length = 0;
  await run();
  const seen = [...calls];
  calls.length = 0;
  return seen;
}

test('a 4 KiB PUT of a new key, an overwrite, a GET and a HEAD: cluster operations', async () => {
  const body = Buffer.alloc(4096, 7);
  let n = 0;
  const putNew = await counted(() => s3.send(new PutObjectCommand({ Bucket: 'ops', Key: `new-${n++}`, Body: body })));
  const overwrite = await counted(() => s3.send(new PutObjectCommand({ Bucket: 'ops', Key: 'same', Body: body })));
  const get = await counted(async () => {
    const res = await s3.send(new GetObjectCommand({ Bucket: 'ops', Key: 'same' }));
    expect(Buffer.from(await res.Body!.transformToByteArray()).equals(body)).toBe(true);
  });
  const head = await counted(() => s3.send(new HeadObjectCommand({ Bucket: 'ops', Key: 'same' })));
  console.log(JSON.stringify({ putNew, overwrite, get, head }, null, 1));
  expect(putNew.length, JSON.stringify(putNew)).toBeLessThanOrEqual(Number(process.env.S3_OPS_PUT_MAX ?? 2));
  expect(overwrite.length, JSON.stringify(overwrite)).toBeLessThanOrEqual(Number(process.env.S3_OPS_OVERWRITE_MAX ?? 4));
  expect(get.length, JSON.stringify(get)).toBeLessThanOrEqual(Number(process.env.S3_OPS_GET_MAX ?? 1));
  expect(head.length, JSON.stringify(head)).toBeLessThanOrEqual(Number(process.env.S3_OPS_GET_MAX ?? 1));
}, 120_000);

test('a 4 MiB GET: the index entry, then the data (no manifest read)', async () => {
  // Here metadata and data share the pool 'rep', so the striper keeps up to 4 MiB inline in the manifest (read with its
  // trailer in one call); one byte more is striped (two pieces, each read by the generation the entry names).
  for (const [key, sizeBytes, reads] of [['large', 4 * 1024 * 1024, 1], ['larger', 4 * 1024 * 1024 + 1, 2]] as const) {
    const body = Buffer.alloc(sizeBytes, 9);
    await s3.send(new PutObjectCommand({ Bucket: 'ops', Key: key, Body: body }));
    const get = await counted(async () => {
      const res = await s3.send(new GetObjectCommand({ Bucket: 'ops', Key: key }));
      expect(Buffer.from(await res.Body!.transformToByteArray()).equals(body)).toBe(true);
    });
    console.log(JSON.stringify({ [key]: get.map((c) => c.replace(/\0/g, '/')) }, null, 1));
    // Before the entry named its data's generation: also the manifest's getXattrs and its data read, before the data.
    expect(get.map((c) => c.split(' ')[0]), JSON.stringify(get)).toEqual(['omapGet', ...Array<string>(reads).fill('read')]);
  }
}, 120_000);

test('a second gateway (its bucket records cached) decides object reads as on the current record', async () => {
  const { S3Client, DeleteBucketCommand, DeleteObjectCommand, PutBucketAclCommand } = await import('@aws-sdk/client-s3');
  const other = await env.gatewayWith();
  const viaOther = new S3Client({ endpoint: `http://127.0.0.1:${other.port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }, maxAttempts: 1 });
  const anonymous = async (key: string): Promise<number> => (await fetch(`http://127.0.0.1:${other.port}/shared/${key}`)).status;
  try {
    await s3.send(new CreateBucketCommand({ Bucket: 'shared' }));
    await s3.send(new PutObjectCommand({ Bucket: 'shared', Key: 'k', Body: 'first bucket' }));
    // The other gateway caches the record (private bucket: anonymous reads refused).
    expect(await anonymous('k')).toBe(403);
    // A grant made through the first gateway: the refusal is decided again on the current record.
    await s3.send(new PutBucketAclCommand({ Bucket: 'shared', ACL: 'public-read' }));
    expect(await anonymous('k')).toBe(403); // the object's own ACL is still private
    await s3.send(new PutObjectCommand({ Bucket: 'shared', Key: 'pub', Body: 'public', ACL: 'public-read' }));
    expect(await anonymous('pub')).toBe(200);
    // Deleted and recreated through the first gateway: the second never reads through the old index.
    for (const Key of ['k', 'pub']) await s3.send(new DeleteObjectCommand({ Bucket: 'shared', Key }));
    await s3.send(new DeleteBucketCommand({ Bucket: 'shared' }));
    await s3.send(new CreateBucketCommand({ Bucket: 'shared' }));
    await s3.send(new PutObjectCommand({ Bucket: 'shared', Key: 'k', Body: 'second bucket' }));
    const got = await viaOther.send(new GetObjectCommand({ Bucket: 'shared', Key: 'k' }));
    expect(await got.Body!.transformToString()).toBe('second bucket');
    // Bucket READ only decides NoSuchKey vs AccessDenied for a missing key; the object's ACL comes with its entry.
    await s3.send(new PutBucketAclCommand({ Bucket: 'shared', ACL: 'public-read' }));
    expect(await anonymous('missing')).toBe(404);
    await s3.send(new PutObjectCommand({ Bucket: 'shared', Key: 'pub', Body: 'public', ACL: 'public-read' }));
    expect(await anonymous('pub')).toBe(200);
    await s3.send(new PutObjectCommand({ Bucket: 'shared', Key: 'pub', Body: 'private now' }));
    expect(await anonymous('pub')).toBe(403);
    await s3.send(new PutBucketAclCommand({ Bucket: 'shared', ACL: 'private' }));
    expect(await anonymous('missing')).toBe(403); // a private bucket does not tell anonymous callers which keys exist
    for (const Key of ['k', 'pub']) await s3.send(new DeleteObjectCommand({ Bucket: 'shared', Key }));
    await s3.send(new DeleteBucketCommand({ Bucket: 'shared' }));
  } finally {
    viaOther.destroy();
    await other.close();
  }
}, 120_000);
