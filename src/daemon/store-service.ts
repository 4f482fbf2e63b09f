/**
 * Serves one disk's ObjectStore over rpc: decodes each request
 * (src/protocol/store-messages.ts), calls the store, encodes the reply.
 * Errors thrown here are TesseraErrors and reach the caller with their code.
 */
import { TesseraError } from '../lib/errors.js';
import * as m from '../protocol/store-messages.js';
import type { RpcHandler, RpcHandlerReply, RpcPayloadPiece } from '../rpc/types.js';
import type { ObjectStore, ReadPiece } from '../store/index.js';

const EMPTY = Buffer.alloc(0);
const STREAM_THRESHOLD_BYTES = 1024 * 1024;
/** Streamed reads go out in pieces of this size... */
const PIECE_BYTES = 1024 * 1024;
/** ...whose buffers are kept for reuse, up to this many idle ones (32 MiB). */
const FREE_PIECES_MAX = 32;

/**
 * The reply to a read: the first piece is read before replying, so a read
 * that fails there (Corrupt, NotFound...) gets an error reply with its code
 * (a failure in a later piece can only close the connection: the frame is
 * already on its way). Reads of at most STREAM_THRESHOLD_BYTES go in one
 * in-memory payload; larger ones stream their pieces, each with its verified
 * crc32c (the frame trailer is combined from them, not computed again) and
 * handed back to the buffer pool once the socket is done with it.
 */
async function readReply(stream: { lengthBytes: number; chunks: AsyncIterable<ReadPiece> }, buffers: PieceBuffers): Promise<RpcHandlerReply> {
  const iterator = stream.chunks[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) return { header: EMPTY };
  if (stream.lengthBytes <= STREAM_THRESHOLD_BYTES) {
    const rest: Buffer[] = [first.value.bytes];
    for (let n = await iterator.next(); !n.done; n = await iterator.next()) rest.push(n.value.bytes);
    return { header: EMPTY, payload: rest };
  }
  const piece = (p: ReadPiece): RpcPayloadPiece => ({ bytes: p.bytes, crc32c: p.crc32c, release: () => buffers.give(p.bytes) });
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

/**
 * Buffers for streamed read pieces, reused once the socket has written them.
 * Why: a 4 MiB read allocated four fresh 1 MiB buffers, and that churn of
 * memory outside V8's heap made V8 run a full mark-compact every few reads
 * (docs/store.md). A buffer is only reused after release (the socket's write
 * callback), so no bytes still being sent are overwritten; a piece never
 * released is simply garbage. Pieces under half the size are not pooled.
 */
class PieceBuffers {
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
      memory = new ArrayBuffer(this.pieceBytes);
      this.mine.add(memory);
    }
    return Buffer.from(memory, 0, lengthBytes);
  };

  give(bytes: Buffer): void {
    const memory = bytes.buffer;
    if (memory instanceof ArrayBuffer && this.mine.has(memory) && this.free.length < this.freeMax && !this.free.includes(memory)) this.free.push(memory);
  }
}

export function storeHandler(store: ObjectStore, options: { readOnly?: boolean } = {}): RpcHandler {
  const pieces = new PieceBuffers(PIECE_BYTES, FREE_PIECES_MAX);
  return async ({ op, header, payload }): Promise<RpcHandlerReply> => {
    if (options.readOnly && op === m.StoreOpcode.transact) {
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
        if (options.lengthBytes !== undefined && options.lengthBytes <= STREAM_THRESHOLD_BYTES) return { header: EMPTY, payload: [await store.read(id, options)] };
        return readReply(await store.readStream(id, { ...options, pieceBytes: PIECE_BYTES, allocate: pieces.take }), pieces);
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
