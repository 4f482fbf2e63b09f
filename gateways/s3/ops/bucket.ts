/** Service and bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation, bucket versioning. */
import type { S3Context, S3Response } from '../context.js';
import { authorizeBucket } from '../access.js';
import { newResourceAcl } from './acl.js';
import { endAllUploads } from './multipart.js';
import { s3Error } from '../errors.js';
import { BucketIndex } from '../meta/bucket-index.js';
import { sweepJournal, type SweepStats } from '../meta/journal.js';
import type { GatewayServices } from '../context.js';
import { parseXmlDocument, xmlDocument } from '../xml.js';
import { isoDate, readSmallBody, readVerifiedBody, requireUser, xmlHeaders } from './util.js';

/** ListBuckets' largest page (AWS: max-buckets 1..10000). */
export const LIST_BUCKETS_MAX = 10_000;

/**
 * ListBuckets: the caller's buckets in name order (from the per-owner index), with max-buckets,
 * continuation-token (the last name of the previous page, base64url), prefix
 * and bucket-region (one region here: another one lists nothing), as the
 * current AWS API. Without max-buckets every bucket is listed (up to 10,000
 * per page, as AWS's quota).
 */
export async function listBuckets(ctx: S3Context): Promise<S3Response> {
  const userId = requireUser(ctx);
  const q = ctx.req.query;
  const maxParam = q.get('max-buckets');
  const max = maxParam === undefined ? LIST_BUCKETS_MAX : /^\d{1,5}$/.test(maxParam) ? Number(maxParam) : NaN;
  if (!(max >= 1 && max <= LIST_BUCKETS_MAX)) throw s3Error('InvalidArgument', `max-buckets must be an integer from 1 to ${LIST_BUCKETS_MAX}`, { ArgumentName: 'max-buckets', ArgumentValue: maxParam ?? '' });
  const prefix = q.get('prefix') ?? '';
  const token = q.get('continuation-token');
  let after: string | undefined;
  if (token !== undefined) {
    after = Buffer.from(token, 'base64url').toString('utf8');
    if (!after || Buffer.from(after, 'utf8').toString('base64url') !== token) throw s3Error('InvalidArgument', 'The continuation token provided is incorrect', { ArgumentName: 'continuation-token', ArgumentValue: token });
  }
  const region = q.get('bucket-region');
  const buckets: Array<{ Name: string; CreationDate: string; BucketRegion: string }> = [];
  let more = false;
  if (region === undefined || region === ctx.services.region) {
    // The owner index: only the caller's entries are read (meta/bucket-owners.ts).
    const scan = ctx.services.buckets.listOwned(userId, { ...(prefix ? { prefix } : {}), ...(after !== undefined ? { afterName: after } : {}), pageEntries: max + 1 });
    for await (const b of scan) {
      if (buckets.length >= max) {
        more = true;
        break;
      }
      buckets.push({ Name: b.name, CreationDate: isoDate(b.createdMs), BucketRegion: ctx.services.region });
    }
  }
  const user = await ctx.services.users.get(userId);
  const last = buckets[buckets.length - 1];
  return {
    status: 200,
    headers: xmlHeaders,
    body: xmlDocument('ListAllMyBucketsResult', {
      Owner: { ID: userId, DisplayName: user?.displayName ?? '' },
      Buckets: { Bucket: buckets },
      ...(more && last ? { ContinuationToken: Buffer.from(last.Name, 'utf8').toString('base64url') } : {}),
      ...(q.has('prefix') ? { Prefix: prefix } : {}),
    }),
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
  await ctx.services.buckets.create({ name, owner: userId, dataPool, indexShards: ctx.services.indexShards, ...(acl ? { acl } : {}) });
  return { status: 200, headers: { location: `/${name}` } };
}

export async function headBucket(ctx: S3Context): Promise<S3Response> {
  await authorizeBucket(ctx, 'HeadBucket');
  return { status: 200, headers: { 'x-amz-bucket-region': ctx.services.region } };
}

export async function deleteBucket(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'DeleteBucket');
  const index = new BucketIndex(ctx.services.client, ctx.services.metaPool, bucket);
  if (!(await index.isEmpty())) throw s3Error('BucketNotEmpty', 'The bucket you tried to delete is not empty', { BucketName: bucket.name });
  await endAllUploads(ctx, bucket); // in-progress multipart uploads go with the bucket (completions already decided are finished first)
  if (!(await index.isEmpty())) throw s3Error('BucketNotEmpty', 'The bucket you tried to delete is not empty', { BucketName: bucket.name });
  // Data that writes journaled and never committed (in flight now, or left by a killed gateway) goes with the bucket.
  await sweepWrites(ctx.services, { graceMs: 0, bucketName: bucket.name });
  await ctx.services.buckets.remove(bucket);
  await index.destroy(); // every one of the bucket's shards (its record's count)
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

/** A journal sweep (meta/journal.ts) over every bucket or one, with the gateway's grace period unless given. */
export function sweepWrites(s: GatewayServices, o: { graceMs?: number; bucketName?: string; signal?: AbortSignal } = {}): Promise<SweepStats> {
  return sweepJournal({
    client: s.client,
    striper: s.striper,
    metaPool: s.metaPool,
    buckets: s.buckets,
    indexOf: (bucket) => new BucketIndex(s.client, s.metaPool, bucket),
    nowMs: () => s.io.clock.nowMs(),
    graceMs: o.graceMs ?? s.journalGraceMs,
    ...(o.bucketName !== undefined ? { bucketName: o.bucketName } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
    onError: (err) => console.error(`s3: journal sweep: ${(err as Error)?.message ?? err}`),
  });
}
