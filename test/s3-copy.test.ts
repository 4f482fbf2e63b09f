/**
 * CopyObject and the details of GET/HEAD, through the real AWS SDK (v3,
 * default settings) against a real cluster.
 *
 * Copy: within a bucket and across buckets whose data lives in different
 * pools (replicated to erasure-coded), striped, inline and empty sources,
 * COPY and REPLACE metadata directives, copying onto itself (refused without
 * REPLACE or a source version, as S3), restoring an old version by copying
 * it, the x-amz-copy-source-if-* conditions in S3's combinations, every error
 * (missing source, version, delete marker, another user's bucket, bad
 * headers), a copy racing overwrites of its source (whole, one version), and
 * that replaced copies leave no data behind.
 *
 * GET/HEAD: If-* conditions in S3's precedence, 304 without a body but with
 * its ETag, InvalidRange as 416 with Content-Range: bytes *\/size, the
 * response-* overrides, and Cache-Control / Expires / Content-* round trips.
 * Raw status codes and headers are read with presigned requests and fetch.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { startS3Env, type S3TestEnv, errorOf, bytes } from './helpers/s3.js';

let env: S3TestEnv;
let s3: S3Client;

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
  await s3.send(new CreateBucketCommand({ Bucket: 'src' }));
  // The destination's data goes to the erasure-coded pool: a copy across pools.
  await s3.send(new CreateBucketCommand({ Bucket: 'dst', CreateBucketConfiguration: { LocationConstraint: 'ec' as never } }));
}, 120_000);
afterAll(async () => {
  await env?.stop();
});

const md5 = (b: Buffer): string => `"${createHash('md5').update(b).digest('hex')}"`;
const source = (bucket: string, key: string, versionId?: string) => `${bucket}/${encodeURIComponent(key)}${versionId ? `?versionId=${versionId}` : ''}`;

/** Names of the bucket's data objects (manifests and pieces) in a pool, through the cluster client. */
async function dataObjects(bucket: string, pool: string): Promise<string[]> {
  const id = (await env.gateway.services.buckets.get(bucket))!.id;
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.cluster.client.list(pool, { limit: 1000, ...(cursor ? { cursor } : {}) });
    names.push(...page.names);
    cursor = page.cursor;
  } while (cursor);
  return names.filter((n) => n.startsWith(`${id}/`));
}
const manifests = async (bucket: string) => (await dataObjects(bucket, 'rep')).filter((n) => !n.includes('\0'));

async function raw(command: GetObjectCommand | HeadObjectCommand, headers: Record<string, string> = {}): Promise<Response> {
  const url = await getSignedUrl(s3, command, { expiresIn: 300 });
  return fetch(url, { method: command instanceof HeadObjectCommand ? 'HEAD' : 'GET', headers });
}

it('copies striped, inline and empty objects within and across buckets and pools, with COPY and REPLACE metadata', async () => {
  const big = randomBytes(6 * 1024 * 1024 + 11);
  const expires = new Date('2031-05-06T07:08:09Z');
  const objects = new Map<string, Buffer>([
    ['big/ünï code+&?.bin', big],
    ['small', Buffer.from('small object')],
    ['empty', Buffer.alloc(0)],
  ]);
  for (const [Key, Body] of objects) {
    await s3.send(
      new PutObjectCommand({ Bucket: 'src', Key, Body, ContentType: 'application/x-src', Metadata: { color: 'blue', 'two-words': 'a b' }, CacheControl: 'max-age=60', ContentDisposition: 'attachment; filename="x"', ContentLanguage: 'fr', Expires: expires }),
    );
  }
  for (const [Key, Body] of objects) {
    for (const [Bucket, to] of [['dst', `copy of ${Key}`], ['src', `${Key} (copy)`]] as const) {
      const res = await s3.send(new CopyObjectCommand({ Bucket, Key: to, CopySource: source('src', Key) }));
      expect(res.CopyObjectResult?.ETag).toBe(md5(Body));
      expect(res.CopyObjectResult?.LastModified).toBeInstanceOf(Date);
      expect(res.VersionId).toBeUndefined();
      expect(res.CopySourceVersionId).toBeUndefined();
      const got = await s3.send(new GetObjectCommand({ Bucket, Key: to }));
      expect((await bytes(got.Body)).equals(Body), to).toBe(true);
      expect([got.ETag, got.ContentType, got.CacheControl, got.ContentDisposition, got.ContentLanguage, got.ExpiresString]).toEqual([md5(Body), 'application/x-src', 'max-age=60', 'attachment; filename="x"', 'fr', expires.toUTCString()]);
      expect(got.Metadata).toEqual({ color: 'blue', 'two-words': 'a b' });
    }
  }
  // The copy in the EC-backed bucket stored its pieces in the EC pool, its manifest in the metadata pool.
  expect((await dataObjects('dst', 'ec')).length).toBeGreaterThan(0);

  // REPLACE takes content headers and metadata from the request, nothing from the source.
  await s3.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'replaced', CopySource: source('src', 'small'), MetadataDirective: 'REPLACE', ContentType: 'text/plain', Metadata: { shape: 'round' } }));
  const replaced = await s3.send(new HeadObjectCommand({ Bucket: 'dst', Key: 'replaced' }));
  expect([replaced.ContentType, replaced.CacheControl, replaced.ContentLanguage, replaced.Metadata]).toEqual(['text/plain', undefined, undefined, { shape: 'round' }]);

  // A copy is independent of its source: overwriting and deleting the source leave it intact.
  await s3.send(new PutObjectCommand({ Bucket: 'src', Key: 'small', Body: 'changed' }));
  await s3.send(new DeleteObjectCommand({ Bucket: 'src', Key: 'big/ünï code+&?.bin' }));
  expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'dst', Key: 'copy of small' }))).Body)).toString()).toBe('small object');
  expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'dst', Key: 'copy of big/ünï code+&?.bin' }))).Body)).equals(big)).toBe(true);
  // Overwriting a copy removes the data it replaced: one manifest per key above the inline size (4 KiB: only the
  // big copy; the small, empty and replaced copies live in their index entries).
  await s3.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'copy of empty', CopySource: source('src', 'small') }));
  const keys = (await manifests('dst')).length;
  expect(keys).toBe(1);
});

it('copies onto itself only with REPLACE or a named source version; restores old versions', async () => {
  await s3.send(new PutObjectCommand({ Bucket: 'src', Key: 'self', Body: 'me', Metadata: { v: '1' } }));
  const self = s3.send(new CopyObjectCommand({ Bucket: 'src', Key: 'self', CopySource: source('src', 'self') }));
  expect(await errorOf(self)).toEqual({ name: 'InvalidRequest', status: 400 });
  const before = (await manifests('src')).length;
  await s3.send(new CopyObjectCommand({ Bucket: 'src', Key: 'self', CopySource: source('src', 'self'), MetadataDirective: 'REPLACE', Metadata: { v: '2' } }));
  const head = await s3.send(new HeadObjectCommand({ Bucket: 'src', Key: 'self' }));
  expect([head.Metadata, head.ContentLength]).toEqual([{ v: '2' }, 2]);
  expect((await manifests('src')).length).toBe(before); // the replaced data is gone

  await s3.send(new CreateBucketCommand({ Bucket: 'vcopy' }));
  await s3.send(new PutBucketVersioningCommand({ Bucket: 'vcopy', VersioningConfiguration: { Status: 'Enabled' } }));
  const v1 = (await s3.send(new PutObjectCommand({ Bucket: 'vcopy', Key: 'doc', Body: 'first' }))).VersionId!;
  const v2 = (await s3.send(new PutObjectCommand({ Bucket: 'vcopy', Key: 'doc', Body: 'second' }))).VersionId!;
  const restore = await s3.send(new CopyObjectCommand({ Bucket: 'vcopy', Key: 'doc', CopySource: source('vcopy', 'doc', v1) }));
  expect(restore.CopySourceVersionId).toBe(v1);
  expect(restore.VersionId! > v2).toBe(true);
  const current = await s3.send(new GetObjectCommand({ Bucket: 'vcopy', Key: 'doc' }));
  expect([(await bytes(current.Body)).toString(), current.VersionId]).toEqual(['first', restore.VersionId]);
  // Copying the current version of a versioned source names it; into an unversioned bucket, no new id.
  const out = await s3.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'from-versioned', CopySource: source('vcopy', 'doc') }));
  expect([out.CopySourceVersionId, out.VersionId]).toEqual([restore.VersionId, undefined]);
  // A delete marker cannot be copied: current (NoSuchKey) or named (InvalidRequest).
  const marker = (await s3.send(new DeleteObjectCommand({ Bucket: 'vcopy', Key: 'doc' }))).VersionId!;
  expect(await errorOf(s3.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'x', CopySource: source('vcopy', 'doc') })))).toEqual({ name: 'NoSuchKey', status: 404 });
  expect(await errorOf(s3.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'x', CopySource: source('vcopy', 'doc', marker) })))).toEqual({ name: 'InvalidRequest', status: 400 });
  expect(await errorOf(s3.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'x', CopySource: source('vcopy', 'doc', '0'.repeat(32)) })))).toEqual({ name: 'NoSuchVersion', status: 404 });
  const old = await s3.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'x', CopySource: source('vcopy', 'doc', v2) }));
  expect(old.CopyObjectResult?.ETag).toBe(md5(Buffer.from('second')));
});

it('applies the copy-source conditions as S3 combines them', async () => {
  const body = Buffer.from('conditional source');
  await s3.send(new PutObjectCommand({ Bucket: 'src', Key: 'cond', Body: body }));
  const etag = md5(body);
  await new Promise((r) => setTimeout(r, 1100));
  const past = new Date(Date.now() - 3600_000);
  const sinceWrite = new Date(); // after the object's last modification, not in the future
  const copy = (o: Partial<ConstructorParameters<typeof CopyObjectCommand>[0]>) => s3.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'cond', CopySource: source('src', 'cond'), ...o }));
  const failed = { name: 'PreconditionFailed', status: 412 };
  expect(await errorOf(copy({ CopySourceIfMatch: '"0123"' }))).toEqual(failed);
  expect(await errorOf(copy({ CopySourceIfNoneMatch: etag }))).toEqual(failed);
  expect(await errorOf(copy({ CopySourceIfUnmodifiedSince: past }))).toEqual(failed);
  expect(await errorOf(copy({ CopySourceIfModifiedSince: sinceWrite }))).toEqual(failed);
  // If-Match holding wins over a failing If-Unmodified-Since; a failing If-None-Match wins over a holding If-Modified-Since.
  expect((await copy({ CopySourceIfMatch: etag, CopySourceIfUnmodifiedSince: past })).CopyObjectResult?.ETag).toBe(etag);
  expect(await errorOf(copy({ CopySourceIfNoneMatch: etag, CopySourceIfModifiedSince: past }))).toEqual(failed);
  // If-None-Match not matching: If-Modified-Since is not consulted.
  expect((await copy({ CopySourceIfNoneMatch: '"other"', CopySourceIfModifiedSince: sinceWrite })).CopyObjectResult?.ETag).toBe(etag);
  expect((await copy({ CopySourceIfModifiedSince: past, CopySourceIfUnmodifiedSince: sinceWrite, CopySourceIfMatch: '*' })).CopyObjectResult?.ETag).toBe(etag);
});

it('answers copy errors with the right codes', async () => {
  await s3.send(new PutObjectCommand({ Bucket: 'src', Key: 'e', Body: 'e' }));
  const copy = (CopySource: string, o: Partial<ConstructorParameters<typeof CopyObjectCommand>[0]> = {}) => errorOf(s3.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'e', CopySource, ...o })));
  expect(await copy(source('src', 'missing'))).toEqual({ name: 'NoSuchKey', status: 404 });
  expect(await copy(source('no-such-bucket-c', 'e'))).toEqual({ name: 'NoSuchBucket', status: 404 });
  expect(await copy('src')).toEqual({ name: 'InvalidArgument', status: 400 });
  expect(await copy(source('src', 'e', 'not-a-version'))).toEqual({ name: 'InvalidArgument', status: 400 });
  expect(await copy(source('src', 'e'), { MetadataDirective: 'MOVE' as 'COPY' })).toEqual({ name: 'InvalidArgument', status: 400 });
  expect(await errorOf(s3.send(new CopyObjectCommand({ Bucket: 'no-such-bucket-d', Key: 'e', CopySource: source('src', 'e') })))).toEqual({ name: 'NoSuchBucket', status: 404 });
  // Another user may neither read our source nor write our bucket.
  const other = await env.gateway.services.users.create({ displayName: 'other', email: 'other@example.com' });
  const key = await env.gateway.services.users.addKey(other.userId);
  const them = env.s3({ accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey });
  await them.send(new CreateBucketCommand({ Bucket: 'theirs' }));
  expect((await errorOf(them.send(new CopyObjectCommand({ Bucket: 'theirs', Key: 'e', CopySource: source('src', 'e') })))).status).toBe(403);
  await them.send(new PutObjectCommand({ Bucket: 'theirs', Key: 't', Body: 't' }));
  expect((await errorOf(them.send(new CopyObjectCommand({ Bucket: 'dst', Key: 'e', CopySource: source('theirs', 't') })))).status).toBe(403);
  expect((await copy(source('theirs', 't'))).status).toBe(403);
  // Nothing was stored by a failed copy.
  expect((await errorOf(s3.send(new HeadObjectCommand({ Bucket: 'dst', Key: 'e' })))).status).toBe(404);
});

it('copies one whole version of a source that is being overwritten', async () => {
  const versions = Array.from({ length: 4 }, () => randomBytes(5 * 1024 * 1024 + 1));
  await s3.send(new PutObjectCommand({ Bucket: 'src', Key: 'busy', Body: versions[0] }));
  const etags = new Set(versions.map(md5));
  const writes = (async () => {
    for (const Body of versions.slice(1)) await s3.send(new PutObjectCommand({ Bucket: 'src', Key: 'busy', Body }));
  })();
  const copies = await Promise.all(
    Array.from({ length: 4 }, async (_, i) => {
      const res = await s3.send(new CopyObjectCommand({ Bucket: 'dst', Key: `busy-${i}`, CopySource: source('src', 'busy') }));
      return { key: `busy-${i}`, etag: res.CopyObjectResult!.ETag! };
    }),
  );
  await writes;
  for (const c of copies) {
    expect(etags.has(c.etag)).toBe(true);
    const got = await bytes((await s3.send(new GetObjectCommand({ Bucket: 'dst', Key: c.key }))).Body);
    expect(md5(got)).toBe(c.etag);
  }
});

it('evaluates If-* on GET and HEAD in S3 precedence; 304 has no body but its ETag', async () => {
  const body = Buffer.from('conditions');
  await s3.send(new PutObjectCommand({ Bucket: 'src', Key: 'if', Body: body }));
  const etag = md5(body);
  await new Promise((r) => setTimeout(r, 1100));
  const past = new Date(Date.now() - 3600_000).toUTCString();
  const now = new Date().toUTCString();
  const cases: Array<[Record<string, string>, number]> = [
    [{ 'if-match': etag }, 200],
    [{ 'if-match': '"nope"' }, 412],
    [{ 'if-match': '*' }, 200],
    [{ 'if-match': etag, 'if-unmodified-since': past }, 200], // If-Match holds: If-Unmodified-Since ignored
    [{ 'if-unmodified-since': past }, 412],
    [{ 'if-unmodified-since': now }, 200],
    [{ 'if-none-match': etag }, 304],
    [{ 'if-none-match': '"other"' }, 200],
    [{ 'if-none-match': '"other"', 'if-modified-since': now }, 200], // If-None-Match decides alone
    [{ 'if-none-match': etag, 'if-modified-since': past }, 304],
    [{ 'if-modified-since': now }, 304],
    [{ 'if-modified-since': past }, 200],
    [{ 'if-modified-since': 'not a date' }, 200],
    [{ 'if-match': '"nope"', 'if-none-match': etag }, 412], // 412 before 304
    [{ 'if-match': etag, 'if-none-match': etag }, 304],
    [{ 'if-unmodified-since': past, 'if-modified-since': now }, 412],
  ];
  for (const [headers, status] of cases) {
    for (const command of [new GetObjectCommand({ Bucket: 'src', Key: 'if' }), new HeadObjectCommand({ Bucket: 'src', Key: 'if' })]) {
      const res = await raw(command, headers);
      const text = await res.text();
      expect(res.status, `${command.constructor.name} ${JSON.stringify(headers)}`).toBe(status);
      if (status === 304) {
        expect(text).toBe('');
        expect(res.headers.get('etag')).toBe(etag);
        expect(res.headers.get('last-modified')).not.toBeNull();
      }
      if (status === 200 && command instanceof GetObjectCommand) expect(text).toBe('conditions');
      if (status === 412 && command instanceof GetObjectCommand) expect(text).toContain('<Code>PreconditionFailed</Code>');
    }
  }
  // Through the SDK: typed errors.
  expect((await errorOf(s3.send(new GetObjectCommand({ Bucket: 'src', Key: 'if', IfNoneMatch: etag })))).status).toBe(304);
  expect(await errorOf(s3.send(new GetObjectCommand({ Bucket: 'src', Key: 'if', IfMatch: '"x"' })))).toEqual({ name: 'PreconditionFailed', status: 412 });
  // A condition on a missing key: NoSuchKey.
  expect((await raw(new GetObjectCommand({ Bucket: 'src', Key: 'no-if' }), { 'if-match': etag })).status).toBe(404);
});

it('answers unsatisfiable ranges with 416 and Content-Range: bytes */size; serves valid ones', async () => {
  const body = Buffer.from('0123456789');
  await s3.send(new PutObjectCommand({ Bucket: 'src', Key: 'ten', Body: body }));
  await s3.send(new PutObjectCommand({ Bucket: 'src', Key: 'zero', Body: Buffer.alloc(0) }));
  for (const [Key, Range, size] of [['ten', 'bytes=10-20', 10], ['ten', 'bytes=100-', 10], ['ten', 'bytes=-0', 10], ['zero', 'bytes=0-', 0], ['zero', 'bytes=-5', 0]] as const) {
    const res = await raw(new GetObjectCommand({ Bucket: 'src', Key }), { range: Range });
    expect(res.status, Range).toBe(416);
    expect(res.headers.get('content-range')).toBe(`bytes */${size}`);
    expect(await res.text()).toContain('<Code>InvalidRange</Code>');
    expect(await errorOf(s3.send(new GetObjectCommand({ Bucket: 'src', Key, Range })))).toEqual({ name: 'InvalidRange', status: 416 });
  }
  for (const [Range, from, to] of [['bytes=2-5', 2, 5], ['bytes=7-', 7, 9], ['bytes=-3', 7, 9], ['bytes=5-100', 5, 9], ['bytes=-100', 0, 9]] as const) {
    const got = await s3.send(new GetObjectCommand({ Bucket: 'src', Key: 'ten', Range }));
    expect((await bytes(got.Body)).toString(), Range).toBe(body.subarray(from, to + 1).toString());
    expect(got.ContentRange).toBe(`bytes ${from}-${to}/10`);
  }
  // A malformed Range is ignored (the whole object), as S3 does.
  expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'src', Key: 'ten', Range: 'bytes=5-2' }))).Body)).toString()).toBe('0123456789');
  // Conditions come before the range: 304 wins over 416.
  expect((await raw(new GetObjectCommand({ Bucket: 'src', Key: 'ten' }), { range: 'bytes=50-', 'if-none-match': md5(body) })).status).toBe(304);
});

it('round-trips Cache-Control, Expires and Content-* headers; response-* parameters override them', async () => {
  const Expires = new Date('2030-01-02T03:04:05Z');
  await s3.send(
    new PutObjectCommand({ Bucket: 'src', Key: 'hdrs', Body: 'h', ContentType: 'text/x-h', CacheControl: 'no-cache', Expires, ContentDisposition: 'inline', ContentLanguage: 'de', ContentEncoding: 'identity' }),
  );
  for (const out of [await s3.send(new GetObjectCommand({ Bucket: 'src', Key: 'hdrs' })), await s3.send(new HeadObjectCommand({ Bucket: 'src', Key: 'hdrs' }))]) {
    expect([out.ContentType, out.CacheControl, out.ExpiresString, out.ContentDisposition, out.ContentLanguage, out.ContentEncoding]).toEqual(['text/x-h', 'no-cache', Expires.toUTCString(), 'inline', 'de', 'identity']);
    expect(out.Expires?.getTime()).toBe(Expires.getTime());
  }
  const ResponseExpires = new Date('2040-01-01T00:00:00Z');
  const overrides = {
    ResponseContentType: 'application/x-o',
    ResponseCacheControl: 'max-age=5',
    ResponseExpires,
    ResponseContentDisposition: 'attachment; filename="o.txt"',
    ResponseContentLanguage: 'en',
    ResponseContentEncoding: 'x-o',
  };
  for (const out of [await s3.send(new GetObjectCommand({ Bucket: 'src', Key: 'hdrs', ...overrides })), await s3.send(new HeadObjectCommand({ Bucket: 'src', Key: 'hdrs', ...overrides }))]) {
    expect([out.ContentType, out.CacheControl, out.ExpiresString, out.ContentDisposition, out.ContentLanguage, out.ContentEncoding]).toEqual(['application/x-o', 'max-age=5', ResponseExpires.toUTCString(), 'attachment; filename="o.txt"', 'en', 'x-o']);
  }
  // Overrides change the answer, not the object.
  expect((await s3.send(new HeadObjectCommand({ Bucket: 'src', Key: 'hdrs' }))).ContentType).toBe('text/x-h');
});
