/**
 * Checksums of multipart objects, as S3 defines them (docs/s3-multipart.md):
 *
 * - COMPOSITE (SHA1, SHA256; CRC32 and CRC32C by default): the algorithm
 *   over the concatenated binary checksums of the parts, base64, then "-N".
 * - FULL_OBJECT (CRC64NVME always; CRC32 and CRC32C on request): the CRC of
 *   the whole object, combined from the parts' CRCs and sizes (CRCs
 *   linearize), so no byte is read twice.
 * - No algorithm at CreateMultipartUpload: S3's default, a FULL_OBJECT
 *   CRC64NVME that the gateway computes for every part.
 *
 * The CRC combination is zlib's crc32_combine generalised to the three
 * reflected CRCs (initial value and final xor all ones, which cancel):
 * crc(A||B) = crc(A) * x^(8|B|) mod P xor crc(B), in the reflected bit order.
 */
import { checksumAlgorithms, createChecksummer, type ChecksumAlgorithm } from '../auth/index.js';
import { s3Error } from '../errors.js';

export type ChecksumType = 'COMPOSITE' | 'FULL_OBJECT';

/** How an upload's object checksum is made; `defaulted`: no algorithm was asked for (S3's CRC64NVME default). */
export interface UploadChecksum {
  algorithm: ChecksumAlgorithm;
  type: ChecksumType;
  defaulted?: boolean;
}

const CRCS = { crc32: { width: 32n, poly: 0xedb88320n }, crc32c: { width: 32n, poly: 0x82f63b78n }, crc64nvme: { width: 64n, poly: 0x9a6c9329ac4bc9b5n } } as const;
type CrcAlgorithm = keyof typeof CRCS;
const isCrc = (a: ChecksumAlgorithm): a is CrcAlgorithm => a in CRCS;
/** x^(2^k) mod P for k < 67: enough for lengths up to 2^64 bits. Computed once at load, never written after. */
const POWERS: Record<CrcAlgorithm, readonly bigint[]> = {
  crc32: powers('crc32'),
  crc32c: powers('crc32c'),
  crc64nvme: powers('crc64nvme'),
};

/** a * b mod P, both polynomials in the reflected representation (x^0 is the top bit). */
function multModP(alg: CrcAlgorithm, a: bigint, b: bigint): bigint {
  const { width, poly } = CRCS[alg];
  let m = 1n << (width - 1n);
  let p = 0n;
  if (a === 0n) return 0n;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1n)) === 0n) break;
    }
    m >>= 1n;
    b = b & 1n ? (b >> 1n) ^ poly : b >> 1n;
  }
  return p;
}

function powers(alg: CrcAlgorithm): bigint[] {
  const out = [1n << (CRCS[alg].width - 2n)]; // x^1
  for (let k = 1; k < 67; k++) out.push(multModP(alg, out[k - 1]!, out[k - 1]!));
  return out;
}

/** x^(8 * lengthBytes) mod P. */
function shiftFor(alg: CrcAlgorithm, lengthBytes: number): bigint {
  let p = 1n << (CRCS[alg].width - 1n); // x^0
  let n = BigInt(lengthBytes);
  for (let k = 3; n > 0n; k++, n >>= 1n) if (n & 1n) p = multModP(alg, POWERS[alg][k]!, p);
  return p;
}

const toBig = (b: Buffer): bigint => BigInt(`0x${b.toString('hex') || '0'}`);
const toBuf = (v: bigint, width: bigint): Buffer => Buffer.from(v.toString(16).padStart(Number(width / 4n), '0'), 'hex');

/** The CRC of the concatenation of parts, from each part's CRC (base64, big-endian) and size. */
export function combineCrcs(alg: ChecksumAlgorithm, parts: ReadonlyArray<{ crcBase64: string; sizeBytes: number }>): string {
  if (!isCrc(alg)) throw new Error(`combineCrcs: ${alg} is not a CRC`);
  const { width } = CRCS[alg];
  const shifts = new Map<number, bigint>(); // most parts share one size
  let crc = 0n; // the CRC of no bytes
  for (const part of parts) {
    let shift = shifts.get(part.sizeBytes);
    if (shift === undefined) shifts.set(part.sizeBytes, (shift = shiftFor(alg, part.sizeBytes)));
    crc = multModP(alg, shift, crc) ^ toBig(Buffer.from(part.crcBase64, 'base64'));
  }
  return toBuf(crc, width).toString('base64');
}

/** The composite checksum: the algorithm over the binary part checksums, base64, "-N". */
export function compositeChecksum(alg: ChecksumAlgorithm, partsBase64: readonly string[]): string {
  const joined = Buffer.concat(partsBase64.map((v) => Buffer.from(v, 'base64')));
  const c = createChecksummer(alg);
  c.update(joined);
  return `${c.digestBase64()}-${partsBase64.length}`;
}

/** The object checksum of a completed upload, from its parts' checksums of the upload's algorithm. */
export function objectChecksum(c: UploadChecksum, parts: ReadonlyArray<{ checksum: string; sizeBytes: number }>): string {
  if (c.type === 'COMPOSITE') return compositeChecksum(c.algorithm, parts.map((p) => p.checksum));
  return combineCrcs(c.algorithm, parts.map((p) => ({ crcBase64: p.checksum, sizeBytes: p.sizeBytes })));
}

/** x-amz-checksum-algorithm names (CRC32, ...) to ours, or null when unknown. */
export function algorithmOfName(name: string): ChecksumAlgorithm | null {
  const lower = name.trim().toLowerCase();
  return (checksumAlgorithms as readonly string[]).includes(lower) ? (lower as ChecksumAlgorithm) : null;
}

/**
 * CreateMultipartUpload's x-amz-checksum-algorithm and x-amz-checksum-type,
 * checked as S3 does (InvalidRequest for a type without an algorithm, an
 * unknown value, or a pair S3 does not support).
 */
export function uploadChecksumOf(headers: ReadonlyMap<string, string>): UploadChecksum {
  const algName = headers.get('x-amz-checksum-algorithm');
  const typeName = headers.get('x-amz-checksum-type');
  if (algName === undefined) {
    if (typeName !== undefined) throw s3Error('InvalidRequest', 'The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.');
    return { algorithm: 'crc64nvme', type: 'FULL_OBJECT', defaulted: true };
  }
  const algorithm = algorithmOfName(algName);
  if (algorithm === null) throw s3Error('InvalidRequest', 'Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]');
  let type: ChecksumType;
  if (typeName === undefined) type = algorithm === 'crc64nvme' ? 'FULL_OBJECT' : 'COMPOSITE';
  else if (typeName.toUpperCase() === 'COMPOSITE' || typeName.toUpperCase() === 'FULL_OBJECT') type = typeName.toUpperCase() as ChecksumType;
  else throw s3Error('InvalidRequest', 'Value for x-amz-checksum-type header is invalid.');
  if (type === 'FULL_OBJECT' && !isCrc(algorithm)) throw s3Error('InvalidRequest', `The FULL_OBJECT checksum type cannot be used with the ${algorithm} checksum algorithm.`);
  if (type === 'COMPOSITE' && algorithm === 'crc64nvme') throw s3Error('InvalidRequest', 'The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm.');
  return { algorithm, type };
}

/** The XML element name of an algorithm's checksum (ChecksumCRC32, ChecksumCRC64NVME, ...). */
export const checksumElement = (alg: ChecksumAlgorithm): string => `Checksum${alg.toUpperCase()}`;
