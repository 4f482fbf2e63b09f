/**
 * A bucket's index shard count is its own, fixed at creation and kept in its
 * record (gateways/s3/meta/bucket-index.ts; docs/s3-api.md, "Index shards").
 * Real gateways (indexShards 3 and 17, then others started on the same
 * cluster) driven by @aws-sdk/client-s3:
 * - each creates buckets with its count; every key's entry sits in the shard
 *   object murmur3(key) mod that count, every shard is used and none past it;
 *   listings (v2 and v1: prefix, delimiter, pages of a few keys) come back in
 *   UTF-8 byte order across shards, also with each shard read a few entries
 *   at a time (the listing budget lowered); deletes; a versioned bucket's
 *   ListObjectVersions in pages; DeleteBucket leaves none of the bucket's
 *   shard objects in the metadata pool (the cluster client's listing);
 * - a bucket created under one default keeps its count when a gateway with
 *   another default serves it (listed, read, written, deleted);
 * - a record written before the field (no indexShards) with entries where
 *   the old code put them (murmur3 mod 8) still reads, lists and deletes,
 *   through a gateway whose default is 3;
 * - counts outside 1..1024 stop the gateway (and `tessera s3`) at start.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectVersionsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { S3Gateway, S3GatewayOptions } from '../gateways/s3/gateway.js';
import type { BucketRecord } from '../gateways/s3/meta/buckets.js';
import { setOwnerEntry } from '../gateways/s3/meta/bucket-owners.js';
import { murmur3 } from '../src/lib/hash.js';
import { limits } from '../src/lib/limits.js';
import { runTessera } from './helpers/daemon-process.js';
import { startS3Env, type S3TestEnv, bytes } from './helpers/s3.js';

let env: S3TestEnv;
const gateways: S3Gateway[] = [];
const clients: S3Client[] = [];

beforeAll(async () => {
  env = await startS3Env({ indexShards: 3 });
  await env.startupSweep;
}, 120_000);

afterAll(async () => {
  for (const c of clients) c.destroy();
  for (const g of gateways) await g.close().catch(() => undefined);
  await env?.stop();
});

async function startGateway(options: Partial<S3GatewayOptions>): Promise<{ gateway: S3Gateway; s3: S3Client }> {
  const gateway = await env.gatewayWith({ journalSweepIntervalMs: 0, ...options });
  gateways.push(gateway);
  const s3 = new S3Client({ endpoint: `http://127.0.0.1:${gateway.port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }, maxAttempts: 1 });
  clients.push(s3);
  return { gateway, s3 };
}

const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const shardOf = (key: string, shards: number): number => murmur3(Buffer.from(key, 'utf8')) % shards;

/** The shard numbers of the bucket's index objects in the metadata pool (the cluster's own listing). */
async function shardObjects(bucketId: string): Promise<number[]> {
  const found: number[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.cluster.client.list('rep', { limit: 1000, ...(cursor ? { cursor } : {}) });
    for (const name of page.names) if (name.startsWith(`s3.index.${bucketId}.`)) found.push(Number(name.slice(`s3.index.${bucketId}.`.length)));
    cursor = page.cursor;
  } while (cursor);
  return found.sort((a, b) => a - b);
}

/** Whether the key's current entry is in shard object n of the bucket. */
async function entryIn(bucketId: string, n: number, key: string): Promise<boolean> {
  const [raw] = await env.cluster.client.omapGet('rep', `s3.index.${bucketId}.${n}`, [Buffer.concat([Buffer.from('c'), Buffer.from(key, 'utf8')])]);
  return raw !== undefined;
}

async function record(s3Gateway: S3Gateway, bucket: string): Promise<BucketRecord> {
  const r = await s3Gateway.services.buckets.get(bucket);
  if (!r) throw new Error(`no bucket ${bucket}`);
  return r;
}

/** Runs fn with every shard read at most `perShard` entries at a time (the listing budget lowered). */
async function withSmallShardPages<T>(shards: number, perShard: number, fn: () => Promise<T>): Promise<T> {
  const mutable = limits as unknown as { s3IndexListEntriesMax: number };
  const saved = mutable.s3IndexListEntriesMax;
  mutable.s3IndexListEntriesMax = shards * perShard;
  try {
    return await fn();
  } finally {
    mutable.s3IndexListEntriesMax = saved;
  }
}

async function putAll(s3: S3Client, bucket: string, objects: Map<string, Buffer>): Promise<void> {
  const list = [...objects];
  for (let i = 0; i < list.length; i += 16) {
    await Promise.all(list.slice(i, i + 16).map(([Key, Body]) => s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body }))));
  }
}

async function listV2(s3: S3Client, bucket: string, o: { prefix?: string; delimiter?: string; maxKeys: number }): Promise<{ keys: string[]; prefixes: string[] }> {
  const keys: string[] = [];
  const prefixes: string[] = [];
  let token: string | undefined;
  for (let pages = 0; pages < 10_000; pages++) {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: o.maxKeys, ...(o.prefix ? { Prefix: o.prefix } : {}), ...(o.delimiter ? { Delimiter: o.delimiter } : {}), ...(token ? { ContinuationToken: token } : {}) }));
    keys.push(...(r.Contents ?? []).map((c) => c.Key!));
    prefixes.push(...(r.CommonPrefixes ?? []).map((p) => p.Prefix!));
    if (!r.IsTruncated) return { keys, prefixes };
    token = r.NextContinuationToken;
  }
  throw new Error('listing does not end');
}

async function listV1(s3: S3Client, bucket: string, maxKeys: number): Promise<string[]> {
  const keys: string[] = [];
  let marker: string | undefined;
  for (let pages = 0; pages < 10_000; pages++) {
    const r = await s3.send(new ListObjectsCommand({ Bucket: bucket, MaxKeys: maxKeys, ...(marker ? { Marker: marker } : {}) }));
    keys.push(...(r.Contents ?? []).map((c) => c.Key!));
    if (!r.IsTruncated) return keys;
    marker = keys[keys.length - 1];
  }
  throw new Error('listing does not end');
}

/** What a delimiter listing of the keys should answer (S3's rules), in byte order. */
function expectedListing(keys: string[], prefix: string, delimiter: string): { keys: string[]; prefixes: string[] } {
  const contents: string[] = [];
  const prefixes = new Set<string>();
  for (const k of keys.filter((k) => k.startsWith(prefix)).sort(byteOrder)) {
    const at = delimiter ? k.indexOf(delimiter, prefix.length) : -1;
    if (at >= 0) prefixes.add(k.slice(0, at + delimiter.length));
    else contents.push(k);
  }
  return { keys: contents, prefixes: [...prefixes].sort(byteOrder) };
}

async function checkListings(s3: S3Client, bucket: string, keys: string[]): Promise<void> {
  const sorted = [...keys].sort(byteOrder);
  expect((await listV2(s3, bucket, { maxKeys: 1000 })).keys).toEqual(sorted);
  expect((await listV2(s3, bucket, { maxKeys: 7 })).keys).toEqual(sorted);
  expect(await listV1(s3, bucket, 11)).toEqual(sorted);
  for (const [prefix, delimiter] of [['', '/'], ['dir1/', '/'], ['dir2/sub1/', '/'], ['dir', ''], ['t', '-']] as const) {
    expect(await listV2(s3, bucket, { prefix, delimiter, maxKeys: 3 }), `prefix ${prefix} delimiter ${delimiter}`).toEqual(expectedListing(keys, prefix, delimiter));
  }
}

/** Keys of several shapes: directories, flat names, and non-ASCII ones whose byte order is not UTF-16's. */
function makeObjects(count: number, tag: string): Map<string, Buffer> {
  const objects = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    const key = i % 3 === 0 ? `top-${i}` : `dir${i % 5}/sub${i % 3}/k${i}`;
    objects.set(key, Buffer.from(`${tag} ${key}`));
  }
  for (const key of ['é', 'zz', 'Z', '\u{1F600}x', 'a\u00ff', 'ab', '\uffef', 'dir1/\u{1F600}', 'dir1/\uffef']) objects.set(key, Buffer.from(`${tag} ${key}`));
  // Larger than the inline bound: striped data objects, named by their entries.
  objects.set('dir1/big', randomBytes(9000));
  objects.set('top-big', randomBytes(5000));
  return objects;
}

async function deleteEverything(s3: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const r = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, MaxKeys: 1000 }));
    const all = [...(r.Versions ?? []), ...(r.DeleteMarkers ?? [])].map((v) => ({ Key: v.Key!, VersionId: v.VersionId! }));
    if (all.length === 0) return;
    const out = await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: all, Quiet: true } }));
    expect(out.Errors ?? []).toEqual([]);
  }
}

describe.each([3, 17])('a gateway with indexShards %i', (shards) => {
  it('creates buckets with that count: entries in its shards, listings in byte order, versions, DeleteBucket removes every shard', async () => {
    const { gateway, s3 } = shards === 3 ? { gateway: env.gateway, s3: env.s3() } : await startGateway({ indexShards: shards });
    const bucket = `shards-${shards}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    const b = await record(gateway, bucket);
    expect(b.indexShards).toBe(shards);

    const objects = makeObjects(200, 'first');
    await putAll(s3, bucket, objects);
    // Every shard of the bucket's count holds entries, none past it; each key in murmur3(key) mod count.
    expect(await shardObjects(b.id)).toEqual(range(shards));
    for (const key of [...objects.keys()].slice(0, 40)) expect(await entryIn(b.id, shardOf(key, shards), key), key).toBe(true);

    const keys = [...objects.keys()];
    await checkListings(s3, bucket, keys);
    // Each shard read one or two entries at a time: pages end where the least advanced shard's read ended.
    await withSmallShardPages(shards, 1, () => checkListings(s3, bucket, keys));
    await withSmallShardPages(shards, 2, () => checkListings(s3, bucket, keys));
    for (const key of ['dir1/big', 'top-big', '\u{1F600}x', 'top-3']) {
      expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body)).equals(objects.get(key)!), key).toBe(true);
    }

    // Deletes: one by one and in a batch.
    const gone = keys.filter((_, i) => i % 3 === 1);
    for (const Key of gone.slice(0, 10)) await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key }));
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: gone.slice(10).map((Key) => ({ Key })), Quiet: true } }));
    const left = keys.filter((k) => !gone.includes(k));
    await checkListings(s3, bucket, left);

    // Versions live in the key's shard too: ListObjectVersions merges the shards in pages.
    await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    const versionIds = new Map<string, string[]>();
    for (const key of ['v/a', 'v/b', 'v/\u{1F600}', 'v/c', 'v/é']) {
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.unshift((await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: Buffer.from(`${key} v${i}`) }))).VersionId!);
      versionIds.set(key, ids); // newest first
    }
    const marker = (await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'v/b' }))).VersionId!;
    versionIds.get('v/b')!.unshift(marker);
    const expected = [...versionIds.keys()].sort(byteOrder).flatMap((key) => versionIds.get(key)!.map((id) => `${key}@${id}`));
    const listVersions = async (): Promise<string[]> => {
      const seen: string[] = [];
      let keyMarker: string | undefined;
      let idMarker: string | undefined;
      for (let pages = 0; pages < 1000; pages++) {
        const r = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'v/', MaxKeys: 2, ...(keyMarker ? { KeyMarker: keyMarker, VersionIdMarker: idMarker } : {}) }));
        const page = [...(r.Versions ?? []), ...(r.DeleteMarkers ?? [])].map((v) => ({ key: v.Key!, id: v.VersionId! }));
        // Versions and markers come in two lists: put them back in the order of the page (by key, then newest first).
        page.sort((x, y) => byteOrder(x.key, y.key) || versionIds.get(x.key)!.indexOf(x.id) - versionIds.get(y.key)!.indexOf(y.id));
        seen.push(...page.map((v) => `${v.key}@${v.id}`));
        if (!r.IsTruncated) return seen;
        keyMarker = r.NextKeyMarker;
        idMarker = r.NextVersionIdMarker;
      }
      throw new Error('version listing does not end');
    };
    expect(await listVersions()).toEqual(expected);
    await withSmallShardPages(shards, 2, async () => expect(await listVersions()).toEqual(expected));
    expect((await listV2(s3, bucket, { prefix: 'v/', maxKeys: 2 })).keys).toEqual(['v/a', 'v/c', 'v/é', 'v/\u{1F600}']);

    await deleteEverything(s3, bucket);
    await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
    expect(await gateway.services.buckets.get(bucket)).toBeNull();
    expect(await shardObjects(b.id)).toEqual([]);
  }, 300_000);
});

it('a bucket keeps its count when a gateway with another default serves it', async () => {
  const first = await startGateway({ indexShards: 3 });
  await first.s3.send(new CreateBucketCommand({ Bucket: 'keeps-3' }));
  const objects = makeObjects(60, 'kept');
  await putAll(first.s3, 'keeps-3', objects);
  const b = await record(first.gateway, 'keeps-3');
  expect(b.indexShards).toBe(3);
  await first.gateway.close();

  // The "restart": gateways with other defaults on the same cluster.
  for (const other of [17, undefined]) {
    const { gateway, s3 } = await startGateway(other === undefined ? {} : { indexShards: other });
    expect((await record(gateway, 'keeps-3')).indexShards).toBe(3);
    await checkListings(s3, 'keeps-3', [...objects.keys()]);
    for (const [key, body] of objects) expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'keeps-3', Key: key }))).Body)).equals(body), key).toBe(true);
    const extra = `added-by-${other ?? 'default'}`;
    await s3.send(new PutObjectCommand({ Bucket: 'keeps-3', Key: extra, Body: Buffer.from(extra) }));
    objects.set(extra, Buffer.from(extra));
    expect(await entryIn(b.id, shardOf(extra, 3), extra)).toBe(true);
    expect(await shardObjects(b.id)).toEqual([0, 1, 2]);
    // Its own new buckets get its own default.
    const fresh = `fresh-${other ?? 'default'}`;
    await s3.send(new CreateBucketCommand({ Bucket: fresh }));
    expect((await record(gateway, fresh)).indexShards).toBe(other ?? 8);
  }
  const last = gateways[gateways.length - 1]!;
  const s3 = clients[clients.length - 1]!;
  await s3.send(new DeleteObjectsCommand({ Bucket: 'keeps-3', Delete: { Objects: [...objects.keys()].map((Key) => ({ Key })), Quiet: true } }));
  await s3.send(new DeleteBucketCommand({ Bucket: 'keeps-3' }));
  expect(await last.services.buckets.get('keeps-3')).toBeNull();
  expect(await shardObjects(b.id)).toEqual([]);
}, 300_000);

it('a record written before the count was per bucket means 8 shards: it reads, lists, takes writes and deletes', async () => {
  const s3 = env.s3(); // a gateway whose default is 3
  const name = 'legacy-eight';
  const id = randomBytes(8).toString('hex');
  // The record as the previous version wrote it (no indexShards), with its owner index entry.
  const old = { name, id, owner: env.userId, createdMs: Date.now(), dataPool: 'rep', versioning: 'Unversioned' };
  await env.cluster.client.transact('rep', 's3.buckets', [{ type: 'create' }, { type: 'omapSet', entries: [[Buffer.from(name, 'utf8'), Buffer.from(JSON.stringify(old))]] }, setOwnerEntry(old)]);
  // Entries where the previous version put them: shard murmur3(key) mod 8.
  const objects = makeObjects(60, 'legacy');
  for (const [key, body] of objects) {
    if (body.length > 4096) continue; // inline entries only: no data objects to write by hand
    const entry = { sizeBytes: body.length, etag: `"${createHash('md5').update(body).digest('hex')}"`, mtimeMs: Date.now(), data: null, inline: body.toString('base64'), owner: env.userId };
    await env.cluster.client.transact('rep', `s3.index.${id}.${shardOf(key, 8)}`, [{ type: 'create' }, { type: 'omapSet', entries: [[Buffer.concat([Buffer.from('c'), Buffer.from(key, 'utf8')]), Buffer.from(JSON.stringify(entry))]] }]);
  }
  for (const [key, body] of objects) if (body.length > 4096) objects.delete(key);
  expect(await shardObjects(id)).toEqual(range(8));

  await checkListings(s3, name, [...objects.keys()]);
  for (const [key, body] of objects) expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: name, Key: key }))).Body)).equals(body), key).toBe(true);
  // New writes go where the old code would have put them; an overwrite replaces the old entry.
  const more = makeObjects(20, 'newer');
  await putAll(s3, name, more);
  for (const [key, body] of more) objects.set(key, body);
  for (const key of [...more.keys()]) expect(await entryIn(id, shardOf(key, 8), key), key).toBe(true);
  await checkListings(s3, name, [...objects.keys()]);
  expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: name, Key: 'top-3' }))).Body)).toString()).toBe('newer top-3');
  expect((await env.gateway.services.buckets.get(name))?.indexShards).toBeUndefined();

  await s3.send(new DeleteObjectsCommand({ Bucket: name, Delete: { Objects: [...objects.keys()].map((Key) => ({ Key })), Quiet: true } }));
  await s3.send(new DeleteBucketCommand({ Bucket: name }));
  expect(await shardObjects(id)).toEqual([]);
}, 300_000);

it('an index shard count outside 1..1024 stops the gateway at start, and `tessera s3`', async () => {
  for (const indexShards of [0, 1025, 2.5, -1]) {
    await expect(env.gatewayWith({ indexShards })).rejects.toThrow(/indexShards .* is not an integer from 1 to 1024/);
  }
  const r = await runTessera(['s3', '--listen', '127.0.0.1:0', '--index-shards', '1025'], env.cluster.mapd.port);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain('--index-shards wants an integer from 1 to 1024, got 1025');
}, 60_000);
