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
  OsdOpcode,
  type Eversion,
  type ObjectStatReply,
  type PgRef,
  type ReadKind,
  type RequestId,
} from '../protocol/osd-messages.js';
import { decodeObjectPage, decodeOmapPage, decodeOmapValues, decodeXattrs } from '../protocol/store-messages.js';
import type { RpcClient, RpcReply } from '../rpc/types.js';
import type { OmapListOptions, OmapPage, ReadOptions, StoreOp } from '../store/types.js';
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

export interface ListPage {
  names: string[];
  /** Present when more may follow. */
  cursor?: string;
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

  async read(pool: string, name: string, options: ReadOptions = {}): Promise<Buffer> {
    return (await this.readCall(pool, name, { kind: 'data', options })).payload;
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
    return this.route(pool, name, (rpc, ref) => rpc.call(OsdOpcode.read, encodeRead({ ...ref, object: name, ...kind }), [], { timeoutMs: this.timeoutMs, idempotent: true }));
  }

  private get timeoutMs(): number {
    return this.options.timeoutMs ?? 30_000;
  }

  private route<T>(pool: string, name: string, send: (rpc: RpcClient, ref: PgRef) => Promise<T>): Promise<T> {
    const info = this.pool(pool);
    return this.routePg(info, objectToPg(info, name), send);
  }

  /** Sends to the pg's primary, retrying through map changes, peering and failover until the deadline. */
  private async routePg<T>(pool: PoolInfo, pg: number, send: (rpc: RpcClient, ref: PgRef) => Promise<T>): Promise<T> {
    const { clock } = this.options.io;
    const deadline = clock.monotonicMs() + this.timeoutMs;
    let backoffMs = this.options.retryBackoffMsMin ?? 20;
    for (let attempt = 1; ; attempt++) {
      const placement = this.view.pg(this.view.pool(pool.id), pg);
      const address = placement.primary === HOLE ? null : this.view.address(placement.primary);
      let error: unknown;
      if (address) {
        try {
          return await this.unlessPrimaryMoves(pool, pg, placement.primary, send(this.connections.get(address), { epoch: this.view.epoch, poolId: pool.id, pg }));
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
   * Settles with `attempt`, or fails StaleEpoch (retried) as soon as a newer
   * map gives the pg another primary: a request to a daemon that stopped
   * answering (marked down) moves on instead of waiting for its timeout. A
   * write so abandoned keeps its request id: the pg log applies it once.
   */
  private unlessPrimaryMoves<T>(pool: PoolInfo, pg: number, primary: number, attempt: Promise<T>): Promise<T> {
    let unsubscribe = (): void => undefined;
    const moved = new Promise<never>((_resolve, reject) => {
      unsubscribe = this.view.onChange(() => {
        const now = this.view.pg(this.view.pool(pool.id), pg).primary;
        if (now !== primary) reject(new TesseraError('StaleEpoch', `pg ${pool.id}.${pg}: primary moved from disk ${primary} to ${now} (map epoch ${this.view.epoch})`));
      });
    });
    attempt.catch(() => undefined);
    return Promise.race([attempt, moved]).finally(unsubscribe);
  }

  async close(): Promise<void> {
    this.view.close();
    await this.connections.close();
  }
}
