/**
 * Serves one disk's ObjectStore over rpc: decodes each request
 * (src/protocol/store-messages.ts), calls the store, encodes the reply.
 * Errors thrown here are TesseraErrors and reach the caller with their code.
 */
import { assert } from '../lib/assert.js';
import { TesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import * as m from '../protocol/store-messages.js';
import type { RpcHandler, RpcHandlerReply, RpcPayloadPiece } from '../rpc/types.js';
import type { ObjectId, ObjectStore, ReadAhead, ReadOptions, ReadPiece } from '../store/index.js';

const EMPTY = Buffer.alloc(0);
/** Streamed reads go out in pieces of this size... */
const PIECE_BYTES = 1024 * 1024;
/** ...whose buffers are kept for reuse, up to this many idle ones (32 MiB). */
const FREE_PIECES_MAX = 32;
/**
 * Reads shorter than this go in one in-memory payload, from a buffer of their
 * own; from this size on (the smallest piece the pool keeps) they are read
 * into pooled piece buffers and streamed, each piece with its verified crc32c
 * and back in the pool once written. Why: an EC primary reads its 1 MiB
 * shards from the members; a fresh buffer per shard read made V8 run full
 * mark-compacts from the external memory churn.
 */
const POOLED_READ_BYTES_MIN = PIECE_BYTES / 2;
// A reply sent in one payload is one piece, never a piece read ahead (whose lent bytes come back only when a stream writes it).
assert(POOLED_READ_BYTES_MIN <= PIECE_BYTES, 'an in-memory read reply is a single piece');

/**
 * The reply to a read: the first piece is read before replying, so a read
 * that fails there (Corrupt, NotFound...) gets an error reply with its code
 * (a failure in a later piece can only close the connection: the frame is
 * already on its way). Reads shorter than POOLED_READ_BYTES_MIN go in one
 * in-memory payload; larger ones stream their pieces, each with its verified
 * crc32c (the frame trailer is combined from them, not computed again) and
 * handed back (release) once the socket is done with it.
 */
async function readReply(stream: { lengthBytes: number; chunks: AsyncIterable<ReadPiece> }, account: ReadAheadAccount): Promise<RpcHandlerReply> {
  const iterator = stream.chunks[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) return { header: EMPTY };
  if (stream.lengthBytes < POOLED_READ_BYTES_MIN) {
    const rest: Buffer[] = [first.value.bytes];
    for (let n = await iterator.next(); !n.done; n = await iterator.next()) rest.push(n.value.bytes);
    // Sent as they are, not released on write: they leave the pool and the connection's count now.
    for (const bytes of rest) account.forget(bytes);
    return { header: EMPTY, payload: rest };
  }
  const piece = (p: ReadPiece): RpcPayloadPiece => ({ bytes: p.bytes, crc32c: p.crc32c, release: () => account.release(p.bytes) });
  async function* chunks(): AsyncGenerator<RpcPayloadPiece> {
    try {
      yield piece(first.value as ReadPiece);
      for (let n = await iterator.next(); !n.done; n = await iterator.next()) yield piece(n.value);
    } finally {
      await iterator.return?.();
    }
  }
  return { header: EMPTY, payload: { lengthBytes: stream.lengthBytes, chunks: chunks() } };
}

/** A whole read (wholeReadReply) reads this many of its pieces at once. */
const WHOLE_READ_PIECES_AT_ONCE = 4;

/**
 * A read served whole: every piece read (WHOLE_READ_PIECES_AT_ONCE at a time,
 * into pooled buffers) and verified before the reply, so a failure anywhere
 * (Corrupt...) is an error reply, and the reply holds only bytes read before
 * it is returned (a primary checks its lease after that: osd-service.ts).
 * From POOLED_READ_BYTES_MIN on the pieces go out as a stream with their crcs
 * (the trailer is combined, not computed again) and back to the pool once
 * written; shorter reads in one payload. Why: the replicated primary's
 * store.read() allocated a fresh buffer per read (page faults, V8's
 * mark-compacts under external memory pressure) that the rpc writer then
 * checksummed a second time.
 */
export async function wholeReadReply(store: ObjectStore, id: ObjectId, options: ReadOptions, buffers: PieceBuffers): Promise<RpcHandlerReply> {
  // A small read stays one store.read (a stream's pinning, timer and generator cost more than its bytes).
  // The object may change before the read: that only decides which way the bytes of its new version go.
  const { sizeBytes } = await store.stat(id);
  const offsetBytes = Math.min(options.offsetBytes ?? 0, sizeBytes);
  if (Math.min(options.lengthBytes ?? Infinity, sizeBytes - offsetBytes) < POOLED_READ_BYTES_MIN) return { header: EMPTY, payload: [await store.read(id, options)] };
  const stream = await store.readStream(id, {
    ...options,
    pieceBytes: PIECE_BYTES,
    allocate: buffers.take,
    readAhead: { piecesMax: WHOLE_READ_PIECES_AT_ONCE, allocate: buffers.take },
    unused: (bytes) => buffers.give(bytes),
  });
  const pieces: ReadPiece[] = [];
  try {
    for await (const piece of stream.chunks) pieces.push(piece);
  } catch (err) {
    for (const piece of pieces) buffers.give(piece.bytes);
    throw err;
  }
  if (stream.lengthBytes < POOLED_READ_BYTES_MIN) return { header: EMPTY, payload: pieces.map((p) => p.bytes) }; // it shrank meanwhile
  async function* chunks(): AsyncGenerator<RpcPayloadPiece> {
    for (const [i, p] of pieces.entries()) {
      pieces[i] = undefined as unknown as ReadPiece;
      yield { bytes: p.bytes, crc32c: p.crc32c, release: () => buffers.give(p.bytes) };
    }
  }
  return { header: EMPTY, payload: { lengthBytes: stream.lengthBytes, chunks: chunks() } };
}

/**
 * Buffers for streamed read pieces, reused once the socket has written them.
 * Why: a 4 MiB read allocated four fresh 1 MiB buffers, and that churn of
 * memory outside V8's heap made V8 run a full mark-compact every few reads
 * (docs/store.md). A buffer is only reused after release (the socket's write
 * callback), so no bytes still being sent are overwritten; a piece never
 * released is simply garbage. Pieces under half the size are not pooled.
 */
export class PieceBuffers {
  private readonly free: ArrayBuffer[] = [];
  private readonly mine = new WeakSet<ArrayBuffer>();

  constructor(
    private readonly pieceBytes: number,
    private readonly freeMax: number,
  ) {}

  readonly take = (lengthBytes: number): Buffer => {
    if (lengthBytes > this.pieceBytes || lengthBytes < this.pieceBytes / 2) return Buffer.allocUnsafe(lengthBytes);
    let memory = this.free.pop();
    if (memory === undefined) {
      // Not zero-filled (new ArrayBuffer is): the bytes are read over before anyone sees them.
      memory = Buffer.allocUnsafeSlow(this.pieceBytes).buffer as ArrayBuffer;
      this.mine.add(memory);
    }
    return Buffer.from(memory, 0, lengthBytes);
  };

  give(bytes: Buffer): void {
    const memory = bytes.buffer;
    if (memory instanceof ArrayBuffer && this.mine.has(memory) && this.free.length < this.freeMax && !this.free.includes(memory)) this.free.push(memory);
  }
}

/**
 * The bytes of one connection's streamed read replies held in piece buffers:
 * read from disk and not yet written by its socket (or, while a read starts,
 * reserved for its first piece). Why: the connection sends one reply at a
 * time, and a stream read its next 1 MiB piece only when the socket had
 * taken the previous one, so the disk waited for the socket and the socket
 * for the disk; while 64 queued replies each held their first piece, and the
 * buffer pool (32) churned. Now, within bytesMax
 * (limits.connectionReadAheadBytesMax):
 * - a streamed read starts (reserves its first piece) only while the
 *   connection holds less than bytesMax; later ones wait, in arrival order,
 *   for the socket to write what is held (so the next replies are prepared
 *   while the current one is on the socket, a bounded number of them);
 * - a stream reads its following pieces ahead, at once, while the count has
 *   room (ReadAhead.allocate refuses beyond it);
 * - the piece a stream being sent asks for is always read, beyond the count
 *   if need be: a reply never waits for bytes held by replies queued behind
 *   it, so this cannot deadlock. The count exceeds bytesMax by at most that
 *   one piece.
 * A piece comes back on the socket's write callback, or when the stream that
 * read it ends without sending it (ReadStreamOptions.unused).
 */
class ReadAheadAccount {
  heldBytes = 0;
  readonly readAhead: ReadAhead;
  private readonly lent = new WeakSet<Buffer>();
  private readonly waiting: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private closed: Error | null = null;

  constructor(
    private readonly buffers: PieceBuffers,
    private readonly bytesMax: number,
    private readonly stats: ReadAheadStats | undefined,
  ) {
    this.readAhead = { piecesMax: 1 + Math.floor(bytesMax / PIECE_BYTES), allocate: (lengthBytes) => (this.heldBytes + lengthBytes > this.bytesMax ? null : this.lend(lengthBytes, true)) };
  }

  /**
   * Waits (in arrival order) until the connection holds less than bytesMax
   * (or nothing), then reserves one piece for the read about to start; its
   * first allocate() takes the reservation. Rejects once the connection closed.
   */
  async start(): Promise<StreamBuffers> {
    if (this.closed !== null) throw this.closed;
    if (this.waiting.length === 0 && this.hasRoom()) this.heldBytes += PIECE_BYTES;
    // wake() reserves the piece for us before it resolves.
    else await new Promise<void>((resolve, reject) => this.waiting.push({ resolve, reject }));
    let reserved = true;
    return {
      allocate: (lengthBytes) => {
        if (reserved) {
          reserved = false;
          this.heldBytes -= PIECE_BYTES;
        }
        return this.lend(lengthBytes, false);
      },
      /** The read failed before its first piece: the reservation goes back. */
      cancel: () => {
        if (!reserved) return;
        reserved = false;
        this.heldBytes -= PIECE_BYTES;
        this.wake();
      },
    };
  }

  /** A piece is done with (written by the socket, or never sent): its buffer goes back to the pool, its bytes to the count. */
  readonly release = (bytes: Buffer): void => {
    this.forget(bytes);
    this.buffers.give(bytes);
  };

  /** A piece sent as an in-memory payload: no longer counted (its buffer is not reused). */
  forget(bytes: Buffer): void {
    if (!this.lent.delete(bytes)) return;
    this.heldBytes -= bytes.byteLength;
    this.wake();
  }

  private hasRoom(): boolean {
    return this.heldBytes === 0 || this.heldBytes + PIECE_BYTES <= this.bytesMax;
  }

  private lend(lengthBytes: number, ahead: boolean): Buffer {
    const bytes = this.buffers.take(lengthBytes);
    this.lent.add(bytes);
    this.heldBytes += lengthBytes;
    if (this.stats) {
      if (ahead) this.stats.piecesReadAhead++;
      this.stats.peakBytes = Math.max(this.stats.peakBytes, this.heldBytes);
    }
    return bytes;
  }

  /** The connection closed: reads waiting to start fail with its reason. */
  close(reason: Error): void {
    this.closed = reason;
    for (const w of this.waiting.splice(0)) w.reject(reason);
  }

  /** Starts waiting reads, in order, while there is room: each one's first piece is reserved here, before it resumes. */
  private wake(): void {
    while (this.waiting.length > 0 && this.hasRoom()) {
      this.heldBytes += PIECE_BYTES;
      this.waiting.shift()!.resolve();
    }
  }
}

interface StreamBuffers {
  allocate: (lengthBytes: number) => Buffer;
  cancel: () => void;
}

/** What read-ahead did, for tests and diagnostics: the most bytes one connection held (ReadAheadAccount), and pieces read ahead. */
export interface ReadAheadStats {
  peakBytes: number;
  piecesReadAhead: number;
}

export interface StoreHandlerOptions {
  readOnly?: boolean;
  /** The piece buffers read replies use (default a pool of its own; a daemon shares one with its osd handler). */
  buffers?: PieceBuffers;
  /** Bytes read ahead of one connection's socket (default limits.connectionReadAheadBytesMax; 0: none). */
  readAheadBytesMax?: number;
  readAheadStats?: ReadAheadStats;
}

/** A daemon's pool of read piece buffers (for wholeReadReply). */
export function pieceBuffers(): PieceBuffers {
  return new PieceBuffers(PIECE_BYTES, FREE_PIECES_MAX);
}

export function storeHandler(store: ObjectStore, options: StoreHandlerOptions = {}): RpcHandler {
  const pieces = options.buffers ?? pieceBuffers();
  const readAheadBytesMax = options.readAheadBytesMax ?? limits.connectionReadAheadBytesMax;
  // By the connection's signal (every connection has its own; in-process transports share a connection id).
  const accounts = new WeakMap<AbortSignal, ReadAheadAccount>();
  /** The connection's account; reads waiting in it fail when the connection closes (its handlers' signal aborts). */
  const accountOf = (signal: AbortSignal): ReadAheadAccount => {
    let account = accounts.get(signal);
    if (account === undefined) {
      const created = new ReadAheadAccount(pieces, readAheadBytesMax, options.readAheadStats);
      accounts.set(signal, created);
      const onAbort = (): void => created.close(signal.reason instanceof Error ? signal.reason : new TesseraError('Closed', 'connection closed'));
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      account = created;
    }
    return account;
  };
  return async ({ op, header, payload, signal }): Promise<RpcHandlerReply> => {
    if (options.readOnly === true && op === m.StoreOpcode.transact) {
      throw new TesseraError('NotSupported', 'this daemon serves its store read-only; writes go through placement groups');
    }
    switch (op) {
      case m.StoreOpcode.ping:
        return { header: m.encodePingReply(store.identity) };
      case m.StoreOpcode.transact:
        await store.transact(m.decodeTransact(header, payload));
        return { header: EMPTY };
      case m.StoreOpcode.read: {
        const { id, options } = m.decodeRead(header);
        // Large reads stream (disk and network overlap), small ones go in one piece.
        if (options.lengthBytes !== undefined && options.lengthBytes < POOLED_READ_BYTES_MIN) return { header: EMPTY, payload: [await store.read(id, options)] };
        const account = accountOf(signal);
        const buffers = await account.start();
        try {
          const stream = await store.readStream(id, { ...options, pieceBytes: PIECE_BYTES, allocate: buffers.allocate, readAhead: account.readAhead, unused: account.release });
          return await readReply(stream, account);
        } finally {
          buffers.cancel();
        }
      }
      case m.StoreOpcode.stat:
        return { header: m.encodeStat(await store.stat(m.decodeId(header))) };
      case m.StoreOpcode.getXattrs:
        return { header: m.encodeXattrs(await store.getXattrs(m.decodeId(header))) };
      case m.StoreOpcode.omapGet: {
        const { id, keys } = m.decodeOmapGet(header);
        return { header: m.encodeOmapValues(await store.omapGet(id, keys)) };
      }
      case m.StoreOpcode.omapList: {
        const { id, options } = m.decodeOmapList(header);
        return { header: m.encodeOmapPage(await store.omapList(id, options)) };
      }
      case m.StoreOpcode.listObjects:
        return { header: m.encodeObjectPage(await store.listObjects(m.decodeListObjects(header))) };
      case m.StoreOpcode.statfs:
        return { header: m.encodeSpace(await store.statfs()) };
      default:
        throw new TesseraError('NotSupported', `unknown operation ${op}`);
    }
  };
}
