/**
 * gateways/s3/auth: S3 request authentication (SigV4: Authorization header,
 * presigned URLs, anonymous) and body verification (aws-chunked decoding with
 * chunk and trailer signatures, x-amz-content-sha256, Content-MD5 and the
 * x-amz-checksum-* family), as a pure library: it knows nothing of users,
 * buckets or storage; the access-key lookup and the clock are injected.
 *
 * Use (docs/s3-auth.md):
 *   const verifier = new SigV4Verifier({ lookupKey, clock: io.clock });
 *   const auth = await verifier.verify(request.raw);          // who, and what body
 *   const body = createBodyVerifier(auth, request.raw, { crc32c });
 *   await pipeline(request.raw, body, sink);                  // sink stores the data
 *   const { md5Hex, checksums, decodedLengthBytes } = body.result();
 * Every failure is an S3AuthError whose `code` is the S3 error code.
 */
export { S3AuthError, isS3AuthError, s3AuthErrorCodes, type S3AuthErrorCode, type S3AuthErrorDetails } from './errors.js';
export { authLimits, type AuthLimits } from './limits.js';
export {
  SigV4Verifier,
  type AuthRequest,
  type AuthResult,
  type AnonymousAuth,
  type SignedAuth,
  type KeyLookup,
  type KeyRecord,
  type SigV4VerifierOptions,
  type WallClock,
} from './verifier.js';
export { type PayloadSpec, type PayloadMode } from './payload.js';
export { StreamingSignature, type ChunkChain } from './signing.js';
export { BodyVerifier, createBodyVerifier, requestHeaders, type BodyDigest, type BodyVerifierOptions } from './body.js';
export { AwsChunkedDecoder, AwsChunkedParser, type AwsChunkedOptions } from './chunked.js';
export {
  checksumAlgorithms,
  checksumHeaderName,
  createChecksummer,
  type ChecksumAlgorithm,
  type ChecksumValues,
  type Checksummer,
  type Crc32cFunction,
} from './checksums.js';
export { Crc64Nvme, crc64nvme } from './crc64nvme.js';
export { storedContentEncoding } from './content-encoding.js';
