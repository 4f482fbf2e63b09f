/**
 * kill -9 during a PUT storm through the S3 gateway (startS3Env: six daemon
 * processes; replicated pool size 3 / min_size 2, EC pool 4+2): many
 * concurrent PUTs of known content (sizes from empty and inline-small to
 * several pieces; some keys overwritten; every tenth aborted by the client
 * after 0-30 ms). Storage daemons: one killed a third of the way in,
 * restarted and another killed two thirds in, restarted at the end
 * (env.cluster.killDisk / restartDisk), on the replicated and on the EC pool.
 * The gateway: a `tessera s3` process killed halfway and started again on
 * its port. Then every acknowledged PUT reads back byte-exact (unless a
 * later or concurrent PUT of its key replaced it), and every unacknowledged
 * one is absent or whole, never partial; the listing agrees with what reads
 * back. The content of each PUT is a function of (seed, key, version), so
 * only the outcomes are kept in memory.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';
import { seededRng, testSeed } from './helpers/random.js';
import { warnSkipped } from './helpers/s3-tools.js';
import { tesseraBin } from './helpers/daemon-process.js';

const seed = testSeed();
let env: S3TestEnv;
let s3: S3Client;

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
}, 120_000);
afterAll(async () => {
  await env?.stop();
});

const KiB = 1024;
const MiB = 1024 * KiB;

/** The body of version v of key: deterministic from (seed, key, v); its size is chosen by the same seed. */
function bodyOf(key: string, version: number): Buffer {
  const rng = seededRng(createHash('sha256').update(`${seed}/${key}/${version}`).digest().readUInt32LE(0));
  const kind = rng.int(10);
  const size = kind < 5 ? 1 + rng.int(8 * KiB) : kind < 8 ? 64 * KiB + rng.int(448 * KiB) : kind < 9 ? 0 : 4 * MiB + rng.int(2 * MiB);
  return rng.bytes(size);
}

interface Put {
  key: string;
  version: number;
  /** 'ok' once acknowledged (200 with the body's ETag); otherwise the error's name. */
  outcome: 'ok' | string | null;
  etag?: string;
  startMs: number;
  /** When the answer came; an unacknowledged PUT may still land later (Infinity). */
  endMs: number;
}

async function readKey(bucket: string, key: string): Promise<Buffer | 'NoSuchKey'> {
  // Reads go through the in-process gateway, whatever the storm went through.
  try {
    return Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());
  } catch (err) {
    if ((err as Error).name === 'NoSuchKey') return 'NoSuchKey';
    throw err;
  }
}

async function listAll(bucket: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ...(token ? { ContinuationToken: token } : {}) }));
    for (const c of page.Contents ?? []) out.set(c.Key!, c.Size!);
    token = page.NextContinuationToken;
  } while (token);
  return out;
}

/**
 * Runs the storm on bucket: `count` PUTs from `workers` loops; fault(i) runs
 * when the i-th PUT starts (kill/restart). Every abortEvery-th PUT is aborted
 * by the client after 0-30 ms (unacknowledged: it may or may not land).
 */
async function storm(client: S3Client, bucket: string, o: { count: number; workers: number; keys: number; faults: Map<number, () => Promise<void>>; abortEvery?: number }): Promise<Put[]> {
  const rng = seededRng(seed ^ 0x5eed);
  const puts: Put[] = [];
  const versions = new Map<string, number>();
  let next = 0;
  const faults: Promise<void>[] = [];
  const worker = async (): Promise<void> => {
    while (next < o.count) {
      const i = next++;
      const fault = o.faults.get(i);
      if (fault) faults.push(fault());
      // Keys repeat: about a fifth of the PUTs overwrite a key written before.
      const key = `storm/${i % o.keys}`;
      const version = (versions.get(key) ?? 0) + 1;
      versions.set(key, version);
      const body = bodyOf(key, version);
      const put: Put = { key, version, outcome: null, startMs: performance.now(), endMs: Infinity };
      puts.push(put);
      const abort = new AbortController();
      if (o.abortEvery && i % o.abortEvery === o.abortEvery - 1) setTimeout(() => abort.abort(), rng.int(30));
      try {
        const res = await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }), { abortSignal: abort.signal });
        put.outcome = 'ok';
        put.etag = res.ETag;
        put.endMs = performance.now();
      } catch (err) {
        put.outcome = (err as Error).name || 'Error';
      }
      if (put.outcome === 'ok') expect(put.etag, `${key} v${version}`).toBe(`"${createHash('md5').update(body).digest('hex')}"`);
    }
  };
  await Promise.all(Array.from({ length: o.workers }, worker));
  await Promise.all(faults);
  return puts;
}

/**
 * What each key may hold now: a version p that was sent and that no
 * acknowledged version q started after p had finished (q would have replaced
 * it; an unacknowledged p may land any time after it started). So an
 * acknowledged version is never lost unless a later or concurrent PUT of
 * its key replaced it, and there is no key without a PUT.
 */
async function verify(bucket: string, puts: Put[]): Promise<{ acknowledged: number; failed: number; unacknowledgedLanded: number }> {
  const byKey = new Map<string, Put[]>();
  for (const p of puts) byKey.set(p.key, [...(byKey.get(p.key) ?? []), p]);
  let unacknowledgedLanded = 0;
  const listed = new Map([...(await listAll(bucket))].filter(([k]) => k.startsWith('storm/')));
  for (const [key, history] of byKey) {
    history.sort((a, b) => a.version - b.version);
    const acked = history.filter((p) => p.outcome === 'ok');
    const lastAcked = acked.at(-1);
    const candidates = history.filter((p) => acked.every((q) => q === p || p.endMs > q.startMs));
    let got: Buffer | 'NoSuchKey';
    try {
      got = await readKey(bucket, key);
    } catch (err) {
      if (process.env.TESSERA_DEBUG) {
        const t0 = performance.now();
        let later = 'still failing';
        while (performance.now() - t0 < 60_000) {
          try { later = `readable after ${Math.round(performance.now() - t0)} ms: ${(await readKey(bucket, key)).length}`; break; } catch { await new Promise((r) => setTimeout(r, 1000)); }
        }
        console.log(`DEBUG ${key}: ${later}`);
      }
      throw new Error(`${key} (acknowledged: ${lastAcked?.version ?? 'none'}; sent: ${history.map((p) => `${p.version}:${p.outcome}`).join(' ')}) cannot be read: ${(err as Error).name}: ${(err as Error).message}`);
    }
    if (got === 'NoSuchKey') {
      expect(lastAcked, `${key}: acknowledged version ${lastAcked?.version} is gone`).toBeUndefined();
      expect(listed.has(key), `${key} is listed but not readable`).toBe(false);
      continue;
    }
    const match = candidates.find((p) => bodyOf(key, p.version).equals(got));
    expect(match, `${key}: ${got.length} bytes that are no whole version (acknowledged: ${lastAcked?.version ?? 'none'}; sent: ${history.map((p) => `${p.version}:${p.outcome}`).join(' ')})`).toBeDefined();
    if (match!.outcome !== 'ok') unacknowledgedLanded++;
    expect(listed.get(key), `${key}: listed size`).toBe(got.length);
  }
  for (const key of listed.keys()) expect(byKey.has(key), `${key} listed but never written`).toBe(true);
  const acknowledged = puts.filter((p) => p.outcome === 'ok').length;
  return { acknowledged, failed: puts.length - acknowledged, unacknowledgedLanded };
}

async function stormWithKills(bucket: string, count: number): Promise<void> {
  const rng = seededRng(seed);
  const first = rng.pick(env.cluster.diskIds);
  const second = rng.pick(env.cluster.diskIds.filter((d) => d !== first));
  const faults = new Map<number, () => Promise<void>>([
    [Math.floor(count / 3), () => env.cluster.killDisk(first)],
    [Math.floor((2 * count) / 3), async () => {
      await env.cluster.restartDisk(first);
      await env.cluster.killDisk(second);
    }],
  ]);
  const puts = await storm(s3, bucket, { count, workers: 32, keys: Math.floor(count * 0.8), faults, abortEvery: 10 });
  await env.cluster.restartDisk(second);
  const outcome = await verify(bucket, puts);
  console.log(`s3-crash ${bucket} (seed ${seed}): killed disks ${first} then ${second}; ${JSON.stringify(outcome)}`);
  expect(outcome.acknowledged).toBeGreaterThan(count / 2);
}

it(`every acknowledged PUT survives kill -9 of daemons mid-storm byte-exact; the rest are absent or whole (replicated pool, seed ${seed})`, async () => {
  await s3.send(new CreateBucketCommand({ Bucket: 'storm' }));
  await stormWithKills('storm', 400);
}, 600_000);

/**
 * The EC bucket: pieces in the EC pool, manifests and the index in the
 * replicated pool. It used to lose acknowledged objects now and then (e.g.
 * TESSERA_SEED=465947889: storm/214 or storm/15 NotFound for good): a write
 * that became durable on a member just after its pg's interval changed was
 * missing from the log that member reported to peering. Peering's query now
 * reports everything the member's store holds (docs/erasure-coding.md, "The
 * rule that keeps acknowledged writes"); test/cluster-crash-cas.test.ts is
 * the quicker regression test.
 */
it(`the same on a bucket whose data is in the erasure-coded pool (seed ${seed})`, async () => {
  await s3.send(new CreateBucketCommand({ Bucket: 'storm-ec', CreateBucketConfiguration: { LocationConstraint: 'ec' as never } }));
  try {
    await s3.send(new PutObjectCommand({ Bucket: 'storm-ec', Key: 'probe', Body: Buffer.alloc(600 * KiB, 1) }));
  } catch (err) {
    if ((err as Error).name !== 'NotImplemented') throw err;
    warnSkipped('the erasure-coded storm of test/s3-crash.test.ts', 'writes to the EC pool answer NotImplemented', 'it runs once EC writes land');
    return;
  }
  await stormWithKills('storm-ec', 300);
}, 600_000);

/** `tessera s3` in its own process against the test cluster's map service, on a fixed port once bound. */
async function startGatewayProcess(port: number): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [tesseraBin, 's3', '--map', `127.0.0.1:${env.cluster.mapd.port}`, '--listen', `127.0.0.1:${port}`, '--meta-pool', 'rep', '--data-pool', 'rep'], { stdio: ['ignore', 'pipe', 'pipe'] });
  gatewayProcesses.add(child);
  child.once('exit', () => gatewayProcesses.delete(child));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const bound = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"listening"')) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`tessera s3 exited ${code}: ${stderr}`)));
  });
  return { child, port: bound };
}

const gatewayProcesses = new Set<ChildProcess>();
afterAll(() => {
  for (const child of gatewayProcesses) child.kill('SIGKILL');
});

function killNine(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

it(`kill -9 of the gateway process mid-storm: acknowledged PUTs survive, the rest are absent or whole (seed ${seed})`, async () => {
  await s3.send(new CreateBucketCommand({ Bucket: 'storm-gw' }));
  let gateway = await startGatewayProcess(0);
  const port = gateway.port;
  // This client talks to the gateway process (same cluster, same user and keys).
  const remote = new S3Client({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }, maxAttempts: 1 });
  const count = 300;
  const faults = new Map<number, () => Promise<void>>([
    [Math.floor(count / 2), async () => {
      await killNine(gateway.child);
      gateway = await startGatewayProcess(port);
    }],
  ]);
  const puts = await storm(remote, 'storm-gw', { count, workers: 32, keys: Math.floor(count * 0.8), faults });
  const outcome = await verify('storm-gw', puts);
  console.log(`s3-crash storm-gw (seed ${seed}): gateway killed at PUT ${count / 2}; ${JSON.stringify(outcome)}`);
  expect(outcome.failed).toBeGreaterThan(0);
  expect(outcome.acknowledged).toBeGreaterThan(count / 3);
  remote.destroy();
  await killNine(gateway.child);
}, 600_000);
