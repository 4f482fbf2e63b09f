/**
 * Serves one disk's ObjectStore over rpc: decodes each request
 * (src/protocol/store-messages.ts), calls the store, encodes the reply.
 * Errors thrown here are TesseraErrors and reach the caller with their code.
 */
import { TesseraError } from '../lib/errors.js';
import * as m from '../protocol/store-messages.js';
import type { RpcHandler, RpcHandlerReply } from '../rpc/types.js';
import type { ObjectStore } from '../store/index.js';

const EMPTY = Buffer.alloc(0);
const STREAM_THRESHOLD_BYTES = 1024 * 1024;

export function storeHandler(store: ObjectStore, options: { readOnly?: boolean } = {}): RpcHandler {
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
        const stream = await store.readStream(id, options);
        if (stream.lengthBytes <= STREAM_THRESHOLD_BYTES) {
          const pieces: Buffer[] = [];
          for await (const piece of stream.chunks) pieces.push(piece);
          return { header: EMPTY, payload: pieces };
        }
        return { header: EMPTY, payload: stream };
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
