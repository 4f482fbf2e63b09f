/**
 * Authorization: the one place that decides whether a caller (a signed user,
 * or anonymous) may perform an S3 action on a bucket or an object, from the
 * bucket's ACL and, for object actions, the object's ACL (gateways/s3/acl.ts).
 *
 * Each action needs one thing, as S3 maps ACL permissions to actions:
 * - bucket READ: list objects (v1, v2, versions, multipart uploads), HEAD bucket;
 * - bucket WRITE: put, post, delete objects, multipart uploads;
 * - bucket READ_ACP / WRITE_ACP: get / put the bucket ACL;
 * - object READ: get / head an object; object READ_ACP / WRITE_ACP: its ACL;
 * - the bucket's owner, and nobody else: delete the bucket, its location,
 *   versioning and CORS configuration.
 * Anonymous callers get only what an AllUsers grant gives. A missing object
 * is NoSuchKey only to a caller who may list the bucket; others get
 * AccessDenied (S3 does not reveal which keys exist).
 */
import { aclAllows, storedAcl, type Permission } from './acl.js';
import type { S3Context } from './context.js';
import { s3Error } from './errors.js';
import type { IndexEntry } from './meta/bucket-index.js';
import type { BucketRecord } from './meta/buckets.js';

type Need = { on: 'bucket'; permission: Permission } | { on: 'object'; permission: Permission } | { on: 'bucket-owner' };

const bucket = (permission: Permission): Need => ({ on: 'bucket', permission });
const object = (permission: Permission): Need => ({ on: 'object', permission });
const owner: Need = { on: 'bucket-owner' };

/** What each action needs. Operations name their action; anything not listed here is not authorized at all. */
export const actionNeeds = {
  HeadBucket: bucket('READ'),
  ListObjects: bucket('READ'),
  ListObjectVersions: bucket('READ'),
  ListMultipartUploads: bucket('READ'),
  ListParts: bucket('READ'),
  PutObject: bucket('WRITE'),
  PostObject: bucket('WRITE'),
  DeleteObject: bucket('WRITE'),
  DeleteObjects: bucket('WRITE'),
  CreateMultipartUpload: bucket('WRITE'),
  UploadPart: bucket('WRITE'),
  CompleteMultipartUpload: bucket('WRITE'),
  AbortMultipartUpload: bucket('WRITE'),
  GetBucketAcl: bucket('READ_ACP'),
  PutBucketAcl: bucket('WRITE_ACP'),
  GetObject: object('READ'),
  HeadObject: object('READ'),
  GetObjectAcl: object('READ_ACP'),
  PutObjectAcl: object('WRITE_ACP'),
  DeleteBucket: owner,
  GetBucketLocation: owner,
  GetBucketVersioning: owner,
  PutBucketVersioning: owner,
  GetBucketCors: owner,
  PutBucketCors: owner,
  DeleteBucketCors: owner,
  /** Any other bucket configuration: its owner only (context.ts ownedBucket). */
  BucketOwnerOnly: owner,
} satisfies Record<string, Need>;

export type S3Action = keyof typeof actionNeeds;

const accessDenied = () => s3Error('AccessDenied', 'Access Denied');

/**
 * The decision: may `caller` (user id, or null for anonymous) perform the
 * action on the bucket and, for object actions, the object?
 */
export function isAllowed(caller: string | null, action: S3Action, b: BucketRecord, entry?: IndexEntry): boolean {
  const need: Need = actionNeeds[action];
  switch (need.on) {
    case 'bucket-owner':
      return caller !== null && caller === b.owner;
    case 'bucket':
      return aclAllows(storedAcl(b.acl, b.owner), { owner: b.owner, caller, permission: need.permission });
    case 'object':
      if (!entry) return false;
      return aclAllows(storedAcl(entry.acl, entry.owner), { owner: entry.owner, caller, permission: need.permission });
  }
}

/**
 * The named bucket if the caller may perform the action on it (NoSuchBucket,
 * AccessDenied otherwise). For an object action it only loads the bucket: the
 * object's own check is authorizeObject's, once the entry is read.
 */
export async function authorizeBucket(ctx: S3Context, action: S3Action, name = ctx.req.bucket!): Promise<BucketRecord> {
  // Object reads may use a record up to a second old (docs/s3-api.md, "Consistency"); everything else reads it.
  if (!readsOnly(ctx, action)) return checkBucket(ctx, action, await ctx.services.buckets.require(name));
  const cached = await ctx.services.buckets.requireForRead(name);
  try {
    return checkBucket(ctx, action, cached);
  } catch (err) {
    const fresh = await freshBucket(ctx, cached);
    if (!fresh) throw err;
    return checkBucket(ctx, action, fresh);
  }
}

function checkBucket(ctx: S3Context, action: S3Action, b: BucketRecord): BucketRecord {
  if (actionNeeds[action].on !== 'object' && !isAllowed(ctx.userId, action, b)) throw accessDenied();
  if (b.name === ctx.req.bucket) expectOwner(ctx, b, 'x-amz-expected-bucket-owner');
  return b;
}

/**
 * For a refusal decided on a cached record (a missing key, AccessDenied):
 * the bucket's current record if it differs from the one used (then decide
 * again with it), null if it is the same (the refusal stands). So a cached
 * record only ever delays a revocation, never a grant, and a bucket deleted
 * and recreated elsewhere is never read through its old index.
 */
export async function freshBucket(ctx: S3Context, used: BucketRecord): Promise<BucketRecord | null> {
  const current = await ctx.services.buckets.require(used.name);
  return JSON.stringify(current) === JSON.stringify(used) ? null : current;
}

/** GET and HEAD of an object (a copy's source is read fresh: a copy is a write). */
const readsOnly = (ctx: S3Context, action: S3Action): boolean => (action === 'GetObject' || action === 'HeadObject') && (ctx.req.method === 'GET' || ctx.req.method === 'HEAD');

/**
 * x-amz-expected-bucket-owner (and x-amz-source-expected-bucket-owner for a
 * copy's source): the client's guard against writing to or reading from a
 * bucket someone else owns. A bucket of another owner is AccessDenied, as S3.
 */
export function expectOwner(ctx: S3Context, b: BucketRecord, header: 'x-amz-expected-bucket-owner' | 'x-amz-source-expected-bucket-owner'): void {
  const expected = ctx.req.headers.get(header);
  if (expected !== undefined && expected.trim() !== b.owner) throw accessDenied();
}

/**
 * The object entry if the caller may perform the (object) action on it. A
 * missing entry (null, or a delete marker passed as null) is NoSuchKey to a
 * caller who may list the bucket, AccessDenied to others.
 */
export function authorizeObject(ctx: S3Context, action: S3Action, b: BucketRecord, entry: IndexEntry | null, key = ctx.req.key!): IndexEntry {
  if (!entry) {
    if (isAllowed(ctx.userId, 'ListObjects', b)) throw s3Error('NoSuchKey', 'The specified key does not exist.', { Key: key });
    throw accessDenied();
  }
  if (!isAllowed(ctx.userId, action, b, entry)) throw accessDenied();
  if (ctx.userId === null && (action === 'GetObject' || action === 'HeadObject') && [...ctx.req.query.keys()].some((k) => k.startsWith('response-'))) {
    throw s3Error('InvalidRequest', 'Request specific response headers cannot be used for anonymous GET requests.');
  }
  return entry;
}

/** Who owns what an anonymous caller writes (where an ACL lets it): the bucket's owner. */
export function writerOf(ctx: S3Context, b: BucketRecord): string {
  return ctx.userId ?? b.owner;
}
