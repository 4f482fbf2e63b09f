/**
 * The remote face of one storage daemon's store: StoreApi over an RpcClient
 * (TCP or in-process). Reads are idempotent and retried by the rpc layer on
 * a dropped connection; transactions are not (a retried transaction could
 * apply twice: request ids for that come with replication).
 */
import { notFound } from '../lib/errors.js';
import type { RpcCallOptions, RpcClient } from '../rpc/types.js';
import type { ObjectId, ObjectListOptions, ObjectListPage, ObjectStat, OmapListOptions, OmapPage, StoreApi, StoreOp, StoreReadOptions, StoreSpace } from '../store/types.js';
import * as m from './store-messages.js';

const EMPTY = Buffer.alloc(0);

export class StoreClient implements StoreApi {
  constructor(
    private readonly rpc: RpcClient,
    private readonly callOptions: Omit<RpcCallOptions, 'idempotent'> = {},
  ) {}

  private call(op: number, header: Buffer, payload: readonly Uint8Array[] = [], idempotent = true) {
    return this.rpc.call(op, header, payload, { ...this.callOptions, idempotent });
  }

  async ping(): Promise<m.PingReply> {
    return m.decodePingReply((await this.call(m.StoreOpcode.ping, EMPTY)).header);
  }

  async transact(ops: readonly StoreOp[]): Promise<void> {
    const { header, payload } = m.encodeTransact(ops);
    await this.call(m.StoreOpcode.transact, header, payload, false);
  }

  async read(id: ObjectId, options: StoreReadOptions = {}): Promise<Buffer> {
    // A large reply lands where the caller wants it (options.allocate), straight from the socket.
    const replyBuffer = options.allocate;
    const rpcOptions = { ...this.callOptions, idempotent: true, ...(replyBuffer ? { replyBuffer } : {}) };
    return (await this.rpc.call(m.StoreOpcode.read, m.encodeRead(id, options), [], rpcOptions)).payload;
  }

  async stat(id: ObjectId): Promise<ObjectStat> {
    return m.decodeStat((await this.call(m.StoreOpcode.stat, m.encodeId(id))).header);
  }

  async getXattrs(id: ObjectId): Promise<Map<string, Buffer>> {
    return m.decodeXattrs((await this.call(m.StoreOpcode.getXattrs, m.encodeId(id))).header);
  }

  async getXattr(id: ObjectId, name: string): Promise<Buffer> {
    const value = (await this.getXattrs(id)).get(name);
    if (!value) throw notFound(`object ${id.ns}/${id.name} has no xattr ${name}`);
    return value;
  }

  async omapGet(id: ObjectId, keys: readonly Buffer[]): Promise<Array<Buffer | undefined>> {
    return m.decodeOmapValues((await this.call(m.StoreOpcode.omapGet, m.encodeOmapGet(id, keys))).header);
  }

  async omapList(id: ObjectId, options: OmapListOptions): Promise<OmapPage> {
    return m.decodeOmapPage((await this.call(m.StoreOpcode.omapList, m.encodeOmapList(id, options))).header);
  }

  async listObjects(options: ObjectListOptions): Promise<ObjectListPage> {
    return m.decodeObjectPage((await this.call(m.StoreOpcode.listObjects, m.encodeListObjects(options))).header);
  }

  async statfs(): Promise<StoreSpace> {
    return m.decodeSpace((await this.call(m.StoreOpcode.statfs, EMPTY)).header);
  }

  close(): Promise<void> {
    return this.rpc.close();
  }
}
