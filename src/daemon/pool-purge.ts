/**
 * Frees what a removed pool left on this disk. A pool removed from the map
 * (`tessera pool rm`, cluster/map-edit.ts removePool) never comes back and
 * its id is never given again (map.poolIdNext), so once the map no longer
 * has it, everything of it in this store can go: its objects live in
 * namespaces poolId * 256 .. poolId * 256 + 255 (data shards, EC staging,
 * the pg meta objects: src/daemon/pg-log.ts).
 *
 * One pool at a time, in the background: list a page (PAGE objects) of a
 * namespace, remove them in one transaction, repeat; a namespace is done
 * when a listing comes back empty. A daemon that was down when its pool was
 * removed purges it when it starts: ids below poolIdNext that the map does
 * not have are checked (one listing of the pool's meta namespace each; only
 * a pool that left objects is purged). close() stops between pages.
 */
import type { ObjectStore } from '../store/index.js';
import type { ClusterMap } from '../../cluster/map.js';
import { metaNs } from './pg-log.js';

const PAGE = 256;
const NAMESPACES_PER_POOL = 256;

export class PoolPurger {
  /** Pool ids found removed and not yet purged, in order. */
  private readonly pending: number[] = [];
  private readonly seen = new Set<number>();
  private running: Promise<void> | null = null;
  private stopped = false;
  /** Objects removed so far (tests and logs). */
  removedObjects = 0;

  constructor(
    private readonly store: ObjectStore,
    private readonly log: (message: string) => void,
  ) {}

  /** Queues the pools this map says were removed (ids below poolIdNext it does not have). */
  onMap(map: ClusterMap): void {
    const present = new Set(map.pools.map((p) => p.id));
    for (let id = 0; id < (map.poolIdNext ?? 0); id++) {
      if (present.has(id) || this.seen.has(id)) continue;
      this.seen.add(id);
      this.pending.push(id);
    }
    if (this.pending.length > 0 && !this.running && !this.stopped) this.running = this.drain();
  }

  /** Resolves when every queued pool is purged (or the purger stopped). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async drain(): Promise<void> {
    try {
      while (!this.stopped && this.pending.length > 0) {
        const poolId = this.pending.shift()!;
        // Nothing of a pool this disk never held a pg of: one listing tells.
        const meta = await this.store.listObjects({ ns: metaNs(poolId), limit: 1 });
        if (meta.objects.length === 0) continue;
        const before = this.removedObjects;
        for (let shard = 0; shard < NAMESPACES_PER_POOL && !this.stopped; shard++) await this.purgeNamespace(poolId * NAMESPACES_PER_POOL + shard);
        this.log(`removed pool ${poolId}: ${this.removedObjects - before} objects deleted from this disk`);
      }
    } catch (err) {
      if (!this.stopped) this.log(`purging removed pools stopped: ${(err as Error).message}`);
    } finally {
      this.running = null;
    }
  }

  private async purgeNamespace(ns: number): Promise<void> {
    while (!this.stopped) {
      const page = await this.store.listObjects({ ns, limit: PAGE });
      if (page.objects.length === 0) return;
      await this.store.transact(page.objects.map((o) => ({ type: 'remove', id: { ns, name: o.name } })));
      this.removedObjects += page.objects.length;
    }
  }

  /** Stops after the page in progress. */
  async close(): Promise<void> {
    this.stopped = true;
    await this.idle();
  }
}
