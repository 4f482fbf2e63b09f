/**
 * Parsing of the two places a SigV4 signature travels: the Authorization
 * header (`AWS4-HMAC-SHA256 Credential=AK/date/region/s3/aws4_request,
 * SignedHeaders=a;b, Signature=hex`) and the presigned URL's X-Amz-*
 * parameters; and of the request time (x-amz-date, or Date). Syntax only:
 * the verifier checks scope, time and signature. Errors are
 * AuthorizationHeaderMalformed (header) or AuthorizationQueryParametersError
 * (query), as S3 reports them.
 */
import { s3Error, type S3AuthErrorCode } from './errors.js';
import { decodeComponent, type QueryParam } from './canonical.js';
import { SIGV4_ALGORITHM, type Scope } from './signing.js';

export interface Credential extends Scope {
  accessKeyId: string;
}

export interface SignatureParts {
  credential: Credential;
  /** Lower-case, sorted, distinct; includes host. */
  signedHeaders: string[];
  /** As given (its form is checked when compared). */
  signature: string;
}

export interface PresignParts extends SignatureParts {
  amzDate: string;
  expiresSeconds: number;
}

const TOKEN = /^[a-z0-9!#$%&'*+\-.^_`|~]+$/;

/** Parses `AK/YYYYMMDD/region/service/aws4_request` (the access key may itself contain `/`). */
export function parseCredential(value: string, code: S3AuthErrorCode): Credential {
  const parts = value.split('/');
  if (parts.length < 5) throw s3Error(code, 'The Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".');
  const terminator = parts.pop()!;
  const service = parts.pop()!;
  const region = parts.pop()!;
  const date = parts.pop()!;
  const accessKeyId = parts.join('/');
  if (terminator !== 'aws4_request') throw s3Error(code, `The Credential has a wrong terminator '${terminator}'; expecting 'aws4_request'.`);
  if (!/^\d{8}$/.test(date)) throw s3Error(code, `The Credential has an invalid date '${date}'.`);
  if (!/^[a-z0-9-]{1,64}$/i.test(region)) throw s3Error(code, 'The Credential has an invalid region.');
  if (accessKeyId === '' || service === '') throw s3Error(code, 'The Credential is mal-formed; the access key or service is empty.');
  return { accessKeyId, date, region, service };
}

function parseSignedHeaders(value: string, countMax: number, code: S3AuthErrorCode): string[] {
  const names = value.split(';');
  if (names.length > countMax) throw s3Error(code, `SignedHeaders lists more than ${countMax} headers.`);
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (!TOKEN.test(name)) throw s3Error(code, `SignedHeaders has an invalid (or not lower-case) header name '${name.slice(0, 64)}'.`);
    if (i > 0 && names[i - 1]! >= name) throw s3Error(code, 'SignedHeaders must be sorted and distinct.');
  }
  if (!names.includes('host')) throw s3Error(code, 'SignedHeaders must include host.');
  return names;
}

/** Parses an Authorization header value that starts with AWS4-HMAC-SHA256. */
export function parseAuthorizationHeader(value: string, signedHeadersCountMax: number): SignatureParts {
  const code = 'AuthorizationHeaderMalformed';
  if (!value.startsWith(`${SIGV4_ALGORITHM} `)) {
    throw s3Error(code, `The authorization header is malformed; the algorithm must be ${SIGV4_ALGORITHM}.`);
  }
  const fields = new Map<string, string>();
  for (const piece of value.slice(SIGV4_ALGORITHM.length).split(',')) {
    const item = piece.trim();
    const eq = item.indexOf('=');
    if (eq <= 0) throw s3Error(code, 'The authorization header is malformed; expecting "Credential=..., SignedHeaders=..., Signature=...".');
    const name = item.slice(0, eq);
    if (fields.has(name)) throw s3Error(code, `The authorization header is malformed; ${name} appears twice.`);
    fields.set(name, item.slice(eq + 1));
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (credential === undefined || signedHeaders === undefined || signature === undefined || fields.size !== 3) {
    throw s3Error(code, 'The authorization header is malformed; expecting exactly Credential, SignedHeaders and Signature.');
  }
  return {
    credential: parseCredential(credential, code),
    signedHeaders: parseSignedHeaders(signedHeaders, signedHeadersCountMax, code),
    signature,
  };
}

/** The names of the presigned-URL parameters (exact case, as S3 requires). */
export const presignParams = {
  algorithm: 'X-Amz-Algorithm',
  credential: 'X-Amz-Credential',
  date: 'X-Amz-Date',
  expires: 'X-Amz-Expires',
  signedHeaders: 'X-Amz-SignedHeaders',
  signature: 'X-Amz-Signature',
  contentSha256: 'X-Amz-Content-Sha256',
} as const;

function uniqueParam(params: readonly QueryParam[], name: string): string | undefined {
  const found = params.filter((p) => p.name === name);
  if (found.length > 1) throw s3Error('AuthorizationQueryParametersError', `The query parameter ${name} appears more than once.`);
  return found[0] === undefined ? undefined : decodeComponent(found[0].value);
}

function requiredParam(params: readonly QueryParam[], name: string): string {
  const value = uniqueParam(params, name);
  if (value === undefined) {
    throw s3Error(
      'AuthorizationQueryParametersError',
      'Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.',
    );
  }
  return value;
}

/** Parses the X-Amz-* parameters of a presigned URL. */
export function parsePresignParams(params: readonly QueryParam[], signedHeadersCountMax: number, expiresSecondsMax: number): PresignParts {
  const code = 'AuthorizationQueryParametersError';
  const algorithm = requiredParam(params, presignParams.algorithm);
  if (algorithm !== SIGV4_ALGORITHM) throw s3Error(code, `X-Amz-Algorithm only supports "${SIGV4_ALGORITHM}".`);
  const credential = parseCredential(requiredParam(params, presignParams.credential), code);
  const amzDate = requiredParam(params, presignParams.date);
  const expires = requiredParam(params, presignParams.expires);
  if (!/^\d{1,7}$/.test(expires)) throw s3Error(code, 'X-Amz-Expires should be a number.');
  const expiresSeconds = Number(expires);
  if (expiresSeconds < 1) throw s3Error(code, 'X-Amz-Expires must be non-negative and at least 1 second.');
  if (expiresSeconds > expiresSecondsMax) {
    throw s3Error(code, `X-Amz-Expires must be less than a week (in seconds) that is; the maximum expires is ${expiresSecondsMax} seconds.`);
  }
  const signedHeaders = parseSignedHeaders(requiredParam(params, presignParams.signedHeaders), signedHeadersCountMax, code);
  return { credential, signedHeaders, signature: requiredParam(params, presignParams.signature), amzDate, expiresSeconds };
}

/** The presigned payload hash parameter, when the URL carries one. */
export function presignContentSha256(params: readonly QueryParam[]): string | undefined {
  return uniqueParam(params, presignParams.contentSha256);
}

const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;

/** Milliseconds since the epoch of an ISO 8601 basic time (`20130524T000000Z`), or null when not one. */
export function parseAmzDate(value: string): number | null {
  const m = AMZ_DATE.exec(value);
  if (!m) return null;
  // Checked by arithmetic (no Date objects: this runs on every signed request).
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = Number(m[6]);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month) || hour > 23 || minute > 59 || second > 59) return null;
  return Date.UTC(year, month - 1, day, hour, minute, second);
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function daysInMonth(year: number, month: number): number {
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  return month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1]!;
}

/** The ISO 8601 basic form of a time (what the string to sign carries). */
export function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

/** The request time of a header-signed request: x-amz-date, else the HTTP Date header. */
export function requestAmzDate(amzDateHeader: string | undefined, dateHeader: string | undefined): { amzDate: string; timeMs: number } {
  if (amzDateHeader !== undefined) {
    const timeMs = parseAmzDate(amzDateHeader);
    if (timeMs === null) throw s3Error('AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header (x-amz-date is not ISO 8601 basic).');
    return { amzDate: amzDateHeader, timeMs };
  }
  const timeMs = dateHeader === undefined ? NaN : Date.parse(dateHeader);
  if (!Number.isFinite(timeMs)) throw s3Error('AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header.');
  return { amzDate: formatAmzDate(timeMs), timeMs };
}
