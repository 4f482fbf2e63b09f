/**
 * SigV4's cryptography: the signing key derivation (cached, bounded), the
 * string to sign, signatures compared in constant time, and the chained
 * signatures of aws-chunked bodies (each chunk signs the previous signature,
 * starting from the request's seed signature; the trailer signs the last).
 *
 * Derived keys are secret: they never leave this module except inside a
 * StreamingSignature, which hides its key from inspection and JSON.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import { assert } from '../../../src/lib/assert.js';

export const SIGV4_ALGORITHM = 'AWS4-HMAC-SHA256';
export const EMPTY_SHA256_HEX = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const CHUNK_ALGORITHM = 'AWS4-HMAC-SHA256-PAYLOAD';
const TRAILER_ALGORITHM = 'AWS4-HMAC-SHA256-TRAILER';

/** The credential scope: `date/region/service/aws4_request`. */
export interface Scope {
  /** YYYYMMDD */
  date: string;
  region: string;
  service: string;
}

export function scopeString(scope: Scope): string {
  return `${scope.date}/${scope.region}/${scope.service}/aws4_request`;
}

/** sha256 of a byte string (latin1) or bytes, as lower-case hex. */
export function sha256Hex(data: string | Uint8Array): string {
  const hash = createHash('sha256');
  if (typeof data === 'string') hash.update(data, 'latin1');
  else hash.update(data);
  return hash.digest('hex');
}

function hmac(key: Uint8Array | string, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/** kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"). */
export function deriveSigningKey(secretAccessKey: string, scope: Scope): Buffer {
  const dateKey = hmac(`AWS4${secretAccessKey}`, scope.date);
  return hmac(hmac(hmac(dateKey, scope.region), scope.service), 'aws4_request');
}

/**
 * Derived signing keys by (secret, date, region, service), least recently
 * used first out. One per verifier (no module state); a key changes daily, so
 * a small cache serves every active access key.
 */
export class SigningKeyCache {
  readonly #entries = new Map<string, Buffer>();
  readonly #entriesMax: number;
  constructor(entriesMax: number) {
    assert(Number.isInteger(entriesMax) && entriesMax >= 1, 'the key cache holds at least one key');
    this.#entriesMax = entriesMax;
  }
  get sizeEntries(): number {
    return this.#entries.size;
  }
  get(secretAccessKey: string, scope: Scope): Buffer {
    const id = `${scope.date}\0${scope.region}\0${scope.service}\0${secretAccessKey}`;
    const cached = this.#entries.get(id);
    if (cached !== undefined) {
      this.#entries.delete(id);
      this.#entries.set(id, cached);
      return cached;
    }
    const key = deriveSigningKey(secretAccessKey, scope);
    if (this.#entries.size >= this.#entriesMax) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(id, key);
    return key;
  }
  [inspect.custom](): string {
    return `SigningKeyCache { ${this.#entries.size} keys hidden }`;
  }
}

/** The string to sign of a request: algorithm, time, scope and the canonical request's hash. */
export function stringToSign(amzDate: string, scope: Scope, canonicalRequest: string): string {
  return `${SIGV4_ALGORITHM}\n${amzDate}\n${scopeString(scope)}\n${sha256Hex(canonicalRequest)}`;
}

export function signatureHex(signingKey: Uint8Array, toSign: string): string {
  return createHmac('sha256', signingKey).update(toSign, 'utf8').digest('hex');
}

const SIGNATURE_FORM = /^[0-9a-f]{64}$/;

export function isSignatureForm(value: string): boolean {
  return SIGNATURE_FORM.test(value);
}

/** Constant-time comparison of a computed signature with the one given (lower-case hex). */
export function signaturesEqual(computedHex: string, givenHex: string): boolean {
  if (!isSignatureForm(givenHex)) return false;
  assert(isSignatureForm(computedHex), 'a computed signature is 64 hex digits');
  return timingSafeEqual(Buffer.from(computedHex, 'latin1'), Buffer.from(givenHex, 'latin1'));
}

/**
 * What an aws-chunked body's chunk signatures chain from: the request's seed
 * signature, its time and scope, and the signing key (hidden). Immutable;
 * each body gets its own ChunkChain.
 */
export class StreamingSignature {
  readonly #signingKey: Buffer;
  readonly amzDate: string;
  readonly scope: Scope;
  readonly seedSignature: string;
  constructor(signingKey: Buffer, amzDate: string, scope: Scope, seedSignature: string) {
    this.#signingKey = signingKey;
    this.amzDate = amzDate;
    this.scope = scope;
    this.seedSignature = seedSignature;
  }
  chain(): ChunkChain {
    return new ChunkChain(this.#signingKey, `${this.amzDate}\n${scopeString(this.scope)}\n`, this.seedSignature);
  }
  toJSON(): object {
    return { amzDate: this.amzDate, scope: this.scope, seedSignature: this.seedSignature };
  }
  [inspect.custom](): string {
    return `StreamingSignature { amzDate: '${this.amzDate}', scope: '${scopeString(this.scope)}', key hidden }`;
  }
}

/** The running state of one body's signature chain. */
export class ChunkChain {
  readonly #signingKey: Buffer;
  readonly #timeAndScope: string;
  #previous: string;
  constructor(signingKey: Buffer, timeAndScope: string, seedSignature: string) {
    this.#signingKey = signingKey;
    this.#timeAndScope = timeAndScope;
    this.#previous = seedSignature;
  }
  /** Checks the next chunk's signature from the sha256 of its data; on success the chain moves on. */
  verifyChunk(dataSha256Hex: string, givenSignature: string): boolean {
    const toSign = `${CHUNK_ALGORITHM}\n${this.#timeAndScope}${this.#previous}\n${EMPTY_SHA256_HEX}\n${dataSha256Hex}`;
    return this.#advance(toSign, givenSignature);
  }
  /** Checks the trailer signature over the canonical trailer block (`name:value\n` each, a byte string). */
  verifyTrailer(canonicalTrailers: string, givenSignature: string): boolean {
    const toSign = `${TRAILER_ALGORITHM}\n${this.#timeAndScope}${this.#previous}\n${sha256Hex(canonicalTrailers)}`;
    return this.#advance(toSign, givenSignature);
  }
  #advance(toSign: string, givenSignature: string): boolean {
    const ok = signaturesEqual(signatureHex(this.#signingKey, toSign), givenSignature);
    if (ok) this.#previous = givenSignature;
    return ok;
  }
  [inspect.custom](): string {
    return 'ChunkChain { key hidden }';
  }
}
