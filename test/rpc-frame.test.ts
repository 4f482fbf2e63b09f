/**
 * The frame codec on its own (format version 2: payload checksum in a
 * trailer): frames survive every chunk split and every pattern of reads
 * into the decoder's own buffers; a frame inside one chunk comes out as views
 * of it (no copy); in readInto mode a large payload is read straight into
 * the buffer it is handed out in (the owner's, when it gives one: a
 * call's replyBuffer), allocated only once its head has checked
 * out, while in chunks mode nothing is allocated before the bytes are in;
 * lengths over the limits are refused from the 24 prefix bytes alone without
 * allocating; a bad head checksum is caught before the payload arrives, a bad
 * payload checksum when the trailer has, and bad payload bytes are never
 * handed out; a decoder stays failed after its first error.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test, vi } from 'vitest';
import { TesseraError } from '../src/lib/errors.js';
import { FrameDecoder, directFillBytesMin } from '../src/rpc/decoder.js';
import {
  FrameKind,
  decodeErrorHeader,
  encodeErrorHeader,
  encodeFrameHead,
  frameOverheadBytes,
  framePrefixBytes,
  frameTrailerBytes,
  type FrameLimits,
} from '../src/rpc/frame.js';
import { payloadsCrc32c } from '../src/rpc/payload.js';
import { requestFrame } from './rpc-helpers.js';

const limits: FrameLimits = { frameBytesMax: 1024 * 1024, frameHeaderBytesMax: 4096 };

interface Seen {
  op: number;
  requestId: number;
  header: string;
  payload: string;
}

/** Every complete frame the decoder yields now. */
function drain(decoder: FrameDecoder): Seen[] {
  const frames: Seen[] = [];
  while (decoder.next()) {
    frames.push({ op: decoder.op, requestId: decoder.requestId, header: decoder.header.toString(), payload: decoder.payload.toString() });
  }
  return frames;
}

/** Feeds bytes through readBuffer()/commit() in reads of at most the given sizes (cycled). */
function readInto(decoder: FrameDecoder, bytes: Buffer, readSizes: number[]): Seen[] {
  const frames: Seen[] = [];
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const target = decoder.readBuffer();
    expect(target.byteLength).toBeGreaterThan(0);
    const n = Math.min(target.byteLength, readSizes[i % readSizes.length]!, bytes.length - at);
    target.set(bytes.subarray(at, at + n));
    at += n;
    decoder.commit(n);
    frames.push(...drain(decoder));
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

  test('the layout: prefix, header, head checksum, payload, trailer; no trailer without a payload', () => {
    expect(frameA.length).toBe(frameOverheadBytes + 'header-a'.length + 'payload of frame a'.length + frameTrailerBytes);
    expect(frameC.length).toBe(frameOverheadBytes + 'c only header'.length);
    expect(frameA.readUInt32LE(frameA.length - frameTrailerBytes)).toBe(payloadsCrc32c([Buffer.from('payload of frame a')]));
    expect(frameA[4]).toBe(2);
  });

  test('three frames split into two chunks at every byte offset decode the same', () => {
    for (let split = 0; split <= stream.length; split++) {
      const decoder = new FrameDecoder(limits);
      decoder.push(stream.subarray(0, split));
      const frames = drain(decoder);
      decoder.push(stream.subarray(split));
      frames.push(...drain(decoder));
      expect(frames).toEqual(expected);
      expect(decoder.bufferedBytes).toBe(0);
      expect(decoder.midFrame).toBe(false);
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

  test('large and small frames, in chunks or read into the decoder’s buffers in any sizes, decode the same', () => {
    const big = randomBytes(3 * directFillBytesMin + 5);
    const mixed = Buffer.concat([stream, requestFrame(9, 4, Buffer.from('big'), big), stream]);
    const want = [...expected, { op: 9, requestId: 4, header: 'big', payload: big.toString() }, ...expected];
    for (const sizes of [[1], [7, 3, 1000], [directFillBytesMin - 1], [65536], [mixed.length]]) {
      expect(readInto(new FrameDecoder(limits, 'readInto'), mixed, sizes)).toEqual(want);
      const chunked = new FrameDecoder(limits);
      const frames: Seen[] = [];
      for (let at = 0, i = 0; at < mixed.length; i++) {
        const n = sizes[i % sizes.length]!;
        chunked.push(mixed.subarray(at, at + n));
        at += n;
        frames.push(...drain(chunked));
      }
      expect(frames).toEqual(want);
    }
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

  test('a large payload is read straight into the buffer it is handed out in', () => {
    const payload = randomBytes(4 * directFillBytesMin);
    const frame = requestFrame(1, 1, Buffer.from('h'), payload);
    const decoder = new FrameDecoder(limits, 'readInto');
    const first = decoder.readBuffer();
    first.set(frame.subarray(0, 100));
    decoder.commit(100);
    expect(decoder.next()).toBe(false);
    // From now on reads land in the payload's own buffer, and never run past the payload...
    const target = decoder.readBuffer();
    const payloadEnd = frame.length - frameTrailerBytes;
    expect(target.byteLength).toBe(payloadEnd - 100);
    target.set(frame.subarray(100, payloadEnd));
    decoder.commit(target.byteLength);
    expect(decoder.next()).toBe(false);
    // ...and the trailer comes with whatever follows it.
    const rest = decoder.readBuffer();
    expect(rest.buffer).not.toBe(target.buffer);
    rest.set(frame.subarray(payloadEnd));
    decoder.commit(frameTrailerBytes);
    expect(decoder.next()).toBe(true);
    expect(decoder.payload.buffer).toBe(target.buffer);
    expect(decoder.payload.equals(payload)).toBe(true);
  });

  test("a large payload lands in the owner's buffer (payloadBuffer), checked like any other", () => {
    const payload = randomBytes(4 * directFillBytesMin);
    const frames = Buffer.concat([requestFrame(1, 7, Buffer.from('h'), payload), requestFrame(1, 8, Buffer.from('h'), payload)]);
    const bad = Buffer.from(frames);
    bad[bad.length - frameTrailerBytes - 10]! ^= 1; // the second frame's payload
    for (const [bytes, goodFrames] of [[frames, 2], [bad, 1]] as const) {
      const decoder = new FrameDecoder(limits, 'readInto');
      const given: Buffer[] = [];
      const asked: Array<{ kind: number; requestId: number; payloadBytes: number }> = [];
      decoder.payloadBuffer = (frame) => {
        asked.push({ ...frame });
        given.push(Buffer.alloc(frame.payloadBytes));
        return given[given.length - 1]!;
      };
      const seen: Buffer[] = [];
      let failure: TesseraError | null = null;
      for (let at = 0; at < bytes.length && failure === null; ) {
        const into = decoder.readBuffer();
        const n = Math.min(into.byteLength, 9000, bytes.length - at);
        into.set(bytes.subarray(at, at + n));
        decoder.commit(n);
        at += n;
        try {
          while (decoder.next()) seen.push(decoder.payload);
        } catch (err) {
          failure = err as TesseraError;
        }
      }
      expect(asked).toEqual([1, 2].slice(0, given.length).map((i) => ({ kind: FrameKind.Request, requestId: 6 + i, payloadBytes: payload.length })));
      expect(seen.length).toBe(goodFrames);
      for (const [i, p] of seen.entries()) {
        expect(p).toBe(given[i]);
        expect(p.equals(payload)).toBe(true);
      }
      if (goodFrames === 2) expect(failure).toBeNull();
      else expect(failure?.message).toMatch(/payload checksum mismatch/);
    }
  });

  test('frames stay buffered until the caller pulls them', () => {
    const decoder = new FrameDecoder(limits);
    decoder.push(stream);
    expect(decoder.next()).toBe(true);
    expect(decoder.bufferedBytes).toBe(frameB.length + frameC.length);
    expect(drain(decoder)).toEqual(expected.slice(1));
  });

  test('an oversized length is refused from the prefix alone, without allocating it', () => {
    const head = encodeFrameHead({ kind: FrameKind.Request, op: 1, requestId: 1, header: new Uint8Array(0), payloadBytes: 0xffff_fff0 });
    const decoder = new FrameDecoder(limits);
    const allocations = [vi.spyOn(Buffer, 'allocUnsafe'), vi.spyOn(Buffer, 'alloc'), vi.spyOn(Buffer, 'allocUnsafeSlow')];
    try {
      decoder.push(head.subarray(0, framePrefixBytes));
      expect(protocolErrorOf(() => decoder.next()).message).toMatch(/limit/);
      for (const spy of allocations) expect(spy).not.toHaveBeenCalled();
    } finally {
      for (const spy of allocations) spy.mockRestore();
    }
  });

  test('chunks mode allocates nothing before the bytes are in; readInto mode allocates the payload once its head checks out', () => {
    const frame = requestFrame(1, 1, Buffer.from('h'), Buffer.alloc(4 * directFillBytesMin, 3));
    const allocUnsafe = vi.spyOn(Buffer, 'allocUnsafe');
    try {
      const chunked = new FrameDecoder(limits);
      chunked.push(frame.subarray(0, 1000));
      expect(chunked.next()).toBe(false);
      expect(allocUnsafe).not.toHaveBeenCalled();
      chunked.push(frame.subarray(1000));
      expect(chunked.next()).toBe(true);
      expect(allocUnsafe).toHaveBeenCalledWith(4 * directFillBytesMin);

      allocUnsafe.mockClear();
      const direct = new FrameDecoder(limits, 'readInto');
      const corrupt = Buffer.from(frame);
      corrupt[framePrefixBytes]! ^= 1;
      direct.readBuffer().set(corrupt.subarray(0, 1000));
      direct.commit(1000);
      protocolErrorOf(() => direct.next());
      expect(allocUnsafe).not.toHaveBeenCalled();
    } finally {
      allocUnsafe.mockRestore();
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

  test('a corrupt payload or trailer is caught in every path, and its bytes are never handed out', () => {
    for (const payloadBytes of [1000, 4 * directFillBytesMin]) {
      for (const offset of [-1, -frameTrailerBytes - 1]) {
        const frame = requestFrame(1, 1, Buffer.from('header'), Buffer.alloc(payloadBytes, 7));
        frame[frame.length + offset]! ^= 0x80;
        const paths: [string, (d: FrameDecoder) => void][] = [
          ['one chunk', (d) => d.push(frame)],
          ['two chunks', (d) => (d.push(frame.subarray(0, 500)), d.next(), d.push(frame.subarray(500)))],
          ['read into', (d) => readInto(d, frame, [300, 70_000])],
        ];
        for (const [name, feed] of paths) {
          const decoder = new FrameDecoder(limits, name === 'read into' ? 'readInto' : 'chunks');
          const err = protocolErrorOf(() => {
            feed(decoder);
            drain(decoder);
          });
          expect(err.message).toMatch(/payload checksum/);
          expect(decoder.payload.byteLength).toBe(0);
        }
      }
    }
  });

  test('bad magic, version and kind are refused; the decoder stays failed', () => {
    for (const [offset, value, pattern] of [
      [0, 0x00, /magic/],
      [4, 1, /version/],
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

  test('a protocol error names where the stream went wrong: its offset, the frame before, the bytes there', () => {
    const decoder = new FrameDecoder(limits);
    decoder.push(Buffer.concat([frameA, frameB, Buffer.alloc(framePrefixBytes + 8)]));
    expect(decoder.next()).toBe(true);
    expect(decoder.next()).toBe(true);
    const message = protocolErrorOf(() => decoder.next()).message;
    expect(message).toMatch(/^bad frame: magic 0x0 \(/);
    expect(message).toContain(`frame at byte ${frameA.length + frameB.length} of the stream, after 2 frames`);
    expect(message).toContain(`previous: kind 1 op 65535 request ${2 ** 53 - 1}, 0 + 1 bytes`);
    expect(message).toContain(`${framePrefixBytes + 8} bytes buffered, starting ${'00'.repeat(32)}`);
    // A frame whose head was parsed is described too.
    const corrupt = Buffer.from(frameA);
    corrupt[framePrefixBytes]! ^= 1;
    const second = new FrameDecoder(limits);
    second.push(corrupt);
    expect(protocolErrorOf(() => second.next()).message).toContain('after 0 frames; this one: kind 1 op 7 request 1, 8 + 18 bytes');
  });

  test('random frames read into the decoder in random sizes decode exactly, and frames handed out stay intact', () => {
    let seed = 12345;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const payloadSizes = [0, 1, 100, directFillBytesMin - 1, directFillBytesMin, directFillBytesMin + 5, 65536 - frameOverheadBytes, 65536, 200_000];
    for (let round = 0; round < 40; round++) {
      const frames = Array.from({ length: 2 + random(12) }, (_, i) => ({
        requestId: i + 1,
        header: randomBytes(random(3) === 0 ? 0 : random(64)),
        payload: randomBytes(payloadSizes[random(payloadSizes.length)]! + (random(2) ? random(7) : 0)),
      }));
      const wire = Buffer.concat(frames.map((f) => requestFrame(3, f.requestId, f.header, f.payload)));
      const decoder = new FrameDecoder(limits, 'readInto');
      const got: { requestId: number; header: Buffer; payload: Buffer }[] = [];
      for (let at = 0; at < wire.length; ) {
        const target = decoder.readBuffer();
        const n = Math.min(target.byteLength, wire.length - at, [1, 3, 24, 29, 4096, 70_000][random(6)]!);
        wire.copy(target, 0, at, at + n);
        at += n;
        decoder.commit(n);
        // Sometimes the owner is not there yet (a connection not set up): bytes wait for the next call.
        if (random(5) !== 0) while (decoder.next()) got.push({ requestId: decoder.requestId, header: decoder.header, payload: decoder.payload });
      }
      while (decoder.next()) got.push({ requestId: decoder.requestId, header: decoder.header, payload: decoder.payload });
      // Compared at the end: a later read must not have overwritten a frame handed out as a view.
      expect(got.map((f) => f.requestId)).toEqual(frames.map((f) => f.requestId));
      for (let i = 0; i < frames.length; i++) {
        expect(got[i]!.header.equals(frames[i]!.header)).toBe(true);
        expect(got[i]!.payload.equals(frames[i]!.payload)).toBe(true);
      }
      expect(decoder.midFrame).toBe(false);
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
