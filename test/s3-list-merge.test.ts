/**
 * The listing merge over a bucket's index shards (gateways/s3/meta/index-scan.ts), against a real gateway on a real
 * cluster, driven by @aws-sdk/client-s3:
 * - omap reads: the cluster client's omapList is wrapped to count the reads of one bucket's shard objects. A
 *   delimiter listing of 40 common prefixes on 256 shards (ListObjectsV2, ListObjects, ListObjectVersions) reads
 *   each shard about once per scan, where the merge that restarted past each common prefix read every shard again
 *   for each (10,530 reads for the v2 page); with each shard read one entry at a time, at most shards + keys reads.
 * - equivalence: random keys (delimiter edge cases, multi-byte UTF-8, characters that encoding-type=url escapes) on
 *   a bucket of 7 shards, some overwritten and some deleted (delete markers) after versioning is enabled; random
 *   listings (v1, v2, versions; prefix, delimiter, marker / start-after / key-marker, max-keys, encoding-type=url),
 *   paged to the end, each shard read 1, 2 or the usual number of entries at a time, must equal a reference
 *   computed here from the key set: every page at most max-keys items, every truncated page exactly max-keys.
 *   The seed is printed (TESSERA_SEED replays it).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  ListObjectVersionsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { TesseraClient } from '../src/client/client.js';
import { limits } from '../src/lib/limits.js';
import { seededRng, testSeed, type Rng } from './helpers/random.js';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';

const SHARDS = 256;
let env: S3TestEnv;
/** The shard objects whose omapList calls are counted (one bucket's: "s3.index.<id>."), and the count. */
const counter = { objectPrefix: null as string | null, reads: 0 };

beforeAll(async () => {
  env = await startS3Env({ indexShards: SHARDS });
  // The start-up sweep reads the index shards' journals: not a listing's reads.
  await env.startupSweep;
  const client = env.cluster.client as { omapList: TesseraClient['omapList'] };
  const original = client.omapList.bind(env.cluster.client);
  client.omapList = (pool, name, options) => {
    if (counter.objectPrefix !== null && name.startsWith(counter.objectPrefix)) counter.reads++;
    return original(pool, name, options);
  };
}, 120_000);

afterAll(async () => {
  await env?.stop();
});

const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

/** Runs fn with every shard of a bucket of `shards` read at most `perShard` entries at a time (the listing budget lowered). */
async function withShardPages<T>(shards: number, perShard: number | null, fn: () => Promise<T>): Promise<T> {
  if (perShard === null) return fn();
  const mutable = limits as unknown as { s3IndexListEntriesMax: number };
  const saved = mutable.s3IndexListEntriesMax;
  mutable.s3IndexListEntriesMax = shards * perShard;
  try {
    return await fn();
  } finally {
    mutable.s3IndexListEntriesMax = saved;
  }
}

async function putAll(s3: S3Client, bucket: string, keys: string[]): Promise<Map<string, string>> {
  const ids = new Map<string, string>();
  for (let i = 0; i < keys.length; i += 16) {
    await Promise.all(
      keys.slice(i, i + 16).map(async (Key) => {
        const r = await s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body: Buffer.from(Key) }));
        ids.set(Key, r.VersionId ?? 'null');
      }),
    );
  }
  return ids;
}

/** The omap reads of the bucket's index shards that fn makes. */
async function countReads(bucketId: string, fn: () => Promise<void>): Promise<number> {
  counter.objectPrefix = `s3.index.${bucketId}.`;
  counter.reads = 0;
  try {
    await fn();
    return counter.reads;
  } finally {
    counter.objectPrefix = null;
  }
}

it('a delimiter listing of 40 common prefixes on 256 shards reads each shard about once, not once per prefix', async () => {
  const s3 = env.s3();
  await s3.send(new CreateBucketCommand({ Bucket: 'wide' }));
  const bucket = await env.gateway.services.buckets.get('wide');
  expect(bucket?.indexShards).toBe(SHARDS);
  const prefixes = Array.from({ length: 40 }, (_, i) => `p${String(i).padStart(2, '0')}/`);
  const top = Array.from({ length: 10 }, (_, i) => `top-${i}`);
  const keys = [...prefixes.flatMap((p) => Array.from({ length: 5 }, (_, k) => `${p}k${k}`)), ...top];
  await putAll(s3, 'wide', keys);

  const v2 = async (): Promise<void> => {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: 'wide', Delimiter: '/' }));
    expect({ keys: r.Contents?.map((c) => c.Key), prefixes: r.CommonPrefixes?.map((p) => p.Prefix), truncated: r.IsTruncated }).toEqual({ keys: top, prefixes, truncated: false });
  };
  const v1 = async (): Promise<void> => {
    const r = await s3.send(new ListObjectsCommand({ Bucket: 'wide', Delimiter: '/' }));
    expect({ keys: r.Contents?.map((c) => c.Key), prefixes: r.CommonPrefixes?.map((p) => p.Prefix), truncated: r.IsTruncated }).toEqual({ keys: top, prefixes, truncated: false });
  };
  const versions = async (): Promise<void> => {
    const r = await s3.send(new ListObjectVersionsCommand({ Bucket: 'wide', Delimiter: '/' }));
    expect({ keys: r.Versions?.map((c) => c.Key), prefixes: r.CommonPrefixes?.map((p) => p.Prefix), truncated: r.IsTruncated }).toEqual({ keys: top, prefixes, truncated: false });
  };
  const id = bucket!.id;
  const figures = {
    v2: await countReads(id, v2),
    v1: await countReads(id, v1),
    versions: await countReads(id, versions),
    v2OneEntryPerShardRead: await withShardPages(SHARDS, 1, () => countReads(id, v2)),
    versionsOneEntryPerShardRead: await withShardPages(SHARDS, 1, () => countReads(id, versions)),
  };
  console.log(JSON.stringify({ shards: SHARDS, commonPrefixes: prefixes.length, keys: keys.length, omapReads: figures }));
  const perPrefix = SHARDS * prefixes.length; // what restarting the merge past each common prefix costs, at least
  // One read per shard (its whole share of 210 keys fits in one page); versions: two scans (current entries, versions).
  expect(figures.v2).toBeLessThanOrEqual(SHARDS);
  expect(figures.v1).toBeLessThanOrEqual(SHARDS);
  expect(figures.versions).toBeLessThanOrEqual(2 * SHARDS);
  // One entry per read: a read per entry at most, plus one per shard that ends the scan.
  expect(figures.v2OneEntryPerShardRead).toBeLessThanOrEqual(SHARDS + keys.length);
  expect(figures.versionsOneEntryPerShardRead).toBeLessThanOrEqual(2 * (SHARDS + keys.length));
  for (const n of Object.values(figures)) expect(n).toBeLessThan(perPrefix / 10);
}, 300_000);

// ---- randomized equivalence ----

/** Key pieces: delimiters and their neighbours, multi-byte UTF-8 (2, 3 and 4 bytes, and U+FFEF above the surrogates), characters url-encoding escapes. */
const PIECES = ['a', 'b', 'z', 'A', '/', '-', '--', 'é', 'ü ', '\u{1F600}', '\uffef', '+%', 'x/y', 'a-', 'é/'];
const EDGE_KEYS = ['a', 'ab', 'ac', 'a-', 'a--', 'a---', 'a--b', 'a-b', 'b', 'dir/', 'dir/x', 'dir/x/', 'dir/x/y', 'é', 'é/', 'é/a', '\u{1F600}/x', '\u{1F600}', '\uffef', '\uffef/a', 'z/--/-'];
const DELIMITERS = ['', '/', '-', '--', 'é', '\u{1F600}'];

function randomKey(rng: Rng): string {
  for (;;) {
    const k = Array.from({ length: 1 + rng.int(5) }, () => rng.pick(PIECES)).join('');
    // Path-style URLs: no leading or doubled slash.
    if (!k.startsWith('/') && !k.includes('//')) return k;
  }
}

/** The first n code points of s (never half a surrogate pair). */
const codePoints = (s: string, n: number): string => Array.from(s).slice(0, n).join('');

/** The common prefix key rolls up to in a listing of prefix/delimiter, or null (it is listed as itself). */
function rollUp(key: string, prefix: string, delimiter: string): string | null {
  if (!delimiter || !key.startsWith(prefix)) return null;
  const at = key.indexOf(delimiter, prefix.length);
  return at < 0 ? null : key.slice(0, at + delimiter.length);
}

interface Query {
  prefix: string;
  delimiter: string;
  /** marker (v1), start-after (v2), key-marker (versions). */
  start: string;
  maxKeys: number;
  url: boolean;
}

/**
 * ListObjects as S3 defines it, from the live keys: keys after the marker (and not under it, when the marker is
 * itself a common prefix of the listing: a page ended with it), under the prefix, each rolled up to its common
 * prefix; in byte order. Items: "K key" and "P prefix".
 */
function referenceObjects(live: string[], q: Query): string[] {
  const out: string[] = [];
  const markerPrefix = q.start && rollUp(q.start, q.prefix, q.delimiter) === q.start ? q.start : null;
  for (const key of [...live].sort(byteOrder)) {
    if (!key.startsWith(q.prefix) || byteOrder(key, q.start) <= 0) continue;
    if (markerPrefix !== null && key.startsWith(markerPrefix)) continue;
    const common = rollUp(key, q.prefix, q.delimiter);
    const item = common === null ? `K ${key}` : `P ${common}`;
    if (out[out.length - 1] !== item) out.push(item);
  }
  return out;
}

/**
 * ListObjectVersions from every key's versions (newest first): keys after the key marker, each key's versions, or
 * its common prefix when that sorts after the key marker (one at or before it was listed on an earlier page).
 * Items: "V key@versionId" and "P prefix".
 */
function referenceVersions(versions: Map<string, string[]>, q: Query): string[] {
  const out: string[] = [];
  for (const key of [...versions.keys()].sort(byteOrder)) {
    if (!key.startsWith(q.prefix) || byteOrder(key, q.start) <= 0) continue;
    const common = rollUp(key, q.prefix, q.delimiter);
    if (common !== null) {
      if (byteOrder(common, q.start) > 0 && out[out.length - 1] !== `P ${common}`) out.push(`P ${common}`);
      continue;
    }
    for (const id of versions.get(key)!) out.push(`V ${key}@${id}`);
  }
  return out;
}

/** Checks one page's size and truncation; returns its items. */
function pageItems(items: string[], truncated: boolean | undefined, maxKeys: number, where: string): string[] {
  expect(items.length, where).toBeLessThanOrEqual(maxKeys);
  if (truncated) expect(items.length, `${where}: a truncated page is full`).toBe(maxKeys);
  return items;
}

const PAGES_MAX = 2000;

async function pagedV2(s3: S3Client, bucket: string, q: Query): Promise<string[]> {
  const dec = (s: string): string => (q.url ? decodeURIComponent(s) : s);
  const all: string[] = [];
  let token: string | undefined;
  for (let page = 0; page < PAGES_MAX; page++) {
    const r = await s3.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        MaxKeys: q.maxKeys,
        ...(q.prefix ? { Prefix: q.prefix } : {}),
        ...(q.delimiter ? { Delimiter: q.delimiter } : {}),
        ...(q.start ? { StartAfter: q.start } : {}),
        ...(q.url ? { EncodingType: 'url' } : {}),
        ...(token ? { ContinuationToken: token } : {}),
      }),
    );
    // Keys and prefixes come in two lists: the page's order is byte order (a key never sorts inside a prefix's range).
    const items = [...(r.Contents ?? []).map((c) => `K ${dec(c.Key!)}`), ...(r.CommonPrefixes ?? []).map((p) => `P ${dec(p.Prefix!)}`)].sort((x, y) => byteOrder(x.slice(2), y.slice(2)));
    all.push(...pageItems(items, r.IsTruncated, q.maxKeys, `v2 page ${page}`));
    expect(r.KeyCount).toBe(items.length);
    if (!r.IsTruncated) return all;
    token = r.NextContinuationToken;
  }
  throw new Error('listing does not end');
}

async function pagedV1(s3: S3Client, bucket: string, q: Query): Promise<string[]> {
  const dec = (s: string): string => (q.url ? decodeURIComponent(s) : s);
  const all: string[] = [];
  let marker = q.start;
  for (let page = 0; page < PAGES_MAX; page++) {
    const r = await s3.send(
      new ListObjectsCommand({
        Bucket: bucket,
        MaxKeys: q.maxKeys,
        ...(q.prefix ? { Prefix: q.prefix } : {}),
        ...(q.delimiter ? { Delimiter: q.delimiter } : {}),
        ...(marker ? { Marker: marker } : {}),
        ...(q.url ? { EncodingType: 'url' } : {}),
      }),
    );
    const items = [...(r.Contents ?? []).map((c) => `K ${dec(c.Key!)}`), ...(r.CommonPrefixes ?? []).map((p) => `P ${dec(p.Prefix!)}`)].sort((x, y) => byteOrder(x.slice(2), y.slice(2)));
    all.push(...pageItems(items, r.IsTruncated, q.maxKeys, `v1 page ${page}`));
    if (!r.IsTruncated) return all;
    // NextMarker only with a delimiter; else the last key, as clients do.
    marker = r.NextMarker !== undefined ? dec(r.NextMarker) : all[all.length - 1]!.slice(2);
  }
  throw new Error('listing does not end');
}

async function pagedVersions(s3: S3Client, bucket: string, q: Query, versions: Map<string, string[]>): Promise<string[]> {
  const dec = (s: string): string => (q.url ? decodeURIComponent(s) : s);
  const all: string[] = [];
  let keyMarker = q.start;
  let idMarker: string | undefined;
  for (let page = 0; page < PAGES_MAX; page++) {
    const r = await s3.send(
      new ListObjectVersionsCommand({
        Bucket: bucket,
        MaxKeys: q.maxKeys,
        ...(q.prefix ? { Prefix: q.prefix } : {}),
        ...(q.delimiter ? { Delimiter: q.delimiter } : {}),
        ...(keyMarker ? { KeyMarker: keyMarker } : {}),
        ...(idMarker ? { VersionIdMarker: idMarker } : {}),
        ...(q.url ? { EncodingType: 'url' } : {}),
      }),
    );
    // Versions and delete markers come in two lists: put them back in the page's order (by key, then newest first).
    const rows = [...(r.Versions ?? []), ...(r.DeleteMarkers ?? [])].map((v) => ({ key: dec(v.Key!), id: v.VersionId! }));
    const rank = (key: string, id: string): number => versions.get(key)?.indexOf(id) ?? -1;
    const items = [
      ...rows.map((v) => ({ at: v.key, rank: rank(v.key, v.id), item: `V ${v.key}@${v.id}` })),
      ...(r.CommonPrefixes ?? []).map((p) => ({ at: dec(p.Prefix!), rank: 0, item: `P ${dec(p.Prefix!)}` })),
    ]
      .sort((x, y) => byteOrder(x.at, y.at) || x.rank - y.rank)
      .map((x) => x.item);
    all.push(...pageItems(items, r.IsTruncated, q.maxKeys, `versions page ${page}`));
    if (!r.IsTruncated) return all;
    keyMarker = dec(r.NextKeyMarker!);
    idMarker = r.NextVersionIdMarker;
  }
  throw new Error('listing does not end');
}

function randomQuery(rng: Rng, keys: string[]): Query {
  const someKey = (): string => rng.pick(keys);
  const prefix = rng.float() < 0.5 ? '' : codePoints(someKey(), 1 + rng.int(3));
  const delimiter = rng.pick(DELIMITERS);
  let start = '';
  const r = rng.float();
  if (r < 0.15) start = someKey();
  else if (r < 0.3) {
    const k = someKey();
    start = codePoints(k, 1 + rng.int(Array.from(k).length)); // often one character short of a delimiter
  } else if (r < 0.45) start = rollUp(someKey(), prefix, delimiter) ?? ''; // a common prefix: where a page ended
  else if (r < 0.5) start = prefix; // the prefix itself
  return { prefix, delimiter, start, maxKeys: rng.pick([1, 2, 3, 5, 8, 1000]), url: rng.float() < 0.5 };
}

it('randomized: paged listings equal a reference computed from the key set (v1, v2, versions)', async () => {
  const seed = testSeed();
  console.log(`s3-list-merge seed ${seed} (TESSERA_SEED=${seed} replays it)`);
  const rng = seededRng(seed);
  const shards = 7;
  const gateway = await env.gatewayWith({ indexShards: shards, journalSweepIntervalMs: 0 });
  const s3 = new S3Client({ endpoint: `http://127.0.0.1:${gateway.port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }, maxAttempts: 1 });
  try {
    await s3.send(new CreateBucketCommand({ Bucket: 'random' }));
    expect((await gateway.services.buckets.get('random'))?.indexShards).toBe(shards);
    const keySet = new Set(EDGE_KEYS);
    while (keySet.size < 160) keySet.add(randomKey(rng));
    const keys = [...keySet];
    // Written while unversioned: each key's null version. Then versioned: some overwritten, some deleted (a delete
    // marker is the current entry: not listed by ListObjects, listed by ListObjectVersions).
    const versions = new Map<string, string[]>([...(await putAll(s3, 'random', keys))].map(([k, id]) => [k, [id]]));
    await s3.send(new PutBucketVersioningCommand({ Bucket: 'random', VersioningConfiguration: { Status: 'Enabled' } }));
    for (const key of keys) {
      const r = rng.float();
      if (r < 0.1) versions.get(key)!.unshift((await s3.send(new PutObjectCommand({ Bucket: 'random', Key: key, Body: Buffer.from('again') }))).VersionId!);
      else if (r < 0.25) versions.get(key)!.unshift((await s3.send(new DeleteObjectCommand({ Bucket: 'random', Key: key }))).VersionId!);
    }
    const deleted = new Set((await s3.send(new ListObjectVersionsCommand({ Bucket: 'random', MaxKeys: 1000 }))).DeleteMarkers?.filter((m) => m.IsLatest).map((m) => m.Key!));
    const live = keys.filter((k) => !deleted.has(k));
    expect(live.length).toBeLessThan(keys.length);

    for (let round = 0; round < 45; round++) {
      const q = randomQuery(rng, keys);
      const api = rng.pick(['v1', 'v2', 'versions'] as const);
      const perShard = rng.pick([1, 2, null]);
      const where = `round ${round}: ${api} ${JSON.stringify(q)}, entries per shard read ${perShard ?? 'usual'}`;
      const got = await withShardPages(shards, perShard, () =>
        api === 'v1' ? pagedV1(s3, 'random', q) : api === 'v2' ? pagedV2(s3, 'random', q) : pagedVersions(s3, 'random', q, versions),
      );
      expect(got, where).toEqual(api === 'versions' ? referenceVersions(versions, q) : referenceObjects(live, q));
    }
  } finally {
    s3.destroy();
    await gateway.close();
  }
}, 600_000);
