/**
 * What only the TCP transport can get wrong, against a real loopback server:
 * - robustness: garbage, bad magic, oversized lengths, bad checksums, a wrong
 *   frame kind and a truncated frame, each from a raw node:net socket, close
 *   that connection only (counted in framesRejected) while a well-behaved
 *   client on another connection keeps getting answers; the connection limit;
 * - backpressure: with handlers blocked, in-flight requests never exceed the
 *   per-connection, per-server and per-server-bytes limits, and the server
 *   stops reading (the sender's bytes pile up on the sender's side);
 * - failures: idempotent calls are retried when the connection drops before a
 *   reply, others fail Unavailable; refused connections are Unavailable; the
 *   client reconnects lazily to a restarted server;
 * - server close: drains in-flight requests, answers new ones Closed, and
 *   aborts handlers still running at the drain deadline;
 * - streams on the wire: a streamed reply stops being produced when the
 *   reader stops reading (backpressure) and completes when it reads again;
 *   replies finished meanwhile wait behind it, in order; a call giving up
 *   mid-stream closes its connection while queued calls go out on the next;
 *   a streamed request is never resent; a failed reply stream is released;
 *   server close waits for a stream in progress;
 * - pieces with a known crc32c: the trailer is combined from them and the
 *   reply verifies; a wrong one is a payload checksum mismatch at the
 *   receiver (the call fails, no bytes handed out); each piece's release()
 *   runs once, after the socket is done with its bytes;
 * - a call's replyBuffer: a large reply is received into it, and checked; a
 *   call that gives up while its reply is landing there closes its connection,
 *   so nothing lands in the buffer once the call has settled.
 */
import { randomBytes } from 'node:crypto';
import { crc32c } from '../native/index.js';
import type { RpcPayloadPiece } from '../src/rpc/types.js';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { FrameDecoder } from '../src/rpc/decoder.js';
import { FrameKind, encodeFrameHead, frameOverheadBytes, framePrefixBytes } from '../src/rpc/frame.js';
import type { RpcLimits } from '../src/rpc/options.js';
import { createTcpClient, createTcpServer } from '../src/rpc/tcp.js';
import type { RpcClient, RpcHandler, RpcServer } from '../src/rpc/types.js';
import {
  Fault,
  Op,
  TestService,
  closedWithin,
  connectRaw,
  io,
  pattern,
  rejectionOf,
  requestFrame,
  streamHeader,
  streamOf,
  u32,
  waitFor,
} from './rpc-helpers.js';

const MiB = 1024 * 1024;
const host = '127.0.0.1';

/** Everything a test opens, closed after it in reverse order, also on failure. */
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function startServer(handler: RpcHandler, limits?: Partial<RpcLimits>, port = 0): Promise<RpcServer> {
  const server = await createTcpServer({ io, host, port, handler, limits });
  cleanups.push(() => server.close({ drainTimeoutMs: 1000 }));
  return server;
}

function startClient(port: number, limits?: Partial<RpcLimits>): RpcClient {
  const client = createTcpClient({ io, host, port, limits });
  cleanups.push(() => client.close());
  return client;
}

async function raw(port: number): Promise<Socket> {
  const socket = await connectRaw(port);
  cleanups.push(() => void socket.destroy());
  return socket;
}

async function echo(client: RpcClient, text: string): Promise<string> {
  return (await client.call(Op.Echo, Buffer.from(text), [])).header.toString();
}

function prefixWith(fields: { headerBytes?: number; payloadBytes: number }): Buffer {
  const head = encodeFrameHead({
    kind: FrameKind.Request,
    op: Op.Echo,
    requestId: 1,
    header: Buffer.alloc(fields.headerBytes ?? 0),
    payloadBytes: fields.payloadBytes,
  });
  return head.subarray(0, framePrefixBytes);
}

function corrupted(frame: Buffer, offset: number): Buffer {
  const copy = Buffer.from(frame);
  copy[offset < 0 ? copy.length + offset : offset]! ^= 0x10;
  return copy;
}

const goodFrame = requestFrame(Op.Echo, 1, Buffer.from('header'), Buffer.from('payload'));



describe('rpc tcp: a bad peer loses its own connection and nothing else', () => {
  const cases: [string, () => Buffer, boolean][] = [
    ['random garbage', () => Buffer.concat([Buffer.from('GARB'), randomBytes(4096)]), false],
    ['bad magic', () => Buffer.concat([Buffer.from('TSRB'), goodFrame.subarray(4)]), false],
    ['an oversized length prefix (only the 24 prefix bytes are sent)', () => prefixWith({ payloadBytes: 0xffff_fff0 }), false],
    ['a header over frameHeaderBytesMax', () => prefixWith({ headerBytes: 2 * MiB, payloadBytes: 0 }), false],
    ['a bad head checksum', () => corrupted(goodFrame, framePrefixBytes + 1), false],
    ['a bad payload', () => corrupted(goodFrame, -5), false],
    ['a bad payload checksum (trailer)', () => corrupted(goodFrame, -1), false],
    ['a reply frame sent to the server', () => Buffer.concat([Buffer.from(goodFrame.subarray(0, 5)), Buffer.from([FrameKind.Reply]), goodFrame.subarray(6)]), false],
    ['a truncated frame, then the peer closes', () => requestFrame(Op.Echo, 1, Buffer.from('h'), Buffer.alloc(1000)).subarray(0, 500), true],
  ];

  test.each(cases)('%s', async (_name, bytes, endAfter) => {
    const service = new TestService();
    const server = await startServer(service.handler);
    const client = startClient(server.port);
    expect(await echo(client, 'before')).toBe('before');

    const socket = await raw(server.port);
    if (endAfter) socket.end(bytes());
    else socket.write(bytes());
    await closedWithin(socket);

    await waitFor(() => server.stats().framesRejected === 1, 'the frame to be counted as rejected');
    await waitFor(() => server.stats().connections === 1, 'only the bad connection to close');
    expect(await echo(client, 'after')).toBe('after');
    expect(service.calls).toBe(2);
  });

  test('beyond connectionsPerDaemonMax a new connection is closed; the others keep working', async () => {
    const service = new TestService();
    const server = await startServer(service.handler, { connectionsPerDaemonMax: 2 });
    const client = startClient(server.port);
    expect(await echo(client, 'one')).toBe('one');
    const second = await raw(server.port);
    await waitFor(() => server.stats().connections === 2, 'the second connection');
    const third = await raw(server.port);
    await closedWithin(third);

    const replies = new FrameDecoder({ frameBytesMax: MiB, frameHeaderBytesMax: MiB });
    second.on('data', (chunk: Buffer) => replies.push(chunk));
    second.write(goodFrame);
    await waitFor(() => replies.next(), 'the reply on the second connection');
    expect(replies.header.toString()).toBe('header');
    expect(await echo(client, 'still')).toBe('still');
  });
});

describe('rpc tcp: backpressure', () => {
  test('in flight never exceeds the per-connection and per-server limits', async () => {
    const service = new TestService();
    const perConnection = new Map<number, number>();
    let perConnectionMax = 0;
    const handler: RpcHandler = async (request) => {
      const n = (perConnection.get(request.connectionId) ?? 0) + 1;
      perConnection.set(request.connectionId, n);
      perConnectionMax = Math.max(perConnectionMax, n);
      try {
        return await service.handler(request);
      } finally {
        perConnection.set(request.connectionId, perConnection.get(request.connectionId)! - 1);
      }
    };
    const server = await startServer(handler, { connectionInflightMax: 4, daemonInflightMax: 6 });
    const clients = [startClient(server.port), startClient(server.port)];
    const calls = clients.flatMap((client) => Array.from({ length: 40 }, (_, i) => client.call(Op.Hang, u32(i), [])));

    await waitFor(() => service.running === 6, 'the server limit to fill');
    await io.clock.sleep(100); // room for anything that should not happen
    expect(server.stats().inflightRequests).toBe(6);
    expect(service.runningMax).toBe(6);
    expect(perConnectionMax).toBe(4);

    let answered = 0;
    for (const call of calls) void call.then(() => answered++);
    while (answered < calls.length) {
      await waitFor(() => service.hanging.size > 0 || answered === calls.length, 'a request to release');
      service.release(1);
      await io.clock.sleep(1);
    }
    expect(service.runningMax).toBe(6);
    expect(perConnectionMax).toBe(4);
    expect(server.stats()).toMatchObject({ inflightRequests: 0, inflightBytes: 0 });
  });

  test('request bytes in flight stop admitting once daemonInflightBytesMax is reached', async () => {
    const service = new TestService();
    const server = await startServer(service.handler, { daemonInflightBytesMax: MiB });
    const client = startClient(server.port);
    const payload = Buffer.alloc(600 * 1024);
    const calls = Array.from({ length: 6 }, () => client.call(Op.Hang, new Uint8Array(0), [payload]));
    await waitFor(() => service.running === 2, 'two requests admitted');
    await io.clock.sleep(100);
    expect(service.running).toBe(2);
    expect(server.stats().inflightBytes).toBe(2 * payload.byteLength);
    while (service.calls < 6 || service.hanging.size > 0) {
      service.releaseAll();
      await io.clock.sleep(5);
    }
    await Promise.all(calls);
    expect(service.runningMax).toBe(2);
  });

  test('a server at its limit stops reading: the sender’s bytes pile up on the sender’s side', async () => {
    const service = new TestService();
    const server = await startServer(service.handler, { connectionInflightMax: 1 });
    const socket = await raw(server.port);
    const replies = new FrameDecoder({ frameBytesMax: MiB, frameHeaderBytesMax: MiB });
    let answered = 0;
    socket.on('data', (chunk: Buffer) => {
      replies.push(chunk);
      while (replies.next()) answered++;
    });
    // More than the kernel could buffer on loopback (tcp_rmem max is often 32 MiB).
    const frames = 96;
    const payload = Buffer.alloc(MiB, 1);
    const frame = requestFrame(Op.Hang, 1, new Uint8Array(0), payload);
    const head = frame.subarray(0, frameOverheadBytes);
    const trailer = frame.subarray(frameOverheadBytes + payload.length);
    for (let i = 0; i < frames; i++) {
      socket.write(head);
      socket.write(payload);
      socket.write(trailer);
    }
    await waitFor(() => service.hanging.size === 1, 'the first request');
    let last = -1;
    await waitFor(() => {
      const now = socket.writableLength;
      const settled = now === last;
      last = now;
      return settled;
    }, 'the sender to stall');
    // Kernel socket buffers hold at most tens of MiB; the rest can only wait in the sender.
    expect(socket.writableLength).toBeGreaterThan(48 * MiB);
    expect(service.calls).toBe(1);

    while (answered < frames) {
      await waitFor(() => service.hanging.size > 0 || answered === frames, 'the next request', 30_000);
      service.releaseAll();
    }
    expect(service.runningMax).toBe(1);
    expect(server.stats().framesRejected).toBe(0);
  });
});

/** A TCP proxy whose connections the test can cut. */
async function startProxy(targetPort: number): Promise<{ port: number; dropAll(): void }> {
  const sockets = new Set<Socket>();
  const proxy: Server = createServer((inbound) => {
    const outbound = netConnect({ host, port: targetPort });
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise<void>((resolve) => proxy.listen(0, host, resolve));
  const dropAll = (): void => {
    for (const s of sockets) s.destroy();
  };
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        dropAll();
        proxy.close(() => resolve());
      }),
  );
  return { port: (proxy.address() as { port: number }).port, dropAll };
}

describe('rpc tcp: connection failures', () => {
  /** A server whose handler cuts the connection for the first `drops` requests, then answers. */
  async function droppingSetup(drops: number, limits?: Partial<RpcLimits>): Promise<{ client: RpcClient; seen: () => number }> {
    let seen = 0;
    let proxy: { port: number; dropAll(): void } | null = null;
    const handler: RpcHandler = async (request) => {
      seen++;
      if (seen <= drops) {
        proxy!.dropAll();
        await new Promise((_, reject) => request.signal.addEventListener('abort', () => reject(request.signal.reason)));
      }
      return { header: Buffer.from('ok') };
    };
    const server = await startServer(handler);
    proxy = await startProxy(server.port);
    return { client: startClient(proxy.port, limits), seen: () => seen };
  }

  test('an idempotent call is sent again when the connection drops before the reply', async () => {
    const { client, seen } = await droppingSetup(1);
    const reply = await client.call(Op.Echo, new Uint8Array(0), [], { idempotent: true });
    expect(reply.header.toString()).toBe('ok');
    expect(seen()).toBe(2);
  });

  test('a non-idempotent call fails Unavailable when the connection drops before the reply', async () => {
    const { client, seen } = await droppingSetup(1);
    expect((await rejectionOf(client.call(Op.Echo, new Uint8Array(0), []))).code).toBe('Unavailable');
    expect(seen()).toBe(1);
    expect((await client.call(Op.Echo, new Uint8Array(0), [])).header.toString()).toBe('ok');
  });

  test('retries are bounded by rpcAttemptsMax', async () => {
    const { client, seen } = await droppingSetup(100, { rpcAttemptsMax: 3 });
    expect((await rejectionOf(client.call(Op.Echo, new Uint8Array(0), [], { idempotent: true }))).code).toBe('Unavailable');
    expect(seen()).toBe(3);
  });

  test('a refused connection is Unavailable', async () => {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, host, resolve));
    const port = (probe.address() as { port: number }).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const client = startClient(port);
    const err = await rejectionOf(client.call(Op.Echo, new Uint8Array(0), [], { idempotent: true }));
    expect(err.code).toBe('Unavailable');
  });

  test('the client reconnects lazily to a restarted server', async () => {
    const first = await startServer(new TestService().handler);
    const port = first.port;
    const client = startClient(port);
    expect(await echo(client, 'first')).toBe('first');
    await first.close();
    await startServer(new TestService().handler, undefined, port);
    expect(await echo(client, 'second')).toBe('second');
  });
});

describe('rpc tcp: server close', () => {
  test('drains requests in flight and answers new ones Closed', async () => {
    const service = new TestService();
    const server = await startServer(service.handler);
    const client = startClient(server.port);
    const inflight = client.call(Op.Hang, Buffer.from('in flight'), []);
    await waitFor(() => service.hanging.size === 1, 'the request to start');
    const closing = server.close({ drainTimeoutMs: 10_000 });
    expect((await rejectionOf(client.call(Op.Echo, new Uint8Array(0), []))).code).toBe('Closed');
    expect(service.calls).toBe(1); // the refused request never reached the handler
    service.releaseAll();
    expect((await inflight).header.toString()).toBe('in flight');
    await closing;
    expect(server.stats()).toMatchObject({ connections: 0, inflightRequests: 0 });
  });

  test('handlers still running at the drain deadline have their signal aborted', async () => {
    const service = new TestService();
    const server = await startServer(service.handler);
    const client = startClient(server.port);
    const stuck = rejectionOf(client.call(Op.Hang, new Uint8Array(0), []));
    await waitFor(() => service.signals.length === 1, 'the request to start');
    await server.close({ drainTimeoutMs: 50 });
    expect(service.signals[0]!.aborted).toBe(true);
    expect((await stuck).code).toBe('Unavailable');
  });
});

/** A promise the test resolves. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

describe('rpc tcp: streamed payloads on the wire', () => {
  test('a streamed reply is produced only as fast as the peer reads it, and completes when it reads again', async () => {
    const chunk = Buffer.alloc(MiB, 5);
    const chunks = 100;
    let produced = 0;
    const handler: RpcHandler = async () => ({
      header: new Uint8Array(0),
      payload: {
        lengthBytes: chunks * MiB,
        chunks: (async function* () {
          for (let i = 0; i < chunks; i++) {
            produced++;
            yield chunk;
          }
        })(),
      },
    });
    const server = await startServer(handler);
    const socket = await raw(server.port);
    socket.pause();
    socket.write(requestFrame(Op.Echo, 1, new Uint8Array(0)));
    let last = -1;
    await waitFor(() => {
      const settled = produced > 0 && produced === last;
      last = produced;
      return settled;
    }, 'the stream to stall');
    // What the kernel buffers on loopback (tcp_rmem up to 32 MiB, tcp_wmem up to 4 MiB) plus two chunks in hand.
    expect(produced).toBeLessThan(48);

    const replies = new FrameDecoder({ frameBytesMax: 130 * MiB, frameHeaderBytesMax: MiB });
    let done = false;
    socket.on('data', (bytes: Buffer) => {
      replies.push(bytes);
      done ||= replies.next();
    });
    socket.resume();
    await waitFor(() => done, 'the whole reply', 30_000);
    expect(replies.payload.byteLength).toBe(chunks * MiB);
    expect(replies.payload.every((b) => b === 5)).toBe(true);
    expect(produced).toBe(chunks);
  });

  test('replies finished during a stream wait behind it and go out in order', async () => {
    const held = gate();
    const service = new TestService();
    const handler: RpcHandler = async (request) => {
      if (request.op !== Op.Stream) return service.handler(request);
      return { header: new Uint8Array(0), payload: streamOf(pattern(4 * MiB), MiB, { onChunk: (i) => (i === 2 ? held.promise : undefined) }) };
    };
    const server = await startServer(handler);
    const client = startClient(server.port);
    const order: string[] = [];
    const streamed = client.call(Op.Stream, new Uint8Array(0), []).then((reply) => (order.push('stream'), reply));
    await io.clock.sleep(50);
    const echoed = client.call(Op.Echo, Buffer.from('behind'), []).then((reply) => (order.push('echo'), reply));
    await io.clock.sleep(100);
    expect(order).toEqual([]);
    held.open();
    expect((await streamed).payload.equals(pattern(4 * MiB))).toBe(true);
    expect((await echoed).header.toString()).toBe('behind');
    expect(order).toEqual(['stream', 'echo']);
  });

  test('a call that gives up mid-stream closes its connection; calls waiting behind it go out on the next', async () => {
    const service = new TestService();
    const server = await startServer(service.handler);
    const client = startClient(server.port);
    const stuck = streamOf(pattern(4 * MiB), MiB, { onChunk: (i) => (i === 1 ? new Promise<void>(() => {}) : undefined) });
    const timedOut = rejectionOf(client.call(Op.Echo, new Uint8Array(0), stuck, { timeoutMs: 200 }));
    await io.clock.sleep(50);
    const behind = client.call(Op.Echo, Buffer.from('behind'), []);
    expect((await timedOut).code).toBe('Timeout');
    expect((await behind).header.toString()).toBe('behind');
    // (The server sees the old connection end in the middle of a frame.)
    await waitFor(() => server.stats().connections === 1, 'the old connection to go');
  });

  test('a reply stream that fails midway is released on the server; a streamed request is never resent', async () => {
    const service = new TestService();
    const server = await startServer(service.handler);
    const client = startClient(server.port);
    expect((await rejectionOf(client.call(Op.Stream, streamHeader(4 * MiB, MiB, Fault.Throw), [], { idempotent: true }))).code).toBe('Unavailable');
    expect(service.calls).toBe(3); // an idempotent call with an in-memory payload is resent (rpcAttemptsMax)
    await waitFor(() => server.stats().inflightRequests === 0 && server.stats().inflightBytes === 0, 'the requests to be released');

    let seen = 0;
    let proxy: { port: number; dropAll(): void } | null = null;
    const dropping = await startServer(async (request) => {
      seen++;
      proxy!.dropAll();
      await new Promise((_, reject) => request.signal.addEventListener('abort', () => reject(request.signal.reason)));
      return { header: new Uint8Array(0) };
    });
    proxy = await startProxy(dropping.port);
    const viaProxy = startClient(proxy.port);
    const err = await rejectionOf(viaProxy.call(Op.Echo, new Uint8Array(0), streamOf(pattern(1000), 100), { idempotent: true }));
    expect(err.code).toBe('Unavailable');
    expect(seen).toBe(1);
  });

  test('server close waits for a reply stream in progress', async () => {
    const held = gate();
    const server = await startServer(async () => ({ header: new Uint8Array(0), payload: streamOf(pattern(2 * MiB), MiB, { onChunk: (i) => (i === 1 ? held.promise : undefined) }) }));
    const client = startClient(server.port);
    const reply = client.call(Op.Echo, new Uint8Array(0), []);
    await waitFor(() => server.stats().inflightRequests === 1, 'the request to be in flight');
    await io.clock.sleep(50);
    let closed = false;
    const closing = server.close({ drainTimeoutMs: 10_000 }).then(() => (closed = true));
    await io.clock.sleep(100);
    expect(closed).toBe(false);
    held.open();
    expect((await reply).payload.equals(pattern(2 * MiB))).toBe(true);
    await closing;
  });

  test('pieces with a known crc32c: the trailer is combined from them; a wrong crc fails the call; release runs after the write', async () => {
    const body = randomBytes(3 * MiB + 12345);
    const pieceBytes = MiB;
    const released: number[] = [];
    let lie = false;
    let sent = 0;
    const handler: RpcHandler = async () => ({
      header: new Uint8Array(0),
      payload: {
        lengthBytes: body.byteLength,
        chunks: (async function* (): AsyncGenerator<RpcPayloadPiece> {
          for (let at = 0, i = 0; at < body.byteLength; at += pieceBytes, i++) {
            // A copy the test scribbles over once released: bytes still being sent would arrive wrong.
            const bytes = Buffer.from(body.subarray(at, at + pieceBytes));
            const index = i;
            const crc = crc32c(bytes) ^ (lie && i === 2 ? 1 : 0);
            sent++;
            yield { bytes, crc32c: crc >>> 0, release: () => { released.push(index); bytes.fill(0xee); } };
          }
        })(),
      },
    });
    const server = await startServer(handler);
    const client = startClient(server.port);
    for (let round = 0; round < 3; round++) {
      const reply = await client.call(Op.Echo, new Uint8Array(0), []);
      expect(reply.payload.equals(body)).toBe(true);
    }
    await waitFor(() => released.length === sent, 'every piece released');
    expect(released.length).toBe(12);
    expect(new Set(released.map((x, i) => `${Math.floor(i / 4)}:${x}`)).size).toBe(12);
    lie = true;
    const err = await rejectionOf(client.call(Op.Echo, new Uint8Array(0), []));
    expect(err.code).toBe('Unavailable');
    expect(err.message).toMatch(/payload checksum mismatch/);
  });

  test("a call's replyBuffer: a large reply lands in the buffer it gave, a small one may not; a corrupt reply in it still fails", async () => {
    const big = randomBytes(MiB + 7);
    let corrupt = false;
    const handler: RpcHandler = async ({ header }) => {
      if (header.toString() === 'small') return { header: new Uint8Array(0), payload: [Buffer.from('tiny')] };
      // A lying crc on the stream stands for bytes damaged on the way.
      const piece: RpcPayloadPiece = { bytes: big, crc32c: (crc32c(big) ^ (corrupt ? 1 : 0)) >>> 0 };
      return { header: new Uint8Array(0), payload: { lengthBytes: big.length, chunks: (async function* () { yield piece; })() } };
    };
    const server = await startServer(handler);
    const client = startClient(server.port);
    const given: Buffer[] = [];
    const replyBuffer = (lengthBytes: number): Buffer => {
      given.push(Buffer.alloc(lengthBytes));
      return given[given.length - 1]!;
    };
    for (let round = 0; round < 3; round++) {
      const reply = await client.call(Op.Echo, Buffer.from('big'), [], { replyBuffer });
      expect(reply.payload).toBe(given[round]);
      expect(reply.payload.equals(big)).toBe(true);
    }
    const small = await client.call(Op.Echo, Buffer.from('small'), [], { replyBuffer });
    expect(small.payload.toString()).toBe('tiny');
    expect(given.length).toBe(3);
    corrupt = true;
    const err = await rejectionOf(client.call(Op.Echo, Buffer.from('big'), [], { replyBuffer }));
    expect(err.message).toMatch(/payload checksum mismatch/);
  });

  test('a call giving up while its reply lands in its replyBuffer closes the connection: nothing lands there after it settled', async () => {
    const body = pattern(2 * MiB, 3);
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let streamDone = false;
    const handler: RpcHandler = async ({ header }) => {
      if (header.toString() !== 'held') return { header, payload: [] };
      async function* chunks(): AsyncGenerator<Uint8Array> {
        try {
          yield body.subarray(0, MiB);
          // The second half waits for the test: the client is mid-payload meanwhile.
          await held;
          yield body.subarray(MiB);
        } finally {
          streamDone = true;
        }
      }
      return { header: new Uint8Array(0), payload: { lengthBytes: body.byteLength, chunks: chunks() } };
    };
    const server = await startServer(handler);
    const client = startClient(server.port);
    const into = Buffer.alloc(2 * MiB);
    const abort = new AbortController();
    const call = rejectionOf(client.call(Op.Echo, Buffer.from('held'), [], { replyBuffer: (n) => into.subarray(0, n), signal: abort.signal }));
    // Part of the first half has landed in the caller's buffer.
    await waitFor(() => into[0] === body[0] && into[1] === body[1], 'the reply to start landing in the buffer');
    abort.abort();
    expect((await call).code).toBe('Aborted');
    const snapshot = Buffer.from(into);
    release();
    await waitFor(() => streamDone, 'the server to finish (or drop) the stream');
    // A later call is answered (on a new connection): had the old one lived on, its rest would have landed before this reply.
    expect((await client.call(Op.Echo, Buffer.from('after'), [])).header.toString()).toBe('after');
    expect(into.equals(snapshot)).toBe(true);
    expect(into.subarray(MiB).equals(Buffer.alloc(MiB))).toBe(true);
  });
});
