/**
 * The striper: objects of any size up to 5 TiB, stored as pieces of a few
 * MiB under a manifest written last, shared by every gateway. docs/striper.md
 * has the layout, the protocol and the limits; in short:
 *
 * - Small objects (<= inlineBytesMax) live in their manifest: one
 *   transaction to write, one round trip to read.
 * - Large ones: pieces of a fresh generation first, then the manifest in one
 *   transaction conditional on the generation it replaces (compare-and-swap:
 *   the last writer to commit wins), then the replaced pieces are deleted.
 *   Readers see the old or the new object, never a mix.
 * - Memory is bounded: each put holds at most `concurrency` pieces in flight
 *   plus the one it fills, each get reads ahead at most `concurrency` pieces,
 *   and all of one Striper's operations share a byte budget.
 * - What a crashed writer leaves is recorded in a pending registry that
 *   sweepStriperOrphans() (striper-sweep.ts) settles later.
 */
import { TesseraError, isTesseraError, limitExceeded } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { TesseraClient } from './client.js';
import { makeContext, readManifest, type StriperContext, type StriperCounters, type StriperOptions } from './striper-context.js';
import type { ByteSource } from './striper-cutter.js';
import { checkName, poolPair, type StripedPool, type StripedRef } from './striper-layout.js';
import { removeObject, setObjectAttrs, type ConditionOptions } from './striper-meta.js';
import { clampRange, openObject, openRef, type ReadRange, type StripedChunk, type StripedObject, type StripedStat } from './striper-read.js';
import { putObject, type PutOptions, type PutResult } from './striper-write.js';

export type { ByteSource, ConditionOptions, PutOptions, PutResult, ReadRange, StripedChunk, StripedObject, StripedPool, StripedRef, StripedStat, StriperOptions, StriperCounters };
export { sweepStriperOrphans, type SweepOptions, type SweepReport } from './striper-sweep.js';

export interface GetOptions extends ReadRange {
  signal?: AbortSignal;
}

export class Striper {
  private readonly ctx: StriperContext;

  constructor(client: TesseraClient, options: StriperOptions = {}) {
    this.ctx = makeContext(client, options);
  }

  /** Writes the object from a buffer or a stream; replaces any previous one atomically. */
  put(pool: StripedPool, name: string, source: ByteSource, options: PutOptions = {}): Promise<PutResult> {
    return putObject(this.ctx, poolPair(pool), name, source, options);
  }

  /**
   * The object's metadata and a handle bound to this generation (for
   * gateways: headers from handle.stat, then handle.stream(range)). A stream
   * of the handle fails Conflict if the object is replaced and its pieces
   * deleted before it is read; open again to read the new one.
   */
  async open(pool: StripedPool, name: string): Promise<StripedObject> {
    checkName(name);
    return openObject(this.ctx, poolPair(pool), name);
  }

  /**
   * Streams a range. If the object is replaced before the first byte is
   * yielded, it re-opens (bounded); once bytes were yielded, a replacement
   * fails the stream with Conflict rather than continue with other bytes.
   */
  async *get(pool: StripedPool, name: string, options: GetOptions = {}): AsyncGenerator<Buffer> {
    for (let attempt = 1; ; attempt++) {
      const object = await this.open(pool, name);
      let yielded = false;
      try {
        for await (const chunk of object.stream(options, options.signal)) {
          yielded = true;
          yield chunk;
        }
        return;
      } catch (err) {
        if (yielded || !this.restartable(err, attempt)) throw err;
      }
    }
  }

  /**
   * Streams a range of the generation `ref` names (a put's result, kept by the
   * caller) without reading the manifest first: the first piece read leaves at
   * once. Bytes are that generation's or the stream fails: Conflict when it was
   * replaced and deleted (no re-open: the caller's reference is what is stale),
   * Corrupt when the manifest still names a missing piece.
   */
  async *getAt(pool: StripedPool, name: string, ref: StripedRef, options: GetOptions = {}): AsyncGenerator<Buffer> {
    checkName(name);
    yield* openRef(this.ctx, poolPair(pool), name, ref).stream(options, options.signal);
  }

  /**
   * getAt's bytes as chunks the caller releases (StripedChunk: release(true)
   * only once nothing reads the bytes, e.g. in a socket write's callback),
   * read into this Striper's reused buffers instead of a fresh buffer per
   * piece. Each chunk stays reserved in the byte budget until released; a
   * chunk never released costs its reservation, so every path releases.
   */
  async *chunksAt(pool: StripedPool, name: string, ref: StripedRef, options: GetOptions = {}): AsyncGenerator<StripedChunk> {
    checkName(name);
    yield* openRef(this.ctx, poolPair(pool), name, ref).chunks(options, options.signal, true);
  }

  /** Reads a range into one buffer (at most limits.striperReadWholeBytesMax); restarts whole if the object is replaced meanwhile. */
  async read(pool: StripedPool, name: string, options: GetOptions = {}): Promise<Buffer> {
    for (let attempt = 1; ; attempt++) {
      const object = await this.open(pool, name);
      const { lengthBytes } = clampRange(options, object.stat.sizeBytes);
      if (lengthBytes > limits.striperReadWholeBytesMax) throw limitExceeded(`read() returns at most ${limits.striperReadWholeBytesMax} bytes; stream with get()`);
      const chunks: Buffer[] = [];
      try {
        for await (const chunk of object.stream(options, options.signal)) chunks.push(chunk);
        return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, lengthBytes);
      } catch (err) {
        if (!this.restartable(err, attempt)) throw err;
      }
    }
  }

  /** Size, generation, layout and attributes; NotFound when there is no striped object. */
  async stat(pool: StripedPool, name: string): Promise<StripedStat> {
    checkName(name);
    const { manifests } = poolPair(pool);
    const m = await readManifest(this.ctx, manifests, name);
    if (!m) throw new TesseraError('NotFound', `${manifests}/${name}: no striped object`);
    return { generation: m.generation, sizeBytes: m.sizeBytes, layout: m.pieceBytes === 0 ? 'inline' : 'striped', pieceBytes: m.pieceBytes, attrs: m.attrs };
  }

  /** Replaces the attributes as a whole, atomically with the manifest (the data and generation stay). */
  setAttrs(pool: StripedPool, name: string, attrs: ReadonlyMap<string, Buffer>, options: ConditionOptions = {}): Promise<void> {
    return setObjectAttrs(this.ctx, poolPair(pool).manifests, name, attrs, options);
  }

  /** Removes the object and its pieces; NotFound when there is none. */
  remove(pool: StripedPool, name: string, options: ConditionOptions = {}): Promise<void> {
    return removeObject(this.ctx, poolPair(pool).manifests, name, options);
  }

  /** Piece bytes reserved now and at most so far, and the budget. */
  memory(): { reservedBytes: number; reservedBytesPeak: number; budgetBytes: number } {
    const { budget } = this.ctx;
    return { reservedBytes: budget.reservedBytes, reservedBytesPeak: budget.reservedBytesPeak, budgetBytes: budget.budgetBytes };
  }

  /** chunksAt's reused read buffers: free now, allocated and reused so far. */
  readBuffers(): { freeCount: number; allocatedCount: number; reusedCount: number } {
    return this.ctx.buffers.stats();
  }

  counters(): StriperCounters {
    return { ...this.ctx.counters };
  }

  private restartable(err: unknown, attempt: number): boolean {
    if (!isTesseraError(err, 'Conflict') || attempt >= limits.striperReadAttemptsMax) return false;
    this.ctx.counters.readRestarts++;
    return true;
  }
}
