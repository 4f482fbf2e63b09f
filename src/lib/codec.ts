/**
 * A small binary encoder/decoder for records and wire headers: little-endian
 * fixed-width integers, varints, and length-prefixed bytes and strings.
 *
 * The Reader treats its input as untrusted: every length is checked against
 * the bytes remaining and against a caller-given limit before anything is
 * allocated, and any violation is a typed error (Corrupt for on-disk records,
 * ProtocolError for frames: the caller picks), never an exception of another kind.
 */
import { TesseraError, type ErrorCodeName } from './errors.js';

const textEncoder = new TextEncoder();

export class Writer {
  private buffer: Buffer;
  private length = 0;

  constructor(initialBytes = 256) {
    this.buffer = Buffer.allocUnsafe(initialBytes);
  }

  private reserve(bytes: number): void {
    const needed = this.length + bytes;
    if (needed <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < needed) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buffer.copy(next, 0, 0, this.length);
    this.buffer = next;
  }

  u8(value: number): this {
    this.reserve(1);
    this.buffer[this.length++] = value;
    return this;
  }

  u32(value: number): this {
    this.reserve(4);
    this.buffer.writeUInt32LE(value, this.length);
    this.length += 4;
    return this;
  }

  /** Unsigned integer up to 2^53-1, as 8 bytes. */
  u64(value: number): this {
    this.reserve(8);
    this.buffer.writeUInt32LE(value % 0x1_0000_0000, this.length);
    this.buffer.writeUInt32LE(Math.floor(value / 0x1_0000_0000), this.length + 4);
    this.length += 8;
    return this;
  }

  /** Unsigned LEB128 varint, up to 2^53-1. */
  varint(value: number): this {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`varint out of range: ${value}`);
    this.reserve(8);
    let v = value;
    while (v >= 0x80) {
      this.buffer[this.length++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buffer[this.length++] = v;
    return this;
  }

  bool(value: boolean): this {
    return this.u8(value ? 1 : 0);
  }

  bytes(value: Uint8Array): this {
    this.varint(value.byteLength);
    this.raw(value);
    return this;
  }

  raw(value: Uint8Array): this {
    this.reserve(value.byteLength);
    this.buffer.set(value, this.length);
    this.length += value.byteLength;
    return this;
  }

  string(value: string): this {
    return this.bytes(textEncoder.encode(value));
  }

  /** The encoded bytes (a view; the Writer must not be reused after). */
  finish(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

export class Reader {
  private offset = 0;

  constructor(
    private readonly buffer: Buffer,
    private readonly errorCode: ErrorCodeName = 'Corrupt',
    private readonly what = 'record',
  ) {}

  private fail(message: string): never {
    throw new TesseraError(this.errorCode, `malformed ${this.what}: ${message}`);
  }

  private need(bytes: number): void {
    if (this.offset + bytes > this.buffer.length) this.fail(`needs ${bytes} bytes at ${this.offset}, has ${this.buffer.length - this.offset}`);
  }

  get remainingBytes(): number {
    return this.buffer.length - this.offset;
  }

  u8(): number {
    this.need(1);
    return this.buffer[this.offset++]!;
  }

  u32(): number {
    this.need(4);
    const v = this.buffer.readUInt32LE(this.offset);
    this.offset += 4;
    return v;
  }

  u64(): number {
    this.need(8);
    const lo = this.buffer.readUInt32LE(this.offset);
    const hi = this.buffer.readUInt32LE(this.offset + 4);
    if (hi > 0x1f_ffff) this.fail('u64 beyond 2^53');
    this.offset += 8;
    return hi * 0x1_0000_0000 + lo;
  }

  varint(max = Number.MAX_SAFE_INTEGER): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const byte = this.u8();
      value += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) {
        if (value > max) this.fail(`value ${value} above limit ${max}`);
        return value;
      }
      scale *= 0x80;
    }
    this.fail('varint too long');
  }

  bool(): boolean {
    const v = this.u8();
    if (v > 1) this.fail(`bad boolean ${v}`);
    return v === 1;
  }

  /** A view into the input (no copy), at most maxBytes long. */
  bytes(maxBytes: number): Buffer {
    const length = this.varint(maxBytes);
    return this.raw(length);
  }

  raw(lengthBytes: number): Buffer {
    this.need(lengthBytes);
    const v = this.buffer.subarray(this.offset, this.offset + lengthBytes);
    this.offset += lengthBytes;
    return v;
  }

  string(maxBytes: number): string {
    return this.bytes(maxBytes).toString('utf8');
  }

  /** Fails unless every byte was consumed. */
  end(): void {
    if (this.offset !== this.buffer.length) this.fail(`${this.buffer.length - this.offset} trailing bytes`);
  }
}
