/**
 * An ordered scan over one omap key prefix of every shard of a bucket index:
 * a k-way merge (a binary heap of the shards by their next key) in which each
 * shard keeps its own buffered page and is read again only when that page is
 * used up. seek() skips ahead (past a common prefix) inside each shard's
 * buffer first; only a shard whose buffer runs out is read again, from the
 * seek target (so the keys it still has under the skipped prefix are never
 * read). Every entry is read at most once; a listing reads each shard about
 * once plus once per page used up, never once per common prefix.
 *
 * Memory: at most shards x pageEntries entries (callers size pageEntries by
 * limits.s3IndexListEntriesMax / shards); at most
 * limits.s3IndexShardCallsInflightMax shards are read at once.
 *
 * Order: omap keys in byte order. Correct across pages because the merge only
 * yields the smallest head while every shard that may hold more has a
 * non-empty buffer: an unseen entry of a shard is always past its buffer.
 */
import type { TesseraClient } from '../../../src/client/client.js';
import { isTesseraError } from '../../../src/lib/errors.js';
import { limits } from '../../../src/lib/limits.js';
import { forEachBounded } from '../../../src/client/striper-context.js';

export type OmapEntry = [key: Buffer, value: Buffer];

interface ShardCursor {
  name: string;
  buffered: OmapEntry[];
  /** The next buffered entry (buffered[at]); the buffer is used up at buffered.length. */
  at: number;
  /** Where the next read starts after: the last key read, or a seek target past it. */
  after: Buffer | undefined;
  /** The shard has nothing past its buffer. */
  done: boolean;
}

const head = (c: ShardCursor): Buffer => c.buffered[c.at]![0];

export class IndexScan {
  /** Shards with buffered entries, a min-heap by their next key. */
  private readonly heap: ShardCursor[] = [];
  /** Shards whose buffer is used up and that may hold more: read before the next entry is chosen. */
  private empty: ShardCursor[];

  constructor(
    private readonly client: TesseraClient,
    private readonly pool: string,
    shardObjects: readonly string[],
    private readonly prefix: Buffer,
    after: Buffer | undefined,
    private readonly pageEntries: number,
  ) {
    this.empty = shardObjects.map((name) => ({ name, buffered: [], at: 0, after, done: false }));
  }

  /** The next entry in key order without taking it; null when the scan is over. */
  async peek(): Promise<OmapEntry | null> {
    if (this.empty.length > 0) {
      const reading = this.empty;
      this.empty = [];
      await forEachBounded(reading.length, limits.s3IndexShardCallsInflightMax, (i) => this.fill(reading[i]!));
      for (const c of reading) this.place(c);
    }
    const top = this.heap[0];
    return top ? top.buffered[top.at]! : null;
  }

  /** Takes the entry peek() returned. */
  async next(): Promise<OmapEntry | null> {
    const entry = await this.peek();
    if (!entry) return null;
    const top = this.heap[0]!;
    top.at++;
    if (top.at < top.buffered.length) this.siftDown(0);
    else this.place(this.popTop());
    return entry;
  }

  /** Skips every entry with a key <= after: inside the buffers first; a shard whose buffer runs out is read again from after. */
  seek(after: Buffer): void {
    while (this.heap.length > 0 && Buffer.compare(head(this.heap[0]!), after) <= 0) {
      const c = this.popTop();
      c.at = firstAfter(c.buffered, c.at, after);
      this.place(c);
    }
    // Every shard with nothing buffered left (used up just now, or before) starts its next read past `after`, if that
    // is further than it got: the keys it has under a skipped prefix beyond its page are never read.
    for (const c of this.empty) if (c.after === undefined || Buffer.compare(c.after, after) < 0) c.after = after;
  }

  /** Puts a shard where it belongs: the heap (entries left), the shards to read (used up, may hold more), or nowhere (done). */
  private place(c: ShardCursor): void {
    if (c.at < c.buffered.length) {
      this.heap.push(c);
      this.siftUp(this.heap.length - 1);
      return;
    }
    c.buffered = []; // the used-up page is not kept
    c.at = 0;
    if (!c.done) this.empty.push(c);
  }

  private async fill(c: ShardCursor): Promise<void> {
    let page;
    try {
      page = await this.client.omapList(this.pool, c.name, { prefix: this.prefix, limit: this.pageEntries, ...(c.after ? { afterKey: c.after } : {}) });
    } catch (err) {
      if (!isTesseraError(err, 'NotFound')) throw err;
      c.done = true;
      return;
    }
    c.buffered = page.entries;
    c.at = 0;
    if (page.entries.length > 0) c.after = page.entries[page.entries.length - 1]![0];
    c.done = !page.more || page.entries.length === 0;
  }

  private popTop(): ShardCursor {
    const top = this.heap[0]!;
    const last = this.heap.pop()!;
    if (this.heap.length > 0) {
      this.heap[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  private siftUp(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (Buffer.compare(head(h[parent]!), head(h[i]!)) <= 0) return;
      [h[parent], h[i]] = [h[i]!, h[parent]!];
      i = parent;
    }
  }

  private siftDown(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) return;
      const r = l + 1;
      const child = r < h.length && Buffer.compare(head(h[r]!), head(h[l]!)) < 0 ? r : l;
      if (Buffer.compare(head(h[i]!), head(h[child]!)) <= 0) return;
      [h[i], h[child]] = [h[child]!, h[i]!];
      i = child;
    }
  }
}

/** The index of the first entry from `from` on with a key > after (entries in key order), or entries.length. */
function firstAfter(entries: OmapEntry[], from: number, after: Buffer): number {
  let lo = from;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (Buffer.compare(entries[mid]![0], after) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
