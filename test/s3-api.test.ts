/**
 * The rest of the S3 issue's API list, against the real gateway on a real
 * cluster (startS3Env) through the AWS SDK v3 (default settings) or, where no
 * client would send it, a presigned request written by hand:
 * - virtual-host-style addressing (bucket.localhost:port, the SDK's default
 *   when forcePathStyle is off; the host name resolved to 127.0.0.1 by the agent);
 * - GetBucketLocation; BucketAlreadyExists for another user's bucket;
 *   x-amz-expected-bucket-owner;
 * - GET/HEAD conditions If-Modified-Since (304) and If-Unmodified-Since (412);
 * - ListObjects v1/v2 with encoding-type=url (keys with control characters,
 *   spaces, '+', '%', unicode come back percent-encoded) and fetch-owner;
 *   an unknown encoding-type is InvalidArgument;
 * - checksums of single PUTs for every algorithm (CRC32, CRC32C, CRC64NVME,
 *   SHA1, SHA256): returned by GET/HEAD only with x-amz-checksum-mode, and
 *   the SDK validates the GET;
 * - limits: a PUT of 5 GiB + 1 byte is EntityTooLarge before a body byte is
 *   read; user metadata over 2 KiB is MetadataTooLarge; a header section over
 *   16 KiB is RequestHeaderSectionTooLarge; a PUT without Content-Length is
 *   MissingContentLength;
 * - conditional writes: If-None-Match: * and If-Match on PutObject and
 *   CopyObject, decided atomically with the commit (of racing creators exactly
 *   one wins; the losers leave no data); If-Match on DeleteObject;
 * - settings we do not enforce are NotImplemented (501) and nothing is
 *   stored: lifecycle, policy, object lock, tagging, encryption, website,
 *   replication configurations; object lock, tagging, SSE, website redirect
 *   and non-STANDARD storage-class headers on PutObject, CreateMultipartUpload,
 *   CopyObject; object lock and ownership controls on CreateBucket. An unknown
 *   storage class is InvalidStorageClass.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import type { LookupFunction } from 'node:net';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetBucketLocationCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  ListMultipartUploadsCommand,
  PutBucketEncryptionCommand,
  PutBucketLifecycleConfigurationCommand,
  PutBucketPolicyCommand,
  PutBucketReplicationCommand,
  PutBucketTaggingCommand,
  PutBucketVersioningCommand,
  PutBucketWebsiteCommand,
  PutObjectCommand,
  PutObjectLegalHoldCommand,
  PutObjectLockConfigurationCommand,
  PutObjectRetentionCommand,
  PutObjectTaggingCommand,
  GetObjectTaggingCommand,
  GetBucketPolicyCommand,
  S3Client,
  type ChecksumAlgorithm,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';

let env: S3TestEnv;
let s3: S3Client;
const made: S3Client[] = [];

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
  await s3.send(new CreateBucketCommand({ Bucket: 'api' }));
}, 120_000);
afterAll(async () => {
  made.forEach((c) => c.destroy());
  await env?.stop();
});

async function failure(p: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode };
  }
  throw new Error('the request succeeded');
}

const text = async (body: unknown): Promise<string> => (body as { transformToString(): Promise<string> }).transformToString();

async function keysOf(bucket: string): Promise<string[]> {
  const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
  return (page.Contents ?? []).map((c) => c.Key!);
}

/** The bucket's data objects in its pool (named "<bucket id>/..."). */
async function dataObjectsOf(bucket: string, pool = 'rep'): Promise<string[]> {
  const record = (await env.gateway.services.buckets.get(bucket))!;
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.cluster.client.list(pool, { limit: 1000, ...(cursor ? { cursor } : {}) });
    names.push(...page.names.filter((n) => n.startsWith(`${record.id}/`)));
    cursor = page.cursor;
  } while (cursor);
  return names;
}

/** The request target of a presigned PUT of key (unsigned payload, no checksum). */
async function presignedTarget(key: string): Promise<string> {
  const signer = new S3Client({ endpoint: env.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }, requestChecksumCalculation: 'WHEN_REQUIRED' });
  made.push(signer);
  const url = new URL(await getSignedUrl(signer, new PutObjectCommand({ Bucket: 'api', Key: key }), { expiresIn: 600 }));
  return `${url.pathname}${url.search}`;
}

/** Sends a presigned PUT of key by hand: the given headers, then `body` (or nothing), and returns status and body. */
async function presignedPut(key: string, headers: Record<string, string>, body?: Buffer): Promise<{ status: number; body: string }> {
  const path = await presignedTarget(key);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: env.gateway.port, method: 'PUT', path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body) req.write(body);
    // Headers only: the answer must come before any body byte (or none is declared).
    if (!headers['content-length'] || body) req.end();
    else req.flushHeaders();
  });
}

describe('addressing and buckets', () => {
  it('serves virtual-host-style requests (bucket.localhost) like path-style ones', async () => {
    const lookup = ((_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) => {
      if (opts?.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
      else cb(null, '127.0.0.1', 4);
    }) as unknown as LookupFunction;
    const vhost = new S3Client({
      endpoint: `http://localhost:${env.gateway.port}`,
      region: 'us-east-1',
      forcePathStyle: false,
      credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
      maxAttempts: 1,
      requestHandler: new NodeHttpHandler({ httpAgent: new Agent({ keepAlive: true, lookup }) }),
    });
    made.push(vhost);
    const seen: string[] = [];
    vhost.middlewareStack.add((next) => async (args) => {
      seen.push((args.request as { hostname: string }).hostname);
      return next(args);
    }, { step: 'finalizeRequest', name: 'recordHost' });
    await vhost.send(new CreateBucketCommand({ Bucket: 'vhost-bucket' }));
    await vhost.send(new PutObjectCommand({ Bucket: 'vhost-bucket', Key: 'dir/obj one', Body: 'virtual' }));
    expect(await text((await vhost.send(new GetObjectCommand({ Bucket: 'vhost-bucket', Key: 'dir/obj one' }))).Body)).toBe('virtual');
    expect((await vhost.send(new ListObjectsV2Command({ Bucket: 'vhost-bucket' }))).Contents?.map((c) => c.Key)).toEqual(['dir/obj one']);
    expect(seen.every((h) => h === 'vhost-bucket.localhost')).toBe(true);
    // The same bucket and key, path-style.
    expect(await text((await s3.send(new GetObjectCommand({ Bucket: 'vhost-bucket', Key: 'dir/obj one' }))).Body)).toBe('virtual');
    await vhost.send(new DeleteObjectCommand({ Bucket: 'vhost-bucket', Key: 'dir/obj one' }));
    await vhost.send(new DeleteBucketCommand({ Bucket: 'vhost-bucket' }));
    expect((await failure(s3.send(new ListObjectsV2Command({ Bucket: 'vhost-bucket' })))).name).toBe('NoSuchBucket');
  });

  it('answers GetBucketLocation, BucketAlreadyExists for another owner, and x-amz-expected-bucket-owner', async () => {
    const location = await s3.send(new GetBucketLocationCommand({ Bucket: 'api' }));
    expect(location.LocationConstraint ?? '').toBe('');
    const other = await env.gateway.services.users.create({ displayName: 'other', email: 'other@example.com' });
    const otherKey = await env.gateway.services.users.addKey(other.userId);
    const s3b = env.s3(otherKey);
    expect(await failure(s3b.send(new CreateBucketCommand({ Bucket: 'api' })))).toEqual({ name: 'BucketAlreadyExists', status: 409 });
    expect((await failure(s3b.send(new GetBucketLocationCommand({ Bucket: 'api' })))).name).toBe('AccessDenied');

    await s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'owned', Body: 'o', ExpectedBucketOwner: env.userId }));
    expect(await failure(s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'owned2', Body: 'o', ExpectedBucketOwner: other.userId })))).toEqual({ name: 'AccessDenied', status: 403 });
    expect((await failure(s3.send(new GetObjectCommand({ Bucket: 'api', Key: 'owned', ExpectedBucketOwner: other.userId })))).name).toBe('AccessDenied');
    expect((await failure(s3.send(new CopyObjectCommand({ Bucket: 'api', Key: 'owned3', CopySource: 'api/owned', ExpectedSourceBucketOwner: other.userId })))).name).toBe('AccessDenied');
    await s3.send(new CopyObjectCommand({ Bucket: 'api', Key: 'owned3', CopySource: 'api/owned', ExpectedSourceBucketOwner: env.userId, ExpectedBucketOwner: env.userId }));
    expect(await keysOf('api')).toEqual(['owned', 'owned3']);
    for (const Key of ['owned', 'owned3']) await s3.send(new DeleteObjectCommand({ Bucket: 'api', Key }));
  });
});

describe('reads and listings', () => {
  it('GET and HEAD honour If-Modified-Since (304) and If-Unmodified-Since (412)', async () => {
    await s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'cond', Body: 'c' }));
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'api', Key: 'cond' }));
    const mtime = head.LastModified!;
    const later = new Date(mtime.getTime() + 60_000);
    const earlier = new Date(mtime.getTime() - 60_000);
    for (const Command of [GetObjectCommand, HeadObjectCommand]) {
      expect((await failure(s3.send(new Command({ Bucket: 'api', Key: 'cond', IfModifiedSince: later })))).status).toBe(304);
      expect((await failure(s3.send(new Command({ Bucket: 'api', Key: 'cond', IfModifiedSince: mtime })))).status).toBe(304);
      expect((await failure(s3.send(new Command({ Bucket: 'api', Key: 'cond', IfUnmodifiedSince: earlier })))).status).toBe(412);
      await s3.send(new Command({ Bucket: 'api', Key: 'cond', IfModifiedSince: earlier, IfUnmodifiedSince: later }));
      // If-None-Match wins over If-Modified-Since, If-Match over If-Unmodified-Since (RFC 7232, as S3).
      await s3.send(new Command({ Bucket: 'api', Key: 'cond', IfNoneMatch: '"other"', IfModifiedSince: later }));
      await s3.send(new Command({ Bucket: 'api', Key: 'cond', IfMatch: head.ETag, IfUnmodifiedSince: earlier }));
    }
    await s3.send(new DeleteObjectCommand({ Bucket: 'api', Key: 'cond' }));
  });

  it('lists with encoding-type=url (control characters, spaces, unicode) and fetch-owner', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'enc' }));
    const keys = ['a b+c%d', 'ctl\u0001\u001f/x', 'dir/ü ✓', 'plain'];
    for (const Key of keys) await s3.send(new PutObjectCommand({ Bucket: 'enc', Key, Body: Key }));
    const enc = (s: string) => encodeURIComponent(s).replace(/%2F/g, '/');
    const v2 = await s3.send(new ListObjectsV2Command({ Bucket: 'enc', EncodingType: 'url' }));
    expect(v2.EncodingType).toBe('url');
    expect(v2.Contents?.map((c) => c.Key)).toEqual(keys.map(enc));
    expect(v2.Contents?.map((c) => decodeURIComponent(c.Key!))).toEqual(keys);
    expect(v2.Contents?.every((c) => c.Owner === undefined)).toBe(true);
    const delimited = await s3.send(new ListObjectsV2Command({ Bucket: 'enc', EncodingType: 'url', Delimiter: '/', Prefix: '', StartAfter: 'a b+c%d' }));
    expect(delimited.StartAfter).toBe(enc('a b+c%d'));
    expect(delimited.CommonPrefixes?.map((p) => p.Prefix)).toEqual([enc('ctl\u0001\u001f/'), 'dir/']);
    const v1 = await s3.send(new ListObjectsCommand({ Bucket: 'enc', EncodingType: 'url', Prefix: 'dir/', Marker: 'ctl' }));
    expect(v1.Contents?.map((c) => c.Key)).toEqual([enc('dir/ü ✓')]);
    expect(v1.Contents?.[0]?.Owner?.ID).toBe(env.userId);
    const owned = await s3.send(new ListObjectsV2Command({ Bucket: 'enc', FetchOwner: true, Prefix: 'plain' }));
    expect(owned.Contents?.map((c) => [c.Key, c.Owner?.ID])).toEqual([['plain', env.userId]]);
    expect((await s3.send(new ListObjectsV2Command({ Bucket: 'enc', Prefix: 'plain' }))).Contents?.[0]?.Owner).toBeUndefined();
    expect(await failure(s3.send(new ListObjectsV2Command({ Bucket: 'enc', EncodingType: 'bogus' as 'url' })))).toEqual({ name: 'InvalidArgument', status: 400 });
    expect((await failure(s3.send(new ListObjectsCommand({ Bucket: 'enc', EncodingType: 'bogus' as 'url' })))).name).toBe('InvalidArgument');
    for (const Key of keys) await s3.send(new DeleteObjectCommand({ Bucket: 'enc', Key }));
  });

  it('stores every checksum algorithm of a single PUT and returns it only with x-amz-checksum-mode', async () => {
    const body = randomBytes(300_000);
    const local: Partial<Record<ChecksumAlgorithm, string>> = {
      SHA1: createHash('sha1').update(body).digest('base64'),
      SHA256: createHash('sha256').update(body).digest('base64'),
    };
    for (const alg of ['CRC32', 'CRC32C', 'CRC64NVME', 'SHA1', 'SHA256'] as const) {
      const Key = `sum-${alg}`;
      const put = await s3.send(new PutObjectCommand({ Bucket: 'api', Key, Body: body, ChecksumAlgorithm: alg }));
      const field = `Checksum${alg}` as const;
      const value = put[field];
      expect(value, alg).toBeTruthy();
      if (local[alg]) expect(value).toBe(local[alg]);
      const plain = await s3.send(new HeadObjectCommand({ Bucket: 'api', Key }));
      expect(plain[field]).toBeUndefined();
      const head = await s3.send(new HeadObjectCommand({ Bucket: 'api', Key, ChecksumMode: 'ENABLED' }));
      expect(head[field], alg).toBe(value);
      // The SDK checks a GET's body against the checksum it is given (it fails the read otherwise).
      const got = await s3.send(new GetObjectCommand({ Bucket: 'api', Key, ChecksumMode: 'ENABLED' }));
      expect(got[field]).toBe(value);
      expect(Buffer.from(await got.Body!.transformToByteArray()).equals(body)).toBe(true);
      const ranged = await s3.send(new GetObjectCommand({ Bucket: 'api', Key, ChecksumMode: 'ENABLED', Range: 'bytes=0-9' }));
      expect(ranged[field]).toBeUndefined();
      await ranged.Body!.transformToByteArray();
      await s3.send(new DeleteObjectCommand({ Bucket: 'api', Key }));
    }
  });
});

describe('limits', () => {
  it('a PUT declaring 5 GiB + 1 byte is EntityTooLarge before its body is sent', async () => {
    const r = await presignedPut('too-large', { 'content-length': String(5 * 1024 ** 3 + 1) });
    expect(r.status).toBe(400);
    expect(r.body).toContain('<Code>EntityTooLarge</Code>');
    expect(await keysOf('api')).not.toContain('too-large');
  });

  it('a PUT without Content-Length is MissingContentLength (411)', async () => {
    // By hand: node's http client would add Content-Length: 0 itself.
    const target = await presignedTarget('no-length');
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(env.gateway.port, '127.0.0.1', () => socket.write(`PUT ${target} HTTP/1.1\r\nHost: 127.0.0.1:${env.gateway.port}\r\nConnection: close\r\n\r\n`));
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('close', () => resolve(Buffer.concat(chunks).toString()));
      socket.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 411/);
    expect(answer).toContain('<Code>MissingContentLength</Code>');
    expect(await keysOf('api')).not.toContain('no-length');
  });

  it('user metadata over 2 KiB is MetadataTooLarge; exactly 2 KiB is stored', async () => {
    const Metadata = { big: 'm'.repeat(2048 - 3) };
    await s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'meta-2k', Body: 'm', Metadata }));
    expect((await s3.send(new HeadObjectCommand({ Bucket: 'api', Key: 'meta-2k' }))).Metadata).toEqual(Metadata);
    expect(await failure(s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'meta-big', Body: 'm', Metadata: { big: 'm'.repeat(2048) } })))).toEqual({ name: 'MetadataTooLarge', status: 400 });
    expect(await keysOf('api')).not.toContain('meta-big');
    await s3.send(new DeleteObjectCommand({ Bucket: 'api', Key: 'meta-2k' }));
  });

  it('a header section over 16 KiB is RequestHeaderSectionTooLarge', async () => {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(env.gateway.port, '127.0.0.1', () => {
        socket.write(`GET /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ${'p'.repeat(20 * 1024)}\r\n\r\n`);
      });
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('close', () => resolve(Buffer.concat(chunks).toString()));
      socket.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect(answer).toContain('<Code>RequestHeaderSectionTooLarge</Code>');
  });
});

describe('conditional writes', () => {
  it('If-None-Match: * creates only; If-Match replaces only the ETag it names', async () => {
    // Bodies above the gateway's inline size (4 KiB): the refused writes' data objects are what this counts.
    const big = (s: string): string => s.padEnd(5000, '.');
    const first = await s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'cw', Body: big('one'), IfNoneMatch: '*' }));
    expect(await failure(s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'cw', Body: big('two'), IfNoneMatch: '*' })))).toEqual({ name: 'PreconditionFailed', status: 412 });
    expect(await failure(s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'cw', Body: big('two'), IfMatch: '"0123"' })))).toEqual({ name: 'PreconditionFailed', status: 412 });
    expect((await failure(s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'cw-missing', Body: 'x', IfMatch: first.ETag })))).name).toBe('NoSuchKey');
    expect((await failure(s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'cw', Body: 'x', IfNoneMatch: first.ETag })))).status).toBe(501);
    await s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'cw', Body: big('three'), IfMatch: first.ETag }));
    expect(await text((await s3.send(new GetObjectCommand({ Bucket: 'api', Key: 'cw' }))).Body)).toBe(big('three'));
    // CopyObject takes the same conditions on its destination.
    expect((await failure(s3.send(new CopyObjectCommand({ Bucket: 'api', Key: 'cw', CopySource: 'api/cw', MetadataDirective: 'REPLACE', IfNoneMatch: '*' } as never)))).status).toBe(412);
    await s3.send(new CopyObjectCommand({ Bucket: 'api', Key: 'cw-copy', CopySource: 'api/cw', IfNoneMatch: '*' } as never));
    expect(await keysOf('api')).toEqual(['cw', 'cw-copy']);
    // Only the two objects' data is left (the refused writes removed theirs).
    expect((await dataObjectsOf('api')).filter((n) => !n.includes('\0'))).toHaveLength(2);
    for (const Key of ['cw', 'cw-copy']) await s3.send(new DeleteObjectCommand({ Bucket: 'api', Key }));
  });

  it('DeleteObject with If-Match deletes only the object with that ETag', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'cond-del-v' }));
    await s3.send(new PutBucketVersioningCommand({ Bucket: 'cond-del-v', VersioningConfiguration: { Status: 'Enabled' } }));
    for (const Bucket of ['api', 'cond-del-v']) {
      const put = await s3.send(new PutObjectCommand({ Bucket, Key: 'cd', Body: 'delete me' }));
      expect(await failure(s3.send(new DeleteObjectCommand({ Bucket, Key: 'cd', IfMatch: '"0123"' })))).toEqual({ name: 'PreconditionFailed', status: 412 });
      expect(await text((await s3.send(new GetObjectCommand({ Bucket, Key: 'cd' }))).Body)).toBe('delete me');
      expect((await failure(s3.send(new DeleteObjectCommand({ Bucket, Key: 'cd', IfMatchSize: 9 })))).status).toBe(501);
      expect((await failure(s3.send(new DeleteObjectCommand({ Bucket, Key: 'cd-missing', IfMatch: put.ETag })))).name).toBe('NoSuchKey');
      if (put.VersionId) expect((await failure(s3.send(new DeleteObjectCommand({ Bucket, Key: 'cd', VersionId: put.VersionId, IfMatch: put.ETag })))).status).toBe(501);
      await s3.send(new DeleteObjectCommand({ Bucket, Key: 'cd', IfMatch: put.ETag }));
      expect((await failure(s3.send(new GetObjectCommand({ Bucket, Key: 'cd' })))).name).toBe('NoSuchKey');
    }
  });

  it('of racing If-None-Match creators exactly one wins, in unversioned and versioned buckets', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'race-v' }));
    await s3.send(new PutBucketVersioningCommand({ Bucket: 'race-v', VersioningConfiguration: { Status: 'Enabled' } }));
    for (const Bucket of ['api', 'race-v']) {
      // Above the inline size (4 KiB): each racer stores a data object, and the losers' must be gone.
      const bodies = Array.from({ length: 8 }, (_, i) => `racer ${i} ${randomBytes(2100).toString('hex')}`);
      const outcomes = await Promise.allSettled(bodies.map((Body) => s3.send(new PutObjectCommand({ Bucket, Key: 'race', Body, IfNoneMatch: '*' }))));
      const winners = outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [i] : []));
      expect(winners, Bucket).toHaveLength(1);
      for (const o of outcomes) if (o.status === 'rejected') expect((o.reason as Error).name).toBe('PreconditionFailed');
      expect(await text((await s3.send(new GetObjectCommand({ Bucket, Key: 'race' }))).Body)).toBe(bodies[winners[0]!]);
      expect((await dataObjectsOf(Bucket)).filter((n) => !n.includes('\0'))).toHaveLength(1);
    }
    // A delete marker is no object: If-None-Match: * may write over it.
    await s3.send(new DeleteObjectCommand({ Bucket: 'race-v', Key: 'race' }));
    await s3.send(new PutObjectCommand({ Bucket: 'race-v', Key: 'race', Body: 'after the marker', IfNoneMatch: '*' }));
    await s3.send(new DeleteObjectCommand({ Bucket: 'api', Key: 'race' }));
  });
});

describe('settings we do not enforce', () => {
  it('bucket configurations are NotImplemented and change nothing', async () => {
    const attempts: Array<() => Promise<unknown>> = [
      () => s3.send(new PutBucketLifecycleConfigurationCommand({ Bucket: 'api', LifecycleConfiguration: { Rules: [{ ID: 'r', Status: 'Enabled', Filter: { Prefix: '' }, Expiration: { Days: 1 } }] } })),
      () => s3.send(new PutBucketPolicyCommand({ Bucket: 'api', Policy: JSON.stringify({ Version: '2012-10-17', Statement: [] }) })),
      () => s3.send(new GetBucketPolicyCommand({ Bucket: 'api' })),
      () => s3.send(new PutObjectLockConfigurationCommand({ Bucket: 'api', ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled' } })),
      () => s3.send(new PutBucketTaggingCommand({ Bucket: 'api', Tagging: { TagSet: [{ Key: 'k', Value: 'v' }] } })),
      () => s3.send(new PutBucketEncryptionCommand({ Bucket: 'api', ServerSideEncryptionConfiguration: { Rules: [{ ApplyServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] } })),
      () => s3.send(new PutBucketWebsiteCommand({ Bucket: 'api', WebsiteConfiguration: { IndexDocument: { Suffix: 'index.html' } } })),
      () => s3.send(new PutBucketReplicationCommand({ Bucket: 'api', ReplicationConfiguration: { Role: 'r', Rules: [{ Status: 'Enabled', Destination: { Bucket: 'arn:aws:s3:::x' } }] } })),
    ];
    for (const a of attempts) expect(await failure(a())).toEqual({ name: 'NotImplemented', status: 501 });
  });

  it('object lock and ownership controls on CreateBucket are NotImplemented: no bucket is made', async () => {
    expect((await failure(s3.send(new CreateBucketCommand({ Bucket: 'locked', ObjectLockEnabledForBucket: true })))).status).toBe(501);
    expect((await failure(s3.send(new CreateBucketCommand({ Bucket: 'enforced', ObjectOwnership: 'BucketOwnerEnforced' })))).status).toBe(501);
    for (const Bucket of ['locked', 'enforced']) expect((await failure(s3.send(new ListObjectsV2Command({ Bucket })))).name).toBe('NoSuchBucket');
    // What we do is accepted when asked for explicitly.
    await s3.send(new CreateBucketCommand({ Bucket: 'writer-owned', ObjectOwnership: 'ObjectWriter', ObjectLockEnabledForBucket: false }));
    await s3.send(new DeleteBucketCommand({ Bucket: 'writer-owned' }));
  });

  it('object lock, tagging, SSE, website redirects and storage classes on writes are refused, and nothing is stored', async () => {
    await s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'target', Body: 't' }));
    const before = await dataObjectsOf('api');
    const refused: Array<[string, () => Promise<unknown>]> = [
      ['lock mode', () => s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'x1', Body: 'x', ObjectLockMode: 'GOVERNANCE', ObjectLockRetainUntilDate: new Date(Date.now() + 86_400_000) }))],
      ['legal hold', () => s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'x2', Body: 'x', ObjectLockLegalHoldStatus: 'ON' }))],
      ['tagging', () => s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'x3', Body: 'x', Tagging: 'a=b' }))],
      ['sse', () => s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'x4', Body: 'x', ServerSideEncryption: 'AES256' }))],
      ['sse-c', () => s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'x5', Body: 'x', SSECustomerAlgorithm: 'AES256', SSECustomerKey: randomBytes(32).toString('base64') }))],
      ['redirect', () => s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'x6', Body: 'x', WebsiteRedirectLocation: '/elsewhere' }))],
      ['glacier', () => s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'x7', Body: 'x', StorageClass: 'GLACIER' }))],
      ['multipart tagging', () => s3.send(new CreateMultipartUploadCommand({ Bucket: 'api', Key: 'x8', Tagging: 'a=b' }))],
      ['multipart lock', () => s3.send(new CreateMultipartUploadCommand({ Bucket: 'api', Key: 'x9', ObjectLockMode: 'COMPLIANCE', ObjectLockRetainUntilDate: new Date(Date.now() + 86_400_000) }))],
      ['copy tagging', () => s3.send(new CopyObjectCommand({ Bucket: 'api', Key: 'x10', CopySource: 'api/target', TaggingDirective: 'REPLACE', Tagging: 'a=b' }))],
      ['copy sse', () => s3.send(new CopyObjectCommand({ Bucket: 'api', Key: 'x11', CopySource: 'api/target', ServerSideEncryption: 'aws:kms' }))],
      ['object tagging', () => s3.send(new PutObjectTaggingCommand({ Bucket: 'api', Key: 'target', Tagging: { TagSet: [{ Key: 'a', Value: 'b' }] } }))],
      ['get tagging', () => s3.send(new GetObjectTaggingCommand({ Bucket: 'api', Key: 'target' }))],
      ['retention', () => s3.send(new PutObjectRetentionCommand({ Bucket: 'api', Key: 'target', Retention: { Mode: 'GOVERNANCE', RetainUntilDate: new Date(Date.now() + 86_400_000) } }))],
      ['legal hold on object', () => s3.send(new PutObjectLegalHoldCommand({ Bucket: 'api', Key: 'target', LegalHold: { Status: 'ON' } }))],
    ];
    for (const [what, p] of refused) expect(await failure(p()), what).toEqual({ name: 'NotImplemented', status: 501 });
    expect(await failure(s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'x12', Body: 'x', StorageClass: 'COLD' as StorageClass })))).toEqual({ name: 'InvalidStorageClass', status: 400 });
    // STANDARD is what every object is: accepted.
    await s3.send(new PutObjectCommand({ Bucket: 'api', Key: 'standard', Body: 's'.repeat(5000), StorageClass: 'STANDARD' })); // above the inline size: one data object
    expect(await keysOf('api')).toEqual(['standard', 'target']);
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: 'api' }))).Uploads ?? []).toEqual([]);
    expect((await dataObjectsOf('api')).filter((n) => !n.includes('\0'))).toHaveLength(before.filter((n) => !n.includes('\0')).length + 1);
    for (const Key of ['standard', 'target']) await s3.send(new DeleteObjectCommand({ Bucket: 'api', Key }));
  });
});
