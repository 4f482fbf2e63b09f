/**
 * Orphaned data after a gateway dies (docs/s3-api.md, "Orphaned data"):
 * `tessera s3` processes on a real cluster (startS3Env's daemons), killed
 * with SIGKILL by their fault hook (TESSERA_S3_FAULT) at the two critical
 * points of a write: after a new object's data is stored and before its
 * index entry is committed ('after-data'), and after the entry replaced an
 * older object and before that object's data is removed ('after-swap').
 * Then:
 * - the leftover data objects exist and each has a journal record;
 * - a gateway started with the default grace (1 h) leaves them (young);
 * - a gateway started with --journal-grace-ms 0 frees them at start: the
 *   bucket's objects in the pool are then exactly those its index names,
 *   no journal record is left, and every acknowledged object reads back
 *   byte-exact.
 * Versioned buckets: removing versions, and Suspended overwrites replacing
 * the null version, leave no records and no unnamed data; a gateway killed
 * after such a replace leaves the null version's data, freed by the sweep.
 * And a write slower than the grace: a sweep takes its record while its
 * body is still arriving; the write then fails (RequestTimeout) and leaves
 * nothing. Sizes: 64 KiB (one manifest with its data inline) and 5 MiB
 * (manifest and pieces), over the 4 KiB inline-in-index threshold.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { PassThrough } from 'node:stream';
import { CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, ListObjectVersionsCommand, PutBucketVersioningCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startS3Env, errorOf, bytes, type S3TestEnv } from './helpers/s3.js';
import { tesseraBin } from './helpers/daemon-process.js';
import { BucketIndex, type IndexEntry } from '../gateways/s3/meta/bucket-index.js';
import { ownerName } from '../gateways/s3/meta/journal.js';

let env: S3TestEnv;
let s3: S3Client;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
}, 120_000);
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await env?.stop();
});

interface GatewayProcess {
  child: ChildProcess;
  client: S3Client;
  /** Lines the process printed as JSON events. */
  events: Array<Record<string, unknown>>;
  /** Resolves at the first event of this name. */
  event(name: string): Promise<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: string | null }>;
}

async function startGateway(o: { fault?: string; args?: string[] } = {}): Promise<GatewayProcess> {
  const child = spawn(process.execPath, [tesseraBin, 's3', '--map', `127.0.0.1:${env.cluster.mapd.port}`, '--listen', '127.0.0.1:0', '--meta-pool', 'rep', '--data-pool', 'rep', ...(o.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...(o.fault ? { TESSERA_S3_FAULT: o.fault } : {}) },
  });
  children.add(child);
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  void exited.then(() => children.delete(child));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const events: Array<Record<string, unknown>> = [];
  const waiters: Array<{ name: string; resolve: (e: Record<string, unknown>) => void }> = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    const e = JSON.parse(line) as Record<string, unknown>;
    events.push(e);
    for (const w of waiters.filter((w) => w.name === e.event)) w.resolve(e);
  });
  const event = (name: string): Promise<Record<string, unknown>> => {
    const seen = events.find((e) => e.event === name);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      waiters.push({ name, resolve });
      void exited.then(({ code, signal }) => reject(new Error(`tessera s3 exited (${code ?? signal}) before ${name}: ${stderr}`)));
    });
  };
  const { port } = (await event('listening')) as { port: number };
  const client = new S3Client({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }, maxAttempts: 1 });
  return { child, client, events, event, exited };
}

async function poolNames(pool = 'rep'): Promise<string[]> {
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.cluster.client.list(pool, { limit: 1000, ...(cursor ? { cursor } : {}) });
    names.push(...page.names);
    cursor = page.cursor;
  } while (cursor);
  return names;
}

async function indexOf(bucket: string): Promise<{ id: string; index: BucketIndex }> {
  const record = (await env.gateway.services.buckets.get(bucket))!;
  return { id: record.id, index: new BucketIndex(env.cluster.client, 'rep', record) };
}

/** The bucket's omap records of one kind ('c' current entries, 'v' versions, 'j' journal) across its index shards. */
async function records(bucket: string, kind: string): Promise<Array<[string, Buffer]>> {
  const { index } = await indexOf(bucket);
  const out: Array<[string, Buffer]> = [];
  for (let n = 0; n < index.shards; n++) {
    try {
      const page = await env.cluster.client.omapList('rep', index.shardObjectAt(n), { prefix: Buffer.from(kind), limit: 10_000 });
      for (const [k, v] of page.entries) out.push([k.subarray(1).toString('utf8'), v]);
    } catch (err) {
      if ((err as { code?: string }).code !== 'NotFound') throw err;
    }
  }
  return out;
}

/** Data objects of the bucket in the pool (manifests and pieces, by the object they belong to) that no index entry names. */
async function unreferenced(bucket: string): Promise<string[]> {
  const { id } = await indexOf(bucket);
  const named = new Set<string>();
  for (const [, raw] of [...(await records(bucket, 'c')), ...(await records(bucket, 'v'))]) {
    const e = JSON.parse(raw.toString('utf8')) as IndexEntry;
    const n = ownerName(e);
    if (n !== null) named.add(n);
  }
  const stored = new Set((await poolNames()).filter((n) => n.startsWith(`${id}/`)).map((n) => n.split('\0')[0]!));
  return [...stored].filter((n) => !named.has(n)).sort();
}

const KiB = 1024;
const MiB = 1024 * KiB;

it('data left by a gateway killed after storing it or after replacing an object is found and freed; acknowledged objects are untouched', async () => {
  await s3.send(new CreateBucketCommand({ Bucket: 'orphans' }));
  const acked = new Map<string, Buffer>([
    ['keep-inline', randomBytes(1 * KiB)],
    ['keep-64k', randomBytes(64 * KiB)],
    ['keep-5m', randomBytes(5 * MiB)],
    ['b', randomBytes(64 * KiB)],
  ]);
  for (const [key, body] of acked) await s3.send(new PutObjectCommand({ Bucket: 'orphans', Key: key, Body: body }));
  expect(await unreferenced('orphans')).toEqual([]);

  // Killed after the data, before the commit: a 64 KiB object and a 5 MiB one.
  for (const [key, size] of [['a', 64 * KiB], ['a5', 5 * MiB]] as const) {
    const gw = await startGateway({ fault: 'after-data' });
    const put = errorOf(gw.client.send(new PutObjectCommand({ Bucket: 'orphans', Key: key, Body: randomBytes(size) })));
    expect((await gw.exited).signal).toBe('SIGKILL');
    await put;
    gw.client.destroy();
    expect(await errorOf(s3.send(new GetObjectCommand({ Bucket: 'orphans', Key: key })))).toEqual({ name: 'NoSuchKey', status: 404 });
  }
  // Killed after the commit replaced b, before b's old data was removed: the new b is committed (not acknowledged).
  const b2 = randomBytes(64 * KiB);
  {
    const gw = await startGateway({ fault: 'after-swap' });
    const put = errorOf(gw.client.send(new PutObjectCommand({ Bucket: 'orphans', Key: 'b', Body: b2 })));
    expect((await gw.exited).signal).toBe('SIGKILL');
    await put;
    gw.client.destroy();
  }
  acked.set('b', b2);

  const left = await unreferenced('orphans');
  expect(left.length).toBe(3);
  const journal = await records('orphans', 'j');
  expect(journal.map(([name]) => name).sort()).toEqual(left);
  expect(journal.map(([, raw]) => (JSON.parse(raw.toString()) as { kind: string }).kind).sort()).toEqual(['new', 'new', 'replaced']);

  // The default grace (1 h) leaves them: they could be writes in flight.
  {
    const gw = await startGateway();
    const swept = await gw.event('journal-swept');
    expect(swept).toMatchObject({ dataFreed: 0, failures: 0 });
    expect(swept.recordsYoung).toBeGreaterThanOrEqual(3);
    gw.child.kill('SIGTERM');
    await gw.exited;
    gw.client.destroy();
    expect(await unreferenced('orphans')).toEqual(left);
  }
  // Past the grace: the sweep at start frees exactly them.
  {
    const gw = await startGateway({ args: ['--journal-grace-ms', '0'] });
    const swept = await gw.event('journal-swept');
    expect(swept).toMatchObject({ failures: 0 });
    expect(swept.dataFreed).toBeGreaterThanOrEqual(3);
    gw.child.kill('SIGTERM');
    await gw.exited;
    gw.client.destroy();
  }
  expect(await unreferenced('orphans')).toEqual([]);
  expect(await records('orphans', 'j')).toEqual([]);
  for (const [key, body] of acked) expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'orphans', Key: key }))).Body)).equals(body)).toBe(true);
}, 300_000);

it('a write that outlives the grace fails when a sweep took its record, and leaves nothing', async () => {
  await s3.send(new CreateBucketCommand({ Bucket: 'slow' }));
  const body = randomBytes(256 * KiB);
  const stream = new PassThrough();
  stream.write(body.subarray(0, 64 * KiB));
  const put = errorOf(s3.send(new PutObjectCommand({ Bucket: 'slow', Key: 'k', Body: stream, ContentLength: body.length })));
  // The write's record exists before its data is stored (written first).
  while ((await records('slow', 'j')).length === 0) await new Promise((r) => setImmediate(r));
  const stats = await env.gateway.sweepJournal({ graceMs: 0, bucketName: 'slow' });
  expect(stats.dataFreed).toBe(1);
  stream.end(body.subarray(64 * KiB));
  expect((await put).name).toBe('RequestTimeout');
  expect(await errorOf(s3.send(new GetObjectCommand({ Bucket: 'slow', Key: 'k' })))).toEqual({ name: 'NoSuchKey', status: 404 });
  expect(await unreferenced('slow')).toEqual([]);
  expect(await records('slow', 'j')).toEqual([]);
  // The key takes a write again.
  await s3.send(new PutObjectCommand({ Bucket: 'slow', Key: 'k', Body: body }));
  expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'slow', Key: 'k' }))).Body)).equals(body)).toBe(true);
}, 120_000);

it('versioned buckets: removed versions and replaced null versions leave nothing; a kill after the replace is swept', async () => {
  await s3.send(new CreateBucketCommand({ Bucket: 'orphans-v' }));
  await s3.send(new PutBucketVersioningCommand({ Bucket: 'orphans-v', VersioningConfiguration: { Status: 'Enabled' } }));
  const v1 = await s3.send(new PutObjectCommand({ Bucket: 'orphans-v', Key: 'k', Body: randomBytes(64 * KiB) }));
  const v2body = randomBytes(64 * KiB);
  await s3.send(new PutObjectCommand({ Bucket: 'orphans-v', Key: 'k', Body: v2body }));
  await s3.send(new DeleteObjectCommand({ Bucket: 'orphans-v', Key: 'k', VersionId: v1.VersionId }));
  await s3.send(new PutBucketVersioningCommand({ Bucket: 'orphans-v', VersioningConfiguration: { Status: 'Suspended' } }));
  await s3.send(new PutObjectCommand({ Bucket: 'orphans-v', Key: 'k', Body: randomBytes(64 * KiB) })); // the null version
  const nullBody = randomBytes(64 * KiB);
  await s3.send(new PutObjectCommand({ Bucket: 'orphans-v', Key: 'k', Body: nullBody })); // replaces it
  expect(await records('orphans-v', 'j')).toEqual([]);
  expect(await unreferenced('orphans-v')).toEqual([]);

  // Killed after replacing the null version again, before removing the replaced one's data.
  const gw = await startGateway({ fault: 'after-swap' });
  const last = randomBytes(64 * KiB);
  const put = errorOf(gw.client.send(new PutObjectCommand({ Bucket: 'orphans-v', Key: 'k', Body: last })));
  expect((await gw.exited).signal).toBe('SIGKILL');
  await put;
  gw.client.destroy();
  expect((await unreferenced('orphans-v')).length).toBe(1);
  expect((await records('orphans-v', 'j')).length).toBe(1);
  const stats = await env.gateway.sweepJournal({ graceMs: 0, bucketName: 'orphans-v' });
  expect(stats).toMatchObject({ dataFreed: 1, failures: 0 });
  expect(await unreferenced('orphans-v')).toEqual([]);
  expect(await records('orphans-v', 'j')).toEqual([]);
  // Both versions left read back: the committed null version and the older enabled one.
  const versions = (await s3.send(new ListObjectVersionsCommand({ Bucket: 'orphans-v' }))).Versions ?? [];
  expect(versions.map((v) => v.VersionId === 'null')).toEqual([true, false]);
  expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'orphans-v', Key: 'k' }))).Body)).equals(last)).toBe(true);
  expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'orphans-v', Key: 'k', VersionId: versions[1]!.VersionId }))).Body)).equals(v2body)).toBe(true);
}, 120_000);
