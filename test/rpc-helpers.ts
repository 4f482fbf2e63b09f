/**
 * Shared by the rpc tests: a test handler with a few ops (echo, fail, hang,
 * delay), the two transports behind one factory, raw-socket helpers, and a
 * bounded poll. Every wait here has a bound, so a broken transport fails a
 * test instead of hanging it.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { systemIo } from '../src/io/system.js';
import { TesseraError, type ErrorCodeName } from '../src/lib/errors.js';
import { FrameKind, encodeFrameHead, payloadsCrc32c } from '../src/rpc/frame.js';
import { createInProcessTransport } from '../src/rpc/inprocess.js';
import type { RpcLimits } from '../src/rpc/options.js';
import { createTcpClient, createTcpServer } from '../src/rpc/tcp.js';
import type { RpcClient, RpcHandler, RpcHandlerReply, RpcRequestContext, RpcServer } from '../src/rpc/types.js';

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
} as const;

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
  const head = encodeFrameHead({
    kind: FrameKind.Request,
    op,
    requestId,
    header,
    payloads: [payload],
    payloadBytes: payload.byteLength,
    payloadCrc: payloadsCrc32c([payload]),
  });
  return Buffer.concat([head, payload]);
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
