/**
 * Bad input against the real gateway on a real cluster (startS3Env), each
 * from a real client (the AWS SDK v3, its presigner, or a raw socket where no
 * client would misbehave on purpose): wrong secret, tampered signature,
 * expired presigned URL, skewed clocks, a body shorter than its
 * Content-Length, wrong and invalid Content-MD5, wrong checksum header and
 * trailer, a body changed after signing, malformed XML, invalid bucket names,
 * 1025-byte keys. Each gets the right S3 error and HTTP status, and nothing
 * is stored: the bucket listing is unchanged and no data object of the
 * bucket is left in the pool. And input that looks bad but is valid S3:
 * keys with "../" (S3 keys are opaque: stored and listed verbatim, in their
 * bucket, never resolved as paths), unicode keys (NFC and NFD are different
 * keys; listing in UTF-8 byte order) and 1024-byte keys.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { request as httpRequest } from 'node:http';
import { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type PutObjectCommandInput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';

let env: S3TestEnv;
let s3: S3Client;
const BUCKET = 'bad-input';

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
}, 120_000);
afterAll(async () => {
  await env?.stop();
});

function client(config: Partial<S3ClientConfig> = {}): S3Client {
  const c = new S3Client({ endpoint: env.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }, maxAttempts: 1, ...config });
  made.push(c);
  return c;
}
const made: S3Client[] = [];
afterAll(() => made.forEach((c) => c.destroy()));

async function failure(p: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode };
  }
  throw new Error('the request succeeded');
}

/** Every key of a bucket (ListObjectsV2, all pages). */
async function keysOf(bucket: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ...(token ? { ContinuationToken: token } : {}) }));
    keys.push(...(page.Contents ?? []).map((c) => c.Key!));
    token = page.NextContinuationToken;
  } while (token);
  return keys;
}

/** The bucket's data objects in the pool (manifests and pieces are named "<bucket id>/..."). */
async function dataObjectsOf(bucket: string): Promise<string[]> {
  const record = (await env.gateway.services.buckets.get(bucket))!;
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.cluster.client.list(record.dataPool, { limit: 1000, ...(cursor ? { cursor } : {}) });
    names.push(...page.names.filter((n) => n.startsWith(`${record.id}/`)));
    cursor = page.cursor;
  } while (cursor);
  return names;
}

/** Nothing of a refused request remains: the listing is what it was, and so are the data objects. */
async function expectUnchanged(bucket: string, before: { keys: string[]; data: string[] }): Promise<void> {
  expect(await keysOf(bucket)).toEqual(before.keys);
  await expect.poll(async () => (await dataObjectsOf(bucket)).sort(), { timeout: 10_000 }).toEqual([...before.data].sort());
}

async function snapshot(bucket: string): Promise<{ keys: string[]; data: string[] }> {
  return { keys: await keysOf(bucket), data: await dataObjectsOf(bucket) };
}

/** A PUT that must fail with `code`/`status` and store nothing. */
async function refusedPut(c: S3Client, input: Omit<PutObjectCommandInput, 'Bucket'>, code: string, status: number): Promise<void> {
  const before = await snapshot(BUCKET);
  expect(await failure(c.send(new PutObjectCommand({ Bucket: BUCKET, ...input })))).toEqual({ name: code, status });
  await expectUnchanged(BUCKET, before);
}

type HttpRequest = Parameters<NodeHttpHandler['handle']>[0];

/** A request handler that changes the signed request (headers, body bytes) before sending it. */
class TamperingHandler extends NodeHttpHandler {
  constructor(private readonly mutate: (request: HttpRequest, body: Buffer | null) => Buffer | null) {
    super();
  }
  override async handle(request: HttpRequest, options?: Parameters<NodeHttpHandler['handle']>[1]): ReturnType<NodeHttpHandler['handle']> {
    let body: Buffer | null = null;
    const source: unknown = request.body;
    if (source instanceof Readable) {
      const parts: Buffer[] = [];
      for await (const part of source) parts.push(Buffer.from(part as Uint8Array));
      body = Buffer.concat(parts);
    } else if (typeof source === 'string' || source instanceof Uint8Array) {
      body = Buffer.from(source);
    }
    const changed = this.mutate(request, body);
    request.body = changed ?? body ?? request.body;
    if (changed !== null && request.headers['content-length'] !== undefined) request.headers['content-length'] = String(changed.length);
    return super.handle(request, options);
  }
}

const data = (n: number, seed: string): Buffer => {
  const out = Buffer.alloc(n);
  let block = createHash('sha256').update(seed).digest();
  for (let o = 0; o < n; o += 32) {
    block.copy(out, o);
    block = createHash('sha256').update(block).digest();
  }
  return out;
};

describe('authentication', () => {
  it('a wrong secret is SignatureDoesNotMatch, an unknown key InvalidAccessKeyId', async () => {
    await refusedPut(client({ credentials: { accessKeyId: env.accessKeyId, secretAccessKey: `${env.secretAccessKey.slice(0, -1)}x` } }), { Key: 'wrong-secret', Body: 'x' }, 'SignatureDoesNotMatch', 403);
    await refusedPut(client({ credentials: { accessKeyId: 'TKNOSUCHKEY0000000', secretAccessKey: env.secretAccessKey } }), { Key: 'unknown-key', Body: 'x' }, 'InvalidAccessKeyId', 403);
  });

  it('a tampered signature or signed header is SignatureDoesNotMatch', async () => {
    const flipLast = (v: string): string => v.slice(0, -1) + (v.endsWith('0') ? '1' : '0');
    await refusedPut(client({ requestHandler: new TamperingHandler((r) => ((r.headers.authorization = flipLast(r.headers.authorization!)), null)) }), { Key: 'tampered-sig', Body: 'x' }, 'SignatureDoesNotMatch', 403);
    // One second later: still a valid time, but not the signed one.
    const nextSecond = (d: string): string => `${d.slice(0, -2)}${(Number(d.at(-2)) + 1) % 10}Z`;
    await refusedPut(client({ requestHandler: new TamperingHandler((r) => ((r.headers['x-amz-date'] = nextSecond(r.headers['x-amz-date']!)), null)) }), { Key: 'tampered-date', Body: 'x' }, 'SignatureDoesNotMatch', 403);
    // Not a time at all: S3 says AccessDenied ("AWS authentication requires a valid Date or x-amz-date header").
    await refusedPut(client({ requestHandler: new TamperingHandler((r) => ((r.headers['x-amz-date'] = 'yesterday'), null)) }), { Key: 'garbled-date', Body: 'x' }, 'AccessDenied', 403);
  });

  it('an expired presigned URL is AccessDenied (PUT and GET)', async () => {
    const signer = client({ requestChecksumCalculation: 'WHEN_REQUIRED' });
    const before = await snapshot(BUCKET);
    const expiredPut = await getSignedUrl(signer, new PutObjectCommand({ Bucket: BUCKET, Key: 'expired' }), { expiresIn: 60, signingDate: new Date(Date.now() - 120_000) });
    const put = await fetch(expiredPut, { method: 'PUT', body: 'too late' });
    expect(put.status).toBe(403);
    expect(await put.text()).toContain('<Code>AccessDenied</Code>');
    await expectUnchanged(BUCKET, before);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'present', Body: 'here' }));
    const expiredGet = await getSignedUrl(signer, new GetObjectCommand({ Bucket: BUCKET, Key: 'present' }), { expiresIn: 1, signingDate: new Date(Date.now() - 5_000) });
    const got = await fetch(expiredGet);
    expect(got.status).toBe(403);
    expect(await got.text()).toContain('<Code>AccessDenied</Code>');
    // The same URL, fresh, works: it was the expiry.
    expect(await (await fetch(await getSignedUrl(signer, new GetObjectCommand({ Bucket: BUCKET, Key: 'present' }), { expiresIn: 60 }))).text()).toBe('here');
  });

  it('a clock skewed by more than 15 minutes either way is RequestTimeTooSkewed', async () => {
    await refusedPut(client({ systemClockOffset: -20 * 60_000 }), { Key: 'skew-behind', Body: 'x' }, 'RequestTimeTooSkewed', 403);
    await refusedPut(client({ systemClockOffset: 20 * 60_000 }), { Key: 'skew-ahead', Body: 'x' }, 'RequestTimeTooSkewed', 403);
    await client({ systemClockOffset: -10 * 60_000 }).send(new PutObjectCommand({ Bucket: BUCKET, Key: 'skew-within', Body: 'x' }));
    expect(await keysOf(BUCKET)).toContain('skew-within');
  });
});

describe('bodies', () => {
  /** Sends a presigned PUT by hand: headers declaring contentLength, then only `sent` bytes, then how the client goes away. */
  async function shortBody(key: string, o: { contentLength: number; sent: number; then: 'half-close' | 'reset' }): Promise<string | null> {
    const url = new URL(await getSignedUrl(client({ requestChecksumCalculation: 'WHEN_REQUIRED' }), new PutObjectCommand({ Bucket: BUCKET, Key: key }), { expiresIn: 600 }));
    const socket = connect(Number(url.port), '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    let reply = '';
    socket.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write(`PUT ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: ${o.contentLength}\r\n\r\n`);
    socket.write(data(o.sent, key));
    await new Promise((resolve) => setTimeout(resolve, 300));
    if (o.then === 'half-close') socket.end();
    else socket.resetAndDestroy();
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 10_000))]);
    socket.destroy();
    return reply === '' ? null : reply;
  }

  it('a body shorter than its Content-Length (raw socket): IncompleteBody if the client still listens, and nothing stored', async () => {
    const before = await snapshot(BUCKET);
    const halfClosed = await shortBody('short-half-closed', { contentLength: 100_000, sent: 40_000, then: 'half-close' });
    // A client that half-closes can still read the answer: IncompleteBody, as S3 XML.
    expect(halfClosed).toMatch(/^HTTP\/1\.1 400[\s\S]*<Code>IncompleteBody<\/Code>/);
    await shortBody('short-reset', { contentLength: 3 * 1024 * 1024, sent: 1024 * 1024 + 5, then: 'reset' });
    await expectUnchanged(BUCKET, before);
    // The gateway is still fine.
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'after-short', Body: 'ok' }));
  });

  it('a wrong Content-MD5 is BadDigest, a malformed one InvalidDigest', async () => {
    const body = data(20_000, 'md5');
    const otherMd5 = createHash('md5').update('something else').digest('base64');
    await refusedPut(s3, { Key: 'md5-wrong', Body: body, ContentMD5: otherMd5 }, 'BadDigest', 400);
    await refusedPut(client({ requestChecksumCalculation: 'WHEN_REQUIRED' }), { Key: 'md5-wrong-unsigned', Body: Readable.from([body]), ContentLength: body.length, ContentMD5: otherMd5 }, 'BadDigest', 400);
    await refusedPut(s3, { Key: 'md5-invalid', Body: body, ContentMD5: 'not-an-md5' }, 'InvalidDigest', 400);
  });

  it('a wrong checksum, in a header or in the aws-chunked trailer, is BadDigest', async () => {
    const body = data(50_000, 'crc');
    await refusedPut(s3, { Key: 'crc-header', Body: body, ChecksumCRC32: 'AAAAAA==' }, 'BadDigest', 400);
    await refusedPut(s3, { Key: 'sha256-header', Body: body, ChecksumSHA256: createHash('sha256').update('other').digest('base64') }, 'BadDigest', 400);
    // The SDK's default for a stream: aws-chunked with a CRC32 trailer; the trailer's value is replaced on the way.
    const trailer = client({
      requestHandler: new TamperingHandler((r, b) => {
        expect(r.headers['x-amz-trailer']).toBe('x-amz-checksum-crc32');
        return Buffer.from(b!.toString('latin1').replace(/x-amz-checksum-crc32:[^\r]*/, 'x-amz-checksum-crc32:AAAAAA=='), 'latin1');
      }),
    });
    await refusedPut(trailer, { Key: 'crc-trailer', Body: Readable.from([body.subarray(0, 20_000), body.subarray(20_000)]), ContentLength: body.length }, 'BadDigest', 400);
    const crc32c = client({ requestHandler: new TamperingHandler((_r, b) => Buffer.from(b!.toString('latin1').replace(/x-amz-checksum-crc32c:[^\r]*/, 'x-amz-checksum-crc32c:AAAAAA=='), 'latin1')) });
    await refusedPut(crc32c, { Key: 'crc32c-trailer', Body: Readable.from([body]), ContentLength: body.length, ChecksumAlgorithm: 'CRC32C' }, 'BadDigest', 400);
  });

  it('a body changed after signing is XAmzContentSHA256Mismatch', async () => {
    const body = data(5000, 'sha');
    const flip = new TamperingHandler((_r, b) => Buffer.concat([Buffer.from([b![0]! ^ 1]), b!.subarray(1)]));
    await refusedPut(client({ requestHandler: flip }), { Key: 'changed-body', Body: body }, 'XAmzContentSHA256Mismatch', 400);
  });
});

describe('requests', () => {
  /** A client whose CreateBucket body is replaced (before signing) by `xml`. */
  function withCreateBucketBody(xml: string): S3Client {
    const c = client();
    c.middlewareStack.add(
      (next) => async (args) => {
        const r = args.request as HttpRequest;
        r.body = xml;
        r.headers['content-length'] = String(Buffer.byteLength(xml));
        return next(args);
      },
      { step: 'build', priority: 'low', name: 'replaceCreateBucketBody' },
    );
    return c;
  }

  it('malformed XML in CreateBucket is MalformedXML, and no bucket is created', async () => {
    const before = (await s3.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name);
    const documents = [
      '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>us-east-1</LocationConstraint>',
      '<CreateBucketConfiguration><LocationConstraint>us-east-1</Location></CreateBucketConfiguration>',
      'not xml at all',
      '<?xml version="1.0"?><SomethingElse/>',
    ];
    for (const [i, xml] of documents.entries()) {
      const name = `malformed-${i}`;
      expect(await failure(withCreateBucketBody(xml).send(new CreateBucketCommand({ Bucket: name, CreateBucketConfiguration: { LocationConstraint: 'us-east-2' } })))).toEqual({ name: 'MalformedXML', status: 400 });
      expect((await failure(s3.send(new HeadBucketCommand({ Bucket: name })))).status).toBe(404);
    }
    expect((await s3.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toEqual(before);
  });

  it('invalid bucket names are InvalidBucketName, and no bucket is created', async () => {
    const before = (await s3.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name);
    const names = ['ab', 'a'.repeat(64), 'UpperCase', 'under_score', '-leading', 'trailing-', 'double..dot', 'dot.-dash', '192.168.5.4', 'xn--punycode', 'bucket-s3alias', 'spa ce', 'ünï'];
    for (const name of names) {
      expect(await failure(s3.send(new CreateBucketCommand({ Bucket: name }))), name).toEqual({ name: 'InvalidBucketName', status: 400 });
    }
    expect((await s3.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toEqual(before);
  });

  it('keys over 1024 bytes are KeyTooLongError; 1024-byte keys, ASCII or not, are fine', async () => {
    const before = await snapshot(BUCKET);
    const tooLong = ['k'.repeat(1025), `${'€'.repeat(341)}ab`]; // 1025 bytes each (€ is 3 bytes)
    for (const Key of tooLong) {
      expect(Buffer.byteLength(Key)).toBe(1025);
      expect(await failure(s3.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: 'x' })))).toEqual({ name: 'KeyTooLongError', status: 400 });
    }
    await expectUnchanged(BUCKET, before);
    const longest = ['k'.repeat(1024), `${'€'.repeat(341)}a`, `${'😀'.repeat(256)}`];
    for (const [i, Key] of longest.entries()) {
      expect(Buffer.byteLength(Key)).toBe(1024);
      const body = data(100 + i, Key);
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: body }));
      expect(Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key }))).Body!.transformToByteArray()).equals(body)).toBe(true);
    }
    const keys = await keysOf(BUCKET);
    for (const Key of longest) expect(keys).toContain(Key);
  });

  it('a response-* override a header cannot carry (a line break) is InvalidArgument, and the same connection serves on', async () => {
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'override', Body: 'override' }));
    const one = client({ requestHandler: new NodeHttpHandler({ httpAgent: new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 1 }) }) });
    for (const ResponseContentType of ['text/plain\r\nx-injected: 1', 'a\nb', 'nul\u0000']) {
      expect(await failure(one.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'override', ResponseContentType })))).toEqual({ name: 'InvalidArgument', status: 400 });
    }
    const fine = await one.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'override', ResponseContentType: 'text/x-fine' }));
    expect(fine.ContentType).toBe('text/x-fine');
    expect(await fine.Body!.transformToString()).toBe('override');
  });
});

describe('keys that look like paths or are not ASCII: valid S3, stored verbatim', () => {
  const bucket = 'odd-keys';
  const other = 'odd-keys-other';

  /** A presigned PUT of key, its request target sent exactly as signed (WHATWG URL parsing, as in fetch, would resolve the dot segments). */
  async function rawPresignedPut(key: string, body: string): Promise<{ status: number; target: string }> {
    const signed = await getSignedUrl(client({ requestChecksumCalculation: 'WHEN_REQUIRED' }), new PutObjectCommand({ Bucket: bucket, Key: key }), { expiresIn: 600 });
    const m = /^http:\/\/127\.0\.0\.1:(\d+)(\/.*)$/.exec(signed)!;
    const target = m[2]!;
    return new Promise((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: Number(m[1]), method: 'PUT', path: target, headers: { 'content-length': Buffer.byteLength(body) } }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode!, target }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  it('"../", "./", ".." and "." in keys are part of the key, never a way out of the bucket', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await s3.send(new CreateBucketCommand({ Bucket: other }));
    const keys = ['../escape.txt', '../../../etc/passwd', `../${other}/planted`, 'a/../b', 'a/./b', './c', '..', '.', 'd/..', 'e/.', 'f//g', '/leading-slash', '..\\windows'];
    for (const Key of keys) await s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body: `content of ${Key}` }));
    for (const Key of keys) expect(await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key }))).Body!.transformToString(), Key).toBe(`content of ${Key}`);
    expect(await keysOf(bucket)).toEqual([...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    expect(await keysOf(other)).toEqual([]);
    // A request target with dot segments, sent as signed: it names a key of its bucket, nothing else.
    const raw = await rawPresignedPut(`../${other}/raw`, 'raw');
    expect(raw.target.startsWith(`/${bucket}/../${other}/raw?`)).toBe(true);
    expect(raw.status).toBe(200);
    expect(await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `../${other}/raw` }))).Body!.transformToString()).toBe('raw');
    expect(await keysOf(other)).toEqual([]);
    expect((await s3.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).not.toContain('..');
  });

  it('unicode keys round-trip exactly; NFC and NFD are different keys; listing is in UTF-8 byte order', async () => {
    const nfc = 'caf\u00e9';
    const nfd = 'cafe\u0301';
    const keys = [nfc, nfd, 'ключ/значение', '日本語/ファイル.txt', 'emoji/😀🎉', 'rtl/שלום', 'mixed/a\u00a0b', 'z\u{10ffff}', 'tab\there', 'new\nline'];
    for (const Key of keys) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `u/${Key}`, Body: Key }));
    for (const Key of keys) expect(await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `u/${Key}` }))).Body!.transformToString()).toBe(Key);
    const listed = (await keysOf(bucket)).filter((k) => k.startsWith('u/'));
    expect(listed).toEqual(keys.map((k) => `u/${k}`).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    expect(listed).toContain(`u/${nfc}`);
    expect(listed).toContain(`u/${nfd}`);
  });
});
