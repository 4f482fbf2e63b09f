/**
 * The MapService interface over rpc, for daemons and clients in other
 * processes (cluster/map-protocol.ts; served by cluster/map-server.ts).
 *
 * - current: one idempotent call.
 * - update: validated here first (InvalidArgument without a round trip), then
 *   sent; the server validates again. It may be resent after a lost
 *   connection: when a resend meets Conflict, the client reads the current
 *   map and, if it is exactly the map it sent at the epoch it asked for,
 *   reports success (its own first send landed).
 * - change: read-edit-update with bounded, jittered retries on Conflict.
 * - watch: a loop of long-polls (each asks the server to wait up to
 *   watchWaitMs, and gives up after watchWaitMs + callTimeoutMs); on errors
 *   it backs off (limits.mapRetryBackoffMs*, jittered) and keeps going,
 *   telling onError; it stops at once when its signal aborts or the client
 *   closes.
 *
 * The RpcClient belongs to the caller: close() stops this client's watches
 * and calls but leaves the RpcClient open.
 */
import { setMaxListeners } from 'node:events';
import type { Io } from '../src/io/io.js';
import { TesseraError, invalid, isTesseraError } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import { anySignal } from '../src/lib/signals.js';
import type { RpcClient } from '../src/rpc/types.js';
import { decodeMap, encodeMap, freezeMap, sameMap } from './map-codec.js';
import { MapOpcode, decodeEpoch, encodeEpoch, encodeWatchRequest } from './map-protocol.js';
import {
  MapWatcher,
  changeByCompareAndSet,
  nextBackoffMs,
  sleepBackoff,
  type MapCallOptions,
  type MapChangeOptions,
  type MapEdit,
  type MapService,
  type MapWatchOptions,
} from './map-service.js';
import type { ClusterMap } from './map.js';

export interface MapClientOptions {
  io: Pick<Io, 'clock' | 'random'>;
  rpc: RpcClient;
  /** Timeout of current and update calls. Default limits.rpcTimeoutMsDefault. */
  callTimeoutMs?: number;
  /** How long each watch poll asks the server to wait. Default limits.mapWatchWaitMsDefault. */
  watchWaitMs?: number;
}

const EMPTY = Buffer.alloc(0);

export class MapClient implements MapService {
  private readonly closing = new AbortController();
  private readonly polls = new Set<Promise<void>>();
  private readonly callTimeoutMs: number;
  private readonly watchWaitMs: number;

  constructor(private readonly options: MapClientOptions) {
    this.callTimeoutMs = options.callTimeoutMs ?? limits.rpcTimeoutMsDefault;
    this.watchWaitMs = options.watchWaitMs ?? limits.mapWatchWaitMsDefault;
    // A poll that may not wait would spin: at least 1 ms.
    if (!(this.watchWaitMs >= 1 && this.watchWaitMs <= limits.mapWatchWaitMsMax)) throw invalid(`watchWaitMs must be in [1, ${limits.mapWatchWaitMsMax}]`);
    // Every call and watch listens on `closing`; the rpc client bounds calls in flight, so no listener limit here.
    setMaxListeners(0, this.closing.signal);
  }

  async current(options: MapCallOptions = {}): Promise<ClusterMap> {
    this.checkOpen();
    const reply = await this.options.rpc.call(MapOpcode.current, EMPTY, [], this.callOptions(options.signal, this.callTimeoutMs));
    return decodeReplyMap(decodeEpoch(reply.header, 'map current reply'), reply.payload);
  }

  async update(expectedEpoch: number, next: ClusterMap, options: MapCallOptions = {}): Promise<ClusterMap> {
    this.checkOpen();
    if (!Number.isSafeInteger(expectedEpoch) || expectedEpoch < 1) throw invalid(`expected epoch must be an integer >= 1, is ${expectedEpoch}`);
    const frozen = freezeMap(next);
    if (frozen.epoch !== expectedEpoch + 1) throw invalid(`the next map's epoch must be ${expectedEpoch + 1}, is ${frozen.epoch}`);
    try {
      const reply = await this.options.rpc.call(MapOpcode.update, encodeEpoch(expectedEpoch), [encodeMap(frozen)], this.callOptions(options.signal, this.callTimeoutMs));
      const stored = decodeEpoch(reply.header, 'map update reply');
      if (stored !== frozen.epoch) throw new TesseraError('ProtocolError', `map server stored epoch ${stored}, expected ${frozen.epoch}`);
      return frozen;
    } catch (err) {
      if (!isTesseraError(err, 'Conflict')) throw err;
      const now = await this.current(options);
      if (now.epoch === frozen.epoch && sameMap(now, frozen)) return now; // our own earlier send landed
      throw err;
    }
  }

  change(edit: MapEdit, options: MapChangeOptions = {}): Promise<ClusterMap> {
    return changeByCompareAndSet(this, this.options.io, edit, options);
  }

  watch(sinceEpoch: number, onMap: (map: ClusterMap) => void, signal: AbortSignal, options?: MapWatchOptions): void {
    const watcher = new MapWatcher(sinceEpoch, onMap, signal, options);
    if (signal.aborted) return;
    if (this.closing.signal.aborted) {
      watcher.report(new TesseraError('Closed', 'map client is closed'));
      return;
    }
    const poll = this.pollLoop(watcher, anySignal([signal, this.closing.signal]));
    this.polls.add(poll);
    void poll.finally(() => this.polls.delete(poll));
  }

  /** Stops every watch and refuses new calls; waits for the watch loops to end. */
  async close(): Promise<void> {
    this.closing.abort(new TesseraError('Closed', 'map client closed'));
    await Promise.all([...this.polls]);
  }

  private checkOpen(): void {
    if (this.closing.signal.aborted) throw new TesseraError('Closed', 'map client is closed');
  }

  private callOptions(signal: AbortSignal | undefined, timeoutMs: number): { timeoutMs: number; idempotent: true; signal: AbortSignal } {
    return { timeoutMs, idempotent: true, signal: signal ? anySignal([signal, this.closing.signal]) : this.closing.signal };
  }

  /** Long-polls until stopped; never rejects. */
  private async pollLoop(watcher: MapWatcher, stop: AbortSignal): Promise<void> {
    let backoffMs: number = limits.mapRetryBackoffMsMin;
    while (watcher.active && !stop.aborted) {
      try {
        const header = encodeWatchRequest({ sinceEpoch: watcher.epoch, waitMs: this.watchWaitMs });
        const reply = await this.options.rpc.call(MapOpcode.watch, header, [], { timeoutMs: this.watchWaitMs + this.callTimeoutMs, idempotent: true, signal: stop });
        const epoch = decodeEpoch(reply.header, 'map watch reply');
        if (reply.payload.length > 0) watcher.offer(decodeReplyMap(epoch, reply.payload));
        backoffMs = limits.mapRetryBackoffMsMin;
      } catch (err) {
        if (stop.aborted) break;
        watcher.report(err);
        await sleepBackoff(this.options.io, backoffMs, stop).catch(() => undefined);
        backoffMs = nextBackoffMs(backoffMs);
      }
    }
  }
}

function decodeReplyMap(epoch: number, payload: Buffer): ClusterMap {
  const map = decodeMap(payload, { errorCode: 'ProtocolError' });
  if (map.epoch !== epoch) throw new TesseraError('ProtocolError', `map server said epoch ${epoch}, sent epoch ${map.epoch}`);
  return map;
}
