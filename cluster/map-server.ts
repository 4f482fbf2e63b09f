/**
 * Serves any MapService backend over rpc (cluster/map-protocol.ts):
 * `current` and `update` go straight to the backend; `watch` long-polls are
 * answered from one shared subscription to the backend, which keeps the
 * latest map and its encoding (encoded once, whatever the number of pollers).
 *
 * Bounds: at most watchWaitersMax polls wait at once (beyond: Busy); each
 * waits at most the waitMs it asked for, itself at most
 * limits.mapWatchWaitMsMax; a poll ends early when its connection closes.
 * close() answers every waiting poll with what it has (the client polls
 * again, elsewhere or later) and refuses new requests (Closed). Closing the
 * backend and the rpc server stays with whoever opened them.
 */
import type { Io, TimerHandle } from '../src/io/io.js';
import { TesseraError } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import type { RpcHandler, RpcHandlerReply, RpcRequestContext } from '../src/rpc/types.js';
import { decodeMap, encodeMap } from './map-codec.js';
import { MapOpcode, decodeEpoch, decodeWatchRequest, encodeEpoch, type WatchRequest } from './map-protocol.js';
import type { MapService } from './map-service.js';
import type { ClusterMap } from './map.js';

export interface MapServerOptions {
  io: Pick<Io, 'clock'>;
  service: MapService;
  /** Default limits.mapWatchWaitersMax. */
  watchWaitersMax?: number;
}

interface Latest {
  map: ClusterMap;
  bytes: Buffer;
}

interface Waiter {
  sinceEpoch: number;
  wake: () => void;
}

export class MapServer {
  readonly handler: RpcHandler;
  private latest: Latest | null = null;
  private readonly waiters = new Set<Waiter>();
  private readonly subscription = new AbortController();
  private closed = false;

  constructor(private readonly options: MapServerOptions) {
    this.handler = (request) => this.handle(request);
    options.service.watch(0, (map) => this.publish(map), this.subscription.signal, { onError: () => undefined });
  }

  /** Waiting polls: for tests and metrics. */
  get waitingPolls(): number {
    return this.waiters.size;
  }

  /** Answers waiting polls, refuses new requests. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.subscription.abort();
    for (const w of [...this.waiters]) w.wake();
  }

  private async handle(request: RpcRequestContext): Promise<RpcHandlerReply> {
    if (this.closed) throw new TesseraError('Closed', 'map server is closing');
    const { service } = this.options;
    switch (request.op) {
      case MapOpcode.current: {
        const latest = this.publish(await service.current({ signal: request.signal }));
        return { header: encodeEpoch(latest.map.epoch), payload: [latest.bytes] };
      }
      case MapOpcode.update: {
        const expectedEpoch = decodeEpoch(request.header, 'map update request');
        const stored = await service.update(expectedEpoch, decodeMap(request.payload), { signal: request.signal });
        this.publish(stored);
        return { header: encodeEpoch(stored.epoch) };
      }
      case MapOpcode.watch:
        return this.poll(decodeWatchRequest(request.header), request.signal);
      default:
        throw new TesseraError('NotSupported', `unknown map service operation ${request.op}`);
    }
  }

  /** Remembers the newest map seen (and its encoding); returns the newest. */
  private publish(map: ClusterMap): Latest {
    if (this.latest === null || map.epoch > this.latest.map.epoch) {
      this.latest = { map, bytes: encodeMap(map) };
      for (const w of [...this.waiters]) if (map.epoch > w.sinceEpoch) w.wake();
    }
    return this.latest;
  }

  private async poll(request: WatchRequest, signal: AbortSignal): Promise<RpcHandlerReply> {
    let latest = this.latest ?? this.publish(await this.options.service.current({ signal }));
    if (latest.map.epoch <= request.sinceEpoch && request.waitMs > 0) {
      await this.waitNewer(request, signal);
      latest = this.latest ?? latest;
    }
    const newer = latest.map.epoch > request.sinceEpoch;
    return { header: encodeEpoch(latest.map.epoch), payload: newer ? [latest.bytes] : [] };
  }

  /** Resolves when a map newer than sinceEpoch arrives, after waitMs, on disconnect, or on close. */
  private waitNewer(request: WatchRequest, signal: AbortSignal): Promise<void> {
    const waitersMax = this.options.watchWaitersMax ?? limits.mapWatchWaitersMax;
    if (this.waiters.size >= waitersMax) throw new TesseraError('Busy', `map server holds ${this.waiters.size} watch polls`);
    if (this.closed || signal.aborted) return Promise.resolve();
    const { clock } = this.options.io;
    return new Promise<void>((resolve) => {
      let timer: TimerHandle | null = null;
      const waiter: Waiter = {
        sinceEpoch: request.sinceEpoch,
        wake: () => {
          this.waiters.delete(waiter);
          if (timer !== null) clock.clearTimeout(timer);
          signal.removeEventListener('abort', waiter.wake);
          resolve();
        },
      };
      this.waiters.add(waiter);
      timer = clock.setTimeout(waiter.wake, request.waitMs);
      signal.addEventListener('abort', waiter.wake, { once: true });
    });
  }
}
