/**
 * The one connection to etcd that the etcd backends share (the map store in
 * cluster/map-store-etcd.ts, the pg history in cluster/pg-history-etcd.ts):
 * an `etcd3` client (gRPC, pure JavaScript) over a list of endpoints, with
 * every call bounded and retried here, and every failure mapped once to the
 * closed list of Tessera errors.
 *
 * - `run(what, signal, attempt)` makes one attempt after another, each with a
 *   gRPC deadline of attemptTimeoutMs, until one succeeds, a failure is not
 *   transient, the call's budget (callTimeoutMs) is spent, the caller's
 *   signal aborts or the client closes. Transient failures (an endpoint down,
 *   no leader during an election, a deadline) back off, jittered. Under it,
 *   etcd3 tries up to three endpoints per attempt and stops sending to one
 *   that failed three times in a row for a few seconds (its circuit breaker).
 * - Attempts must be safe to repeat: reads, and transactions guarded by a
 *   compare (the callers recognise their own earlier write).
 * - Watch streams reconnect inside etcd3, after a jittered backoff from
 *   `watchBackoffMs*` (drawn from io.random), and resume from the revision
 *   after the last one they saw.
 *
 * Limits: at most etcdDefaults.endpointsMax endpoints; gRPC messages up to
 * limits.mapBytesMax plus etcdDefaults.messageSlackBytes each way (the etcd
 * server has its own bound, --max-request-bytes, 1.5 MiB by default).
 *
 * The etcd3 library reaches the network and timers itself, like RocksDB
 * reaches the disk: a simulation replaces a whole etcd backend (it implements
 * MapService and PgHistory), not this client.
 */
import { setMaxListeners } from 'node:events';
import { ConsecutiveBreaker, circuitBreaker, handleWhen } from 'cockatiel';
import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';
import type { Io } from '../src/io/io.js';
import { TesseraError, invalid, isTesseraError, type ErrorCodeName } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import { anySignal } from '../src/lib/signals.js';
import { abortedError, nextBackoffMs, sleepBackoff } from './map-service.js';

// TODO(limits): move next to the map service's limits in src/lib/limits.ts.
export const etcdDefaults = {
  /** Budget of one call, all attempts and backoff included. */
  callTimeoutMs: 30_000,
  /** gRPC deadline of one attempt. */
  attemptTimeoutMs: 5_000,
  /** Longest wait for an etcd watcher to be cancelled on close. */
  watchCancelTimeoutMs: 2_000,
  /** An endpoint that failed breakerFailures times in a row gets no calls for this long, then one to try it. */
  breakerHalfOpenMs: 1_000,
  breakerFailures: 3,
  /** Watch stream reconnect backoff (etcd3's watch manager), jittered and doubling. */
  watchBackoffMsMin: 50,
  watchBackoffMsMax: 2_000,
  endpointsMax: 16,
  /** gRPC framing and etcd's own fields around the largest map. */
  messageSlackBytes: 1024 * 1024,
} as const;

export interface EtcdClientOptions {
  io: Pick<Io, 'clock' | 'random'>;
  /** etcd client URLs: "http://host:port" (or "https://", or bare "host:port", taken as http). */
  endpoints: readonly string[];
  /** Default etcdDefaults.callTimeoutMs. */
  callTimeoutMs?: number;
  /** Default etcdDefaults.attemptTimeoutMs (never more than callTimeoutMs). */
  attemptTimeoutMs?: number;
}

/** gRPC call options for one attempt (a deadline in wall-clock ms). */
export interface EtcdAttempt {
  deadline: number;
}

/** Checks and normalises an endpoint list (InvalidArgument naming the bad one). */
export function parseEtcdEndpoints(endpoints: readonly string[]): string[] {
  if (endpoints.length === 0) throw invalid('etcd: at least one endpoint is needed');
  if (endpoints.length > etcdDefaults.endpointsMax) throw invalid(`etcd: at most ${etcdDefaults.endpointsMax} endpoints, got ${endpoints.length}`);
  return endpoints.map((raw) => {
    const endpoint = raw.trim();
    const withScheme = /^[a-z]+:\/\//i.test(endpoint) ? endpoint : `http://${endpoint}`;
    let url: URL;
    try {
      url = new URL(withScheme);
    } catch {
      throw invalid(`etcd endpoint "${raw}" is not a URL`);
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.port === '' || url.pathname !== '/' || url.search !== '' || url.username !== '') {
      throw invalid(`etcd endpoint "${raw}" must be http(s)://host:port`);
    }
    return `${url.protocol}//${url.host}`;
  });
}

/** The part of the watch backoff etcd3 asks for: a duration, and the next one. */
interface WatchBackoff {
  readonly duration: number;
  next(): WatchBackoff;
}

function watchBackoff(io: Pick<Io, 'random'>, baseMs: number): WatchBackoff {
  return {
    duration: baseMs / 2 + io.random.float() * (baseMs / 2),
    next: () => watchBackoff(io, Math.min(baseMs * 2, etcdDefaults.watchBackoffMsMax)),
  };
}

export class EtcdClient {
  /** The etcd3 client, for the backends' requests; every request goes through run(). */
  readonly etcd: Etcd3;
  readonly endpoints: readonly string[];
  readonly callTimeoutMs: number;
  readonly attemptTimeoutMs: number;
  private readonly closing = new AbortController();

  constructor(private readonly options: EtcdClientOptions) {
    this.endpoints = parseEtcdEndpoints(options.endpoints);
    this.callTimeoutMs = options.callTimeoutMs ?? etcdDefaults.callTimeoutMs;
    this.attemptTimeoutMs = Math.min(options.attemptTimeoutMs ?? etcdDefaults.attemptTimeoutMs, this.callTimeoutMs);
    if (!(this.callTimeoutMs >= 1) || !(this.attemptTimeoutMs >= 1)) throw invalid('etcd: callTimeoutMs and attemptTimeoutMs must be >= 1');
    const messageBytesMax = limits.mapBytesMax + etcdDefaults.messageSlackBytes;
    const etcdOptions: IOptions = {
      hosts: [...this.endpoints],
      grpcOptions: { 'grpc.max_receive_message_length': messageBytesMax, 'grpc.max_send_message_length': messageBytesMax },
      faultHandling: {
        // etcd3's default keeps a failed endpoint out for 5 s: too long when it is the only one, or comes back.
        host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: etcdDefaults.breakerHalfOpenMs, breaker: new ConsecutiveBreaker(etcdDefaults.breakerFailures) }),
        // etcd3 asks this factory for a first backoff after every reconnection that worked; its own duration is unused.
        watchBackoff: { duration: 0, next: () => watchBackoff(options.io, etcdDefaults.watchBackoffMsMin) },
      },
    };
    this.etcd = new Etcd3(etcdOptions);
    // Every call and watch in flight listens on `closing`; their number is bounded by the callers, not here.
    setMaxListeners(0, this.closing.signal);
  }

  /** Aborts when the client closes: for loops (watches) that must end with it. */
  get closingSignal(): AbortSignal {
    return this.closing.signal;
  }

  get closed(): boolean {
    return this.closing.signal.aborted;
  }

  /**
   * Runs `attempt` until it succeeds, fails for good, or the budget is spent
   * (then the last transient failure: Unavailable or Timeout). Each attempt
   * gets a gRPC deadline. Aborted when `signal` aborts, Closed when the client closes.
   */
  async run<T>(what: string, signal: AbortSignal | undefined, attempt: (call: EtcdAttempt) => Promise<T>): Promise<T> {
    const { clock } = this.options.io;
    const stop = signal ? anySignal([signal, this.closing.signal]) : this.closing.signal;
    const deadlineMs = clock.monotonicMs() + this.callTimeoutMs;
    let backoffMs: number = limits.mapRetryBackoffMsMin;
    for (;;) {
      this.checkUsable(signal);
      const leftMs = deadlineMs - clock.monotonicMs();
      try {
        const call = { deadline: clock.nowMs() + Math.max(1, Math.min(this.attemptTimeoutMs, leftMs)) };
        return await raceAbort(attempt(call), stop);
      } catch (err) {
        this.checkUsable(signal);
        const error = etcdError(err, what);
        if (!isTransient(error) || clock.monotonicMs() + backoffMs / 2 >= deadlineMs) throw this.spent(error, what);
      }
      try {
        await sleepBackoff(this.options.io, backoffMs, stop);
      } catch {
        this.checkUsable(signal);
      }
      backoffMs = nextBackoffMs(backoffMs);
    }
  }

  /** Refuses new calls (Closed), ends watch loops, closes the gRPC channels. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closing.abort(new TesseraError('Closed', 'etcd client closed'));
    this.etcd.close();
  }

  private checkUsable(signal: AbortSignal | undefined): void {
    if (this.closed) throw new TesseraError('Closed', 'etcd client is closed');
    if (signal?.aborted) throw abortedError(signal);
  }

  private spent(error: TesseraError, what: string): TesseraError {
    if (!isTransient(error)) return error;
    const message = `${what}: no answer from etcd (${this.endpoints.join(',')}) within ${this.callTimeoutMs} ms: ${error.message}`;
    return new TesseraError(error.code, message, { cause: error });
  }
}

const isTransient = (err: TesseraError): boolean => err.code === 'Unavailable' || err.code === 'Timeout' || err.code === 'Busy';

/** Rejects as soon as `stop` aborts (the call itself then ends at its deadline). */
function raceAbort<T>(promise: Promise<T>, stop: AbortSignal): Promise<T> {
  if (stop.aborted) return Promise.reject(abortedError(stop));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortedError(stop));
    stop.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        stop.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        stop.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** Maps an etcd3/gRPC failure to a Tessera error (the one table for etcd). */
export function etcdError(err: unknown, what: string): TesseraError {
  if (isTesseraError(err)) return err;
  const e = err instanceof Error ? err : new Error(String(err));
  const kind = e.constructor.name;
  const code = ((): ErrorCodeName => {
    if (e.message.includes('request is too large')) return 'LimitExceeded';
    if (e.message.includes('database space exceeded')) return 'NoSpace';
    if (e.message.includes('too many requests')) return 'Busy';
    // gRPC's own message size bound (etcd3 counts resource exhaustion as recoverable; retrying cannot help).
    if (kind === 'GRPCResourceExhastedError') return 'LimitExceeded';
    if (kind === 'GRPCDeadlineExceededError') return 'Timeout';
    if (kind === 'ClientClosedError') return 'Closed';
    if (kind === 'BrokenCircuitError' || kind === 'TaskCancelledError' || isRecoverableError(e)) return 'Unavailable';
    return 'Internal';
  })();
  const hint = code === 'LimitExceeded' && e.message.includes('request is too large') ? ' (raise etcd --max-request-bytes)' : '';
  return new TesseraError(code, `${what}: etcd: ${e.message}${hint}`, { cause: err });
}

/** Resolves with `promise`, or after timeoutMs with undefined; never rejects. */
export async function settleWithin(io: Pick<Io, 'clock'>, promise: Promise<unknown>, timeoutMs: number): Promise<void> {
  let timer: ReturnType<typeof io.clock.setTimeout> | null = null;
  const timeout = new Promise<void>((resolve) => {
    timer = io.clock.setTimeout(resolve, timeoutMs);
  });
  try {
    await Promise.race([promise.then(() => undefined, () => undefined), timeout]);
  } finally {
    if (timer !== null) io.clock.clearTimeout(timer);
  }
}
