/**
 * The body verifier: the gateway pipes the request body through it and
 * stores what comes out. Out comes the object's data (aws-chunked framing
 * decoded, signed chunks verified before they pass); along the way MD5 (the
 * ETag), the declared checksum and any requested ones are computed
 * incrementally. At the end it checks the x-amz-content-sha256 hash, the
 * Content-MD5, the declared checksum (header or trailer) and the length.
 *
 * The output stream ends cleanly only if every check passed: a failed check
 * errors the stream (S3AuthError) instead of ending it, so a consumer that
 * commits on 'end' never commits an unverified body. Headers are validated
 * when the verifier is created, before any byte is read.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { assert } from '../../../src/lib/assert.js';
import { AwsChunkedParser } from './chunked.js';
import { headerMapFromRaw, headerValue, splitTarget, withHoistedHeaders, type HeaderMap } from './canonical.js';
import {
  checksumDisplayName,
  createChecksummer,
  isValidChecksumValue,
  parseContentMd5,
  type ChecksumAlgorithm,
  type Checksummer,
  type ChecksumValues,
  type Crc32cFunction,
} from './checksums.js';
import { s3Error } from './errors.js';
import { resolveLimits, type AuthLimits } from './limits.js';
import { isChunkedPayload } from './payload.js';
import { planChecksums, type ChecksumPlan } from './body-headers.js';
import type { AuthRequest, AuthResult } from './verifier.js';

export interface BodyVerifierOptions {
  limits?: Partial<AuthLimits>;
  /** CRC-32C implementation (the gateway passes native/'s); default @node-rs/crc32. */
  crc32c?: Crc32cFunction;
  /** Checksums to compute besides the declared one (S3 stores CRC64NVME for every new object). */
  computeChecksums?: readonly ChecksumAlgorithm[];
}

export interface BodyDigest {
  /** Bytes of object data (after aws-chunked decoding). */
  decodedLengthBytes: number;
  /** MD5 of the data: the ETag of a single PUT, in hex. */
  md5Hex: string;
  md5Base64: string;
  /** Every checksum computed (base64 of big-endian): the declared one (verified) and the requested ones. */
  checksums: ChecksumValues;
  /** The checksum the client declared, by header or trailer, or x-amz-sdk-checksum-algorithm; null if none. */
  declaredChecksum: ChecksumAlgorithm | null;
  /** The aws-chunked trailers received (lower-case names, the trailer signature excluded). */
  trailers: ReadonlyMap<string, string>;
}

/**
 * Validates the request's body headers (for a presigned URL, with the x-amz-*
 * parameters hoisted into its query) and returns the verifier to pipe its
 * body through. Throws S3AuthError before any body byte is read.
 */
export function createBodyVerifier(auth: AuthResult, request: AuthRequest, options: BodyVerifierOptions = {}): BodyVerifier {
  return new BodyVerifier(auth, requestHeaders(auth, request, options.limits), options);
}

/** The request's headers as S3 honours them: for a presigned URL, hoisted x-amz-* query parameters included. */
export function requestHeaders(auth: AuthResult, request: AuthRequest, limits?: Partial<AuthLimits>): Map<string, string[]> {
  const headers = headerMapFromRaw(request.rawHeaders);
  if (auth.kind !== 'signed' || auth.via !== 'presigned') return headers;
  return withHoistedHeaders(headers, splitTarget(request.url ?? '/').rawQuery, resolveLimits(limits).queryParamsCountMax);
}

export class BodyVerifier extends Transform {
  /** The object size the request declares (x-amz-decoded-content-length or Content-Length); null if unknown. */
  readonly declaredLengthBytes: number | null;
  readonly #limits: AuthLimits;
  readonly #parser: AwsChunkedParser | null;
  readonly #plan: ChecksumPlan;
  readonly #md5: Hash = createHash('md5');
  readonly #sha256: Hash | null;
  readonly #expectedSha256Hex: string | null;
  readonly #expectedMd5Base64: string | null;
  readonly #checksummers: [ChecksumAlgorithm, Checksummer][];
  #receivedBytes = 0;
  #digest: BodyDigest | null = null;
  readonly #onData = (data: Buffer): void => this.#consume(data);

  constructor(auth: AuthResult, headers: HeaderMap, options: BodyVerifierOptions) {
    super();
    this.#limits = resolveLimits(options.limits);
    const payload = auth.payload;
    const chunked = isChunkedPayload(payload);
    this.declaredLengthBytes = declaredLength(headers, chunked, this.#limits);
    const md5 = headerValue(headers, 'content-md5');
    this.#expectedMd5Base64 = md5 === undefined ? null : parseContentMd5(md5);
    this.#plan = planChecksums(headers, payload, options.computeChecksums ?? []);
    this.#checksummers = this.#plan.compute.map((algorithm) => [algorithm, createChecksummer(algorithm, options.crc32c)]);
    this.#expectedSha256Hex = payload.mode === 'sha256' ? payload.sha256Hex : null;
    this.#sha256 = payload.mode === 'sha256' ? createHash('sha256') : null;
    this.#parser = chunked ? this.#chunkedParser(auth) : null;
  }

  #chunkedParser(auth: AuthResult): AwsChunkedParser {
    const signed = auth.payload.mode === 'streaming-signed';
    const streaming = auth.kind === 'signed' ? auth.streaming : null;
    assert(!signed || streaming !== null, 'a chunk-signed payload comes with its seed signature');
    return new AwsChunkedParser({
      chain: signed ? streaming!.chain() : null,
      expectedTrailers: this.#plan.trailer === null ? [] : [this.#plan.trailer],
      signedTrailer: auth.payload.mode === 'streaming-signed' && auth.payload.trailer,
      decodedLengthBytes: this.declaredLengthBytes!,
      limits: this.#limits,
    });
  }

  /** What was verified; only after the stream has flushed without error. */
  result(): BodyDigest {
    assert(this.#digest !== null, 'BodyVerifier.result() is read after the body was verified');
    return this.#digest;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      if (this.#parser !== null) this.#parser.push(chunk, this.#onData);
      else this.#consume(chunk);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.#digest = this.#finish();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  #consume(data: Buffer): void {
    this.#receivedBytes += data.length;
    if (this.#receivedBytes > this.#limits.bodyBytesMax) throw s3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size.');
    this.#md5.update(data);
    this.#sha256?.update(data);
    for (const [, checksummer] of this.#checksummers) checksummer.update(data);
    this.push(data);
  }

  #finish(): BodyDigest {
    const trailers = this.#parser?.finish() ?? new Map<string, string>();
    if (this.#parser === null && this.declaredLengthBytes !== null && this.#receivedBytes !== this.declaredLengthBytes) {
      throw s3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header.');
    }
    if (this.#sha256 !== null && this.#sha256.digest('hex') !== this.#expectedSha256Hex) {
      throw s3Error('XAmzContentSHA256Mismatch', 'The provided \'x-amz-content-sha256\' header does not match what was computed.');
    }
    const md5 = this.#md5.digest();
    if (this.#expectedMd5Base64 !== null && md5.toString('base64') !== this.#expectedMd5Base64) {
      throw s3Error('BadDigest', 'The Content-MD5 you specified did not match what we received.');
    }
    const checksums: ChecksumValues = {};
    for (const [algorithm, checksummer] of this.#checksummers) checksums[algorithm] = checksummer.digestBase64();
    this.#checkDeclared(checksums, trailers);
    return {
      decodedLengthBytes: this.#receivedBytes,
      md5Hex: md5.toString('hex'),
      md5Base64: md5.toString('base64'),
      checksums,
      declaredChecksum: this.#plan.declared,
      trailers,
    };
  }

  /** The declared checksum (header value, or the trailer's) must match what was computed. */
  #checkDeclared(computed: ChecksumValues, trailers: ReadonlyMap<string, string>): void {
    const { declared, headerValue: fromHeader, trailer } = this.#plan;
    if (declared === null) return;
    const expected = trailer !== null ? trailers.get(trailer) : fromHeader;
    if (expected === undefined || expected === null) return; // x-amz-sdk-checksum-algorithm alone: computed, nothing to compare
    if (!isValidChecksumValue(declared, expected)) throw s3Error('InvalidRequest', `Value for x-amz-checksum-${declared} trailing header is invalid.`);
    if (computed[declared] !== expected) {
      throw s3Error('BadDigest', `The ${checksumDisplayName(declared)} you specified did not match the calculated checksum.`);
    }
  }
}

/** The object size the headers declare; aws-chunked bodies must declare it (x-amz-decoded-content-length). */
function declaredLength(headers: HeaderMap, chunked: boolean, limits: AuthLimits): number | null {
  const name = chunked ? 'x-amz-decoded-content-length' : 'content-length';
  const value = headerValue(headers, name);
  if (value === undefined) {
    if (chunked) throw s3Error('MissingContentLength', 'You must provide x-amz-decoded-content-length with an aws-chunked body.');
    return null;
  }
  if (!/^\d{1,16}$/.test(value)) throw s3Error('InvalidArgument', `The ${name} header is not a valid length.`);
  const lengthBytes = Number(value);
  if (lengthBytes > limits.bodyBytesMax) throw s3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size.');
  return lengthBytes;
}
