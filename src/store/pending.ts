/**
 * What prepared group commits changed that the KvStore and the record cache
 * do not hold yet: records, segment records, counters and omap changes of
 * groups whose log record is durable (so they are acknowledged and visible)
 * but whose metadata write has not finished. Readers and the next group's
 * preparation look here first. At most two groups are pending at a time.
 */
import type { BatchState } from './batch.js';
import type { Onode, SegmentRecord, StoreCounters } from './records.js';

export class PendingOverlay {
  /** By object key (latin1); null: removed. */
  readonly onodes = new Map<string, Onode | null>();
  readonly segments = new Map<number, SegmentRecord>();
  /** By nid, by omap key (latin1); null: removed. */
  readonly omap = new Map<number, Map<string, Buffer | null>>();
  counters: StoreCounters | null = null;

  add(batch: BatchState, segmentUpdates: Map<number, SegmentRecord>, counters: StoreCounters): void {
    for (const slot of batch.slots.values()) if (slot.dirty) this.onodes.set(slot.key.toString('latin1'), slot.current);
    for (const [id, r] of segmentUpdates) this.segments.set(id, r);
    for (const [nid, overlay] of batch.omap) {
      if (batch.purges.has(nid)) continue;
      let m = this.omap.get(nid);
      if (!m) this.omap.set(nid, (m = new Map()));
      for (const [k, v] of overlay) m.set(k, v);
    }
    this.counters = counters;
  }

  /** Drops what a group put here, unless a later group replaced it. */
  remove(batch: BatchState, segmentUpdates: Map<number, SegmentRecord>, counters: StoreCounters): void {
    for (const slot of batch.slots.values()) {
      const k = slot.key.toString('latin1');
      if (slot.dirty && this.onodes.get(k) === slot.current) this.onodes.delete(k);
    }
    for (const [id, r] of segmentUpdates) if (this.segments.get(id) === r) this.segments.delete(id);
    for (const [nid, overlay] of batch.omap) {
      const m = this.omap.get(nid);
      if (!m) continue;
      for (const [k, v] of overlay) if (m.get(k) === v) m.delete(k);
      if (m.size === 0) this.omap.delete(nid);
    }
    if (this.counters === counters) this.counters = null;
  }
}
