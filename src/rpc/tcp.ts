/**
 * The TCP transport: framed binary request/reply over one multiplexed
 * connection per endpoint (client) and many connections per daemon (server).
 * The frame format is in frame.ts and docs/protocol.md; the server and client
 * each live in their own module; this one is the entry point callers import.
 */
export { createTcpServer, type TcpServerOptions } from './tcp-server.js';
export { createTcpClient, type TcpClientOptions } from './tcp-client.js';
export { resolveRpcLimits, type RpcLimits } from './options.js';
