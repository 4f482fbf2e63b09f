/**
 * Group commit, pipelined in two stages:
 *   A. prepare: load the records a group touches, apply its transactions,
 *      build its metadata batch, and append one log record (its data, then
 *      its metadata: log.ts) to the active segment with one fdatasync: from
 *      here on the group is durable;
 *   B. commit: write the metadata batch to the KvStore (synced only when a
 *      checkpoint is due), apply it in memory, acknowledge the transactions.
 * Stage A of group N+1 runs while stage B of group N runs; both stages run in
 * group order, so metadata batches land in the order they were prepared.
 * Group N+1 is prepared on top of group N's results, which stage A records in
 * a pending overlay (records, segment records, counters, omap changes) until
 * stage B applies them.
 *
 * Checkpoints: a synced KvStore write records where the log must be replayed
 * from after a crash. One is due every checkpointIntervalMs or
 * checkpointLogBytes, and before any segment file may be deleted (so replay
 * never needs a deleted segment).
 *
 * Failure handling: a transaction that fails while being prepared is rejected
 * alone. If appending the record fails (no space, I/O error), that group's
 * segment bytes are cut back and its transactions fail; nothing changed. If a
 * metadata write fails, the store can no longer know what is on disk: it
 * fails itself (every later call errors) and the next open recovers.
 */
import { assert } from '../lib/assert.js';
import { toTesseraError } from '../lib/errors.js';
import { objectSortKey } from '../lib/hash.js';
import type { AnyOp, BatchEnv, NewBlob, ObjectSlot } from './batch.js';
import { BatchState, slotKey, TxnState } from './batch.js';
import { checkExtentMap } from './extents.js';
import type { KvOp } from './kv.js';
import { objectKey, omapKey, purgeKey, segmentKey, singletonKey } from './keys.js';
import type { Onode, SegmentRecord, StoreCounters } from './records.js';
import { encodeCounters, encodeOnode, encodeSegment } from './records.js';
import type { Reservation } from './segments.js';
import { encodeMeta, encodePosition, encodeRecordHeader, metaLength, RECORD_HEADER_BYTES, type RecordPosition } from './log.js';
import type { StoreCore } from './core.js';
import type { StoreOp } from './types.js';

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
  /** Where the record after this group's goes: the replay position a checkpoint after this group records. */
  end: RecordPosition;
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
export const checkpointKey = singletonKey('checkpoint');

/** How often the KvStore is synced (a checkpoint), bounding what recovery replays. */
export interface CheckpointPolicy {
  intervalMs: number;
  logBytes: number;
}

/** A data op as check() applies it: it creates its object; what it writes decides no condition. */
function withoutData(op: StoreOp): StoreOp {
  switch (op.type) {
    case 'write':
    case 'writeFull':
    case 'append':
    case 'truncate':
    case 'zero':
      return { type: 'create', id: op.id };
    default:
      return op;
  }
}

function liveBySegment(o: Onode | null): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of o?.extents ?? []) m.set(e.blob.segmentId, (m.get(e.blob.segmentId) ?? 0) + e.lengthBytes);
  return m;
}

export class Committer {
  readonly stats: CommitStats = { groups: 0, transactions: 0, appendedBytes: 0, loadMs: 0, prepareMs: 0, dataSyncMs: 0, metaSyncMs: 0, pipelinedGroups: 0 };
  private readonly queue: QueuedTxn[] = [];
  private queuedBytes = 0;
  private running = false;
  /** Resolves when the queue drains (for close). */
  private idle: Promise<void> = Promise.resolve();
  private markIdle: () => void = () => undefined;
  /** The loop waiting for the next submission. */
  private readonly waiters: Array<() => void> = [];
  /** Submissions waiting for room in the queue, in submission order (bounded by the callers' in-flight limits). */
  private readonly admission: QueuedTxn[] = [];
  private lastCheckpointMs: number;
  private loggedSinceCheckpoint = 0;

  constructor(
    private readonly core: StoreCore,
    private readonly checkpoints: CheckpointPolicy = { intervalMs: 500, logBytes: 128 * 1024 * 1024 },
  ) {
    this.lastCheckpointMs = core.io.clock.monotonicMs();
  }

  submit(ops: readonly AnyOp[], bytes: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const txn: QueuedTxn = { ops, bytes, resolve, reject };
      // Backpressure: wait (bounded by the queue limits) rather than queue without end; behind anyone already waiting.
      if (this.admission.length > 0 || !this.fits(txn)) this.admission.push(txn);
      else this.enqueue(txn);
    });
  }

  private fits(txn: QueuedTxn): boolean {
    const l = this.core.limits;
    return this.queue.length < l.commitQueueTxnsMax && (this.queuedBytes + txn.bytes <= l.commitQueueBytesMax || this.queue.length === 0);
  }

  private enqueue(txn: QueuedTxn): void {
    this.queue.push(txn);
    this.queuedBytes += txn.bytes;
    if (!this.running) this.start();
    else for (const w of this.waiters.splice(0)) w();
  }

  /**
   * Moves waiting transactions into the queue strictly in submission order while they fit: a small transaction
   * never overtakes a large one waiting for room (a pg submits its versions in order and relies on them
   * committing in that order; overtaken, a crash between the two groups would leave a gap in its log).
   */
  private admit(): void {
    while (this.admission.length > 0 && this.fits(this.admission[0]!)) {
      const txn = this.admission.shift()!;
      try {
        this.core.checkUsable();
      } catch (err) {
        txn.reject(toTesseraError(err));
        continue;
      }
      this.enqueue(txn);
    }
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
    this.admit();
    return group;
  }

  /** Resolves at the next submit (the loop waits on it while a commit runs and the queue is empty). */
  private nextSubmission(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** At most one group in stage A and one in stage B at any time. */
  private async loop(): Promise<void> {
    let inCommit: Promise<void> | null = null;
    let committing = false;
    try {
      for (;;) {
        if (this.queue.length === 0) {
          if (!committing) break;
          // Transactions acknowledged by the last group come back here soon: take them while it commits.
          await Promise.race([inCommit, this.nextSubmission()]);
          continue;
        }
        // Let every submitter that is about to join (continuations of the group just acknowledged) do so.
        await this.core.io.clock.yield();
        const group = this.takeGroup();
        if (committing) this.stats.pipelinedGroups++;
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
          // Durable in the log: visible to readers (through the pending overlay) and acknowledged now;
          // stage B moves it into the KvStore and the cache.
          this.core.pending.add(g.batch, g.segmentUpdates, g.counters);
          for (const t of g.accepted) t.resolve();
          committing = true;
          const mine = { done: Promise.resolve() };
          mine.done = (async () => {
            if (previous) await previous;
            await this.commitGroup(g);
            if (inCommit === mine.done) committing = false;
          })();
          inCommit = mine.done;
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

  /** What a group's transactions are applied with; counters is the group's copy (nids come from it). */
  private batchEnv(counters: StoreCounters): BatchEnv {
    const core = this.core;
    return {
      nowMs: core.io.clock.nowMs(),
      inlineDataBytesMax: core.limits.inlineDataBytesMax,
      blobBytesMax: core.limits.blobBytesMax,
      xattrTotalBytesMax: core.limits.xattrTotalBytesMax,
      xattrCountMax: core.limits.xattrCountMax,
      txnOmapKeysMax: core.limits.txnOmapKeysMax,
      allocateNid: () => counters.nextNid++,
      scanOmapKeys: (nid, start, end, limit) => this.scanOmapKeys(nid, start, end, limit),
      omapValue: (nid, key) => this.omapValue(nid, key),
    };
  }

  /**
   * A transaction's conditions against the acknowledged state (ObjectStore.check): its ops applied in
   * order, as prepareGroup would, on a batch of their own that is then dropped. Data ops only create
   * their object (their bytes do not decide any condition). Changes nothing, appends nothing.
   */
  async check(ops: readonly StoreOp[]): Promise<void> {
    const batch = new BatchState();
    await this.loadSlots(batch, [{ ops }]);
    const counters: StoreCounters = { ...(this.core.pending.counters ?? this.core.counters) };
    const txn = new TxnState(batch, this.batchEnv(counters));
    for (const op of ops) await txn.apply(withoutData(op));
  }

  /** Stage A. Returns null when no transaction of the group survived preparation. */
  private async prepareGroup(group: QueuedTxn[]): Promise<PreparedGroup | null> {
    const core = this.core;
    const lap = this.lapTimer();
    const batch = new BatchState();
    await this.loadSlots(batch, group);
    this.stats.loadMs += lap();
    const counters: StoreCounters = { ...(this.core.pending.counters ?? core.counters) };
    const env = this.batchEnv(counters);
    const accepted: QueuedTxn[] = [];
    let appendBytes = 0;
    for (const t of group) {
      const txn = new TxnState(batch, env);
      try {
        for (const op of t.ops) await txn.apply(op);
        const bytes = txn.appendBytes();
        if (bytes > 0) core.reserveSpace(appendBytes + bytes);
        appendBytes += bytes;
        txn.mergeInto();
        accepted.push(t);
      } catch (err) {
        t.reject(toTesseraError(err));
      }
    }
    if (accepted.length === 0) return null;
    const savepoint = core.segments.savepoint();
    // A segment sealed by this group, or named by a retire request, goes now if nothing references it.
    const sealed = savepoint.activeId;
    const record = core.segments.beginRecord(RECORD_HEADER_BYTES + appendBytes, () => counters.nextSegmentId++);
    let at = record.segmentOffset + RECORD_HEADER_BYTES;
    for (const nb of batch.newBlobs) {
      nb.blob.segmentId = record.segmentId;
      nb.blob.segmentOffset = at;
      at += nb.data.length;
    }
    const sequence = counters.nextSequence++;
    if (sealed !== null && sealed !== record.segmentId) batch.retireRequests.add(sealed);
    const { ops, segmentUpdates, retire, recordEnd } = this.encode(batch, counters, record, appendBytes);
    const meta = encodeMeta(ops);
    core.segments.extendRecord(meta.length);
    assert(record.segmentOffset + RECORD_HEADER_BYTES + appendBytes + meta.length === recordEnd, 'the record is as long as planned');
    const data = batch.newBlobs.map((nb) => nb.data);
    this.stats.prepareMs += lap();
    try {
      await core.segments.writeRecord(record, [encodeRecordHeader(sequence, data, meta), ...data, meta]);
      core.noteAppended(recordEnd - record.segmentOffset);
      this.stats.dataSyncMs += lap();
    } catch (err) {
      core.segments.rollback(savepoint);
      await core.segments.truncateTo(record.segmentId, record.segmentOffset).catch(() => undefined);
      throw core.mapWriteError(err);
    }
    const end = { segmentId: record.segmentId, offset: recordEnd, sequence: sequence + 1 };
    return { batch, accepted, ops, counters, segmentUpdates, retire, appendBytes: recordEnd - record.segmentOffset, end };
  }

  /**
   * Stage B: never throws. The group is already acknowledged (durable in the
   * log); if its metadata write fails, the store fails and the next open
   * replays the log.
   */
  private async commitGroup(g: PreparedGroup): Promise<void> {
    const core = this.core;
    const lap = this.lapTimer();
    try {
      core.checkUsable();
      const checkpoint = this.checkpointDue(g);
      try {
        await core.kv.write(checkpoint ? [...g.ops, { type: 'put', key: checkpointKey, value: encodePosition(g.end) }] : g.ops, { sync: checkpoint });
        if (checkpoint) this.checkpointed();
        else this.loggedSinceCheckpoint += g.appendBytes;
      } catch (err) {
        core.fail(err);
        throw core.mapWriteError(err);
      }
    } catch (err) {
      core.fail(err);
      return;
    }
    this.stats.metaSyncMs += lap();
    this.stats.groups++;
    this.stats.transactions += g.accepted.length;
    this.stats.appendedBytes += g.appendBytes;
    this.applyCommitted(g);
    core.pending.remove(g.batch, g.segmentUpdates, g.counters);
  }

  /** A synced write is due: by time or log volume, or because segment files are about to be deleted. */
  private checkpointDue(g: PreparedGroup): boolean {
    return (
      g.retire.length > 0 ||
      this.loggedSinceCheckpoint + g.appendBytes >= this.checkpoints.logBytes ||
      this.core.io.clock.monotonicMs() - this.lastCheckpointMs >= this.checkpoints.intervalMs
    );
  }

  private checkpointed(): void {
    this.lastCheckpointMs = this.core.io.clock.monotonicMs();
    this.loggedSinceCheckpoint = 0;
  }

  /** Makes the KvStore durable up to the end of the log (close, and after recovery). Call when idle. */
  async checkpoint(): Promise<void> {
    const core = this.core;
    const active = core.segments.active;
    const position: RecordPosition = {
      segmentId: active ?? core.counters.nextSegmentId,
      offset: active === null ? 0 : core.segments.appendEnd,
      sequence: core.counters.nextSequence,
    };
    await core.kv.write([{ type: 'put', key: checkpointKey, value: encodePosition(position) }], { sync: true });
    this.checkpointed();
  }

  /** Committed omap keys in [start, end) with the changes of groups not yet committed. */
  private async scanOmapKeys(nid: number, start: Buffer, end: Buffer, limit: number): Promise<Buffer[]> {
    // Copy the pending changes before the scan: a group may commit (and leave the overlay) while it runs,
    // and the scan may or may not see that group's writes; with the copy applied on top, either way is right.
    const from = start.toString('latin1');
    const to = end.toString('latin1');
    const changes = [...(this.core.pending.omap.get(nid) ?? [])].filter(([k]) => k >= from && k < to);
    const committed = await this.core.scanOmapKeys(nid, start, end, limit);
    if (changes.length === 0) return committed;
    const keys = new Set(committed.map((k) => k.toString('latin1')));
    for (const [k, v] of changes) {
      if (v) keys.add(k);
      else keys.delete(k);
    }
    return [...keys].sort().slice(0, limit).map((k) => Buffer.from(k, 'latin1'));
  }

  /** An omap value as acknowledged: a pending group's change if any (read before awaiting), else the KvStore. */
  private async omapValue(nid: number, key: Buffer): Promise<Buffer | undefined> {
    const pending = this.core.pending.omap.get(nid);
    const k = key.toString('latin1');
    if (pending?.has(k)) return pending.get(k) ?? undefined;
    return this.core.kv.get(omapKey(nid, key));
  }

  /** Loads the record of every object the group touches: pending groups, then the cache, then one getMany. */
  private async loadSlots(batch: BatchState, group: ReadonlyArray<{ ops: readonly AnyOp[] }>): Promise<void> {
    const missing: ObjectSlot[] = [];
    for (const t of group) {
      for (const op of t.ops) {
        if (op.type === 'retireSegment') continue;
        for (const id of op.type === 'move' ? [op.id, op.to] : op.type === 'moveRange' ? [op.id, op.from] : [op.id]) {
          const k = slotKey(id);
          if (batch.slots.has(k)) continue;
          const sortKey = objectSortKey(id.name);
          const key = objectKey(id, sortKey);
          const latin = key.toString('latin1');
          const known = this.core.pending.onodes.has(latin) ? this.core.pending.onodes.get(latin) : this.core.cache.get(key);
          const slot: ObjectSlot = { key, id, sortKey, committed: known ?? null, current: known ?? null, dirty: false };
          batch.slots.set(k, slot);
          if (known === undefined) missing.push(slot);
        }
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
  private encode(batch: BatchState, counters: StoreCounters, record: Reservation, dataBytes: number) {
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
      for (const [seg, bytes] of after) liveDelta.set(seg, (liveDelta.get(seg) ?? 0) + bytes - (before.get(seg) ?? 0));
      for (const [seg, bytes] of before) if (!after.has(seg)) liveDelta.set(seg, (liveDelta.get(seg) ?? 0) - bytes);
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
        const latest = this.core.pending.segments.get(id) ?? core.segments.records.get(id) ?? { sizeBytes: 0, liveBytes: 0 };
        segmentUpdates.set(id, (r = { ...latest }));
      }
      return r;
    };
    // The active segment's record covers this group's whole log record, metadata included: its value
    // has a fixed width, so the metadata's length is known before the size is filled in.
    const active = touch(record.segmentId);
    for (const [id, delta] of liveDelta) touch(id).liveBytes += delta;
    for (const id of batch.retireRequests) if (this.core.pending.segments.has(id) || core.segments.records.has(id)) touch(id);
    const retire: number[] = [];
    const activeValue = encodeSegment(active);
    for (const [id, r] of segmentUpdates) {
      if (r.liveBytes === 0 && !core.segments.isActive(id)) {
        retire.push(id);
        ops.push({ type: 'del', key: segmentKey(id) });
      } else {
        ops.push({ type: 'put', key: segmentKey(id), value: r === active ? activeValue : encodeSegment(r) });
      }
    }
    ops.push({ type: 'put', key: countersKey, value: encodeCounters(counters) });
    const recordEnd = record.segmentOffset + RECORD_HEADER_BYTES + dataBytes + metaLength(ops);
    active.sizeBytes = Math.max(active.sizeBytes, recordEnd);
    encodeSegment(active).copy(activeValue);
    for (const [id, r] of segmentUpdates) assert(r.liveBytes >= 0 && r.liveBytes <= r.sizeBytes, `segment ${id} live bytes within its size`);
    return { ops, segmentUpdates, retire, recordEnd };
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
