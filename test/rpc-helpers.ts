/**
 * Shared by the rpc tests: a test handler with a few ops (echo, fail, hang,
 * delay, big and streamed replies), streamed payloads with injected faults,
 * the two transports behind one factory, raw-socket helpers, and a bounded
 * poll. Every wait here has a bound, so a broken transport fails a
 * test instead of hanging it.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { systemIo } from '../src/io/system.js';
import { TesseraError, type ErrorCodeName } from '../src/lib/errors.js';
import { FrameKind, encodeFrame } from '../src/rpc/frame.js';
import { createInProcessTransport } from '../src/rpc/inprocess.js';
import type { RpcLimits } from '../src/rpc/options.js';
import { createTcpClient, createTcpServer } from '../src/rpc/tcp.js';
import type { RpcClient, RpcHandler, RpcHandlerReply, RpcPayloadStream, RpcRequestContext, RpcServer } from '../src/rpc/types.js';

export const Op = {
  /** Replies with the request's header and payload. */
  Echo: 1,
  /** Throws TesseraError(code name = header up to ':', message = the rest). */
  Fail: 2,
  /** Throws a plain Error('boom'). */
  Throw: 3,
  /** Waits until released by the test or until its signal aborts. */
  Hang: 4,
  /** Sleeps header.readUInt32LE(0) ms, then echoes. */
  Delay: 5,
  /** Replies with a payload of header.readUInt32LE(0) bytes. */
  Big: 6,
  /** Replies with a streamed payload: header = streamHeader(...); the bytes are pattern(totalBytes). */
  Stream: 7,
} as const;

/** How a test stream misbehaves. */
export const Fault = { None: 0, Short: 1, Long: 2, Throw: 3 } as const;
export type FaultValue = (typeof Fault)[keyof typeof Fault];

/** Deterministic bytes: byte i is (i * 7 + seed) & 0xff. */
export function pattern(lengthBytes: number, seed = 0): Buffer {
  const out = Buffer.allocUnsafe(lengthBytes);
  for (let i = 0; i < lengthBytes; i++) out[i] = (i * 7 + seed) & 0xff;
  return out;
}

/**
 * A stream announcing bytes.byteLength that yields them in chunks of
 * chunkBytes (yielding to the event loop between chunks); with a fault it
 * yields one byte fewer (Short) or one more (Long), or throws
 * Corrupt('disk fell over') after its first chunk (Throw). onChunk sees each
 * chunk index before it is yielded (a test may hold the stream there).
 */
export function streamOf(
  bytes: Buffer,
  chunkBytes: number,
  options: { fault?: FaultValue; onChunk?: (index: number) => Promise<void> | void } = {},
): RpcPayloadStream & { produced: () => number } {
  const fault = options.fault ?? Fault.None;
  let produced = 0;
  const body = fault === Fault.Short ? bytes.subarray(0, bytes.byteLength - 1) : fault === Fault.Long ? Buffer.concat([bytes, Buffer.from([1])]) : bytes;
  async function* chunks(): AsyncGenerator<Uint8Array> {
    for (let at = 0, i = 0; at < body.byteLength; at += chunkBytes, i++) {
      if (fault === Fault.Throw && i === 1) throw new TesseraError('Corrupt', 'disk fell over');
      await options.onChunk?.(i);
      await new Promise((resolve) => setImmediate(resolve));
      produced++;
      yield body.subarray(at, at + chunkBytes);
    }
  }
  return { lengthBytes: bytes.byteLength, chunks: chunks(), produced: () => produced };
}

export function streamHeader(totalBytes: number, chunkBytes: number, fault: FaultValue = Fault.None): Buffer {
  return Buffer.concat([u32(totalBytes), u32(chunkBytes), u32(fault)]);
}

export const io = systemIo();

/** The test handler, plus what it has seen (for assertions). */
export class TestService {
  readonly hanging = new Set<() => void>();
  readonly signals: AbortSignal[] = [];
  running = 0;
  runningMax = 0;
  calls = 0;

  readonly handler: RpcHandler = async (request) => {
    this.calls++;
    this.running++;
    this.runningMax = Math.max(this.runningMax, this.running);
    try {
      return await this.serve(request);
    } finally {
      this.running--;
    }
  };

  /** Lets every hanging request finish (with an empty reply). */
  releaseAll(): void {
    for (const release of [...this.hanging]) release();
  }

  /** Lets n hanging requests finish, oldest first. */
  release(n: number): void {
    for (const release of [...this.hanging].slice(0, n)) release();
  }

  private async serve(request: RpcRequestContext): Promise<RpcHandlerReply> {
    switch (request.op) {
      case Op.Echo:
        return { header: request.header, payload: [request.payload] };
      case Op.Fail: {
        const text = request.header.toString('utf8');
        const split = text.indexOf(':');
        throw new TesseraError(text.slice(0, split) as ErrorCodeName, text.slice(split + 1));
      }
      case Op.Throw:
        throw new Error('boom');
      case Op.Hang:
        this.signals.push(request.signal);
        await this.hang(request.signal);
        return { header: request.header };
      case Op.Delay:
        await io.clock.sleep(request.header.readUInt32LE(0));
        return { header: request.header, payload: [request.payload] };
      case Op.Big:
        return { header: new Uint8Array(0), payload: [Buffer.alloc(request.header.readUInt32LE(0))] };
      case Op.Stream: {
        const [totalBytes, chunkBytes, fault] = [0, 4, 8].map((at) => request.header.readUInt32LE(at)) as [number, number, FaultValue];
        return { header: request.header, payload: streamOf(pattern(totalBytes), chunkBytes, { fault }) };
      }
      default:
        throw new TesseraError('NotSupported', `op ${request.op}`);
    }
  }

  private hang(signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const release = (): void => {
        this.hanging.delete(release);
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        this.hanging.delete(release);
        reject(new TesseraError('Closed', 'connection closed'));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      this.hanging.add(release);
    });
  }
}

export interface Harness {
  client: RpcClient;
  /** Only for TCP. */
  server?: RpcServer;
  close(): Promise<void>;
}

export type MakeHarness = (handler: RpcHandler, limits?: Partial<RpcLimits>) => Promise<Harness>;

export const makeTcp: MakeHarness = async (handler, limits) => {
  const server = await createTcpServer({ io, host: '127.0.0.1', port: 0, handler, limits });
  const client = createTcpClient({ io, host: '127.0.0.1', port: server.port, limits });
  return {
    client,
    server,
    close: async () => {
      await client.close();
      await server.close({ drainTimeoutMs: 1000 });
    },
  };
};

export const makeInProcess: MakeHarness = async (handler, limits) => {
  const client = createInProcessTransport(handler, { io, limits });
  return { client, close: () => client.close() };
};

/** Polls until predicate() holds; fails after timeoutMs. */
export async function waitFor(predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await io.clock.sleep(5);
  }
}

/** Resolves with the rejection of promise (fails if it resolves). */
export async function rejectionOf(promise: Promise<unknown>): Promise<TesseraError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof TesseraError) return err;
    throw new Error(`expected a TesseraError, got ${String(err)}`);
  }
  throw new Error('expected a rejection, got a reply');
}

export function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value, 0);
  return b;
}

/** One well-formed request frame as bytes. */
export function requestFrame(op: number, requestId: number, header: Uint8Array, payload: Uint8Array = new Uint8Array(0)): Buffer {
  return encodeFrame({ kind: FrameKind.Request, op, requestId, header }, payload);
}

export function connectRaw(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', () => {});
      resolve(socket);
    });
  });
}

/** Resolves when the socket closes; fails after timeoutMs. */
export function closedWithin(socket: Socket, timeoutMs = 5_000): Promise<void> {
  if (socket.closed) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('socket still open')), timeoutMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
