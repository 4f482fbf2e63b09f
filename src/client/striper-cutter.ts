/**
 * Cuts a byte source (chunks of any size) into pieces of pieceBytes, the
 * last one shorter. A chunk that covers a whole piece is sliced without a
 * copy; smaller chunks are copied into one piece buffer. It holds at most
 * one piece plus the remainder of one source chunk, and it counts the bytes
 * so a source longer than the limit fails early. Given the expected length,
 * it allocates no more than the bytes still to come (a 4 KiB put does not
 * allocate a whole piece).
 */
import { limitExceeded } from '../lib/errors.js';
import { aborted } from './striper-budget.js';

export type ByteSource = Buffer | AsyncIterable<Uint8Array>;

export class PieceCutter {
  private readonly chunks: AsyncIterator<Uint8Array>;
  private remainder: Buffer | null = null;
  private ended = false;
  /** Bytes taken from the source so far. */
  totalBytes = 0;
  private emittedBytes = 0;

  constructor(
    source: ByteSource,
    private readonly pieceBytes: number,
    private readonly limitBytes: number,
    private readonly signal?: AbortSignal,
    private readonly expectedBytes?: number,
  ) {
    const iterable: AsyncIterable<Uint8Array> = Buffer.isBuffer(source) ? oneChunk(source) : source;
    this.chunks = iterable[Symbol.asyncIterator]();
  }

  /** The next piece (pieceBytes long unless the source ends), or null when the source is exhausted. */
  async next(): Promise<Buffer | null> {
    const first = await this.take(this.pieceBytes);
    if (!first || first.length === this.pieceBytes) return this.emit(first);
    const room = this.expectedBytes === undefined ? 0 : this.expectedBytes - this.emittedBytes;
    const capacity = room > first.length ? Math.min(this.pieceBytes, room) : this.pieceBytes;
    const piece = Buffer.allocUnsafe(capacity);
    first.copy(piece);
    let filled = first.length;
    while (filled < capacity) {
      const chunk = await this.take(capacity - filled);
      if (!chunk) break;
      chunk.copy(piece, filled);
      filled += chunk.length;
    }
    return this.emit(piece.subarray(0, filled));
  }

  /** The next piece to emit is this many bytes at most (what a caller reserves memory for). */
  nextPieceBytesMax(): number {
    // Past the expected length only an over-long source (an error caught by the caller) has more.
    if (this.expectedBytes === undefined) return this.pieceBytes;
    return Math.max(0, Math.min(this.pieceBytes, this.expectedBytes - this.emittedBytes));
  }

  private emit(piece: Buffer | null): Buffer | null {
    if (piece) this.emittedBytes += piece.length;
    return piece;
  }

  /** True when the source has no more bytes (it may pull one chunk ahead to find out). */
  async exhausted(): Promise<boolean> {
    if (this.remainder) return false;
    this.remainder = await this.pull();
    return this.remainder === null;
  }

  /** Stops the source early (its finally blocks run). */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.chunks.return?.();
  }

  /** Up to maxBytes from the remainder or the next non-empty chunk; null at the end. */
  private async take(maxBytes: number): Promise<Buffer | null> {
    const chunk = this.remainder ?? (await this.pull());
    this.remainder = null;
    if (!chunk) return null;
    if (chunk.length > maxBytes) this.remainder = chunk.subarray(maxBytes);
    return chunk.length > maxBytes ? chunk.subarray(0, maxBytes) : chunk;
  }

  private async pull(): Promise<Buffer | null> {
    for (;;) {
      if (this.signal?.aborted) throw aborted(this.signal);
      if (this.ended) return null;
      const r = await this.chunks.next();
      if (r.done) {
        this.ended = true;
        return null;
      }
      if (r.value.byteLength === 0) continue;
      this.totalBytes += r.value.byteLength;
      if (this.totalBytes > this.limitBytes) throw limitExceeded(`the source is longer than ${this.limitBytes} bytes`);
      return Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    }
  }
}

async function* oneChunk(data: Buffer): AsyncGenerator<Buffer> {
  yield data;
}
