/**
 * FrameDecoder: the incremental parser of one connection's incoming frames
 * (format in frame.ts), in one of two modes:
 * - chunks: fed the chunks a socket emits (push);
 * - readInto: it hands out the buffers the kernel reads into (readBuffer,
 *   then commit: node:net's onread, which the client uses), so that a large
 *   payload lands in the buffer it is handed out in, without a copy.
 *
 * Invariants: every length is checked against its limit from the 24 prefix
 * bytes alone, before anything is allocated; the head checksum is verified as
 * soon as the head is in, before the decoder waits for the payload. A frame
 * inside one received chunk is yielded as views into it (no copy); otherwise
 * its payload is copied once, into a buffer of its exact size. In chunks mode
 * that happens when its last byte arrives, so memory held is what the peer
 * actually sent; in readInto mode, once the head has checked out and at least
 * directFillBytesMin of the payload are still to come, the decoder takes the
 * payload's buffer (the size the head announced, within the limits: the
 * owner's payloadBuffer, e.g. a buffer the waiting call brought, or a new one)
 * and the following reads go straight into it; the trailer behind it is read
 * with what follows. Payload bytes are checksummed as
 * they arrive and handed out only after the trailer matches. Any violation is
 * a ProtocolError and poisons the decoder: the owner closes the connection.
 * Its message says where the stream went wrong (the bad frame's byte offset
 * in the stream, the frame before it, the bad frame's prefix if it was
 * parsed, the first bytes buffered there), so that a lost sync seen once in a
 * long run can be told apart from corrupt bytes afterwards.
 */
import { crc32c } from '../../native/index.js';
import { assert } from '../lib/assert.js';
import { TesseraError } from '../lib/errors.js';
import {
  FrameKind,
  emptyBuffer,
  frameHeadCrcBytes,
  frameMagic,
  frameOverheadBytes,
  framePrefixBytes,
  frameTrailerBytes,
  frameVersion,
  requestIdHighMax,
  twoPow32,
  type FrameLimits,
} from './frame.js';

const Phase = { Prefix: 0, Head: 1, Payload: 2 } as const;
type PhaseValue = (typeof Phase)[keyof typeof Phase];

/** readInto mode: a payload with at least this many bytes still to come gets its own buffer as soon as its head is in. */
export const directFillBytesMin = 16 * 1024;
/** readInto mode: bytes between large payloads land in slabs of this size, never reused (frames are views into them)... */
const slabBytes = 64 * 1024;
/** ...and a slab with less room than this left is replaced, so a read is never tiny. */
const slabReadBytesMin = 8 * 1024;

/** Bytes a protocol error shows of what was buffered where it happened. */
const contextBytesMax = 32;

function protocolError(message: string): TesseraError {
  return new TesseraError('ProtocolError', `bad frame: ${message}`);
}

/**
 * Where a large payload should land (readInto mode): a buffer of exactly
 * payloadBytes, or null for a new one. Called once the frame's head checked
 * out; the buffer is filled by the socket and handed out as the payload (a
 * frame that fails its checks leaves it partly written).
 */
export type PayloadBuffer = (frame: { kind: number; requestId: number; payloadBytes: number }) => Buffer | null;

export class FrameDecoder {
  kind = 0;
  op = 0;
  requestId = 0;
  headerBytes = 0;
  payloadBytes = 0;
  header: Buffer = emptyBuffer;
  payload: Buffer = emptyBuffer;

  /** Received bytes not yet consumed, as the chunks they came in. */
  private readonly chunks: Buffer[] = [];
  /** Bytes of chunks[0] already consumed. */
  private headOffset = 0;
  private buffered = 0;
  /** Holds a prefix (or the head checksum) that spans chunks. */
  private readonly scratch = Buffer.allocUnsafeSlow(framePrefixBytes);
  /** Prefix: waiting for a prefix; Head: prefix parsed, waiting for the head; Payload: head checked, header taken. */
  private phase: PhaseValue = Phase.Prefix;
  /** Set by the owner: where large payloads land (readInto mode; default a new buffer each). */
  payloadBuffer: PayloadBuffer | null = null;
  /** The current frame's payload, being filled; while it fills, received bytes go there first (its trailer follows in chunks). */
  private fill: Buffer | null = null;
  private filled = 0;
  private fillCrc = 0;
  private slab: Buffer = emptyBuffer;
  private slabUsed = 0;
  /** The last readBuffer() was (a part of) the fill, not the slab. */
  private readingFill = false;
  private failure: TesseraError | null = null;
  /** Diagnostics for a failure: stream offset of the frame being parsed, frames yielded, and the last one's prefix. */
  private frameAtBytes = 0;
  private framesDecoded = 0;
  private lastKind = 0;
  private lastOp = 0;
  private lastRequestId = 0;
  private lastHeaderBytes = 0;
  private lastPayloadBytes = 0;

  constructor(
    private readonly limits: FrameLimits,
    private readonly mode: 'chunks' | 'readInto' = 'chunks',
  ) {}

  /** Bytes received and not yet yielded as part of a frame (a checked head counts as taken). */
  get bufferedBytes(): number {
    return this.buffered + this.filled;
  }

  /** Part of a frame has arrived but not all of it (a peer that stops now truncated a frame). */
  get midFrame(): boolean {
    return this.phase !== Phase.Prefix || this.buffered > 0;
  }

  /** Bytes the socket emitted (chunks mode; readInto mode feeds itself through commit). */
  push(chunk: Buffer): void {
    if (this.failure !== null || chunk.byteLength === 0) return;
    const fill = this.fill;
    if (fill !== null && this.filled < fill.byteLength) {
      const n = Math.min(chunk.byteLength, fill.byteLength - this.filled);
      chunk.copy(fill, this.filled, 0, n);
      this.addFilled(n);
      if (n === chunk.byteLength) return;
      chunk = chunk.subarray(n);
    }
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
  }

  /**
   * readInto mode: where the next read should land (never empty). Between
   * large payloads that is the free part of a slab; during one, exactly the
   * rest of its buffer, so a read never runs past the frame.
   */
  readBuffer(): Buffer {
    const fill = this.fill;
    this.readingFill = fill !== null && this.filled < fill.byteLength;
    if (this.readingFill) return fill!.subarray(this.filled);
    if (this.slab.byteLength - this.slabUsed < slabReadBytesMin) {
      this.slab = Buffer.allocUnsafeSlow(slabBytes);
      this.slabUsed = 0;
    }
    return this.slab.subarray(this.slabUsed);
  }

  /** readInto mode: nread bytes landed at the start of the last readBuffer(). */
  commit(nread: number): void {
    if (this.failure !== null) return;
    if (this.readingFill) {
      this.addFilled(nread);
      return;
    }
    const at = this.slabUsed;
    this.slabUsed += nread;
    this.push(this.slab.subarray(at, at + nread));
  }

  /**
   * True when a whole frame is in and verified: kind, op, requestId, header
   * and payload describe it until the following next(). Throws ProtocolError
   * (and keeps throwing it) once the stream is malformed. A caller out of
   * capacity simply stops calling: unparsed bytes stay buffered.
   */
  next(): boolean {
    if (this.failure !== null) throw this.failure;
    try {
      if (!this.step()) return false;
      this.noteFrame();
      return true;
    } catch (err) {
      const message = err instanceof TesseraError ? err.message : protocolError(String(err)).message;
      this.failure = new TesseraError('ProtocolError', `${message} (${this.context()})`);
      this.chunks.length = 0;
      this.buffered = 0;
      this.fill = null;
      this.filled = 0;
      throw this.failure;
    }
  }

  /** A frame was yielded: where the next one starts, and what this one was (for context()). */
  private noteFrame(): void {
    const payloadBytes = this.payloadBytes;
    this.frameAtBytes += frameOverheadBytes + this.headerBytes + payloadBytes + (payloadBytes > 0 ? frameTrailerBytes : 0);
    this.framesDecoded++;
    this.lastKind = this.kind;
    this.lastOp = this.op;
    this.lastRequestId = this.requestId;
    this.lastHeaderBytes = this.headerBytes;
    this.lastPayloadBytes = payloadBytes;
  }

  /**
   * Where a malformed stream went wrong, for the error message (a lost sync
   * is otherwise undiagnosable): the byte offset of the bad frame in the
   * stream, the frame before it, the bad frame's prefix if it was parsed, and
   * the first bytes still buffered there.
   */
  private context(): string {
    const parts = [`frame at byte ${this.frameAtBytes} of the stream, after ${this.framesDecoded} frames`];
    if (this.framesDecoded > 0) {
      parts.push(`previous: kind ${this.lastKind} op ${this.lastOp} request ${this.lastRequestId}, ${this.lastHeaderBytes} + ${this.lastPayloadBytes} bytes`);
    }
    if (this.phase !== Phase.Prefix) parts.push(`this one: kind ${this.kind} op ${this.op} request ${this.requestId}, ${this.headerBytes} + ${this.payloadBytes} bytes`);
    parts.push(this.buffered > 0 ? `${this.buffered} bytes buffered, starting ${this.bufferedHex(contextBytesMax)}` : 'nothing buffered');
    return parts.join('; ');
  }

  /** The first buffered bytes in hex (nothing allocated but the string: a refused frame allocates no buffer). */
  private bufferedHex(lengthBytes: number): string {
    let hex = '';
    let skip = this.headOffset;
    for (const chunk of this.chunks) {
      for (let i = skip; i < chunk.byteLength && hex.length < 2 * lengthBytes; i++) hex += chunk[i]!.toString(16).padStart(2, '0');
      skip = 0;
    }
    return hex;
  }

  private step(): boolean {
    if (this.phase === Phase.Prefix) {
      if (this.buffered < framePrefixBytes) return false;
      this.parsePrefix();
    }
    if (this.phase === Phase.Head) {
      if (this.buffered < frameOverheadBytes + this.headerBytes) return false;
      this.takeHead();
    }
    return this.takePayload();
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
    this.phase = Phase.Head;
  }

  /** The head is buffered: verify its checksum, take the header (a view when it lies in one chunk). */
  private takeHead(): void {
    const headerBytes = this.headerBytes;
    const covered = framePrefixBytes + headerBytes;
    const first = this.chunks[0]!;
    const at = this.headOffset;
    let header: Buffer;
    if (first.byteLength - at >= covered + frameHeadCrcBytes) {
      if (crc32c(first.subarray(at, at + covered)) !== first.readUInt32LE(at + covered)) throw protocolError('head checksum mismatch');
      header = first.subarray(at + framePrefixBytes, at + covered);
    } else {
      const crc = this.crcOf(0, covered);
      this.copyOut(this.scratch, covered, frameHeadCrcBytes);
      if (crc !== this.scratch.readUInt32LE(0)) throw protocolError('head checksum mismatch');
      header = Buffer.allocUnsafe(headerBytes);
      this.copyOut(header, framePrefixBytes, headerBytes);
    }
    this.header = headerBytes === 0 ? emptyBuffer : header;
    this.payload = emptyBuffer;
    this.consume(covered + frameHeadCrcBytes);
    this.phase = Phase.Payload;
  }

  /** True once the payload is in and verified; in readInto mode, starts filling a buffer for a large one still to come. */
  private takePayload(): boolean {
    const payloadBytes = this.payloadBytes;
    if (payloadBytes > 0) {
      const restBytes = payloadBytes + frameTrailerBytes;
      if (this.fill === null) {
        const first = this.chunks[0];
        const at = this.headOffset;
        if (first !== undefined && first.byteLength - at >= restBytes) {
          const payload = first.subarray(at, at + payloadBytes);
          this.checkPayload(crc32c(payload), first.readUInt32LE(at + payloadBytes));
          this.payload = payload;
          this.consume(restBytes);
          this.phase = Phase.Prefix;
          return true;
        }
        const missing = restBytes - this.buffered;
        // A small remainder waits in chunks (the next read may bring several frames) and is copied once complete.
        if (missing > 0 && (this.mode === 'chunks' || missing < directFillBytesMin)) return false;
        this.startFill(payloadBytes);
      }
      const fill = this.fill!;
      // The payload is in; its trailer comes through chunks.
      if (this.filled < fill.byteLength || this.buffered < frameTrailerBytes) return false;
      this.copyOut(this.scratch, 0, frameTrailerBytes);
      this.checkPayload(this.fillCrc, this.scratch.readUInt32LE(0));
      this.consume(frameTrailerBytes);
      this.payload = fill;
      this.fill = null;
      this.filled = 0;
    }
    this.phase = Phase.Prefix;
    return true;
  }

  /** The payload's buffer (the owner's, or a new one) takes what is buffered of it; the socket fills the rest. */
  private startFill(payloadBytes: number): void {
    const given = this.mode === 'readInto' ? (this.payloadBuffer?.({ kind: this.kind, requestId: this.requestId, payloadBytes }) ?? null) : null;
    assert(given === null || given.byteLength === payloadBytes, 'a payload buffer has the size the frame announced');
    const fill = given ?? Buffer.allocUnsafe(payloadBytes);
    const n = Math.min(this.buffered, payloadBytes);
    this.copyOut(fill, 0, n);
    this.consume(n);
    this.fill = fill;
    this.filled = 0;
    this.fillCrc = 0;
    this.addFilled(n);
  }

  /** n more bytes are in the fill: checksum the payload part of them while they are hot. */
  private addFilled(n: number): void {
    const from = this.filled;
    this.filled = from + n;
    if (n > 0) this.fillCrc = crc32c(this.fill!.subarray(from, this.filled), this.fillCrc);
  }

  private checkPayload(crc: number, stored: number): void {
    if (crc !== stored) throw protocolError('payload checksum mismatch');
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
