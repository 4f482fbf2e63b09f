/**
 * The map service: the single source of truth for the cluster map, behind
 * one small interface that every backend implements (the embedded store in
 * cluster/map-store-embedded.ts, the rpc client in cluster/map-client.ts,
 * etcd later) and one conformance suite checks
 * (test/helpers/map-service-conformance.ts).
 *
 * Epoch rules: the stored map's epoch starts at 1 and grows by exactly one
 * per accepted update. `update(expected, next)` is a compare-and-set: it
 * succeeds only when the stored epoch is `expected` and next.epoch is
 * `expected + 1` (on etcd: a transaction comparing the key's mod revision
 * read together with the map). `change(edit)` loops read-edit-update with
 * bounded, jittered retries on Conflict. `watch` delivers maps with strictly
 * increasing epochs, at least the latest, possibly skipping some in between.
 *
 * Maps returned by a MapService are validated and deep-frozen.
 */
import type { Io } from '../src/io/io.js';
import { TesseraError, isTesseraError, toTesseraError } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import { sameMap } from './map-codec.js';
import { nextEpoch } from './map-edit.js';
import type { ClusterMap } from './map.js';

export interface MapCallOptions {
  signal?: AbortSignal;
}

export interface MapChangeOptions extends MapCallOptions {
  /** Read-edit-update attempts before giving up with Conflict. Default limits.mapChangeAttemptsMax. */
  attemptsMax?: number;
}

export interface MapWatchOptions {
  /**
   * Told of failures the watch rides out (an unreachable map server: it keeps
   * polling, with backoff), and of an error thrown by onMap, which ends the
   * watch. Without it, an error from onMap is rethrown from a microtask.
   */
  onError?: (err: TesseraError) => void;
}

/** An edit of the map: gets a private mutable copy; returning it unchanged makes no change. */
export type MapEdit = (draft: ClusterMap) => ClusterMap;

export interface MapService {
  /** The latest map. */
  current(options?: MapCallOptions): Promise<ClusterMap>;
  /**
   * Stores `next` if the stored epoch is still `expectedEpoch` (else Conflict,
   * nothing stored). next.epoch must be expectedEpoch + 1 and next must be
   * valid (else InvalidArgument), of the same cluster (else WrongCluster).
   * Resolves with the stored map once it is durable.
   */
  update(expectedEpoch: number, next: ClusterMap, options?: MapCallOptions): Promise<ClusterMap>;
  /**
   * Applies `edit` to the latest map at the next epoch, retrying on Conflict;
   * errors thrown by the edit end it. An edit that changes nothing resolves
   * with the current map and stores nothing.
   */
  change(edit: MapEdit, options?: MapChangeOptions): Promise<ClusterMap>;
  /**
   * Calls onMap with every map newer than sinceEpoch that it sees, in strictly
   * increasing epoch order (at least the latest; intermediate epochs may be
   * skipped), until `signal` aborts or the service closes. onMap must not throw.
   */
  watch(sinceEpoch: number, onMap: (map: ClusterMap) => void, signal: AbortSignal, options?: MapWatchOptions): void;
  /** Stops watches, refuses new calls (Closed), waits for updates in flight. */
  close(): Promise<void>;
}

export const isConflict = (err: unknown): boolean => isTesseraError(err, 'Conflict') || isTesseraError(err, 'StaleEpoch');

export function abortedError(signal: AbortSignal): TesseraError {
  return isTesseraError(signal.reason) ? signal.reason : new TesseraError('Aborted', 'map service call aborted', { cause: signal.reason });
}

/** Sleeps a jittered delay in [backoffMs/2, backoffMs); Aborted if the signal fires. */
export async function sleepBackoff(io: Pick<Io, 'clock' | 'random'>, backoffMs: number, signal?: AbortSignal): Promise<void> {
  const delayMs = backoffMs / 2 + io.random.float() * (backoffMs / 2);
  try {
    await io.clock.sleep(delayMs, signal);
  } catch (err) {
    throw signal?.aborted ? abortedError(signal) : toTesseraError(err);
  }
}

export const nextBackoffMs = (backoffMs: number): number => Math.min(backoffMs * 2, limits.mapRetryBackoffMsMax);

/** `change` for any backend with current + update: read, edit, compare-and-set, retry on Conflict. */
export async function changeByCompareAndSet(
  service: Pick<MapService, 'current' | 'update'>,
  io: Pick<Io, 'clock' | 'random'>,
  edit: MapEdit,
  options: MapChangeOptions = {},
): Promise<ClusterMap> {
  const attemptsMax = options.attemptsMax ?? limits.mapChangeAttemptsMax;
  if (!Number.isSafeInteger(attemptsMax) || attemptsMax < 1) throw new TesseraError('InvalidArgument', `attemptsMax must be >= 1, is ${attemptsMax}`);
  const call = options.signal ? { signal: options.signal } : {};
  let backoffMs: number = limits.mapRetryBackoffMsMin;
  for (let attempt = 1; ; attempt++) {
    const latest = await service.current(call);
    const next = nextEpoch(latest, edit);
    if (sameMap({ ...next, epoch: latest.epoch }, latest)) return latest;
    try {
      return await service.update(latest.epoch, next, call);
    } catch (err) {
      if (!isConflict(err)) throw err;
      if (attempt >= attemptsMax) throw new TesseraError('Conflict', `map change gave up after ${attempt} attempts (concurrent changes)`, { cause: err });
    }
    await sleepBackoff(io, backoffMs, options.signal);
    backoffMs = nextBackoffMs(backoffMs);
  }
}

/**
 * One watch's delivery rules, shared by the backends: only maps newer than
 * the last one delivered, nothing once stopped or aborted, and an error from
 * onMap ends the watch (reported, never swallowed).
 */
export class MapWatcher {
  private stopped = false;

  constructor(
    private lastEpoch: number,
    private readonly onMap: (map: ClusterMap) => void,
    readonly signal: AbortSignal,
    private readonly options: MapWatchOptions = {},
  ) {}

  get epoch(): number {
    return this.lastEpoch;
  }

  get active(): boolean {
    return !this.stopped && !this.signal.aborted;
  }

  stop(): void {
    this.stopped = true;
  }

  offer(map: ClusterMap): void {
    if (!this.active || map.epoch <= this.lastEpoch) return;
    this.lastEpoch = map.epoch;
    try {
      this.onMap(map);
    } catch (err) {
      this.stop();
      const error = toTesseraError(err);
      if (this.options.onError) this.options.onError(error);
      else
        queueMicrotask(() => {
          throw err;
        });
    }
  }

  /** A failure the watch rides out. */
  report(err: unknown): void {
    if (this.active) this.options.onError?.(toTesseraError(err));
  }
}
