/**
 * src/rpc: framed binary request/reply. The interface (types.ts), the TCP
 * transport (tcp.ts) and the in-process one (inprocess.ts); docs/protocol.md
 * describes the wire format.
 */
export type * from './types.js';
export { createTcpServer, createTcpClient, type TcpServerOptions, type TcpClientOptions } from './tcp.js';
export { createInProcessTransport, type InProcessOptions } from './inprocess.js';
export { FailoverRpcClient, failoverServersMax, type FailoverOptions } from './failover.js';
export { resolveRpcLimits, type RpcLimits } from './options.js';
