/**
 * Read repair of erasure-coded objects, in the background. A client read (or
 * a partial write's read of old stripes) that meets a shard failing its
 * checksum is served degraded, from k other shards (ec-shards.ts); the bad
 * shard is then rebuilt here, as `tessera pg scrub --deep --repair` does for
 * each object it finds (pg-scrub.ts repairObjectNow: the object compared on
 * every acting member under its lock, the bad shard removed and rebuilt from
 * k good ones). Replicated pools repair the primary's copy during the read
 * itself (pg-repair.ts).
 *
 * Bounds: at most limits.readRepairsQueuedMax objects wait (one asked for
 * again while it waits is not queued twice; past the bound a request is
 * dropped and counted, and a deep scrub finds the shard); one repair runs at
 * a time. A repair runs only while its pg is still in the interval the read
 * saw, active, with this daemon its primary; otherwise the new interval's
 * primary owns the object, and its scrub or its own reads find the shard.
 */
import { toTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { repairObjectNow } from './pg-scrub.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';

interface Job {
  pg: Pg;
  name: string;
  interval: number;
}

export class ReadRepairs {
  private readonly queued = new Map<string, Job>();
  private running: Promise<void> | null = null;
  private readonly abort = new AbortController();
  /** Objects repaired (at least one member's copy rebuilt), requests dropped (queue full), repairs that failed. */
  readonly figures = { repaired: 0, dropped: 0, failed: 0 };

  constructor(private readonly osd: Osd) {}

  /** The object of `pg` had a shard fail its checksum on a read: rebuild it soon. */
  request(pg: Pg, name: string): void {
    if (this.abort.signal.aborted) return;
    const key = `${pg.key}/${name}`;
    if (this.queued.has(key)) return;
    if (this.queued.size >= limits.readRepairsQueuedMax) {
      this.figures.dropped++;
      console.error(`disk ${this.osd.diskId}: pg ${pg.key}: read repair of ${name} not queued (${this.queued.size} waiting); a deep scrub will find it`);
      return;
    }
    this.queued.set(key, { pg, name, interval: pg.intervalStart });
    this.kick();
  }

  private kick(): void {
    if (this.running || this.abort.signal.aborted || this.queued.size === 0) return;
    this.running = this.drain().finally(() => {
      this.running = null;
      this.kick();
    });
  }

  private async drain(): Promise<void> {
    for (const [key, job] of this.queued) {
      if (this.abort.signal.aborted) return;
      try {
        await this.repair(job);
      } finally {
        this.queued.delete(key);
      }
    }
  }

  private async repair({ pg, name, interval }: Job): Promise<void> {
    if (pg.intervalStart !== interval || pg.state !== 'active' || pg.primary !== this.osd.diskId) return;
    try {
      const found = await repairObjectNow(this.osd, pg, name, interval, this.abort.signal);
      const repaired = found.filter((i) => i.repaired);
      if (repaired.length > 0) this.figures.repaired++;
      const what = found.map((i) => `disk ${i.diskId} ${i.kinds.join(',')}${i.repaired ? ' (rebuilt)' : ` (left: ${i.detail})`}`).join('; ');
      console.error(`disk ${this.osd.diskId}: pg ${pg.key}: read repair of ${name}: ${found.length === 0 ? 'every shard good now' : what}`);
    } catch (err) {
      this.figures.failed++;
      const e = toTesseraError(err);
      console.error(`disk ${this.osd.diskId}: pg ${pg.key}: read repair of ${name} failed: ${e.code} ${e.message} (a deep scrub will find it)`);
    }
  }

  /** Drops what waits and waits (at most closeWaitMs) for the repair running: aborted, it stops at its next step. */
  async close(closeWaitMs = 5000): Promise<void> {
    this.abort.abort();
    this.queued.clear();
    const waited = new AbortController();
    await Promise.race([this.running, this.osd.io.clock.sleep(closeWaitMs, waited.signal).catch(() => undefined)]);
    waited.abort();
  }
}
