/**
 * Payloads as callers and handlers hand them to a transport (RpcPayload:
 * in-memory buffers or a stream with its length announced up front): their
 * length, their checksum, and the checks a stream must pass. Shared by the
 * TCP writer and the in-process transport so both fail a bad stream the same
 * way: InvalidArgument when its chunks add up to more or fewer bytes than it
 * announced, its own error (a TesseraError as is, anything else Internal)
 * when it throws.
 */
import { crc32c } from '../../native/index.js';
import { invalid, toTesseraError, type TesseraError } from '../lib/errors.js';
import { emptyBuffer } from './frame.js';
import type { RpcPayload, RpcPayloadPiece, RpcPayloadStream } from './types.js';

export function isPayloadStream(payload: RpcPayload): payload is RpcPayloadStream {
  return !Array.isArray(payload);
}

/** The announced length of a stream (checked to be a u32-safe count), or the sum of the buffers. */
export function payloadByteLength(payload: RpcPayload): number {
  if (isPayloadStream(payload)) {
    const lengthBytes = payload.lengthBytes;
    if (!Number.isSafeInteger(lengthBytes) || lengthBytes < 0) throw invalid(`payload stream lengthBytes ${lengthBytes}`);
    return lengthBytes;
  }
  let total = 0;
  for (const p of payload as readonly Uint8Array[]) total += p.byteLength;
  return total;
}

/** crc32c over buffers in order, as if they were one. */
export function payloadsCrc32c(payloads: readonly Uint8Array[]): number {
  let crc = 0;
  for (const p of payloads) if (p.byteLength > 0) crc = crc32c(p, crc);
  return crc;
}

/** A stream chunk as a piece (a bare Uint8Array is a piece without a known crc or a release). */
export function asPiece(chunk: Uint8Array | RpcPayloadPiece): RpcPayloadPiece {
  return chunk instanceof Uint8Array ? { bytes: chunk } : chunk;
}

export function streamOverrun(lengthBytes: number): TesseraError {
  return invalid(`payload stream produced more than the ${lengthBytes} bytes it announced`);
}

export function streamShort(producedBytes: number, lengthBytes: number): TesseraError {
  return invalid(`payload stream ended after ${producedBytes} of the ${lengthBytes} bytes it announced`);
}

/**
 * Reads a whole stream into one Buffer of its announced length (which the
 * caller has checked against its limits): the in-process transport's way of
 * handing a streamed payload to the other side.
 */
export async function collectStream(stream: RpcPayloadStream): Promise<Buffer> {
  const lengthBytes = stream.lengthBytes;
  const out = lengthBytes === 0 ? emptyBuffer : Buffer.allocUnsafe(lengthBytes);
  let filled = 0;
  try {
    for await (const chunk of stream.chunks) {
      const { bytes, release } = asPiece(chunk);
      try {
        if (bytes.byteLength > lengthBytes - filled) throw streamOverrun(lengthBytes);
        out.set(bytes, filled);
        filled += bytes.byteLength;
      } finally {
        release?.();
      }
    }
  } catch (err) {
    throw toTesseraError(err);
  }
  if (filled < lengthBytes) throw streamShort(filled, lengthBytes);
  return out;
}
