/**
 * The rpc frame (version 2): a fixed 24-byte prefix, the header, a checksum of
 * both, the payload, and the payload's checksum behind it (a trailer, present
 * when the payload is not empty). docs/protocol.md has the layout byte by
 * byte; in short (little-endian):
 *
 *   0 u32 magic 'TSRA'   4 u8 version   5 u8 kind   6 u16 op   8 u64 requestId
 *  16 u32 headerBytes   20 u32 payloadBytes
 *  24 header   24+h u32 crc32c(bytes 0 .. 24+h)   28+h payload
 *  28+h+p u32 crc32c(payload)   (only when p > 0)
 *
 * The head checksum covers the prefix (lengths and ids) and the header in one
 * contiguous run, so a corrupt length is caught as soon as the head is in.
 * The payload checksum travels after the payload so that a sender can start
 * sending a payload it is still producing (a stream) and compute the checksum
 * as the bytes go out; the length is still announced up front, so a receiver
 * checks it against its limits before allocating anything.
 *
 * This module owns the format (constants, head encoding, the error reply
 * header); decoder.ts parses it.
 */
import { crc32c } from '../../native/index.js';
import { TesseraError } from '../lib/errors.js';
import type { RpcPayload } from './types.js';

/** Bytes before the header. */
export const framePrefixBytes = 24;
/** The checksum behind the header. */
export const frameHeadCrcBytes = 4;
/** Fixed bytes before the payload: the prefix plus the head checksum. */
export const frameOverheadBytes = framePrefixBytes + frameHeadCrcBytes;
/** The payload checksum behind a non-empty payload. */
export const frameTrailerBytes = 4;
/** 'TSRA' as bytes on the wire, read as a little-endian u32. */
export const frameMagic = 0x41_52_53_54;
export const frameVersion = 2;
export const FrameKind = { Request: 1, Reply: 2, Error: 3 } as const;
export type FrameKindValue = (typeof FrameKind)[keyof typeof FrameKind];

export const opMax = 0xffff;
/** requestId is a u64 on the wire; this implementation uses safe integers (< 2^53). */
export const requestIdHighMax = 0x1f_ffff;
export const twoPow32 = 0x1_0000_0000;

/** Shared by every empty header/payload; never written to. */
export const emptyBuffer: Buffer = Buffer.alloc(0);

export interface FrameLimits {
  frameBytesMax: number;
  frameHeaderBytesMax: number;
}

/** A frame to send (see writer.ts). payloadBytes: the payload's length, announced in the prefix. */
export interface OutgoingFrame {
  readonly kind: FrameKindValue;
  readonly op: number;
  readonly requestId: number;
  readonly header: Uint8Array;
  readonly payload: RpcPayload;
  readonly payloadBytes: number;
}

/**
 * The head: prefix, header and head checksum in one small buffer (the
 * payload and its trailer travel separately). With trailerBeforeCrc >= 0 the
 * buffer starts with the trailer of the frame written just before it, which
 * then costs no socket write of its own (see writer.ts).
 */
export function encodeFrameHead(
  frame: { kind: number; op: number; requestId: number; header: Uint8Array; payloadBytes: number },
  trailerBeforeCrc = -1,
): Buffer {
  const headerBytes = frame.header.byteLength;
  const at = trailerBeforeCrc < 0 ? 0 : frameTrailerBytes;
  const head = Buffer.allocUnsafe(at + frameOverheadBytes + headerBytes);
  if (at > 0) head.writeUInt32LE(trailerBeforeCrc, 0);
  head.writeUInt32LE(frameMagic, at);
  head[at + 4] = frameVersion;
  head[at + 5] = frame.kind;
  head.writeUInt16LE(frame.op, at + 6);
  head.writeUInt32LE(frame.requestId % twoPow32, at + 8);
  head.writeUInt32LE(Math.floor(frame.requestId / twoPow32), at + 12);
  head.writeUInt32LE(headerBytes, at + 16);
  head.writeUInt32LE(frame.payloadBytes, at + 20);
  head.set(frame.header, at + framePrefixBytes);
  const covered = at + framePrefixBytes + headerBytes;
  head.writeUInt32LE(crc32c(head.subarray(at, covered)), covered);
  return head;
}

/** The trailer behind a non-empty payload: its crc32c. */
export function encodeTrailer(payloadCrc: number): Buffer {
  const trailer = Buffer.allocUnsafe(frameTrailerBytes);
  trailer.writeUInt32LE(payloadCrc, 0);
  return trailer;
}

/** One whole frame with an in-memory payload, as bytes (tests, tools). */
export function encodeFrame(frame: { kind: number; op: number; requestId: number; header: Uint8Array }, payload: Uint8Array): Buffer {
  const head = encodeFrameHead({ ...frame, payloadBytes: payload.byteLength });
  if (payload.byteLength === 0) return head;
  return Buffer.concat([head, payload, encodeTrailer(crc32c(payload))]);
}

/** Error reply header: u32 error code, then the UTF-8 message (cut to messageBytesMax). */
export function encodeErrorHeader(err: TesseraError, messageBytesMax: number): Buffer {
  const message = Buffer.from(err.message, 'utf8');
  const messageBytes = Math.min(message.byteLength, messageBytesMax);
  const header = Buffer.allocUnsafe(4 + messageBytes);
  header.writeUInt32LE(err.numericCode, 0);
  message.copy(header, 4, 0, messageBytes);
  return header;
}

export function decodeErrorHeader(header: Buffer): TesseraError {
  if (header.byteLength < 4) return new TesseraError('ProtocolError', `error reply header of ${header.byteLength} bytes`);
  return TesseraError.fromWire(header.readUInt32LE(0), header.toString('utf8', 4));
}
