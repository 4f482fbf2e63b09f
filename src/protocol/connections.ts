/**
 * One multiplexed rpc client per daemon address, created on first use and
 * reused; shared by the client library and by daemons talking to each other.
 */
import type { Io } from '../io/io.js';
import { TesseraError } from '../lib/errors.js';
import { createTcpClient } from '../rpc/tcp.js';
import type { RpcClient } from '../rpc/types.js';
import type { RpcLimits } from '../rpc/options.js';

export class ConnectionPool {
  private readonly clients = new Map<string, RpcClient>();
  private closed = false;

  constructor(
    private readonly io: Io,
    private readonly limits: Partial<RpcLimits> = {},
  ) {}

  get(address: string): RpcClient {
    if (this.closed) throw new TesseraError('Closed', 'connections are closed');
    let c = this.clients.get(address);
    if (!c) {
      const at = address.lastIndexOf(':');
      if (at <= 0) throw new TesseraError('InvalidArgument', `bad daemon address ${address}`);
      c = createTcpClient({ io: this.io, host: address.slice(0, at), port: Number(address.slice(at + 1)), limits: this.limits });
      this.clients.set(address, c);
    }
    return c;
  }

  /** Drops the connection to an address (e.g. it moved). */
  forget(address: string): void {
    const c = this.clients.get(address);
    this.clients.delete(address);
    void c?.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(all.map((c) => c.close().catch(() => undefined)));
  }
}
