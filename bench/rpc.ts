/**
 * Throughput of the rpc layer: echo of 4 KiB and 4 MiB payloads at
 * concurrency 1 and 64, over loopback TCP (server in a child process, as a
 * daemon would be) and in-process. One JSON object per line:
 * {name, opsPerSec, bytesPerSec, p50Ms, p99Ms, baseline, ratioToBaseline}.
 * bytesPerSec counts the request payload once per op (an echo moves it twice).
 * Baseline for TCP rows, measured in the same run: a raw loopback echo stream
 * to the same child (node:net, 4 MiB writes piped back, no framing or
 * checksums), counted the same way. In-process rows have no baseline: no
 * bytes move. Not a test: nothing here asserts.
 *
 * Run (from the repository root; the symlink lets the output find node_modules):
 *   mkdir -p /tmp/rpc-bench && ln -sfn "$PWD/node_modules" /tmp/rpc-bench/node_modules
 *   npx tsc bench/rpc.ts --outDir /tmp/rpc-bench --rootDir . --module NodeNext \
 *     --moduleResolution NodeNext --target ES2022 --strict --skipLibCheck --types node
 *   node /tmp/rpc-bench/bench/rpc.js [secondsPerCase=2]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Socket } from 'node:net';
import { cpus, loadavg, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { systemIo } from '../src/io/system.js';
import { createInProcessTransport } from '../src/rpc/inprocess.js';
import { createTcpClient, createTcpServer } from '../src/rpc/tcp.js';
import type { RpcClient, RpcHandler } from '../src/rpc/types.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const io = systemIo();
const secondsPerCase = Number(process.argv.find((a) => /^[0-9.]+$/.test(a)) ?? 2);
const header = Buffer.from('bench-header');

const echo: RpcHandler = async (request) => ({ header: request.header, payload: [request.payload] });

interface Result {
  opsPerSec: number;
  bytesPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

async function runCase(client: RpcClient, sizeBytes: number, concurrency: number): Promise<Result> {
  const payload = Buffer.alloc(sizeBytes, 0xab);
  const latenciesMs: number[] = [];
  let stopAtMs = performance.now() + 300; // warm-up
  let measuring = false;
  let ops = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() < stopAtMs) {
      const startMs = performance.now();
      const reply = await client.call(1, header, [payload], { timeoutMs: 60_000 });
      if (reply.payload.byteLength !== sizeBytes) throw new Error('short echo');
      if (measuring) {
        latenciesMs.push(performance.now() - startMs);
        ops++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  measuring = true;
  const beginMs = performance.now();
  stopAtMs = beginMs + secondsPerCase * 1000;
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedSec = (performance.now() - beginMs) / 1000;
  latenciesMs.sort((a, b) => a - b);
  const at = (q: number): number => round(latenciesMs[Math.min(latenciesMs.length - 1, Math.floor(q * latenciesMs.length))] ?? 0);
  return { opsPerSec: round(ops / elapsedSec), bytesPerSec: round((ops * sizeBytes) / elapsedSec), p50Ms: at(0.5), p99Ms: at(0.99) };
}

/** Raw loopback echo through the child: bytes/s received back, 4 MiB writes, no framing. */
async function rawEchoBytesPerSec(port: number): Promise<number> {
  const socket: Socket = await new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, noDelay: true }, () => resolve(s));
  });
  let received = 0;
  socket.on('data', (chunk: Buffer) => (received += chunk.byteLength));
  const chunk = Buffer.alloc(4 * MiB, 0xcd);
  const beginMs = performance.now();
  const stopAtMs = beginMs + secondsPerCase * 1000;
  while (performance.now() < stopAtMs) {
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  const sent = socket.bytesWritten;
  while (received < sent) await new Promise((resolve) => setTimeout(resolve, 1));
  const bytesPerSec = received / ((performance.now() - beginMs) / 1000);
  socket.destroy();
  return round(bytesPerSec);
}

/** The child: an rpc echo server and a raw echo server; reports their ports, exits on disconnect. */
async function serve(): Promise<void> {
  const rpc = await createTcpServer({ io, host: '127.0.0.1', port: 0, handler: echo });
  const raw = createServer((socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
  process.send!({ rpcPort: rpc.port, rawPort: (raw.address() as { port: number }).port });
  process.once('disconnect', () => {
    raw.close();
    void rpc.close({ drainTimeoutMs: 100 }).then(() => process.exit(0));
  });
}

async function startChild(): Promise<{ child: ChildProcess; rpcPort: number; rawPort: number }> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve'], { stdio: ['ignore', 'inherit', 'ignore', 'ipc'] });
  const ports = await new Promise<{ rpcPort: number; rawPort: number }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as { rpcPort: number; rawPort: number }));
    child.once('exit', (code) => reject(new Error(`bench server exited with ${code}`)));
  });
  return { child, ...ports };
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

async function main(): Promise<void> {
  const cpu = cpus();
  const host = { cpu: cpu[0]?.model, cores: cpu.length, memBytes: totalmem(), node: process.version, loadAvg1m: loadavg()[0] };
  console.log(JSON.stringify({ host }));
  const { child, rpcPort, rawPort } = await startChild();
  const transports: [string, RpcClient][] = [
    ['tcp', createTcpClient({ io, host: '127.0.0.1', port: rpcPort })],
    ['in-process', createInProcessTransport(echo, { io })],
  ];
  try {
    const baseline = await rawEchoBytesPerSec(rawPort);
    console.log(JSON.stringify({ name: 'baseline: raw loopback tcp echo, 4 MiB writes', opsPerSec: null, bytesPerSec: baseline }));
    for (const [transport, client] of transports) {
      for (const [sizeName, sizeBytes] of [['4KiB', 4 * KiB], ['4MiB', 4 * MiB]] as const) {
        for (const concurrency of [1, 64]) {
          const result = await runCase(client, sizeBytes, concurrency);
          const tcp = transport === 'tcp';
          console.log(
            JSON.stringify({
              name: `rpc echo ${transport} ${sizeName} c${concurrency}`,
              ...result,
              baseline: tcp ? 'raw loopback tcp echo' : null,
              ratioToBaseline: tcp ? round(result.bytesPerSec / baseline) : null,
            }),
          );
        }
      }
    }
  } finally {
    for (const [, client] of transports) await client.close();
    child.disconnect();
    await new Promise((resolve) => child.once('exit', resolve));
  }
}

if (process.argv.includes('--serve')) await serve();
else await main();
