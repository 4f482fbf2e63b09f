/**
 * Which checksum a request's body must carry, from its headers: at most one
 * of x-amz-checksum-<algorithm> (value in the header) or x-amz-trailer naming
 * one (value in the aws-chunked trailer), consistent with
 * x-amz-sdk-checksum-algorithm when the SDK sends it. Checked before any body
 * byte is read; every inconsistency is InvalidRequest, as S3 reports it.
 */
import { headerValue, type HeaderMap } from './canonical.js';
import {
  checksumAlgorithmOfHeader,
  checksumAlgorithmOfName,
  isValidChecksumValue,
  type ChecksumAlgorithm,
} from './checksums.js';
import { s3Error } from './errors.js';
import type { PayloadSpec } from './payload.js';

export interface ChecksumPlan {
  /** The algorithm the client declared (header, trailer or x-amz-sdk-checksum-algorithm), or null. */
  declared: ChecksumAlgorithm | null;
  /** The expected value when it came in a header. */
  headerValue: string | null;
  /** The trailer that carries the value (lower-case name), when it comes in the trailer. */
  trailer: string | null;
  /** Every algorithm to compute: the declared one and those the gateway asked for. */
  compute: ChecksumAlgorithm[];
}

const SINGLE = 'Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.';

function headerChecksum(headers: HeaderMap): { algorithm: ChecksumAlgorithm; value: string } | null {
  const found: { algorithm: ChecksumAlgorithm; value: string }[] = [];
  for (const [name, values] of headers) {
    const algorithm = name.startsWith('x-amz-checksum-') ? checksumAlgorithmOfHeader(name) : null;
    if (algorithm !== null) found.push({ algorithm, value: values.join(',').trim() });
  }
  if (found.length > 1) throw s3Error('InvalidRequest', SINGLE);
  const checksum = found[0] ?? null;
  if (checksum !== null && !isValidChecksumValue(checksum.algorithm, checksum.value)) {
    throw s3Error('InvalidRequest', `Value for x-amz-checksum-${checksum.algorithm} header is invalid.`);
  }
  return checksum;
}

function trailerChecksum(headers: HeaderMap, payload: PayloadSpec): { algorithm: ChecksumAlgorithm; name: string } | null {
  const value = headerValue(headers, 'x-amz-trailer');
  if (value === undefined) return null;
  const names = value.split(',').map((n) => n.trim().toLowerCase()).filter((n) => n !== '');
  if (names.length === 0) return null;
  const trailerMode = payload.mode === 'streaming-unsigned-trailer' || (payload.mode === 'streaming-signed' && payload.trailer);
  if (!trailerMode) throw s3Error('InvalidRequest', 'x-amz-trailer needs x-amz-content-sha256 STREAMING-UNSIGNED-PAYLOAD-TRAILER or STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER.');
  if (names.length > 1) throw s3Error('InvalidRequest', SINGLE);
  const algorithm = checksumAlgorithmOfHeader(names[0]!);
  if (algorithm === null) throw s3Error('InvalidRequest', 'The value specified in the x-amz-trailer header is not supported.');
  return { algorithm, name: names[0]! };
}

export function planChecksums(headers: HeaderMap, payload: PayloadSpec, extra: readonly ChecksumAlgorithm[]): ChecksumPlan {
  const inHeader = headerChecksum(headers);
  const inTrailer = trailerChecksum(headers, payload);
  if (inHeader !== null && inTrailer !== null) throw s3Error('InvalidRequest', SINGLE);
  const sdkName = headerValue(headers, 'x-amz-sdk-checksum-algorithm');
  const sdk = sdkName === undefined ? null : checksumAlgorithmOfName(sdkName);
  if (sdkName !== undefined && sdk === null) {
    throw s3Error('InvalidRequest', 'Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]');
  }
  const declared = inHeader?.algorithm ?? inTrailer?.algorithm ?? sdk;
  if (sdk !== null && declared !== sdk) throw s3Error('InvalidRequest', 'Value for x-amz-sdk-checksum-algorithm header is invalid.');
  const compute = [...new Set([...(declared === null ? [] : [declared]), ...extra])];
  return { declared, headerValue: inHeader?.value ?? null, trailer: inTrailer?.name ?? null, compute };
}
