/**
 * S3 benchmark (the S3 gateway issue): PUT and GET of 4 KiB (ops/s), 4 MiB
 * and 64 MiB (MB/s) objects at concurrency 1, 16 and 64, with p50/p99, on
 * the replicated and the erasure-coded pool, through any S3 endpoint.
 *
 * Without --endpoint it starts `tessera up` on a temporary directory and
 * measures its S3 gateway (buckets placed in pool "rep" or "ec" by their
 * location constraint), and, in the same run, the cluster layer's own figure
 * for each case (TesseraClient put/read of the same size at the same
 * concurrency into the same pool): each S3 figure comes with its ratio to
 * that baseline, and the floors of the issue are checked (4 MiB >= 80%,
 * 4 KiB >= 60%). With --peer-endpoint (or --peer-env FILE, as written by
 * ../shared/peers/ceph-up.sh) it measures the peer the same way (its EC
 * cases through --peer-ec-storage-class, default STANDARD_IA: radosgw's EC
 * 2+1 pool) and prints Tessera / peer ratios. Each (pool, size, concurrency)
 * runs on Tessera's S3, the cluster layer and the peer back to back, so the
 * three figures of a case are minutes, not a whole run, apart. A case the endpoint refuses
 * (an EC pool that answers NotImplemented) is printed as skipped.
 *
 * S3 clients (--clients, default both, each case run through each, named
 * in every line as `client`): `sdk`, the AWS SDK v3 with its lightest
 * settings (UNSIGNED-PAYLOAD stream bodies, no checksums, 256 keep-alive
 * sockets), and `light`, bench/s3-light.ts (the SDK's own SigV4 signer over
 * node:http keep-alive, UNSIGNED-PAYLOAD buffer bodies): on a machine where
 * the client shares the CPUs with the gateway and the daemons, the SDK's own
 * CPU per small request (about 1 ms) bounds what the gateway can show.
 * GET bodies are read and dropped. Objects of 4 MiB and more are deleted
 * after each case. Before the measured cases, --warmup-seconds (default 5)
 * of 4 KiB PUTs and GETs per pool through each client and the cluster layer,
 * not counted (a fresh gateway runs its first seconds in V8's baseline code
 * and compiler: measured, its CPU per 4 KiB PUT was twice the warm figure).
 * Never part of the test suite.
 *
 * Usage: node dist/bench/s3.js [--seconds N] [--sizes 4KiB,4MiB,64MiB] [--concurrency 1,16,64] [--pools rep,ec]
 *          [--clients sdk,light] [--warmup-seconds 5]
 *          [--endpoint URL --access-key AK --secret-key SK]
 *          [--peer-endpoint URL --peer-access-key AK --peer-secret-key SK | --peer-env FILE] [--peer-name NAME]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client, type StorageClass } from '@aws-sdk/client-s3';
import { systemIo } from '../src/io/system.js';
import { TesseraClient } from '../src/client/client.js';
import { connectMapService } from '../cluster/map-daemon.js';
import { emit, printHost, resultOf, type BenchResult, type LoopStats } from './lib.js';
import { LightS3 } from './s3-light.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZES: Record<string, number> = { '4KiB': 4 * KiB, '4MiB': 4 * MiB, '64MiB': 64 * MiB };
/** The floors: S3 / cluster, by size. */
const FLOORS: Record<string, number> = { '4KiB': 0.6, '4MiB': 0.8 };

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string' },
    sizes: { type: 'string' },
    concurrency: { type: 'string' },
    pools: { type: 'string' },
    endpoint: { type: 'string' },
    'access-key': { type: 'string' },
    'secret-key': { type: 'string' },
    'peer-endpoint': { type: 'string' },
    'peer-access-key': { type: 'string' },
    'peer-secret-key': { type: 'string' },
    'peer-env': { type: 'string' },
    'peer-name': { type: 'string' },
    'peer-ec-storage-class': { type: 'string' },
    clients: { type: 'string' },
    'warmup-seconds': { type: 'string' },
  },
});
let seconds = Number(args.seconds ?? 3);
const sizes = (args.sizes ?? '4KiB,4MiB,64MiB').split(',').map((s) => {
  if (!SIZES[s]) throw new Error(`--sizes: ${s} is not one of ${Object.keys(SIZES).join(', ')}`);
  return s;
});
const concurrencies = (args.concurrency ?? '1,16,64').split(',').map(Number);
const pools = (args.pools ?? 'rep,ec').split(',');
type ClientKind = 'sdk' | 'light';
const clientKinds = (args.clients ?? 'sdk,light').split(',') as ClientKind[];
if (!clientKinds.every((k) => k === 'sdk' || k === 'light')) throw new Error('--clients: sdk and/or light');
const warmupSeconds = Number(args['warmup-seconds'] ?? 5);
const io = systemIo();

interface Target {
  name: string;
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** How a bucket (or object) lands in each pool. */
  placement: (pool: string) => { location?: string; storageClass?: string };
}

function s3For(t: Target): S3Client {
  return new S3Client({
    endpoint: t.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: t.accessKeyId, secretAccessKey: t.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
    requestHandler: { httpAgent: { keepAlive: true, maxSockets: 256 }, requestTimeout: 600_000 },
  });
}

async function drain(body: unknown): Promise<number> {
  let n = 0;
  for await (const chunk of body as AsyncIterable<Uint8Array>) n += chunk.length;
  return n;
}

const errorName = (err: unknown): string => (err as Error)?.name ?? String(err);

/** Runs op from `workers` loops for `seconds`; the first failure stops the case and is reported with what was done. */
async function timed(workers: number, op: (i: number) => Promise<void>): Promise<{ stats: LoopStats; error: string | null }> {
  let next = 0;
  let error: string | null = null;
  const latenciesMs: number[] = [];
  const start = performance.now();
  const deadline = start + seconds * 1000;
  const worker = async (): Promise<void> => {
    while (error === null && performance.now() < deadline) {
      const i = next++;
      const t = performance.now();
      try {
        await op(i);
      } catch (err) {
        error ??= `${errorName(err)}: ${(err as Error)?.message ?? ''}`.slice(0, 300);
        return;
      }
      latenciesMs.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  latenciesMs.sort((a, b) => a - b);
  return { stats: { ops: latenciesMs.length, seconds: (performance.now() - start) / 1000, latenciesMs }, error };
}

interface CaseKey {
  pool: string;
  label: string;
  workers: number;
  op: 'put' | 'get';
}
const keyOf = (c: CaseKey): string => `${c.pool} ${c.op} ${c.label} c=${c.workers}`;
const figureOf = (label: string, r: BenchResult): number => (label === '4KiB' ? r.opsPerSec : r.bytesPerSec);

/** A bucket on one target for one pool, or why the pool is skipped there. */
interface S3Pool {
  t: Target;
  s3: S3Client;
  light: LightS3;
  pool: string;
  bucket: string;
  storageClass: string | undefined;
}

async function prepareS3(t: Target, s3: S3Client, light: LightS3, pool: string): Promise<S3Pool | string> {
  const bucket = `bench-${pool}-${randomBytes(3).toString('hex')}`;
  const { location, storageClass } = t.placement(pool);
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket, ...(location ? { CreateBucketConfiguration: { LocationConstraint: location as never } } : {}) }));
    // Probe: an endpoint whose pool refuses writes (EC still being built) skips this pool.
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'probe', Body: Buffer.alloc(64 * KiB, 7), ...(storageClass ? { StorageClass: storageClass as StorageClass } : {}) }));
  } catch (err) {
    return `${errorName(err)}: ${(err as Error).message}`;
  }
  return { t, s3, light, pool, bucket, storageClass };
}

/** One PUT and one GET (whole body read) of a size through the chosen client. */
function s3Ops(p: S3Pool, kind: ClientKind): { put(key: string, data: Buffer): Promise<void>; get(key: string): Promise<number> } {
  const { s3, light, bucket, storageClass } = p;
  if (kind === 'light') {
    const headers: Record<string, string> = storageClass ? { 'x-amz-storage-class': storageClass } : {};
    return {
      put: async (key, data) => void (await light.send('PUT', bucket, key, data, headers)),
      get: async (key) => (await light.get(bucket, key)).length,
    };
  }
  return {
    put: async (key, data) =>
      void (await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: Readable.from([data]), ContentLength: data.length, ...(storageClass ? { StorageClass: storageClass as StorageClass } : {}) }))),
    get: async (key) => drain((await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body),
  };
}

/** Unmeasured 4 KiB PUTs and GETs, so the measured cases see warm processes (V8 tiering done). */
async function warmUp(op: (i: number) => Promise<void>): Promise<void> {
  if (warmupSeconds <= 0) return;
  const saved = seconds;
  seconds = warmupSeconds;
  try {
    const r = await timed(16, op);
    if (r.error) console.error(`warm-up: ${r.error}`);
  } finally {
    seconds = saved;
  }
}

/** S3 PUT then GET (then DELETE of large objects) of one size at one concurrency on one target's pool. */
async function s3Step(p: S3Pool | string, who: { name: string; pool: string; kind: ClientKind }, label: string, workers: number, data: Buffer, out: Map<string, BenchResult>): Promise<void> {
  const size = data.length;
  if (typeof p === 'string') {
    for (const op of ['put', 'get'] as const) {
      const name = `s3 ${who.name}/${who.kind} ${keyOf({ pool: who.pool, label, workers, op })}`;
      out.set(name, { name, client: who.kind, opsPerSec: 0, bytesPerSec: 0, p50Ms: 0, p99Ms: 0, skipped: true, reason: p });
    }
    return;
  }
  const { s3, bucket, pool } = p;
  const ops = s3Ops(p, who.kind);
  const prefix = `${label}/c${workers}/${who.kind}/`;
  const put = await timed(workers, (i) => ops.put(`${prefix}${i}`, data));
  const written = put.stats.ops;
  const who3 = `s3 ${p.t.name}/${who.kind}`;
  record(out, who3, { pool, label, workers, op: 'put' }, put, size, { client: who.kind });
  const get = await timed(workers, async (i) => {
    const n = await ops.get(`${prefix}${i % Math.max(1, written)}`);
    if (n !== size) throw new Error(`GET returned ${n} of ${size} bytes`);
  });
  record(out, who3, { pool, label, workers, op: 'get' }, written > 0 ? get : { ...get, error: put.error }, size, { client: who.kind });
  if (size >= 4 * MiB) await removeAll(written, 16, (i) => s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${prefix}${i}` })).then(() => undefined));
}

/** The cluster layer's figure: TesseraClient put/read of the same size, same concurrency, same pool. */
async function clusterStep(client: TesseraClient, pool: string, label: string, workers: number, data: Buffer, out: Map<string, BenchResult>): Promise<void> {
  const size = data.length;
  const prefix = `bench/${label}/c${workers}/`;
  const put = await timed(workers, (i) => client.put(pool, `${prefix}${i}`, data).then(() => undefined));
  const written = put.stats.ops;
  record(out, 'cluster', { pool, label, workers, op: 'put' }, put, size);
  const get = await timed(workers, async (i) => {
    const got = await client.read(pool, `${prefix}${i % Math.max(1, written)}`);
    if (got.length !== size) throw new Error(`read ${got.length} of ${size} bytes`);
  });
  record(out, 'cluster', { pool, label, workers, op: 'get' }, written > 0 ? get : { ...get, error: put.error }, size);
  if (size >= 4 * MiB) await removeAll(written, 16, (i) => client.remove(pool, `${prefix}${i}`).then(() => undefined));
}

async function removeAll(count: number, workers: number, remove: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (next < count) await remove(next++).catch(() => undefined);
    }),
  );
}

function record(out: Map<string, BenchResult>, who: string, c: CaseKey, r: { stats: LoopStats; error: string | null }, size: number, extra: Record<string, unknown> = {}): void {
  const name = `${who} ${keyOf(c)}`;
  if (r.error !== null && r.stats.ops === 0) {
    const skipped: BenchResult = { name, ...extra, opsPerSec: 0, bytesPerSec: 0, p50Ms: 0, p99Ms: 0, skipped: true, reason: r.error };
    out.set(name, skipped);
    return;
  }
  const result = resultOf(name, r.stats, size, { ...extra, MBps: (r.stats.ops * size) / r.stats.seconds / 1e6, ops: r.stats.ops, ...(r.error ? { error: r.error } : {}) });
  out.set(name, result);
}

function withCluster(s3: BenchResult, cluster: BenchResult | undefined, label: string): BenchResult {
  if (s3.skipped || !cluster || cluster.skipped) return { ...s3, ...(cluster?.skipped ? { baselineSkipped: cluster.reason } : {}) };
  const ratio = figureOf(label, s3) / figureOf(label, cluster);
  const floor = FLOORS[label];
  return {
    ...s3,
    baseline: cluster.name,
    baselineValue: figureOf(label, cluster),
    ratioToBaseline: ratio,
    unit: label === '4KiB' ? 'ops/s' : 'B/s',
    ...(floor !== undefined ? { floor, meetsFloor: ratio >= floor } : {}),
  };
}

async function startTessera(dir: string): Promise<{ child: ChildProcess; target: Target; map: string }> {
  const bin = fileURLToPath(new URL('../src/bin/tessera.js', import.meta.url));
  const base = 22_000 + (process.pid % 500) * 16;
  // One access key runs the whole load: its GETs in flight may reach the largest concurrency (the gateway's per-client
  // limit, 8 by default, would answer the rest SlowDown; docs/s3-api.md, "GET responses in flight per client").
  const getsPerClient = String(Math.max(...concurrencies, 1));
  const child = spawn(process.execPath, [bin, 'up', '--data', dir, '--base-port', String(base), '--map-port', String(base + 15), '--s3-port', String(base + 14), '--pgs', '64', '--s3-gets-per-client-max', getsPerClient], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('Ctrl-C')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`tessera up exited ${code}`)));
  });
  const file = JSON.parse(await readFile(join(dir, 'client.json'), 'utf8')) as { map: string; s3: { endpoint: string; admin: { accessKeyId: string; secretAccessKey: string } } };
  return {
    child,
    map: file.map,
    target: { name: 'tessera', endpoint: file.s3.endpoint, accessKeyId: file.s3.admin.accessKeyId, secretAccessKey: file.s3.admin.secretAccessKey, placement: (pool) => ({ location: pool }) },
  };
}

async function peerTarget(): Promise<Target | null> {
  let endpoint = args['peer-endpoint'];
  let accessKeyId = args['peer-access-key'];
  let secretAccessKey = args['peer-secret-key'];
  if (args['peer-env']) {
    const vars = new Map<string, string>();
    for (const m of (await readFile(args['peer-env'], 'utf8')).matchAll(/^(?:export\s+)?([A-Z0-9_]+)=(.*)$/gm)) vars.set(m[1]!, m[2]!.replace(/^["']|["']$/g, ''));
    endpoint ??= vars.get('S3_ENDPOINT');
    accessKeyId ??= vars.get('AWS_ACCESS_KEY_ID');
    secretAccessKey ??= vars.get('AWS_SECRET_ACCESS_KEY');
  }
  if (!endpoint) return null;
  if (!accessKeyId || !secretAccessKey) throw new Error('the peer needs --peer-access-key and --peer-secret-key (or --peer-env)');
  const ecClass = args['peer-ec-storage-class'] ?? 'STANDARD_IA';
  return { name: args['peer-name'] ?? 'peer', endpoint, accessKeyId, secretAccessKey, placement: (pool) => (pool === 'ec' ? { storageClass: ecClass } : {}) };
}

function emitAll(results: Map<string, BenchResult>, cluster: Map<string, BenchResult>, who: string): void {
  for (const kind of clientKinds) for (const pool of pools) for (const label of sizes) for (const op of ['put', 'get'] as const) for (const workers of concurrencies) {
    const c = { pool, label, workers, op };
    const r = results.get(`s3 ${who}/${kind} ${keyOf(c)}`);
    if (r) emit(withCluster(r, cluster.get(`cluster ${keyOf(c)}`), label));
  }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-s3-bench-'));
  printHost({ bench: 's3', seconds, warmupSeconds, sizes, concurrencies, pools, clients: clientKinds, sdk: 'aws-sdk v3, UNSIGNED-PAYLOAD, no checksums', light: 'bench/s3-light.ts: @smithy/signature-v4 over node:http, UNSIGNED-PAYLOAD' });
  let tessera: { child: ChildProcess; target: Target; map: string } | null = null;
  const clusterResults = new Map<string, BenchResult>();
  const tesseraResults = new Map<string, BenchResult>();
  try {
    let target: Target;
    if (args.endpoint) {
      if (!args['access-key'] || !args['secret-key']) throw new Error('--endpoint needs --access-key and --secret-key');
      target = { name: 'target', endpoint: args.endpoint, accessKeyId: args['access-key'], secretAccessKey: args['secret-key'], placement: (pool) => ({ location: pool }) };
    } else {
      tessera = await startTessera(join(dir, 'cluster'));
      target = tessera.target;
    }
    const peer = await peerTarget();
    const s3 = s3For(target);
    const ps3 = peer ? s3For(peer) : null;
    const light = new LightS3(target);
    const plight = peer ? new LightS3(peer) : null;
    const peerResults = new Map<string, BenchResult>();
    const conn = tessera ? connectMapService(io, tessera.map) : null;
    const client = conn ? await TesseraClient.connect({ io, mapService: conn.service, timeoutMs: 600_000 }) : null;
    try {
      // Each (pool, size, concurrency) runs on the target, the cluster layer and the peer back to back:
      // on a shared machine, figures measured minutes apart are not comparable.
      for (const pool of pools) {
        const mine = await prepareS3(target, s3, light, pool);
        const theirs = peer && ps3 && plight ? await prepareS3(peer, ps3, plight, pool) : null;
        const clusterHasPool = client?.view.map.pools.some((p) => p.name === pool) ?? false;
        const warm = randomBytes(4 * KiB);
        for (const p of [mine, theirs]) {
          if (p === null || typeof p === 'string') continue;
          for (const kind of clientKinds) {
            const ops = s3Ops(p, kind);
            await ops.put(`warmup/${kind}/read`, warm);
            await warmUp(async (i) => (i % 2 ? void (await ops.get(`warmup/${kind}/read`)) : ops.put(`warmup/${kind}/${i}`, warm)));
          }
        }
        if (client && clusterHasPool) {
          await client.put(pool, 'bench/warmup/read', warm);
          await warmUp(async (i) => (i % 2 ? void (await client.read(pool, 'bench/warmup/read')) : void (await client.put(pool, `bench/warmup/${i}`, warm))));
        }
        for (const label of sizes) {
          const data = randomBytes(SIZES[label]!);
          for (const workers of concurrencies) {
            for (const kind of clientKinds) await s3Step(mine, { name: target.name, pool, kind }, label, workers, data, tesseraResults);
            if (client && clusterHasPool) await clusterStep(client, pool, label, workers, data, clusterResults);
            if (peer && theirs) for (const kind of clientKinds) await s3Step(theirs, { name: peer.name, pool, kind }, label, workers, data, peerResults);
          }
        }
      }
    } finally {
      s3.destroy();
      ps3?.destroy();
      light.destroy();
      plight?.destroy();
      await client?.close();
      await conn?.close();
    }
    for (const r of clusterResults.values()) emit(r);
    emitAll(tesseraResults, clusterResults, target.name);
    if (peer) {
      emitAll(peerResults, new Map(), peer.name);
      for (const [name, r] of tesseraResults) {
        const p = peerResults.get(name.replace(`s3 ${target.name}/`, `s3 ${peer.name}/`));
        const label = sizes.find((l) => name.includes(` ${l} `))!;
        if (!p || r.skipped || p.skipped) continue;
        emit({ ...r, name: `${name} vs ${peer.name}`, baseline: p.name, baselineValue: figureOf(label, p), ratioToBaseline: figureOf(label, r) / figureOf(label, p), unit: label === '4KiB' ? 'ops/s' : 'B/s' });
      }
    }
  } finally {
    if (tessera) {
      const child = tessera.child;
      await new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGINT');
      });
    }
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
