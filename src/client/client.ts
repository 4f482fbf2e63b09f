/**
 * The client library: objects in pools, by name. It follows the cluster map,
 * computes each object's placement group and primary locally, and sends the
 * request there; it rides out map changes, peering and primary failover by
 * retrying (writes keep their request id, so a retried write is applied once:
 * the pg log remembers it).
 *
 * Every call is bounded by timeoutMs; retries back off (jittered) from
 * retryBackoffMsMin up to retryBackoffMsMax.
 */
import type { Io } from '../io/io.js';
import { TesseraError, isTesseraError } from '../lib/errors.js';
import { ConnectionPool } from '../protocol/connections.js';
import {
  decodeObjectStat,
  decodeVersion,
  encodeList,
  encodeOp,
  encodeRead,
  encodeReadOf,
  OsdOpcode,
  type Eversion,
  type ObjectStatReply,
  type PgRef,
  type ReadKind,
  type RequestId,
} from '../protocol/osd-messages.js';
import { decodeObjectPage, decodeOmapPage, decodeOmapValues, decodeXattrs } from '../protocol/store-messages.js';
import type { RpcClient, RpcReply } from '../rpc/types.js';
import type { OmapListOptions, OmapPage, StoreOp } from '../store/types.js';
import type { MapService } from '../../cluster/map-service.js';
import { MapView } from '../../cluster/map-view.js';
import type { PoolInfo } from '../../cluster/map.js';
import { HOLE, objectToPg } from '../../cluster/placement.js';

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
/** A store operation on the object a call names (no id: the pool and name say which). */
export type ObjectOp = WithoutId<StoreOp>;

export interface ClientOptions {
  io: Io;
  mapService: MapService;
  timeoutMs?: number;
  retryBackoffMsMin?: number;
  retryBackoffMsMax?: number;
}

/** An object read's range, and where its bytes land. */
export interface ObjectReadOptions {
  offsetBytes?: number;
  /** Default: to the end of the object. Reads past the end return fewer bytes. */
  lengthBytes?: number;
  /**
   * Memory the caller owns and reuses (e.g. one buffer per worker of a
   * gateway) instead of a new buffer per read: a read of many MiB into fresh
   * memory costs the kernel's page faults and zeroing and V8 collections
   * (external memory). The contract:
   * - read() resolves with `into.subarray(0, n)`, the n bytes read: a view,
   *   valid until the caller writes into `into` or reads into it again;
   * - `into` belongs to the client from the call until the promise settles,
   *   and only until then: nothing writes into it afterwards (a reply still
   *   arriving for a retried or abandoned attempt closes its connection);
   * - a buffer shorter than lengthBytes, or than the bytes the read returns,
   *   fails InvalidArgument (before anything is sent when lengthBytes says so);
   * - a read that fails (corrupt reply, lost connection, timeout) may leave
   *   `into` partly written; only a resolved read presents bytes.
   */
  into?: Buffer;
}

export interface ListPage {
  names: string[];
  /** Present when more may follow. */
  cursor?: string;
}

/** One attempt of a call at a pg's primary; `signal` aborts when the attempt is abandoned (the primary moved). */
type Send<T> = (rpc: RpcClient, ref: PgRef, signal: AbortSignal) => Promise<T>;

function tooSmall(into: Buffer, lengthBytes: number): TesseraError {
  return new TesseraError('InvalidArgument', `read into a buffer of ${into.byteLength} bytes: too small for ${lengthBytes} bytes`);
}

const RETRYABLE = new Set(['StaleEpoch', 'Busy', 'Unavailable', 'Timeout', 'NoQuorum']);

export class TesseraClient {
  private readonly connections: ConnectionPool;
  private readonly clientId: string;
  private seq = 0;

  private constructor(
    private readonly options: ClientOptions,
    readonly view: MapView,
  ) {
    this.connections = new ConnectionPool(options.io, { rpcAttemptsMax: 1 });
    this.clientId = options.io.random.bytes(16).toString('hex');
  }

  static async connect(options: ClientOptions): Promise<TesseraClient> {
    return new TesseraClient(options, await MapView.start(options.io, options.mapService));
  }

  /** The io seams this client runs on (layers built on the client, like the striper, share them). */
  get io(): Io {
    return this.options.io;
  }

  pool(name: string): PoolInfo {
    return this.view.poolByName(name);
  }

  /** Applies ops to one object atomically. */
  async transact(pool: string, name: string, ops: readonly ObjectOp[]): Promise<Eversion> {
    if (ops.length === 0) throw new TesseraError('InvalidArgument', 'a transaction needs at least one operation');
    const request: RequestId = { client: this.clientId, seq: ++this.seq };
    const storeOps = ops.map((op) => ({ ...op, id: { ns: 0, name } }) as StoreOp);
    const reply = await this.route(pool, name, (rpc, ref) => {
      const { header, payload } = encodeOp({ ...ref, request, object: name, ops: storeOps });
      return rpc.call(OsdOpcode.op, header, payload, { timeoutMs: this.timeoutMs });
    });
    return decodeVersion(reply.header);
  }

  put(pool: string, name: string, data: Buffer): Promise<Eversion> {
    return this.transact(pool, name, [{ type: 'writeFull', data }]);
  }

  remove(pool: string, name: string): Promise<Eversion> {
    return this.transact(pool, name, [{ type: 'remove' }]);
  }

  async read(pool: string, name: string, options: ObjectReadOptions = {}): Promise<Buffer> {
    const { into, ...range } = options;
    if (into === undefined) return (await this.readCall(pool, name, { kind: 'data', options: range })).payload;
    if (range.lengthBytes !== undefined && range.lengthBytes > into.byteLength) throw tooSmall(into, range.lengthBytes);
    // Large replies land in `into` straight from the socket (rpc replyBuffer); one too large for it lands elsewhere and is refused.
    let tooLargeBytes = 0;
    const replyBuffer = (lengthBytes: number): Buffer => {
      if (lengthBytes <= into.byteLength) return into.subarray(0, lengthBytes);
      tooLargeBytes = lengthBytes;
      return Buffer.allocUnsafe(lengthBytes);
    };
    const reply = await this.route(pool, name, (rpc, ref, signal) =>
      rpc.call(OsdOpcode.read, encodeRead({ ...ref, object: name, kind: 'data', options: range }), [], { timeoutMs: this.timeoutMs, idempotent: true, signal, replyBuffer }),
    );
    const payload = reply.payload;
    if (tooLargeBytes > 0 || payload.byteLength > into.byteLength) throw tooSmall(into, payload.byteLength);
    // A small reply (or one the transport put elsewhere) is copied in, so the result is always a view of `into`.
    if (payload.buffer !== into.buffer || payload.byteOffset !== into.byteOffset) payload.copy(into);
    return into.subarray(0, payload.byteLength);
  }

  async stat(pool: string, name: string): Promise<ObjectStatReply> {
    return decodeObjectStat((await this.readCall(pool, name, { kind: 'stat' })).header);
  }

  async getXattrs(pool: string, name: string): Promise<Map<string, Buffer>> {
    return decodeXattrs((await this.readCall(pool, name, { kind: 'xattrs' })).header);
  }

  async omapGet(pool: string, name: string, keys: Buffer[]): Promise<Array<Buffer | undefined>> {
    return decodeOmapValues((await this.readCall(pool, name, { kind: 'omapGet', keys })).header);
  }

  async omapList(pool: string, name: string, options: OmapListOptions): Promise<OmapPage> {
    return decodeOmapPage((await this.readCall(pool, name, { kind: 'omapList', options })).header);
  }

  /** One page of a pool's object names; pass the returned cursor for the next page. */
  async list(pool: string, options: { cursor?: string; limit?: number } = {}): Promise<ListPage> {
    const info = this.pool(pool);
    const limit = options.limit ?? 1000;
    let pg = 0;
    let storeCursor: string | undefined;
    if (options.cursor) {
      const at = options.cursor.indexOf(':');
      pg = Number(options.cursor.slice(0, at));
      storeCursor = options.cursor.slice(at + 1) || undefined;
      if (!Number.isInteger(pg) || pg < 0 || pg >= info.pgCount) throw new TesseraError('InvalidArgument', 'bad list cursor');
    }
    const names: string[] = [];
    while (pg < info.pgCount && names.length < limit) {
      const current = pg;
      const cursor = storeCursor;
      const reply = await this.routePg(info, current, (rpc, ref) =>
        rpc.call(OsdOpcode.list, encodeList({ ...ref, limit: limit - names.length, ...(cursor !== undefined ? { cursor } : {}) }), [], { timeoutMs: this.timeoutMs, idempotent: true }),
      );
      const page = decodeObjectPage(reply.header);
      names.push(...page.objects.map((o) => o.name));
      if (page.cursor) {
        storeCursor = page.cursor;
        if (names.length >= limit) return { names, cursor: `${current}:${storeCursor}` };
      } else {
        pg++;
        storeCursor = undefined;
      }
    }
    return pg < info.pgCount ? { names, cursor: `${pg}:` } : { names };
  }

  private readCall(pool: string, name: string, kind: ReadKind): Promise<RpcReply> {
    return this.route(pool, name, (rpc, ref, signal) => rpc.call(OsdOpcode.read, encodeReadOf(ref, name, kind), [], { timeoutMs: this.timeoutMs, idempotent: true, signal }));
  }

  private get timeoutMs(): number {
    return this.options.timeoutMs ?? 30_000;
  }

  private route<T>(pool: string, name: string, send: Send<T>): Promise<T> {
    const info = this.pool(pool);
    return this.routePg(info, objectToPg(info, name), send);
  }

  /** Sends to the pg's primary, retrying through map changes, peering and failover until the deadline. */
  private async routePg<T>(pool: PoolInfo, pg: number, send: Send<T>): Promise<T> {
    const { clock } = this.options.io;
    const deadline = clock.monotonicMs() + this.timeoutMs;
    let backoffMs = this.options.retryBackoffMsMin ?? 20;
    for (let attempt = 1; ; attempt++) {
      const placement = this.view.pg(this.view.pool(pool.id), pg);
      const address = placement.primary === HOLE ? null : this.view.address(placement.primary);
      let error: unknown;
      if (address) {
        try {
          const rpc = this.connections.get(address);
          const ref = { epoch: this.view.epoch, poolId: pool.id, pg };
          return await this.unlessPrimaryMoves(pool, pg, placement.primary, (signal) => send(rpc, ref, signal));
        } catch (err) {
          if (!isTesseraError(err) || !RETRYABLE.has(err.code)) throw err;
          error = err;
        }
      } else {
        error = new TesseraError('Unavailable', `pg ${pool.id}.${pg} has no primary up (map epoch ${this.view.epoch})`);
      }
      if (clock.monotonicMs() + backoffMs > deadline) {
        throw new TesseraError(isTesseraError(error) ? error.code : 'Unavailable', `pg ${pool.id}.${pg}: gave up after ${attempt} attempts: ${(error as Error).message}`, { cause: error });
      }
      await clock.sleep(backoffMs / 2 + this.options.io.random.float() * (backoffMs / 2));
      backoffMs = Math.min(backoffMs * 2, this.options.retryBackoffMsMax ?? 1000);
      await this.view.refresh().catch(() => undefined);
    }
  }

  /**
   * Settles with the attempt, or fails StaleEpoch (retried) as soon as a
   * newer map gives the pg another primary: a request to a daemon that
   * stopped answering (marked down) moves on instead of waiting for its
   * timeout. The abandoned attempt's rpc is aborted (its signal), so a reply
   * landing in a read's `into` stops before the next attempt uses it. A
   * write so abandoned keeps its request id: the pg log applies it once.
   */
  private async unlessPrimaryMoves<T>(pool: PoolInfo, pg: number, primary: number, start: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const abort = new AbortController();
    let movedError: TesseraError | null = null;
    let unsubscribe = (): void => undefined;
    const moved = new Promise<never>((_resolve, reject) => {
      unsubscribe = this.view.onChange(() => {
        const now = this.view.pg(this.view.pool(pool.id), pg).primary;
        if (now === primary || movedError !== null) return;
        movedError = new TesseraError('StaleEpoch', `pg ${pool.id}.${pg}: primary moved from disk ${primary} to ${now} (map epoch ${this.view.epoch})`);
        reject(movedError);
        abort.abort(movedError);
      });
    });
    const attempt = start(abort.signal);
    attempt.catch(() => undefined);
    try {
      return await Promise.race([attempt, moved]);
    } catch (err) {
      // The attempt's own Aborted may win the race: what happened is the move (retried).
      throw movedError ?? err;
    } finally {
      unsubscribe();
    }
  }

  async close(): Promise<void> {
    this.view.close();
    await this.connections.close();
  }
}
