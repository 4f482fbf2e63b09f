/**
 * Picks the S3 operation of a request from its method, whether it names a
 * bucket and a key, and its subresource query parameters, and runs it. The
 * table is the gateway's API surface: anything not in it answers 501
 * NotImplemented (a setting we would not enforce is never accepted). Each
 * operation has its S3 name (operationNames), the `op` label of the
 * gateway's metrics: a closed set.
 */
import type { GatewayServices, S3Context, S3Response } from './context.js';
import { s3Error } from './errors.js';
import { createBucket, deleteBucket, getBucketLocation, getBucketVersioning, headBucket, listBuckets, putBucketVersioning } from './ops/bucket.js';
import { deleteObject, getObject, headObject, putObject } from './ops/object.js';
import { listObjectsV1, listObjectsV2 } from './ops/list.js';
import { aclRoute, getBucketAcl, getObjectAcl, putBucketAcl, putObjectAcl } from './ops/acl.js';
import { corsRoute, deleteBucketCors, getBucketCors, preflight, putBucketCors } from './ops/cors.js';
import { postObject, postObjectRoute } from './ops/post-object.js';
import { copyObject, copyRoute } from './ops/copy.js';
import { deleteObjects, deleteObjectsRoute } from './ops/delete-objects.js';
import { listObjectVersions } from './ops/versions.js';
import { abortMultipartUpload, createMultipartUpload, multipartRoute, uploadPart, uploadPartCopy } from './ops/multipart.js';
import { completeMultipartUpload } from './ops/multipart-complete.js';
import { listMultipartUploads, listParts } from './ops/multipart-list.js';
import type { S3Request } from './request.js';

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


/**
 * Every operation's S3 name (AWS's, as in its API reference), the `op` label of the gateway's metrics.
 * A closed set: requests the table does not serve (NotImplemented, MethodNotAllowed) are "Unsupported",
 * requests that could not be parsed (no bucket and key to route by) "Unparsed".
 */
const operationNames = new Map<Operation, string>([
  [listBuckets, 'ListBuckets'],
  [createBucket, 'CreateBucket'],
  [headBucket, 'HeadBucket'],
  [deleteBucket, 'DeleteBucket'],
  [getBucketLocation, 'GetBucketLocation'],
  [getBucketVersioning, 'GetBucketVersioning'],
  [putBucketVersioning, 'PutBucketVersioning'],
  [listObjectsV1, 'ListObjects'],
  [listObjectsV2, 'ListObjectsV2'],
  [listObjectVersions, 'ListObjectVersions'],
  [putObject, 'PutObject'],
  [getObject, 'GetObject'],
  [headObject, 'HeadObject'],
  [deleteObject, 'DeleteObject'],
  [deleteObjects, 'DeleteObjects'],
  [copyObject, 'CopyObject'],
  [postObject, 'PostObject'],
  [getBucketAcl, 'GetBucketAcl'],
  [putBucketAcl, 'PutBucketAcl'],
  [getObjectAcl, 'GetObjectAcl'],
  [putObjectAcl, 'PutObjectAcl'],
  [getBucketCors, 'GetBucketCors'],
  [putBucketCors, 'PutBucketCors'],
  [deleteBucketCors, 'DeleteBucketCors'],
  [preflight, 'OptionsPreflight'],
  [createMultipartUpload, 'CreateMultipartUpload'],
  [uploadPart, 'UploadPart'],
  [uploadPartCopy, 'UploadPartCopy'],
  [completeMultipartUpload, 'CompleteMultipartUpload'],
  [abortMultipartUpload, 'AbortMultipartUpload'],
  [listParts, 'ListParts'],
  [listMultipartUploads, 'ListMultipartUploads'],
]);

export const UNSUPPORTED_OPERATION = 'Unsupported';
export const UNPARSED_OPERATION = 'Unparsed';

/** Every value the `op` label can take. */
export const operationLabels: readonly string[] = [...operationNames.values(), UNSUPPORTED_OPERATION, UNPARSED_OPERATION];

export interface RoutedOperation {
  /** The S3 name (operationLabels). */
  name: string;
  run: Operation;
}

/**
 * The operation a request names, picked before the request is authenticated (routing reads only the
 * request: method, bucket, key, query and headers), so a request refused by authentication is still
 * counted under its operation. A request the router refuses (InvalidStorageClass) runs that refusal,
 * after authentication as before.
 */
export function routeOf(req: S3Request, services: GatewayServices): RoutedOperation {
  const routing: S3Context = { req, auth: { kind: 'anonymous', payload: { mode: 'unsigned' } }, userId: null, services };
  try {
    const run = pick(routing);
    return { name: operationNames.get(run) ?? UNSUPPORTED_OPERATION, run };
  } catch (err) {
    return {
      name: UNSUPPORTED_OPERATION,
      run: async () => {
        throw err;
      },
    };
  }
}
