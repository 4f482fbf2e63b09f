/**
 * The map service as a process role: the embedded map store and the pg
 * history registry in one directory, served over rpc on one port (map
 * opcodes 100-119, pg history 120-129). `tessera up` runs it in its own
 * process; tests run it in theirs. Daemons and clients reach it with
 * connectMapService().
 */
import { join } from 'node:path';
import type { Io } from '../src/io/io.js';
import { TesseraError } from '../src/lib/errors.js';
import { createTcpClient, createTcpServer } from '../src/rpc/tcp.js';
import type { RpcClient, RpcServer } from '../src/rpc/types.js';
import { MapClient } from './map-client.js';
import { mapOpcodeMax, mapOpcodeMin } from './map-protocol.js';
import { MapServer } from './map-server.js';
import type { MapService } from './map-service.js';
import { EmbeddedMapStore } from './map-store-embedded.js';
import type { ClusterMap } from './map.js';
import { EmbeddedPgHistory, PgHistoryClient, pgHistoryHandler, PgHistoryOpcode, type PgHistory } from './pg-history.js';

export interface MapDaemon {
  port: number;
  service: EmbeddedMapStore;
  history: EmbeddedPgHistory;
  close(): Promise<void>;
}

export async function startMapDaemon(options: { io: Io; dir: string; host: string; port: number; create?: ClusterMap }): Promise<MapDaemon> {
  const { io } = options;
  const service = await EmbeddedMapStore.open({ io, path: join(options.dir, 'map'), ...(options.create ? { create: options.create } : {}) });
  const history = await EmbeddedPgHistory.open(io, join(options.dir, 'map'));
  const mapServer = new MapServer({ io, service });
  const historyHandler = pgHistoryHandler(history);
  let server: RpcServer;
  try {
    server = await createTcpServer({
      io,
      host: options.host,
      port: options.port,
      handler: (request) => {
        if (request.op >= mapOpcodeMin && request.op <= mapOpcodeMax) return mapServer.handler(request);
        if (request.op === PgHistoryOpcode.get || request.op === PgHistoryOpcode.put) return historyHandler(request);
        throw new TesseraError('NotSupported', `unknown operation ${request.op}`);
      },
    });
  } catch (err) {
    await mapServer.close();
    await history.close();
    await service.close();
    throw err;
  }
  return {
    port: server.port,
    service,
    history,
    async close() {
      await mapServer.close();
      await server.close({ drainTimeoutMs: 2000 });
      await history.close();
      await service.close();
    },
  };
}

export interface MapConnection {
  service: MapService;
  history: PgHistory;
  rpc: RpcClient;
  close(): Promise<void>;
}

/** The map service and pg history of a map daemon at "host:port". */
export function connectMapService(io: Io, address: string): MapConnection {
  const at = address.lastIndexOf(':');
  const rpc = createTcpClient({ io, host: address.slice(0, at), port: Number(address.slice(at + 1)) });
  const service = new MapClient({ io, rpc });
  return {
    service,
    history: new PgHistoryClient(rpc),
    rpc,
    async close() {
      await service.close();
      await rpc.close();
    },
  };
}
