/**
 * Group commit, pipelined in two stages:
 *   A. prepare: load the records a group touches, apply its transactions,
 *      build its metadata batch, append its data to segments and fdatasync;
 *   B. commit: write the metadata batch synced, then apply it in memory and
 *      acknowledge the group's transactions.
 * Stage A of group N+1 runs while stage B of group N runs; both stages run in
 * group order, so metadata batches land in the order they were prepared.
 * Group N+1 is prepared on top of group N's results, which stage A records in
 * a pending overlay (records, segment records, counters, omap changes) until
 * stage B applies them.
 *
 * Failure handling: a transaction that fails while being prepared is rejected
 * alone. If appending data fails (no space, I/O error), that group's segment
 * bytes are cut back and its transactions fail; nothing changed. If a metadata
 * batch fails, the store can no longer know what is on disk: it fails itself
 * (every later call errors) and the next open recovers.
 */
import { assert } from '../lib/assert.js';
import { toTesseraError } from '../lib/errors.js';
import { objectSortKey } from '../lib/hash.js';
import type { AnyOp, BatchEnv, NewBlob, ObjectSlot } from './batch.js';
import { BatchState, slotKey, TxnState } from './batch.js';
import { checkExtentMap } from './extents.js';
import type { KvOp } from './kv.js';
import { objectKey, omapKey, purgeKey, segmentKey, segmentRefKey, singletonKey } from './keys.js';
import type { Onode, SegmentRecord, StoreCounters } from './records.js';
import { encodeCounters, encodeOnode, encodeSegment } from './records.js';
import type { PendingAppend } from './segments.js';
import type { StoreCore } from './core.js';

interface QueuedTxn {
  ops: readonly AnyOp[];
  bytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** A group that passed stage A. */
interface PreparedGroup {
  batch: BatchState;
  accepted: QueuedTxn[];
  ops: KvOp[];
  counters: StoreCounters;
  segmentUpdates: Map<number, SegmentRecord>;
  retire: number[];
  appendBytes: number;
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
  /** Groups prepared while the previous group was still committing. */
  pipelinedGroups: number;
}

export const countersKey = singletonKey('counters');

function liveBySegment(o: Onode | null): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of o?.extents ?? []) m.set(e.blob.segmentId, (m.get(e.blob.segmentId) ?? 0) + e.lengthBytes);
  return m;
}

/** What prepared groups changed and stage B has not applied yet. */
class PendingOverlay {
  readonly onodes = new Map<string, Onode | null>();
  readonly segments = new Map<number, SegmentRecord>();
  readonly omap = new Map<number, Map<string, Buffer | null>>();
  counters: StoreCounters | null = null;

  add(g: PreparedGroup): void {
    for (const slot of g.batch.slots.values()) if (slot.dirty) this.onodes.set(slot.key.toString('latin1'), slot.current);
    for (const [id, r] of g.segmentUpdates) this.segments.set(id, r);
    for (const [nid, overlay] of g.batch.omap) {
      let m = this.omap.get(nid);
      if (!m) this.omap.set(nid, (m = new Map()));
      for (const [k, v] of overlay) m.set(k, v);
    }
    this.counters = g.counters;
  }

  /** Drops what g put here, unless a later group replaced it. */
  remove(g: PreparedGroup): void {
    for (const slot of g.batch.slots.values()) {
      const k = slot.key.toString('latin1');
      if (slot.dirty && this.onodes.get(k) === slot.current) this.onodes.delete(k);
    }
    for (const [id, r] of g.segmentUpdates) if (this.segments.get(id) === r) this.segments.delete(id);
    for (const [nid, overlay] of g.batch.omap) {
      const m = this.omap.get(nid);
      if (!m) continue;
      for (const [k, v] of overlay) if (m.get(k) === v) m.delete(k);
      if (m.size === 0) this.omap.delete(nid);
    }
    if (this.counters === g.counters) this.counters = null;
  }
}

export class Committer {
  readonly stats: CommitStats = { groups: 0, transactions: 0, appendedBytes: 0, loadMs: 0, prepareMs: 0, dataSyncMs: 0, metaSyncMs: 0, pipelinedGroups: 0 };
  private readonly queue: QueuedTxn[] = [];
  private queuedBytes = 0;
  private running = false;
  private readonly pending = new PendingOverlay();
  /** Resolves when the queue drains (for close). */
  private idle: Promise<void> = Promise.resolve();
  private markIdle: () => void = () => undefined;
  private readonly waiters: Array<() => void> = [];

  constructor(private readonly core: StoreCore) {}

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

  /** At most one group in stage A and one in stage B at any time. */
  private async loop(): Promise<void> {
    let inCommit: Promise<void> | null = null;
    try {
      for (;;) {
        if (this.queue.length === 0) {
          if (!inCommit) break;
          await inCommit;
          inCommit = null;
          continue;
        }
        // Let every submitter that is about to join (continuations of the group just acknowledged) do so.
        await this.core.io.clock.yield();
        const group = this.takeGroup();
        if (inCommit) this.stats.pipelinedGroups++;
        let prepared: PreparedGroup | null = null;
        try {
          this.core.checkUsable();
          prepared = await this.prepareGroup(group);
        } catch (err) {
          for (const t of group) t.reject(toTesseraError(err));
        }
        const previous: Promise<void> | null = inCommit;
        if (prepared) {
          const g = prepared;
          this.pending.add(g);
          inCommit = (async () => {
            if (previous) await previous;
            await this.commitGroup(g);
          })();
        }
        if (previous) await previous;
      }
    } finally {
      this.running = false;
      this.markIdle();
    }
  }

  private lapTimer(): () => number {
    const clock = this.core.io.clock;
    let t = clock.monotonicMs();
    return () => {
      const now = clock.monotonicMs();
      const elapsed = now - t;
      t = now;
      return elapsed;
    };
  }

  /** Stage A. Returns null when no transaction of the group survived preparation. */
  private async prepareGroup(group: QueuedTxn[]): Promise<PreparedGroup | null> {
    const core = this.core;
    const lap = this.lapTimer();
    const batch = new BatchState();
    await this.loadSlots(batch, group);
    this.stats.loadMs += lap();
    const counters: StoreCounters = { ...(this.pending.counters ?? core.counters) };
    const env: BatchEnv = {
      nowMs: core.io.clock.nowMs(),
      inlineDataBytesMax: core.limits.inlineDataBytesMax,
      blobBytesMax: core.limits.blobBytesMax,
      xattrTotalBytesMax: core.limits.xattrTotalBytesMax,
      xattrCountMax: core.limits.xattrCountMax,
      txnOmapKeysMax: core.limits.txnOmapKeysMax,
      allocateNid: () => counters.nextNid++,
      scanOmapKeys: (nid, start, end, limit) => this.scanOmapKeys(nid, start, end, limit),
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
    if (accepted.length === 0) return null;
    const { ops, segmentUpdates, retire } = this.encode(batch, counters, appends);
    this.stats.prepareMs += lap();
    if (appends.length > 0) {
      try {
        await core.segments.writeDurably(appends, newSegments);
        core.noteAppended(appendBytes);
        this.stats.dataSyncMs += lap();
      } catch (err) {
        core.segments.rollback(savepoint);
        await this.cutBack(appends);
        throw core.mapWriteError(err);
      }
    }
    return { batch, accepted, ops, counters, segmentUpdates, retire, appendBytes };
  }

  /** Stage B: never throws; the group's transactions learn the outcome. */
  private async commitGroup(g: PreparedGroup): Promise<void> {
    const core = this.core;
    const lap = this.lapTimer();
    try {
      core.checkUsable();
      try {
        await core.kv.write(g.ops, { sync: true });
      } catch (err) {
        core.fail(err);
        throw core.mapWriteError(err);
      }
    } catch (err) {
      this.pending.remove(g);
      for (const t of g.accepted) t.reject(toTesseraError(err));
      return;
    }
    this.stats.metaSyncMs += lap();
    this.stats.groups++;
    this.stats.transactions += g.accepted.length;
    this.stats.appendedBytes += g.appendBytes;
    this.applyCommitted(g);
    this.pending.remove(g);
    for (const t of g.accepted) t.resolve();
  }

  private async cutBack(appends: readonly PendingAppend[]): Promise<void> {
    const starts = new Map<number, number>();
    for (const a of appends) starts.set(a.segmentId, Math.min(starts.get(a.segmentId) ?? a.segmentOffset, a.segmentOffset));
    for (const [id, offset] of starts) await this.core.segments.truncateTo(id, offset).catch(() => undefined);
  }

  /** Committed omap keys in [start, end) with the changes of groups not yet committed. */
  private async scanOmapKeys(nid: number, start: Buffer, end: Buffer, limit: number): Promise<Buffer[]> {
    // Copy the pending changes before the scan: a group may commit (and leave the overlay) while it runs,
    // and the scan may or may not see that group's writes; with the copy applied on top, either way is right.
    const from = start.toString('latin1');
    const to = end.toString('latin1');
    const changes = [...(this.pending.omap.get(nid) ?? [])].filter(([k]) => k >= from && k < to);
    const committed = await this.core.scanOmapKeys(nid, start, end, limit);
    if (changes.length === 0) return committed;
    const keys = new Set(committed.map((k) => k.toString('latin1')));
    for (const [k, v] of changes) {
      if (v) keys.add(k);
      else keys.delete(k);
    }
    return [...keys].sort().slice(0, limit).map((k) => Buffer.from(k, 'latin1'));
  }

  /** Loads the record of every object the group touches: pending groups, then the cache, then one getMany. */
  private async loadSlots(batch: BatchState, group: readonly QueuedTxn[]): Promise<void> {
    const missing: ObjectSlot[] = [];
    for (const t of group) {
      for (const op of t.ops) {
        const k = slotKey(op.id);
        if (batch.slots.has(k)) continue;
        const sortKey = objectSortKey(op.id.name);
        const key = objectKey(op.id, sortKey);
        const latin = key.toString('latin1');
        const known = this.pending.onodes.has(latin) ? this.pending.onodes.get(latin) : this.core.cache.get(key);
        const slot: ObjectSlot = { key, id: op.id, sortKey, committed: known ?? null, current: known ?? null, dirty: false };
        batch.slots.set(k, slot);
        if (known === undefined) missing.push(slot);
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
      if (!r) {
        const latest = this.pending.segments.get(id) ?? core.segments.records.get(id) ?? { sizeBytes: 0, liveBytes: 0 };
        segmentUpdates.set(id, (r = { ...latest }));
      }
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

  private applyCommitted(g: PreparedGroup): void {
    const core = this.core;
    for (const slot of g.batch.slots.values()) core.cache.set(slot.key, slot.current);
    for (const [id, r] of g.segmentUpdates) core.segments.records.set(id, r);
    for (const id of g.retire) core.segments.retire(id);
    core.counters = g.counters;
    if (g.batch.purges.size > 0) core.onPurgesQueued();
    for (const slot of g.batch.slots.values()) {
      if (slot.dirty && slot.current && slot.current.extents.length > core.limits.extentsPerObjectMax) core.onFragmented(slot.id);
    }
  }
}
