/**
 * gateways/s3/auth against AWS's published examples, written by hand from
 * the S3 SigV4 documentation (header auth: GET Object, PUT Object, GET Bucket
 * lifecycle, List Objects; query auth: the presigned GET; chunked upload: the
 * 66,560-byte PUT with its seed and chunk signatures, and its signed-trailer
 * variant), AWS's signing-key derivation example, aws-crt's trailer vector and
 * the AWS SDK's CRC64NVME vectors. Then the canonicalisation rules one by
 * one, and every header-level refusal with its S3 error code.
 */
import { describe, expect, it } from 'vitest';
import { createHmac } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  createBodyVerifier,
  createChecksummer,
  crc64nvme,
  SigV4Verifier,
  storedContentEncoding,
  type AuthResult,
  type BodyDigest,
  type BodyVerifierOptions,
  type S3AuthErrorCode,
} from '../gateways/s3/auth/index.js';
import { canonicalHeaderValue, canonicalQuery, canonicalUri, parseQuery } from '../gateways/s3/auth/canonical.js';
import { formatAmzDate, parseAmzDate, requestAmzDate } from '../gateways/s3/auth/authorization.js';
import { deriveSigningKey, SigningKeyCache, StreamingSignature } from '../gateways/s3/auth/signing.js';

const AK = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const SCOPE = `${AK}/20130524/us-east-1/s3/aws4_request`;
const DOC_TIME_MS = Date.UTC(2013, 4, 24);
const EMPTY = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const HOST = 'examplebucket.s3.amazonaws.com';

function verifier(nowMs = DOC_TIME_MS, regions?: string[]): SigV4Verifier {
  return new SigV4Verifier({
    lookupKey: async (id) => (id === AK ? { secretAccessKey: SECRET, userId: 'doc-user' } : null),
    clock: { nowMs: () => nowMs },
    ...(regions === undefined ? {} : { regions }),
  });
}

function authorization(signedHeaders: string, signature: string, credential = SCOPE): string {
  return `AWS4-HMAC-SHA256 Credential=${credential},SignedHeaders=${signedHeaders},Signature=${signature}`;
}

async function failure(promise: Promise<unknown>): Promise<{ code: string; message: string; details: Record<string, unknown> }> {
  try {
    await promise;
  } catch (err) {
    return err as { code: string; message: string; details: Record<string, unknown> };
  }
  throw new Error('expected a failure');
}

async function expectCode(promise: Promise<unknown>, code: S3AuthErrorCode): Promise<void> {
  expect((await failure(promise)).code).toBe(code);
}

async function runBody(auth: AuthResult, rawHeaders: string[], pieces: Buffer[], options?: BodyVerifierOptions): Promise<{ data: Buffer; digest: BodyDigest }> {
  const body = createBodyVerifier(auth, { rawHeaders }, options);
  const out: Buffer[] = [];
  await pipeline(Readable.from(pieces), body, new Writable({ write: (d: Buffer, _e, cb) => (out.push(d), cb()) }));
  return { data: Buffer.concat(out), digest: body.result() };
}

// The GET Object example: a Range header, an empty signed payload.
const getObject = {
  method: 'GET',
  url: '/test.txt',
  rawHeaders: ['Host', HOST, 'Range', 'bytes=0-9', 'x-amz-content-sha256', EMPTY, 'x-amz-date', '20130524T000000Z',
    'Authorization', authorization('host;range;x-amz-content-sha256;x-amz-date', 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41')],
};

function withHeader(request: typeof getObject, name: string, value: string): typeof getObject {
  const raw = [...request.rawHeaders];
  const at = raw.findIndex((h, i) => i % 2 === 0 && h.toLowerCase() === name.toLowerCase());
  if (at >= 0) raw[at + 1] = value;
  else raw.push(name, value);
  return { ...request, rawHeaders: raw };
}

describe('AWS documentation: Authorization header examples', () => {
  it('GET Object', async () => {
    expect(await verifier().verify(getObject)).toEqual({
      kind: 'signed', via: 'header', accessKeyId: AK, userId: 'doc-user', region: 'us-east-1',
      requestTimeMs: DOC_TIME_MS, expiresAtMs: null, payload: { mode: 'sha256', sha256Hex: EMPTY }, streaming: null,
    });
    // Extra white space in a header value is folded away before signing.
    await verifier().verify(withHeader(getObject, 'Range', '  bytes=0-9  '));
  });

  it('GET Object with a tampered signature fails, showing the documented canonical request', async () => {
    const tampered = withHeader(getObject, 'Authorization', authorization('host;range;x-amz-content-sha256;x-amz-date', 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb42'));
    const err = await failure(verifier().verify(tampered));
    expect(err.code).toBe('SignatureDoesNotMatch');
    expect(err.details.canonicalRequest).toBe(
      `GET\n/test.txt\n\nhost:${HOST}\nrange:bytes=0-9\nx-amz-content-sha256:${EMPTY}\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n${EMPTY}`,
    );
    expect(err.details.stringToSign).toBe(
      'AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972',
    );
  });

  const putHash = '44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072';
  const putObject = (url: string) => ({
    method: 'PUT',
    url,
    rawHeaders: ['Host', HOST, 'Date', 'Fri, 24 May 2013 00:00:00 GMT', 'x-amz-date', '20130524T000000Z', 'x-amz-storage-class', 'REDUCED_REDUNDANCY',
      'x-amz-content-sha256', putHash, 'Authorization',
      authorization('date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class', '98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd')],
  });

  it('PUT Object "test$file.text": $ raw or %24 (S3 does not double-encode), and its body hash', async () => {
    const auth = await verifier().verify(putObject('/test$file.text'));
    await verifier().verify(putObject('/test%24file.text'));
    const { data } = await runBody(auth, putObject('/').rawHeaders, [Buffer.from('Welcome to '), Buffer.from('Amazon S3.')]);
    expect(data.toString()).toBe('Welcome to Amazon S3.');
    await expectCode(runBody(auth, putObject('/').rawHeaders, [Buffer.from('Welcome to Amazon S3!')]), 'XAmzContentSHA256Mismatch');
  });

  const bucketGet = (url: string, signature: string) => ({
    method: 'GET',
    url,
    rawHeaders: ['Host', HOST, 'x-amz-date', '20130524T000000Z', 'x-amz-content-sha256', EMPTY, 'Authorization', authorization('host;x-amz-content-sha256;x-amz-date', signature)],
  });

  it('GET Bucket lifecycle (a parameter without value) and List Objects (sorted parameters)', async () => {
    await verifier().verify(bucketGet('/?lifecycle', 'fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543'));
    await verifier().verify(bucketGet('/?max-keys=2&prefix=J', '34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7'));
    await verifier().verify(bucketGet('/?prefix=J&max-keys=2', '34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7'));
    await expectCode(verifier().verify(bucketGet('/?max-keys=3&prefix=J', '34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7')), 'SignatureDoesNotMatch');
  });
});

describe('AWS documentation: presigned URL example', () => {
  const params = `X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${encodeURIComponent(SCOPE)}&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host`;
  const signature = 'X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404';
  const request = (url: string) => ({ method: 'GET', url, rawHeaders: ['Host', HOST] });

  it('verifies until it expires, in any parameter order', async () => {
    const auth = await verifier().verify(request(`/test.txt?${params}&${signature}`));
    expect(auth).toMatchObject({ kind: 'signed', via: 'presigned', payload: { mode: 'unsigned' }, expiresAtMs: DOC_TIME_MS + 86_400_000 });
    await verifier(DOC_TIME_MS + 86_400_000).verify(request(`/test.txt?${signature}&${params.split('&').reverse().join('&')}`));
    const expired = await failure(verifier(DOC_TIME_MS + 86_400_001).verify(request(`/test.txt?${params}&${signature}`)));
    expect(expired).toMatchObject({ code: 'AccessDenied', message: 'Request has expired' });
    await expectCode(verifier(DOC_TIME_MS - 16 * 60_000).verify(request(`/test.txt?${params}&${signature}`)), 'AccessDenied');
  });

  it('refuses a changed expiry, path or host, and malformed parameters', async () => {
    await expectCode(verifier().verify(request(`/test.txt?${params.replace('86400', '86401')}&${signature}`)), 'SignatureDoesNotMatch');
    await expectCode(verifier().verify(request(`/test2.txt?${params}&${signature}`)), 'SignatureDoesNotMatch');
    await expectCode(verifier().verify({ ...request(`/test.txt?${params}&${signature}`), rawHeaders: ['Host', 'other.example.com'] }), 'SignatureDoesNotMatch');
    for (const bad of [params.replace('86400', '604801'), params.replace('86400', '0'), params.replace('86400', 'soon'), params.replace('AWS4-HMAC-SHA256', 'AWS4-HMAC-SHA1'),
      params.replace('&X-Amz-Date=20130524T000000Z', ''), params.replace('20130524T000000Z', '2013-05-24'), `${params}&X-Amz-Expires=60`]) {
      await expectCode(verifier().verify(request(`/test.txt?${bad}&${signature}`)), 'AuthorizationQueryParametersError');
    }
    await expectCode(verifier().verify({ ...request(`/test.txt?${params}&${signature}`), rawHeaders: ['Host', HOST, 'x-amz-acl', 'public-read'] }), 'AccessDenied');
  });
});

describe('AWS documentation: chunked uploads', () => {
  const chunkHeaders = (payload: string, trailer: boolean, seed: string) => [
    'Host', 's3.amazonaws.com', 'x-amz-date', '20130524T000000Z', 'x-amz-storage-class', 'REDUCED_REDUNDANCY', 'x-amz-content-sha256', payload,
    'Content-Encoding', 'aws-chunked', 'x-amz-decoded-content-length', '66560', ...(trailer ? ['x-amz-trailer', 'x-amz-checksum-crc32c'] : ['Content-Length', '66824']),
    'Authorization', authorization(
      trailer
        ? 'content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer'
        : 'content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class',
      seed,
    ),
  ];
  const frame = (signatures: string[], tail: string) =>
    Buffer.concat([
      Buffer.from(`10000;chunk-signature=${signatures[0]}\r\n`), Buffer.alloc(65536, 'a'),
      Buffer.from(`\r\n400;chunk-signature=${signatures[1]}\r\n`), Buffer.alloc(1024, 'a'),
      Buffer.from(`\r\n0;chunk-signature=${signatures[2]}\r\n${tail}`),
    ]);

  it('STREAMING-AWS4-HMAC-SHA256-PAYLOAD: seed 4f232c43..., three chunk signatures', async () => {
    const rawHeaders = chunkHeaders('STREAMING-AWS4-HMAC-SHA256-PAYLOAD', false, '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9');
    const auth = await verifier().verify({ method: 'PUT', url: '/examplebucket/chunkObject.txt', rawHeaders });
    expect(auth.payload).toEqual({ mode: 'streaming-signed', trailer: false });
    const body = frame(['ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648', '0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497',
      'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9'], '\r\n');
    expect(body.length).toBe(66824);
    const { data, digest } = await runBody(auth, rawHeaders, [body.subarray(0, 1000), body.subarray(1000, 70_000), body.subarray(70_000)]);
    expect(data.equals(Buffer.alloc(66560, 'a'))).toBe(true);
    expect(digest.decodedLengthBytes).toBe(66560);
    const corrupt = Buffer.from(body);
    corrupt[66_000] = 'b'.charCodeAt(0);
    await expectCode(runBody(auth, rawHeaders, [corrupt]), 'SignatureDoesNotMatch');
  });

  it('STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: seed 106e2a8a..., CRC32C trailer signed d81f82fc...', async () => {
    const rawHeaders = chunkHeaders('STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER', true, '106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e');
    const auth = await verifier().verify({ method: 'PUT', url: '/examplebucket/chunkObject.txt', rawHeaders });
    const signatures = ['b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2', '1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7',
      '2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992'];
    const trailer = 'x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n\r\n';
    const { data, digest } = await runBody(auth, rawHeaders, [frame(signatures, trailer)]);
    expect(data.length).toBe(66560);
    expect(digest.checksums.crc32c).toBe('sOO8/Q==');
    // The documented form with an empty line before the trailers is accepted too.
    await runBody(auth, rawHeaders, [frame(signatures, `\r\n${trailer}`)]);
    await expectCode(runBody(auth, rawHeaders, [frame(signatures, trailer.replace('sOO8/Q==', 'sOO8/A=='))]), 'SignatureDoesNotMatch');
    await expectCode(runBody(auth, rawHeaders, [frame(signatures, trailer.replace('d81f82fc', 'd81f82fd'))]), 'SignatureDoesNotMatch');
  });

  it("aws-crt's trailer vector: first/second/third after the final chunk b6c6ea8a... signs df5735bd...", () => {
    const scope = { date: '20130524', region: 'us-east-1', service: 's3' };
    const chain = new StreamingSignature(deriveSigningKey(SECRET, scope), '20130524T000000Z', scope, 'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9').chain();
    expect(chain.verifyTrailer('first:1st\nsecond:2nd\nthird:3rd\n', 'df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c')).toBe(true);
  });

  it("the signing key derivation example (IAM, 20120215)", () => {
    const key = deriveSigningKey('wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', { date: '20120215', region: 'us-east-1', service: 'iam' });
    expect(key.toString('hex')).toBe('f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d');
  });
});

describe('checksum vectors', () => {
  const b64 = (hex: string) => Buffer.from(hex, 'hex').toString('base64');
  const sum = (algorithm: Parameters<typeof createChecksummer>[0], data: Uint8Array) => {
    const c = createChecksummer(algorithm);
    c.update(data);
    return c.digestBase64();
  };

  it("CRC64NVME: the AWS SDK's published vectors, also fed in pieces", () => {
    const vectors: [string, string][] = [['', 'AAAAAAAAAAA='], ['123456789', 'rosUhgp5mIg='], ['a', 'jC+ERbTL/Dw='], ['abc', 'BeXKuz/B+us='],
      ['The quick brown fox jumps over the lazy dog', '12xUBUlUwUM='], ['\x00', '1dpQR+/shyg='], ['\x00\x00\x00\x00', 'bbgR5aHaUCQ='], ['\xFF\xFF\xFF\xFF', 'dqAywHboEF0=']];
    for (const [input, expected] of vectors) expect(crc64nvme(new TextEncoder().encode(input)).toString('base64')).toBe(expected);
    for (const [byte, expected] of [[0x00, '1dpQR+/shyg='], [0x01, 'qrSgj9/ZDlE='], [0xff, '/wAAAAAAAAA='], [0x41, 'fe56MqW3Iz4=']] as const) {
      expect(crc64nvme(Uint8Array.of(byte)).toString('base64')).toBe(expected);
    }
    const text = new TextEncoder().encode('The quick brown fox jumps over the lazy dog, twice: the quick brown fox jumps over the lazy dog');
    const whole = sum('crc64nvme', text);
    const pieces = createChecksummer('crc64nvme');
    for (let i = 0; i < text.length; i += 7) pieces.update(text.subarray(i, i + 7));
    expect(pieces.digestBase64()).toBe(whole);
  });

  it('CRC32, CRC32C, SHA1, SHA256 check values and the SDK\'s own', () => {
    const check = Buffer.from('123456789');
    expect(sum('crc32', check)).toBe(b64('cbf43926'));
    expect(sum('crc32c', check)).toBe(b64('e3069283'));
    expect(sum('sha1', check)).toBe(b64('f7c3bc1d808e04732adf679965ccc34ca7ae3441'));
    expect(sum('sha256', check)).toBe(b64('15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225'));
    expect(sum('crc32', Buffer.from('hello world'))).toBe('DUoRhQ==');
    expect(sum('crc64nvme', Buffer.from('x'))).toBe('Lb1nAmRU5LE=');
    expect(sum('crc32c', Buffer.alloc(66560, 'a'))).toBe('sOO8/Q==');
    const injected = createChecksummer('crc32c', () => 0x01020304);
    injected.update(check);
    expect(injected.digestBase64()).toBe(b64('01020304'));
  });
});

describe('canonical forms', () => {
  it('URI: single encoding, bytes preserved, no normalisation', () => {
    expect(canonicalUri('/test$file.text')).toBe('/test%24file.text');
    expect(canonicalUri('/%7Euser/a%20b/c+d/%c3%bc')).toBe('/~user/a%20b/c%2Bd/%C3%BC');
    expect(canonicalUri('/a%2Fb//./../x')).toBe('/a%2Fb//./../x');
    expect(canonicalUri('/')).toBe('/');
    expect(() => canonicalUri('/bad%zz')).toThrow(expect.objectContaining({ code: 'InvalidURI' }));
    expect(() => canonicalUri('relative')).toThrow(expect.objectContaining({ code: 'InvalidURI' }));
  });

  it('query: decoded (+ is a space), re-encoded, sorted by name then value, empty pieces skipped', () => {
    const q = (raw: string) => canonicalQuery(parseQuery(raw, 100));
    expect(q('lifecycle')).toBe('lifecycle=');
    expect(q('prefix=J&max-keys=2')).toBe('max-keys=2&prefix=J');
    expect(q('a=b+c&a=%7e&&z=%2f/')).toBe('a=b%20c&a=~&z=%2F%2F');
    expect(q('b=2&a=1&b=1')).toBe('a=1&b=1&b=2');
    expect(() => parseQuery('a=1&b=2&c=3', 2)).toThrow(expect.objectContaining({ code: 'InvalidRequest' }));
  });

  it('header values: trimmed, runs of ASCII white space folded, repeated headers joined, other bytes kept', () => {
    expect(canonicalHeaderValue(['  a   b \t c  '])).toBe('a b c');
    expect(canonicalHeaderValue(['one', ' two '])).toBe('one,two');
    expect(canonicalHeaderValue(['\u00c3\u00a0x\u00a0'])).toBe('\u00c3\u00a0x\u00a0');
    // The fast path (one printable ASCII value with single spaces) and its edges.
    expect(canonicalHeaderValue(['AWS4-HMAC-SHA256 a b'])).toBe('AWS4-HMAC-SHA256 a b');
    expect(canonicalHeaderValue(['a  b'])).toBe('a b');
    expect(canonicalHeaderValue(['a '])).toBe('a');
    expect(canonicalHeaderValue([''])).toBe('');
  });

  it('path segments: unreserved characters kept as they are, the rest percent-encoded once', () => {
    expect(canonicalUri('/bucket/key-1_a.b~c')).toBe('/bucket/key-1_a.b~c');
    expect(canonicalUri('/b/a%2fb+c d')).toBe('/b/a%2Fb%2Bc%20d');
    expect(canonicalUri('/b/%7e')).toBe('/b/~');
  });

  it('dates: x-amz-date, else the Date header', () => {
    expect(requestAmzDate(undefined, 'Fri, 24 May 2013 00:00:00 GMT')).toEqual({ amzDate: '20130524T000000Z', timeMs: DOC_TIME_MS });
    expect(formatAmzDate(DOC_TIME_MS + 3_723_000)).toBe('20130524T010203Z');
    expect(() => requestAmzDate('20130532T000000Z', undefined)).toThrow(expect.objectContaining({ code: 'AccessDenied' }));
    expect(parseAmzDate('20240229T235959Z')).toBe(Date.UTC(2024, 1, 29, 23, 59, 59));
    expect(parseAmzDate('20000229T000000Z')).toBe(Date.UTC(2000, 1, 29));
    for (const bad of ['20230229T000000Z', '19000229T000000Z', '20230431T000000Z', '20231301T000000Z', '20230001T000000Z', '20230100T000000Z', '20230101T240000Z', '20230101T006000Z', '20230101T000060Z', '20230101T000000']) {
      expect(parseAmzDate(bad)).toBeNull();
    }
  });

  it('the signing key cache stays within its bound', () => {
    const cache = new SigningKeyCache(2);
    for (const date of ['20130524', '20130525', '20130526']) cache.get(SECRET, { date, region: 'us-east-1', service: 's3' });
    expect(cache.sizeEntries).toBe(2);
  });

  it('aws-chunked is dropped from the stored Content-Encoding', () => {
    expect(storedContentEncoding('aws-chunked')).toBeUndefined();
    expect(storedContentEncoding('aws-chunked, gzip')).toBe('gzip');
    expect(storedContentEncoding(undefined)).toBeUndefined();
  });
});

describe('browser POST policies', () => {
  it('verifies the policy signature (HMAC of the base64 policy with the signing key)', async () => {
    const policyBase64 = Buffer.from(JSON.stringify({ expiration: '2013-05-25T00:00:00Z', conditions: [{ bucket: 'examplebucket' }] })).toString('base64');
    const key = deriveSigningKey(SECRET, { date: '20130524', region: 'us-east-1', service: 's3' });
    const signature = createHmac('sha256', key).update(policyBase64).digest('hex');
    const fields = { algorithm: 'AWS4-HMAC-SHA256', credential: SCOPE, amzDate: '20130524T000000Z', policyBase64, signature };
    expect(await verifier().verifyPostPolicy(fields)).toMatchObject({ kind: 'signed', via: 'post-policy', userId: 'doc-user' });
    await expectCode(verifier().verifyPostPolicy({ ...fields, policyBase64: policyBase64.replace(/^./, 'x') }), 'SignatureDoesNotMatch');
    await expectCode(verifier().verifyPostPolicy({ ...fields, credential: SCOPE.replace(AK, 'AKIDUNKNOWN') }), 'InvalidAccessKeyId');
    await expectCode(verifier().verifyPostPolicy({ ...fields, amzDate: '20130525T000000Z' }), 'InvalidArgument');
  });
});

describe('header-level refusals', () => {
  const signedHeaders = 'host;range;x-amz-content-sha256;x-amz-date';
  const sig = 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41';

  it('time: 15 minutes of skew either way, no more', async () => {
    await verifier(DOC_TIME_MS + 15 * 60_000).verify(getObject);
    await verifier(DOC_TIME_MS - 15 * 60_000).verify(getObject);
    const err = await failure(verifier(DOC_TIME_MS + 15 * 60_000 + 1).verify(getObject));
    expect(err).toMatchObject({ code: 'RequestTimeTooSkewed', details: { requestTime: '2013-05-24T00:00:00.000Z' } });
    await expectCode(verifier(DOC_TIME_MS - 16 * 60_000).verify(getObject), 'RequestTimeTooSkewed');
    await expectCode(verifier().verify(withHeader(getObject, 'x-amz-date', 'yesterday')), 'AccessDenied');
  });

  it('scope: credential date, service and region', async () => {
    await expectCode(verifier(DOC_TIME_MS + 86_400_000).verify(withHeader(getObject, 'x-amz-date', '20130525T000000Z')), 'AuthorizationHeaderMalformed');
    await expectCode(verifier().verify(withHeader(getObject, 'Authorization', authorization(signedHeaders, sig, `${AK}/20130524/us-east-1/iam/aws4_request`))), 'AuthorizationHeaderMalformed');
    const err = await failure(verifier(DOC_TIME_MS, ['eu-west-1']).verify(getObject));
    expect(err).toMatchObject({ code: 'AuthorizationHeaderMalformed', details: { expectedRegion: 'eu-west-1' } });
  });

  it('malformed Authorization headers', async () => {
    const malformed = [
      'AWS4-HMAC-SHA256',
      'AWS4-HMAC-SHA256 Credential=x',
      `AWS4-HMAC-SHA512 Credential=${SCOPE},SignedHeaders=${signedHeaders},Signature=${sig}`,
      `AWS4-HMAC-SHA256 Credential=${SCOPE},SignedHeaders=${signedHeaders}`,
      `AWS4-HMAC-SHA256 Credential=${SCOPE},Credential=${SCOPE},SignedHeaders=${signedHeaders},Signature=${sig}`,
      authorization(signedHeaders, sig, `${AK}/2013052/us-east-1/s3/aws4_request`),
      authorization(signedHeaders, sig, `${AK}/20130524/us-east-1/s3/aws5_request`),
      authorization('range;host;x-amz-content-sha256;x-amz-date', sig),
      authorization('Host;range;x-amz-content-sha256;x-amz-date', sig),
      authorization('range;x-amz-content-sha256;x-amz-date', sig),
      authorization(signedHeaders, sig).padEnd(9000, ' '),
    ];
    for (const value of malformed) await expectCode(verifier().verify(withHeader(getObject, 'Authorization', value)), 'AuthorizationHeaderMalformed');
  });

  it('unknown key, missing signed header, unsigned x-amz header, bad signature form', async () => {
    await expectCode(verifier().verify(withHeader(getObject, 'Authorization', authorization(signedHeaders, sig, SCOPE.replace(AK, 'AKIDUNKNOWN')))), 'InvalidAccessKeyId');
    const noRange = { ...getObject, rawHeaders: getObject.rawHeaders.filter((_, i, all) => all[i - (i % 2)] !== 'Range') };
    await expectCode(verifier().verify(noRange), 'SignatureDoesNotMatch');
    const err = await failure(verifier().verify(withHeader(getObject, 'x-amz-meta-note', 'added')));
    expect(err).toMatchObject({ code: 'AccessDenied', details: { headersNotSigned: ['x-amz-meta-note'] } });
    await expectCode(verifier().verify(withHeader(getObject, 'Authorization', authorization(signedHeaders, sig.toUpperCase()))), 'SignatureDoesNotMatch');
  });

  it('payload hash declarations', async () => {
    const without = { ...getObject, rawHeaders: getObject.rawHeaders.filter((_, i, all) => all[i - (i % 2)] !== 'x-amz-content-sha256') };
    await expectCode(verifier().verify(without), 'InvalidRequest');
    await expectCode(verifier().verify(withHeader(getObject, 'x-amz-content-sha256', 'abc')), 'InvalidArgument');
    await expectCode(verifier().verify(withHeader(getObject, 'x-amz-content-sha256', 'STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD')), 'NotImplemented');
  });

  it('other mechanisms: SigV2, two at once, anonymous', async () => {
    await expectCode(verifier().verify({ method: 'GET', url: '/x', rawHeaders: ['Authorization', 'AWS AKID:c2lnbmF0dXJl'] }), 'InvalidRequest');
    await expectCode(verifier().verify({ method: 'GET', url: '/x?AWSAccessKeyId=A&Signature=s&Expires=1', rawHeaders: [] }), 'InvalidRequest');
    await expectCode(verifier().verify({ ...getObject, url: '/test.txt?X-Amz-Signature=00' }), 'InvalidArgument');
    expect(await verifier().verify({ method: 'GET', url: '/x', rawHeaders: ['Host', HOST] })).toEqual({ kind: 'anonymous', payload: { mode: 'unsigned' } });
    expect(await verifier().verify({ method: 'PUT', url: '/x', rawHeaders: ['x-amz-content-sha256', EMPTY] })).toEqual({ kind: 'anonymous', payload: { mode: 'sha256', sha256Hex: EMPTY } });
    await expectCode(verifier().verify({ method: 'PUT', url: '/x', rawHeaders: ['x-amz-content-sha256', 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD'] }), 'InvalidRequest');
    await expectCode(verifier().verify({ method: 'GET', url: '/x?a=%zz', rawHeaders: [] }), 'InvalidURI');
  });
});
