/**
 * CopyObject: PUT /bucket/key with x-amz-copy-source: /srcBucket/srcKey[?versionId=].
 *
 * The source version is resolved and checked (read access, the
 * x-amz-copy-source-if-* conditions), then its bytes are streamed through the
 * striper into a new data object of the destination bucket (whose pool may
 * differ: a copy across pools is a real copy), MD5 computed on the way, and
 * the destination committed like a PUT (versions.ts commitEntry). Memory is
 * the striper's budget: a put that waits on its own get is always granted a
 * piece. Metadata: COPY (default) keeps the source's content headers and user
 * metadata; REPLACE takes them from the request. Copying an object onto itself
 * needs REPLACE unless a source version is named (restoring an old version).
 *
 * If the source is replaced during the copy (its data removed under the
 * reader) the copy starts again from the index, a bounded number of times.
 * Within one data pool an extent-sharing clone (a store-level reference to
 * the source's pieces) could avoid copying bytes at all; not built yet.
 */
import { createHash } from 'node:crypto';
import { TesseraError, isTesseraError } from '../../../src/lib/errors.js';
import type { S3Context, S3Response } from '../context.js';
import { authorizeBucket, expectOwner, writerOf } from '../access.js';
import { s3Error } from '../errors.js';
import { INLINE_OBJECT_BYTES_MAX, type IndexEntry } from '../meta/bucket-index.js';
import type { BucketRecord } from '../meta/buckets.js';
import { KEY_BYTES_MAX } from '../request.js';
import { xmlDocument } from '../xml.js';
import { newResourceAcl } from './acl.js';
import { PUT_BYTES_MAX, beginData, dataPools, dataRefOf, discardData, objectBytes, putCondition, storedHeaders, userMeta } from './object.js';
import { isoDate, xmlHeaders } from './util.js';
import { commitEntry, requestedEntry, versionIdHeader } from './versions.js';
import { isVersionId } from '../meta/versions.js';
import type { Operation } from '../router.js';

/** Times a copy starts again when its source is replaced under it. */
const COPY_ATTEMPTS_MAX = 3;

export interface CopySource {
  bucket: string;
  key: string;
  versionId: string | null;
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw s3Error('InvalidArgument', 'Invalid copy source encoding', { ArgumentName: 'x-amz-copy-source' });
  }
}

/** x-amz-copy-source: "[/]bucket/key[?versionId=id]", bucket and key URL-encoded. */
export function parseCopySource(header: string): CopySource {
  const q = header.indexOf('?');
  const path = (q < 0 ? header : header.slice(0, q)).replace(/^\//, '');
  const slash = path.indexOf('/');
  const bucket = slash < 0 ? '' : decode(path.slice(0, slash));
  const key = slash < 0 ? '' : decode(path.slice(slash + 1));
  if (!bucket || !key) throw s3Error('InvalidArgument', 'Copy Source must mention the source bucket and key: sourcebucket/sourcekey', { ArgumentName: 'x-amz-copy-source', ArgumentValue: header });
  if (Buffer.byteLength(key) > KEY_BYTES_MAX) throw s3Error('KeyTooLongError', `Your key is too long (max ${KEY_BYTES_MAX} bytes)`);
  if (key.includes('\0')) throw s3Error('InvalidArgument', 'Object keys may not contain the NUL character');
  let versionId: string | null = null;
  if (q >= 0) {
    for (const part of header.slice(q + 1).split('&')) {
      const [name, value = ''] = part.split('=');
      if (name !== 'versionId') continue;
      versionId = decode(value);
      if (!isVersionId(versionId)) throw s3Error('InvalidArgument', 'Invalid version id specified', { ArgumentName: 'x-amz-copy-source', ArgumentValue: header });
    }
  }
  return { bucket, key, versionId };
}

function etagIn(list: string, etag: string): boolean {
  return list.split(',').some((t) => {
    const v = t.trim();
    return v === '*' || v === etag || `"${v}"` === etag;
  });
}

/**
 * x-amz-copy-source-if-match / -none-match / -modified-since / -unmodified-since,
 * as S3 combines them: a matching If-Match overrides a failing
 * If-Unmodified-Since, and a failing If-None-Match wins over a holding
 * If-Modified-Since. Any failure is PreconditionFailed (412).
 */
export function checkCopyConditions(ctx: S3Context, source: IndexEntry): void {
  const h = ctx.req.headers;
  const ifMatch = h.get('x-amz-copy-source-if-match');
  const ifNoneMatch = h.get('x-amz-copy-source-if-none-match');
  const modifiedSince = h.get('x-amz-copy-source-if-modified-since');
  const unmodifiedSince = h.get('x-amz-copy-source-if-unmodified-since');
  const mtimeS = Math.floor(source.mtimeMs / 1000);
  const dateS = (v: string): number | null => {
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : Math.floor(t / 1000);
  };
  const fail = (condition: string) => s3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: condition });
  if (ifMatch !== undefined) {
    if (!etagIn(ifMatch, source.etag)) throw fail('x-amz-copy-source-If-Match');
  } else if (unmodifiedSince !== undefined) {
    const t = dateS(unmodifiedSince);
    if (t !== null && mtimeS > t) throw fail('x-amz-copy-source-If-Unmodified-Since');
  }
  if (ifNoneMatch !== undefined) {
    if (etagIn(ifNoneMatch, source.etag)) throw fail('x-amz-copy-source-If-None-Match');
  } else if (modifiedSince !== undefined) {
    const t = dateS(modifiedSince);
    if (t !== null && t <= Math.floor(ctx.services.io.clock.nowMs() / 1000) && mtimeS <= t) throw fail('x-amz-copy-source-If-Modified-Since');
  }
}

function metadataDirective(ctx: S3Context): 'COPY' | 'REPLACE' {
  const d = ctx.req.headers.get('x-amz-metadata-directive') ?? 'COPY';
  if (d !== 'COPY' && d !== 'REPLACE') throw s3Error('InvalidArgument', 'Unknown metadata directive.', { ArgumentName: 'x-amz-metadata-directive', ArgumentValue: d });
  return d;
}

/** The content headers and user metadata of the new object, per the directive. */
function copiedMetadata(ctx: S3Context, source: IndexEntry, directive: 'COPY' | 'REPLACE'): Pick<IndexEntry, 'contentType' | 'headers' | 'meta'> {
  if (directive === 'COPY') {
    return { ...(source.contentType !== undefined ? { contentType: source.contentType } : {}), headers: { ...source.headers }, meta: { ...source.meta } };
  }
  const contentType = ctx.req.headers.get('content-type');
  return { ...(contentType ? { contentType } : {}), headers: storedHeaders(ctx), meta: userMeta(ctx) };
}

/** Streams the source's bytes into a new data object of the destination; returns the MD5 (hex) and the entry's dataRef. */
async function copyData(ctx: S3Context, o: { from: BucketRecord; source: IndexEntry; to: BucketRecord; dataName: string }): Promise<{ md5Hex: string; dataRef: NonNullable<IndexEntry['dataRef']> }> {
  const md5 = createHash('md5');
  const sizeBytes = o.source.sizeBytes;
  async function* bytes(): AsyncGenerator<Buffer> {
    if (sizeBytes === 0) return;
    for await (const chunk of objectBytes(ctx, o.from, o.source, 0, sizeBytes - 1)) {
      md5.update(chunk);
      yield chunk;
    }
  }
  const stored = await ctx.services.striper.put(dataPools(ctx, o.to), o.dataName, bytes(), { sizeBytes });
  if (stored.sizeBytes !== sizeBytes) throw new TesseraError('Corrupt', `copy of ${o.source.data} stored ${stored.sizeBytes} bytes, expected ${sizeBytes}`);
  return { md5Hex: md5.digest('hex'), dataRef: dataRefOf(stored) };
}

/** A small source's bytes (at most INLINE_OBJECT_BYTES_MAX), for an inline entry; and their MD5 (hex). */
async function copySmall(ctx: S3Context, from: BucketRecord, source: IndexEntry): Promise<{ md5Hex: string; inline: string }> {
  const chunks: Buffer[] = [];
  if (source.sizeBytes > 0) for await (const chunk of objectBytes(ctx, from, source, 0, source.sizeBytes - 1)) chunks.push(chunk);
  const data = Buffer.concat(chunks);
  if (data.length !== source.sizeBytes) throw new TesseraError('Corrupt', `copy source read ${data.length} bytes, expected ${source.sizeBytes}`);
  return { md5Hex: createHash('md5').update(data).digest('hex'), inline: data.toString('base64') };
}

export async function copyObject(ctx: S3Context): Promise<S3Response> {
  const dest = await authorizeBucket(ctx, 'PutObject');
  const key = ctx.req.key!;
  const src = parseCopySource(ctx.req.headers.get('x-amz-copy-source')!);
  const directive = metadataDirective(ctx);
  if (src.bucket === dest.name && src.key === key && src.versionId === null && directive === 'COPY') {
    throw s3Error('InvalidRequest', "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.");
  }
  const from = src.bucket === dest.name ? dest : await authorizeBucket(ctx, 'GetObject', src.bucket);
  expectOwner(ctx, from, 'x-amz-source-expected-bucket-owner');
  const writeCondition = putCondition(ctx);
  const owner = writerOf(ctx, dest);
  const acl = await newResourceAcl(ctx, { resourceOwner: owner, bucketOwner: dest.owner, on: 'object' });
  for (let attempt = 1; ; attempt++) {
    const source = await requestedEntry(ctx, { bucket: from, key: src.key, versionId: src.versionId, action: 'GetObject', forCopy: true });
    checkCopyConditions(ctx, source);
    if (source.sizeBytes > PUT_BYTES_MAX) {
      throw s3Error('InvalidRequest', `The specified copy source is larger than the maximum allowable size for a copy source: ${PUT_BYTES_MAX}`);
    }
    // A small copy is inline in its entry, as a small PUT (no data object).
    const small = source.sizeBytes <= INLINE_OBJECT_BYTES_MAX;
    const dataName = small ? null : `${dest.id}/${ctx.services.io.random.bytes(12).toString('hex')}`;
    const pending = dataName === null ? null : await beginData(ctx, dest, key, dataName);
    let md5Hex: string;
    let inline: string | undefined;
    let dataRef: IndexEntry['dataRef'];
    try {
      if (dataName === null) ({ md5Hex, inline } = await copySmall(ctx, from, source));
      else ({ md5Hex, dataRef } = await copyData(ctx, { from, source, to: dest, dataName }));
    } catch (err) {
      if (dataName !== null) await discardData(ctx, dest, dataName, pending);
      // The source was replaced (its data removed) under the copy: resolve it again.
      if (attempt < COPY_ATTEMPTS_MAX && (isTesseraError(err, 'NotFound') || isTesseraError(err, 'Conflict'))) continue;
      throw err;
    }
    // A single-part source's ETag is its MD5: a mismatch means the bytes read were not the object's.
    if (!source.parts && source.etag !== `"${md5Hex}"`) {
      if (dataName !== null) await discardData(ctx, dest, dataName, pending);
      throw new TesseraError('Corrupt', `copy source ${src.bucket}/${src.key} read with MD5 ${md5Hex}, its ETag is ${source.etag}`);
    }
    const entry: IndexEntry = {
      sizeBytes: source.sizeBytes,
      etag: `"${md5Hex}"`,
      mtimeMs: ctx.services.io.clock.nowMs(),
      data: dataName,
      ...(dataRef !== undefined ? { dataRef } : {}),
      ...(inline !== undefined ? { inline } : {}),
      owner,
      ...(acl ? { acl } : {}),
      ...copiedMetadata(ctx, source, directive),
      // Whole-object checksums of a single-part source still describe the bytes; a multipart one's are per part.
      ...(!source.parts && source.checksums ? { checksums: { ...source.checksums } } : {}),
    };
    let committed;
    try {
      committed = await commitEntry(ctx, dest, key, entry, writeCondition, pending);
    } catch (err) {
      if (dataName !== null) await discardData(ctx, dest, dataName, pending);
      throw err;
    }
    const sourceVersion = versionIdHeader(from, source)['x-amz-version-id'];
    return {
      status: 200,
      headers: { ...xmlHeaders, ...committed.headers, ...(sourceVersion !== undefined ? { 'x-amz-copy-source-version-id': sourceVersion } : {}) },
      body: xmlDocument('CopyObjectResult', { LastModified: isoDate(entry.mtimeMs), ETag: entry.etag }),
    };
  }
}

/** PUT with x-amz-copy-source on an object (UploadPartCopy, with uploadId, is multipart's). */
export function copyRoute(ctx: S3Context): Operation | null {
  const { method, key, query, headers } = ctx.req;
  if (method !== 'PUT' || key === null || !headers.has('x-amz-copy-source')) return null;
  // Subresources of other operations; any other parameter (x-id=CopyObject, X-Amz-* of a presigned URL, unknown ones)
  // leaves it a copy: falling through to a plain PUT would store the empty body instead.
  if (['uploadId', 'partNumber', 'acl', 'tagging', 'retention', 'legal-hold'].some((q) => query.has(q))) return null;
  return copyObject;
}
