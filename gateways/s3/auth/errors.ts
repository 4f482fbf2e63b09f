/**
 * The typed errors of S3 authentication and payload verification. Each
 * carries the S3 error code string (the `<Code>` of the XML error) that the
 * gateway's one error table maps to an HTTP status; this module never picks
 * statuses itself.
 *
 * Messages are for the client and the log: they never contain a secret, a
 * derived signing key or the signature we computed (a computed signature is a
 * valid credential for the request it signs). `details` holds what S3 itself
 * returns to help a client debug (the canonical request and string to sign
 * the client should have signed), all derived from public request data.
 */

/** The S3 error codes this module raises (a closed list). */
export const s3AuthErrorCodes = [
  'AccessDenied',
  'AuthorizationHeaderMalformed',
  'AuthorizationQueryParametersError',
  'BadDigest',
  'EntityTooLarge',
  'IncompleteBody',
  'InvalidAccessKeyId',
  'InvalidArgument',
  'InvalidDigest',
  'InvalidRequest',
  'InvalidURI',
  'MalformedTrailerError',
  'MissingContentLength',
  'NotImplemented',
  'RequestTimeTooSkewed',
  'SignatureDoesNotMatch',
  'XAmzContentSHA256Mismatch',
] as const;

export type S3AuthErrorCode = (typeof s3AuthErrorCodes)[number];

/** Public facts S3 returns along with some errors (never secret). */
export interface S3AuthErrorDetails {
  canonicalRequest?: string;
  stringToSign?: string;
  /** RequestTimeTooSkewed: the request's time and ours (ISO 8601). */
  requestTime?: string;
  serverTime?: string;
  /** AccessDenied for an expired presigned URL: when it expired (ISO 8601). */
  expiresTime?: string;
  /** AuthorizationHeaderMalformed for a wrong region: the region we expect. */
  expectedRegion?: string;
  /** AccessDenied for unsigned x-amz-* headers: their names. */
  headersNotSigned?: string[];
}

export class S3AuthError extends Error {
  override name = 'S3AuthError';
  readonly code: S3AuthErrorCode;
  readonly details: S3AuthErrorDetails;
  constructor(code: S3AuthErrorCode, message: string, options?: { cause?: unknown; details?: S3AuthErrorDetails }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options?.details ?? {};
  }
}

export function isS3AuthError(err: unknown, code?: S3AuthErrorCode): err is S3AuthError {
  return err instanceof S3AuthError && (code === undefined || err.code === code);
}

/** Shorthand at the throw site: `throw s3Error('IncompleteBody', '...')`. */
export function s3Error(code: S3AuthErrorCode, message: string, details?: S3AuthErrorDetails): S3AuthError {
  return new S3AuthError(code, message, details === undefined ? undefined : { details });
}
