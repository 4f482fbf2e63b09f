/**
 * The rpc layer's narrow interface: request/reply over a transport, with an
 * opcode, an opaque header (encoded by src/protocol) and payload bytes that
 * travel without extra copies. Two implementations: TCP (tcp.ts) and
 * in-process (inprocess.ts); one conformance suite runs against both.
 *
 * Errors: a handler that throws a TesseraError makes the caller's promise
 * reject with a TesseraError of the same code and message; anything else
 * thrown becomes Internal. Transport failures are Unavailable (cannot reach
 * or connection lost), Timeout (no reply within timeoutMs), Closed (client
 * or server closing), Aborted (caller's signal).
 */
export interface RpcCallOptions {
  /** Default limits.rpcTimeoutMsDefault. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * The request may be sent again if the connection fails before a reply
   * (reads, and writes the server deduplicates by request id). Default false.
   */
  idempotent?: boolean;
}

export interface RpcReply {
  header: Buffer;
  /** Payload bytes (possibly a view into a larger receive buffer; empty when none). */
  payload: Buffer;
}

export interface RpcClient {
  /** payload: sent as one contiguous run of bytes, in order, without being copied first. */
  call(op: number, header: Uint8Array, payload: readonly Uint8Array[], options?: RpcCallOptions): Promise<RpcReply>;
  /** Fails calls in flight with Closed and releases connections. */
  close(): Promise<void>;
}

export interface RpcRequestContext {
  op: number;
  header: Buffer;
  payload: Buffer;
  /** Aborted when the connection closes or the server shuts down. */
  signal: AbortSignal;
  /** Identifies the connection (for per-connection state such as peer identity). */
  connectionId: number;
}

export interface RpcHandlerReply {
  header: Uint8Array;
  payload?: readonly Uint8Array[];
}

export type RpcHandler = (request: RpcRequestContext) => Promise<RpcHandlerReply>;

export interface RpcServerStats {
  connections: number;
  inflightRequests: number;
  inflightBytes: number;
  framesRejected: number;
}

export interface RpcServer {
  readonly port: number;
  stats(): RpcServerStats;
  /**
   * Stops accepting connections and new requests, waits (up to drainTimeoutMs)
   * for requests in flight to be answered, then closes every connection.
   */
  close(options?: { drainTimeoutMs?: number }): Promise<void>;
}
