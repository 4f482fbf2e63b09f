/**
 * The embedded map service backend (one machine): the map lives in a
 * directory owned by one process.
 *
 *   <dir>/LOCK.<generation>          the owner (cluster/map-lock.ts)
 *   <dir>/epoch-<16 digits>.map      one file per epoch (cluster/map-store-files.ts)
 *
 * The newest epoch file is the map. Each update writes the next epoch's file
 * atomically and durably before it is acknowledged, then deletes the file
 * limits.mapHistoryEpochsKept epochs older, so the last few epochs stay on
 * disk for debugging. Opening reads the newest file; if it is corrupt the
 * store refuses to open (Corrupt) rather than fall back to an older epoch,
 * which would hand out an epoch number twice with different contents.
 *
 * Updates and changes run one at a time (a queue of at most
 * limits.mapUpdateQueueMax; beyond it Busy), so compare-and-set is exact and
 * `change` never conflicts here. Watchers get maps from a microtask after the
 * update that made them, never from inside it.
 *
 * Lifecycle: open -> closing (new calls fail Closed; queued updates finish)
 * -> closed (lock released). Fail-stop: if the lock is lost (see
 * map-lock.ts) every later call fails Locked; if writing an epoch file fails,
 * whether it landed is unknown, so every later call fails Unavailable until
 * the store is reopened and the disk decides.
 */
import { join } from 'node:path';
import type { Io } from '../src/io/io.js';
import { TesseraError, invalid, notFound } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import { freezeMap, sameMap } from './map-codec.js';
import { nextEpoch } from './map-edit.js';
import { DirectoryLock, systemProcessProbe, type ProcessProbe } from './map-lock.js';
import { abortedError, MapWatcher, type MapCallOptions, type MapChangeOptions, type MapEdit, type MapService, type MapWatchOptions } from './map-service.js';
import { decodeMapFile, encodeMapFile, epochOfFileName, isLeftoverFileName, mapFileName } from './map-store-files.js';
import type { ClusterMap } from './map.js';

export interface EmbeddedMapStoreOptions {
  io: Io;
  /** The directory holding the map's files and its lock. */
  path: string;
  /**
   * Creates the directory, and epoch 1 from this map (its epoch is ignored),
   * when the directory holds no map yet. When it does, its cluster id must
   * be this map's (else WrongCluster). Without `create`, a missing map is NotFound.
   */
  create?: ClusterMap;
  /** Default systemProcessProbe(io). */
  probe?: ProcessProbe;
  /** Epoch files kept, the newest included. Default limits.mapHistoryEpochsKept. */
  historyEpochsKept?: number;
}

type State = 'open' | 'closing' | 'closed';

export class EmbeddedMapStore implements MapService {
  private state: State = 'open';
  private failure: TesseraError | null = null;
  private tail: Promise<void> = Promise.resolve();
  private queued = 0;
  private readonly watchers = new Set<MapWatcher>();
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly io: Io,
    readonly path: string,
    private readonly lock: DirectoryLock,
    private readonly historyEpochsKept: number,
    private map: ClusterMap,
  ) {}

  static async open(options: EmbeddedMapStoreOptions): Promise<EmbeddedMapStore> {
    const { io, path } = options;
    const kept = options.historyEpochsKept ?? limits.mapHistoryEpochsKept;
    if (!Number.isSafeInteger(kept) || kept < 1) throw invalid(`historyEpochsKept must be >= 1, is ${kept}`);
    const initial = options.create ? freezeMap({ ...options.create, epoch: 1 }) : null;
    if (initial) await io.fs.mkdir(path);
    else if (!(await io.fs.stat(path))?.isDirectory) throw notFound(`map directory ${path} does not exist`);
    const probe = options.probe ?? systemProcessProbe(io);
    const lock = await DirectoryLock.acquire({ io, dir: path, probe, what: `map directory ${path}` });
    try {
      const map = await loadNewest(io, path, initial, kept);
      return new EmbeddedMapStore(io, path, lock, kept, map);
    } catch (err) {
      await lock.release().catch(() => undefined);
      throw err;
    }
  }

  async current(options: MapCallOptions = {}): Promise<ClusterMap> {
    this.checkUsable(options.signal);
    return this.map;
  }

  update(expectedEpoch: number, next: ClusterMap, options: MapCallOptions = {}): Promise<ClusterMap> {
    try {
      this.checkUsable(options.signal);
      if (!Number.isSafeInteger(expectedEpoch) || expectedEpoch < 1) throw invalid(`expected epoch must be an integer >= 1, is ${expectedEpoch}`);
      const frozen = freezeMap(next);
      if (frozen.epoch !== expectedEpoch + 1) throw invalid(`the next map's epoch must be ${expectedEpoch + 1}, is ${frozen.epoch}`);
      if (frozen.clusterId !== this.map.clusterId) throw new TesseraError('WrongCluster', `map of cluster ${frozen.clusterId} offered to cluster ${this.map.clusterId}`);
      return this.serialize(options.signal, () => {
        if (this.map.epoch !== expectedEpoch) throw new TesseraError('Conflict', `map epoch is ${this.map.epoch}, not ${expectedEpoch}`);
        return this.commit(frozen);
      });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Runs the edit inside the update queue: never conflicts, so attemptsMax does not apply. */
  change(edit: MapEdit, options: MapChangeOptions = {}): Promise<ClusterMap> {
    try {
      this.checkUsable(options.signal);
      return this.serialize(options.signal, () => {
        const latest = this.map;
        const next = nextEpoch(latest, edit);
        return sameMap({ ...next, epoch: latest.epoch }, latest) ? Promise.resolve(latest) : this.commit(next);
      });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  watch(sinceEpoch: number, onMap: (map: ClusterMap) => void, signal: AbortSignal, options?: MapWatchOptions): void {
    const watcher = new MapWatcher(sinceEpoch, onMap, signal, options);
    if (signal.aborted) return;
    if (this.state !== 'open' || this.failure) {
      watcher.report(this.failure ?? new TesseraError('Closed', `map store ${this.path} is closed`));
      return;
    }
    this.watchers.add(watcher);
    signal.addEventListener('abort', () => this.watchers.delete(watcher), { once: true });
    const map = this.map;
    queueMicrotask(() => watcher.offer(map));
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.state = 'closing';
    this.closing = (async () => {
      await this.tail;
      for (const w of this.watchers) w.stop();
      this.watchers.clear();
      await this.lock.release();
      this.state = 'closed';
    })();
    return this.closing;
  }

  private checkUsable(signal: AbortSignal | undefined): void {
    if (this.failure) throw this.failure;
    if (this.state !== 'open') throw new TesseraError('Closed', `map store ${this.path} is closed`);
    if (signal?.aborted) throw abortedError(signal);
  }

  /** Runs work after every update queued before it; Busy beyond the queue bound. */
  private serialize<T>(signal: AbortSignal | undefined, work: () => Promise<T>): Promise<T> {
    if (this.queued >= limits.mapUpdateQueueMax) throw new TesseraError('Busy', `map store ${this.path} has ${this.queued} updates queued`);
    this.queued++;
    const run = this.tail.then(async () => {
      try {
        if (this.failure) throw this.failure;
        if (signal?.aborted) throw abortedError(signal);
        return await work();
      } finally {
        this.queued--;
      }
    });
    this.tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Makes `next` (validated, frozen, epoch + 1) durable, then the current map; tells watchers. */
  private async commit(next: ClusterMap): Promise<ClusterMap> {
    try {
      await this.lock.verify();
    } catch (err) {
      this.failure = err as TesseraError;
      throw err;
    }
    const expired = next.epoch - this.historyEpochsKept;
    if (expired >= 1) await removeIfPresent(this.io, join(this.path, mapFileName(expired)));
    try {
      await this.io.fs.writeFileAtomic(join(this.path, mapFileName(next.epoch)), encodeMapFile(next));
    } catch (err) {
      // The file may or may not be in place now: stop, so that what is on disk decides when reopened.
      const message = `map store ${this.path}: writing epoch ${next.epoch} failed (${(err as Error).message}); reopen it`;
      this.failure = new TesseraError('Unavailable', message, { cause: err });
      throw this.failure;
    }
    this.map = next;
    const watchers = [...this.watchers];
    queueMicrotask(() => watchers.forEach((w) => w.offer(next)));
    return next;
  }
}

async function removeIfPresent(io: Io, path: string): Promise<void> {
  try {
    await io.fs.unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** The newest epoch in the directory (epoch 1 written from `initial` if there is none); prunes old epochs and leftovers. */
async function loadNewest(io: Io, dir: string, initial: ClusterMap | null, kept: number): Promise<ClusterMap> {
  const names = await io.fs.readdir(dir);
  for (const name of names.filter(isLeftoverFileName)) await removeIfPresent(io, join(dir, name));
  const epochs = names.map(epochOfFileName).filter((e): e is number => e !== null);
  if (epochs.length === 0) {
    if (!initial) throw notFound(`no cluster map in ${dir}`);
    await io.fs.writeFileAtomic(join(dir, mapFileName(1)), encodeMapFile(initial));
    return initial;
  }
  const newest = Math.max(...epochs);
  const path = join(dir, mapFileName(newest));
  const map = decodeMapFile(await io.fs.readFile(path), newest, path);
  if (initial && initial.clusterId !== map.clusterId) {
    throw new TesseraError('WrongCluster', `${dir} holds the map of cluster ${map.clusterId}, not ${initial.clusterId}`);
  }
  for (const epoch of epochs) if (epoch <= newest - kept) await removeIfPresent(io, join(dir, mapFileName(epoch)));
  return map;
}
