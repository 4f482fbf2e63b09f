/**
 * Reading striped objects. open() reads the manifest's xattrs and the start
 * of its data in parallel (one round trip; a small inline object arrives
 * whole; a striped one returns on its xattrs) and binds the handle to that
 * generation: every later read of the handle returns bytes of that generation
 * or fails, never a mix. openRef() binds a handle to a generation the caller
 * already knows (a put's result) without reading the manifest at all.
 * - Inline data carries its generation as a trailer: a read that reaches the
 *   end checks it; a read that stops earlier checks the generation again
 *   afterwards (generations are never reused, so equal means unchanged).
 * - Pieces are named by generation and immutable. A piece that is absent
 *   means the generation was replaced and deleted (Conflict), or, if the
 *   manifest still names it, that the piece was lost (Corrupt).
 * A stream holds at most `concurrency` pieces (read ahead, plus the one the
 * consumer has), each reserved in the memory budget until the consumer
 * takes the next one. chunks(..., pooled) hands each piece over with its
 * reservation (StripedChunk): reads land in the Striper's reused buffers
 * (striper-buffers.ts), and the consumer releases a chunk when it is done
 * with its bytes (a response body: when the socket has written them), which
 * is when its buffer may be reused.
 */
import { TesseraError, invalid, isTesseraError, notFound } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { ReadBufferPool } from './striper-buffers.js';
import { readManifest, type StriperContext } from './striper-context.js';
import { GENERATION_CHARS, layoutProblem, parseManifest, pieceName, trailer, type Manifest, type PoolPair, type StripedRef } from './striper-layout.js';

export interface ReadRange {
  offsetBytes?: number;
  /** Default: to the end. A range past the end returns fewer bytes (none past the end). */
  lengthBytes?: number;
}

export interface StripedStat {
  generation: string;
  sizeBytes: number;
  layout: 'inline' | 'striped';
  /** 0 when inline. */
  pieceBytes: number;
  attrs: Map<string, Buffer>;
}

/** Inline reads that would fetch this many bytes past the range read the range and re-check the generation instead. */
const TAIL_READ_BYTES_MAX = 1024 * 1024;

export async function openObject(ctx: StriperContext, pools: PoolPair, name: string): Promise<StripedObject> {
  const pool = pools.manifests;
  for (let attempt = 1; ; attempt++) {
    // Both reads leave at once (one round trip), but a striped manifest needs only its xattrs: its data is just the
    // trailer, and the xattrs alone name the generation the pieces are read by. So the data is awaited only when inline.
    const head = ctx.client.read(pool, name, { offsetBytes: 0, lengthBytes: ctx.settings.prefetchBytes + GENERATION_CHARS });
    head.catch(() => {}); // not awaited for striped objects (nor when the xattrs fail)
    const manifest = parseManifest(await ctx.client.getXattrs(pool, name), `${pool}/${name}`);
    if (!manifest) throw notFound(`${pool}/${name} is not a striped object`);
    if (manifest.pieceBytes > 0) return new StripedObject(ctx, pool, name, manifest, null);
    const dataBytes = manifest.sizeBytes + GENERATION_CHARS;
    // Inline data longer than the prefetch is checked when it is read.
    if (dataBytes > ctx.settings.prefetchBytes + GENERATION_CHARS) return new StripedObject(ctx, pool, name, manifest, null);
    const data = await head;
    if (data.length === dataBytes && trailerOf(data).equals(trailer(manifest.generation))) {
      return new StripedObject(ctx, pool, name, manifest, data.subarray(0, manifest.sizeBytes));
    }
    // The two reads saw different generations (a commit fell between them): read both again.
    if (attempt >= limits.striperReadAttemptsMax) throw new TesseraError('Conflict', `${pool}/${name} keeps changing while it is opened`);
  }
}

/**
 * A handle on the generation `ref` names, without reading the manifest (no I/O
 * here): pieces are named by generation, and inline data carries it as its
 * trailer, so every read still returns bytes of that generation or fails
 * (Conflict when it was replaced and deleted, Corrupt when the manifest still
 * names a missing piece). The stat's attrs are empty (they live in the manifest).
 */
export function openRef(ctx: StriperContext, pools: PoolPair, name: string, ref: StripedRef): StripedObject {
  const problem = layoutProblem(ref);
  if (problem) throw invalid(`${name}: not a striped object reference (${problem})`);
  const { generation, sizeBytes, pieceBytes, piecesPool } = ref;
  const manifest: Manifest = { generation, sizeBytes, pieceBytes, piecesPool: pieceBytes === 0 ? null : piecesPool, attrs: new Map() };
  return new StripedObject(ctx, pools.manifests, name, manifest, null);
}

const trailerOf = (data: Buffer): Buffer => data.subarray(data.length - GENERATION_CHARS);

/**
 * Bytes of a range handed over with their memory: the consumer owns `data`
 * until it calls release, once (later calls do nothing). release(false)
 * frees the chunk's budget reservation; release(true) also gives its buffer
 * back for reuse, and so says that nothing reads `data` any more (nor will:
 * a socket write of it has completed).
 */
export interface StripedChunk {
  data: Buffer;
  release(reusable: boolean): void;
}

function chunkOf(data: Buffer, release: () => void, buffer: Buffer | null, pool: ReadBufferPool): StripedChunk {
  let released = false;
  return {
    data,
    release(reusable) {
      if (released) return;
      released = true;
      release();
      if (buffer && reusable) pool.give(buffer);
    },
  };
}

const NOTHING_HELD = (): void => {};

/** One generation of a striped object, as open() found it. */
export class StripedObject {
  readonly stat: StripedStat;

  constructor(
    private readonly ctx: StriperContext,
    private readonly pool: string,
    private readonly name: string,
    private readonly manifest: Manifest,
    private readonly inlineData: Buffer | null,
  ) {
    const { generation, sizeBytes, pieceBytes, attrs } = manifest;
    this.stat = { generation, sizeBytes, pieceBytes, attrs, layout: pieceBytes === 0 ? 'inline' : 'striped' };
  }

  /** The range's bytes in order; Conflict if this generation is replaced and deleted before they are all read. */
  async *stream(range: ReadRange = {}, signal?: AbortSignal): AsyncGenerator<Buffer> {
    // The consumer may still hold a chunk's bytes after it asks for the next one (a Readable's buffer): never reused.
    for await (const chunk of this.chunks(range, signal, false)) {
      try {
        yield chunk.data;
      } finally {
        chunk.release(false);
      }
    }
  }

  /**
   * The range's bytes in order as chunks the consumer releases (StripedChunk),
   * with the same guarantees as stream(). `pooled`: reads land in the
   * Striper's reused buffers, for a consumer that releases each chunk with
   * `reusable` only once nothing reads its bytes. A chunk the consumer has
   * taken stays reserved in the budget until it is released, beyond the
   * `concurrency` pieces read ahead.
   */
  async *chunks(range: ReadRange = {}, signal?: AbortSignal, pooled = false): AsyncGenerator<StripedChunk> {
    const { offsetBytes, lengthBytes } = clampRange(range, this.manifest.sizeBytes);
    if (lengthBytes === 0) return;
    if (this.manifest.pieceBytes > 0) {
      yield* this.pieceChunks(offsetBytes, lengthBytes, pooled, signal);
    } else if (this.inlineData) {
      yield { data: this.inlineData.subarray(offsetBytes, offsetBytes + lengthBytes), release: NOTHING_HELD };
    } else {
      yield await this.readInline(offsetBytes, lengthBytes, pooled, signal);
    }
  }

  private async readInline(offsetBytes: number, lengthBytes: number, pooled: boolean, signal?: AbortSignal): Promise<StripedChunk> {
    const { sizeBytes, generation } = this.manifest;
    const tailBytes = sizeBytes - offsetBytes - lengthBytes;
    const wholeTail = tailBytes <= TAIL_READ_BYTES_MAX;
    // To the end, with the trailer (checked), or just the range (the generation checked again after).
    const readBytes = wholeTail ? sizeBytes - offsetBytes + GENERATION_CHARS : lengthBytes;
    const release = await this.ctx.budget.holder().acquire(readBytes, signal);
    const into = pooled ? this.ctx.buffers.take(readBytes) : null;
    let handedOver = false;
    try {
      // Into a reused buffer, the read is bounded (a longer replacement fails the trailer check, as a shorter one does).
      const options = into ? { offsetBytes, lengthBytes: readBytes, into } : wholeTail ? { offsetBytes } : { offsetBytes, lengthBytes };
      const data = await this.ctx.client.read(this.pool, this.name, options);
      if (wholeTail) {
        if (data.length !== readBytes || !trailerOf(data).equals(trailer(generation))) throw this.replaced();
      } else {
        const now = await readManifest(this.ctx, this.pool, this.name);
        if (now?.generation !== generation || data.length !== lengthBytes) throw this.replaced();
      }
      handedOver = true;
      return chunkOf(data.subarray(0, lengthBytes), release, into, this.ctx.buffers);
    } catch (err) {
      throw isTesseraError(err, 'NotFound') ? this.replaced() : err;
    } finally {
      // A settled read no longer writes into its buffer (client.read's `into`): it can go back.
      if (!handedOver) {
        release();
        if (into) this.ctx.buffers.give(into);
      }
    }
  }

  private async *pieceChunks(offsetBytes: number, lengthBytes: number, pooled: boolean, signal?: AbortSignal): AsyncGenerator<StripedChunk> {
    const spans = pieceSpans(this.manifest.pieceBytes, offsetBytes, lengthBytes);
    const holder = this.ctx.budget.holder();
    // Fetches still waiting for memory when the consumer stops are cancelled.
    const stop = new AbortController();
    const onAbort = (): void => stop.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const queue: Array<Promise<StripedChunk>> = [];
    let next = 0;
    let holding = 0;
    const fill = (): void => {
      while (queue.length + holding < this.ctx.settings.concurrency && next < spans.count) {
        const span = spans.at(next++);
        const fetch = holder.acquire(span.lengthBytes, stop.signal).then(async (release) => {
          const into = pooled ? this.ctx.buffers.take(span.lengthBytes) : null;
          try {
            return chunkOf(await this.readPiece(span, into), release, into, this.ctx.buffers);
          } catch (err) {
            release();
            if (into) this.ctx.buffers.give(into); // the read settled: nothing writes into it
            throw err;
          }
        });
        fetch.catch(() => {}); // awaited in order below; this only marks it handled meanwhile
        queue.push(fetch);
      }
    };
    try {
      fill();
      while (queue.length > 0) {
        const chunk = await queue.shift()!;
        holding = 1;
        fill();
        // From here the chunk is the consumer's to release (stream() releases it when asked for the next one).
        yield chunk;
        holding = 0;
        fill();
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      stop.abort();
      // Read ahead and never handed over: no one else has seen these buffers.
      for (const fetch of queue) void fetch.then((c) => c.release(true), () => {});
    }
  }

  private async readPiece(span: PieceSpan, into: Buffer | null): Promise<Buffer> {
    const { generation, piecesPool } = this.manifest;
    const object = pieceName(this.name, generation, span.index);
    let data: Buffer;
    try {
      const range = { offsetBytes: span.offsetBytes, lengthBytes: span.lengthBytes };
      data = await this.ctx.client.read(piecesPool!, object, into ? { ...range, into } : range);
    } catch (err) {
      if (!isTesseraError(err, 'NotFound')) throw err;
      throw await this.pieceMissing(span.index);
    }
    if (data.length !== span.lengthBytes) throw new TesseraError('Corrupt', `${this.name}: piece ${span.index} of generation ${generation} is shorter than its manifest says`);
    return data;
  }

  /** Conflict if the manifest moved on (overwritten or removed); Corrupt if it still names the missing piece. */
  private async pieceMissing(index: number): Promise<TesseraError> {
    const now = await readManifest(this.ctx, this.pool, this.name);
    if (now?.generation === this.manifest.generation) {
      return new TesseraError('Corrupt', `${this.pool}/${this.name}: piece ${index} of the current generation ${this.manifest.generation} is missing`);
    }
    return this.replaced();
  }

  private replaced(): TesseraError {
    return new TesseraError('Conflict', `${this.pool}/${this.name}: generation ${this.manifest.generation} was replaced while being read`);
  }
}

interface PieceSpan {
  index: number;
  /** Within the piece. */
  offsetBytes: number;
  lengthBytes: number;
}

/** The pieces a non-empty byte range covers (count), and the part of the k-th of them (at), computed on demand. */
export function pieceSpans(pieceBytes: number, offsetBytes: number, lengthBytes: number): { count: number; at(k: number): PieceSpan } {
  const end = offsetBytes + lengthBytes;
  const first = Math.floor(offsetBytes / pieceBytes);
  const last = Math.floor((end - 1) / pieceBytes);
  return {
    count: last - first + 1,
    at(k) {
      const index = first + k;
      const start = Math.max(offsetBytes, index * pieceBytes);
      const stop = Math.min(end, (index + 1) * pieceBytes);
      return { index, offsetBytes: start - index * pieceBytes, lengthBytes: stop - start };
    },
  };
}

export function clampRange(range: ReadRange, sizeBytes: number): { offsetBytes: number; lengthBytes: number } {
  const offsetBytes = range.offsetBytes ?? 0;
  const lengthBytes = range.lengthBytes ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0) throw invalid('offsetBytes must be a non-negative integer');
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes < 0) throw invalid('lengthBytes must be a non-negative integer');
  const start = Math.min(offsetBytes, sizeBytes);
  return { offsetBytes: start, lengthBytes: Math.min(lengthBytes, sizeBytes - start) };
}
