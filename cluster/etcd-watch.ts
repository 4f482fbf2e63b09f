/**
 * Following one etcd key, whatever happens to the connection: the loop the
 * etcd backends' watches run (cluster/map-store-etcd.ts).
 *
 * A session reads the key (linearizable), hands its value over, then opens an
 * etcd watch from the revision right after that read. etcd3 reconnects a
 * broken watch stream by itself (to any endpoint, after a jittered backoff)
 * and resumes from the revision after the last one it saw. On every
 * (re)connection, and every resyncMs, the session also reads the key again if
 * it changed since the last value handed over (a linearizable read with
 * min_mod_revision: empty, hence cheap, when nothing changed). That covers
 * what a stream can miss: events between a resumed watch's start and its
 * creation (etcd3 advances its resume point to the creation revision), and a
 * stream to a member cut off from the majority, which stays open but silent.
 * If etcd cancels the watch (its start revision was compacted away) the
 * session ends and a new one starts with a fresh read.
 *
 * Values are handed over in strictly increasing mod revision (older ones,
 * arriving late from another path, are dropped). Failures the loop rides out
 * go to onError; it backs off (jittered, doubling up to
 * limits.mapRetryBackoffMsMax) between sessions. It ends, and its promise
 * resolves, once `stop` aborts and its etcd watcher is cancelled (bounded by
 * etcdDefaults.watchCancelTimeoutMs).
 */
import type { IKeyValue, Watcher } from 'etcd3';
import type { Io, TimerHandle } from '../src/io/io.js';
import type { TesseraError } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import { etcdDefaults, etcdError, settleWithin, type EtcdClient } from './etcd-client.js';
import { nextBackoffMs, sleepBackoff } from './map-service.js';

export interface KeyWatchOptions {
  io: Pick<Io, 'clock' | 'random'>;
  client: EtcdClient;
  key: string;
  /** Ends the watch. */
  stop: AbortSignal;
  /** Period of the safety-net read. */
  resyncMs: number;
  /** A value of the key newer than any handed over before. Must not throw. */
  onValue: (kv: IKeyValue) => void;
  /** The key is absent (at the first read) or was deleted. */
  onMissing: () => void;
  /** A failure the watch rides out. */
  onError: (err: TesseraError) => void;
}

/** Watches until options.stop aborts; never rejects. */
export async function watchKey(options: KeyWatchOptions): Promise<void> {
  const { io, stop } = options;
  const progress = { modRevision: 0n };
  let backoffMs: number = limits.mapRetryBackoffMsMin;
  while (!stop.aborted) {
    try {
      await new Session(options, progress).run();
      backoffMs = limits.mapRetryBackoffMsMin;
    } catch (err) {
      if (stop.aborted) break;
      options.onError(etcdError(err, `watch of ${options.key}`));
    }
    if (stop.aborted) break;
    await sleepBackoff(io, backoffMs, stop).catch(() => undefined);
    backoffMs = nextBackoffMs(backoffMs);
  }
}

/** One read + one etcd watcher; run() resolves when etcd cancelled the watcher or `stop` aborted. */
class Session {
  private ended = false;
  private resyncing = false;
  private timer: TimerHandle | null = null;
  private finished: () => void = () => undefined;

  constructor(
    private readonly options: KeyWatchOptions,
    private readonly progress: { modRevision: bigint },
  ) {}

  async run(): Promise<void> {
    const { client, key, stop } = this.options;
    const first = await client.run(`watch of ${key}: read`, stop, (call) => client.etcd.get(key).options(call).exec());
    this.deliver(first.kvs[0]);
    const startRevision = BigInt(first.header.revision) + 1n;
    const watcher: Watcher = client.etcd.watch().key(key).startRevision(String(startRevision)).watcher();
    let canceledByEtcd = false;
    // Listeners stay attached after the session: a Watcher without an 'error' listener would throw from etcd3's stream handler.
    watcher.on('put', (kv) => this.deliver(kv));
    watcher.on('delete', () => this.deliver(undefined));
    watcher.on('connected', () => this.resync());
    watcher.on('disconnected', (err) => this.report(err, 'stream lost, reconnecting'));
    watcher.on('error', (err) => {
      if (this.ended) return;
      canceledByEtcd = true;
      this.report(err, 'canceled by etcd, starting over');
      this.finish();
    });
    await new Promise<void>((resolve) => {
      this.finished = resolve;
      stop.addEventListener('abort', this.finish, { once: true });
      if (stop.aborted) this.finish();
      else this.timer = this.options.io.clock.setTimeout(this.tick, this.options.resyncMs);
    });
    if (!canceledByEtcd) await settleWithin(this.options.io, watcher.cancel(), etcdDefaults.watchCancelTimeoutMs);
  }

  private readonly finish = (): void => {
    if (this.ended) return;
    this.ended = true;
    if (this.timer !== null) this.options.io.clock.clearTimeout(this.timer);
    this.options.stop.removeEventListener('abort', this.finish);
    this.finished();
  };

  private readonly tick = (): void => {
    this.resync();
    if (!this.ended) this.timer = this.options.io.clock.setTimeout(this.tick, this.options.resyncMs);
  };

  /** Hands over a value newer than the last one (undefined: the key is absent). */
  private deliver(kv: IKeyValue | undefined): void {
    if (this.ended) return;
    if (kv === undefined) return this.options.onMissing();
    const modRevision = BigInt(kv.mod_revision);
    if (modRevision <= this.progress.modRevision) return;
    this.progress.modRevision = modRevision;
    this.options.onValue(kv);
  }

  /** Reads the key if it changed since the last value handed over; one read at a time. */
  private resync(): void {
    if (this.ended || this.resyncing) return;
    this.resyncing = true;
    const { client, key, stop } = this.options;
    const since = String(this.progress.modRevision + 1n);
    client
      .run(`watch of ${key}: resync`, stop, (call) => client.etcd.get(key).minModRevision(since).options(call).exec())
      .then(
        (res) => {
          // Empty when nothing changed since (min_mod_revision); a deletion arrives as a watch event.
          const kv = res.kvs[0];
          if (kv !== undefined) this.deliver(kv);
        },
        (err: unknown) => this.report(err, 'resync'),
      )
      .finally(() => (this.resyncing = false));
  }

  private report(err: unknown, what: string): void {
    if (!this.ended) this.options.onError(etcdError(err, `watch of ${this.options.key}: ${what}`));
  }
}
