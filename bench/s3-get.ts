/**
 * The per-request cost of small S3 GETs and PUTs: 4 KiB requests through one or more S3
 * gateways of one cluster (for instance two builds of `tessera s3` against
 * the same map service: before and after a change), and the cluster layer's
 * own read (write) of the same size (TesseraClient.read / put) as the baseline, in
 * alternating rounds so every figure sees the same load. For each gateway
 * given with its process id it also reports the gateway's CPU time per
 * request (utime + stime from /proc/PID/stat over the round), which moves
 * much less than ops/s on a shared machine, and this process's own CPU per
 * operation (the S3 client's, or the cluster client's, cost). --client picks
 * the S3 client: the AWS SDK (sdk, default) or bench/s3-light.ts (light:
 * the SDK's signer over node:http), named in every line.
 *
 * Usage: node dist/bench/s3-get.js --map HOST:PORT --pool rep --access-key AK --secret-key SK
 *          --gateway NAME=URL[=PID] [--gateway ...] [--rounds 4] [--seconds 5] [--concurrency 1,16] [--size-bytes 4096]
 *          [--ops get,put] [--client sdk|light] [--warmup-seconds 5]
 * Prints one JSON object per (round, op, target, concurrency), then one summary
 * per (op, target, concurrency): medians over rounds. One access key runs the
 * load: above 4 KiB (objects the gateway streams from the cluster) give the
 * gateways `--gets-per-client-max` at least the largest concurrency (default 8).
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
import { LightS3 } from './s3-light.js';

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
    ops: { type: 'string' },
    client: { type: 'string' },
    'warmup-seconds': { type: 'string' },
  },
});
if (!args.map || !args['access-key'] || !args['secret-key'] || !args.gateway?.length) throw new Error('usage: s3-get --map HOST:PORT --access-key AK --secret-key SK --gateway NAME=URL[=PID] ...');
const pool = args.pool ?? 'rep';
const rounds = Number(args.rounds ?? 4);
const seconds = Number(args.seconds ?? 5);
const concurrencies = (args.concurrency ?? '1,16').split(',').map(Number);
const sizeBytes = Number(args['size-bytes'] ?? 4096);
const ops = (args.ops ?? 'get').split(',') as Array<'get' | 'put'>;
if (!ops.every((o) => o === 'get' || o === 'put')) throw new Error('--ops: get and/or put');
const clientKind = args.client ?? 'sdk';
const warmupSeconds = Number(args['warmup-seconds'] ?? 5);
if (clientKind !== 'sdk' && clientKind !== 'light') throw new Error('--client: sdk or light');
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
  printHost({ bench: 's3-get', pool, sizeBytes, rounds, seconds, warmupSeconds, concurrencies, ops, client: clientKind, gateways: gateways.map((g) => g.name) });
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
    light: new LightS3({ endpoint: g.url, accessKeyId: args['access-key']!, secretAccessKey: args['secret-key']! }),
  }));
  /** PUTs write new keys (an overwrite costs more cluster operations). */
  let putSeq = 0;
  /** One S3 request of the op through the chosen client. */
  const s3Op = async (g: (typeof s3)[number], op: 'get' | 'put'): Promise<void> => {
    if (clientKind === 'light') {
      if (op === 'put') await g.light.put(bucket, `p/${putSeq++}`, body);
      else if ((await g.light.get(bucket, 'k')).length !== sizeBytes) throw new Error('short GET');
      return;
    }
    if (op === 'put') {
      await g.client.send(new PutObjectCommand({ Bucket: bucket, Key: `p/${putSeq++}`, Body: body }));
      return;
    }
    const res = await g.client.send(new GetObjectCommand({ Bucket: bucket, Key: 'k' }));
    await res.Body!.transformToByteArray();
  };
  await s3[0]!.client.send(new CreateBucketCommand({ Bucket: bucket, CreateBucketConfiguration: { LocationConstraint: pool as BucketLocationConstraint } }));
  await s3[0]!.client.send(new PutObjectCommand({ Bucket: bucket, Key: 'k', Body: body }));
  const objectName = `s3get/${bucket}`;
  await client.put(pool, objectName, body);
  const results = new Map<string, BenchResult[]>();
  const add = (r: BenchResult): void => {
    emit(r);
    const k = `${r.name} ${r.op} c=${r.concurrency}`;
    results.set(k, [...(results.get(k) ?? []), r]);
  };
  // Unmeasured: every gateway and the cluster client past V8's tiering (a cold gateway's CPU per PUT is about twice its warm one).
  for (const op of ops) {
    for (const g of s3) await closedLoop({ workers: 16, ops: Infinity, maxSeconds: warmupSeconds, op: () => s3Op(g, op) });
    await closedLoop({ workers: 16, ops: Infinity, maxSeconds: warmupSeconds, op: op === 'get' ? async () => void (await client.read(pool, objectName)) : async () => void (await client.put(pool, `${objectName}/p/${putSeq++}`, body)) });
  }
  for (let round = 0; round < rounds; round++) {
    for (const op of ops) for (const workers of concurrencies) {
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
          const run = op === 'get' ? async () => void (await client.read(pool, objectName)) : async () => void (await client.put(pool, `${objectName}/p/${putSeq++}`, body));
          const stats = await closedLoop({ workers, ops: Infinity, maxSeconds: seconds, op: run });
          add(resultOf('cluster', stats, sizeBytes, { round, op, concurrency: workers, clientCpuUsPerOp: ownUsPerOp(stats.ops) }));
          continue;
        }
        const g = t.g!;
        const cpuBefore = g.pid ? await cpuMs(g.pid) : null;
        const stats = await closedLoop({
          workers,
          ops: Infinity,
          maxSeconds: seconds,
          op: () => s3Op(g, op),
        });
        const after = g.pid ? await cpuMs(g.pid) : null;
        const cpu = after && cpuBefore ? { user: after.userMs - cpuBefore.userMs, system: after.systemMs - cpuBefore.systemMs } : null;
        add(resultOf(g.name, stats, sizeBytes, { round, op, client: clientKind, concurrency: workers, clientCpuUsPerOp: ownUsPerOp(stats.ops), ...(cpu !== null ? { gatewayCpuUsPerOp: ((cpu.user + cpu.system) * 1000) / stats.ops, gatewaySystemShare: cpu.system / Math.max(1, cpu.user + cpu.system) } : {}) }));
      }
    }
  }
  for (const [k, rs] of results) {
    const base = results.get(`cluster ${rs[0]!.op} c=${rs[0]!.concurrency}`);
    const ratios = base ? rs.map((r, i) => r.opsPerSec / base[i]!.opsPerSec) : [];
    emit({
      name: `${k} (median of ${rs.length} rounds)`,
      op: rs[0]!.op,
      ...(k.startsWith('cluster') ? {} : { client: clientKind }),
      opsPerSec: median(rs.map((r) => r.opsPerSec)),
      bytesPerSec: median(rs.map((r) => r.bytesPerSec)),
      p50Ms: median(rs.map((r) => r.p50Ms)),
      p99Ms: median(rs.map((r) => r.p99Ms)),
      clientCpuUsPerOp: median(rs.map((r) => r.clientCpuUsPerOp as number)),
      ...(rs[0]!.gatewayCpuUsPerOp !== undefined ? { gatewayCpuUsPerOp: median(rs.map((r) => r.gatewayCpuUsPerOp as number)), gatewaySystemShare: median(rs.map((r) => r.gatewaySystemShare as number)) } : {}),
      ...(base && !k.startsWith('cluster') ? { baseline: 'cluster', ratioToBaseline: median(ratios), ratiosPerRound: ratios.map((x) => Math.round(x * 1000) / 1000) } : {}),
    });
  }
  for (const g of s3) {
    g.client.destroy();
    g.light.destroy();
  }
  await client.close();
  await conn.close();
}

await main();
