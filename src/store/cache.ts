/**
 * A byte-bounded LRU of committed object records (null: known absent). Only
 * the committer fills it, with the records it loaded or committed, so it never
 * holds a record older than the latest commit; readers only look.
 */
import type { Onode } from './records.js';

export function onodeCostBytes(o: Onode | null): number {
  if (!o) return 64;
  let bytes = 200 + (o.inline?.length ?? 0);
  for (const v of o.xattrs.values()) bytes += 64 + v.length;
  for (const e of o.extents) bytes += 96 + e.blob.crcs.length * 4;
  return bytes;
}

export class OnodeCache {
  private readonly entries = new Map<string, { onode: Onode | null; costBytes: number }>();
  private totalBytes = 0;

  constructor(private readonly capacityBytes: number) {}

  get(key: Buffer): Onode | null | undefined {
    const k = key.toString('latin1');
    const e = this.entries.get(k);
    if (!e) return undefined;
    this.entries.delete(k);
    this.entries.set(k, e);
    return e.onode;
  }

  set(key: Buffer, onode: Onode | null): void {
    const k = key.toString('latin1');
    const old = this.entries.get(k);
    if (old) {
      this.totalBytes -= old.costBytes;
      this.entries.delete(k);
    }
    const costBytes = onodeCostBytes(onode);
    this.entries.set(k, { onode, costBytes });
    this.totalBytes += costBytes;
    for (const [key2, e] of this.entries) {
      if (this.totalBytes <= this.capacityBytes) break;
      this.entries.delete(key2);
      this.totalBytes -= e.costBytes;
    }
  }

  get sizeBytes(): number {
    return this.totalBytes;
  }
}
