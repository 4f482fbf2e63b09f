/**
 * What x-amz-content-sha256 says about the body, and so how it must be read:
 * - a hex sha256: the body as is, its hash checked at the end;
 * - UNSIGNED-PAYLOAD: the body as is (only Content-MD5 / checksums protect it);
 * - STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]: aws-chunked, every chunk
 *   signed in a chain from the seed signature (and a signed trailer);
 * - STREAMING-UNSIGNED-PAYLOAD-TRAILER: aws-chunked without signatures,
 *   with a trailing checksum.
 * SigV4a (STREAMING-AWS4-ECDSA-P256-SHA256-*) is not implemented.
 */
import { s3Error } from './errors.js';

export const payloadHashValues = {
  unsigned: 'UNSIGNED-PAYLOAD',
  streamingSigned: 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
  streamingSignedTrailer: 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER',
  streamingUnsignedTrailer: 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
} as const;

export type PayloadSpec =
  | { mode: 'sha256'; sha256Hex: string }
  | { mode: 'unsigned' }
  | { mode: 'streaming-signed'; trailer: boolean }
  | { mode: 'streaming-unsigned-trailer' };

export type PayloadMode = PayloadSpec['mode'];

/** True when the body is aws-chunked framing rather than the object's bytes. */
export function isChunkedPayload(spec: PayloadSpec): boolean {
  return spec.mode === 'streaming-signed' || spec.mode === 'streaming-unsigned-trailer';
}

/** The payload spec an x-amz-content-sha256 value declares. */
export function parsePayloadHash(value: string): PayloadSpec {
  if (/^[0-9a-fA-F]{64}$/.test(value)) return { mode: 'sha256', sha256Hex: value.toLowerCase() };
  switch (value) {
    case payloadHashValues.unsigned:
      return { mode: 'unsigned' };
    case payloadHashValues.streamingSigned:
      return { mode: 'streaming-signed', trailer: false };
    case payloadHashValues.streamingSignedTrailer:
      return { mode: 'streaming-signed', trailer: true };
    case payloadHashValues.streamingUnsignedTrailer:
      return { mode: 'streaming-unsigned-trailer' };
    case 'STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD':
    case 'STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER':
      throw s3Error('NotImplemented', 'SigV4a (ECDSA) streaming signatures are not implemented.');
    default:
      throw s3Error(
        'InvalidArgument',
        'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.',
      );
  }
}
