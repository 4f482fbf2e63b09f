/**
 * What a client transaction does to an erasure-coded object, decided at the
 * primary before anything is sent: the object's final existence, size and
 * xattrs, and either its whole new content (after writeFull or remove: every
 * stripe is rewritten) or the final content of just the stripes it touches
 * (read-modify-write). The same ops on a store object would give the same
 * bytes (src/store/batch.ts semantics: data ops and setXattr create the
 * object, zero never changes the size, removeXattr needs the object, ...).
 *
 * Old stripe content is read lazily through a loader, at most the partially
 * covered stripes of each op (a stripe an op overwrites whole is never read).
 * Invariant: in the stripes held and in the old object, every byte at or past
 * the current size is zero, and old bytes at or past `cutBytes` (the lowest
 * truncation) count as zeros.
 *
 * Omap ops, move and moveRange are refused (NotSupported): bucket indexes and
 * directories live on replicated pools. Xattr names starting with "_" are
 * reserved for the format (`_s`, `_v`).
 */
import { TesseraError, invalid, limitExceeded, notFound } from '../lib/errors.js';
import { assert } from '../lib/assert.js';
import { limits } from '../lib/limits.js';
import type { StoreOp } from '../store/types.js';
import type { EcLayout } from './ec-layout.js';

export interface EcObjectMeta {
  exists: boolean;
  sizeBytes: number;
  /** User xattrs (no reserved "_" names). */
  xattrs: Map<string, Buffer>;
}

export type EcPlanData =
  /** Every stripe is rewritten from this content (length = sizeBytes). */
  | { kind: 'all'; content: Buffer }
  /** Only these stripes (index -> stripeBytes of final content) are rewritten; old bytes from cutBytes on are dropped first. */
  | { kind: 'stripes'; stripes: Map<number, Buffer>; cutBytes: number | null };

export interface EcPlan {
  exists: boolean;
  /** The old object (data and xattrs) is discarded before the new state is written. */
  recreate: boolean;
  sizeBytes: number;
  xattrs: Map<string, Buffer>;
  setXattrs: Array<[string, Buffer]>;
  removeXattrs: string[];
  data: EcPlanData;
}

/** Reads old stripes (each stripeBytes long, zero past the old end). */
export type StripeLoader = (stripes: number[]) => Promise<Map<number, Buffer>>;

/** Bytes the format's own xattrs (`_s`, `_v`) may take in an object's xattr budget. */
export const RESERVED_XATTR_BYTES = 64;
export const RESERVED_XATTR_COUNT = 2;
const EMPTY = Buffer.alloc(0);

export function checkUserXattrName(name: string): void {
  if (name.startsWith('_')) throw invalid(`xattr names starting with "_" are reserved (${name})`);
}

class PlanBuilder {
  exists: boolean;
  sizeBytes: number;
  recreate: boolean;
  readonly xattrs: Map<string, Buffer>;
  /** Content mode when set: the whole object, length = sizeBytes. */
  private content: Buffer | null;
  /** content is the caller's buffer: copy before changing it. */
  private contentShared = false;
  private readonly stripes = new Map<number, Buffer>();
  private cutBytes: number;

  constructor(
    private readonly old: EcObjectMeta,
    private readonly layout: EcLayout,
    private readonly load: StripeLoader,
  ) {
    this.exists = old.exists;
    this.sizeBytes = old.exists ? old.sizeBytes : 0;
    this.recreate = !old.exists;
    this.xattrs = new Map(old.exists ? old.xattrs : []);
    this.content = old.exists ? null : EMPTY;
    this.cutBytes = this.sizeBytes;
  }

  async apply(op: StoreOp): Promise<void> {
    switch (op.type) {
      case 'create':
        if (this.exists && op.exclusive) throw new TesseraError('AlreadyExists', `object ${op.id.name} exists`);
        this.exists = true;
        return;
      case 'write':
        return this.write(op.offsetBytes, op.data);
      case 'append':
        return this.write(this.sizeBytes, op.data);
      case 'writeFull':
        this.exists = true;
        this.stripes.clear();
        this.content = op.data;
        this.contentShared = true;
        this.sizeBytes = op.data.length;
        return;
      case 'truncate':
        this.exists = true;
        return this.truncate(op.sizeBytes);
      case 'zero':
        this.exists = true;
        return this.zero(op.offsetBytes, op.lengthBytes);
      case 'remove':
        if (!this.exists && !op.ifExists) throw notFound(`object ${op.id.name} does not exist`);
        this.exists = false;
        this.recreate = true;
        this.xattrs.clear();
        this.stripes.clear();
        this.content = EMPTY;
        this.contentShared = false;
        this.sizeBytes = 0;
        return;
      case 'setXattr':
        checkUserXattrName(op.name);
        this.exists = true;
        this.xattrs.set(op.name, op.value);
        return;
      case 'removeXattr':
        checkUserXattrName(op.name);
        if (!this.exists) throw notFound(`object ${op.id.name} does not exist`);
        this.xattrs.delete(op.name);
        return;
      case 'assertXattr': {
        checkUserXattrName(op.name);
        const actual = (this.exists ? this.xattrs.get(op.name) : undefined) ?? null;
        const equal = actual === null || op.value === null ? actual === op.value : actual.equals(op.value);
        if (!equal) throw new TesseraError('Conflict', `xattr ${op.name} of ${op.id.name} does not hold the expected value`);
        return;
      }
      case 'assertExists':
        if (!this.exists) throw notFound(`object ${op.id.name} does not exist`);
        return;
      case 'omapSet':
      case 'omapRemoveKeys':
      case 'omapRemoveRange':
      case 'omapClear':
        throw new TesseraError('NotSupported', 'omap is not supported on erasure-coded pools (keep bucket indexes and directories on a replicated pool)');
      case 'move':
      case 'moveRange':
        throw new TesseraError('NotSupported', `${op.type} is not supported on pools`);
    }
  }

  private async write(offsetBytes: number, data: Buffer): Promise<void> {
    this.exists = true;
    if (data.length === 0) return;
    const end = offsetBytes + data.length;
    if (this.content) {
      this.ownContent(Math.max(this.sizeBytes, end));
      data.copy(this.content, offsetBytes);
      this.sizeBytes = this.content.length;
      return;
    }
    await this.touch(offsetBytes, end);
    this.copyIntoStripes(offsetBytes, data);
    this.sizeBytes = Math.max(this.sizeBytes, end);
  }

  private async zero(offsetBytes: number, lengthBytes: number): Promise<void> {
    const end = Math.min(offsetBytes + lengthBytes, this.sizeBytes);
    if (offsetBytes >= end) return;
    if (this.content) {
      this.ownContent(this.sizeBytes);
      this.content.fill(0, offsetBytes, end);
      return;
    }
    await this.touch(offsetBytes, end);
    this.fillStripes(offsetBytes, end);
  }

  private async truncate(sizeBytes: number): Promise<void> {
    if (this.content) {
      if (sizeBytes <= this.sizeBytes) this.content = this.content.subarray(0, sizeBytes);
      else this.ownContent(sizeBytes);
      this.sizeBytes = sizeBytes;
      return;
    }
    if (sizeBytes < this.sizeBytes) {
      const sb = this.layout.stripeBytes;
      if (sizeBytes % sb !== 0) await this.touch(sizeBytes, sizeBytes + 1, false);
      for (const s of [...this.stripes.keys()]) if (s * sb >= sizeBytes) this.stripes.delete(s);
      const partial = this.stripes.get(Math.floor(sizeBytes / sb));
      partial?.fill(0, sizeBytes % sb);
      this.cutBytes = Math.min(this.cutBytes, sizeBytes);
    }
    this.sizeBytes = sizeBytes;
  }

  /** Makes content a private buffer of lengthBytes (zero-extended). */
  private ownContent(lengthBytes: number): void {
    const current = this.content!;
    if (!this.contentShared && current.length === lengthBytes) return;
    const next = Buffer.alloc(lengthBytes);
    current.copy(next, 0, 0, Math.min(current.length, lengthBytes));
    this.content = next;
    this.contentShared = false;
  }

  /** Holds every stripe of [from, to): whole-covered ones as zeros (when allowed), the others with their current content. */
  private async touch(from: number, to: number, allowCovered = true): Promise<void> {
    const sb = this.layout.stripeBytes;
    const need: number[] = [];
    for (let s = Math.floor(from / sb); s <= Math.floor((to - 1) / sb); s++) {
      if (this.stripes.has(s)) continue;
      const covered = allowCovered && from <= s * sb && to >= (s + 1) * sb;
      const oldGone = s * sb >= this.cutBytes || s >= this.layout.stripeCount(this.old.sizeBytes);
      if (covered || oldGone) this.stripes.set(s, Buffer.alloc(sb));
      else need.push(s);
    }
    if (need.length === 0) return;
    const loaded = await this.load(need);
    for (const s of need) {
      const stripe = loaded.get(s);
      assert(stripe && stripe.length === sb, `stripe ${s} was loaded`);
      const cutIn = this.cutBytes - s * sb;
      if (cutIn < sb) stripe.fill(0, Math.max(0, cutIn));
      this.stripes.set(s, stripe);
    }
  }

  private copyIntoStripes(offsetBytes: number, data: Buffer): void {
    const sb = this.layout.stripeBytes;
    const end = offsetBytes + data.length;
    for (let s = Math.floor(offsetBytes / sb); s * sb < end; s++) {
      const from = Math.max(offsetBytes, s * sb);
      const to = Math.min(end, (s + 1) * sb);
      data.copy(this.stripes.get(s)!, from - s * sb, from - offsetBytes, to - offsetBytes);
    }
  }

  private fillStripes(from: number, to: number): void {
    const sb = this.layout.stripeBytes;
    for (let s = Math.floor(from / sb); s * sb < to; s++) {
      this.stripes.get(s)!.fill(0, Math.max(from, s * sb) - s * sb, Math.min(to, (s + 1) * sb) - s * sb);
    }
  }

  finish(): EcPlan {
    checkXattrBudget(this.xattrs);
    const { set, remove } = this.xattrChanges();
    const base = { exists: this.exists, recreate: this.recreate, sizeBytes: this.exists ? this.sizeBytes : 0, xattrs: this.xattrs, setXattrs: set, removeXattrs: remove };
    if (!this.exists) return { ...base, data: { kind: 'all', content: EMPTY } };
    if (this.content) return { ...base, data: { kind: 'all', content: this.content } };
    const count = this.layout.stripeCount(this.sizeBytes);
    const stripes = new Map([...this.stripes].filter(([s]) => s < count).sort((a, b) => a[0] - b[0]));
    const cutBytes = this.cutBytes < this.old.sizeBytes ? this.cutBytes : null;
    if (cutBytes !== null && cutBytes % this.layout.stripeBytes !== 0) {
      const cutStripe = Math.floor(cutBytes / this.layout.stripeBytes);
      assert(cutStripe >= count || stripes.has(cutStripe), 'the stripe a truncation cuts is rewritten');
    }
    return { ...base, data: { kind: 'stripes', stripes, cutBytes } };
  }

  private xattrChanges(): { set: Array<[string, Buffer]>; remove: string[] } {
    if (!this.exists) return { set: [], remove: [] };
    if (this.recreate) return { set: [...this.xattrs], remove: [] };
    const set = [...this.xattrs].filter(([n, v]) => !this.old.xattrs.get(n)?.equals(v));
    const remove = [...this.old.xattrs.keys()].filter((n) => !this.xattrs.has(n));
    return { set, remove };
  }
}

function checkXattrBudget(xattrs: Map<string, Buffer>): void {
  if (xattrs.size + RESERVED_XATTR_COUNT > limits.xattrCountMax) {
    throw limitExceeded(`object would have ${xattrs.size} xattrs, limit ${limits.xattrCountMax - RESERVED_XATTR_COUNT} on erasure-coded pools`);
  }
  let total = RESERVED_XATTR_BYTES;
  for (const [n, v] of xattrs) total += Buffer.byteLength(n) + v.length;
  if (total > limits.xattrTotalBytesMax) throw limitExceeded(`object's xattrs would take ${total} bytes, limit ${limits.xattrTotalBytesMax}`);
}

/** Applies a client transaction to an object's state; throws the op's error (NotFound, Conflict, ...) before anything is written. */
export async function planTransaction(old: EcObjectMeta, ops: readonly StoreOp[], layout: EcLayout, load: StripeLoader): Promise<EcPlan> {
  const builder = new PlanBuilder(old, layout, load);
  for (const op of ops) await builder.apply(op);
  return builder.finish();
}
