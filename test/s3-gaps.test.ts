/**
 * S3 gaps of issue 5, against the real gateway on a real cluster
 * (startS3Env) through @aws-sdk/client-s3 with default settings:
 * - ListBuckets pagination as the current AWS API: max-buckets,
 *   continuation-token (ContinuationToken in the answer), prefix,
 *   bucket-region (BucketRegion per bucket); only the caller's buckets;
 * - Owner DisplayName from the user record in ListBuckets, ListObjects v1,
 *   ListObjectsV2 with fetch-owner, ListObjectVersions, ListParts and
 *   ListMultipartUploads (Initiator and Owner);
 * - conditional CompleteMultipartUpload: If-None-Match: * and If-Match,
 *   decided with the commit (a refused complete leaves the upload open and
 *   the object untouched; of two racing If-None-Match completes one wins);
 * - small (inline) objects answered from one buffer: whole, ranged, suffix
 *   ranges, empty, conditional;
 * - virtual-host-style addressing under `tessera s3 --domain` (a gateway
 *   process with two domains; the SDK's default addressing against a custom
 *   endpoint, its host names resolved to 127.0.0.1 by the HTTP agent).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent } from 'node:http';
import type { LookupFunction } from 'node:net';
import { createInterface } from 'node:readline';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListBucketsCommand,
  ListMultipartUploadsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  ListPartsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  paginateListBuckets,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { startS3Env, errorOf, bytes, type S3TestEnv } from './helpers/s3.js';
import { tesseraBin } from './helpers/daemon-process.js';

let env: S3TestEnv;
let s3: S3Client;

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
}, 120_000);
afterAll(async () => {
  await env?.stop();
});

describe('ListBuckets', () => {
  it('pages with max-buckets and continuation-token, filters by prefix and bucket-region, lists only the caller', async () => {
    const names = ['lb-a', 'lb-b', 'lb-c', 'lb-d', 'lb-e', 'other-x'];
    for (const n of names) await s3.send(new CreateBucketCommand({ Bucket: n }));
    const someone = await env.gateway.services.users.create({ displayName: 'someone' });
    const key = await env.gateway.services.users.addKey(someone.userId);
    await env.s3(key).send(new CreateBucketCommand({ Bucket: 'lb-someone' }));

    const first = await s3.send(new ListBucketsCommand({ MaxBuckets: 2, Prefix: 'lb-' }));
    expect(first.Buckets?.map((b) => b.Name)).toEqual(['lb-a', 'lb-b']);
    expect(first.Buckets?.every((b) => b.BucketRegion === 'us-east-1' && b.CreationDate instanceof Date)).toBe(true);
    expect(first.ContinuationToken).toBeTruthy();
    expect(first.Prefix).toBe('lb-');
    const second = await s3.send(new ListBucketsCommand({ MaxBuckets: 2, Prefix: 'lb-', ContinuationToken: first.ContinuationToken }));
    expect(second.Buckets?.map((b) => b.Name)).toEqual(['lb-c', 'lb-d']);
    const third = await s3.send(new ListBucketsCommand({ MaxBuckets: 2, Prefix: 'lb-', ContinuationToken: second.ContinuationToken }));
    expect(third.Buckets?.map((b) => b.Name)).toEqual(['lb-e']); // lb-someone is another user's
    expect(third.ContinuationToken).toBeUndefined();

    // The SDK's paginator follows ContinuationToken to the end.
    const all: string[] = [];
    for await (const page of paginateListBuckets({ client: s3, pageSize: 4 }, {})) all.push(...(page.Buckets ?? []).map((b) => b.Name!));
    expect(all.filter((n) => names.includes(n))).toEqual(names);
    expect(all).not.toContain('lb-someone');

    // Without max-buckets: all of them, no token.
    const whole = await s3.send(new ListBucketsCommand({}));
    expect(whole.ContinuationToken).toBeUndefined();
    expect(whole.Buckets?.map((b) => b.Name)).toEqual(expect.arrayContaining(names));

    expect((await s3.send(new ListBucketsCommand({ BucketRegion: 'us-east-1', Prefix: 'other-' }))).Buckets?.map((b) => b.Name)).toEqual(['other-x']);
    expect((await s3.send(new ListBucketsCommand({ BucketRegion: 'eu-west-3' }))).Buckets ?? []).toEqual([]);
    expect(await errorOf(s3.send(new ListBucketsCommand({ MaxBuckets: 0 })))).toEqual({ name: 'InvalidArgument', status: 400 });
    expect(await errorOf(s3.send(new ListBucketsCommand({ MaxBuckets: 10_001 })))).toEqual({ name: 'InvalidArgument', status: 400 });
    expect(await errorOf(s3.send(new ListBucketsCommand({ ContinuationToken: '!!!' })))).toEqual({ name: 'InvalidArgument', status: 400 });
  });
});

describe('Owner DisplayName', () => {
  it('comes from the user record in every listing that names an owner', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'owners' }));
    await s3.send(new PutObjectCommand({ Bucket: 'owners', Key: 'k', Body: 'x' }));
    const me = { ID: env.userId, DisplayName: 'tester' };

    expect((await s3.send(new ListBucketsCommand({}))).Owner).toEqual(me);
    expect((await s3.send(new ListObjectsCommand({ Bucket: 'owners' }))).Contents?.[0]?.Owner).toEqual(me);
    expect((await s3.send(new ListObjectsV2Command({ Bucket: 'owners', FetchOwner: true }))).Contents?.[0]?.Owner).toEqual(me);
    expect((await s3.send(new ListObjectsV2Command({ Bucket: 'owners' }))).Contents?.[0]?.Owner).toBeUndefined();

    await s3.send(new PutBucketVersioningCommand({ Bucket: 'owners', VersioningConfiguration: { Status: 'Enabled' } }));
    await s3.send(new DeleteObjectCommand({ Bucket: 'owners', Key: 'k' }));
    const versions = await s3.send(new ListObjectVersionsCommand({ Bucket: 'owners' }));
    expect(versions.Versions?.[0]?.Owner).toEqual(me);
    expect(versions.DeleteMarkers?.[0]?.Owner).toEqual(me);

    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'owners', Key: 'mp' }));
    await s3.send(new UploadPartCommand({ Bucket: 'owners', Key: 'mp', UploadId, PartNumber: 1, Body: 'part' }));
    const parts = await s3.send(new ListPartsCommand({ Bucket: 'owners', Key: 'mp', UploadId }));
    expect(parts.Initiator).toEqual(me);
    expect(parts.Owner).toEqual(me);
    const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: 'owners' }));
    expect(uploads.Uploads?.[0]?.Initiator).toEqual(me);
    expect(uploads.Uploads?.[0]?.Owner).toEqual(me);
  });
});

describe('conditional CompleteMultipartUpload', () => {
  /** A one-part upload of `body` to key (the last part may be small), ready to complete. */
  async function upload(bucket: string, key: string, body: string): Promise<{ UploadId: string; Parts: Array<{ PartNumber: number; ETag: string }> }> {
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    const { ETag } = await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 1, Body: body }));
    return { UploadId: UploadId!, Parts: [{ PartNumber: 1, ETag: ETag! }] };
  }
  const complete = (bucket: string, key: string, u: { UploadId: string; Parts: Array<{ PartNumber: number; ETag: string }> }, condition: { IfNoneMatch?: string; IfMatch?: string } = {}) =>
    s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: u.UploadId, MultipartUpload: { Parts: u.Parts }, ...condition }));
  const read = async (bucket: string, key: string) => (await bytes((await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body)).toString();

  it('If-None-Match: * creates only; a refused complete keeps the upload open and the object as it was', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'cmp' }));
    const a = await upload('cmp', 'new', 'first');
    await complete('cmp', 'new', a, { IfNoneMatch: '*' });
    expect(await read('cmp', 'new')).toBe('first');

    const b = await upload('cmp', 'new', 'second');
    expect(await errorOf(complete('cmp', 'new', b, { IfNoneMatch: '*' }))).toEqual({ name: 'PreconditionFailed', status: 412 });
    expect(await read('cmp', 'new')).toBe('first');
    expect((await s3.send(new ListPartsCommand({ Bucket: 'cmp', Key: 'new', UploadId: b.UploadId }))).Parts?.length).toBe(1);
    // The same upload completes unconditionally afterwards.
    await complete('cmp', 'new', b);
    expect(await read('cmp', 'new')).toBe('second');
    // A retry of a complete that succeeded gets the same answer, conditions or not.
    expect((await complete('cmp', 'new', b, { IfNoneMatch: '*' })).ETag).toBeTruthy();
    expect(await errorOf(complete('cmp', 'other', b, { IfNoneMatch: 'etag' }))).toEqual({ name: 'NotImplemented', status: 501 });
  });

  it('If-Match replaces only that object; NoSuchKey when there is none', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'cmp-match' }));
    const put = await s3.send(new PutObjectCommand({ Bucket: 'cmp-match', Key: 'k', Body: 'v1' }));
    const a = await upload('cmp-match', 'k', 'v2');
    expect(await errorOf(complete('cmp-match', 'k', a, { IfMatch: '"0123456789abcdef0123456789abcdef"' }))).toEqual({ name: 'PreconditionFailed', status: 412 });
    expect(await read('cmp-match', 'k')).toBe('v1');
    await complete('cmp-match', 'k', a, { IfMatch: put.ETag! });
    expect(await read('cmp-match', 'k')).toBe('v2');
    const missing = await upload('cmp-match', 'absent', 'x');
    expect(await errorOf(complete('cmp-match', 'absent', missing, { IfMatch: put.ETag! }))).toEqual({ name: 'NoSuchKey', status: 404 });
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: 'cmp-match' }))).Uploads?.map((u) => u.UploadId)).toEqual([missing.UploadId]);
  });

  it('of racing If-None-Match: * completes of one new key exactly one wins', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'cmp-race' }));
    const ups = await Promise.all(Array.from({ length: 4 }, (_, i) => upload('cmp-race', 'race', `body-${i}`)));
    const outcomes = await Promise.allSettled(ups.map((u) => complete('cmp-race', 'race', u, { IfNoneMatch: '*' })));
    const won = outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [i] : []));
    expect(won.length).toBe(1);
    for (const o of outcomes) if (o.status === 'rejected') expect((o.reason as Error).name).toBe('PreconditionFailed');
    expect(await read('cmp-race', 'race')).toBe(`body-${won[0]}`);
  });
});

describe('small objects', () => {
  it('GET answers inline objects whole, by range and suffix range, empty, and with conditions', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'inline' }));
    const body = Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 251));
    const put = await s3.send(new PutObjectCommand({ Bucket: 'inline', Key: 'k', Body: body, ContentType: 'text/x-test' }));
    const whole = await s3.send(new GetObjectCommand({ Bucket: 'inline', Key: 'k' }));
    expect(whole.ContentLength).toBe(4096);
    expect(whole.ContentType).toBe('text/x-test');
    expect(whole.ETag).toBe(put.ETag);
    expect((await bytes(whole.Body)).equals(body)).toBe(true);
    const ranged = await s3.send(new GetObjectCommand({ Bucket: 'inline', Key: 'k', Range: 'bytes=100-199' }));
    expect(ranged.ContentRange).toBe('bytes 100-199/4096');
    expect((await bytes(ranged.Body)).equals(body.subarray(100, 200))).toBe(true);
    const suffix = await s3.send(new GetObjectCommand({ Bucket: 'inline', Key: 'k', Range: 'bytes=-10' }));
    expect((await bytes(suffix.Body)).equals(body.subarray(4086))).toBe(true);
    await s3.send(new PutObjectCommand({ Bucket: 'inline', Key: 'empty', Body: Buffer.alloc(0) }));
    expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'inline', Key: 'empty' }))).Body)).length).toBe(0);
    expect(await errorOf(s3.send(new GetObjectCommand({ Bucket: 'inline', Key: 'k', IfNoneMatch: put.ETag })))).toMatchObject({ status: 304 });
    expect(await errorOf(s3.send(new GetObjectCommand({ Bucket: 'inline', Key: 'k', Range: 'bytes=5000-' })))).toEqual({ name: 'InvalidRange', status: 416 });
  });
});

describe('virtual-host-style addressing under --domain', () => {
  let child: ChildProcess | null = null;
  afterAll(() => {
    child?.kill('SIGKILL');
  });

  it('`tessera s3 --domain` serves bucket.<domain> for each domain, and path-style still', async () => {
    child = spawn(
      process.execPath,
      [tesseraBin, 's3', '--map', `127.0.0.1:${env.cluster.mapd.port}`, '--listen', '127.0.0.1:0', '--meta-pool', 'rep', '--data-pool', 'rep', '--domain', 'example.test', '--domain', 's3.example.test'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: child!.stdout! }).on('line', (line) => {
        if (line.includes('"listening"')) resolve((JSON.parse(line) as { port: number }).port);
      });
      child!.once('exit', (code) => reject(new Error(`tessera s3 exited ${code}: ${stderr}`)));
    });
    // Every host name resolves to the gateway, as a wildcard DNS record would.
    const lookup = ((_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) => {
      if (opts?.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
      else cb(null, '127.0.0.1', 4);
    }) as unknown as LookupFunction;
    const clients: S3Client[] = [];
    const client = (endpoint: string, forcePathStyle = false): { c: S3Client; hosts: string[] } => {
      const c = new S3Client({
        endpoint,
        region: 'us-east-1',
        forcePathStyle,
        credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
        maxAttempts: 1,
        requestHandler: new NodeHttpHandler({ httpAgent: new Agent({ keepAlive: false, lookup }) }),
      });
      const hosts: string[] = [];
      c.middlewareStack.add((next) => async (args) => {
        hosts.push((args.request as { hostname: string }).hostname);
        return next(args);
      }, { step: 'finalizeRequest', name: 'recordHost' });
      clients.push(c);
      return { c, hosts };
    };
    try {
      const deep = client(`http://s3.example.test:${port}`);
      await deep.c.send(new CreateBucketCommand({ Bucket: 'vh-one' }));
      await deep.c.send(new PutObjectCommand({ Bucket: 'vh-one', Key: 'a/b c', Body: 'under s3.example.test' }));
      expect((await bytes((await deep.c.send(new GetObjectCommand({ Bucket: 'vh-one', Key: 'a/b c' }))).Body)).toString()).toBe('under s3.example.test');
      expect((await deep.c.send(new ListObjectsV2Command({ Bucket: 'vh-one' }))).Contents?.map((o) => o.Key)).toEqual(['a/b c']);
      // The longest domain names the bucket: vh-one.s3.example.test is bucket vh-one, not "vh-one.s3".
      expect(new Set(deep.hosts)).toEqual(new Set(['vh-one.s3.example.test']));
      // ListBuckets goes to the domain itself.
      expect((await deep.c.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toContain('vh-one');
      expect(deep.hosts).toContain('s3.example.test');

      const shallow = client(`http://example.test:${port}`);
      expect((await bytes((await shallow.c.send(new GetObjectCommand({ Bucket: 'vh-one', Key: 'a/b c' }))).Body)).toString()).toBe('under s3.example.test');
      expect(shallow.hosts).toEqual(['vh-one.example.test']);

      const path = client(`http://127.0.0.1:${port}`, true);
      expect((await bytes((await path.c.send(new GetObjectCommand({ Bucket: 'vh-one', Key: 'a/b c' }))).Body)).toString()).toBe('under s3.example.test');
    } finally {
      for (const c of clients) c.destroy();
    }
  });

  it('a bad --domain stops `tessera s3` with a one-line error', async () => {
    const bad = spawn(process.execPath, [tesseraBin, 's3', '--map', `127.0.0.1:${env.cluster.mapd.port}`, '--listen', '127.0.0.1:0', '--domain', 'http://example.test:9000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    bad.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => bad.once('exit', (c) => resolve(c)));
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/--domain/);
  });
});
