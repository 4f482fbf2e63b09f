/**
 * SigV4 request verification: decides who sent a request (an access key's
 * user, or anonymous) and what its body is, before any body byte is read.
 *
 * - Authorization header: AWS4-HMAC-SHA256 with x-amz-content-sha256; the
 *   request time (x-amz-date or Date) within 15 minutes of our clock.
 * - Presigned URL: X-Amz-* parameters, X-Amz-Expires <= 7 days, enforced
 *   against our clock; the payload is UNSIGNED-PAYLOAD unless the URL signs one.
 * - Neither: anonymous (the gateway's ACLs decide); SigV2 is refused.
 * Every x-amz-* header present must be signed. Signatures are compared in
 * constant time; the secret comes from the injected lookup and never appears
 * in an error. A streaming body's chunks are verified later, by the body
 * verifier, from the returned StreamingSignature.
 */
import { s3Error } from './errors.js';
import {
  canonicalHeaders,
  canonicalQuery,
  canonicalUri,
  headerMapFromRaw,
  headerValue,
  parseQuery,
  splitTarget,
  type HeaderMap,
  type QueryParam,
} from './canonical.js';
import {
  parseAmzDate,
  parseAuthorizationHeader,
  parseCredential,
  parsePresignParams,
  presignContentSha256,
  presignParams,
  requestAmzDate,
  type Credential,
  type SignatureParts,
} from './authorization.js';
import { resolveLimits, type AuthLimits } from './limits.js';
import { parsePayloadHash, payloadHashValues, type PayloadSpec } from './payload.js';
import { SigningKeyCache, signatureHex, signaturesEqual, stringToSign, StreamingSignature } from './signing.js';

/** The parts of an HTTP request that authentication reads (Node's IncomingMessage fits). */
export interface AuthRequest {
  method?: string | undefined;
  /** The request target as sent, still percent-encoded: `/bucket/key?query`. */
  url?: string | undefined;
  /** Header names and values as received: name, value, name, value, ... */
  rawHeaders: readonly string[];
}

export interface KeyRecord {
  secretAccessKey: string;
  userId: string;
}

/** Finds an access key's secret and owner; null when the key does not exist. */
export type KeyLookup = (accessKeyId: string) => Promise<KeyRecord | null>;

export interface WallClock {
  nowMs(): number;
}

export interface SigV4VerifierOptions {
  lookupKey: KeyLookup;
  clock: WallClock;
  /** Regions a signature may be scoped to; default any (the region is signed either way). */
  regions?: readonly string[];
  limits?: Partial<AuthLimits>;
}

export interface SignedAuth {
  kind: 'signed';
  via: 'header' | 'presigned' | 'post-policy';
  accessKeyId: string;
  userId: string;
  region: string;
  requestTimeMs: number;
  /** When a presigned URL stops being valid; null otherwise. */
  expiresAtMs: number | null;
  payload: PayloadSpec;
  /** The chain a chunk-signed body continues; null unless payload.mode is streaming-signed. */
  streaming: StreamingSignature | null;
}

export interface AnonymousAuth {
  kind: 'anonymous';
  payload: PayloadSpec;
}

export type AuthResult = SignedAuth | AnonymousAuth;

const SERVICE = 's3';

export class SigV4Verifier {
  readonly #options: SigV4VerifierOptions;
  readonly #limits: AuthLimits;
  readonly #keys: SigningKeyCache;

  constructor(options: SigV4VerifierOptions) {
    this.#options = options;
    this.#limits = resolveLimits(options.limits);
    this.#keys = new SigningKeyCache(this.#limits.signingKeyCacheEntriesMax);
  }

  /** Authenticates a request from its method, target and headers; throws S3AuthError. */
  async verify(request: AuthRequest): Promise<AuthResult> {
    const url = request.url ?? '/';
    if (url.length > this.#limits.urlBytesMax) throw s3Error('InvalidURI', `The request target is longer than ${this.#limits.urlBytesMax} bytes.`);
    const headers = headerMapFromRaw(request.rawHeaders);
    const { rawPath, rawQuery } = splitTarget(url);
    const params = parseQuery(rawQuery, this.#limits.queryParamsCountMax);
    const authorization = headerValue(headers, 'authorization');
    const presigned = params.some((p) => p.name === presignParams.signature || p.name === presignParams.algorithm || p.name === presignParams.credential);
    const sigV2Query = params.some((p) => p.name === 'AWSAccessKeyId') && params.some((p) => p.name === 'Signature');
    if (authorization !== undefined && (presigned || sigV2Query)) {
      throw s3Error('InvalidArgument', 'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified.');
    }
    const target: Target = { method: request.method ?? 'GET', rawPath, params, headers };
    if (authorization !== undefined) return this.#verifyHeader(target, authorization);
    if (presigned) return this.#verifyPresigned(target);
    if (sigV2Query) throw s3Error('InvalidRequest', 'The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.');
    return { kind: 'anonymous', payload: anonymousPayload(headers) };
  }

  /**
   * Verifies a browser POST upload's policy signature (x-amz-signature =
   * HMAC(signing key, base64 policy)); the policy's expiration and conditions
   * are the gateway's to check.
   */
  async verifyPostPolicy(fields: { algorithm: string; credential: string; amzDate: string; policyBase64: string; signature: string }): Promise<SignedAuth> {
    if (fields.algorithm !== 'AWS4-HMAC-SHA256') throw s3Error('InvalidArgument', 'x-amz-algorithm must be AWS4-HMAC-SHA256.');
    const credential = parseCredential(fields.credential, 'InvalidArgument');
    const timeMs = parseAmzDate(fields.amzDate);
    if (timeMs === null) throw s3Error('InvalidArgument', 'x-amz-date must be in the ISO 8601 basic format.');
    this.#checkScope(credential, fields.amzDate, 'InvalidArgument');
    const key = await this.#lookup(credential.accessKeyId);
    const signingKey = this.#keys.get(key.secretAccessKey, credential);
    if (!signaturesEqual(signatureHex(signingKey, fields.policyBase64), fields.signature)) {
      throw s3Error('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided.');
    }
    return signedAuth('post-policy', credential, key.userId, timeMs, null, { mode: 'unsigned' }, null);
  }

  async #verifyHeader(target: Target, authorization: string): Promise<SignedAuth> {
    if (authorization.length > this.#limits.authorizationBytesMax) {
      throw s3Error('AuthorizationHeaderMalformed', `The authorization header is longer than ${this.#limits.authorizationBytesMax} bytes.`);
    }
    if (authorization.startsWith('AWS ')) {
      throw s3Error('InvalidRequest', 'The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.');
    }
    const parts = parseAuthorizationHeader(authorization, this.#limits.signedHeadersCountMax);
    const payloadHash = headerValue(target.headers, 'x-amz-content-sha256');
    if (payloadHash === undefined) throw s3Error('InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
    const payload = parsePayloadHash(payloadHash);
    const { amzDate, timeMs } = requestAmzDate(headerValue(target.headers, 'x-amz-date'), headerValue(target.headers, 'date'));
    this.#checkScope(parts.credential, amzDate, 'AuthorizationHeaderMalformed');
    this.#checkSkew(timeMs);
    checkAmzHeadersSigned(target.headers, parts.signedHeaders);
    const signed = await this.#checkSignature(target, parts, amzDate, canonicalQuery(target.params), payloadHash);
    const streaming = payload.mode === 'streaming-signed' ? new StreamingSignature(signed.key, amzDate, parts.credential, parts.signature) : null;
    return signedAuth('header', parts.credential, signed.userId, timeMs, null, payload, streaming);
  }

  async #verifyPresigned(target: Target): Promise<SignedAuth> {
    const limits = this.#limits;
    const parts = parsePresignParams(target.params, limits.signedHeadersCountMax, limits.presignExpiresSecondsMax);
    const timeMs = parseAmzDate(parts.amzDate);
    if (timeMs === null) throw s3Error('AuthorizationQueryParametersError', 'X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd\'T\'HHmmss\'Z\'".');
    this.#checkScope(parts.credential, parts.amzDate, 'AuthorizationQueryParametersError');
    const nowMs = this.#options.clock.nowMs();
    const expiresAtMs = timeMs + parts.expiresSeconds * 1000;
    if (timeMs - nowMs > limits.clockSkewMsMax) throw s3Error('AccessDenied', 'Request is not valid yet (X-Amz-Date is in the future).');
    if (nowMs > expiresAtMs) {
      throw s3Error('AccessDenied', 'Request has expired', { expiresTime: new Date(expiresAtMs).toISOString(), serverTime: new Date(nowMs).toISOString() });
    }
    checkAmzHeadersSigned(target.headers, parts.signedHeaders);
    const signedPayloadHeader = parts.signedHeaders.includes('x-amz-content-sha256') ? headerValue(target.headers, 'x-amz-content-sha256') : undefined;
    const payloadHash = presignContentSha256(target.params) ?? signedPayloadHeader ?? payloadHashValues.unsigned;
    const payload = parsePayloadHash(payloadHash);
    if (payload.mode === 'streaming-signed') throw s3Error('InvalidRequest', 'A presigned request cannot carry a chunk-signed body.');
    const query = canonicalQuery(target.params, presignParams.signature);
    const signed = await this.#checkSignature(target, parts, parts.amzDate, query, payloadHash);
    return signedAuth('presigned', parts.credential, signed.userId, timeMs, expiresAtMs, payload, null);
  }

  /** Looks the key up, builds the canonical request and compares signatures; returns the signing key. */
  async #checkSignature(target: Target, parts: SignatureParts, amzDate: string, query: string, payloadHash: string): Promise<{ key: Buffer; userId: string }> {
    const canonical = [
      target.method,
      canonicalUri(target.rawPath),
      query,
      canonicalHeaders(target.headers, parts.signedHeaders),
      parts.signedHeaders.join(';'),
      payloadHash,
    ].join('\n');
    const record = await this.#lookup(parts.credential.accessKeyId);
    const toSign = stringToSign(amzDate, parts.credential, canonical);
    const key = this.#keys.get(record.secretAccessKey, parts.credential);
    if (!signaturesEqual(signatureHex(key, toSign), parts.signature)) {
      throw s3Error('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.', {
        canonicalRequest: canonical,
        stringToSign: toSign,
      });
    }
    return { key, userId: record.userId };
  }

  async #lookup(accessKeyId: string): Promise<KeyRecord> {
    const record = await this.#options.lookupKey(accessKeyId);
    if (record === null) throw s3Error('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
    return record;
  }

  #checkScope(credential: Credential, amzDate: string, code: 'AuthorizationHeaderMalformed' | 'AuthorizationQueryParametersError' | 'InvalidArgument'): void {
    if (credential.date !== amzDate.slice(0, 8)) throw s3Error(code, `Invalid credential date "${credential.date}". This date is not the same as X-Amz-Date: "${amzDate.slice(0, 8)}".`);
    if (credential.service !== SERVICE) throw s3Error(code, `The authorization is malformed; incorrect service "${credential.service}". This endpoint belongs to "${SERVICE}".`);
    const regions = this.#options.regions;
    if (regions !== undefined && !regions.includes(credential.region)) {
      const expected = regions[0] ?? '';
      throw s3Error(code, `The authorization is malformed; the region '${credential.region}' is wrong; expecting '${expected}'`, { expectedRegion: expected });
    }
  }

  #checkSkew(timeMs: number): void {
    const nowMs = this.#options.clock.nowMs();
    if (Math.abs(nowMs - timeMs) > this.#limits.clockSkewMsMax) {
      throw s3Error('RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.', {
        requestTime: new Date(timeMs).toISOString(),
        serverTime: new Date(nowMs).toISOString(),
      });
    }
  }
}

interface Target {
  method: string;
  rawPath: string;
  params: QueryParam[];
  headers: HeaderMap;
}

function signedAuth(
  via: SignedAuth['via'],
  credential: Credential,
  userId: string,
  requestTimeMs: number,
  expiresAtMs: number | null,
  payload: PayloadSpec,
  streaming: StreamingSignature | null,
): SignedAuth {
  return { kind: 'signed', via, accessKeyId: credential.accessKeyId, userId, region: credential.region, requestTimeMs, expiresAtMs, payload, streaming };
}

/** Every x-amz-* header present must be signed (S3 refuses requests that carry unsigned ones). */
function checkAmzHeadersSigned(headers: HeaderMap, signedHeaders: readonly string[]): void {
  const unsigned = [...headers.keys()].filter((name) => name.startsWith('x-amz-') && !signedHeaders.includes(name));
  if (unsigned.length > 0) {
    throw s3Error('AccessDenied', `There were headers present in the request which were not signed: ${unsigned.join(', ')}`, { headersNotSigned: unsigned });
  }
}

function anonymousPayload(headers: HeaderMap): PayloadSpec {
  const value = headerValue(headers, 'x-amz-content-sha256');
  if (value === undefined) return { mode: 'unsigned' };
  const payload = parsePayloadHash(value);
  if (payload.mode === 'streaming-signed') throw s3Error('InvalidRequest', 'A chunk-signed body needs a signed request.');
  return payload;
}
