/**
 * Object versions as S3 clients see them (the index layout is
 * meta/versions.ts): committing a new object or delete marker in the
 * bucket's versioning state, reading a version by id, DeleteObject with and
 * without versionId, and ListObjectVersions.
 *
 * Unversioned buckets keep the plain behaviour: an overwrite or delete
 * replaces the current entry and removes the replaced data. Enabled: every
 * PUT adds a version with a new id, a DELETE without versionId adds a delete
 * marker. Suspended: PUT and DELETE write the "null" version (replacing the
 * previous null version and its data). A DELETE with versionId removes that
 * version for good (and its data); the next newest becomes current.
 *
 * A bucket's versioning state is read per request; a write that finds the
 * key already versioned while its bucket record said "Unversioned" (the state
 * changed meanwhile) re-reads the bucket and commits as a versioned write, so
 * a version is never overwritten in place.
 */
import type { S3Context, S3Response } from '../context.js';
import { authorizeBucket, authorizeObject, isAllowed, writerOf, type S3Action } from '../access.js';
import { S3Error, s3Error } from '../errors.js';
import type { IndexEntry } from '../meta/bucket-index.js';
import type { BucketRecord } from '../meta/buckets.js';
import { VersionIndex, isDeleteMarker, isVersionId, type ListedVersion } from '../meta/versions.js';
import { releaseReplaced, type PendingWrite } from '../meta/journal.js';
import { xmlDocumentOrdered, type XmlNode, type XmlValue } from '../xml.js';
import { enc, maxKeys } from './list.js';
import { etagMatches, indexOf, removeData } from './object.js';
import { displayNames, httpDate, isoDate, ownerXml, xmlHeaders } from './util.js';

export function versionsOf(ctx: S3Context, bucket: BucketRecord): VersionIndex {
  return new VersionIndex(indexOf(ctx, bucket), ctx.services.io);
}

/** The request's versionId parameter (validated), or null. */
export function requestedVersion(ctx: S3Context): string | null {
  const v = ctx.req.query.get('versionId');
  if (v === undefined) return null;
  if (v === '') throw s3Error('InvalidArgument', 'Version id cannot be the empty string', { ArgumentName: 'versionId', ArgumentValue: v });
  if (!isVersionId(v)) throw s3Error('InvalidArgument', 'Invalid version id specified', { ArgumentName: 'versionId', ArgumentValue: v });
  return v;
}

/** The x-amz-version-id an object answer carries: its id, "null" for older objects of a versioned bucket, none when unversioned. */
export function versionIdHeader(bucket: BucketRecord, entry: IndexEntry): Record<string, string> {
  const id = entry.versionId ?? (bucket.versioning === 'Unversioned' ? undefined : 'null');
  return id === undefined ? {} : { 'x-amz-version-id': id };
}

function markerHeaders(bucket: BucketRecord, marker: IndexEntry): Record<string, string> {
  return { 'x-amz-delete-marker': 'true', ...versionIdHeader(bucket, marker), 'last-modified': httpDate(marker.mtimeMs) };
}

/**
 * The entry a GET/HEAD (or a copy source) names: the current one, or the
 * version asked for. A key whose current version is a delete marker is
 * NoSuchKey (with x-amz-delete-marker); a version that is a delete marker is
 * MethodNotAllowed (a GET) or InvalidRequest (a copy source); an unknown
 * version is NoSuchVersion.
 */
export async function requestedEntry(
  ctx: S3Context,
  o: { bucket: BucketRecord; key: string; versionId: string | null; action: S3Action; forCopy?: boolean },
): Promise<IndexEntry> {
  const { bucket, key, versionId } = o;
  if (versionId === null) {
    const entry = await indexOf(ctx, bucket).get(key);
    if (entry && isDeleteMarker(entry)) {
      try {
        authorizeObject(ctx, o.action, bucket, null, key);
      } catch (err) {
        if (err instanceof S3Error && err.code === 'NoSuchKey') throw s3Error(err.code, err.message, err.details, markerHeaders(bucket, entry));
        throw err;
      }
    }
    return authorizeObject(ctx, o.action, bucket, entry, key);
  }
  const entry = await versionsOf(ctx, bucket).get(key, versionId);
  if (!entry) {
    if (!isAllowed(ctx.userId, 'ListObjects', bucket)) throw s3Error('AccessDenied', 'Access Denied');
    throw s3Error('NoSuchVersion', 'The specified version does not exist.', { Key: key, VersionId: versionId });
  }
  if (isDeleteMarker(entry)) {
    if (o.forCopy) throw s3Error('InvalidRequest', 'The source of a copy request may not specifically refer to a delete marker by version id.');
    throw s3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.', { Method: ctx.req.method, ResourceType: 'DeleteMarker' }, { ...markerHeaders(bucket, entry), allow: 'DELETE' });
  }
  return authorizeObject(ctx, o.action, bucket, entry, key);
}

class BucketBecameVersioned extends Error {}

const refuseVersioned = (current: IndexEntry | null): void => {
  if (current?.versionStamp) throw new BucketBecameVersioned();
};

/** The bucket again, when its versioning state changed under a request (NoSuchBucket if it was replaced). */
async function reread(ctx: S3Context, bucket: BucketRecord): Promise<BucketRecord> {
  const b = await ctx.services.buckets.require(bucket.name);
  if (b.id !== bucket.id) throw s3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: bucket.name });
  return b;
}

/**
 * Makes `entry` (its data already stored) the key's current object, in the
 * bucket's versioning state, and removes the data it replaced. Returns the
 * entry as stored and the x-amz-version-id header the answer carries. Every
 * operation that creates an object (PUT, copy, multipart complete, POST)
 * commits through here.
 */
export async function commitEntry(
  ctx: S3Context,
  bucket: BucketRecord,
  key: string,
  entry: IndexEntry,
  /** A condition on the key's current entry (null: none, or a delete marker), checked atomically with the commit; throws to refuse. */
  condition?: (current: IndexEntry | null) => void,
  /** The journal record of the entry's new data object (meta/journal.ts beginWrite), removed by the commit. */
  pending?: PendingWrite | null,
): Promise<{ entry: IndexEntry; headers: Record<string, string> }> {
  let b = bucket;
  const nowMs = ctx.services.io.clock.nowMs();
  const decide = (current: IndexEntry | null): void => condition?.(current && !isDeleteMarker(current) ? current : null);
  if (b.versioning === 'Unversioned') {
    try {
      const replaced = await indexOf(ctx, b).swap(
        key,
        entry,
        (current) => {
          refuseVersioned(current);
          decide(current);
        },
        { pending: pending ?? null, nowMs },
      );
      ctx.services.faultPoint?.('after-swap');
      await freeDropped(ctx, b, key, [replaced]);
      return { entry, headers: {} };
    } catch (err) {
      if (!(err instanceof BucketBecameVersioned)) throw err;
      b = await reread(ctx, b);
    }
  }
  const mode = b.versioning === 'Unversioned' ? 'Enabled' : b.versioning;
  const r = await versionsOf(ctx, b).put(key, entry, mode, decide, pending);
  ctx.services.faultPoint?.('after-swap');
  await freeDropped(ctx, b, key, r.removed);
  // S3 names the null version in answers about it, but not in the answer to the PUT that made it.
  return { entry: r.entry, headers: mode === 'Enabled' ? { 'x-amz-version-id': r.entry.versionId! } : {} };
}

/**
 * Removes the data of entries a commit dropped from the index, then their
 * journal records (written by that commit: a gateway that dies in between
 * leaves them to the sweep, meta/journal.ts).
 */
async function freeDropped(ctx: S3Context, bucket: BucketRecord, key: string, dropped: ReadonlyArray<IndexEntry | null>): Promise<void> {
  const index = indexOf(ctx, bucket);
  for (const e of dropped) {
    if (!e) continue;
    await removeData(ctx, bucket, e);
    await releaseReplaced(index, key, e);
  }
}

export interface DeleteOutcome {
  /** The version removed or the delete marker created (absent when unversioned). */
  versionId?: string;
  /** A delete marker was created, or the version removed was one. */
  deleteMarker: boolean;
}

/** DeleteObject's effect, for DELETE and DeleteObjects: see the module comment. */
export async function deleteKey(
  ctx: S3Context,
  bucket: BucketRecord,
  key: string,
  versionId: string | null,
  /** A condition on the key's current object (null: none), checked atomically with the change; throws to refuse. */
  condition?: (current: IndexEntry | null) => void,
): Promise<DeleteOutcome> {
  let b = bucket;
  const decide = (current: IndexEntry | null): void => condition?.(current && !isDeleteMarker(current) ? current : null);
  if (versionId !== null) {
    if (condition) throw s3Error('NotImplemented', 'A conditional DeleteObject of a specific version is not implemented.');
    const removed = await versionsOf(ctx, b).remove(key, versionId);
    await freeDropped(ctx, b, key, [removed]);
    return { versionId, deleteMarker: removed !== null && isDeleteMarker(removed) };
  }
  if (b.versioning === 'Unversioned') {
    try {
      const dropped = await indexOf(ctx, b).swap(
        key,
        null,
        (current) => {
          refuseVersioned(current);
          decide(current);
        },
        { nowMs: ctx.services.io.clock.nowMs() },
      );
      await freeDropped(ctx, b, key, [dropped]);
      return { deleteMarker: false };
    } catch (err) {
      if (!(err instanceof BucketBecameVersioned)) throw err;
      b = await reread(ctx, b);
    }
  }
  const marker: IndexEntry = { sizeBytes: 0, etag: '', mtimeMs: ctx.services.io.clock.nowMs(), data: null, owner: writerOf(ctx, b) };
  const r = await versionsOf(ctx, b).put(key, marker, b.versioning === 'Suspended' ? 'Suspended' : 'Enabled', condition ? decide : undefined);
  await freeDropped(ctx, b, key, r.removed);
  return { versionId: r.entry.versionId!, deleteMarker: true };
}

/**
 * DeleteObject's If-Match (S3 general purpose buckets): the key's current
 * object must have that ETag (412 otherwise; NoSuchKey when there is none).
 * The directory-bucket conditions (x-amz-if-match-last-modified-time, -size)
 * are NotImplemented.
 */
export function deleteCondition(ctx: S3Context): ((current: IndexEntry | null) => void) | undefined {
  const h = ctx.req.headers;
  if (h.has('x-amz-if-match-last-modified-time') || h.has('x-amz-if-match-size')) throw s3Error('NotImplemented', 'x-amz-if-match-last-modified-time and x-amz-if-match-size are not implemented.');
  const ifMatch = h.get('if-match');
  if (ifMatch === undefined) return undefined;
  const key = ctx.req.key!;
  return (current) => {
    if (!current) throw s3Error('NoSuchKey', 'The specified key does not exist.', { Key: key });
    if (!etagMatches(ifMatch, current.etag)) throw s3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Match' });
  };
}

/** DELETE /bucket/key[?versionId=]. */
export async function deleteObjectResponse(ctx: S3Context, bucket: BucketRecord): Promise<S3Response> {
  const outcome = await deleteKey(ctx, bucket, ctx.req.key!, requestedVersion(ctx), deleteCondition(ctx));
  const headers: Record<string, string> = {};
  if (outcome.versionId !== undefined) headers['x-amz-version-id'] = outcome.versionId;
  if (outcome.deleteMarker) headers['x-amz-delete-marker'] = 'true';
  return { status: 204, headers };
}

/** GET /bucket?versions: prefix, delimiter, key-marker, version-id-marker, max-keys, encoding-type. */
export async function listObjectVersions(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'ListObjectVersions');
  const q = ctx.req.query;
  const prefix = q.get('prefix') ?? '';
  const delimiter = q.get('delimiter') ?? '';
  const keyMarker = q.get('key-marker') ?? '';
  const versionMarker = q.get('version-id-marker') ?? '';
  const mk = maxKeys(ctx);
  if (versionMarker && !keyMarker) throw s3Error('InvalidArgument', 'A version-id marker cannot be specified without a key marker.', { ArgumentName: 'version-id-marker', ArgumentValue: versionMarker });
  if (versionMarker && !isVersionId(versionMarker)) throw s3Error('InvalidArgument', 'Invalid version id specified', { ArgumentName: 'version-id-marker', ArgumentValue: versionMarker });
  const versions = versionsOf(ctx, bucket);
  const stamp = versionMarker === '' ? undefined : versionMarker === 'null' ? ((await versions.nullStamp(keyMarker)) ?? undefined) : versionMarker;
  const scan = await versions.scan({ prefix, ...(keyMarker ? { start: { key: keyMarker, ...(stamp ? { stamp } : {}) } } : {}) });

  const listed: ListedVersion[] = [];
  const prefixes: string[] = [];
  let count = 0;
  let truncated = false;
  let last: { key: string; versionId?: string } | null = null;
  for (;;) {
    const v: ListedVersion | null = mk === 0 ? null : await scan.next();
    if (!v) break;
    const at = delimiter ? v.key.indexOf(delimiter, prefix.length) : -1;
    const common = at >= 0 ? v.key.slice(0, at + delimiter.length) : null;
    if (common !== null && Buffer.compare(Buffer.from(common), Buffer.from(keyMarker)) <= 0) {
      scan.skipPrefix(common); // reported on an earlier page
      continue;
    }
    if (count >= mk) {
      truncated = true;
      break;
    }
    count++;
    if (common !== null) {
      prefixes.push(common);
      last = { key: common };
      scan.skipPrefix(common);
      continue;
    }
    listed.push(v);
    last = { key: v.key, versionId: v.entry.versionId ?? 'null' };
  }
  const names = await displayNames(ctx, listed.map((v) => v.entry.owner));
  const rows = listed.map((v) => versionRow(ctx, v, names));
  const head: Array<readonly [string, XmlValue]> = [
    ['Name', bucket.name],
    ['Prefix', enc(ctx, prefix)],
    ['KeyMarker', enc(ctx, keyMarker)],
    ['VersionIdMarker', versionMarker],
    ...(truncated && last ? ([['NextKeyMarker', enc(ctx, last.key)], ...(last.versionId ? [['NextVersionIdMarker', last.versionId] as const] : [])] as const) : []),
    ['MaxKeys', mk],
    ...(delimiter ? ([['Delimiter', enc(ctx, delimiter)]] as const) : []),
    ['IsTruncated', truncated],
  ];
  const tail: Array<readonly [string, XmlValue]> = [
    ...prefixes.map((p) => ['CommonPrefixes', { Prefix: enc(ctx, p) }] as const),
    ...(q.get('encoding-type') === 'url' ? ([['EncodingType', 'url']] as const) : []),
  ];
  return { status: 200, headers: xmlHeaders, body: xmlDocumentOrdered('ListVersionsResult', [...head, ...rows, ...tail]) };
}

function versionRow(ctx: S3Context, v: ListedVersion, names: ReadonlyMap<string, string>): readonly [string, XmlNode] {
  const common = { Key: enc(ctx, v.key), VersionId: v.entry.versionId ?? 'null', IsLatest: v.isLatest, LastModified: isoDate(v.entry.mtimeMs) };
  const owner = { Owner: ownerXml(names, v.entry.owner) };
  if (isDeleteMarker(v.entry)) return ['DeleteMarker', { ...common, ...owner }];
  return ['Version', { ...common, ETag: v.entry.etag, Size: v.entry.sizeBytes, StorageClass: 'STANDARD', ...owner }];
}
