/**
 * The S3 gateway's one error table: every failure leaves the gateway as an S3
 * XML error with the right code and HTTP status. Operating errors from below
 * (TesseraError codes) and from authentication (S3AuthError) are mapped here
 * and nowhere else; anything unknown is InternalError, logged with its cause.
 */
import { isTesseraError, type ErrorCodeName } from '../../src/lib/errors.js';
import { isS3AuthError } from './auth/index.js';

export const s3Statuses = {
  AccessDenied: 403,
  AccountProblem: 403,
  AuthorizationHeaderMalformed: 400,
  AuthorizationQueryParametersError: 400,
  BadDigest: 400,
  BucketAlreadyExists: 409,
  BucketAlreadyOwnedByYou: 409,
  BucketNotEmpty: 409,
  EntityTooLarge: 400,
  EntityTooSmall: 400,
  ExpiredToken: 400,
  IncompleteBody: 400,
  InternalError: 500,
  InvalidAccessKeyId: 403,
  InvalidArgument: 400,
  InvalidBucketName: 400,
  InvalidBucketState: 409,
  InvalidDigest: 400,
  InvalidPart: 400,
  InvalidPartOrder: 400,
  InvalidRange: 416,
  InvalidRequest: 400,
  InvalidStorageClass: 400,
  InvalidURI: 400,
  MalformedTrailerError: 400,
  KeyTooLongError: 400,
  MalformedACLError: 400,
  MalformedPOSTRequest: 400,
  MalformedXML: 400,
  MaxMessageLengthExceeded: 400,
  MetadataTooLarge: 400,
  MethodNotAllowed: 405,
  MissingContentLength: 411,
  MissingRequestBodyError: 400,
  NoSuchBucket: 404,
  NoSuchBucketPolicy: 404,
  NoSuchCORSConfiguration: 404,
  NoSuchKey: 404,
  NoSuchLifecycleConfiguration: 404,
  NoSuchUpload: 404,
  NoSuchVersion: 404,
  NotImplemented: 501,
  NotModified: 304,
  PreconditionFailed: 412,
  RequestTimeTooSkewed: 403,
  RequestTimeout: 400,
  ServiceUnavailable: 503,
  SignatureDoesNotMatch: 403,
  SlowDown: 503,
  XAmzContentSHA256Mismatch: 400,
  InvalidObjectState: 403,
  CORSForbidden: 403,
  BadRequest: 400,
  UnresolvableGrantByEmailAddress: 400,
  InvalidPolicyDocument: 400,
  IncorrectNumberOfFilesInPostRequest: 400,
  MaxPostPreDataLengthExceeded: 400,
  OperationAborted: 409,
  InvalidPartNumber: 416,
} as const;

export type S3ErrorCode = keyof typeof s3Statuses;

export class S3Error extends Error {
  override name = 'S3Error';
  constructor(
    readonly code: S3ErrorCode,
    message: string,
    readonly details: Record<string, string> = {},
    /** Response headers that go with this error (x-amz-delete-marker on a NoSuchKey, Content-Range on InvalidRange...). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  get status(): number {
    return s3Statuses[this.code];
  }
}

export const s3Error = (code: S3ErrorCode, message: string, details?: Record<string, string>, headers?: Record<string, string>): S3Error => new S3Error(code, message, details, headers);

/** How operating errors from the cluster surface to S3 clients. */
const fromTessera: Partial<Record<ErrorCodeName, S3ErrorCode>> = {
  InvalidArgument: 'InvalidArgument',
  LimitExceeded: 'InvalidArgument',
  NoSpace: 'ServiceUnavailable',
  Full: 'ServiceUnavailable',
  Unavailable: 'ServiceUnavailable',
  NoQuorum: 'ServiceUnavailable',
  Busy: 'SlowDown',
  Timeout: 'RequestTimeout',
  Conflict: 'PreconditionFailed',
  NotSupported: 'NotImplemented',
  Aborted: 'RequestTimeout',
};

/** Maps anything thrown to the S3 error the client sees; `internal` is true when it must be logged. */
export function toS3Error(err: unknown): { error: S3Error; internal: boolean } {
  if (err instanceof S3Error) return { error: err, internal: false };
  if (isS3AuthError(err)) {
    const code = (err.code in s3Statuses ? err.code : 'InvalidRequest') as S3ErrorCode;
    return { error: new S3Error(code, err.message), internal: false };
  }
  if (isTesseraError(err)) {
    const code = fromTessera[err.code];
    if (code) return { error: new S3Error(code, err.message), internal: false };
  }
  // The client went away in the middle of its request body (Node's "aborted"): not our failure.
  if ((err as { code?: unknown } | null)?.code === 'ECONNRESET') return { error: new S3Error('IncompleteBody', 'The connection closed before the request body was complete.'), internal: false };
  return { error: new S3Error('InternalError', 'We encountered an internal error. Please try again.'), internal: true };
}
