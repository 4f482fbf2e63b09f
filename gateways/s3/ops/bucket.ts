/** Service and bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation, bucket versioning. */
import type { S3Context, S3Response } from '../context.js';
import { authorizeBucket } from '../access.js';
import { newResourceAcl } from './acl.js';
import { endAllUploads } from './multipart.js';
import { s3Error } from '../errors.js';
import { BucketIndex } from '../meta/bucket-index.js';
import { parseXmlDocument, xmlDocument } from '../xml.js';
import { isoDate, readSmallBody, readVerifiedBody, requireUser, xmlHeaders } from './util.js';

export async function listBuckets(ctx: S3Context): Promise<S3Response> {
  const userId = requireUser(ctx);
  const user = await ctx.services.users.get(userId);
  const buckets = [];
  for await (const b of ctx.services.buckets.list()) if (b.owner === userId) buckets.push({ Name: b.name, CreationDate: isoDate(b.createdMs) });
  return {
    status: 200,
    headers: xmlHeaders,
    body: xmlDocument('ListAllMyBucketsResult', { Owner: { ID: userId, DisplayName: user?.displayName ?? '' }, Buckets: { Bucket: buckets } }),
  };
}

export async function createBucket(ctx: S3Context): Promise<S3Response> {
  const userId = requireUser(ctx);
  const name = ctx.req.bucket!;
  const body = await readSmallBody(ctx, 64 * 1024);
  let dataPool = ctx.services.defaultDataPool;
  if (body.length > 0) {
    const doc = parseXmlDocument(body, 'CreateBucketConfiguration', 64 * 1024);
    const constraint = doc.LocationConstraint;
    if (typeof constraint === 'string' && constraint && constraint !== ctx.services.region) {
      // Tessera extension: a location constraint naming a pool places the bucket's data there.
      if (!ctx.services.client.view.map.pools.some((p) => p.name === constraint)) {
        throw s3Error('InvalidArgument', `Unknown location constraint ${constraint} (a pool name or ${ctx.services.region})`);
      }
      dataPool = constraint;
    }
  }
  const acl = await newResourceAcl(ctx, { resourceOwner: userId, bucketOwner: userId, on: 'bucket' });
  await ctx.services.buckets.create({ name, owner: userId, dataPool, ...(acl ? { acl } : {}) });
  return { status: 200, headers: { location: `/${name}` } };
}

export async function headBucket(ctx: S3Context): Promise<S3Response> {
  await authorizeBucket(ctx, 'HeadBucket');
  return { status: 200, headers: { 'x-amz-bucket-region': ctx.services.region } };
}

export async function deleteBucket(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'DeleteBucket');
  const index = new BucketIndex(ctx.services.client, ctx.services.metaPool, bucket.id);
  if (!(await index.isEmpty())) throw s3Error('BucketNotEmpty', 'The bucket you tried to delete is not empty', { BucketName: bucket.name });
  await endAllUploads(ctx, bucket); // in-progress multipart uploads go with the bucket (completions already decided are finished first)
  if (!(await index.isEmpty())) throw s3Error('BucketNotEmpty', 'The bucket you tried to delete is not empty', { BucketName: bucket.name });
  await ctx.services.buckets.remove(bucket);
  await index.destroy();
  return { status: 204 };
}

export async function getBucketLocation(ctx: S3Context): Promise<S3Response> {
  await authorizeBucket(ctx, 'GetBucketLocation');
  const region = ctx.services.region === 'us-east-1' ? '' : ctx.services.region;
  return { status: 200, headers: xmlHeaders, body: xmlDocument('LocationConstraint', {}).replace('></LocationConstraint>', `>${region}</LocationConstraint>`) };
}

export async function getBucketVersioning(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'GetBucketVersioning');
  const body = bucket.versioning === 'Unversioned' ? {} : { Status: bucket.versioning };
  return { status: 200, headers: xmlHeaders, body: xmlDocument('VersioningConfiguration', body) };
}

export async function putBucketVersioning(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'PutBucketVersioning');
  const doc = parseXmlDocument(await readVerifiedBody(ctx, 64 * 1024), 'VersioningConfiguration', 64 * 1024);
  const status = doc.Status;
  if (status !== 'Enabled' && status !== 'Suspended') throw s3Error('MalformedXML', 'Status must be Enabled or Suspended');
  if (doc.MfaDelete === 'Enabled') throw s3Error('NotImplemented', 'MFA delete is not supported');
  await ctx.services.buckets.update(bucket.name, (b) => ({ ...b, versioning: status }));
  return { status: 200 };
}
