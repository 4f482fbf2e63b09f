/**
 * Connections from this daemon to the other daemons, by disk id (addresses
 * from the map). Through them a primary replicates writes and drives
 * recovery; peer stores are read with the store protocol (StoreClient) and
 * written only through fenced pg messages.
 */
import type { Io } from '../io/io.js';
import { TesseraError } from '../lib/errors.js';
import { ConnectionPool } from '../protocol/connections.js';
import { StoreClient } from '../protocol/store-client.js';
import type { RpcClient } from '../rpc/types.js';
import type { MapView } from '../../cluster/map-view.js';

export class Peers {
  private readonly pool: ConnectionPool;

  constructor(
    io: Io,
    private readonly view: MapView,
  ) {
    this.pool = new ConnectionPool(io, { rpcAttemptsMax: 2 });
  }

  rpc(diskId: number): RpcClient {
    const address = this.view.address(diskId);
    if (!address) throw new TesseraError('NotFound', `disk ${diskId} is not in the map`);
    return this.pool.get(address);
  }

  store(diskId: number): StoreClient {
    return new StoreClient(this.rpc(diskId), { timeoutMs: 60_000 });
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
