/**
 * Group commit: transactions queue here; one group at a time is prepared,
 * its data appended to segments with one writev + fdatasync per segment, and
 * its metadata written as one synced KvStore batch. Only then are the
 * group's transactions acknowledged, and only then does the in-memory state
 * (record cache, segment records, counters) change.
 *
 * Failure handling: a transaction that fails while being prepared is rejected
 * alone. If appending data fails (no space, I/O error), the group's segment
 * bytes are cut back and every transaction in it fails; nothing changed. If
 * the metadata batch fails, the store can no longer know what is on disk: it
 * fails itself (every later call errors) and the next open recovers.
 */
import { assert } from '../lib/assert.js';
import { toTesseraError } from '../lib/errors.js';
import { objectSortKey } from '../lib/hash.js';
import type { BatchEnv, NewBlob, ObjectSlot } from './batch.js';
import { BatchState, slotKey, TxnState } from './batch.js';
import { checkExtentMap } from './extents.js';
import type { KvOp } from './kv.js';
import { objectKey, omapKey, purgeKey, segmentKey, segmentRefKey, singletonKey } from './keys.js';
import type { Onode, SegmentRecord, StoreCounters } from './records.js';
import { encodeCounters, encodeOnode, encodeSegment } from './records.js';
import type { PendingAppend } from './segments.js';
import type { AnyOp } from './batch.js';
import type { StoreCore } from './core.js';

interface QueuedTxn {
  ops: readonly AnyOp[];
  bytes: number;
  /** Data the transaction appends counts against free space; removes never do. */
  resolve: () => void;
  reject: (err: unknown) => void;
}

export const countersKey = singletonKey('counters');

function liveBySegment(o: Onode | null): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of o?.extents ?? []) m.set(e.blob.segmentId, (m.get(e.blob.segmentId) ?? 0) + e.lengthBytes);
  return m;
}

/** Cumulative group-commit figures (for metrics and benchmarks). */
export interface CommitStats {
  groups: number;
  transactions: number;
  appendedBytes: number;
  loadMs: number;
  prepareMs: number;
  dataSyncMs: number;
  metaSyncMs: number;
}

export class Committer {
  readonly stats: CommitStats = { groups: 0, transactions: 0, appendedBytes: 0, loadMs: 0, prepareMs: 0, dataSyncMs: 0, metaSyncMs: 0 };
  private readonly queue: QueuedTxn[] = [];
  private queuedBytes = 0;
  private running = false;
  /** Resolves when the queue drains (for close). */
  private idle: Promise<void> = Promise.resolve();
  private markIdle: () => void = () => undefined;
  private readonly waiters: Array<() => void> = [];

  constructor(private readonly core: StoreCore) {}

  get queuedTransactions(): number {
    return this.queue.length;
  }

  async submit(ops: readonly AnyOp[], bytes: number): Promise<void> {
    const l = this.core.limits;
    // Backpressure: wait (bounded by the queue limits) rather than queue without end.
    while (this.queue.length >= l.commitQueueTxnsMax || (this.queuedBytes + bytes > l.commitQueueBytesMax && this.queue.length > 0)) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
      this.core.checkUsable();
    }
    const done = new Promise<void>((resolve, reject) => {
      this.queue.push({ ops, bytes, resolve, reject });
    });
    this.queuedBytes += bytes;
    if (!this.running) this.start();
    return done;
  }

  whenIdle(): Promise<void> {
    return this.idle;
  }

  private start(): void {
    this.running = true;
    this.idle = new Promise((resolve) => (this.markIdle = resolve));
    void this.loop();
  }

  private takeGroup(): QueuedTxn[] {
    const l = this.core.limits;
    const group: QueuedTxn[] = [];
    let bytes = 0;
    while (this.queue.length > 0 && group.length < l.groupCommitTxnsMax) {
      const next = this.queue[0]!;
      if (group.length > 0 && bytes + next.bytes > l.groupCommitBytesMax) break;
      this.queue.shift();
      this.queuedBytes -= next.bytes;
      bytes += next.bytes;
      group.push(next);
    }
    for (const w of this.waiters.splice(0)) w();
    return group;
  }

  private async loop(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        // Let every submitter that is about to join (continuations of the group just acknowledged) do so.
        await this.core.io.clock.yield();
        const group = this.takeGroup();
        try {
          this.core.checkUsable();
          await this.commitGroup(group);
        } catch (err) {
          for (const t of group) t.reject(toTesseraError(err));
        }
      }
    } finally {
      this.running = false;
      this.markIdle();
    }
  }

  private async commitGroup(group: QueuedTxn[]): Promise<void> {
    const core = this.core;
    const clock = core.io.clock;
    const stats = this.stats;
    let t = clock.monotonicMs();
    const lap = (): number => {
      const now = clock.monotonicMs();
      const elapsed = now - t;
      t = now;
      return elapsed;
    };
    const batch = new BatchState();
    await this.loadSlots(batch, group);
    stats.loadMs += lap();
    const counters: StoreCounters = { ...core.counters };
    const env: BatchEnv = {
      nowMs: core.io.clock.nowMs(),
      inlineDataBytesMax: core.limits.inlineDataBytesMax,
      blobBytesMax: core.limits.blobBytesMax,
      xattrTotalBytesMax: core.limits.xattrTotalBytesMax,
      xattrCountMax: core.limits.xattrCountMax,
      txnOmapKeysMax: core.limits.txnOmapKeysMax,
      allocateNid: () => counters.nextNid++,
      scanOmapKeys: (nid, start, end, limit) => core.scanOmapKeys(nid, start, end, limit),
    };
    const savepoint = core.segments.savepoint();
    const newSegments = new Set<number>();
    const appends: PendingAppend[] = [];
    let appendBytes = 0;
    const place = (nb: NewBlob): void => {
      const r = core.segments.reserve(nb.data.length, () => counters.nextSegmentId++);
      if (r.isNew) newSegments.add(r.segmentId);
      nb.blob.segmentId = r.segmentId;
      nb.blob.segmentOffset = r.segmentOffset;
      appends.push({ segmentId: r.segmentId, segmentOffset: r.segmentOffset, data: nb.data });
    };
    const accepted: QueuedTxn[] = [];
    for (const t of group) {
      const txn = new TxnState(batch, env);
      try {
        for (const op of t.ops) await txn.apply(op);
        const bytes = txn.appendBytes();
        if (bytes > 0) core.reserveSpace(appendBytes + bytes);
        appendBytes += bytes;
        txn.mergeInto(place);
        accepted.push(t);
      } catch (err) {
        t.reject(toTesseraError(err));
      }
    }
    if (accepted.length === 0) return;
    const { ops, segmentUpdates, retire } = this.encode(batch, counters, appends);
    stats.prepareMs += lap();
    if (appends.length > 0) {
      try {
        await core.segments.writeDurably(appends, newSegments);
        core.noteAppended(appendBytes);
        stats.dataSyncMs += lap();
      } catch (err) {
        core.segments.rollback(savepoint);
        await this.cutBack(appends);
        throw core.mapWriteError(err);
      }
    }
    try {
      await core.kv.write(ops, { sync: true });
    } catch (err) {
      core.fail(err);
      throw core.mapWriteError(err);
    }
    stats.metaSyncMs += lap();
    stats.groups++;
    stats.transactions += accepted.length;
    stats.appendedBytes += appendBytes;
    this.applyCommitted(batch, counters, segmentUpdates, retire);
    for (const txn of accepted) txn.resolve();
  }

  private async cutBack(appends: readonly PendingAppend[]): Promise<void> {
    const starts = new Map<number, number>();
    for (const a of appends) starts.set(a.segmentId, Math.min(starts.get(a.segmentId) ?? a.segmentOffset, a.segmentOffset));
    for (const [id, offset] of starts) await this.core.segments.truncateTo(id, offset).catch(() => undefined);
  }

  /** Loads the committed record of every object the group touches: cache first, then one getMany. */
  private async loadSlots(batch: BatchState, group: readonly QueuedTxn[]): Promise<void> {
    const missing: ObjectSlot[] = [];
    for (const t of group) {
      for (const op of t.ops) {
        const k = slotKey(op.id);
        if (batch.slots.has(k)) continue;
        const sortKey = objectSortKey(op.id.name);
        const key = objectKey(op.id, sortKey);
        const cached = this.core.cache.get(key);
        const slot: ObjectSlot = { key, id: op.id, sortKey, committed: cached ?? null, current: cached ?? null, dirty: false };
        batch.slots.set(k, slot);
        if (cached === undefined) missing.push(slot);
      }
    }
    if (missing.length === 0) return;
    const values = await this.core.kv.getMany(missing.map((s) => s.key));
    missing.forEach((slot, i) => {
      const v = values[i];
      const onode = v ? this.core.decode(v, slot.id) : null;
      slot.committed = onode;
      slot.current = onode;
    });
  }

  /** Builds the group's metadata batch. */
  private encode(batch: BatchState, counters: StoreCounters, appends: readonly PendingAppend[]) {
    const core = this.core;
    const ops: KvOp[] = [];
    const liveDelta = new Map<number, number>();
    for (const slot of batch.slots.values()) {
      if (!slot.dirty) continue;
      const { committed, current } = slot;
      if (current) {
        checkExtentMap(current.extents, current.sizeBytes);
        ops.push({ type: 'put', key: slot.key, value: encodeOnode(current) });
      } else if (committed) {
        ops.push({ type: 'del', key: slot.key });
      }
      if (!committed && current) counters.objects++;
      if (committed && !current) counters.objects--;
      counters.logicalBytes += (current?.sizeBytes ?? 0) - (committed?.sizeBytes ?? 0);
      const before = liveBySegment(committed);
      const after = liveBySegment(current);
      for (const [seg, bytes] of after) {
        liveDelta.set(seg, (liveDelta.get(seg) ?? 0) + bytes - (before.get(seg) ?? 0));
        if (!before.has(seg)) ops.push({ type: 'put', key: segmentRefKey(seg, slot.key), value: Buffer.alloc(0) });
      }
      for (const [seg, bytes] of before) {
        if (after.has(seg)) continue;
        liveDelta.set(seg, (liveDelta.get(seg) ?? 0) - bytes);
        ops.push({ type: 'del', key: segmentRefKey(seg, slot.key) });
      }
    }
    for (const [nid, overlay] of batch.omap) {
      if (batch.purges.has(nid)) continue;
      for (const [k, v] of overlay) {
        const key = omapKey(nid, Buffer.from(k, 'latin1'));
        ops.push(v ? { type: 'put', key, value: v } : { type: 'del', key });
      }
    }
    for (const nid of batch.purges) ops.push({ type: 'put', key: purgeKey(nid), value: Buffer.alloc(0) });
    const segmentUpdates = new Map<number, SegmentRecord>();
    const touch = (id: number): SegmentRecord => {
      let r = segmentUpdates.get(id);
      if (!r) segmentUpdates.set(id, (r = { ...(core.segments.records.get(id) ?? { sizeBytes: 0, liveBytes: 0 }) }));
      return r;
    };
    for (const a of appends) {
      const r = touch(a.segmentId);
      r.sizeBytes = Math.max(r.sizeBytes, a.segmentOffset + a.data.length);
    }
    for (const [id, delta] of liveDelta) touch(id).liveBytes += delta;
    const retire: number[] = [];
    for (const [id, r] of segmentUpdates) {
      assert(r.liveBytes >= 0 && r.liveBytes <= r.sizeBytes, `segment ${id} live bytes within its size`);
      if (r.liveBytes === 0 && !core.segments.isActive(id)) {
        retire.push(id);
        ops.push({ type: 'del', key: segmentKey(id) });
      } else {
        ops.push({ type: 'put', key: segmentKey(id), value: encodeSegment(r) });
      }
    }
    ops.push({ type: 'put', key: countersKey, value: encodeCounters(counters) });
    return { ops, segmentUpdates, retire };
  }

  private applyCommitted(batch: BatchState, counters: StoreCounters, segmentUpdates: Map<number, SegmentRecord>, retire: number[]): void {
    const core = this.core;
    for (const slot of batch.slots.values()) core.cache.set(slot.key, slot.current);
    for (const [id, r] of segmentUpdates) core.segments.records.set(id, r);
    for (const id of retire) core.segments.retire(id);
    core.counters = counters;
    if (batch.purges.size > 0) core.onPurgesQueued();
    for (const slot of batch.slots.values()) {
      if (slot.dirty && slot.current && slot.current.extents.length > core.limits.extentsPerObjectMax) core.onFragmented(slot.id);
    }
  }
}
