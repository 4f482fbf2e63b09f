/**
 * The S3 gateway's core through the real AWS SDK (v3, default settings):
 * buckets, PUT (aws-chunked with CRC32 trailers) / GET (ranges, conditions) /
 * HEAD / DELETE, listing with prefixes and delimiters, errors as S3 XML with
 * the right codes, and signatures that must match.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  ListObjectsCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { startS3Env, type S3TestEnv, errorOf, bytes } from './helpers/s3.js';

let env: S3TestEnv;
let s3: S3Client;

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
}, 120_000);
afterAll(async () => {
  await env?.stop();
});


it('creates buckets, stores and reads objects byte-exact, lists and deletes', async () => {
  await s3.send(new CreateBucketCommand({ Bucket: 'alpha' }));
  expect((await errorOf(s3.send(new CreateBucketCommand({ Bucket: 'alpha' })))).name).toBe('BucketAlreadyOwnedByYou');
  expect((await errorOf(s3.send(new CreateBucketCommand({ Bucket: 'Bad_Name' })))).name).toBe('InvalidBucketName');
  await s3.send(new HeadBucketCommand({ Bucket: 'alpha' }));
  const buckets = await s3.send(new ListBucketsCommand({}));
  expect(buckets.Buckets?.map((b) => b.Name)).toContain('alpha');
  expect(buckets.Owner?.ID).toBe(env.userId);

  const objects = new Map<string, Buffer>([
    ['empty', Buffer.alloc(0)],
    ['small.txt', Buffer.from('hello tessera')],
    ['dir/a', randomBytes(100_000)],
    ['dir/b', randomBytes(5 * 1024 * 1024 + 17)],
    ['dir/sub/c', randomBytes(10)],
    ['ünïcödé/ключ ✓', randomBytes(1000)],
  ]);
  for (const [Key, Body] of objects) {
    const put = await s3.send(new PutObjectCommand({ Bucket: 'alpha', Key, Body, ContentType: 'application/x-test', Metadata: { color: 'blue' } }));
    expect(put.ETag).toMatch(/^"[0-9a-f]{32}"$/);
  }
  for (const [Key, Body] of objects) {
    const got = await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key }));
    expect((await bytes(got.Body)).equals(Body), Key).toBe(true);
    expect(got.ContentType).toBe('application/x-test');
    expect(got.Metadata?.color).toBe('blue');
  }
  const head = await s3.send(new HeadObjectCommand({ Bucket: 'alpha', Key: 'dir/b' }));
  expect(head.ContentLength).toBe(objects.get('dir/b')!.length);
  const ranged = await s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'dir/b', Range: 'bytes=4194300-4194400' }));
  expect((await bytes(ranged.Body)).equals(objects.get('dir/b')!.subarray(4194300, 4194401))).toBe(true);
  expect((await errorOf(s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'dir/a', IfMatch: '"nope"' })))).status).toBe(412);
  expect((await errorOf(s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'dir/a', IfNoneMatch: head.ETag === undefined ? '*' : (await s3.send(new HeadObjectCommand({ Bucket: 'alpha', Key: 'dir/a' }))).ETag })))).status).toBe(304);

  const top = await s3.send(new ListObjectsV2Command({ Bucket: 'alpha', Delimiter: '/' }));
  expect(top.Contents?.map((c) => c.Key)).toEqual(['empty', 'small.txt']);
  expect(top.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['dir/', 'ünïcödé/']);
  const inDir = await s3.send(new ListObjectsV2Command({ Bucket: 'alpha', Prefix: 'dir/', Delimiter: '/' }));
  expect(inDir.Contents?.map((c) => c.Key)).toEqual(['dir/a', 'dir/b']);
  expect(inDir.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['dir/sub/']);
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: 'alpha', MaxKeys: 2, ...(token ? { ContinuationToken: token } : {}) }));
    keys.push(...(page.Contents ?? []).map((c) => c.Key!));
    token = page.NextContinuationToken;
  } while (token);
  expect(keys).toEqual([...objects.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
  const v1 = await s3.send(new ListObjectsCommand({ Bucket: 'alpha', Prefix: 'dir/' }));
  expect(v1.Contents?.map((c) => c.Key)).toEqual(['dir/a', 'dir/b', 'dir/sub/c']);

  expect((await errorOf(s3.send(new DeleteBucketCommand({ Bucket: 'alpha' })))).name).toBe('BucketNotEmpty');
  for (const Key of objects.keys()) await s3.send(new DeleteObjectCommand({ Bucket: 'alpha', Key }));
  expect((await errorOf(s3.send(new GetObjectCommand({ Bucket: 'alpha', Key: 'small.txt' })))).name).toBe('NoSuchKey');
  await s3.send(new DeleteBucketCommand({ Bucket: 'alpha' }));
  expect((await errorOf(s3.send(new HeadBucketCommand({ Bucket: 'alpha' })))).status).toBe(404);
});

it('overwrites atomically and leaves no garbage', async () => {
  await s3.send(new CreateBucketCommand({ Bucket: 'beta' }));
  const versions = Array.from({ length: 6 }, (_, i) => randomBytes(i % 2 ? 3 * 1024 * 1024 : 2000));
  await Promise.all(versions.map((Body) => s3.send(new PutObjectCommand({ Bucket: 'beta', Key: 'k', Body }))));
  const final = await bytes((await s3.send(new GetObjectCommand({ Bucket: 'beta', Key: 'k' }))).Body);
  expect(versions.some((v) => v.equals(final))).toBe(true);
  // Only one object's data remains in the data pool (manifests and pieces of the losers are gone).
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.cluster.client.list('rep', { limit: 1000, ...(cursor ? { cursor } : {}) });
    names.push(...page.names);
    cursor = page.cursor;
  } while (cursor);
  const bucket = (await env.gateway.services.buckets.get('beta'))!;
  const dataObjects = names.filter((n) => n.startsWith(`${bucket.id}/`));
  const manifests = dataObjects.filter((n) => !n.includes('\0'));
  expect(manifests).toHaveLength(1);
});

it('refuses bad signatures and unknown keys', async () => {
  const wrong = env.s3({ accessKeyId: env.accessKeyId, secretAccessKey: 'x'.repeat(40) });
  expect((await errorOf(wrong.send(new ListBucketsCommand({})))).name).toBe('SignatureDoesNotMatch');
  const unknown = env.s3({ accessKeyId: 'AKIAUNKNOWNUNKNOWN12', secretAccessKey: 'y'.repeat(40) });
  expect((await errorOf(unknown.send(new ListBucketsCommand({})))).name).toBe('InvalidAccessKeyId');
  const anon = await fetch(`${env.endpoint}/beta/k`);
  expect(anon.status).toBe(403);
  expect(await anon.text()).toContain('<Code>AccessDenied</Code>');
});
