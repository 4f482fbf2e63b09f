/**
 * Multipart uploads (docs/s3-multipart.md): CreateMultipartUpload,
 * UploadPart, UploadPartCopy, AbortMultipartUpload, and the route of every
 * multipart request (Complete: multipart-complete.ts; ListParts and
 * ListMultipartUploads: multipart-list.ts; GET/HEAD ?partNumber:
 * multipart-get.ts).
 *
 * Each part's data is its own striped object in the bucket's data pool,
 * written before its record (meta/uploads.ts): the data name is first
 * claimed in the upload's object ('d' entry, only while the upload is open),
 * then written, then made the part's record by a compare-and-set that also
 * turns the replaced part's data (a re-upload) into a 'd' entry, which is
 * removed right after. Whatever happens to the gateway in between, every
 * byte the upload owns is named in its object, and Abort or Complete
 * collects it.
 */
import { createHash } from 'node:crypto';
import { crc32c } from '../../../src/client/checksum.js';
import { TesseraError, isTesseraError } from '../../../src/lib/errors.js';
import { authorizeBucket, expectOwner, writerOf } from '../access.js';
import { checksumAlgorithms, checksumHeaderName, createChecksummer, requestHeaders, type ChecksumAlgorithm } from '../auth/index.js';
import type { S3Context, S3Response } from '../context.js';
import { s3Error } from '../errors.js';
import type { IndexEntry } from '../meta/bucket-index.js';
import type { BucketRecord } from '../meta/buckets.js';
import { UploadStore, type PartRecord, type UploadRecord } from '../meta/uploads.js';
import type { Operation } from '../router.js';
import { xmlDocument } from '../xml.js';
import { newResourceAcl } from './acl.js';
import { checkCopyConditions, parseCopySource } from './copy.js';
import { completeMultipartUpload, finishCompletion, isConditionRefusal } from './multipart-complete.js';
import { checksumElement, uploadChecksumOf, type UploadChecksum } from './multipart-checksum.js';
import { resolveMultipartLimits, type MultipartLimits } from './multipart-limits.js';
import { listMultipartUploads, listParts } from './multipart-list.js';
import { dataPools, objectBytes, storeBody, storedHeaders, userMeta } from './object.js';
import { isoDate, xmlHeaders } from './util.js';
import { requestedEntry, versionIdHeader } from './versions.js';

/** Times an UploadPartCopy starts again when its source is replaced under it; times a part record is retried on concurrent writers. */
const COPY_ATTEMPTS_MAX = 3;
const PUT_PART_ATTEMPTS_MAX = 32;

export function uploadsOf(ctx: S3Context, bucket: BucketRecord): UploadStore {
  return new UploadStore(ctx.services.client, ctx.services.metaPool, bucket.id);
}

export function multipartLimits(ctx: S3Context): MultipartLimits {
  return resolveMultipartLimits(ctx.services.multipart);
}

export const noSuchUpload = (uploadId: string) =>
  s3Error('NoSuchUpload', 'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.', { UploadId: uploadId });

/** The upload the request names (its key and uploadId), or NoSuchUpload. */
export async function requireUpload(ctx: S3Context, uploads: UploadStore): Promise<UploadRecord> {
  const uploadId = ctx.req.query.get('uploadId') ?? '';
  const record = /^[0-9a-f]{32}$/.test(uploadId) ? await uploads.record(ctx.req.key!, uploadId) : null;
  if (!record) throw noSuchUpload(uploadId);
  return record;
}

/** Removes data objects, a bounded number at once; NotFound is success (removals are retried after crashes). */
export async function removeDataObjects(ctx: S3Context, bucket: BucketRecord, names: readonly string[]): Promise<void> {
  const pools = dataPools(ctx, bucket);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < names.length) {
      const name = names[next++]!;
      await ctx.services.striper.remove(pools, name).catch((err: unknown) => {
        if (!isTesseraError(err, 'NotFound')) throw err;
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(multipartLimits(ctx).removeConcurrency, names.length) }, worker));
}

function parsePartNumber(ctx: S3Context): number {
  const v = ctx.req.query.get('partNumber') ?? '';
  const n = /^\d{1,5}$/.test(v) ? Number(v) : NaN;
  const max = multipartLimits(ctx).partsMax;
  if (!(n >= 1 && n <= max)) throw s3Error('InvalidArgument', `Part number must be an integer between 1 and ${max}, inclusive`, { ArgumentName: 'partNumber', ArgumentValue: v });
  return n;
}

export async function createMultipartUpload(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'CreateMultipartUpload');
  const checksum = uploadChecksumOf(ctx.req.headers);
  const owner = writerOf(ctx, bucket);
  const acl = await newResourceAcl(ctx, { resourceOwner: owner, bucketOwner: bucket.owner, on: 'object' });
  const { io } = ctx.services;
  const now = io.clock.nowMs();
  // Creation time first: a key's uploads list in the order they were initiated.
  const uploadId = `${now.toString(16).padStart(12, '0')}${io.random.bytes(10).toString('hex')}`;
  const contentType = ctx.req.headers.get('content-type');
  const record: UploadRecord = {
    key: ctx.req.key!,
    uploadId,
    initiatedMs: now,
    owner,
    initiator: ctx.userId,
    ...(contentType ? { contentType } : {}),
    headers: storedHeaders(ctx),
    meta: userMeta(ctx),
    ...(acl ? { acl } : {}),
    checksum,
  };
  await uploadsOf(ctx, bucket).create(record);
  const headers: Record<string, string> = { ...xmlHeaders };
  if (!checksum.defaulted) {
    headers['x-amz-checksum-algorithm'] = checksum.algorithm.toUpperCase();
    headers['x-amz-checksum-type'] = checksum.type;
  }
  return { status: 200, headers, body: xmlDocument('InitiateMultipartUploadResult', { Bucket: bucket.name, Key: record.key, UploadId: uploadId }) };
}

/** The checksum algorithm a request's body declares (header, trailer, or x-amz-sdk-checksum-algorithm), or null. */
function declaredAlgorithm(ctx: S3Context): ChecksumAlgorithm | null {
  const headers = requestHeaders(ctx.auth, ctx.req.raw);
  const named = (s: string | undefined): ChecksumAlgorithm | null => {
    const a = s?.trim().toLowerCase().replace(/^x-amz-checksum-/, '');
    return a !== undefined && (checksumAlgorithms as readonly string[]).includes(a) ? (a as ChecksumAlgorithm) : null;
  };
  for (const name of headers.keys()) if (name.startsWith('x-amz-checksum-') && named(name)) return named(name);
  return named(headers.get('x-amz-trailer')?.[0]) ?? named(headers.get('x-amz-sdk-checksum-algorithm')?.[0]);
}

/** A part's body must carry the upload's algorithm when the upload asked for one (as S3). */
function checkPartChecksum(ctx: S3Context, checksum: UploadChecksum): void {
  if (checksum.defaulted) return;
  const declared = declaredAlgorithm(ctx);
  if (declared !== checksum.algorithm) throw s3Error('InvalidRequest', `Checksum Type mismatch occurred, expected checksum Type: ${checksum.algorithm}, actual checksum Type: ${declared ?? 'null'}`);
}

/** What a part computes besides its declared checksum: the upload's algorithm (S3's CRC64NVME when none was asked for). */
const partChecksums = (c: UploadChecksum): ChecksumAlgorithm[] => [c.algorithm];

/** The checksum headers of an UploadPart answer: the upload's, and the one the request declared. */
function partChecksumHeaders(ctx: S3Context, record: UploadRecord, part: PartRecord): Record<string, string> {
  const out: Record<string, string> = {};
  const declared = declaredAlgorithm(ctx);
  for (const alg of [record.checksum.algorithm, declared]) if (alg && part.checksums[alg]) out[checksumHeaderName(alg)] = part.checksums[alg];
  return out;
}

const partDataName = (ctx: S3Context, bucket: BucketRecord, uploadId: string, partNumber: number): string =>
  `${bucket.id}/${uploadId}.${partNumber}.${ctx.services.io.random.bytes(6).toString('hex')}`;

/**
 * Claims a data name, runs write() into it, then makes it the part's
 * record (replacing and removing any earlier upload of that part number).
 * NoSuchUpload if the upload is not open (any more); the data is removed.
 */
async function storePart(ctx: S3Context, o: { bucket: BucketRecord; uploads: UploadStore; record: UploadRecord; partNumber: number; write: (dataName: string) => Promise<Omit<PartRecord, 'partNumber' | 'data' | 'mtimeMs'>> }): Promise<PartRecord> {
  const { bucket, uploads, record } = o;
  const { uploadId } = record;
  const dataName = partDataName(ctx, bucket, uploadId, o.partNumber);
  const opened = await uploads.state(uploadId);
  if (opened?.value.s !== 'open') throw noSuchUpload(uploadId);
  try {
    await uploads.claimData(uploadId, opened.raw, dataName, ctx.services.io.clock.nowMs());
  } catch (err) {
    if (isTesseraError(err, 'Conflict')) throw noSuchUpload(uploadId);
    throw err;
  }
  const discard = async (): Promise<void> => {
    await ctx.services.striper.remove(dataPools(ctx, bucket), dataName).catch(() => undefined);
    await uploads.forgetData(uploadId, dataName);
  };
  let part: PartRecord;
  try {
    part = { partNumber: o.partNumber, data: dataName, mtimeMs: ctx.services.io.clock.nowMs(), ...(await o.write(dataName)) };
  } catch (err) {
    await discard();
    throw err;
  }
  for (let attempt = 0; attempt < PUT_PART_ATTEMPTS_MAX; attempt++) {
    const { state, part: previous } = await uploads.stateAndPart(uploadId, o.partNumber);
    if (state?.value.s !== 'open') {
      await discard();
      throw noSuchUpload(uploadId);
    }
    try {
      await uploads.putPart(uploadId, { open: state.raw, previous, part });
    } catch (err) {
      if (isTesseraError(err, 'Conflict')) continue; // another upload of this part number, or the state moved on: read again
      throw err; // outcome unknown: the 'd' entry keeps the data collectable
    }
    if (previous) {
      await removeDataObjects(ctx, bucket, [previous.value.data]);
      await uploads.forgetData(uploadId, previous.value.data);
    }
    return part;
  }
  throw s3Error('SlowDown', 'Please reduce your request rate.');
}

export async function uploadPart(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'UploadPart');
  const uploads = uploadsOf(ctx, bucket);
  const partNumber = parsePartNumber(ctx);
  const record = await requireUpload(ctx, uploads);
  const h = ctx.req.headers;
  if (!h.has('content-length') && !h.has('x-amz-decoded-content-length')) throw s3Error('MissingContentLength', 'You must provide the Content-Length HTTP header.');
  const declared = Number(h.get('x-amz-decoded-content-length') ?? h.get('content-length'));
  if (declared > multipartLimits(ctx).partBytesMax) throw s3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed object size.');
  checkPartChecksum(ctx, record.checksum);
  const part = await storePart(ctx, {
    bucket,
    uploads,
    record,
    partNumber,
    write: async (dataName) => {
      const stored = await storeBody(ctx, bucket, dataName, partChecksums(record.checksum));
      return { sizeBytes: stored.sizeBytes, etag: stored.etag, checksums: stored.checksums ?? {} };
    },
  });
  return { status: 200, headers: { etag: part.etag, ...partChecksumHeaders(ctx, record, part) } };
}

/** x-amz-copy-source-range: bytes=first-last, inside the source (InvalidArgument when malformed, InvalidRange past its end). */
function copyRange(ctx: S3Context, sizeBytes: number): { start: number; end: number } {
  const header = ctx.req.headers.get('x-amz-copy-source-range');
  if (header === undefined) return { start: 0, end: sizeBytes - 1 };
  const m = /^bytes=(\d{1,16})-(\d{1,16})$/.exec(header.trim());
  if (!m || Number(m[1]) > Number(m[2])) {
    throw s3Error('InvalidArgument', 'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy', { ArgumentName: 'x-amz-copy-source-range', ArgumentValue: header });
  }
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end >= sizeBytes) throw s3Error('InvalidRange', `Range specified is not valid for source object of size: ${sizeBytes}`, { RangeRequested: header, ActualObjectSize: String(sizeBytes) });
  return { start, end };
}

/** Streams source bytes [start, end] into a new part's data object, computing its MD5 and checksums. */
async function copyPartData(ctx: S3Context, o: { from: BucketRecord; source: IndexEntry; to: BucketRecord; dataName: string; start: number; end: number; algorithms: ChecksumAlgorithm[] }) {
  const md5 = createHash('md5');
  const summers = o.algorithms.map((a) => [a, createChecksummer(a, crc32c)] as const);
  const sizeBytes = o.end - o.start + 1;
  async function* bytes(): AsyncGenerator<Buffer> {
    if (sizeBytes <= 0) return;
    for await (const chunk of objectBytes(ctx, o.from, o.source, o.start, o.end)) {
      md5.update(chunk);
      for (const [, s] of summers) s.update(chunk);
      yield chunk;
    }
  }
  const stored = await ctx.services.striper.put(dataPools(ctx, o.to), o.dataName, bytes(), { sizeBytes: Math.max(0, sizeBytes) });
  if (stored.sizeBytes !== Math.max(0, sizeBytes)) throw new TesseraError('Corrupt', `part copy stored ${stored.sizeBytes} bytes, expected ${sizeBytes}`);
  return { sizeBytes: stored.sizeBytes, etag: `"${md5.digest('hex')}"`, checksums: Object.fromEntries(summers.map(([a, s]) => [a, s.digestBase64()])) };
}

export async function uploadPartCopy(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'UploadPart');
  const uploads = uploadsOf(ctx, bucket);
  const partNumber = parsePartNumber(ctx);
  const record = await requireUpload(ctx, uploads);
  const src = parseCopySource(ctx.req.headers.get('x-amz-copy-source')!);
  const from = src.bucket === bucket.name ? bucket : await authorizeBucket(ctx, 'GetObject', src.bucket);
  expectOwner(ctx, from, 'x-amz-source-expected-bucket-owner');
  for (let attempt = 1; ; attempt++) {
    const source = await requestedEntry(ctx, { bucket: from, key: src.key, versionId: src.versionId, action: 'GetObject', forCopy: true });
    checkCopyConditions(ctx, source);
    const { start, end } = copyRange(ctx, source.sizeBytes);
    if (end - start + 1 > multipartLimits(ctx).partBytesMax) {
      throw s3Error('InvalidRequest', `The specified copy source is larger than the maximum allowable size for a copy source: ${multipartLimits(ctx).partBytesMax}`);
    }
    let part: PartRecord;
    try {
      part = await storePart(ctx, { bucket, uploads, record, partNumber, write: (dataName) => copyPartData(ctx, { from, source, to: bucket, dataName, start, end, algorithms: partChecksums(record.checksum) }) });
    } catch (err) {
      // The source was replaced (its data removed) under the copy: resolve it again.
      if (attempt < COPY_ATTEMPTS_MAX && (isTesseraError(err, 'NotFound') || isTesseraError(err, 'Conflict'))) continue;
      throw err;
    }
    const sourceVersion = versionIdHeader(from, source)['x-amz-version-id'];
    const alg = record.checksum.algorithm;
    return {
      status: 200,
      headers: { ...xmlHeaders, ...(sourceVersion !== undefined ? { 'x-amz-copy-source-version-id': sourceVersion } : {}) },
      body: xmlDocument('CopyPartResult', {
        LastModified: isoDate(part.mtimeMs),
        ETag: part.etag,
        ...(!record.checksum.defaulted && part.checksums[alg] ? { [checksumElement(alg)]: part.checksums[alg] } : {}),
      }),
    };
  }
}

/** Aborts an open upload: its state moves to aborting (no part can be added after), then every byte it owns is removed. */
export async function abortMultipartUpload(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'AbortMultipartUpload');
  const uploads = uploadsOf(ctx, bucket);
  const record = await requireUpload(ctx, uploads);
  for (let attempt = 0; attempt < PUT_PART_ATTEMPTS_MAX; attempt++) {
    const state = await uploads.state(record.uploadId);
    if (state?.value.s === 'completing') {
      // A complete got as far as deciding: the object is made; finish that instead.
      try {
        await finishCompletion(ctx, { bucket, uploads, record });
      } catch (err) {
        if (isConditionRefusal(err)) continue; // a conditional complete refused at its commit: open again, abort it
        throw err;
      }
      throw noSuchUpload(record.uploadId);
    }
    if (state?.value.s === 'open') {
      try {
        await uploads.setState(record.uploadId, state.raw, { s: 'aborting' });
      } catch (err) {
        if (isTesseraError(err, 'Conflict')) continue;
        throw err;
      }
    }
    await finishAbort(ctx, { bucket, uploads, record });
    return { status: 204 };
  }
  throw s3Error('SlowDown', 'Please reduce your request rate.');
}

/** Removes all an aborting upload owns, then its object and its listing (each step repeatable). */
export async function finishAbort(ctx: S3Context, o: { bucket: BucketRecord; uploads: UploadStore; record: UploadRecord }): Promise<void> {
  const contents = await o.uploads.contents(o.record.uploadId);
  await removeDataObjects(ctx, o.bucket, [...[...contents.parts.values()].map((p) => p.value.data), ...contents.owned]);
  await o.uploads.destroy(o.record.uploadId);
  await o.uploads.removeRecord(o.record.key, o.record.uploadId);
}

/** Every multipart request: by method, key and subresource. */
export function multipartRoute(ctx: S3Context): Operation | null {
  const { method, bucket, key, query } = ctx.req;
  if (!bucket) return null;
  if (key === null) return method === 'GET' && query.has('uploads') ? listMultipartUploads : null;
  if (method === 'POST' && query.has('uploads')) return createMultipartUpload;
  if (!query.has('uploadId')) return null;
  switch (method) {
    case 'PUT':
      return ctx.req.headers.has('x-amz-copy-source') ? uploadPartCopy : uploadPart;
    case 'POST':
      return completeMultipartUpload;
    case 'DELETE':
      return abortMultipartUpload;
    case 'GET':
      return listParts;
    default:
      return null;
  }
}

/**
 * Ends every upload of a bucket being deleted: open ones are aborted, ones a
 * complete had decided are finished (the caller checks emptiness after).
 */
export async function endAllUploads(ctx: S3Context, bucket: BucketRecord): Promise<void> {
  const uploads = uploadsOf(ctx, bucket);
  for (;;) {
    const page = await uploads.listRecords({ prefix: Buffer.alloc(0), limit: multipartLimits(ctx).listMax });
    for (const [, record] of page.entries) {
      const state = await uploads.state(record.uploadId);
      if (state?.value.s === 'completing') {
        // A conditional complete refused at its commit opens again: the next round aborts it.
        await finishCompletion(ctx, { bucket, uploads, record }).catch((err: unknown) => {
          if (!isConditionRefusal(err)) throw err;
        });
      } else {
        if (state?.value.s === 'open') await uploads.setState(record.uploadId, state.raw, { s: 'aborting' }).catch(() => undefined);
        if ((await uploads.state(record.uploadId))?.value.s === 'completing') continue; // a complete won the race: next round
        await finishAbort(ctx, { bucket, uploads, record });
      }
    }
    if (page.entries.length === 0) break;
  }
  await ctx.services.client.transact(ctx.services.metaPool, uploads.listing, [{ type: 'remove', ifExists: true }]);
}
