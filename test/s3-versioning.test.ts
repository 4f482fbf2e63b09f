/**
 * Bucket versioning and DeleteObjects through the real AWS SDK (v3, default
 * settings) against a real cluster: version ids on PUT, GET/HEAD/DELETE by
 * versionId, delete markers (and their headers, read with presigned requests
 * and fetch), the Suspended state's null version, ListObjectVersions with
 * prefixes, delimiters, markers and pages, concurrent PUTs keeping every
 * version, list-after-write, and that deleting every version leaves none of
 * the bucket's data in the data pool (its objects listed through the cluster
 * client). DeleteObjects: plain and versioned, Quiet, per-key errors, keys
 * with spaces and line breaks, the 1000-key limit, the required checksum and
 * malformed documents.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  PutBucketVersioningCommand,
  PutObjectCommand,
  type ListObjectVersionsCommandOutput,
  type ServiceInputTypes,
  type ServiceOutputTypes,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { BuildMiddleware } from '@smithy/types';
import { startS3Env, type S3TestEnv, errorOf, bytes } from './helpers/s3.js';

let env: S3TestEnv;
let s3: S3Client;

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
}, 120_000);
afterAll(async () => {
  await env?.stop();
});

const read = async (Bucket: string, Key: string, VersionId?: string) => {
  const got = await s3.send(new GetObjectCommand({ Bucket, Key, ...(VersionId ? { VersionId } : {}) }));
  return { body: await bytes(got.Body), versionId: got.VersionId };
};
/** Reads an object (a version) and checks its bytes and version id (Buffer.equals: vitest's deep equality is very slow on MiBs). */
async function expectRead(o: { Bucket: string; Key: string; VersionId?: string }, body: Buffer, versionId: string | undefined): Promise<void> {
  const got = await read(o.Bucket, o.Key, o.VersionId);
  expect(got.versionId).toBe(versionId);
  expect(got.body.equals(body), `${o.Key} ${o.VersionId ?? ''}: ${got.body.length} bytes`).toBe(true);
}

async function setVersioning(Bucket: string, Status: 'Enabled' | 'Suspended'): Promise<void> {
  await s3.send(new PutBucketVersioningCommand({ Bucket, VersioningConfiguration: { Status } }));
}

/** Every version and delete marker in document (S3) order, following the pages; read raw: the SDK splits Versions from DeleteMarkers. */
async function allVersions(Bucket: string, o: { Prefix?: string; MaxKeys?: number } = {}) {
  const versions: Array<{ key: string; id: string; latest: boolean; marker: boolean; size?: number }> = [];
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  const field = (xml: string, name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml)?.[1];
  for (;;) {
    const command = new ListObjectVersionsCommand({ Bucket, ...o, ...(KeyMarker ? { KeyMarker } : {}), ...(VersionIdMarker ? { VersionIdMarker } : {}) });
    const res = await fetch(await getSignedUrl(s3, command, { expiresIn: 300 }));
    const xml = await res.text();
    expect(res.status, xml).toBe(200);
    for (const m of xml.matchAll(/<(Version|DeleteMarker)>(.*?)<\/\1>/g)) {
      const size = field(m[2]!, 'Size');
      versions.push({
        key: field(m[2]!, 'Key')!,
        id: field(m[2]!, 'VersionId')!,
        latest: field(m[2]!, 'IsLatest') === 'true',
        marker: m[1] === 'DeleteMarker',
        ...(size !== undefined && size !== null ? { size: Number(size) } : {}),
      });
    }
    // The SDK reads the same page the same way.
    const page: ListObjectVersionsCommandOutput = await s3.send(command);
    expect((page.Versions?.length ?? 0) + (page.DeleteMarkers?.length ?? 0)).toBe([...xml.matchAll(/<(Version|DeleteMarker)>/g)].length);
    if (!page.IsTruncated) return versions;
    KeyMarker = page.NextKeyMarker;
    VersionIdMarker = page.NextVersionIdMarker;
  }
}

/** Names of the bucket's data objects (manifests and pieces) in the pool, through the cluster client. */
async function dataObjects(bucket: string): Promise<string[]> {
  const id = (await env.gateway.services.buckets.get(bucket))!.id;
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.cluster.client.list('rep', { limit: 1000, ...(cursor ? { cursor } : {}) });
    names.push(...page.names);
    cursor = page.cursor;
  } while (cursor);
  return names.filter((n) => n.startsWith(`${id}/`));
}
const manifests = async (bucket: string) => (await dataObjects(bucket)).filter((n) => !n.includes('\0'));

/** A raw (presigned) request, to read the headers the SDK does not surface on errors. */
async function raw(command: GetObjectCommand | HeadObjectCommand): Promise<Response> {
  return fetch(await getSignedUrl(s3, command, { expiresIn: 300 }), { method: command instanceof HeadObjectCommand ? 'HEAD' : 'GET' });
}

it('stores the versioning state: absent, Enabled, Suspended; refuses bad configurations', async () => {
  await s3.send(new CreateBucketCommand({ Bucket: 'vconf' }));
  expect((await s3.send(new GetBucketVersioningCommand({ Bucket: 'vconf' }))).Status).toBeUndefined();
  await setVersioning('vconf', 'Enabled');
  expect((await s3.send(new GetBucketVersioningCommand({ Bucket: 'vconf' }))).Status).toBe('Enabled');
  await setVersioning('vconf', 'Suspended');
  expect((await s3.send(new GetBucketVersioningCommand({ Bucket: 'vconf' }))).Status).toBe('Suspended');
  const bogus = s3.send(new PutBucketVersioningCommand({ Bucket: 'vconf', VersioningConfiguration: { Status: 'Bogus' as 'Enabled' } }));
  expect(await errorOf(bogus)).toEqual({ name: 'MalformedXML', status: 400 });
  const mfa = s3.send(new PutBucketVersioningCommand({ Bucket: 'vconf', VersioningConfiguration: { Status: 'Enabled', MFADelete: 'Enabled' } }));
  expect((await errorOf(mfa)).status).toBe(501);
  expect((await s3.send(new GetBucketVersioningCommand({ Bucket: 'vconf' }))).Status).toBe('Suspended');
  expect((await errorOf(s3.send(new GetBucketVersioningCommand({ Bucket: 'no-such-bucket-v' }))))).toEqual({ name: 'NoSuchBucket', status: 404 });
  await s3.send(new DeleteBucketCommand({ Bucket: 'vconf' }));
});

it('keeps every version, reads and deletes them by id, with delete markers; then no data remains', async () => {
  const Bucket = 'vers';
  await s3.send(new CreateBucketCommand({ Bucket }));
  const a = randomBytes(1000);
  const b = randomBytes(5 * 1024 * 1024 + 3); // striped
  const c = Buffer.from('third');
  // Written while unversioned: the key's null version, without an id in answers.
  const putA = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: a }));
  expect(putA.VersionId).toBeUndefined();
  expect((await read(Bucket, 'k')).versionId).toBeUndefined();
  await setVersioning(Bucket, 'Enabled');
  const putB = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: b, ContentType: 'application/x-b' }));
  const putC = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: c }));
  const [vb, vc] = [putB.VersionId!, putC.VersionId!];
  expect(vb).toMatch(/^[0-9a-f]{32}$/);
  expect(vc).toMatch(/^[0-9a-f]{32}$/);
  expect(vc > vb).toBe(true); // sortable by creation

  await expectRead({ Bucket, Key: 'k' }, c, vc);
  await expectRead({ Bucket, Key: 'k', VersionId: vb }, b, vb);
  await expectRead({ Bucket, Key: 'k', VersionId: 'null' }, a, 'null');
  const head = await s3.send(new HeadObjectCommand({ Bucket, Key: 'k', VersionId: vb }));
  expect([head.VersionId, head.ContentLength, head.ContentType]).toEqual([vb, b.length, 'application/x-b']);
  const ranged = await s3.send(new GetObjectCommand({ Bucket, Key: 'k', VersionId: vb, Range: 'bytes=4194300-4194310' }));
  expect((await bytes(ranged.Body)).equals(b.subarray(4194300, 4194311))).toBe(true);

  const unknown = '0'.repeat(32);
  expect(await errorOf(s3.send(new GetObjectCommand({ Bucket, Key: 'k', VersionId: unknown })))).toEqual({ name: 'NoSuchVersion', status: 404 });
  expect((await errorOf(s3.send(new HeadObjectCommand({ Bucket, Key: 'k', VersionId: unknown })))).status).toBe(404);
  expect(await errorOf(s3.send(new GetObjectCommand({ Bucket, Key: 'k', VersionId: 'not-a-version' })))).toEqual({ name: 'InvalidArgument', status: 400 });
  expect(await errorOf(s3.send(new GetObjectCommand({ Bucket, Key: 'other', VersionId: vb })))).toEqual({ name: 'NoSuchVersion', status: 404 });

  expect(await allVersions(Bucket)).toEqual([
    { key: 'k', id: vc, latest: true, marker: false, size: c.length },
    { key: 'k', id: vb, latest: false, marker: false, size: b.length },
    { key: 'k', id: 'null', latest: false, marker: false, size: a.length },
  ]);

  // A DELETE without versionId adds a delete marker.
  const del = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k' }));
  expect(del.DeleteMarker).toBe(true);
  const vm = del.VersionId!;
  expect(vm > vc).toBe(true);
  expect(await errorOf(s3.send(new GetObjectCommand({ Bucket, Key: 'k' })))).toEqual({ name: 'NoSuchKey', status: 404 });
  expect((await errorOf(s3.send(new HeadObjectCommand({ Bucket, Key: 'k' })))).status).toBe(404);
  for (const command of [new GetObjectCommand({ Bucket, Key: 'k' }), new HeadObjectCommand({ Bucket, Key: 'k' })]) {
    const res = await raw(command);
    expect(res.status).toBe(404);
    expect(res.headers.get('x-amz-delete-marker')).toBe('true');
    expect(res.headers.get('x-amz-version-id')).toBe(vm);
    if (command instanceof GetObjectCommand) expect(await res.text()).toContain('<Code>NoSuchKey</Code>');
  }
  const onMarker = await raw(new GetObjectCommand({ Bucket, Key: 'k', VersionId: vm }));
  expect(onMarker.status).toBe(405);
  expect(onMarker.headers.get('x-amz-delete-marker')).toBe('true');
  expect(await onMarker.text()).toContain('<Code>MethodNotAllowed</Code>');
  expect((await s3.send(new ListObjectsV2Command({ Bucket }))).KeyCount).toBe(0);
  expect(await allVersions(Bucket)).toEqual([
    { key: 'k', id: vm, latest: true, marker: true },
    { key: 'k', id: vc, latest: false, marker: false, size: c.length },
    { key: 'k', id: vb, latest: false, marker: false, size: b.length },
    { key: 'k', id: 'null', latest: false, marker: false, size: a.length },
  ]);
  expect((await errorOf(s3.send(new DeleteBucketCommand({ Bucket })))).name).toBe('BucketNotEmpty');

  // Removing the marker brings the previous version back; removing the current version does too.
  const unmark = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k', VersionId: vm }));
  expect([unmark.DeleteMarker, unmark.VersionId]).toEqual([true, vm]);
  await expectRead({ Bucket, Key: 'k' }, c, vc);
  const delC = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k', VersionId: vc }));
  expect([delC.DeleteMarker, delC.VersionId]).toEqual([undefined, vc]);
  await expectRead({ Bucket, Key: 'k' }, b, vb);
  expect((await errorOf(s3.send(new GetObjectCommand({ Bucket, Key: 'k', VersionId: vc })))).name).toBe('NoSuchVersion');
  // Deleting a version that is gone (or never was) succeeds, as in S3.
  await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k', VersionId: vc }));
  expect(await errorOf(s3.send(new DeleteObjectCommand({ Bucket, Key: 'k', VersionId: 'bogus' })))).toEqual({ name: 'InvalidArgument', status: 400 });

  await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k', VersionId: 'null' }));
  expect((await errorOf(s3.send(new GetObjectCommand({ Bucket, Key: 'k', VersionId: 'null' })))).name).toBe('NoSuchVersion');
  expect(await allVersions(Bucket)).toEqual([{ key: 'k', id: vb, latest: true, marker: false, size: b.length }]);
  expect(await manifests(Bucket)).toHaveLength(1);
  await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k', VersionId: vb }));
  expect((await errorOf(s3.send(new GetObjectCommand({ Bucket, Key: 'k' })))).name).toBe('NoSuchKey');
  expect(await allVersions(Bucket)).toEqual([]);
  expect(await dataObjects(Bucket)).toEqual([]);
  await s3.send(new DeleteBucketCommand({ Bucket }));
});

it('Suspended: PUT and DELETE write the null version, replacing the previous one and its data', async () => {
  const Bucket = 'susp';
  await s3.send(new CreateBucketCommand({ Bucket }));
  await setVersioning(Bucket, 'Enabled');
  // Bodies above the inline size (4 KiB), so each version has a data object to count.
  const big = (s: string): string => s.repeat(2000);
  const v1 = (await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: big('one') }))).VersionId!;
  await setVersioning(Bucket, 'Suspended');
  const put2 = await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: big('two') }));
  expect(put2.VersionId).toBeUndefined(); // S3 does not name the null version in the PUT's answer
  await expectRead({ Bucket, Key: 'k' }, Buffer.from(big('two')), 'null');
  await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: big('three') }));
  await expectRead({ Bucket, Key: 'k', VersionId: 'null' }, Buffer.from(big('three')), 'null');
  expect(await allVersions(Bucket)).toEqual([
    { key: 'k', id: 'null', latest: true, marker: false, size: 10000 },
    { key: 'k', id: v1, latest: false, marker: false, size: 6000 },
  ]);
  expect(await manifests(Bucket)).toHaveLength(2); // "two" is gone with its version

  const del = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'k' }));
  expect([del.DeleteMarker, del.VersionId]).toEqual([true, 'null']);
  expect(await allVersions(Bucket)).toEqual([
    { key: 'k', id: 'null', latest: true, marker: true },
    { key: 'k', id: v1, latest: false, marker: false, size: 6000 },
  ]);
  expect(await manifests(Bucket)).toHaveLength(1);

  // Enabled again: new versions get ids; the null marker stays in the history.
  await setVersioning(Bucket, 'Enabled');
  const v3 = (await s3.send(new PutObjectCommand({ Bucket, Key: 'k', Body: 'four' }))).VersionId!;
  expect(v3).toMatch(/^[0-9a-f]{32}$/);
  expect((await allVersions(Bucket)).map((v) => [v.id, v.latest, v.marker])).toEqual([
    [v3, true, false],
    ['null', false, true],
    [v1, false, false],
  ]);
  // A key never written, deleted in a versioned bucket, gets a marker too.
  const ghost = await s3.send(new DeleteObjectCommand({ Bucket, Key: 'ghost' }));
  expect(ghost.DeleteMarker).toBe(true);
  for (const v of await allVersions(Bucket)) await s3.send(new DeleteObjectCommand({ Bucket, Key: v.key, VersionId: v.id }));
  expect(await allVersions(Bucket)).toEqual([]);
  expect(await dataObjects(Bucket)).toEqual([]);
  await s3.send(new DeleteBucketCommand({ Bucket }));
});

it('lists versions with prefix, delimiter, key and version markers, and pages of any size', async () => {
  const Bucket = 'vlist';
  await s3.send(new CreateBucketCommand({ Bucket }));
  // Unversioned-era objects mixed with versioned keys.
  for (const Key of ['a', 'b/1', 'old']) await s3.send(new PutObjectCommand({ Bucket, Key, Body: `pre ${Key}` }));
  await setVersioning(Bucket, 'Enabled');
  const history: Array<[string, number]> = [['a', 2], ['b/1', 1], ['b/2', 3], ['b/sub/x', 2], ['c', 1], ['ü', 2]];
  for (const [Key, n] of history) for (let i = 0; i < n; i++) await s3.send(new PutObjectCommand({ Bucket, Key, Body: `${Key} v${i}` }));
  await s3.send(new DeleteObjectCommand({ Bucket, Key: 'c' }));

  const full = await allVersions(Bucket);
  expect(full.map((v) => v.key)).toEqual(['a', 'a', 'a', 'b/1', 'b/1', 'b/2', 'b/2', 'b/2', 'b/sub/x', 'b/sub/x', 'c', 'c', 'old', 'ü', 'ü']);
  expect(full.filter((v) => v.latest).map((v) => v.key)).toEqual(['a', 'b/1', 'b/2', 'b/sub/x', 'c', 'old', 'ü']);
  expect(full.find((v) => v.key === 'c' && v.latest)!.marker).toBe(true);
  expect(full.filter((v) => v.id === 'null').map((v) => v.key)).toEqual(['a', 'b/1', 'old']);
  for (const key of ['a', 'b/2']) {
    const ids = full.filter((v) => v.key === key && v.id !== 'null').map((v) => v.id);
    expect(ids).toEqual([...ids].sort().reverse()); // newest first
  }
  // Every page size gives the same listing, through NextKeyMarker / NextVersionIdMarker.
  for (const MaxKeys of [1, 2, 3, 7]) expect(await allVersions(Bucket, { MaxKeys })).toEqual(full);
  expect(await allVersions(Bucket, { Prefix: 'b/' })).toEqual(full.filter((v) => v.key.startsWith('b/')));

  const top = await s3.send(new ListObjectVersionsCommand({ Bucket, Delimiter: '/' }));
  expect(top.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['b/']);
  expect([...new Set((top.Versions ?? []).map((v) => v.Key))]).toEqual(['a', 'c', 'old', 'ü']);
  const inB = await s3.send(new ListObjectVersionsCommand({ Bucket, Prefix: 'b/', Delimiter: '/' }));
  expect(inB.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['b/sub/']);
  expect((inB.Versions ?? []).map((v) => v.Key)).toEqual(['b/1', 'b/1', 'b/2', 'b/2', 'b/2']);
  // A common prefix counts as one entry and is never repeated across pages.
  const seen: string[] = [];
  let KeyMarker: string | undefined;
  let VersionIdMarker: string | undefined;
  for (;;) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket, Delimiter: '/', MaxKeys: 2, ...(KeyMarker ? { KeyMarker } : {}), ...(VersionIdMarker ? { VersionIdMarker } : {}) }));
    seen.push(...(page.CommonPrefixes ?? []).map((p) => `prefix ${p.Prefix}`));
    if (!page.IsTruncated) break;
    KeyMarker = page.NextKeyMarker;
    VersionIdMarker = page.NextVersionIdMarker;
  }
  expect(seen).toEqual(['prefix b/']);

  // Starting inside a key's versions: the rest of them, the first not latest.
  const bVersions = full.filter((v) => v.key === 'b/2');
  const rest = await s3.send(new ListObjectVersionsCommand({ Bucket, KeyMarker: 'b/2', VersionIdMarker: bVersions[0]!.id, MaxKeys: 2 }));
  expect(rest.Versions?.map((v) => [v.Key, v.VersionId, v.IsLatest])).toEqual([
    ['b/2', bVersions[1]!.id, false],
    ['b/2', bVersions[2]!.id, false],
  ]);
  const afterNull = await s3.send(new ListObjectVersionsCommand({ Bucket, KeyMarker: 'a', VersionIdMarker: 'null' }));
  expect(afterNull.Versions?.[0]?.Key).toBe('b/1');
  expect((await s3.send(new ListObjectVersionsCommand({ Bucket, MaxKeys: 0 }))).Versions).toBeUndefined();
  expect((await errorOf(s3.send(new ListObjectVersionsCommand({ Bucket, VersionIdMarker: bVersions[0]!.id })))).name).toBe('InvalidArgument');

  // Plain listings show current objects only.
  const plain = await s3.send(new ListObjectsV2Command({ Bucket }));
  expect(plain.Contents?.map((o) => o.Key)).toEqual(['a', 'b/1', 'b/2', 'b/sub/x', 'old', 'ü']);
  for (const v of full) await s3.send(new DeleteObjectCommand({ Bucket, Key: v.key, VersionId: v.id }));
  expect(await dataObjects(Bucket)).toEqual([]);
  await s3.send(new DeleteBucketCommand({ Bucket }));
});

it('keeps every version of concurrent PUTs to one key, newest current; lists right after each write', async () => {
  const Bucket = 'vconc';
  await s3.send(new CreateBucketCommand({ Bucket }));
  await setVersioning(Bucket, 'Enabled');
  const bodies = Array.from({ length: 12 }, (_, i) => randomBytes(i % 3 === 0 ? 2 * 1024 * 1024 + i : i % 3 === 1 ? 5000 + i : 100 + i));
  const puts = await Promise.all(bodies.map((Body) => s3.send(new PutObjectCommand({ Bucket, Key: 'hot', Body }))));
  const ids = puts.map((p) => p.VersionId!);
  expect(new Set(ids).size).toBe(bodies.length);
  const listed = await allVersions(Bucket);
  expect(listed.map((v) => v.id).sort()).toEqual([...ids].sort());
  expect(listed.map((v) => v.id)).toEqual([...ids].sort().reverse()); // newest first = ids in descending order
  for (const [i, id] of ids.entries()) expect((await read(Bucket, 'hot', id)).body.equals(bodies[i]!)).toBe(true);
  const current = await read(Bucket, 'hot');
  expect(current.versionId).toBe(listed[0]!.id);
  // Bodies of at most 4 KiB live in their version's entry (no data object).
  expect(await manifests(Bucket)).toHaveLength(bodies.filter((body) => body.length > 4096).length);

  // List-after-write: each PUT and DELETE is visible to the very next listing.
  for (let i = 0; i < 5; i++) {
    const Key = `law/${i}`;
    const id = (await s3.send(new PutObjectCommand({ Bucket, Key, Body: `${i}` }))).VersionId!;
    expect((await s3.send(new ListObjectVersionsCommand({ Bucket, Prefix: Key }))).Versions?.map((v) => v.VersionId)).toEqual([id]);
    expect((await s3.send(new ListObjectsV2Command({ Bucket, Prefix: 'law/' }))).KeyCount).toBe(1);
    const marker = (await s3.send(new DeleteObjectCommand({ Bucket, Key }))).VersionId!;
    expect((await s3.send(new ListObjectVersionsCommand({ Bucket, Prefix: Key }))).DeleteMarkers?.map((m) => [m.VersionId, m.IsLatest])).toEqual([[marker, true]]);
    expect((await s3.send(new ListObjectsV2Command({ Bucket, Prefix: 'law/' }))).KeyCount).toBe(0);
    await s3.send(new DeleteObjectCommand({ Bucket, Key, VersionId: marker }));
    expect((await s3.send(new ListObjectsV2Command({ Bucket, Prefix: 'law/' }))).KeyCount).toBe(1);
    await s3.send(new DeleteObjectCommand({ Bucket, Key, VersionId: id }));
  }
  // Concurrent deletes of versions (and new markers) keep the history consistent.
  await Promise.all([...ids.map((VersionId) => s3.send(new DeleteObjectCommand({ Bucket, Key: 'hot', VersionId }))), s3.send(new DeleteObjectCommand({ Bucket, Key: 'hot' }))]);
  const left = await allVersions(Bucket);
  expect(left.map((v) => [v.key, v.marker, v.latest])).toEqual([['hot', true, true]]);
  await s3.send(new DeleteObjectCommand({ Bucket, Key: 'hot', VersionId: left[0]!.id }));
  expect(await dataObjects(Bucket)).toEqual([]);
  await s3.send(new DeleteBucketCommand({ Bucket }));
});

it('DeleteObjects: plain and versioned, Quiet, per-key errors, verbatim keys', async () => {
  const Bucket = 'multidel';
  await s3.send(new CreateBucketCommand({ Bucket }));
  const keys = ['plain', ' spaced key ', 'line\nbreak\r\n', 'a&b<c>"d\'', 'ünï/ключ'];
  for (const Key of keys) await s3.send(new PutObjectCommand({ Bucket, Key, Body: Key }));
  const res = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: [...keys, 'never-existed'].map((Key) => ({ Key })) } }));
  expect(res.Errors).toBeUndefined();
  expect(res.Deleted?.map((d) => d.Key)).toEqual([...keys, 'never-existed']);
  expect((await s3.send(new ListObjectsV2Command({ Bucket }))).KeyCount).toBe(0);
  expect(await dataObjects(Bucket)).toEqual([]);

  // At most 1000 keys.
  const tooMany = s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: Array.from({ length: 1001 }, (_, i) => ({ Key: `k${i}` })) } }));
  expect(await errorOf(tooMany)).toEqual({ name: 'MalformedXML', status: 400 });
  const thousand = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Quiet: true, Objects: Array.from({ length: 1000 }, (_, i) => ({ Key: `k${i}` })) } }));
  expect(thousand.Errors).toBeUndefined();
  expect(thousand.Deleted).toBeUndefined();

  // Versioned: markers for plain keys, removal for named versions (a marker's included), errors per key.
  await setVersioning(Bucket, 'Enabled');
  const v1 = (await s3.send(new PutObjectCommand({ Bucket, Key: 'x', Body: '1' }))).VersionId!;
  const v2 = (await s3.send(new PutObjectCommand({ Bucket, Key: 'x', Body: '2' }))).VersionId!;
  const marked = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: [{ Key: 'y' }, { Key: 'x', VersionId: v1 }, { Key: 'x', VersionId: 'bogus' }, { Key: 'k'.repeat(1025) }] } }));
  const y = marked.Deleted?.find((d) => d.Key === 'y');
  expect(y?.DeleteMarker).toBe(true);
  expect(y?.DeleteMarkerVersionId).toMatch(/^[0-9a-f]{32}$/);
  expect(marked.Deleted?.find((d) => d.Key === 'x')).toMatchObject({ Key: 'x', VersionId: v1 });
  expect(marked.Errors?.map((e) => [e.Key, e.VersionId, e.Code])).toEqual([
    ['x', 'bogus', 'NoSuchVersion'],
    ['k'.repeat(1025), undefined, 'KeyTooLongError'],
  ]);
  const quiet = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Quiet: true, Objects: [{ Key: 'y', VersionId: y!.DeleteMarkerVersionId! }, { Key: 'x', VersionId: v2 }] } }));
  expect(quiet.Deleted).toBeUndefined();
  expect(quiet.Errors).toBeUndefined();
  expect(await allVersions(Bucket)).toEqual([]);
  expect(await dataObjects(Bucket)).toEqual([]);

  await s3.send(new DeleteBucketCommand({ Bucket }));
});

it('DeleteObjects: the body needs a checksum or Content-MD5, and must be a Delete document', async () => {
  const Bucket = 'multidel2';
  await s3.send(new CreateBucketCommand({ Bucket }));
  await s3.send(new PutObjectCommand({ Bucket, Key: 'keep', Body: 'x' }));
  const tampered = env.s3();
  let replaceBody: string | null = null;
  // Before the SDK computes its checksum: a different document, correctly checksummed and signed.
  type Middleware = BuildMiddleware<ServiceInputTypes, ServiceOutputTypes>;
  const replace: Middleware = (next) => async (args) => {
      const request = args.request as { body?: unknown; headers: Record<string, string> };
      if (replaceBody !== null) {
        request.body = replaceBody;
        request.headers['content-length'] = String(Buffer.byteLength(replaceBody));
      }
      return next(args);
    };
  tampered.middlewareStack.addRelativeTo(replace, { relation: 'before', toMiddleware: 'flexibleChecksumsMiddleware', name: 'replaceBody' });
  let dropChecksum = false;
  let md5: 'right' | 'wrong' | null = null;
  const drop: Middleware = (next) => async (args) => {
      const request = args.request as { headers: Record<string, string> };
      if (dropChecksum) {
        for (const h of Object.keys(request.headers)) if (/^x-amz-(sdk-)?checksum-|^content-md5$/i.test(h)) delete request.headers[h];
      }
      const body = (args.request as { body?: unknown }).body;
      if (md5 !== null) request.headers['content-md5'] = createHash('md5').update(md5 === 'right' ? String(body) : 'other').digest('base64');
      return next(args);
    };
  tampered.middlewareStack.addRelativeTo(drop, { relation: 'after', toMiddleware: 'flexibleChecksumsMiddleware', name: 'dropChecksum' });
  const del = () => tampered.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: [{ Key: 'keep' }] } }));
  dropChecksum = true;
  expect(await errorOf(del())).toEqual({ name: 'InvalidRequest', status: 400 });
  md5 = 'wrong'; // Content-MD5 instead of a checksum: verified
  expect(await errorOf(del())).toEqual({ name: 'BadDigest', status: 400 });
  dropChecksum = false;
  md5 = null;
  for (const doc of ['<Delete><Object><Key>keep</Key>', '<NotDelete><Object><Key>keep</Key></Object></NotDelete>', '<Delete></Delete>', '<Delete><Object><VersionId>null</VersionId></Object></Delete>', '<Delete><Quiet>maybe</Quiet><Object><Key>keep</Key></Object></Delete>']) {
    replaceBody = doc;
    expect(await errorOf(del()), doc).toEqual({ name: 'MalformedXML', status: 400 });
  }
  replaceBody = null;
  expect((await s3.send(new ListObjectsV2Command({ Bucket }))).KeyCount).toBe(1);
  dropChecksum = true;
  md5 = 'right';
  await del();
  expect((await s3.send(new ListObjectsV2Command({ Bucket }))).KeyCount).toBe(0);
  await s3.send(new DeleteBucketCommand({ Bucket }));
});
