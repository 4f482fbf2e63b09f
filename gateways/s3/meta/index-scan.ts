/**
 * An ordered scan over one omap key prefix of every shard of a bucket index:
 * a k-way merge in which each shard is paged on its own (every entry is read
 * once), with seek() to skip ahead (past a common prefix) while keeping what
 * is already buffered. Memory: at most shards x pageEntries entries (callers
 * size pageEntries by limits.s3IndexListEntriesMax / shards); at most
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
  /** The last key read from this shard (the next page starts after it). */
  after: Buffer | undefined;
  done: boolean;
}

export class IndexScan {
  private readonly cursors: ShardCursor[];

  constructor(
    private readonly client: TesseraClient,
    private readonly pool: string,
    shardObjects: readonly string[],
    private readonly prefix: Buffer,
    after: Buffer | undefined,
    private readonly pageEntries: number,
  ) {
    this.cursors = shardObjects.map((name) => ({ name, buffered: [], after, done: false }));
  }

  /** The next entry in key order without taking it; null when the scan is over. */
  async peek(): Promise<OmapEntry | null> {
    const empty = this.cursors.filter((c) => c.buffered.length === 0 && !c.done);
    await forEachBounded(empty.length, limits.s3IndexShardCallsInflightMax, (i) => this.fill(empty[i]!));
    let best: ShardCursor | null = null;
    for (const c of this.cursors) {
      if (c.buffered.length === 0) continue;
      if (!best || Buffer.compare(c.buffered[0]![0], best.buffered[0]![0]) < 0) best = c;
    }
    return best ? best.buffered[0]! : null;
  }

  /** Takes the entry peek() returned. */
  async next(): Promise<OmapEntry | null> {
    const head = await this.peek();
    if (head) for (const c of this.cursors) if (c.buffered[0] === head) c.buffered.shift();
    return head;
  }

  /** Skips every entry with a key <= after. */
  seek(after: Buffer): void {
    for (const c of this.cursors) {
      while (c.buffered.length > 0 && Buffer.compare(c.buffered[0]![0], after) <= 0) c.buffered.shift();
      if (c.buffered.length === 0 && (c.after === undefined || Buffer.compare(c.after, after) < 0)) c.after = after;
    }
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
    if (page.entries.length > 0) c.after = page.entries[page.entries.length - 1]![0];
    c.done = !page.more || page.entries.length === 0;
  }
}
