/**
 * A process's view of the cluster map: the latest map it has seen, its
 * placement index, and per-pg membership computed once per epoch. Daemons
 * and clients hold one; it follows the map service (watch) and can be told to
 * catch up to an epoch someone else has seen (a request from a peer, or a
 * StaleEpoch answer).
 *
 * Bounds: the pg membership cache holds at most pgCacheMax entries per
 * epoch; waiting for an epoch gives up after timeoutMs.
 */
import type { Io } from '../src/io/io.js';
import { TesseraError } from '../src/lib/errors.js';
import type { MapService } from './map-service.js';
import type { ClusterMap, PoolInfo } from './map.js';
import { buildPlacementIndex, HOLE, pgPlacement, type PlacementIndex } from './placement.js';

const PG_CACHE_MAX = 65_536;

export interface PgPlacement {
  /** The pg's members from placement (up or not); EC: position i = shard i, HOLE for none. */
  members: number[];
  /** Members that are up, in the temporary acting set's order if the map has one (EC: positions kept, HOLE for down). */
  acting: number[];
  /** The first acting member, or HOLE. */
  primary: number;
}

export class MapView {
  private current: ClusterMap;
  private placement: PlacementIndex;
  private readonly pgCache = new Map<string, PgPlacement>();
  private readonly listeners = new Set<(map: ClusterMap, previous: ClusterMap) => void>();
  private readonly epochWaiters = new Set<{ epoch: number; wake: () => void }>();
  private readonly stop = new AbortController();

  private constructor(
    private readonly io: Io,
    private readonly service: MapService,
    initial: ClusterMap,
  ) {
    this.current = initial;
    this.placement = buildPlacementIndex(initial);
  }

  static async start(io: Io, service: MapService): Promise<MapView> {
    const view = new MapView(io, service, await service.current());
    service.watch(view.current.epoch, (map) => view.accept(map), view.stop.signal, { onError: () => undefined });
    return view;
  }

  get map(): ClusterMap {
    return this.current;
  }

  get epoch(): number {
    return this.current.epoch;
  }

  get index(): PlacementIndex {
    return this.placement;
  }

  /** Calls listener(newMap, previousMap) for every map accepted from now on. */
  onChange(listener: (map: ClusterMap, previous: ClusterMap) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Takes a map if it is newer than the one held. */
  accept(map: ClusterMap): void {
    if (map.epoch <= this.current.epoch) return;
    const previous = this.current;
    this.current = map;
    this.placement = buildPlacementIndex(map);
    this.pgCache.clear();
    for (const w of [...this.epochWaiters]) {
      if (map.epoch >= w.epoch) {
        this.epochWaiters.delete(w);
        w.wake();
      }
    }
    for (const l of this.listeners) l(map, previous);
  }

  /** Fetches the latest map from the service now. */
  async refresh(): Promise<ClusterMap> {
    this.accept(await this.service.current());
    return this.current;
  }

  /** Resolves once the view holds epoch >= epoch (fetching it); Timeout after timeoutMs. */
  async waitForEpoch(epoch: number, timeoutMs: number): Promise<void> {
    if (this.current.epoch >= epoch) return;
    await this.refresh().catch(() => undefined);
    if (this.current.epoch >= epoch) return;
    await new Promise<void>((resolve, reject) => {
      const waiter = {
        epoch,
        wake: () => {
          this.io.clock.clearTimeout(timer);
          resolve();
        },
      };
      const timer = this.io.clock.setTimeout(() => {
        this.epochWaiters.delete(waiter);
        reject(new TesseraError('Timeout', `map epoch ${epoch} did not arrive within ${timeoutMs} ms (have ${this.current.epoch})`));
      }, timeoutMs);
      this.epochWaiters.add(waiter);
    });
  }

  pool(poolId: number): PoolInfo {
    const pool = this.current.pools.find((p) => p.id === poolId);
    if (!pool) throw new TesseraError('NotFound', `pool ${poolId} does not exist (map epoch ${this.current.epoch})`);
    return pool;
  }

  poolByName(name: string): PoolInfo {
    const pool = this.current.pools.find((p) => p.name === name);
    if (!pool) throw new TesseraError('NotFound', `pool ${name} does not exist (map epoch ${this.current.epoch})`);
    return pool;
  }

  pg(pool: PoolInfo, pg: number): PgPlacement {
    const key = `${pool.id}.${pg}`;
    let p = this.pgCache.get(key);
    if (!p) {
      p = pgPlacement(this.current, this.placement, pool, pg);
      if (this.pgCache.size < PG_CACHE_MAX) this.pgCache.set(key, p);
    }
    return p;
  }

  /** The address of a disk's daemon, or null if the map does not know it. */
  address(diskId: number): string | null {
    return this.current.disks.find((d) => d.id === diskId)?.address ?? null;
  }

  isUp(diskId: number): boolean {
    return diskId !== HOLE && this.current.disks.find((d) => d.id === diskId)?.up === true;
  }

  close(): void {
    this.stop.abort();
    for (const w of this.epochWaiters) w.wake();
    this.epochWaiters.clear();
  }
}
