/**
 * The etcd map service backend (many machines): the map lives in etcd under
 * one key, and any number of processes may serve it at once.
 *
 *   <keyPrefix>/<clusterId>/map   the map's canonical bytes (cluster/map-codec.ts)
 *
 * The epoch is in the value (it is the map's own field); etcd cannot compare
 * inside a value, so `update(expected, next)` compares the key's mod revision
 * instead: it takes the value and mod revision read together (the last ones
 * this store saw when their epoch is `expected`, else a fresh read), fails
 * Conflict unless that value's epoch is `expected`, then runs one
 * transaction: if mod_revision(key) is still that revision, put `next`, else
 * get the key. A failed transaction is Conflict (its else branch refreshes
 * what this store knows). An attempt whose answer was lost is repeated; if
 * the key then holds exactly `next`, the update reports success (its own
 * earlier attempt landed). etcd answers a put once a majority of members has
 * it in their fsynced logs, so a resolved update is durable, and since every
 * accepted put is epoch + 1 of the value it replaced, no epoch number ever
 * names two maps.
 *
 * `current` is a linearizable read. `change` runs read-edit-update with
 * retries on Conflict (changeByCompareAndSet), one at a time per store (a
 * queue of at most limits.mapUpdateQueueMax, beyond it Busy), so changes in
 * one process never conflict with each other, only with other processes.
 * `watch` follows the key with cluster/etcd-watch.ts (reconnects, resumes,
 * resyncs) and delivers maps in strictly increasing epoch order.
 *
 * Every call is bounded by the EtcdClient's budget (etcd unreachable or
 * without quorum: Unavailable or Timeout after callTimeoutMs) and takes an
 * AbortSignal. Nothing is cached that could go stale in a harmful way: a
 * stale revision only makes a transaction fail and read again.
 *
 * Lifecycle: open -> closing (new calls fail Closed, watches stop, calls in
 * flight finish) -> closed (its own EtcdClient, if it made one, closed).
 */
import { setMaxListeners } from 'node:events';
import type { IKeyValue } from 'etcd3';
import type { Io } from '../src/io/io.js';
import { TesseraError, corrupt, invalid, isTesseraError, notFound } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import { anySignal } from '../src/lib/signals.js';
import { EtcdClient, type EtcdAttempt } from './etcd-client.js';
import { watchKey } from './etcd-watch.js';
import { checkName } from './map-check.js';
import { decodeMap, encodeMap, freezeMap, sameMap } from './map-codec.js';
import { nextEpoch } from './map-edit.js';
import {
  MapWatcher,
  abortedError,
  changeByCompareAndSet,
  isConflict,
  nextBackoffMs,
  sleepBackoff,
  type MapCallOptions,
  type MapChangeOptions,
  type MapEdit,
  type MapService,
  type MapWatchOptions,
} from './map-service.js';
import type { ClusterMap } from './map.js';

export const etcdKeyPrefixDefault = '/tessera';
/** Safety-net read period of a watch (cluster/etcd-watch.ts). */
export const etcdWatchResyncMsDefault = 10_000;

export interface EtcdMapStoreOptions {
  io: Pick<Io, 'clock' | 'random'>;
  /** A connection shared with others (the pg history): stays the caller's to close. */
  client?: EtcdClient;
  /** Or the etcd endpoints: the store then makes its own connection and closes it. */
  endpoints?: readonly string[];
  /** Budget of each call when the store makes its own connection (EtcdClient's callTimeoutMs). */
  callTimeoutMs?: number;
  /** The cluster whose map to serve; may be left out with `create` (its cluster id). */
  clusterId?: string;
  /**
   * Writes epoch 1 from this map (its epoch ignored) if etcd holds no map for
   * the cluster yet; if it holds one, that one is served. Without `create`,
   * no map is NotFound.
   */
  create?: ClusterMap;
  /** Default etcdKeyPrefixDefault ("/tessera"). */
  keyPrefix?: string;
  /** Default etcdWatchResyncMsDefault. */
  watchResyncMs?: number;
}

/** The key holding a cluster's map. */
export const etcdMapKey = (keyPrefix: string, clusterId: string): string => `${keyPrefix}/${clusterId}/map`;

/** Checks a key prefix: "/" then path segments of [A-Za-z0-9._-], no trailing "/". */
export function checkEtcdKeyPrefix(keyPrefix: string): string {
  if (!/^(\/[A-Za-z0-9._-]+)+$/.test(keyPrefix) || keyPrefix.length > 256) throw invalid(`etcd key prefix "${keyPrefix}" must look like /tessera or /a/b (at most 256 bytes)`);
  return keyPrefix;
}

/** Conditions on other keys for a map change (changeGuarded), and keys written with it. */
export interface EtcdGuard {
  /** For messages: what the guard stands for. */
  what: string;
  /** Keys that must not exist. */
  absent?: readonly string[];
  /** Keys that must be attached to these etcd leases (decimal lease ids). */
  leases?: ReadonlyArray<{ key: string; leaseId: string }>;
  /** Written in the same transaction as the map. */
  put?: ReadonlyArray<{ key: string; value: string }>;
  /** Deleted in the same transaction as the map. */
  delete?: readonly string[];
}

const guardFailed = Symbol('etcd guard failed');

/** A changeGuarded whose guard did not hold. */
export const isGuardFailure = (err: unknown): boolean => isTesseraError(err, 'Conflict') && err.cause === guardFailed;

/** A map as stored, with the mod revision it was read or written at. */
interface Stored {
  map: ClusterMap;
  bytes: Buffer;
  modRevision: bigint;
}

type State = 'open' | 'closing' | 'closed';

export class EtcdMapStore implements MapService {
  readonly key: string;
  private state: State = 'open';
  /** The newest map (by mod revision) this store has read or written. */
  private known: Stored | null = null;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly watchLoops = new Set<Promise<void>>();
  private readonly watchers = new Set<MapWatcher>();
  private readonly stopWatches = new AbortController();
  private changeTail: Promise<void> = Promise.resolve();
  private changesQueued = 0;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly io: Pick<Io, 'clock' | 'random'>,
    private readonly client: EtcdClient,
    private readonly ownsClient: boolean,
    readonly clusterId: string,
    keyPrefix: string,
    private readonly watchResyncMs: number,
  ) {
    this.key = etcdMapKey(keyPrefix, clusterId);
    setMaxListeners(0, this.stopWatches.signal); // one listener per watch
  }

  static async open(options: EtcdMapStoreOptions): Promise<EtcdMapStore> {
    const { io } = options;
    const initial = options.create ? freezeMap({ ...options.create, epoch: 1 }) : null;
    const clusterId = checkName(options.clusterId ?? initial?.clusterId, 'clusterId');
    if (initial && initial.clusterId !== clusterId) throw new TesseraError('WrongCluster', `create holds the map of cluster ${initial.clusterId}, not ${clusterId}`);
    const keyPrefix = checkEtcdKeyPrefix(options.keyPrefix ?? etcdKeyPrefixDefault);
    const resyncMs = options.watchResyncMs ?? etcdWatchResyncMsDefault;
    if (!Number.isSafeInteger(resyncMs) || resyncMs < 10) throw invalid(`watchResyncMs must be an integer >= 10, is ${resyncMs}`);
    if ((options.client === undefined) === (options.endpoints === undefined)) throw invalid('etcd map store: give either client or endpoints');
    const client =
      options.client ?? new EtcdClient({ io, endpoints: options.endpoints!, ...(options.callTimeoutMs !== undefined ? { callTimeoutMs: options.callTimeoutMs } : {}) });
    const store = new EtcdMapStore(io, client, options.client === undefined, clusterId, keyPrefix, resyncMs);
    try {
      if (initial) await store.createIfAbsent(initial);
      else await store.read('open map', undefined);
      return store;
    } catch (err) {
      if (store.ownsClient) await client.close();
      throw err;
    }
  }

  current(options: MapCallOptions = {}): Promise<ClusterMap> {
    return this.track(async () => (await this.read('map current', options.signal)).map);
  }

  update(expectedEpoch: number, next: ClusterMap, options: MapCallOptions = {}): Promise<ClusterMap> {
    return this.track(() => this.updateNow(expectedEpoch, next, options.signal));
  }

  change(edit: MapEdit, options: MapChangeOptions = {}): Promise<ClusterMap> {
    const service = {
      current: (o: MapCallOptions = {}) => this.read('map change: read', o.signal).then((s) => s.map),
      update: (expected: number, next: ClusterMap, o: MapCallOptions = {}) => this.updateNow(expected, next, o.signal),
    };
    return this.track(() => this.serialize(options.signal, () => changeByCompareAndSet(service, this.io, edit, options)));
  }

  watch(sinceEpoch: number, onMap: (map: ClusterMap) => void, signal: AbortSignal, options?: MapWatchOptions): void {
    const watcher = new MapWatcher(sinceEpoch, onMap, signal, options);
    if (signal.aborted) return;
    if (this.state !== 'open') {
      watcher.report(new TesseraError('Closed', `etcd map store ${this.key} is closed`));
      return;
    }
    this.watchers.add(watcher);
    const loop = watchKey({
      io: this.io,
      client: this.client,
      key: this.key,
      stop: anySignal([signal, this.stopWatches.signal, this.client.closingSignal]),
      resyncMs: this.watchResyncMs,
      onValue: (kv) => {
        try {
          watcher.offer(this.remember(this.decode(kv)).map);
        } catch (err) {
          watcher.report(err);
        }
      },
      onMissing: () => watcher.report(notFound(`no cluster map at etcd key ${this.key} (deleted?)`)),
      onError: (err) => watcher.report(err),
    });
    this.watchLoops.add(loop);
    void loop.finally(() => {
      this.watchLoops.delete(loop);
      this.watchers.delete(watcher);
    });
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.state = 'closing';
    this.closing = (async () => {
      for (const w of this.watchers) w.stop();
      this.stopWatches.abort(new TesseraError('Closed', `etcd map store ${this.key} closed`));
      await Promise.all([...this.watchLoops]);
      await Promise.all([...this.inflight].map((p) => p.catch(() => undefined)));
      if (this.ownsClient) await this.client.close();
      this.state = 'closed';
    })();
    return this.closing;
  }

  /** Runs a call, refusing it once closing; close() waits for it. */
  private track<T>(call: () => Promise<T>): Promise<T> {
    if (this.state !== 'open') return Promise.reject(new TesseraError('Closed', `etcd map store ${this.key} is closed`));
    const promise = call();
    this.inflight.add(promise);
    void promise.then(
      () => this.inflight.delete(promise),
      () => this.inflight.delete(promise),
    );
    return promise;
  }

  /** Changes run one at a time in this store; Busy beyond the queue bound. */
  private serialize<T>(signal: AbortSignal | undefined, work: () => Promise<T>): Promise<T> {
    if (this.changesQueued >= limits.mapUpdateQueueMax) return Promise.reject(new TesseraError('Busy', `etcd map store ${this.key} has ${this.changesQueued} changes queued`));
    this.changesQueued++;
    const run = this.changeTail.then(async () => {
      try {
        if (signal?.aborted) throw abortedError(signal);
        return await work();
      } finally {
        this.changesQueued--;
      }
    });
    this.changeTail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * `change`, made only if `guard` holds in the same etcd transaction that stores the map (and with the guard's
   * puts and deletes in it). A guard that fails ends the change: Conflict, `isGuardFailure`; nothing stored. A
   * concurrent change of the map is retried like `change` does. An edit that changes nothing stores nothing
   * (the guard is then not checked).
   */
  changeGuarded(edit: MapEdit, guard: EtcdGuard, options: MapChangeOptions = {}): Promise<ClusterMap> {
    const attemptsMax = options.attemptsMax ?? limits.mapChangeAttemptsMax;
    return this.track(() =>
      this.serialize(options.signal, async () => {
        let backoffMs: number = limits.mapRetryBackoffMsMin;
        for (let attempt = 1; ; attempt++) {
          const latest = (await this.read('map change: read', options.signal)).map;
          const next = nextEpoch(latest, edit);
          if (sameMap({ ...next, epoch: latest.epoch }, latest)) return latest;
          try {
            return await this.updateNow(latest.epoch, next, options.signal, guard);
          } catch (err) {
            if (!isConflict(err) || isGuardFailure(err) || attempt >= attemptsMax) throw err;
          }
          await sleepBackoff(this.io, backoffMs, options.signal);
          backoffMs = nextBackoffMs(backoffMs);
        }
      }),
    );
  }

  /** The epoch of the map stored at `modRevision` or later (what this store knows, else a linearizable read). */
  epochSince(modRevision: bigint, signal?: AbortSignal): Promise<number> {
    if (this.known !== null && this.known.modRevision >= modRevision) return Promise.resolve(this.known.map.epoch);
    return this.track(async () => (await this.read('map epoch', signal)).map.epoch);
  }

  private async updateNow(expectedEpoch: number, next: ClusterMap, signal: AbortSignal | undefined, guard?: EtcdGuard): Promise<ClusterMap> {
    if (signal?.aborted) throw abortedError(signal);
    if (!Number.isSafeInteger(expectedEpoch) || expectedEpoch < 1) throw invalid(`expected epoch must be an integer >= 1, is ${expectedEpoch}`);
    const frozen = freezeMap(next);
    if (frozen.epoch !== expectedEpoch + 1) throw invalid(`the next map's epoch must be ${expectedEpoch + 1}, is ${frozen.epoch}`);
    if (frozen.clusterId !== this.clusterId) throw new TesseraError('WrongCluster', `map of cluster ${frozen.clusterId} offered to cluster ${this.clusterId}`);
    const bytes = encodeMap(frozen);
    const progress = { sent: false };
    return this.client.run(`map update to epoch ${frozen.epoch}`, signal, (call) => this.compareAndSet(expectedEpoch, frozen, bytes, call, progress, guard));
  }

  /** One attempt of an update (see the module comment); `progress.sent` once a transaction went out. */
  private async compareAndSet(expectedEpoch: number, next: ClusterMap, bytes: Buffer, call: EtcdAttempt, progress: { sent: boolean }, guard?: EtcdGuard): Promise<ClusterMap> {
    const { etcd } = this.client;
    let stored = this.known !== null && this.known.map.epoch === expectedEpoch && !progress.sent ? this.known : this.remember(await this.readOnce(call));
    for (let round = 0; round < 2; round++) {
      if (progress.sent && stored.map.epoch === next.epoch && stored.bytes.equals(bytes)) return next;
      if (stored.map.epoch !== expectedEpoch) throw new TesseraError('Conflict', `map epoch is ${stored.map.epoch}, not ${expectedEpoch}`);
      progress.sent = true;
      const compare = etcd.if(this.key, 'Mod', '==', String(stored.modRevision));
      for (const key of guard?.absent ?? []) compare.and(key, 'Create', '==', 0);
      for (const { key, leaseId } of guard?.leases ?? []) compare.and(key, 'Lease', '==', leaseId);
      const ops = [etcd.put(this.key).value(bytes), ...(guard?.put ?? []).map((p) => etcd.put(p.key).value(p.value)), ...(guard?.delete ?? []).map((key) => etcd.delete().key(key))];
      const result = await compare.then(...ops).else(etcd.get(this.key)).options(call).commit();
      if (result.succeeded) {
        this.remember({ map: next, bytes, modRevision: BigInt(result.header.revision) });
        return next;
      }
      const kv = result.responses[0]?.response_range?.kvs[0];
      if (kv === undefined) throw notFound(`the cluster map at etcd key ${this.key} was deleted`);
      const latest = this.remember(this.decode(kv));
      // The map is as it was: the guard failed (a resent attempt whose first one landed was recognised above).
      if (guard !== undefined && latest.modRevision === stored.modRevision) throw new TesseraError('Conflict', `map update to epoch ${next.epoch}: ${guard.what} no longer holds`, { cause: guardFailed });
      stored = latest;
    }
    throw new TesseraError('Conflict', `the map at etcd key ${this.key} keeps changing at epoch ${expectedEpoch}`);
  }

  /** Epoch 1 from `initial` unless a map is there already (then that one, which must be of this cluster). */
  private async createIfAbsent(initial: ClusterMap): Promise<void> {
    const { etcd } = this.client;
    const bytes = encodeMap(initial);
    const result = await this.client.run('create map', undefined, (call) =>
      etcd.if(this.key, 'Create', '==', 0).then(etcd.put(this.key).value(bytes)).else(etcd.get(this.key)).options(call).commit(),
    );
    if (result.succeeded) {
      this.remember({ map: initial, bytes, modRevision: BigInt(result.header.revision) });
      return;
    }
    const kv = result.responses[0]?.response_range?.kvs[0];
    if (kv === undefined) throw new TesseraError('Unavailable', `create map at ${this.key}: the key vanished while it was created; try again`);
    this.remember(this.decode(kv));
  }

  private async read(what: string, signal: AbortSignal | undefined): Promise<Stored> {
    return this.remember(await this.client.run(what, signal, (call) => this.readOnce(call)));
  }

  private async readOnce(call: EtcdAttempt): Promise<Stored> {
    const response = await this.client.etcd.get(this.key).options(call).exec();
    const kv = response.kvs[0];
    if (kv === undefined) throw notFound(`no cluster map at etcd key ${this.key}`);
    return this.decode(kv);
  }

  private decode(kv: IKeyValue): Stored {
    let map: ClusterMap;
    try {
      map = decodeMap(kv.value, { errorCode: 'Corrupt' });
    } catch (err) {
      throw corrupt(`etcd key ${this.key}: ${(err as Error).message}`, err);
    }
    if (map.clusterId !== this.clusterId) throw corrupt(`etcd key ${this.key} holds the map of cluster ${map.clusterId}, not ${this.clusterId}`);
    return { map, bytes: Buffer.from(kv.value), modRevision: BigInt(kv.mod_revision) };
  }

  /** Keeps the newest stored map seen (by mod revision); returns its argument. */
  private remember(stored: Stored): Stored {
    if (this.known === null || stored.modRevision > this.known.modRevision) this.known = stored;
    return stored;
  }
}
