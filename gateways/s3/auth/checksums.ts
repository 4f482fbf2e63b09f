/**
 * The checksums S3 clients send (x-amz-checksum-crc32 / crc32c / crc64nvme /
 * sha1 / sha256, in a header or a trailer) and Content-MD5, computed
 * incrementally as the body streams. Values travel as base64 of the
 * big-endian checksum, as AWS encodes them.
 *
 * CRC32 is node:zlib's crc32 where this Node has it (20.15+), else
 * @node-rs/crc32's; CRC32C is injectable (the gateway passes native/'s ISA-L
 * crc32c, which gateways/ may not import) and defaults to @node-rs/crc32, the
 * same implementation native/ falls back to; CRC64NVME is ./crc64nvme.ts.
 */
import { createHash, type Hash } from 'node:crypto';
import * as zlib from 'node:zlib';
import { crc32 as nodeRsCrc32, crc32c as nodeRsCrc32c } from '@node-rs/crc32';
import { Crc64Nvme } from './crc64nvme.js';
import { s3Error } from './errors.js';

export const checksumAlgorithms = ['crc32', 'crc32c', 'crc64nvme', 'sha1', 'sha256'] as const;
export type ChecksumAlgorithm = (typeof checksumAlgorithms)[number];

/** Checksum values by algorithm, each base64 of the big-endian digest. */
export type ChecksumValues = Partial<Record<ChecksumAlgorithm, string>>;

/** A running CRC-32C: crc32c(b, crc32c(a)) === crc32c(a followed by b). */
export type Crc32cFunction = (data: Uint8Array, previous: number) => number;

const digestBytes: Record<ChecksumAlgorithm, number> = { crc32: 4, crc32c: 4, crc64nvme: 8, sha1: 20, sha256: 32 };

export function checksumHeaderName(algorithm: ChecksumAlgorithm): string {
  return `x-amz-checksum-${algorithm}`;
}

/** The algorithm a header name (x-amz-checksum-*) names, or null. */
export function checksumAlgorithmOfHeader(name: string): ChecksumAlgorithm | null {
  const suffix = name.toLowerCase().startsWith('x-amz-checksum-') ? name.slice('x-amz-checksum-'.length).toLowerCase() : '';
  return (checksumAlgorithms as readonly string[]).includes(suffix) ? (suffix as ChecksumAlgorithm) : null;
}

/** The algorithm x-amz-sdk-checksum-algorithm / x-amz-checksum-algorithm names (CRC32, CRC64NVME, ...), or null. */
export function checksumAlgorithmOfName(value: string): ChecksumAlgorithm | null {
  const lower = value.trim().toLowerCase();
  return (checksumAlgorithms as readonly string[]).includes(lower) ? (lower as ChecksumAlgorithm) : null;
}

/** Strict base64 of exactly `lengthBytes` bytes (canonical form, padding included). */
export function decodeBase64Exact(value: string, lengthBytes: number): Buffer | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) return null;
  const bytes = Buffer.from(value, 'base64');
  return bytes.length === lengthBytes && bytes.toString('base64') === value ? bytes : null;
}

export function isValidChecksumValue(algorithm: ChecksumAlgorithm, value: string): boolean {
  return decodeBase64Exact(value, digestBytes[algorithm]) !== null;
}

/** An incremental checksum. */
export interface Checksummer {
  update(data: Uint8Array): void;
  /** Base64 of the big-endian digest of everything so far. */
  digestBase64(): string;
}

type Crc32Function = (data: Uint8Array, previous: number) => number;

const zlibCrc32 = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
const crc32Default: Crc32Function =
  typeof zlibCrc32 === 'function' ? (data, previous) => zlibCrc32(data, previous) : (data, previous) => nodeRsCrc32(data, previous) >>> 0;
const crc32cDefault: Crc32cFunction = (data, previous) => nodeRsCrc32c(data, previous) >>> 0;

class Crc32Checksummer implements Checksummer {
  readonly #fn: Crc32Function;
  #value = 0;
  constructor(fn: Crc32Function) {
    this.#fn = fn;
  }
  update(data: Uint8Array): void {
    this.#value = this.#fn(data, this.#value) >>> 0;
  }
  digestBase64(): string {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(this.#value >>> 0, 0);
    return out.toString('base64');
  }
}

class HashChecksummer implements Checksummer {
  readonly #hash: Hash;
  constructor(algorithm: 'sha1' | 'sha256' | 'md5') {
    this.#hash = createHash(algorithm);
  }
  update(data: Uint8Array): void {
    this.#hash.update(data);
  }
  digestBase64(): string {
    return this.#hash.copy().digest('base64');
  }
}

class Crc64Checksummer implements Checksummer {
  readonly #crc = new Crc64Nvme();
  update(data: Uint8Array): void {
    this.#crc.update(data);
  }
  digestBase64(): string {
    return this.#crc.digest().toString('base64');
  }
}

export function createChecksummer(algorithm: ChecksumAlgorithm, crc32c: Crc32cFunction = crc32cDefault): Checksummer {
  switch (algorithm) {
    case 'crc32':
      return new Crc32Checksummer(crc32Default);
    case 'crc32c':
      return new Crc32Checksummer(crc32c);
    case 'crc64nvme':
      return new Crc64Checksummer();
    case 'sha1':
    case 'sha256':
      return new HashChecksummer(algorithm);
  }
}

/** Content-MD5 parsed: 16 bytes of base64, else InvalidDigest. */
export function parseContentMd5(value: string): string {
  const bytes = decodeBase64Exact(value.trim(), 16);
  if (bytes === null) throw s3Error('InvalidDigest', 'The Content-MD5 you specified was invalid.');
  return bytes.toString('base64');
}

/** S3's name of an algorithm in messages: CRC32, CRC64NVME, SHA256, ... */
export function checksumDisplayName(algorithm: ChecksumAlgorithm): string {
  return algorithm.toUpperCase();
}
