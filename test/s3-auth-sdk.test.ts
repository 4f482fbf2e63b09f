/**
 * gateways/s3/auth against the real AWS SDK v3: a tiny fastify server on
 * 127.0.0.1 runs SigV4Verifier and the body verifier on every request and
 * records the decoded body; S3Client (path style, us-east-1) and the S3
 * presigner talk to it with their default settings and with checksum
 * variants. Proves: every way the SDK signs and frames a PutObject (hex
 * sha256 with a CRC32 header, aws-chunked with CRC32/CRC32C/CRC64NVME/SHA1/
 * SHA256 trailers, UNSIGNED-PAYLOAD, presigned URLs) decodes byte-exact with
 * its checksums verified; and that wrong secrets, tampered signatures,
 * headers, bodies and trailers, skewed clocks and expired URLs each fail with
 * the right S3 error and store nothing. Secrets never reach an error message.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, createHmac } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { inspect } from 'node:util';
import Fastify, { type FastifyInstance } from 'fastify';
import {
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  type ChecksumAlgorithm as SdkChecksumAlgorithm,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import {
  createBodyVerifier,
  createChecksummer,
  isS3AuthError,
  SigV4Verifier,
  type AuthResult,
  type BodyDigest,
  type S3AuthErrorCode,
} from '../gateways/s3/auth/index.js';

const ACCESS_KEY = 'TESSERAAKID0001';
const SECRET = 'tessera/Secret+Key0123456789abcdefghijk';
const USER = 'user-1';

/** The gateway's table, in small (the real one lives in gateways/s3). */
const statusOf: Record<S3AuthErrorCode, number> = {
  AccessDenied: 403,
  SignatureDoesNotMatch: 403,
  InvalidAccessKeyId: 403,
  RequestTimeTooSkewed: 403,
  AuthorizationHeaderMalformed: 400,
  AuthorizationQueryParametersError: 400,
  XAmzContentSHA256Mismatch: 400,
  BadDigest: 400,
  InvalidDigest: 400,
  IncompleteBody: 400,
  InvalidRequest: 400,
  InvalidArgument: 400,
  InvalidURI: 400,
  MalformedTrailerError: 400,
  EntityTooLarge: 400,
  MissingContentLength: 411,
  NotImplemented: 501,
};

interface Outcome {
  method: string;
  url: string;
  auth: AuthResult | null;
  digest: BodyDigest | null;
  error: unknown;
}

class Harness {
  // A refused upload may leave its body unread: error replies close the connection, and close() ends them all.
  readonly app: FastifyInstance = Fastify({ forceCloseConnections: true });
  readonly outcomes: Outcome[] = [];
  readonly objects = new Map<string, Buffer>();
  clockOffsetMs = 0;
  endpoint = '';

  async start(): Promise<void> {
    const verifier = new SigV4Verifier({
      lookupKey: async (id) => (id === ACCESS_KEY ? { secretAccessKey: SECRET, userId: USER } : null),
      clock: { nowMs: () => Date.now() + this.clockOffsetMs },
      regions: ['us-east-1'],
    });
    this.app.removeAllContentTypeParsers();
    this.app.addContentTypeParser('*', (_request, _payload, done) => done(null));
    this.app.route({
      method: ['GET', 'PUT'],
      url: '/*',
      handler: async (request, reply) => {
        const outcome: Outcome = { method: request.method, url: request.raw.url ?? '', auth: null, digest: null, error: null };
        this.outcomes.push(outcome);
        try {
          outcome.auth = await verifier.verify(request.raw);
          const path = decodeURIComponent((request.raw.url ?? '').split('?')[0]!);
          if (request.method === 'GET') {
            const data = this.objects.get(path);
            return data === undefined ? reply.code(404).send() : reply.code(200).send(data);
          }
          const body = createBodyVerifier(outcome.auth, request.raw, { computeChecksums: ['crc64nvme'] });
          const parts: Buffer[] = [];
          const sink = new Writable({ write: (data: Buffer, _e, cb) => (parts.push(data), cb()) });
          await pipeline(request.raw, body, sink);
          outcome.digest = body.result();
          this.objects.set(path, Buffer.concat(parts));
          return reply.code(200).header('etag', `"${outcome.digest.md5Hex}"`).send();
        } catch (err) {
          outcome.error = err;
          request.raw.resume();
          if (!isS3AuthError(err)) return reply.code(500).send();
          const xml = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${err.code}</Code><Message>${escapeXml(err.message)}</Message></Error>`;
          return reply.code(statusOf[err.code]).header('content-type', 'application/xml').header('connection', 'close').send(xml);
        }
      },
    });
    await this.app.listen({ host: '127.0.0.1', port: 0 });
    const address = this.app.server.address();
    if (address === null || typeof address === 'string') throw new Error('no address');
    this.endpoint = `http://127.0.0.1:${address.port}`;
  }

  client(config: Partial<S3ClientConfig> = {}): S3Client {
    return new S3Client({
      endpoint: this.endpoint,
      forcePathStyle: true,
      region: 'us-east-1',
      credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: SECRET },
      maxAttempts: 1,
      ...config,
    });
  }

  last(): Outcome {
    return this.outcomes[this.outcomes.length - 1]!;
  }
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Deterministic bytes (a counter through sha256), so failures reproduce. */
function bytesOf(lengthBytes: number, seed: string): Buffer {
  const out = Buffer.alloc(lengthBytes);
  let block = createHash('sha256').update(seed).digest();
  for (let offset = 0; offset < lengthBytes; offset += block.length) {
    block.copy(out, offset);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

function piecesOf(data: Buffer, pieceBytes: number): Readable {
  const pieces: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += pieceBytes) pieces.push(data.subarray(offset, offset + pieceBytes));
  return Readable.from(pieces);
}

function* piecesOfArray(data: Buffer, pieceBytes: number): Generator<Buffer> {
  for (let offset = 0; offset < data.length; offset += pieceBytes) yield data.subarray(offset, offset + pieceBytes);
}

function md5Hex(data: Buffer): string {
  return createHash('md5').update(data).digest('hex');
}

type HttpRequest = Parameters<NodeHttpHandler['handle']>[0];
type Mutation = (request: HttpRequest, body: Buffer | null) => Buffer | null;

/** A request handler that lets a test change the signed request (headers, body bytes) before it is sent. */
class TamperingHandler extends NodeHttpHandler {
  readonly #mutate: Mutation;
  constructor(mutate: Mutation) {
    super();
    this.#mutate = mutate;
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
    const changed = this.#mutate(request, body);
    request.body = changed ?? body ?? request.body;
    if (changed !== null && request.headers['content-length'] !== undefined) request.headers['content-length'] = String(changed.length);
    return super.handle(request, options);
  }
}

function tamperingHandler(mutate: Mutation): NodeHttpHandler {
  return new TamperingHandler(mutate);
}

async function sdkError(promise: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await promise;
  } catch (err) {
    const e = err as { name: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode };
  }
  throw new Error('the request succeeded');
}

const harness = new Harness();
beforeAll(() => harness.start());
afterAll(() => harness.app.close());

describe('PutObject from the AWS SDK, default settings', () => {
  it('Buffer body: hex sha256 payload and a CRC32 header, verified', async () => {
    const data = bytesOf(100_000, 'buffer');
    const put = await harness.client().send(new PutObjectCommand({ Bucket: 'b', Key: 'buffer', Body: data }));
    const { auth, digest } = harness.last();
    expect(auth).toMatchObject({ kind: 'signed', via: 'header', userId: USER, accessKeyId: ACCESS_KEY, payload: { mode: 'sha256' } });
    expect(digest?.declaredChecksum).toBe('crc32');
    expect(put.ETag).toBe(`"${md5Hex(data)}"`);
    expect(harness.objects.get('/b/buffer')!.equals(data)).toBe(true);
  });

  it('stream body of many pieces: aws-chunked with a CRC32 trailer, decoded byte-exact', async () => {
    const data = bytesOf(3 * 1024 * 1024 + 12_345, 'stream');
    await harness.client().send(new PutObjectCommand({ Bucket: 'b', Key: 'stream', Body: piecesOf(data, 64 * 1024), ContentLength: data.length }));
    const { auth, digest, error } = harness.last();
    expect(error).toBeNull();
    expect(auth?.payload).toEqual({ mode: 'streaming-unsigned-trailer' });
    expect(digest?.trailers.get('x-amz-checksum-crc32')).toBe(digest?.checksums.crc32);
    expect(digest?.decodedLengthBytes).toBe(data.length);
    expect(digest?.md5Hex).toBe(md5Hex(data));
    expect(harness.objects.get('/b/stream')!.equals(data)).toBe(true);
  });

  it('large body (24 MiB, 1 MiB pieces) streams through', async () => {
    const data = bytesOf(24 * 1024 * 1024, 'large');
    await harness.client().send(new PutObjectCommand({ Bucket: 'b', Key: 'large', Body: piecesOf(data, 1024 * 1024), ContentLength: data.length }));
    expect(harness.last().error).toBeNull();
    expect(harness.objects.get('/b/large')!.equals(data)).toBe(true);
  });

  it('empty bodies, as a Buffer and as a stream', async () => {
    await harness.client().send(new PutObjectCommand({ Bucket: 'b', Key: 'empty', Body: Buffer.alloc(0) }));
    expect(harness.last().digest).toMatchObject({ decodedLengthBytes: 0, md5Hex: md5Hex(Buffer.alloc(0)), checksums: { crc32: 'AAAAAA==' } });
    await harness.client().send(new PutObjectCommand({ Bucket: 'b', Key: 'empty-stream', Body: Readable.from([]), ContentLength: 0 }));
    expect(harness.last().error).toBeNull();
    expect(harness.objects.get('/b/empty-stream')!.length).toBe(0);
  });

  it('keys and query values with characters that need encoding', async () => {
    const key = 'dir one/ünïcødé+plus$dollar~tilde%percent=eq&amp;semi;colon(1)!*\'/end';
    const data = bytesOf(1000, 'key');
    await harness.client().send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: data }));
    expect(harness.last().error).toBeNull();
    const got = await harness.client().send(
      new GetObjectCommand({ Bucket: 'b', Key: key, ResponseContentDisposition: 'attachment; filename="ü a+b.txt"', ResponseCacheControl: 'no-cache, max-age=0' }),
    );
    expect(harness.last().error).toBeNull();
    expect(Buffer.from(await got.Body!.transformToByteArray()).equals(data)).toBe(true);
  });
});

describe('PutObject checksum variants', () => {
  const algorithms: [SdkChecksumAlgorithm, 'crc32' | 'crc32c' | 'crc64nvme' | 'sha1' | 'sha256'][] = [
    ['CRC32', 'crc32'],
    ['CRC32C', 'crc32c'],
    ['CRC64NVME', 'crc64nvme'],
    ['SHA1', 'sha1'],
    ['SHA256', 'sha256'],
  ];
  for (const [sdkName, algorithm] of algorithms) {
    it(`${sdkName} in a trailer (stream) and in a header (Buffer)`, async () => {
      const data = bytesOf(200_000, sdkName);
      await harness.client().send(new PutObjectCommand({ Bucket: 'b', Key: `t-${algorithm}`, Body: piecesOf(data, 8192), ContentLength: data.length, ChecksumAlgorithm: sdkName }));
      const trailed = harness.last();
      expect(trailed.error).toBeNull();
      expect(trailed.digest?.declaredChecksum).toBe(algorithm);
      expect(trailed.digest?.trailers.get(`x-amz-checksum-${algorithm}`)).toBe(trailed.digest?.checksums[algorithm]);
      expect(harness.objects.get(`/b/t-${algorithm}`)!.equals(data)).toBe(true);

      await harness.client().send(new PutObjectCommand({ Bucket: 'b', Key: `h-${algorithm}`, Body: data, ChecksumAlgorithm: sdkName }));
      const headed = harness.last();
      expect(headed.error).toBeNull();
      expect(headed.digest?.declaredChecksum).toBe(algorithm);
      expect(headed.digest?.checksums[algorithm]).toBe(trailed.digest?.checksums[algorithm]);
    });
  }

  it("requestChecksumCalculation WHEN_REQUIRED: UNSIGNED-PAYLOAD stream, no checksum; Content-MD5 still checked", async () => {
    const client = harness.client({ requestChecksumCalculation: 'WHEN_REQUIRED' });
    const data = bytesOf(70_000, 'when-required');
    await client.send(new PutObjectCommand({ Bucket: 'b', Key: 'wr', Body: piecesOf(data, 10_000), ContentLength: data.length }));
    expect(harness.last().auth?.payload.mode).toBe('unsigned');
    expect(harness.last().digest?.declaredChecksum).toBeNull();
    expect(harness.objects.get('/b/wr')!.equals(data)).toBe(true);
    const md5 = createHash('md5').update(data).digest('base64');
    await client.send(new PutObjectCommand({ Bucket: 'b', Key: 'wr-md5', Body: data, ContentMD5: md5 }));
    expect(harness.last().error).toBeNull();
  });
});

describe('presigned URLs from @aws-sdk/s3-request-presigner', () => {
  it('GET and PUT through plain fetch', async () => {
    const client = harness.client({ requestChecksumCalculation: 'WHEN_REQUIRED' });
    const data = bytesOf(50_000, 'presigned');
    const putUrl = await getSignedUrl(client, new PutObjectCommand({ Bucket: 'b', Key: 'pre signed/ü' }), { expiresIn: 600 });
    const put = await fetch(putUrl, { method: 'PUT', body: data });
    expect(put.status).toBe(200);
    expect(harness.last().auth).toMatchObject({ kind: 'signed', via: 'presigned', payload: { mode: 'unsigned' } });
    const getUrl = await getSignedUrl(client, new GetObjectCommand({ Bucket: 'b', Key: 'pre signed/ü', ResponseContentType: 'a/b; c=d' }), { expiresIn: 600 });
    const got = await fetch(getUrl);
    expect(got.status).toBe(200);
    expect(Buffer.from(await got.arrayBuffer()).equals(data)).toBe(true);
  });

  it('the default client hoists the empty body\'s CRC32 into the URL: S3 (and we) refuse other bodies', async () => {
    const url = await getSignedUrl(harness.client(), new PutObjectCommand({ Bucket: 'b', Key: 'hoisted' }), { expiresIn: 600 });
    expect(url).toContain('x-amz-checksum-crc32=AAAAAA%3D%3D');
    expect((await fetch(url, { method: 'PUT', body: 'not empty' })).status).toBe(400);
    expect(harness.last().error).toMatchObject({ code: 'BadDigest' });
    expect((await fetch(url, { method: 'PUT', body: '' })).status).toBe(200);
  });

  it('a body cut short of its Content-Length (the client goes away) stores nothing', async () => {
    const url = new URL(await getSignedUrl(harness.client({ requestChecksumCalculation: 'WHEN_REQUIRED' }), new PutObjectCommand({ Bucket: 'b', Key: 'cut' }), { expiresIn: 600 }));
    const before = harness.outcomes.length;
    const socket = connect(Number(url.port), '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    await new Promise((resolve) => socket.write(`PUT ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: 1000\r\n\r\n${'x'.repeat(500)}`, resolve));
    await expect.poll(() => harness.outcomes[before]?.auth ?? null).not.toBeNull();
    socket.destroy();
    await expect.poll(() => harness.outcomes[before]?.error ?? null).not.toBeNull();
    expect(harness.outcomes[before]!.auth).toMatchObject({ via: 'presigned' });
    expect(harness.objects.has('/b/cut')).toBe(false);
  });

  it('expired, tampered and over-long URLs are refused', async () => {
    const client = harness.client();
    const expired = await getSignedUrl(client, new GetObjectCommand({ Bucket: 'b', Key: 'buffer' }), { expiresIn: 60, signingDate: new Date(Date.now() - 120_000) });
    expect((await fetch(expired)).status).toBe(403);
    expect(harness.last().error).toMatchObject({ code: 'AccessDenied', message: 'Request has expired' });

    const good = await getSignedUrl(client, new GetObjectCommand({ Bucket: 'b', Key: 'buffer' }), { expiresIn: 600 });
    expect((await fetch(good.replace('/b/buffer', '/b/stream'))).status).toBe(403);
    expect(harness.last().error).toMatchObject({ code: 'SignatureDoesNotMatch' });
    expect((await fetch(good.replace('X-Amz-Expires=600', 'X-Amz-Expires=604801'))).status).toBe(400);
    expect(harness.last().error).toMatchObject({ code: 'AuthorizationQueryParametersError' });
    expect((await fetch(good, { headers: { 'x-amz-acl': 'public-read' } })).status).toBe(403);
    expect(harness.last().error).toMatchObject({ code: 'AccessDenied' });
  });
});

/** The aws CLI (botocore) where installed: a second, independent signer. */
const awsCli = (() => {
  try {
    execFileSync('aws', ['--version'], { stdio: 'ignore', timeout: 30_000 });
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!awsCli)('the aws CLI (botocore)', () => {
  const dir = mkdtempSync(join(tmpdir(), 's3-auth-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const env = { ...process.env, AWS_ACCESS_KEY_ID: ACCESS_KEY, AWS_SECRET_ACCESS_KEY: SECRET, AWS_DEFAULT_REGION: 'us-east-1', AWS_CONFIG_FILE: join(dir, 'config'), AWS_SHARED_CREDENTIALS_FILE: '/dev/null' };
  const aws = (args: string[], input?: Buffer) =>
    new Promise<string>((resolve, reject) => {
      const child = execFile('aws', ['--endpoint-url', harness.endpoint, ...args], { env, timeout: 60_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout)));
      child.stdin!.end(input);
    });

  it('s3api put-object, s3 cp from a file and from stdin, s3 presign', async () => {
    const data = bytesOf(300_000, 'cli');
    writeFileSync(join(dir, 'f.bin'), data);
    await aws(['s3api', 'put-object', '--bucket', 'b', '--key', 'cli/put object', '--body', join(dir, 'f.bin')]);
    expect(harness.last().error).toBeNull();
    expect(harness.objects.get('/b/cli/put object')!.equals(data)).toBe(true);
    await aws(['s3', 'cp', join(dir, 'f.bin'), 's3://b/cli/cp ü']);
    expect(harness.objects.get('/b/cli/cp ü')!.equals(data)).toBe(true);
    await aws(['s3', 'cp', '-', 's3://b/cli/stdin'], data);
    expect(harness.last().error).toBeNull();
    expect(harness.objects.get('/b/cli/stdin')!.equals(data)).toBe(true);
    // aws CLI v1 presigns with SigV2 unless told s3v4: refused, as S3 does in every region opened since 2014.
    const v2 = (await aws(['s3', 'presign', 's3://b/cli/put object', '--expires-in', '300'])).trim();
    if (v2.includes('AWSAccessKeyId=')) {
      expect((await fetch(v2)).status).toBe(400);
      expect(harness.last().error).toMatchObject({ code: 'InvalidRequest' });
    }
    writeFileSync(env.AWS_CONFIG_FILE, '[default]\ns3 =\n    signature_version = s3v4\n');
    const url = (await aws(['s3', 'presign', 's3://b/cli/put object', '--expires-in', '300'])).trim();
    const got = await fetch(url);
    expect(got.status).toBe(200);
    expect(harness.last().auth).toMatchObject({ via: 'presigned' });
    expect(Buffer.from(await got.arrayBuffer()).equals(data)).toBe(true);
  });
});

/**
 * Chunk-signed uploads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]), which
 * the JS SDK does not produce itself: the SDK signs the seed request (a
 * build-step middleware declares the streaming payload), and the request
 * handler replaces the body with chunks signed, from that seed, by the
 * independent signer below (the same one test/s3-auth-chunked checks against
 * AWS's published chunk signatures).
 */
function signChunks(seed: string, amzDate: string, chunks: Buffer[], trailer: [string, string] | null): Buffer {
  const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();
  const key = hmac(hmac(hmac(hmac(`AWS4${SECRET}`, amzDate.slice(0, 8)), 'us-east-1'), 's3'), 'aws4_request');
  const timeScope = `${amzDate}\n${amzDate.slice(0, 8)}/us-east-1/s3/aws4_request`;
  const sha = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
  let previous = seed;
  const parts: Buffer[] = [];
  for (const chunk of [...chunks, Buffer.alloc(0)]) {
    previous = hmac(key, `AWS4-HMAC-SHA256-PAYLOAD\n${timeScope}\n${previous}\n${sha('')}\n${sha(chunk)}`).toString('hex');
    parts.push(Buffer.from(`${chunk.length.toString(16)};chunk-signature=${previous}\r\n`), chunk, Buffer.from(chunk.length > 0 ? '\r\n' : ''));
  }
  if (trailer !== null) {
    const canonical = `${trailer[0]}:${trailer[1]}\n`;
    const signature = hmac(key, `AWS4-HMAC-SHA256-TRAILER\n${timeScope}\n${previous}\n${sha(canonical)}`).toString('hex');
    parts.push(Buffer.from(`${trailer[0]}:${trailer[1]}\r\nx-amz-trailer-signature:${signature}\r\n`));
  }
  parts.push(Buffer.from('\r\n'));
  return Buffer.concat(parts);
}

function chunkSignedClient(chunks: Buffer[], trailer: [string, string] | null, mutate: (framed: Buffer) => Buffer = (f) => f): S3Client {
  const data = Buffer.concat(chunks);
  const client = harness.client({
    requestChecksumCalculation: 'WHEN_REQUIRED',
    requestHandler: tamperingHandler((request) => {
      const seed = /Signature=([0-9a-f]{64})/.exec(request.headers.authorization!)![1]!;
      return mutate(signChunks(seed, request.headers['x-amz-date']!, chunks, trailer));
    }),
  });
  client.middlewareStack.add(
    (next) => async (args) => {
      const headers = (args.request as HttpRequest).headers;
      headers['x-amz-content-sha256'] = trailer === null ? 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD' : 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER';
      headers['content-encoding'] = 'aws-chunked';
      headers['x-amz-decoded-content-length'] = String(data.length);
      if (trailer !== null) headers['x-amz-trailer'] = trailer[0];
      delete headers['content-length'];
      headers['transfer-encoding'] = 'chunked';
      return next(args);
    },
    { step: 'build', priority: 'low', name: 'chunkSignedPayload' },
  );
  return client;
}

describe('chunk-signed uploads: seed signed by the SDK, chunks by an independent signer', () => {
  const data = bytesOf(1024 * 1024 + 4321, 'chunk-signed');
  const chunks = [...piecesOfArray(data, 64 * 1024)];
  const crc32cOf = (bytes: Buffer) => {
    const c = createChecksummer('crc32c');
    c.update(bytes);
    return c.digestBase64();
  };

  it('without and with a signed CRC32C trailer, and empty', async () => {
    await chunkSignedClient(chunks, null).send(new PutObjectCommand({ Bucket: 'b', Key: 'signed', Body: data }));
    expect(harness.last().auth).toMatchObject({ payload: { mode: 'streaming-signed', trailer: false } });
    expect(harness.objects.get('/b/signed')!.equals(data)).toBe(true);
    await chunkSignedClient(chunks, ['x-amz-checksum-crc32c', crc32cOf(data)]).send(new PutObjectCommand({ Bucket: 'b', Key: 'signed-trailer', Body: data }));
    expect(harness.last().digest).toMatchObject({ declaredChecksum: 'crc32c', checksums: { crc32c: crc32cOf(data) } });
    expect(harness.objects.get('/b/signed-trailer')!.equals(data)).toBe(true);
    await chunkSignedClient([], null).send(new PutObjectCommand({ Bucket: 'b', Key: 'signed-empty', Body: Buffer.alloc(0) }));
    expect(harness.objects.get('/b/signed-empty')!.length).toBe(0);
  });

  it('tampered chunk, tampered trailer, wrong (but signed) checksum, truncated body', async () => {
    const send = (client: S3Client, key: string) => sdkError(client.send(new PutObjectCommand({ Bucket: 'b', Key: key, Body: data })));
    const flip = (at: number) => (framed: Buffer) => {
      const copy = Buffer.from(framed);
      copy[at] = copy[at]! ^ 1;
      return copy;
    };
    expect(await send(chunkSignedClient(chunks, null, flip(300_000)), 'x1')).toEqual({ name: 'SignatureDoesNotMatch', status: 403 });
    const trailer: [string, string] = ['x-amz-checksum-crc32c', crc32cOf(data)];
    const tamperTrailer = (framed: Buffer) => Buffer.from(framed.toString('latin1').replace(trailer[1], crc32cOf(Buffer.from('x'))), 'latin1');
    expect(await send(chunkSignedClient(chunks, trailer, tamperTrailer), 'x2')).toEqual({ name: 'SignatureDoesNotMatch', status: 403 });
    expect(await send(chunkSignedClient(chunks, ['x-amz-checksum-crc32c', crc32cOf(Buffer.from('x'))]), 'x3')).toEqual({ name: 'BadDigest', status: 400 });
    expect(await send(chunkSignedClient(chunks, null, (f) => f.subarray(0, f.length - 70_000)), 'x4')).toEqual({ name: 'IncompleteBody', status: 400 });
    for (const key of ['x1', 'x2', 'x3', 'x4']) expect(harness.objects.has(`/b/${key}`)).toBe(false);
  });
});

describe('refusals', () => {
  async function refused(client: S3Client, input: ConstructorParameters<typeof PutObjectCommand>[0], code: S3AuthErrorCode): Promise<void> {
    const before = harness.objects.has(`/b/${input.Key}`);
    const failure = await sdkError(client.send(new PutObjectCommand(input)));
    expect(failure).toEqual({ name: code, status: statusOf[code] });
    expect(harness.last().error).toMatchObject({ code });
    expect(harness.objects.has(`/b/${input.Key}`)).toBe(before);
  }

  it('wrong secret, unknown key', async () => {
    await refused(harness.client({ credentials: { accessKeyId: ACCESS_KEY, secretAccessKey: 'wrong' } }), { Bucket: 'b', Key: 'r1', Body: 'x' }, 'SignatureDoesNotMatch');
    await refused(harness.client({ credentials: { accessKeyId: 'NOSUCHKEY', secretAccessKey: SECRET } }), { Bucket: 'b', Key: 'r2', Body: 'x' }, 'InvalidAccessKeyId');
  });

  it('tampered signature, signed header, unsigned x-amz header', async () => {
    const flipLast = (value: string) => value.slice(0, -1) + (value.endsWith('0') ? '1' : '0');
    const sig = tamperingHandler((request) => ((request.headers.authorization = flipLast(request.headers.authorization!)), null));
    await refused(harness.client({ requestHandler: sig }), { Bucket: 'b', Key: 'r3', Body: 'x' }, 'SignatureDoesNotMatch');
    const header = tamperingHandler((request) => ((request.headers['x-amz-checksum-crc32'] = 'AAAAAA=='), null));
    await refused(harness.client({ requestHandler: header }), { Bucket: 'b', Key: 'r4', Body: 'x' }, 'SignatureDoesNotMatch');
    const extra = tamperingHandler((request) => ((request.headers['x-amz-acl'] = 'public-read'), null));
    await refused(harness.client({ requestHandler: extra }), { Bucket: 'b', Key: 'r5', Body: 'x' }, 'AccessDenied');
  });

  it('tampered bodies: sha256 mismatch, wrong Content-MD5, invalid Content-MD5', async () => {
    const flipFirst = tamperingHandler((_request, body) => (body === null || body.length === 0 ? null : Buffer.concat([Buffer.from([body[0]! ^ 1]), body.subarray(1)])));
    await refused(harness.client({ requestHandler: flipFirst }), { Bucket: 'b', Key: 'r6', Body: bytesOf(5000, 'r6') }, 'XAmzContentSHA256Mismatch');
    const unsigned = harness.client({ requestChecksumCalculation: 'WHEN_REQUIRED' });
    const data = bytesOf(5000, 'r7');
    const otherMd5 = createHash('md5').update('other').digest('base64');
    await refused(unsigned, { Bucket: 'b', Key: 'r7', Body: piecesOf(data, 1000), ContentLength: data.length, ContentMD5: otherMd5 }, 'BadDigest');
    await refused(unsigned, { Bucket: 'b', Key: 'r8', Body: piecesOf(data, 1000), ContentLength: data.length, ContentMD5: 'not-md5' }, 'InvalidDigest');
  });

  it('aws-chunked bodies: wrong trailing checksum, truncated, longer than declared, trailer removed', async () => {
    const data = bytesOf(40_000, 'chunked');
    const tamper = (mutate: (framed: string) => string) =>
      harness.client({ requestHandler: tamperingHandler((_r, body) => Buffer.from(mutate(body!.toString('latin1')), 'latin1')) });
    const input = (key: string) => ({ Bucket: 'b', Key: key, Body: piecesOf(data, 10_000), ContentLength: data.length });
    await tamper((framed) => framed).send(new PutObjectCommand(input('c0')));
    expect(harness.objects.get('/b/c0')!.equals(data)).toBe(true);
    await refused(tamper((f) => f.replace(/x-amz-checksum-crc32:[^\r]*/, 'x-amz-checksum-crc32:AAAAAA==')), input('c1'), 'BadDigest');
    await refused(tamper((f) => f.slice(0, f.length - 30_000)), input('c2'), 'IncompleteBody');
    await refused(tamper((f) => f.replace('\r\n0\r\n', '\r\n3\r\nabc\r\n0\r\n')), input('c3'), 'InvalidRequest');
    await refused(tamper((f) => f.replace(/x-amz-checksum-crc32:[^\r]*\r\n/, '')), input('c4'), 'MalformedTrailerError');
    await refused(tamper((f) => f.replace('2710\r\n', '2710;chunk-signature=00\r\n')), input('c5'), 'InvalidRequest');
  });

  it('skewed clocks: the client\'s and ours', async () => {
    await refused(harness.client({ systemClockOffset: -20 * 60_000 }), { Bucket: 'b', Key: 's1', Body: 'x' }, 'RequestTimeTooSkewed');
    harness.clockOffsetMs = 16 * 60_000;
    try {
      await refused(harness.client(), { Bucket: 'b', Key: 's2', Body: 'x' }, 'RequestTimeTooSkewed');
    } finally {
      harness.clockOffsetMs = 0;
    }
    await harness.client({ systemClockOffset: -10 * 60_000 }).send(new PutObjectCommand({ Bucket: 'b', Key: 's3', Body: 'x' }));
    expect(harness.last().error).toBeNull();
  });

  it('a wrong region is a malformed authorization', async () => {
    await refused(harness.client({ region: 'eu-west-1' }), { Bucket: 'b', Key: 'g1', Body: 'x' }, 'AuthorizationHeaderMalformed');
  });

  it('malformed Authorization headers and anonymous requests, by plain fetch', async () => {
    const malformed = ['AWS4-HMAC-SHA256 Credential=broken', 'AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host, Signature=00', 'AWS4-HMAC-SHA256'];
    for (const authorization of malformed) {
      const response = await fetch(`${harness.endpoint}/b/x`, { headers: { authorization, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'x-amz-date': '20260101T000000Z' } });
      expect(response.status).toBe(400);
      expect(await response.text()).toContain('<Code>AuthorizationHeaderMalformed</Code>');
    }
    expect((await fetch(`${harness.endpoint}/b/x`, { headers: { authorization: 'AWS AK:sig' } })).status).toBe(400);
    expect(harness.last().error).toMatchObject({ code: 'InvalidRequest' });
    expect((await fetch(`${harness.endpoint}/b/buffer`)).status).toBe(200);
    expect(harness.last().auth).toEqual({ kind: 'anonymous', payload: { mode: 'unsigned' } });
  });

  it('no secret in any error message, detail or inspected result', () => {
    const signingKeyHex = /[0-9a-f]{64}/;
    expect(harness.outcomes.some((o) => o.error !== null)).toBe(true);
    for (const outcome of harness.outcomes) {
      const text = `${inspect(outcome.auth, { depth: 9 })} ${JSON.stringify(outcome.auth)} ${inspect(outcome.error, { depth: 9 })} ${JSON.stringify((outcome.error as { details?: unknown })?.details ?? null)}`;
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain(encodeURIComponent(SECRET));
      if (outcome.auth?.kind === 'signed' && outcome.auth.streaming !== null) expect(inspect(outcome.auth.streaming)).not.toMatch(signingKeyHex);
    }
  });
});
