/**
 * A primary's answers to client reads of an erasure-coded object, under the
 * object's shared lock (so never between two shards of different versions,
 * and never an unacknowledged write): stat and xattrs from its own shard
 * (every shard carries `_s`, `_v` and the user's xattrs); data from the data
 * shards that hold the range (one shard for a small read), or from any k
 * shards with the rest rebuilt when one is missing or fails (degraded read).
 * Omap reads are refused: omap is not supported on erasure-coded pools.
 */
import { TesseraError, notFound } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { encodeObjectStat, type ReadRequest } from '../protocol/osd-messages.js';
import { encodeXattrs } from '../protocol/store-messages.js';
import type { RpcHandlerReply } from '../rpc/types.js';
import { ecOf, positionOf } from './ec-member.js';
import { decodeSize, SIZE_XATTR } from './ec-record.js';
import { readRangePieces } from './ec-shards.js';
import { shardReader } from './ec-write.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';
import { dataNs, decodeVersionValue, VERSION_XATTR } from './pg-log.js';

const EMPTY = Buffer.alloc(0);

export async function ecClientRead(osd: Osd, pg: Pg, q: ReadRequest): Promise<RpcHandlerReply> {
  if (q.kind === 'omapGet' || q.kind === 'omapList') {
    throw new TesseraError('NotSupported', 'omap is not supported on erasure-coded pools (keep bucket indexes and directories on a replicated pool)');
  }
  const ec = ecOf(pg);
  const unlock = await ec.locks.acquire(q.object, 'shared', limits.ecWaitMsMax);
  try {
    const id = { ns: dataNs(pg.pool.id, positionOf(osd, pg)), name: q.object };
    const x = await osd.store.getXattrs(id);
    switch (q.kind) {
      case 'stat': {
        const s = await osd.store.stat(id);
        const v = x.get(VERSION_XATTR);
        const xattrCount = [...x.keys()].filter((k) => !k.startsWith('_')).length;
        return { header: encodeObjectStat({ sizeBytes: decodeSize(x.get(SIZE_XATTR)), mtimeMs: s.mtimeMs, xattrCount, version: v ? decodeVersionValue(v) : { epoch: 0, version: 0 } }) };
      }
      case 'xattrs':
        for (const k of [...x.keys()]) if (k.startsWith('_')) x.delete(k);
        return { header: encodeXattrs(x) };
      case 'data': {
        const size = decodeSize(x.get(SIZE_XATTR));
        const offset = q.options.offsetBytes ?? 0;
        const length = Math.max(0, Math.min(q.options.lengthBytes ?? size, size - offset));
        if (length > limits.readBytesMax) throw new TesseraError('LimitExceeded', `read of ${length} bytes, limit ${limits.readBytesMax}`);
        return { header: EMPTY, payload: await readRangePieces(shardReader(osd, pg), q.object, offset, length) };
      }
    }
  } catch (err) {
    if ((err as { code?: string }).code === 'NotFound') throw notFound(`object ${q.object} does not exist`);
    throw err;
  } finally {
    unlock();
  }
}
