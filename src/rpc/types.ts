/**
 * The rpc layer's narrow interface: request/reply over a transport, with an
 * opcode, an opaque header (encoded by src/protocol) and payload bytes that
 * travel without extra copies. Two implementations: TCP (tcp.ts) and
 * in-process (inprocess.ts); one conformance suite runs against both.
 *
 * A payload is sent either from memory (a list of buffers, sent in order as
 * one run of bytes) or as a stream whose length is announced up front and
 * whose chunks are produced as the transport sends them (a large object goes
 * out while the next part is still being read). The receiver always gets one
 * contiguous, checksum-verified Buffer: it never sees bytes before they are
 * verified. A stream that ends short of, or runs past, its announced length,
 * or fails midway, cannot be completed on the wire: the transport gives up on
 * the connection (TCP) and the call fails (see RpcClient.call and
 * RpcHandlerReply).
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
  /**
   * Where a large reply payload should land: called (at most once per
   * attempt) with the payload's length as announced, it returns a buffer of
   * exactly that length, which the reply's payload then is (e.g. a pooled
   * buffer the caller reuses after it is done with the reply). A transport
   * may not use it (small payloads, the in-process transport): the payload is
   * then another buffer. The buffer belongs to the transport until the call
   * settles, and only until then: once the call resolved or failed (also by
   * timeout or abort: over TCP a call giving up while its reply lands in the
   * buffer closes its connection) nothing writes into it any more. A call
   * that fails may leave it partly written.
   */
  replyBuffer?: (lengthBytes: number) => Buffer;
}

/**
 * A chunk of a streamed payload with what its producer knows about it:
 * - crc32c: the bytes' CRC-32C, when the producer has it already (the store
 *   verified these bytes against the checksums it stored with them). The TCP
 *   sender then combines it into the frame's trailer (crc32cCombine) instead
 *   of reading the bytes again. A wrong value makes the receiver reject the
 *   frame (payload checksum mismatch): it is never trusted further than that.
 * - release: called once the transport no longer reads the bytes (handed to
 *   the kernel, copied, or dropped with a failed stream), so the producer may
 *   reuse the buffer; possibly never called (the buffer is then garbage).
 */
export interface RpcPayloadPiece {
  readonly bytes: Uint8Array;
  readonly crc32c?: number;
  readonly release?: () => void;
}

/** Payload bytes produced as they are sent; chunks must add up to exactly lengthBytes. */
export interface RpcPayloadStream {
  readonly lengthBytes: number;
  /** Iterated once, when the frame is sent; never again (a call with a streamed payload is not resent once sending began). */
  readonly chunks: AsyncIterable<Uint8Array | RpcPayloadPiece>;
}

/** In-memory buffers (sent in order as one run of bytes, never copied first) or a stream. */
export type RpcPayload = readonly Uint8Array[] | RpcPayloadStream;

export interface RpcReply {
  header: Buffer;
  /** Payload bytes (possibly a view into a larger receive buffer; empty when none). */
  payload: Buffer;
}

export interface RpcClient {
  /**
   * A streamed payload that fails (its chunks throw, or add up to more or
   * fewer bytes than lengthBytes: InvalidArgument) fails the call with that
   * error; over TCP the connection closes with it (other calls on it see a
   * lost connection).
   */
  call(op: number, header: Uint8Array, payload: RpcPayload, options?: RpcCallOptions): Promise<RpcReply>;
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
  /**
   * A streamed reply is sent as its chunks come, respecting the socket's
   * backpressure; the request stays in flight until its last byte is written.
   * Errors must be thrown before the reply is returned: a stream that fails
   * or produces the wrong number of bytes closes the connection, and the
   * caller sees Unavailable (the call was lost with the connection).
   */
  payload?: RpcPayload;
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
