/**
 * The rpc frame: a fixed 28-byte prefix, the header, a checksum of both, then
 * the payload. docs/protocol.md has the layout byte by byte; in short
 * (little-endian):
 *
 *   0 u32 magic 'TSRA'   4 u8 version   5 u8 kind   6 u16 op   8 u64 requestId
 *  16 u32 headerBytes   20 u32 payloadBytes   24 u32 crc32c(payload)
 *  28 header   28+h u32 crc32c(bytes 0 .. 28+h)   32+h payload
 *
 * The head checksum covers the prefix (lengths, ids and the payload checksum)
 * and the header in one contiguous run: one crc call per side, and a corrupt
 * length is caught as soon as the head is in, before the decoder waits for a
 * payload that is not coming.
 *
 * FrameDecoder is an incremental parser over socket chunks. Invariants: every
 * length is checked against its limit from the 28 prefix bytes alone, before
 * anything is allocated; a frame that lies inside one chunk is yielded as views
 * into that chunk (no copy); a frame spanning chunks is copied once, when its
 * last byte arrives, into one buffer sized to it; memory held is what the peer
 * actually sent. Any violation is a ProtocolError and poisons the decoder: the
 * owner closes the connection.
 */
import { crc32c } from '../../native/index.js';
import { TesseraError } from '../lib/errors.js';

/** Bytes before the header. */
export const framePrefixBytes = 28;
/** Fixed bytes per frame: the prefix plus the head checksum behind the header. */
export const frameOverheadBytes = framePrefixBytes + 4;
/** 'TSRA' as bytes on the wire, read as a little-endian u32. */
export const frameMagic = 0x41_52_53_54;
export const frameVersion = 1;
export const FrameKind = { Request: 1, Reply: 2, Error: 3 } as const;
export type FrameKindValue = (typeof FrameKind)[keyof typeof FrameKind];

export const opMax = 0xffff;
/** requestId is a u64 on the wire; this implementation uses safe integers (< 2^53). */
const requestIdHighMax = 0x1f_ffff;
const twoPow32 = 0x1_0000_0000;

/** Shared by every empty header/payload; never written to. */
export const emptyBuffer: Buffer = Buffer.alloc(0);

export interface FrameLimits {
  frameBytesMax: number;
  frameHeaderBytesMax: number;
}

/** A frame to send (see writer.ts). payloadCrc is crc32c over the payloads in order (payloadsCrc32c). */
export interface OutgoingFrame {
  kind: FrameKindValue;
  op: number;
  requestId: number;
  header: Uint8Array;
  payloads: readonly Uint8Array[];
  payloadBytes: number;
  payloadCrc: number;
}

export function payloadsByteLength(payloads: readonly Uint8Array[]): number {
  let total = 0;
  for (const p of payloads) total += p.byteLength;
  return total;
}

export function payloadsCrc32c(payloads: readonly Uint8Array[]): number {
  let crc = 0;
  for (const p of payloads) if (p.byteLength > 0) crc = crc32c(p, crc);
  return crc;
}

/** The head: prefix, header and head checksum in one small buffer; payloads travel separately. */
export function encodeFrameHead(frame: OutgoingFrame): Buffer {
  const headerBytes = frame.header.byteLength;
  const head = Buffer.allocUnsafe(frameOverheadBytes + headerBytes);
  head.writeUInt32LE(frameMagic, 0);
  head[4] = frameVersion;
  head[5] = frame.kind;
  head.writeUInt16LE(frame.op, 6);
  head.writeUInt32LE(frame.requestId % twoPow32, 8);
  head.writeUInt32LE(Math.floor(frame.requestId / twoPow32), 12);
  head.writeUInt32LE(headerBytes, 16);
  head.writeUInt32LE(frame.payloadBytes, 20);
  head.writeUInt32LE(frame.payloadCrc, 24);
  head.set(frame.header, framePrefixBytes);
  const covered = framePrefixBytes + headerBytes;
  head.writeUInt32LE(crc32c(head.subarray(0, covered)), covered);
  return head;
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

function protocolError(message: string): TesseraError {
  return new TesseraError('ProtocolError', `bad frame: ${message}`);
}

/**
 * Pull parser: push() chunks as they arrive, then call next() until it returns
 * false; after a true, kind/op/requestId/header/payload describe the frame
 * until the following next(). A caller out of capacity simply stops calling
 * next(): unparsed bytes stay buffered (as the chunks they came in).
 */
export class FrameDecoder {
  kind = 0;
  op = 0;
  requestId = 0;
  header: Buffer = emptyBuffer;
  payload: Buffer = emptyBuffer;

  private readonly chunks: Buffer[] = [];
  /** Bytes of chunks[0] already consumed. */
  private headOffset = 0;
  private buffered = 0;
  /** Holds a prefix (or the head checksum) that spans chunks. */
  private readonly scratch = Buffer.allocUnsafeSlow(framePrefixBytes);
  private prefixParsed = false;
  private headChecked = false;
  private headerBytes = 0;
  private payloadBytes = 0;
  private payloadCrc = 0;
  private failure: TesseraError | null = null;

  constructor(private readonly limits: FrameLimits) {}

  /** Bytes received and not yet yielded as frames. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): void {
    if (this.failure !== null || chunk.byteLength === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
  }

  /** Throws ProtocolError (and keeps throwing it) once the stream is malformed. */
  next(): boolean {
    if (this.failure !== null) throw this.failure;
    try {
      return this.step();
    } catch (err) {
      this.failure = err instanceof TesseraError ? err : protocolError(String(err));
      this.chunks.length = 0;
      this.buffered = 0;
      throw this.failure;
    }
  }

  private step(): boolean {
    if (!this.prefixParsed) {
      if (this.buffered < framePrefixBytes) return false;
      this.parsePrefix();
    }
    if (!this.headChecked) {
      if (this.buffered < frameOverheadBytes + this.headerBytes) return false;
      this.checkHead();
    }
    const frameBytes = frameOverheadBytes + this.headerBytes + this.payloadBytes;
    if (this.buffered < frameBytes) return false;
    this.takeFrame(frameBytes);
    return true;
  }

  private parsePrefix(): void {
    const first = this.chunks[0]!;
    let src = first;
    let at = this.headOffset;
    if (first.byteLength - at < framePrefixBytes) {
      this.copyOut(this.scratch, 0, framePrefixBytes);
      src = this.scratch;
      at = 0;
    }
    const magic = src.readUInt32LE(at);
    if (magic !== frameMagic) throw protocolError(`magic 0x${magic.toString(16)}`);
    if (src[at + 4] !== frameVersion) throw protocolError(`version ${src[at + 4]}`);
    const kind = src[at + 5]!;
    if (kind < FrameKind.Request || kind > FrameKind.Error) throw protocolError(`kind ${kind}`);
    const requestIdHigh = src.readUInt32LE(at + 12);
    if (requestIdHigh > requestIdHighMax) throw protocolError('request id beyond 2^53');
    const headerBytes = src.readUInt32LE(at + 16);
    const payloadBytes = src.readUInt32LE(at + 20);
    if (headerBytes > this.limits.frameHeaderBytesMax) {
      throw protocolError(`header of ${headerBytes} bytes (limit ${this.limits.frameHeaderBytesMax})`);
    }
    if (headerBytes + payloadBytes > this.limits.frameBytesMax) {
      throw protocolError(`frame of ${headerBytes + payloadBytes} bytes (limit ${this.limits.frameBytesMax})`);
    }
    this.kind = kind;
    this.op = src.readUInt16LE(at + 6);
    this.requestId = requestIdHigh * twoPow32 + src.readUInt32LE(at + 8);
    this.headerBytes = headerBytes;
    this.payloadBytes = payloadBytes;
    this.payloadCrc = src.readUInt32LE(at + 24);
    this.prefixParsed = true;
  }

  private checkHead(): void {
    const covered = framePrefixBytes + this.headerBytes;
    const first = this.chunks[0]!;
    let crc: number;
    let stored: number;
    if (first.byteLength - this.headOffset >= covered + 4) {
      crc = crc32c(first.subarray(this.headOffset, this.headOffset + covered));
      stored = first.readUInt32LE(this.headOffset + covered);
    } else {
      crc = this.crcOf(0, covered);
      this.copyOut(this.scratch, covered, 4);
      stored = this.scratch.readUInt32LE(0);
    }
    if (crc !== stored) throw protocolError('head checksum mismatch');
    this.headChecked = true;
  }

  private takeFrame(frameBytes: number): void {
    const first = this.chunks[0]!;
    const headerBytes = this.headerBytes;
    const payloadBytes = this.payloadBytes;
    const payloadStart = frameOverheadBytes + headerBytes;
    if (first.byteLength - this.headOffset >= frameBytes) {
      const at = this.headOffset;
      this.header = headerBytes === 0 ? emptyBuffer : first.subarray(at + framePrefixBytes, at + framePrefixBytes + headerBytes);
      this.payload = payloadBytes === 0 ? emptyBuffer : first.subarray(at + payloadStart, at + frameBytes);
    } else {
      const body = Buffer.allocUnsafe(headerBytes + payloadBytes);
      this.copyOut(body.subarray(0, headerBytes), framePrefixBytes, headerBytes);
      this.copyOut(body.subarray(headerBytes), payloadStart, payloadBytes);
      this.header = headerBytes === 0 ? emptyBuffer : body.subarray(0, headerBytes);
      this.payload = payloadBytes === 0 ? emptyBuffer : body.subarray(headerBytes);
    }
    const crc = payloadBytes === 0 ? 0 : crc32c(this.payload);
    if (crc !== this.payloadCrc) throw protocolError('payload checksum mismatch');
    this.consume(frameBytes);
    this.prefixParsed = false;
    this.headChecked = false;
  }

  /** Copies buffered bytes [fromBytes, fromBytes + lengthBytes) (relative to the unconsumed start) into dst. */
  private copyOut(dst: Buffer, fromBytes: number, lengthBytes: number): void {
    let skip = this.headOffset + fromBytes;
    let written = 0;
    for (let i = 0; written < lengthBytes; i++) {
      const chunk = this.chunks[i]!;
      if (skip >= chunk.byteLength) {
        skip -= chunk.byteLength;
        continue;
      }
      const n = Math.min(chunk.byteLength - skip, lengthBytes - written);
      chunk.copy(dst, written, skip, skip + n);
      written += n;
      skip = 0;
    }
  }

  /** crc32c over buffered bytes [fromBytes, fromBytes + lengthBytes) (relative to the unconsumed start). */
  private crcOf(fromBytes: number, lengthBytes: number): number {
    let skip = this.headOffset + fromBytes;
    let done = 0;
    let crc = 0;
    for (let i = 0; done < lengthBytes; i++) {
      const chunk = this.chunks[i]!;
      if (skip >= chunk.byteLength) {
        skip -= chunk.byteLength;
        continue;
      }
      const n = Math.min(chunk.byteLength - skip, lengthBytes - done);
      crc = crc32c(chunk.subarray(skip, skip + n), crc);
      done += n;
      skip = 0;
    }
    return crc;
  }

  private consume(lengthBytes: number): void {
    let remaining = lengthBytes;
    let dropped = 0;
    let offset = this.headOffset;
    while (remaining > 0) {
      const available = this.chunks[dropped]!.byteLength - offset;
      if (remaining < available) {
        offset += remaining;
        break;
      }
      remaining -= available;
      dropped++;
      offset = 0;
    }
    if (dropped > 0) this.chunks.splice(0, dropped);
    this.headOffset = offset;
    this.buffered -= lengthBytes;
  }
}
