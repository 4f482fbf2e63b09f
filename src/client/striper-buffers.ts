/**
 * Reused buffers for the striper's reads (`chunksAt`): a piece, or a whole
 * inline object with its trailer, lands in one of these straight from the
 * socket (the client's `read(..., { into })`), instead of a fresh buffer of a
 * few MiB per read that the garbage collector then has to find (an off-heap
 * allocation of that size also pushes V8 towards a full mark-compact).
 *
 * One size class: `bufferBytes` (the Striper's piece plus the generation
 * trailer). A read is given a pooled buffer only when it fills at least half
 * of one, so a buffer never pins much more memory than its read reserved in
 * the striper's byte budget; other reads allocate as before.
 *
 * Invariant (asserted): a buffer is in the free list at most once. Ownership:
 * a buffer taken is the taker's until it gives it back; it may be given back
 * only when nothing can read or write its bytes any more (for a response
 * body: the socket's write callback reported them written). A buffer never
 * given back is simply collected: losing one costs an allocation, never
 * bytes. Limit: at most `buffersMax` free buffers are kept
 * (limits.striperPooledBuffersMax); those in use are bounded by the byte
 * budget their reads reserve.
 */
import { assert } from '../lib/assert.js';

export class ReadBufferPool {
  private readonly free: Buffer[] = [];
  private allocated = 0;
  private reused = 0;

  constructor(
    readonly bufferBytes: number,
    readonly buffersMax: number,
  ) {
    assert(Number.isSafeInteger(bufferBytes) && bufferBytes > 0, 'a pooled buffer has a size');
    assert(Number.isSafeInteger(buffersMax) && buffersMax >= 0, 'the free list has a bound');
  }

  /** A buffer for a read of `lengthBytes`, or null when that read is not this pool's size class (too large, or under half a buffer). */
  take(lengthBytes: number): Buffer | null {
    if (lengthBytes > this.bufferBytes || lengthBytes * 2 < this.bufferBytes) return null;
    const buffer = this.free.pop();
    if (buffer) {
      this.reused++;
      return buffer;
    }
    this.allocated++;
    return Buffer.allocUnsafeSlow(this.bufferBytes);
  }

  /** Gives back a buffer take() returned, once nothing reads or writes its bytes any more. */
  give(buffer: Buffer): void {
    assert(buffer.byteLength === this.bufferBytes && buffer.byteOffset === 0, 'only a buffer of this pool goes back to it');
    assert(!this.free.includes(buffer), 'a buffer is given back once');
    if (this.free.length < this.buffersMax) this.free.push(buffer);
  }

  /** Buffers free now, allocated and reused so far (tests, metrics). */
  stats(): { freeCount: number; allocatedCount: number; reusedCount: number } {
    return { freeCount: this.free.length, allocatedCount: this.allocated, reusedCount: this.reused };
  }
}
