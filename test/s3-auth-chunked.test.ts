/**
 * The aws-chunked decoder and the body verifier on their own. Chunk and
 * trailer signatures here come from a second, independent signer written in
 * this file (checked first against AWS's published chunk signatures). Proves:
 * any split of the input decodes to the same bytes; signed chunks are held
 * until verified, so a tampered chunk never reaches the output; every strict
 * prefix of a body is IncompleteBody; bad framing, lengths, trailers and
 * limits each give their S3 error; and seeded random mutations never crash
 * the decoder nor let a changed signed body through. Failing seeds replay with
 * TESSERA_SEED.
 */
import { describe, expect, it } from 'vitest';
import { createHash, createHmac } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  authLimits,
  AwsChunkedDecoder,
  AwsChunkedParser,
  createBodyVerifier,
  isS3AuthError,
  type AuthResult,
  type AwsChunkedOptions,
  type BodyDigest,
  type BodyVerifierOptions,
  type S3AuthErrorCode,
} from '../gateways/s3/auth/index.js';
import { StreamingSignature } from '../gateways/s3/auth/signing.js';
import { seededRng, testSeed } from './helpers/random.js';

const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const AMZ_DATE = '20130524T000000Z';
const SCOPE = { date: '20130524', region: 'us-east-1', service: 's3' };
const SEED = '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9';
const EMPTY = createHash('sha256').digest('hex');

// --- an independent signer ---
const hmac = (key: Buffer | string, data: string): Buffer => createHmac('sha256', key).update(data).digest();
const KEY = hmac(hmac(hmac(hmac(`AWS4${SECRET}`, '20130524'), 'us-east-1'), 's3'), 'aws4_request');
const sha256Hex = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');
const TIME_SCOPE = `${AMZ_DATE}\n20130524/us-east-1/s3/aws4_request`;

function signedBody(seed: string, chunks: Buffer[], trailers?: [string, string][]): Buffer {
  let previous = seed;
  const parts: Buffer[] = [];
  for (const chunk of [...chunks, Buffer.alloc(0)]) {
    previous = hmac(KEY, `AWS4-HMAC-SHA256-PAYLOAD\n${TIME_SCOPE}\n${previous}\n${EMPTY}\n${sha256Hex(chunk)}`).toString('hex');
    parts.push(Buffer.from(`${chunk.length.toString(16)};chunk-signature=${previous}\r\n`), chunk, Buffer.from(chunk.length > 0 ? '\r\n' : ''));
  }
  if (trailers !== undefined) {
    const canonical = trailers.map(([name, value]) => `${name}:${value}\n`).join('');
    const signature = hmac(KEY, `AWS4-HMAC-SHA256-TRAILER\n${TIME_SCOPE}\n${previous}\n${sha256Hex(canonical)}`).toString('hex');
    parts.push(Buffer.from(trailers.map(([name, value]) => `${name}:${value}\r\n`).join('') + `x-amz-trailer-signature:${signature}\r\n`));
  }
  parts.push(Buffer.from('\r\n'));
  return Buffer.concat(parts);
}

function unsignedBody(chunks: Buffer[], trailers: [string, string][]): Buffer {
  const framed = chunks.map((c) => Buffer.concat([Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n')]));
  return Buffer.concat([...framed, Buffer.from(`0\r\n${trailers.map(([n, v]) => `${n}:${v}\r\n`).join('')}\r\n`)]);
}

function options(signed: boolean, decodedLengthBytes: number, more: Partial<AwsChunkedOptions> = {}): AwsChunkedOptions {
  return {
    chain: signed ? new StreamingSignature(KEY, AMZ_DATE, SCOPE, SEED).chain() : null,
    expectedTrailers: [],
    signedTrailer: false,
    decodedLengthBytes,
    limits: authLimits,
    ...more,
  };
}

/** Feeds pieces to a fresh parser; returns what came out, the trailers, or the error. */
function decode(opts: AwsChunkedOptions, pieces: Buffer[]): { out: Buffer; trailers: Map<string, string> | null; error: unknown } {
  // A chain is used up by one body: every decode gets a fresh one from the seed.
  const chain = opts.chain === null ? null : new StreamingSignature(KEY, AMZ_DATE, SCOPE, SEED).chain();
  const parser = new AwsChunkedParser({ ...opts, chain });
  const out: Buffer[] = [];
  try {
    for (const piece of pieces) parser.push(piece, (data) => out.push(Buffer.from(data)));
    return { out: Buffer.concat(out), trailers: parser.finish(), error: null };
  } catch (error) {
    return { out: Buffer.concat(out), trailers: null, error };
  }
}

function codeOf(result: { error: unknown }): string | null {
  if (result.error === null) return null;
  if (!isS3AuthError(result.error)) throw result.error;
  return result.error.code;
}

function split(data: Buffer, pieceBytes: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += pieceBytes) out.push(data.subarray(i, i + pieceBytes));
  return out;
}

const rng = seededRng(testSeed());
const DATA = rng.bytes(150_000);
const CHUNKS = [DATA.subarray(0, 65536), DATA.subarray(65536, 131072), DATA.subarray(131072)];
const CRC = ['x-amz-checksum-crc32c', 'AAAAAA=='] as [string, string];

describe('signed chunks', () => {
  it('the independent signer reproduces AWS\'s published chunk signatures', () => {
    const body = signedBody(SEED, [Buffer.alloc(65536, 'a'), Buffer.alloc(1024, 'a')]).toString('latin1');
    expect(body).toContain('10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n');
    expect(body).toContain('400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n');
    expect(body.endsWith('0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n')).toBe(true);
  });

  it('decodes the same bytes whatever the input split', () => {
    const body = signedBody(SEED, CHUNKS, [CRC]);
    for (const pieceBytes of [1, 3, 64, 4096, 65537, body.length]) {
      const result = decode(options(true, DATA.length, { expectedTrailers: [CRC[0]], signedTrailer: true }), split(body, pieceBytes));
      expect(result.error).toBeNull();
      expect(result.out.equals(DATA)).toBe(true);
      expect(result.trailers).toEqual(new Map([CRC]));
    }
  });

  it('holds a chunk until its signature is verified; a tampered chunk never reaches the output', () => {
    const body = signedBody(SEED, CHUNKS);
    const parser = new AwsChunkedParser(options(true, DATA.length));
    const out: Buffer[] = [];
    const firstEnd = body.indexOf('\r\n', body.indexOf('\r\n') + 2 + 65536 - 2);
    parser.push(body.subarray(0, firstEnd - 1), (d) => out.push(d));
    expect(out.length).toBe(0);
    parser.push(body.subarray(firstEnd - 1, firstEnd), (d) => out.push(d));
    expect(Buffer.concat(out).equals(CHUNKS[0]!)).toBe(true);

    const tampered = Buffer.from(body);
    tampered[firstEnd + 200] = tampered[firstEnd + 200]! ^ 0x40; // inside the second chunk's data
    const result = decode(options(true, DATA.length), split(tampered, 1000));
    expect(codeOf(result)).toBe('SignatureDoesNotMatch');
    expect(result.out.equals(CHUNKS[0]!)).toBe(true);
  });

  it('refuses reordered chunks, foreign, missing or malformed signatures', () => {
    const original = signedBody(SEED, CHUNKS);
    const frameBytes = '10000;chunk-signature='.length + 64 + 2 + 65536 + 2;
    const reordered = Buffer.concat([original.subarray(frameBytes, 2 * frameBytes), original.subarray(0, frameBytes), original.subarray(2 * frameBytes)]);
    expect(codeOf(decode(options(true, DATA.length), [reordered]))).toBe('SignatureDoesNotMatch');
    const otherSeed = signedBody('0'.repeat(64), CHUNKS);
    expect(codeOf(decode(options(true, DATA.length), [otherSeed]))).toBe('SignatureDoesNotMatch');
    const text = signedBody(SEED, CHUNKS).toString('latin1');
    const sig = /chunk-signature=([0-9a-f]{64})/.exec(text)![1]!;
    for (const [from, to] of [[`;chunk-signature=${sig}`, ''], [sig, sig.toUpperCase()], [sig, sig.slice(1)], [`;chunk-signature=${sig}`, `;chunk-signature=${sig};x=1`]]) {
      const code = codeOf(decode(options(true, DATA.length), [Buffer.from(text.replace(from!, to!), 'latin1')]));
      expect(['SignatureDoesNotMatch', 'InvalidRequest']).toContain(code);
    }
    const finalSig = /\r\n0;chunk-signature=([0-9a-f]{64})/.exec(text)![1]!;
    const badFinal = text.replace(`\r\n0;chunk-signature=${finalSig}`, `\r\n0;chunk-signature=${'1'.repeat(64)}`);
    expect(codeOf(decode(options(true, DATA.length), [Buffer.from(badFinal, 'latin1')]))).toBe('SignatureDoesNotMatch');
  });

  it('trailer signatures: tampered value, missing signature, trailer not declared', () => {
    const trailerOptions = options(true, DATA.length, { expectedTrailers: [CRC[0]], signedTrailer: true });
    const good = signedBody(SEED, CHUNKS, [CRC]).toString('latin1');
    expect(codeOf(decode(trailerOptions, [Buffer.from(good.replace('AAAAAA==', 'AAAAAQ=='), 'latin1')]))).toBe('SignatureDoesNotMatch');
    expect(codeOf(decode(trailerOptions, [Buffer.from(good.replace(/x-amz-trailer-signature:[0-9a-f]+\r\n/, ''), 'latin1')]))).toBe('SignatureDoesNotMatch');
    const extra = signedBody(SEED, CHUNKS, [CRC, ['x-amz-meta-x', '1']]);
    expect(codeOf(decode(trailerOptions, [extra]))).toBe('MalformedTrailerError');
  });

  it('bounds a signed chunk before holding any of it', () => {
    const limits = { ...authLimits, signedChunkBytesMax: 1024 };
    const result = decode(options(true, 1 << 20, { limits }), [Buffer.from(`801;chunk-signature=${SEED}\r\n`)]);
    expect(codeOf(result)).toBe('InvalidRequest');
  });
});

describe('framing', () => {
  const unsigned = unsignedBody(CHUNKS, [CRC]);
  const unsignedOptions = options(false, DATA.length, { expectedTrailers: [CRC[0]] });

  it('every strict prefix is IncompleteBody (a missing final empty line alone is tolerated)', () => {
    for (const [body, opts] of [[unsigned, unsignedOptions], [signedBody(SEED, [DATA.subarray(0, 300), DATA.subarray(300, 400)], [CRC]), options(true, 400, { expectedTrailers: [CRC[0]], signedTrailer: true })]] as const) {
      for (let cut = 0; cut < body.length; cut += cut < 200 || cut > body.length - 400 ? 1 : 97) {
        const code = codeOf(decode(opts, [body.subarray(0, cut)]));
        expect(code, `cut at ${cut} of ${body.length}`).toBe(cut === body.length - 2 ? null : 'IncompleteBody');
      }
    }
  });

  it('lengths: longer or shorter than x-amz-decoded-content-length, data after the end', () => {
    expect(codeOf(decode(options(false, DATA.length - 1, { expectedTrailers: [CRC[0]] }), [unsigned]))).toBe('InvalidRequest');
    expect(codeOf(decode(options(false, DATA.length + 1, { expectedTrailers: [CRC[0]] }), [unsigned]))).toBe('IncompleteBody');
    expect(codeOf(decode(unsignedOptions, [unsigned, Buffer.from('x')]))).toBe('InvalidRequest');
    expect(codeOf(decode(unsignedOptions, [unsigned, Buffer.from('0\r\n\r\n')]))).toBe('InvalidRequest');
  });

  it('malformed lines: bad size, bare LF, missing CRLF after data, extensions, over-long header', () => {
    const text = unsigned.toString('latin1');
    const cases: [string, S3AuthErrorCode][] = [
      [text.replace('10000\r\n', 'zz\r\n'), 'InvalidRequest'],
      [text.replace('10000\r\n', '10000\n'), 'InvalidRequest'],
      [text.replace('10000\r\n', '10000;chunk-signature=00\r\n'), 'InvalidRequest'],
      [text.replace('10000\r\n', '-1\r\n'), 'InvalidRequest'],
      [text.replace('10000\r\n', 'ffffffffffffffff\r\n'), 'InvalidRequest'],
      [text.replace('10000\r\n', 'ffff\r\n'), 'InvalidRequest'],
      [text.replace('10000\r\n', `10000${' '.repeat(5000)}\r\n`), 'InvalidRequest'],
      [text.replace(`${CRC[0]}:`, `${CRC[0]}`), 'MalformedTrailerError'],
      [text.replace(`${CRC[0]}:${CRC[1]}\r\n`, ''), 'MalformedTrailerError'],
      [text.replace(`${CRC[0]}:${CRC[1]}\r\n`, `${CRC[0]}:${CRC[1]}\r\n${CRC[0]}:${CRC[1]}\r\n`), 'MalformedTrailerError'],
      [text.replace(`${CRC[0]}:${CRC[1]}\r\n`, `${CRC[0]}:${CRC[1]}\r\nx-amz-trailer-signature:${SEED}\r\n`), 'MalformedTrailerError'],
      [text.replace(`${CRC[0]}:${CRC[1]}\r\n`, `${CRC[0]}:${'A'.repeat(20_000)}\r\n`), 'MalformedTrailerError'],
    ];
    for (const [body, code] of cases) expect(codeOf(decode(unsignedOptions, [Buffer.from(body, 'latin1')]))).toBe(code);
    const many = text.replace('\r\n\r\n', '\r\n' + Array.from({ length: 20 }, (_, i) => `x-${i}:v\r\n`).join('') + '\r\n');
    expect(codeOf(decode(unsignedOptions, [Buffer.from(many, 'latin1')]))).toBe('MalformedTrailerError');
  });

  it('the Transform: object data out, trailers after flush', async () => {
    const decoder = new AwsChunkedDecoder(unsignedOptions);
    const out: Buffer[] = [];
    await pipeline(Readable.from(split(unsigned, 777)), decoder, new Writable({ write: (d: Buffer, _e, cb) => (out.push(d), cb()) }));
    expect(Buffer.concat(out).equals(DATA)).toBe(true);
    expect(decoder.trailers).toEqual(new Map([CRC]));
  });

  it(`seeded mutations never crash and never pass a changed signed body (seed ${rng.seed})`, () => {
    const small = [DATA.subarray(0, 100), DATA.subarray(100, 150)];
    const signed = signedBody(SEED, small, [CRC]);
    const plain = unsignedBody(small, [CRC]);
    for (let round = 0; round < 3000; round++) {
      const isSigned = round % 2 === 0;
      const source = isSigned ? signed : plain;
      const mutated = mutate(source);
      const opts = options(isSigned, 150, { expectedTrailers: [CRC[0]], signedTrailer: isSigned });
      const result = decode(opts, split(mutated, 1 + rng.int(40)));
      codeOf(result); // rethrows anything but an S3AuthError
      if (isSigned && result.error === null) {
        expect(result.out.equals(DATA.subarray(0, 150))).toBe(true);
        expect(result.trailers).toEqual(new Map([CRC]));
      }
    }
  });
});

function mutate(source: Buffer): Buffer {
  const out = Buffer.from(source);
  const at = rng.int(out.length);
  switch (rng.int(4)) {
    case 0:
      out[at] = out[at]! ^ (1 << rng.int(8));
      return out;
    case 1:
      return Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + rng.int(4))]);
    case 2:
      return Buffer.concat([out.subarray(0, at), Buffer.from(rng.pick(['\r\n', ';', '0', 'a', ':', ' ', '\n'])), out.subarray(at)]);
    default:
      out[at] = rng.pick([0x0d, 0x0a, 0x3b, 0x3a, 0x30, 0x66]);
      return out;
  }
}

describe('the body verifier', () => {
  const anonymous = (mode: 'unsigned' | 'streaming-unsigned-trailer'): AuthResult => ({ kind: 'anonymous', payload: { mode } });
  const chunkedHeaders = ['Content-Encoding', 'aws-chunked', 'x-amz-decoded-content-length', String(DATA.length), 'x-amz-trailer', 'x-amz-checksum-crc32'];

  async function run(auth: AuthResult, rawHeaders: string[], pieces: Buffer[], opts?: BodyVerifierOptions): Promise<{ data: Buffer; digest: BodyDigest }> {
    const body = createBodyVerifier(auth, { rawHeaders }, opts);
    const out: Buffer[] = [];
    await pipeline(Readable.from(pieces), body, new Writable({ write: (d: Buffer, _e, cb) => (out.push(d), cb()) }));
    return { data: Buffer.concat(out), digest: body.result() };
  }

  async function refusal(promise: () => Promise<unknown>): Promise<string> {
    try {
      await promise();
    } catch (err) {
      if (!isS3AuthError(err)) throw err;
      return err.code;
    }
    return 'accepted';
  }

  const crc32Of = (data: Buffer) => {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(createCrc32(data), 0);
    return out.toString('base64');
  };

  it('verifies a trailing checksum and computes the requested extra ones', async () => {
    const body = unsignedBody(CHUNKS, [['x-amz-checksum-crc32', crc32Of(DATA)]]);
    const { data, digest } = await run(anonymous('streaming-unsigned-trailer'), chunkedHeaders, split(body, 5000), { computeChecksums: ['sha256', 'crc64nvme'] });
    expect(data.equals(DATA)).toBe(true);
    expect(digest).toMatchObject({ decodedLengthBytes: DATA.length, declaredChecksum: 'crc32', md5Hex: createHash('md5').update(DATA).digest('hex') });
    expect(digest.checksums.sha256).toBe(createHash('sha256').update(DATA).digest('base64'));
    expect(Object.keys(digest.checksums).sort()).toEqual(['crc32', 'crc64nvme', 'sha256']);
  });

  it('refuses wrong or malformed trailing checksums and missing lengths', async () => {
    const auth = anonymous('streaming-unsigned-trailer');
    expect(await refusal(() => run(auth, chunkedHeaders, [unsignedBody(CHUNKS, [['x-amz-checksum-crc32', 'AAAAAA==']])]))).toBe('BadDigest');
    expect(await refusal(() => run(auth, chunkedHeaders, [unsignedBody(CHUNKS, [['x-amz-checksum-crc32', 'not base64']])]))).toBe('InvalidRequest');
    expect(await refusal(() => run(auth, chunkedHeaders.slice(0, 2), [unsignedBody(CHUNKS, [])]))).toBe('MissingContentLength');
    const huge = ['x-amz-decoded-content-length', String(6 * 1024 ** 3)];
    expect(await refusal(() => run(auth, huge, []))).toBe('EntityTooLarge');
  });

  it('checks the header declarations before reading the body', async () => {
    const unsigned = anonymous('unsigned');
    const cases: [string[], string][] = [
      [['x-amz-checksum-crc32', 'AAAAAA==', 'x-amz-checksum-sha1', 'AAAAAAAAAAAAAAAAAAAAAAAAAAA='], 'InvalidRequest'],
      [['x-amz-checksum-crc32', 'AAAAAAA='], 'InvalidRequest'],
      [['x-amz-trailer', 'x-amz-checksum-crc32'], 'InvalidRequest'],
      [['x-amz-sdk-checksum-algorithm', 'MD5'], 'InvalidRequest'],
      [['x-amz-sdk-checksum-algorithm', 'SHA1', 'x-amz-checksum-crc32', 'AAAAAA=='], 'InvalidRequest'],
      [['content-md5', 'short'], 'InvalidDigest'],
      [['content-length', '12x'], 'InvalidArgument'],
    ];
    for (const [headers, code] of cases) expect(await refusal(async () => createBodyVerifier(unsigned, { rawHeaders: headers })), headers.join(' ')).toBe(code);
    const trailerAuth = anonymous('streaming-unsigned-trailer');
    expect(await refusal(async () => createBodyVerifier(trailerAuth, { rawHeaders: [...chunkedHeaders, 'x-amz-checksum-crc32', 'AAAAAA=='] }))).toBe('InvalidRequest');
    expect(await refusal(async () => createBodyVerifier(trailerAuth, { rawHeaders: [...chunkedHeaders.slice(0, 4), 'x-amz-trailer', 'x-amz-meta-a'] }))).toBe('InvalidRequest');
  });

  it('plain bodies: Content-MD5, a header checksum, x-amz-sdk-checksum-algorithm alone, short bodies', async () => {
    const md5 = createHash('md5').update(DATA).digest('base64');
    const headers = ['content-length', String(DATA.length), 'content-md5', md5, 'x-amz-checksum-crc32', crc32Of(DATA)];
    expect((await run(anonymous('unsigned'), headers, split(DATA, 4096))).digest.declaredChecksum).toBe('crc32');
    const otherMd5 = createHash('md5').update('x').digest('base64');
    expect(await refusal(() => run(anonymous('unsigned'), ['content-md5', otherMd5], [DATA]))).toBe('BadDigest');
    expect(await refusal(() => run(anonymous('unsigned'), ['x-amz-checksum-crc32', 'AAAAAA=='], [DATA]))).toBe('BadDigest');
    const sdkOnly = await run(anonymous('unsigned'), ['x-amz-sdk-checksum-algorithm', 'CRC32C'], [DATA]);
    expect(sdkOnly.digest.declaredChecksum).toBe('crc32c');
    expect(sdkOnly.digest.checksums.crc32c).toBeDefined();
    expect(await refusal(() => run(anonymous('unsigned'), ['content-length', String(DATA.length)], [DATA.subarray(1)]))).toBe('IncompleteBody');
    expect(await refusal(() => run(anonymous('unsigned'), [], [DATA], { limits: { bodyBytesMax: 1000 } }))).toBe('EntityTooLarge');
  });
});

// CRC-32 (IEEE) bit by bit: a third implementation for the expected values above.
function createCrc32(data: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}
