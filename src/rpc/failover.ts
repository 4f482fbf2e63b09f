/**
 * One RpcClient over several equivalent servers (the map daemons of one
 * cluster on etcd: any of them answers any map, pg history or heartbeat
 * call). Calls go to the current server; when it cannot be reached the
 * client moves on to the next one, in order, and stays there until that one
 * fails in turn.
 *
 * - A call that fails Unavailable (cannot connect, connection lost, or the
 *   server's own answer that it cannot serve now), Timeout or Closed (the
 *   server shutting down) makes the next server current. Unavailable and
 *   Closed are tried again on the next server at once, within the call's own
 *   timeout, if the call is idempotent and its payload is buffers (a stream
 *   is read only once); at most one round over the servers per call. A
 *   Timeout is not: its budget is spent.
 * - Any other error is the server's answer and is returned as it is.
 * - Each server keeps its own connection (and its reconnect backoff); a
 *   server left behind is tried again only when the round comes back to it.
 *
 * Bounds: servers <= failoverServersMax; a call makes at most one attempt
 * per server, each bounded by what is left of the call's timeout.
 */
import type { Clock } from '../io/io.js';
import { TesseraError, invalid, isTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { RpcCallOptions, RpcClient, RpcPayload, RpcReply } from './types.js';

export const failoverServersMax = 16;

export interface FailoverOptions {
  clock: Pick<Clock, 'monotonicMs'>;
  /** One client per server, in the order they are tried; closed with this one. */
  clients: readonly RpcClient[];
  /** Names of the servers (for messages), same order. */
  names: readonly string[];
  /** Told when the current server changes (from, to, the error that made it change). */
  onSwitch?: (from: string, to: string, cause: TesseraError) => void;
}

const switchWorthy = (err: unknown): err is TesseraError =>
  isTesseraError(err, 'Unavailable') || isTesseraError(err, 'Timeout') || isTesseraError(err, 'Closed');

export class FailoverRpcClient implements RpcClient {
  private current = 0;
  private closed = false;

  constructor(private readonly options: FailoverOptions) {
    const n = options.clients.length;
    if (n === 0 || n > failoverServersMax || options.names.length !== n) throw invalid(`failover rpc client: 1 to ${failoverServersMax} servers, each named (got ${n})`);
  }

  /** The server calls go to now. */
  get currentName(): string {
    return this.options.names[this.current]!;
  }

  get serverCount(): number {
    return this.options.clients.length;
  }

  async call(op: number, header: Uint8Array, payload: RpcPayload, options: RpcCallOptions = {}): Promise<RpcReply> {
    if (this.closed) throw new TesseraError('Closed', 'rpc client is closed');
    const { clock, clients } = this.options;
    const timeoutMs = options.timeoutMs ?? limits.rpcTimeoutMsDefault;
    const deadlineMs = clock.monotonicMs() + timeoutMs;
    const resendable = options.idempotent === true && Array.isArray(payload);
    for (let attempt = 0; ; attempt++) {
      const index = this.current;
      const leftMs = Math.max(1, Math.floor(deadlineMs - clock.monotonicMs()));
      try {
        return await clients[index]!.call(op, header, payload, { ...options, timeoutMs: leftMs });
      } catch (err) {
        if (this.closed || !switchWorthy(err) || options.signal?.aborted) throw err;
        this.moveOn(index, err);
        const again = resendable && err.code !== 'Timeout' && attempt + 1 < clients.length && clock.monotonicMs() < deadlineMs;
        if (!again) throw err;
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.options.clients.map((c) => c.close()));
  }

  /** The server at `index` failed: the next one becomes current (unless another call moved on already). */
  private moveOn(index: number, cause: TesseraError): void {
    if (this.current !== index || this.options.clients.length === 1) return;
    this.current = (index + 1) % this.options.clients.length;
    this.options.onSwitch?.(this.options.names[index]!, this.options.names[this.current]!, cause);
  }
}
