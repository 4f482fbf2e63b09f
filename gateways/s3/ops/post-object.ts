/**
 * POST Object: a browser uploads a file with an HTML form (multipart/form-data
 * to the bucket's URL). Who uploads is decided by the form: a policy document
 * signed with SigV4 (x-amz-algorithm, x-amz-credential, x-amz-date,
 * x-amz-signature; SigV4Verifier.verifyPostPolicy) whose conditions the form
 * must meet (post-policy.ts), or no policy at all (anonymous, allowed only
 * where the bucket ACL grants AllUsers WRITE). Then as a PUT: the file
 * streams into a new striped object (its size checked against
 * content-length-range as it comes), and the key's index entry is swapped in
 * only once the whole body was read and verified.
 *
 * `key` may contain ${filename} (the browser's file name). The answer is a
 * 303 to success_action_redirect, else success_action_status 200, 201 (a
 * PostResponse document) or 204 (the default).
 */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { authorizeBucket, writerOf } from '../access.js';
import { aclFromHeaders } from '../acl.js';
import type { S3Context, S3Response } from '../context.js';
import { s3Error } from '../errors.js';
import type { IndexEntry } from '../meta/bucket-index.js';
import type { BucketRecord } from '../meta/buckets.js';
import { checkPostPolicy, parsePostPolicy } from '../post-policy.js';
import { KEY_BYTES_MAX } from '../request.js';
import type { Operation } from '../router.js';
import { escapeXml } from '../xml.js';
import { beginData, dataPools, discardData, PUT_BYTES_MAX, STORED_HEADERS, USER_META_BYTES_MAX } from './object.js';
import { commitEntry } from './versions.js';
import { readPostForm, type PostForm } from './post-form.js';

const SIGNATURE_FIELDS = ['x-amz-algorithm', 'x-amz-credential', 'x-amz-date', 'x-amz-signature'] as const;
/** Form fields asking for what the gateway does not do: refused rather than ignored. */
const UNSUPPORTED_FIELDS = [/^tagging$/, /^x-amz-server-side-encryption/, /^x-amz-website-redirect-location$/, /^x-amz-object-lock-/, /^x-amz-checksum-/];

/** Counts and hashes the file while it streams; refuses it past maxBytes. */
class FileDigest extends Transform {
  sizeBytes = 0;
  private readonly md5 = createHash('md5');
  constructor(private readonly maxBytes: number) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.sizeBytes += chunk.length;
    if (this.sizeBytes > this.maxBytes) return callback(s3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size', { MaxSizeAllowed: String(this.maxBytes) }));
    this.md5.update(chunk);
    callback(null, chunk);
  }
  md5Hex(): string {
    return this.md5.digest('hex');
  }
}

const missingField = (name: string) => s3Error('InvalidArgument', `Bucket POST must contain a field named '${name}'. If it is specified, please check the order of the fields.`, { ArgumentName: name });

/** Who uploads, and the file size range the policy allows (null: any). */
async function uploader(ctx: S3Context, form: PostForm): Promise<{ userId: string | null; range: { minBytes: number; maxBytes: number } | null }> {
  const f = form.fields;
  if (f.has('awsaccesskeyid') || f.has('signature')) throw s3Error('InvalidRequest', 'The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.');
  const policy = f.get('policy');
  if (policy === undefined) {
    if (SIGNATURE_FIELDS.some((n) => f.has(n))) throw missingField('policy');
    return { userId: ctx.userId, range: null };
  }
  for (const n of SIGNATURE_FIELDS) if (!f.has(n)) throw missingField(n);
  const auth = await ctx.services.verifier.verifyPostPolicy({
    algorithm: f.get('x-amz-algorithm')!,
    credential: f.get('x-amz-credential')!,
    amzDate: f.get('x-amz-date')!,
    policyBase64: policy,
    signature: f.get('x-amz-signature')!,
  });
  const range = checkPostPolicy(parsePostPolicy(policy), { fields: f, bucket: ctx.req.bucket!, nowMs: ctx.services.io.clock.nowMs() });
  return { userId: auth.userId, range };
}

function objectKey(form: PostForm): string {
  const raw = form.fields.get('key');
  if (raw === undefined) throw missingField('key');
  const key = raw.split('${filename}').join(form.filename);
  if (key.length === 0) throw s3Error('InvalidArgument', 'User key must have a length greater than 0.', { ArgumentName: 'key' });
  if (Buffer.byteLength(key) > KEY_BYTES_MAX) throw s3Error('KeyTooLongError', `Your key is too long (max ${KEY_BYTES_MAX} bytes)`);
  return key;
}

/** Content-Type, the stored headers and x-amz-meta-* from the form. */
function describedBy(fields: ReadonlyMap<string, string>): Pick<IndexEntry, 'contentType' | 'headers' | 'meta'> {
  for (const name of fields.keys()) {
    if (UNSUPPORTED_FIELDS.some((re) => re.test(name))) throw s3Error('NotImplemented', `The form field ${name} asks for functionality that is not implemented.`);
  }
  const headers: Record<string, string> = {};
  for (const h of STORED_HEADERS) if (fields.has(h)) headers[h] = fields.get(h)!;
  const meta: Record<string, string> = {};
  let metaBytes = 0;
  for (const [k, v] of fields) {
    if (!k.startsWith('x-amz-meta-')) continue;
    meta[k.slice(11)] = v;
    metaBytes += k.length - 11 + v.length;
  }
  if (metaBytes > USER_META_BYTES_MAX) throw s3Error('MetadataTooLarge', `Your metadata headers exceed the maximum allowed metadata size (${USER_META_BYTES_MAX} bytes)`);
  const contentType = fields.get('content-type');
  return { ...(contentType ? { contentType } : {}), headers, meta };
}

/** Streams the file into a new striped object; returns its size and ETag once the whole form was read and verified. */
async function storeFile(ctx: S3Context, bucket: BucketRecord, form: PostForm, dataName: string, range: { minBytes: number; maxBytes: number } | null): Promise<{ sizeBytes: number; etag: string }> {
  const digest = new FileDigest(Math.min(range?.maxBytes ?? PUT_BYTES_MAX, PUT_BYTES_MAX));
  const flowing = pipeline(form.file, digest);
  flowing.catch(() => undefined); // awaited below; the striper sees the same error through `digest`
  await ctx.services.striper.put(dataPools(ctx, bucket), dataName, digest);
  await flowing;
  await form.done;
  if (range && digest.sizeBytes < range.minBytes) throw s3Error('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed size', { MinSizeAllowed: String(range.minBytes) });
  return { sizeBytes: digest.sizeBytes, etag: `"${digest.md5Hex()}"` };
}

function answer(ctx: S3Context, form: PostForm, key: string, etag: string): S3Response {
  const bucket = ctx.req.bucket!;
  const pathStyle = (ctx.req.raw.url ?? '/').split('?')[0] !== '/';
  const encodedKey = key.split('/').map(encodeURIComponent).join('/');
  const location = `http://${ctx.req.headers.get('host') ?? 'localhost'}/${pathStyle ? `${encodeURIComponent(bucket)}/` : ''}${encodedKey}`;
  const headers = { etag, location };
  const redirect = form.fields.get('success_action_redirect') ?? form.fields.get('redirect');
  if (redirect !== undefined && /^https?:\/\//i.test(redirect) && URL.canParse(redirect)) {
    const url = new URL(redirect);
    url.searchParams.append('bucket', bucket);
    url.searchParams.append('key', key);
    url.searchParams.append('etag', etag);
    return { status: 303, headers: { ...headers, location: url.toString() } };
  }
  const status = form.fields.get('success_action_status');
  if (status === '200') return { status: 200, headers };
  if (status === '201') {
    const text = (v: string): string => v.replace(/[&<>]/g, (c) => escapeXml(c)); // quotes stay literal, as S3 writes the ETag
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n<PostResponse><Location>${text(location)}</Location><Bucket>${text(bucket)}</Bucket><Key>${text(key)}</Key><ETag>${text(etag)}</ETag></PostResponse>`;
    return { status: 201, headers: { ...headers, 'content-type': 'application/xml' }, body };
  }
  return { status: 204, headers };
}

export async function postObject(ctx: S3Context): Promise<S3Response> {
  await ctx.services.buckets.require(ctx.req.bucket!);
  const form = await readPostForm(ctx);
  const key = objectKey(form);
  const { userId, range } = await uploader(ctx, form);
  const asUploader: S3Context = { ...ctx, userId };
  const bucket = await authorizeBucket(asUploader, 'PostObject');
  const described = describedBy(form.fields);
  const owner = writerOf(asUploader, bucket);
  const cannedAcl = form.fields.get('acl');
  const acl = cannedAcl === undefined ? null : await aclFromHeaders(asUploader, new Map([['x-amz-acl', [cannedAcl]]]), { resourceOwner: owner, bucketOwner: bucket.owner, on: 'object' });
  const dataName = `${bucket.id}/${ctx.services.io.random.bytes(12).toString('hex')}`;
  const pending = await beginData(ctx, bucket, key, dataName);
  let committed: { entry: IndexEntry; headers: Record<string, string> };
  try {
    const stored = await storeFile(ctx, bucket, form, dataName, range);
    const entry: IndexEntry = { ...stored, mtimeMs: ctx.services.io.clock.nowMs(), data: dataName, owner, ...described, ...(acl ? { acl } : {}) };
    committed = await commitEntry(ctx, bucket, key, entry, undefined, pending);
  } catch (err) {
    await discardData(ctx, bucket, dataName, pending);
    throw err;
  }
  const res = answer(ctx, form, key, committed.entry.etag);
  return { ...res, headers: { ...res.headers, ...committed.headers } };
}

/** POST to a bucket with a form body, for the router; null if the request is not one. */
export function postObjectRoute(ctx: S3Context): Operation | null {
  const { method, bucket, key, query } = ctx.req;
  if (method !== 'POST' || !bucket || key !== null || query.size > 0) return null;
  return /^multipart\/form-data/i.test(ctx.req.headers.get('content-type') ?? '') ? postObject : null;
}
