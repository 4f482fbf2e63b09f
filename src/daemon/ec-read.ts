/**
 * A primary's answers to client reads of an erasure-coded object, under the
 * object's shared lock (so never between two shards of different versions,
 * and never an unacknowledged write): stat and xattrs from its own shard
 * (every shard carries `_s`, `_v` and the user's xattrs); data from the data
 * shards that hold the range (one shard for a small read), or from any k
 * shards with the rest rebuilt when one is missing or fails (degraded read).
 * Every shard read must carry the primary's own shard's version (a shard at
 * another version is left out like a failed one, and the pg peers again),
 * and a read that overlapped the start of a peering run fails Busy: the size
 * and the bytes returned are always one version's. A shard that fails its
 * checksum is left out the same way and rebuilt afterwards (read-repairs.ts).
 * Omap reads are refused: omap is not supported on erasure-coded pools.
 */
import { TesseraError, notFound } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { encodeObjectStat, type ReadRequest } from '../protocol/osd-messages.js';
import { encodeXattrs } from '../protocol/store-messages.js';
import type { RpcHandlerReply, RpcPayload, RpcPayloadPiece } from '../rpc/types.js';
import { crc32c } from '../../native/index.js';
import type { PieceBuffers } from './store-service.js';
import type { EcLayout } from './ec-layout.js';
import { ecOf, positionOf } from './ec-member.js';
import { decodeSize, SIZE_XATTR } from './ec-record.js';
import { copyRange, rangeBuffers, readRangeBytes, readRangePieces, type RangeBytes, type ShardReader } from './ec-shards.js';
import { shardReader } from './ec-write.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';
import { dataNs, decodeVersionValue, VERSION_XATTR } from './pg-log.js';

const EMPTY = Buffer.alloc(0);

export async function ecClientRead(osd: Osd, pg: Pg, q: ReadRequest, buffers: PieceBuffers): Promise<RpcHandlerReply> {
  if (q.kind === 'omapGet' || q.kind === 'omapList') {
    throw new TesseraError('NotSupported', 'omap is not supported on erasure-coded pools (keep bucket indexes and directories on a replicated pool)');
  }
  const ec = ecOf(pg);
  const generation = ec.generation;
  const unlock = await ec.locks.acquire(q.object, 'shared', limits.ecWaitMsMax);
  try {
    // The lock may be granted after peering began (a write that held it failed): members' shards may be changing.
    checkUnchanged(pg, generation);
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
        // Every shard read must be at this shard's version: the size above and the bytes are then one version's.
        let otherVersion = false;
        const reader: ShardReader = {
          ...shardReader(osd, pg),
          version: x.get(VERSION_XATTR),
          onOtherVersion: () => (otherVersion = true),
          // Served degraded now; the bad shard is rebuilt in the background once this read lets go of the lock.
          onCorrupt: () => osd.readRepairs.request(pg, q.object),
          allocate: buffers.take,
        };
        try {
          if (length < POOLED_REPLY_BYTES_MIN) {
            const pieces = await readRangePieces(reader, q.object, offset, length);
            checkUnchanged(pg, generation);
            return { header: EMPTY, payload: pieces };
          }
          const range = await readRangeBytes(reader, q.object, offset, length);
          try {
            checkUnchanged(pg, generation);
            return { header: EMPTY, payload: pooledPayload(ec.layout, range, buffers) };
          } finally {
            // Copied out (or the read failed): the shard buffers go back at once (give ignores buffers not its own).
            for (const b of rangeBuffers(range)) buffers.give(b);
          }
        } finally {
          // Members disagree on a committed object while the pg is active: peering settles it (rebuilds the stale shards).
          if (otherVersion && ec.generation === generation && pg.state === 'active') {
            console.error(`disk ${osd.diskId}: pg ${pg.key}: object ${q.object}: shards at another version than this primary's; peering again`);
            osd.repeer(pg);
          }
        }
      }
    }
  } catch (err) {
    if ((err as { code?: string }).code === 'NotFound') throw notFound(`object ${q.object} does not exist`);
    throw err;
  } finally {
    unlock();
  }
}

/** Reply pieces of at most this many bytes (the pool's piece size). */
const REPLY_PIECE_BYTES = 1024 * 1024;
/** Shorter replies go as the shard views themselves (the in-memory payload costs less than a stream). */
const POOLED_REPLY_BYTES_MIN = REPLY_PIECE_BYTES / 2;

/**
 * The reply payload of a large read: its bytes copied from the shard reads
 * (which came from `buffers`) into pooled pieces of REPLY_PIECE_BYTES in
 * logical order, stripe unit by stripe unit with no object per unit
 * (copyRange), each checksummed once here (the frame trailer is combined
 * from those crcs), streamed and back in the pool once the socket wrote it.
 * Why: a 4 MiB read is 1024 stripe units of 4 KiB; sent as views, the socket
 * took 1024 writes and the writer checksummed them again. Copied from
 * views, each read also made 1024 piece descriptors (held across the shard
 * reads) and 1024 views first: about 5% of the daemons' CPU in EC gets
 * (perf, docs/store.md), now about 1%.
 */
function pooledPayload(layout: EcLayout, range: RangeBytes, buffers: PieceBuffers): RpcPayload {
  const out: RpcPayloadPiece[] = [];
  const end = range.offsetBytes + range.lengthBytes;
  for (let at = range.offsetBytes; at < end; ) {
    const n = Math.min(REPLY_PIECE_BYTES, end - at);
    const bytes = buffers.take(n);
    copyRange(layout, range, at, n, bytes, 0);
    out.push({ bytes, crc32c: crc32c(bytes), release: () => buffers.give(bytes) });
    at += n;
  }
  async function* chunks(): AsyncGenerator<RpcPayloadPiece> {
    for (const [i, p] of out.entries()) {
      out[i] = undefined as unknown as RpcPayloadPiece;
      yield p;
    }
  }
  return { lengthBytes: range.lengthBytes, chunks: chunks() };
}

/** Busy (the client retries) when the pg left the state the read began in: peering may be rewriting shards. */
function checkUnchanged(pg: Pg, generation: number): void {
  if (pg.state !== 'active' || ecOf(pg).generation !== generation) {
    throw new TesseraError('Busy', `pg ${pg.key} began peering during the read`);
  }
}
