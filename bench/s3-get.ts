/**
 * The per-request cost of small S3 GETs: 4 KiB GETs through one or more S3
 * gateways of one cluster (for instance two builds of `tessera s3` against
 * the same map service: before and after a change), and the cluster layer's
 * own read of the same object (TesseraClient.read) as the baseline, in
 * alternating rounds so every figure sees the same load. For each gateway
 * given with its process id it also reports the gateway's CPU time per
 * request (utime + stime from /proc/PID/stat over the round), which moves
 * much less than ops/s on a shared machine, and this process's own CPU per
 * operation (the SDK client's, or the cluster client's, cost).
 *
 * Usage: node dist/bench/s3-get.js --map HOST:PORT --pool rep --access-key AK --secret-key SK
 *          --gateway NAME=URL[=PID] [--gateway ...] [--rounds 4] [--seconds 5] [--concurrency 1,16] [--size-bytes 4096]
 * Prints one JSON object per (round, target, concurrency), then one summary
 * per (target, concurrency): medians over rounds.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client, type BucketLocationConstraint } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { Agent } from 'node:http';
import { systemIo } from '../src/io/system.js';
import { TesseraClient } from '../src/client/client.js';
import { connectMapService } from '../cluster/map-daemon.js';
import { closedLoop, emit, printHost, resultOf, type BenchResult } from './lib.js';

const { values: args } = parseArgs({
  options: {
    map: { type: 'string' },
    pool: { type: 'string' },
    'access-key': { type: 'string' },
    'secret-key': { type: 'string' },
    gateway: { type: 'string', multiple: true },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    concurrency: { type: 'string' },
    'size-bytes': { type: 'string' },
  },
});
if (!args.map || !args['access-key'] || !args['secret-key'] || !args.gateway?.length) throw new Error('usage: s3-get --map HOST:PORT --access-key AK --secret-key SK --gateway NAME=URL[=PID] ...');
const pool = args.pool ?? 'rep';
const rounds = Number(args.rounds ?? 4);
const seconds = Number(args.seconds ?? 5);
const concurrencies = (args.concurrency ?? '1,16').split(',').map(Number);
const sizeBytes = Number(args['size-bytes'] ?? 4096);
const gateways = args.gateway.map((g) => {
  const [name, url, pid] = g.split('=');
  if (!name || !url) throw new Error(`--gateway ${g}: NAME=URL[=PID]`);
  return { name, url, pid: pid ? Number(pid) : null };
});

/** utime and stime of a process, ms (clock ticks of 10 ms). */
async function cpuMs(pid: number): Promise<{ userMs: number; systemMs: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { userMs: Number(fields[11]) * 10, systemMs: Number(fields[12]) * 10 };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  printHost({ bench: 's3-get', pool, sizeBytes, rounds, seconds, concurrencies, gateways: gateways.map((g) => g.name) });
  const io = systemIo();
  const conn = connectMapService(io, args.map!);
  const client = await TesseraClient.connect({ io, mapService: conn.service, timeoutMs: 60_000 });
  const body = randomBytes(sizeBytes);
  const bucket = `s3get-${randomBytes(4).toString('hex')}`;
  const s3 = gateways.map((g) => ({
    ...g,
    client: new S3Client({
      endpoint: g.url,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: args['access-key']!, secretAccessKey: args['secret-key']! },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: new NodeHttpHandler({ httpAgent: new Agent({ keepAlive: true, maxSockets: 256 }) }),
    }),
  }));
  await s3[0]!.client.send(new CreateBucketCommand({ Bucket: bucket, CreateBucketConfiguration: { LocationConstraint: pool as BucketLocationConstraint } }));
  await s3[0]!.client.send(new PutObjectCommand({ Bucket: bucket, Key: 'k', Body: body }));
  const objectName = `s3get/${bucket}`;
  await client.put(pool, objectName, body);
  const results = new Map<string, BenchResult[]>();
  const add = (r: BenchResult): void => {
    emit(r);
    const k = `${r.name} c=${r.concurrency}`;
    results.set(k, [...(results.get(k) ?? []), r]);
  };
  for (let round = 0; round < rounds; round++) {
    for (const workers of concurrencies) {
      // The order rotates per round: no target always runs right after the same one.
      const order = [...s3.map((g) => ({ kind: 's3' as const, g })), { kind: 'cluster' as const, g: null }];
      for (let r = 0; r < round % order.length; r++) order.push(order.shift()!);
      for (const t of order) {
        const own = process.cpuUsage();
        const ownUsPerOp = (ops: number): number => {
          const u = process.cpuUsage(own);
          return (u.user + u.system) / ops;
        };
        if (t.kind === 'cluster') {
          const stats = await closedLoop({ workers, ops: Infinity, maxSeconds: seconds, op: async () => void (await client.read(pool, objectName)) });
          add(resultOf('cluster', stats, sizeBytes, { round, concurrency: workers, clientCpuUsPerOp: ownUsPerOp(stats.ops) }));
          continue;
        }
        const g = t.g!;
        const cpuBefore = g.pid ? await cpuMs(g.pid) : null;
        const stats = await closedLoop({
          workers,
          ops: Infinity,
          maxSeconds: seconds,
          op: async () => {
            const res = await g.client.send(new GetObjectCommand({ Bucket: bucket, Key: 'k' }));
            await res.Body!.transformToByteArray();
          },
        });
        const after = g.pid ? await cpuMs(g.pid) : null;
        const cpu = after && cpuBefore ? { user: after.userMs - cpuBefore.userMs, system: after.systemMs - cpuBefore.systemMs } : null;
        add(resultOf(g.name, stats, sizeBytes, { round, concurrency: workers, clientCpuUsPerOp: ownUsPerOp(stats.ops), ...(cpu !== null ? { gatewayCpuUsPerOp: ((cpu.user + cpu.system) * 1000) / stats.ops, gatewaySystemShare: cpu.system / Math.max(1, cpu.user + cpu.system) } : {}) }));
      }
    }
  }
  for (const [k, rs] of results) {
    const base = results.get(`cluster c=${rs[0]!.concurrency}`);
    const ratios = base ? rs.map((r, i) => r.opsPerSec / base[i]!.opsPerSec) : [];
    emit({
      name: `${k} (median of ${rs.length} rounds)`,
      opsPerSec: median(rs.map((r) => r.opsPerSec)),
      bytesPerSec: median(rs.map((r) => r.bytesPerSec)),
      p50Ms: median(rs.map((r) => r.p50Ms)),
      p99Ms: median(rs.map((r) => r.p99Ms)),
      clientCpuUsPerOp: median(rs.map((r) => r.clientCpuUsPerOp as number)),
      ...(rs[0]!.gatewayCpuUsPerOp !== undefined ? { gatewayCpuUsPerOp: median(rs.map((r) => r.gatewayCpuUsPerOp as number)), gatewaySystemShare: median(rs.map((r) => r.gatewaySystemShare as number)) } : {}),
      ...(base && !k.startsWith('cluster') ? { baseline: 'cluster', ratioToBaseline: median(ratios), ratiosPerRound: ratios.map((x) => Math.round(x * 1000) / 1000) } : {}),
    });
  }
  for (const g of s3) g.client.destroy();
  await client.close();
  await conn.close();
}

await main();
