/**
 * Picks the S3 operation of a request from its method, whether it names a
 * bucket and a key, and its subresource query parameters, and runs it. The
 * table is the gateway's API surface: anything not in it answers 501
 * NotImplemented (a setting we would not enforce is never accepted).
 */
import type { S3Context, S3Response } from './context.js';
import { s3Error } from './errors.js';
import { createBucket, deleteBucket, getBucketLocation, getBucketVersioning, headBucket, listBuckets, putBucketVersioning } from './ops/bucket.js';
import { deleteObject, getObject, headObject, putObject } from './ops/object.js';
import { listObjectsV1, listObjectsV2 } from './ops/list.js';
import { aclRoute } from './ops/acl.js';
import { corsRoute } from './ops/cors.js';
import { postObjectRoute } from './ops/post-object.js';
import { copyRoute } from './ops/copy.js';
import { deleteObjectsRoute } from './ops/delete-objects.js';
import { listObjectVersions } from './ops/versions.js';
import { multipartRoute } from './ops/multipart.js';

export type Operation = (ctx: S3Context) => Promise<S3Response>;

/** Subresources we do not support: their presence on any request is NotImplemented. */
const unsupported = ['policy', 'lifecycle', 'replication', 'tagging', 'website', 'logging', 'notification', 'encryption', 'object-lock', 'legal-hold', 'retention', 'accelerate', 'analytics', 'inventory', 'metrics', 'intelligent-tiering', 'ownershipControls', 'publicAccessBlock', 'requestPayment', 'restore', 'select', 'torrent', 'attributes'];

/** Storage classes S3 knows; STANDARD is what we store (anything else would be a promise we do not keep). */
const storageClasses = new Set(['STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER', 'DEEP_ARCHIVE', 'OUTPOSTS', 'GLACIER_IR', 'SNOW', 'EXPRESS_ONEZONE']);

/**
 * Request headers that ask for a setting or a guarantee we do not provide:
 * object lock, tagging, server-side encryption, website redirects, MFA,
 * appends, bucket ownership controls other than ours (ObjectWriter), storage
 * classes other than STANDARD. Accepting one would store an object whose
 * setting is then not enforced, so the request is refused (NotImplemented)
 * before anything is read or stored. Returns what was asked, or null.
 */
export function unenforcedSetting(headers: ReadonlyMap<string, string>): string | null {
  for (const [name, value] of headers) {
    if (!name.startsWith('x-amz-')) continue; // every header below is an x-amz- one
    if (/^x-amz-(object-lock-|server-side-encryption|copy-source-server-side-encryption|website-redirect-location$|tagging$|mfa$|write-offset-bytes$)/.test(name)) return name;
    if (name === 'x-amz-bucket-object-lock-enabled' && value.trim().toLowerCase() === 'true') return name;
    if (name === 'x-amz-object-ownership' && value.trim() !== 'ObjectWriter') return `${name}: ${value}`;
    if (name === 'x-amz-storage-class') {
      const v = value.trim().toUpperCase();
      if (!storageClasses.has(v)) throw s3Error('InvalidStorageClass', 'The storage class you specified is not valid', { StorageClassRequested: value });
      if (v !== 'STANDARD') return `${name}: ${value}`;
    }
  }
  return null;
}

/** Operations implemented in other modules register here (multipart, versions, ACL, CORS, POST...). */
export const extraRoutes: Array<(ctx: S3Context) => Operation | null> = [multipartRoute, aclRoute, corsRoute, postObjectRoute, copyRoute, deleteObjectsRoute];

function pick(ctx: S3Context): Operation {
  const { method, bucket, key, query } = ctx.req;
  for (const sub of unsupported) if (query.has(sub)) return notImplemented(sub);
  const setting = unenforcedSetting(ctx.req.headers);
  if (setting !== null) return notImplemented(setting);
  for (const r of extraRoutes) {
    const op = r(ctx);
    if (op) return op;
  }
  if (!bucket) {
    if (method === 'GET') return listBuckets;
    return notImplemented(`${method} on the service`);
  }
  if (key === null) {
    switch (method) {
      case 'PUT':
        if (query.has('versioning')) return putBucketVersioning;
        if (query.size > 0) return notImplemented([...query.keys()].join(','));
        return createBucket;
      case 'GET':
        if (query.has('location')) return getBucketLocation;
        if (query.has('versioning')) return getBucketVersioning;
        if (query.has('versions')) return listObjectVersions;
        if (query.get('list-type') === '2') return listObjectsV2;
        return listObjectsV1;
      case 'HEAD':
        return headBucket;
      case 'DELETE':
        return deleteBucket;
      default:
        return notImplemented(`${method} on a bucket`);
    }
  }
  switch (method) {
    case 'PUT':
      return putObject;
    case 'GET':
      return getObject;
    case 'HEAD':
      return headObject;
    case 'DELETE':
      return deleteObject;
    default:
      return notImplemented(`${method} on an object`);
  }
}

function notImplemented(what: string): Operation {
  return async () => {
    throw s3Error('NotImplemented', `A header or query you provided implies functionality that is not implemented (${what}).`);
  };
}

export function route(ctx: S3Context): Promise<S3Response> {
  return pick(ctx)(ctx);
}
