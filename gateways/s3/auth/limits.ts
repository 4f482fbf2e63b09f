/**
 * The bounds of S3 authentication and payload decoding, declared in one place.
 * They are specific to the S3 wire format (SigV4 headers, aws-chunked framing,
 * trailers), so they live with it rather than in src/lib/limits.ts; the
 * gateway may override any of them through the options of the verifier and
 * the body verifier. Relationships are asserted at load.
 */
import { assert } from '../../../src/lib/assert.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const authLimits = {
  /** Largest clock difference between a header-signed request and us (S3: 15 minutes). */
  clockSkewMsMax: 15 * 60_000,
  /** Longest validity of a presigned URL (S3: 7 days), in seconds as X-Amz-Expires is. */
  presignExpiresSecondsMax: 604_800,
  /** Authorization header value (SignedHeaders may list a few dozen names). */
  authorizationBytesMax: 8 * KiB,
  /** Names in SignedHeaders / X-Amz-SignedHeaders. */
  signedHeadersCountMax: 128,
  /** Request target (path and query), as sent. */
  urlBytesMax: 16 * KiB,
  /** Query parameters of one request. */
  queryParamsCountMax: 256,
  /** Derived signing keys remembered per verifier (one per secret, day, region and service). */
  signingKeyCacheEntriesMax: 4096,

  // --- aws-chunked framing ---
  /**
   * A signed chunk is held until its signature is verified (verified data
   * only flows on), so its size is bounded tightly; clients use 8 KiB to
   * 1 MiB. Unsigned chunks flow through without being held.
   */
  signedChunkBytesMax: 16 * MiB,
  unsignedChunkBytesMax: 5 * GiB,
  /** One chunk header line: `hex-size[;chunk-signature=<64 hex>]` and CRLF. */
  chunkHeaderLineBytesMax: 4 * KiB,
  /** All trailer lines together (the signature and one checksum take ~150 B). */
  trailerBytesMax: 16 * KiB,
  trailerCountMax: 16,

  // --- bodies ---
  /** Largest body of one PUT or part (S3: 5 GiB). */
  bodyBytesMax: 5 * GiB,
} as const;

export type AuthLimits = { -readonly [K in keyof typeof authLimits]: number };

assert(authLimits.signedChunkBytesMax <= authLimits.unsignedChunkBytesMax, 'signed chunks are the tighter bound');
assert(authLimits.unsignedChunkBytesMax <= authLimits.bodyBytesMax, 'a chunk fits in a body');
assert(authLimits.chunkHeaderLineBytesMax >= 100, 'a signed chunk header line fits');
assert(authLimits.trailerBytesMax >= 256, 'a checksum and a trailer signature fit');
assert(Number.isSafeInteger(authLimits.bodyBytesMax), 'body lengths are exact');

/** The defaults with the caller's overrides. */
export function resolveLimits(overrides?: Partial<AuthLimits>): AuthLimits {
  return { ...authLimits, ...overrides };
}
