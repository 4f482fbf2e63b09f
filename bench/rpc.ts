/**
 * Throughput of the rpc layer over loopback TCP, one direction at a time, the
 * way the storage daemon uses it: "get" (a small request, a reply payload of
 * 4 KiB or 4 MiB) and "put" (a request payload of that size, an empty reply),
 * at concurrency 1 and 64, with the server in a child process as a daemon
 * would be; plus "get stream" (the 4 MiB reply produced as a stream of 1 MiB
 * chunks) and the in-process transport (no bytes move: per-call overhead).
 *
 * Baseline, measured in the same run and alternated with every TCP case for
 * several rounds (a shared machine's speed drifts): raw node:net loopback
 * throughput, one way, the child writing 4 MiB buffers as fast as the parent
 * reads them (no framing, no checksums). Each line is one JSON object with
 * medians over the rounds: {name, opsPerSec, bytesPerSec, p50Ms, p99Ms,
 * baseline, baselineValue (bytes/s), ratioToBaseline, rounds (ops/s of each),
 * clientCpuMsPerOp, serverCpuMsPerOp}; the CPU figures (process CPU time per operation, both
 * sides) are steadier than throughput when other work shares the cores.
 * Not a test: nothing here asserts.
 *
 * Run: npm run build && node dist/bench/rpc.js [--seconds 2] [--rounds 3] [--only SUBSTRING]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { systemIo } from '../src/io/system.js';
import { createInProcessTransport } from '../src/rpc/inprocess.js';
import { createTcpClient, createTcpServer } from '../src/rpc/tcp.js';
import type { RpcClient, RpcHandler } from '../src/rpc/types.js';
import { emit, percentile, printHost } from './lib.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const { values: args } = parseArgs({ options: { seconds: { type: 'string' }, rounds: { type: 'string' }, only: { type: 'string' }, serve: { type: 'boolean' } } });
const seconds = Number(args.seconds ?? 2);
const rounds = Number(args.rounds ?? 3);
const io = systemIo();

const Op = { Get: 1, Put: 2, GetStream: 3 } as const;
const sizes = [4 * KiB, 4 * MiB];
const streamChunkBytes = 1 * MiB;
const empty = Buffer.alloc(0);

/** Replies to Get with a payload of the size in the header; to Put with nothing. */
function benchHandler(): RpcHandler {
  const bodies = new Map(sizes.map((size) => [size, Buffer.alloc(size, 0xab)]));
  return async ({ op, header }) => {
    if (op === Op.Put) return { header: empty };
    const body = bodies.get(header.readUInt32LE(0))!;
    if (op === Op.Get) return { header: empty, payload: [body] };
    return {
      header: empty,
      payload: {
        lengthBytes: body.byteLength,
        chunks: (async function* () {
          for (let at = 0; at < body.byteLength; at += streamChunkBytes) yield body.subarray(at, at + streamChunkBytes);
        })(),
      },
    };
  };
}

interface Sample {
  ops: number;
  elapsedSec: number;
  latenciesMs: number[];
  clientCpuMs: number;
  serverCpuMs: number;
}

/** Closed loop: `concurrency` callers for `seconds`, after a short warm-up. */
async function sample(client: RpcClient, op: number, sizeBytes: number, concurrency: number, serverCpuMs: () => Promise<number>): Promise<Sample> {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(sizeBytes, 0);
  const request = op === Op.Put ? [Buffer.alloc(sizeBytes, 0xcd)] : [];
  const expectBytes = op === Op.Put ? 0 : sizeBytes;
  const latenciesMs: number[] = [];
  let measuring = false;
  let stopAtMs = performance.now() + 300;
  const worker = async (): Promise<void> => {
    while (performance.now() < stopAtMs) {
      const startMs = performance.now();
      const reply = await client.call(op, header, request, { timeoutMs: 60_000 });
      if (reply.payload.byteLength !== expectBytes) throw new Error(`reply of ${reply.payload.byteLength} bytes, expected ${expectBytes}`);
      if (measuring) latenciesMs.push(performance.now() - startMs);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  measuring = true;
  const server0 = await serverCpuMs();
  const cpu0 = process.cpuUsage();
  const beginMs = performance.now();
  stopAtMs = beginMs + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedSec = (performance.now() - beginMs) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const serverCpu = (await serverCpuMs()) - server0;
  return { ops: latenciesMs.length, elapsedSec, latenciesMs, clientCpuMs: (cpu.user + cpu.system) / 1000, serverCpuMs: serverCpu };
}

/** Raw one-way loopback: bytes/s the parent reads while the child writes 4 MiB buffers. */
async function rawBytesPerSec(port: number): Promise<number> {
  const socket: Socket = await new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, noDelay: true }, () => resolve(s));
  });
  let received = 0;
  socket.on('data', (chunk: Buffer) => (received += chunk.byteLength));
  await new Promise((resolve) => setTimeout(resolve, 200));
  const from = received;
  const beginMs = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const bytesPerSec = (received - from) / ((performance.now() - beginMs) / 1000);
  socket.destroy();
  return bytesPerSec;
}

/** The child: the rpc server and a raw sender; answers 'cpu' with its CPU time; exits on disconnect. */
async function serve(): Promise<void> {
  const rpc = await createTcpServer({ io, host: '127.0.0.1', port: 0, handler: benchHandler() });
  const chunk = Buffer.alloc(4 * MiB, 0xef);
  const raw = createServer({ noDelay: true }, (socket) => {
    socket.on('error', () => {});
    const pump = (): void => {
      while (!socket.destroyed && socket.write(chunk));
    };
    socket.on('drain', pump);
    pump();
  });
  await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
  process.on('message', () => {
    const cpu = process.cpuUsage();
    process.send!({ cpuMs: (cpu.user + cpu.system) / 1000 });
  });
  process.send!({ rpcPort: rpc.port, rawPort: (raw.address() as { port: number }).port });
  process.once('disconnect', () => {
    raw.close();
    void rpc.close({ drainTimeoutMs: 100 }).then(() => process.exit(0));
  });
}

async function startChild(): Promise<{ child: ChildProcess; rpcPort: number; rawPort: number; cpuMs: () => Promise<number> }> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const ports = await new Promise<{ rpcPort: number; rawPort: number }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as { rpcPort: number; rawPort: number }));
    child.once('exit', (code) => reject(new Error(`bench server exited with ${code}`)));
  });
  const cpuMs = (): Promise<number> =>
    new Promise((resolve) => {
      child.once('message', (m) => resolve((m as { cpuMs: number }).cpuMs));
      child.send('cpu');
    });
  return { child, ...ports, cpuMs };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  printHost({ bench: 'rpc', seconds, rounds });
  const { child, rpcPort, rawPort, cpuMs } = await startChild();
  const tcp = createTcpClient({ io, host: '127.0.0.1', port: rpcPort });
  const inProcess = createInProcessTransport(benchHandler(), { io });
  const noCpu = async (): Promise<number> => 0;
  const cases: { name: string; client: RpcClient; op: number; sizeBytes: number; concurrency: number; tcp: boolean }[] = [];
  for (const [label, op] of [['get', Op.Get], ['put', Op.Put], ['get stream', Op.GetStream]] as const) {
    for (const sizeBytes of sizes) {
      if (op === Op.GetStream && sizeBytes < MiB) continue;
      for (const concurrency of [1, 64]) {
        const size = sizeBytes < MiB ? `${sizeBytes / KiB}KiB` : `${sizeBytes / MiB}MiB`;
        cases.push({ name: `rpc tcp ${label} ${size} c${concurrency}`, client: tcp, op, sizeBytes, concurrency, tcp: true });
        if (op !== Op.GetStream) cases.push({ name: `rpc in-process ${label} ${size} c${concurrency}`, client: inProcess, op, sizeBytes, concurrency, tcp: false });
      }
    }
  }
  try {
    for (const c of cases) {
      if (args.only && !c.name.includes(args.only)) continue;
      const samples: Sample[] = [];
      const baselines: number[] = [];
      for (let r = 0; r < rounds; r++) {
        if (c.tcp) baselines.push(await rawBytesPerSec(rawPort));
        samples.push(await sample(c.client, c.op, c.sizeBytes, c.concurrency, c.tcp ? cpuMs : noCpu));
      }
      const opsPerSec = samples.map((s) => s.ops / s.elapsedSec);
      const mid = samples[opsPerSec.indexOf(median(opsPerSec))]!;
      const latencies = [...mid.latenciesMs].sort((a, b) => a - b);
      const bytesPerSec = median(opsPerSec) * c.sizeBytes;
      const baseline = c.tcp ? median(baselines) : 0;
      emit({
        name: c.name,
        opsPerSec: median(opsPerSec),
        bytesPerSec,
        p50Ms: percentile(latencies, 50),
        p99Ms: percentile(latencies, 99),
        ...(c.tcp
          ? { baseline: 'raw node:net loopback, one way, 4 MiB writes', baselineValue: baseline, ratioToBaseline: bytesPerSec / baseline }
          : { baseline: 'none (in-process: no bytes move)' }),
        rounds: opsPerSec.map(Math.round),
        clientCpuMsPerOp: median(samples.map((s) => s.clientCpuMs / s.ops)),
        ...(c.tcp ? { serverCpuMsPerOp: median(samples.map((s) => s.serverCpuMs / s.ops)) } : {}),
      });
    }
  } finally {
    await tcp.close();
    await inProcess.close();
    child.disconnect();
    await new Promise((resolve) => child.once('exit', resolve));
  }
}

if (args.serve) await serve();
else await main();
