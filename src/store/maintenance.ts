/**
 * Background upkeep of one store, throttled so client I/O keeps priority:
 * - purge: deletes the omap entries of removed objects (queued as P records);
 * - compaction: rewrites the live data of sealed segments that are mostly
 *   dead, then the segment goes (its record removal commits with the last
 *   relocation; the file is unlinked once no reader holds it);
 * - defragmentation: rewrites objects whose extent maps grew long.
 *
 * Relocations are ordinary transactions through the committer, so a crash
 * at any point leaves either the old or the new mapping, both complete; at
 * worst a relocated copy nobody references, which compaction reclaims later.
 */
import { toTesseraError } from '../lib/errors.js';
import type { RelocateOp, RelocateSource } from './batch.js';
import { slotKey } from './batch.js';
import type { Committer } from './commit.js';
import type { StoreCore } from './core.js';
import { omapPrefix, parseObjectKey, parsePurgeKey, Prefix, prefixEnd, purgeKey } from './keys.js';
import { recordKeysOfSegment } from './log.js';
import type { Extent } from './records.js';
import type { ObjectId } from './types.js';

export interface MaintenanceOptions {
  enabled: boolean;
  intervalMs: number;
  /** A sealed segment is compacted once at least this fraction of it is dead. */
  compactDeadRatioMin: number;
  /** Bytes per second compaction and defragmentation may rewrite. */
  rewriteBytesPerSec: number;
}

const defaults: MaintenanceOptions = {
  enabled: true,
  intervalMs: 2_000,
  compactDeadRatioMin: 0.5,
  rewriteBytesPerSec: 64 * 1024 * 1024,
};

const PURGE_PAGE = 1024;
const DEFRAG_QUEUE_MAX = 1024;

export class Maintenance {
  private readonly options: MaintenanceOptions;
  private timer: ReturnType<StoreCore['io']['clock']['setTimeout']> | null = null;
  private running: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private purgesPending = true;
  private readonly defragQueue = new Map<string, ObjectId>();
  private readonly abort = new AbortController();

  constructor(
    private readonly core: StoreCore,
    private readonly committer: Committer,
    options: Partial<MaintenanceOptions>,
  ) {
    this.options = { ...defaults, ...options };
    core.onPurgesQueued = () => {
      this.purgesPending = true;
    };
    core.onFragmented = (id) => {
      if (this.defragQueue.size < DEFRAG_QUEUE_MAX) this.defragQueue.set(slotKey(id), id);
    };
  }

  start(): void {
    if (this.options.enabled) this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.core.io.clock.setTimeout(() => {
      this.running = this.tick(true)
        .catch((err) => {
          if (!this.stopped) console.error(`store ${this.core.dir}: maintenance failed: ${toTesseraError(err).message}`);
        })
        .finally(() => this.schedule());
    }, this.options.intervalMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    if (this.timer) this.core.io.clock.clearTimeout(this.timer);
    await this.running.catch(() => undefined);
  }

  /** Everything now, unthrottled: for tests and operators. */
  async runToCompletion(): Promise<{ segmentsCompacted: number; bytesMoved: number }> {
    await this.running.catch(() => undefined);
    const run = this.tick(false);
    this.running = run;
    return run;
  }

  private async tick(throttled: boolean): Promise<{ segmentsCompacted: number; bytesMoved: number }> {
    await this.core.refreshSpace();
    if (this.purgesPending) await this.purge();
    const stats = { segmentsCompacted: 0, bytesMoved: 0 };
    for (const [k, id] of this.defragQueue) {
      this.defragQueue.delete(k);
      stats.bytesMoved += await this.relocate(id, () => true, throttled);
    }
    for (const segmentId of this.compactionCandidates()) {
      if (this.stopped) break;
      stats.bytesMoved += await this.compactSegment(segmentId, throttled);
      stats.segmentsCompacted++;
    }
    return stats;
  }

  private async purge(): Promise<void> {
    this.purgesPending = false;
    const kv = this.core.kv;
    for (;;) {
      const queued = await kv.scan({ gte: Buffer.from([Prefix.purge]), lt: prefixEnd(Prefix.purge), limit: 64 });
      if (queued.length === 0) return;
      for (const [key] of queued) {
        const nid = parsePurgeKey(key);
        for (;;) {
          if (this.stopped) return;
          const rows = await kv.scan({ gte: omapPrefix(nid), lt: omapPrefix(nid + 1), limit: PURGE_PAGE });
          const ops = rows.map(([k]) => ({ type: 'del' as const, key: k }));
          if (rows.length < PURGE_PAGE) ops.push({ type: 'del', key: purgeKey(nid) });
          await kv.write(ops, { sync: false });
          if (rows.length < PURGE_PAGE) break;
        }
      }
    }
  }

  private compactionCandidates(): number[] {
    const out: Array<[number, number]> = [];
    for (const [id, r] of this.core.segments.records) {
      if (this.core.segments.isActive(id) || r.sizeBytes === 0) continue;
      if ((r.sizeBytes - r.liveBytes) / r.sizeBytes >= this.options.compactDeadRatioMin) out.push([id, r.liveBytes]);
    }
    return out.sort((a, b) => a[1] - b[1]).map(([id]) => id);
  }

  /** Relocates every extent that still lives in the segment; the objects to look at are those its log records wrote. */
  private async compactSegment(segmentId: number, throttled: boolean): Promise<number> {
    let moved = 0;
    const sizeBytes = this.core.segments.records.get(segmentId)?.sizeBytes ?? 0;
    await this.core.segments.withFile(segmentId, async (file) => {
      const seen = new Set<string>();
      for await (const keys of recordKeysOfSegment(file, sizeBytes, Prefix.object)) {
        for (const key of keys) {
          const k = key.toString('latin1');
          if (seen.has(k) || this.stopped) continue;
          seen.add(k);
          moved += await this.relocate(parseObjectKey(key).id, (e) => e.blob.segmentId === segmentId, throttled);
        }
        if (this.stopped) return;
      }
    });
    // Nothing references it any more (or never did: a segment of metadata only): let a group delete it.
    const record = this.core.segments.records.get(segmentId);
    if (record && record.liveBytes === 0 && !this.core.segments.isActive(segmentId)) {
      await this.committer.submit([{ type: 'retireSegment', segmentId }], 0);
    }
    return moved;
  }

  /** Rewrites the object's extents that match `pick` into new blobs; returns bytes moved. */
  private async relocate(id: ObjectId, pick: (e: Extent) => boolean, throttled: boolean): Promise<number> {
    const onode = await this.core.loadCommitted(id);
    if (!onode || onode.inline) return 0;
    let moved = 0;
    let sources: RelocateSource[] = [];
    let pieces: Buffer[] = [];
    let bytes = 0;
    const flush = async (): Promise<void> => {
      if (sources.length === 0) return;
      const op: RelocateOp = { type: 'relocate', id, sources, data: pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces) };
      await this.committer.submit([op], bytes);
      moved += bytes;
      if (throttled) await this.core.io.clock.sleep((bytes / this.options.rewriteBytesPerSec) * 1000, this.abort.signal).catch(() => undefined);
      sources = [];
      pieces = [];
      bytes = 0;
    };
    for (const e of onode.extents) {
      if (!pick(e) || this.stopped) continue;
      if (bytes + e.lengthBytes > this.core.limits.blobBytesMax) await flush();
      let data: Buffer | null;
      try {
        data = await this.core.segments.readBlob(e.blob, e.blobOffset, e.lengthBytes);
      } catch (err) {
        // Corrupt data stays where it is, for scrub and recovery to repair from other copies.
        console.error(`store ${this.core.dir}: not relocating ${id.ns}/${id.name} at ${e.logicalOffset}: ${toTesseraError(err).message}`);
        continue;
      }
      if (!data) continue; // its segment went meanwhile: nothing left to move
      sources.push({
        logicalOffset: e.logicalOffset,
        lengthBytes: e.lengthBytes,
        segmentId: e.blob.segmentId,
        blobSegmentOffset: e.blob.segmentOffset,
        blobOffset: e.blobOffset,
        dataOffset: bytes,
      });
      pieces.push(data);
      bytes += data.length;
    }
    await flush();
    return moved;
  }
}
