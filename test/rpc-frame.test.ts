/**
 * The frame codec on its own: frames survive every chunk split, frames inside
 * one chunk come out as views of it (no copy), lengths over the limits are
 * refused from the 28 prefix bytes alone without allocating, a bad head
 * checksum is caught before the payload arrives, a bad payload checksum when
 * it has, and a decoder stays failed after its first error.
 */
import { describe, expect, test, vi } from 'vitest';
import { TesseraError } from '../src/lib/errors.js';
import {
  FrameDecoder,
  FrameKind,
  decodeErrorHeader,
  encodeErrorHeader,
  encodeFrameHead,
  frameOverheadBytes,
  framePrefixBytes,
  payloadsCrc32c,
  type FrameLimits,
} from '../src/rpc/frame.js';
import { requestFrame } from './rpc-helpers.js';

const limits: FrameLimits = { frameBytesMax: 1024 * 1024, frameHeaderBytesMax: 4096 };

function drain(decoder: FrameDecoder): { op: number; requestId: number; header: string; payload: string }[] {
  const frames = [];
  while (decoder.next()) {
    frames.push({
      op: decoder.op,
      requestId: decoder.requestId,
      header: decoder.header.toString(),
      payload: decoder.payload.toString(),
    });
  }
  return frames;
}

function protocolErrorOf(fn: () => unknown): TesseraError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as TesseraError).code).toBe('ProtocolError');
    return err as TesseraError;
  }
  throw new Error('expected a ProtocolError');
}

describe('frame decoder', () => {
  const frameA = requestFrame(7, 1, Buffer.from('header-a'), Buffer.from('payload of frame a'));
  const frameB = requestFrame(65535, 2 ** 53 - 1, Buffer.from(''), Buffer.from('b'));
  const frameC = requestFrame(0, 3, Buffer.from('c only header'));
  const stream = Buffer.concat([frameA, frameB, frameC]);
  const expected = [
    { op: 7, requestId: 1, header: 'header-a', payload: 'payload of frame a' },
    { op: 65535, requestId: 2 ** 53 - 1, header: '', payload: 'b' },
    { op: 0, requestId: 3, header: 'c only header', payload: '' },
  ];

  test('three frames split into two chunks at every byte offset decode the same', () => {
    for (let split = 0; split <= stream.length; split++) {
      const decoder = new FrameDecoder(limits);
      decoder.push(stream.subarray(0, split));
      const frames = drain(decoder);
      decoder.push(stream.subarray(split));
      frames.push(...drain(decoder));
      expect(frames).toEqual(expected);
      expect(decoder.bufferedBytes).toBe(0);
    }
  });

  test('one byte at a time decodes the same', () => {
    const decoder = new FrameDecoder(limits);
    const frames = [];
    for (let i = 0; i < stream.length; i++) {
      decoder.push(stream.subarray(i, i + 1));
      frames.push(...drain(decoder));
    }
    expect(frames).toEqual(expected);
  });

  test('a frame inside one chunk is yielded as views into that chunk', () => {
    const chunk = Buffer.from(stream);
    const decoder = new FrameDecoder(limits);
    decoder.push(chunk);
    expect(decoder.next()).toBe(true);
    expect(decoder.header.buffer).toBe(chunk.buffer);
    expect(decoder.payload.buffer).toBe(chunk.buffer);
    expect(decoder.payload.byteOffset).toBe(chunk.byteOffset + frameOverheadBytes + 'header-a'.length);
  });

  test('frames stay buffered until the caller pulls them', () => {
    const decoder = new FrameDecoder(limits);
    decoder.push(stream);
    expect(decoder.next()).toBe(true);
    expect(decoder.bufferedBytes).toBe(frameB.length + frameC.length);
    expect(drain(decoder)).toEqual(expected.slice(1));
  });

  test('an oversized length is refused from the prefix alone, without allocating it', () => {
    const head = encodeFrameHead({
      kind: FrameKind.Request,
      op: 1,
      requestId: 1,
      header: new Uint8Array(0),
      payloads: [],
      payloadBytes: 0xffff_fff0,
      payloadCrc: 0,
    });
    const decoder = new FrameDecoder(limits);
    const allocations = [vi.spyOn(Buffer, 'allocUnsafe'), vi.spyOn(Buffer, 'alloc'), vi.spyOn(Buffer, 'allocUnsafeSlow')];
    try {
      decoder.push(head);
      expect(protocolErrorOf(() => decoder.next()).message).toMatch(/limit/);
      for (const spy of allocations) expect(spy).not.toHaveBeenCalled();
    } finally {
      for (const spy of allocations) spy.mockRestore();
    }
  });

  test('a header over frameHeaderBytesMax is refused', () => {
    const frame = requestFrame(1, 1, Buffer.alloc(4097));
    const decoder = new FrameDecoder(limits);
    decoder.push(frame.subarray(0, framePrefixBytes));
    expect(protocolErrorOf(() => decoder.next()).message).toMatch(/header of 4097/);
  });

  test('a corrupt header is caught before the payload arrives', () => {
    const frame = requestFrame(1, 1, Buffer.from('header'), Buffer.alloc(100_000));
    frame[framePrefixBytes + 2]! ^= 1;
    const decoder = new FrameDecoder(limits);
    decoder.push(frame.subarray(0, frameOverheadBytes + 6));
    expect(protocolErrorOf(() => decoder.next()).message).toMatch(/head checksum/);
  });

  test('a corrupt length field is caught by the head checksum', () => {
    const frame = requestFrame(1, 1, Buffer.from('header'), Buffer.alloc(10));
    frame.writeUInt32LE(11, 20);
    const decoder = new FrameDecoder(limits);
    decoder.push(frame);
    expect(protocolErrorOf(() => decoder.next()).message).toMatch(/head checksum/);
  });

  test('a corrupt payload is caught, whether the frame is in one chunk or spans several', () => {
    const frame = requestFrame(1, 1, Buffer.from('header'), Buffer.alloc(1000, 7));
    frame[frame.length - 1]! ^= 0x80;
    const whole = new FrameDecoder(limits);
    whole.push(frame);
    expect(protocolErrorOf(() => whole.next()).message).toMatch(/payload checksum/);
    const split = new FrameDecoder(limits);
    split.push(frame.subarray(0, 500));
    expect(split.next()).toBe(false);
    split.push(frame.subarray(500));
    expect(protocolErrorOf(() => split.next()).message).toMatch(/payload checksum/);
  });

  test('bad magic, version and kind are refused; the decoder stays failed', () => {
    for (const [offset, value, pattern] of [
      [0, 0x00, /magic/],
      [4, 9, /version/],
      [5, 0, /kind/],
      [5, 4, /kind/],
    ] as [number, number, RegExp][]) {
      const frame = Buffer.from(frameA);
      frame[offset] = value;
      const decoder = new FrameDecoder(limits);
      decoder.push(frame);
      expect(protocolErrorOf(() => decoder.next()).message).toMatch(pattern);
      decoder.push(frameB);
      protocolErrorOf(() => decoder.next());
    }
  });

  test('payload checksums chain across payload parts', () => {
    const whole = Buffer.from('one contiguous payload');
    expect(payloadsCrc32c([whole.subarray(0, 3), whole.subarray(3, 3), whole.subarray(3)])).toBe(payloadsCrc32c([whole]));
    expect(payloadsCrc32c([])).toBe(0);
  });
});

describe('error header', () => {
  test('round-trips code and message; long messages are cut', () => {
    const err = decodeErrorHeader(encodeErrorHeader(new TesseraError('StaleEpoch', 'epoch 4 < 5'), 4096));
    expect(err.code).toBe('StaleEpoch');
    expect(err.message).toBe('epoch 4 < 5');
    expect(decodeErrorHeader(encodeErrorHeader(new TesseraError('Corrupt', 'x'.repeat(100)), 10)).message).toBe('x'.repeat(10));
  });

  test('unknown codes become Internal; a short header is a ProtocolError', () => {
    const header = Buffer.alloc(6);
    header.writeUInt32LE(9999, 0);
    header.write('hi', 4);
    expect(decodeErrorHeader(header).code).toBe('Internal');
    expect(decodeErrorHeader(Buffer.alloc(2)).code).toBe('ProtocolError');
  });
});
