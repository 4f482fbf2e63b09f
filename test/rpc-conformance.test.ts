/**
 * One conformance suite for the RpcClient contract, run against the TCP
 * transport (real loopback sockets) and the in-process one: echo, pipelining
 * with out-of-order replies, error codes, timeouts, abort, the client-side
 * queue bound, frame limits, close semantics, a 64 MiB byte-exact round
 * trip, and streamed payloads both ways: byte-exact, limits checked before a
 * stream is read, and a stream that runs short, runs long or throws failing
 * its call (a request stream with its own error, a reply stream Unavailable)
 * while the transport goes on working. Each test builds its own transport and
 * closes it, also on failure.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, test } from 'vitest';
import type { ErrorCodeName } from '../src/lib/errors.js';
import type { RpcLimits } from '../src/rpc/options.js';
import {
  Fault,
  Op,
  TestService,
  makeInProcess,
  makeTcp,
  pattern,
  rejectionOf,
  streamHeader,
  streamOf,
  u32,
  waitFor,
  type Harness,
  type MakeHarness,
} from './rpc-helpers.js';

const MiB = 1024 * 1024;

describe.each([
  ['tcp', makeTcp],
  ['in-process', makeInProcess],
] as [string, MakeHarness][])('rpc conformance: %s', (_name, make) => {
  let service: TestService;
  let harness: Harness | null = null;

  async function open(limits?: Partial<RpcLimits>): Promise<Harness> {
    service = new TestService();
    harness = await make(service.handler, limits);
    return harness;
  }

  afterEach(async () => {
    service?.releaseAll();
    await harness?.close();
    harness = null;
  });

  test('echo returns header and payload byte-exact, payload parts joined in order', async () => {
    const { client } = await open();
    const reply = await client.call(Op.Echo, Buffer.from('hdr'), [Buffer.from('ab'), new Uint8Array([99]), Buffer.from('de')]);
    expect(reply.header.toString()).toBe('hdr');
    expect(reply.payload.toString()).toBe('abcde');
    const empty = await client.call(Op.Echo, new Uint8Array(0), []);
    expect(empty.header.byteLength).toBe(0);
    expect(empty.payload.byteLength).toBe(0);
  });

  test('1000 concurrent calls are pipelined and matched although replies come out of order', async () => {
    const { client } = await open();
    const completion: number[] = [];
    const calls = Array.from({ length: 1000 }, async (_, i) => {
      const header = Buffer.concat([u32((i * 7919) % 5), u32(i)]);
      const reply = await client.call(Op.Delay, header, [Buffer.from(`payload-${i}`)]);
      expect(reply.header.readUInt32LE(4)).toBe(i);
      expect(reply.payload.toString()).toBe(`payload-${i}`);
      completion.push(i);
    });
    await Promise.all(calls);
    expect(completion).toHaveLength(1000);
    const inOrder = completion.every((v, i) => v === i);
    expect(inOrder).toBe(false);
    expect(service.runningMax).toBeGreaterThan(1);
  });

  test.each(['NotFound', 'Corrupt', 'StaleEpoch', 'NoSpace', 'Conflict'] as ErrorCodeName[])(
    'a handler throwing %s reaches the caller with the same code and message',
    async (code) => {
      const { client } = await open();
      const err = await rejectionOf(client.call(Op.Fail, Buffer.from(`${code}:why it failed`), []));
      expect(err.code).toBe(code);
      expect(err.message).toBe('why it failed');
    },
  );

  test('anything else thrown becomes Internal; an unknown op is the handler’s answer', async () => {
    const { client } = await open();
    const err = await rejectionOf(client.call(Op.Throw, new Uint8Array(0), []));
    expect(err.code).toBe('Internal');
    expect(err.message).toBe('boom');
    expect((await rejectionOf(client.call(999, new Uint8Array(0), []))).code).toBe('NotSupported');
  });

  test('a call without a reply within timeoutMs fails Timeout; the transport keeps working', async () => {
    const { client } = await open();
    const err = await rejectionOf(client.call(Op.Hang, new Uint8Array(0), [], { timeoutMs: 50 }));
    expect(err.code).toBe('Timeout');
    const reply = await client.call(Op.Echo, Buffer.from('still here'), []);
    expect(reply.header.toString()).toBe('still here');
  });

  test('abort: a call in flight fails Aborted; an already-aborted signal never reaches the handler', async () => {
    const { client } = await open();
    const controller = new AbortController();
    const pending = client.call(Op.Hang, new Uint8Array(0), [], { signal: controller.signal });
    await waitFor(() => service.hanging.size === 1, 'the handler to start');
    controller.abort();
    expect((await rejectionOf(pending)).code).toBe('Aborted');

    const callsBefore = service.calls;
    const aborted = AbortSignal.abort();
    expect((await rejectionOf(client.call(Op.Echo, new Uint8Array(0), [], { signal: aborted }))).code).toBe('Aborted');
    expect(service.calls).toBe(callsBefore);
  });

  test('calls beyond the in-flight limit wait in a bounded queue; beyond the queue they fail Busy', async () => {
    const { client } = await open({ connectionInflightMax: 2, rpcQueueMax: 3 });
    const held = Array.from({ length: 5 }, () => client.call(Op.Hang, new Uint8Array(0), []));
    await waitFor(() => service.hanging.size === 2, 'two requests in flight');
    expect((await rejectionOf(client.call(Op.Echo, new Uint8Array(0), []))).code).toBe('Busy');
    expect(service.runningMax).toBe(2);
    // Releasing drains the queue, still two at a time.
    for (let done = 0; done < 5; ) {
      await waitFor(() => service.hanging.size > 0, 'a held request');
      done += service.hanging.size;
      service.releaseAll();
    }
    await Promise.all(held);
    expect(service.runningMax).toBe(2);
  });

  test('requests and replies over the frame limits fail LimitExceeded', async () => {
    const { client } = await open({ frameBytesMax: 1 * MiB, frameHeaderBytesMax: 64 * 1024 });
    const bigHeader = Buffer.alloc(64 * 1024 + 1);
    expect((await rejectionOf(client.call(Op.Echo, bigHeader, []))).code).toBe('LimitExceeded');
    expect((await rejectionOf(client.call(Op.Echo, new Uint8Array(0), [Buffer.alloc(MiB), Buffer.alloc(1)]))).code).toBe(
      'LimitExceeded',
    );
    expect((await rejectionOf(client.call(Op.Big, u32(MiB + 1), []))).code).toBe('LimitExceeded');
    expect((await client.call(Op.Big, u32(MiB), [])).payload.byteLength).toBe(MiB);
  });

  test('close fails calls in flight with Closed, refuses new calls, and aborts the handler’s signal', async () => {
    const { client } = await open();
    const pending = rejectionOf(client.call(Op.Hang, new Uint8Array(0), []));
    await waitFor(() => service.signals.length === 1, 'the handler to start');
    await client.close();
    expect((await pending).code).toBe('Closed');
    expect((await rejectionOf(client.call(Op.Echo, new Uint8Array(0), []))).code).toBe('Closed');
    await waitFor(() => service.signals[0]!.aborted, 'the handler signal to abort');
  });

  test('a 64 MiB payload round-trips byte-exact', async () => {
    const { client } = await open();
    const payload = randomBytes(64 * MiB);
    const parts = [payload.subarray(0, 1), payload.subarray(1, 40 * MiB), payload.subarray(40 * MiB)];
    const reply = await client.call(Op.Echo, Buffer.from('big'), parts, { timeoutMs: 60_000 });
    expect(reply.payload.byteLength).toBe(payload.byteLength);
    expect(reply.payload.equals(payload)).toBe(true);
  });

  test('streamed payloads arrive byte-exact both ways, whatever their chunking', async () => {
    const { client } = await open();
    const request = pattern(3 * MiB + 5, 1);
    const echoed = await client.call(Op.Echo, Buffer.from('req'), streamOf(request, 100_000));
    expect(echoed.header.toString()).toBe('req');
    expect(echoed.payload.equals(request)).toBe(true);
    for (const [totalBytes, chunkBytes] of [[0, 1], [1, 1], [5 * MiB + 3, MiB], [70_000, 7]]) {
      const reply = await client.call(Op.Stream, streamHeader(totalBytes!, chunkBytes!), []);
      expect(reply.payload.equals(pattern(totalBytes!))).toBe(true);
    }
  });

  test('a request stream that runs short, runs long or throws fails its call; the transport goes on', async () => {
    const { client } = await open();
    const bytes = pattern(200_000);
    for (const [fault, code] of [
      [Fault.Short, 'InvalidArgument'],
      [Fault.Long, 'InvalidArgument'],
      [Fault.Throw, 'Corrupt'],
    ] as const) {
      const err = await rejectionOf(client.call(Op.Echo, new Uint8Array(0), streamOf(bytes, 64 * 1024, { fault })));
      expect(err.code).toBe(code);
      const after = await client.call(Op.Echo, Buffer.from('after'), [bytes]);
      expect(after.payload.equals(bytes)).toBe(true);
    }
  });

  test('a reply stream that runs short, runs long or throws fails its call Unavailable; the transport goes on', async () => {
    const { client } = await open();
    for (const fault of [Fault.Short, Fault.Long, Fault.Throw]) {
      const err = await rejectionOf(client.call(Op.Stream, streamHeader(300_000, 64 * 1024, fault), []));
      expect(err.code).toBe('Unavailable');
      const after = await client.call(Op.Stream, streamHeader(300_000, 64 * 1024), []);
      expect(after.payload.equals(pattern(300_000))).toBe(true);
    }
  });

  test('streams are checked against the limits before a byte is read; a bad length is InvalidArgument', async () => {
    const { client } = await open({ frameBytesMax: MiB, frameHeaderBytesMax: 64 * 1024 });
    const tooBig = streamOf(pattern(MiB + 1), 64 * 1024);
    expect((await rejectionOf(client.call(Op.Echo, new Uint8Array(0), tooBig))).code).toBe('LimitExceeded');
    expect(tooBig.produced()).toBe(0);
    expect((await rejectionOf(client.call(Op.Stream, streamHeader(MiB + 1, 64 * 1024), []))).code).toBe('LimitExceeded');
    const negative = { lengthBytes: -1, chunks: streamOf(pattern(1), 1).chunks };
    expect((await rejectionOf(client.call(Op.Echo, new Uint8Array(0), negative))).code).toBe('InvalidArgument');
    // The reply header (12 bytes) counts against frameBytesMax too.
    expect((await client.call(Op.Stream, streamHeader(MiB - 12, 64 * 1024), [])).payload.byteLength).toBe(MiB - 12);
  });
});
