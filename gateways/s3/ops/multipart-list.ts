/**
 * ListParts (part-number-marker, max-parts) and ListMultipartUploads
 * (prefix, delimiter with common prefixes, key-marker, upload-id-marker,
 * max-uploads, encoding-type=url). Uploads list by key in UTF-8 byte order,
 * then by upload id (which starts with the creation time), as the bucket's
 * uploads object keeps them (meta/uploads.ts).
 */
import { authorizeBucket } from '../access.js';
import type { S3Context, S3Response } from '../context.js';
import { s3Error } from '../errors.js';
import type { UploadRecord } from '../meta/uploads.js';
import { uploadKey } from '../meta/uploads.js';
import { xmlDocument, type XmlNode } from '../xml.js';
import { enc } from './list.js';
import { checksumElement } from './multipart-checksum.js';
import { multipartLimits, requireUpload, uploadsOf } from './multipart.js';
import { displayNames, isoDate, ownerXml, xmlHeaders } from './util.js';

/** A non-negative integer query parameter, or InvalidArgument. */
function intParam(ctx: S3Context, name: string, fallback: number): number {
  const v = ctx.req.query.get(name);
  if (v === undefined) return fallback;
  const n = /^\d{1,9}$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n)) throw s3Error('InvalidArgument', `Provided ${name} not an integer or within integer range`, { ArgumentName: name, ArgumentValue: v });
  return n;
}

function checksumFields(record: UploadRecord): XmlNode {
  return record.checksum.defaulted ? {} : { ChecksumAlgorithm: record.checksum.algorithm.toUpperCase(), ChecksumType: record.checksum.type };
}

export async function listParts(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'ListParts');
  const uploads = uploadsOf(ctx, bucket);
  const record = await requireUpload(ctx, uploads);
  const limits = multipartLimits(ctx);
  const marker = intParam(ctx, 'part-number-marker', 0);
  const maxParts = Math.min(intParam(ctx, 'max-parts', limits.listMax), limits.listMax);
  const page = maxParts === 0 ? { parts: [], more: false } : await uploads.listParts(record.uploadId, { after: Math.min(marker, 99_999), limit: maxParts });
  const names = await displayNames(ctx, [record.initiator, record.owner]);
  const alg = record.checksum.algorithm;
  const last = page.parts[page.parts.length - 1];
  const body: XmlNode = {
    Bucket: bucket.name,
    Key: record.key,
    UploadId: record.uploadId,
    Initiator: ownerXml(names, record.initiator),
    Owner: ownerXml(names, record.owner),
    StorageClass: 'STANDARD',
    PartNumberMarker: marker,
    ...(last ? { NextPartNumberMarker: last.partNumber } : {}),
    MaxParts: maxParts,
    IsTruncated: page.more,
    ...checksumFields(record),
    Part: page.parts.map((p) => ({
      PartNumber: p.partNumber,
      LastModified: isoDate(p.mtimeMs),
      ETag: p.etag,
      Size: p.sizeBytes,
      ...(!record.checksum.defaulted && p.checksums[alg] ? { [checksumElement(alg)]: p.checksums[alg] } : {}),
    })),
  };
  return { status: 200, headers: xmlHeaders, body: xmlDocument('ListPartsResult', body) };
}

/** A bound past every listing key of keys starting with p (0xff never occurs in UTF-8). */
const pastPrefix = (p: string): Buffer => Buffer.concat([Buffer.from(p, 'utf8'), Buffer.from([0xff])]);

export async function listMultipartUploads(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'ListMultipartUploads');
  const q = ctx.req.query;
  const limits = multipartLimits(ctx);
  const prefix = q.get('prefix') ?? '';
  const delimiter = q.get('delimiter') ?? '';
  const keyMarker = q.get('key-marker') ?? '';
  const uploadIdMarker = keyMarker ? (q.get('upload-id-marker') ?? '') : '';
  const maxUploads = Math.min(intParam(ctx, 'max-uploads', limits.listMax), limits.listMax);
  const uploads = uploadsOf(ctx, bucket);
  const found: UploadRecord[] = [];
  const prefixes: string[] = [];
  let truncated = false;
  // After the marker: that key's uploads after the upload-id marker, or past the key altogether.
  let after: Buffer | undefined = keyMarker ? (uploadIdMarker ? uploadKey(keyMarker, uploadIdMarker) : pastPrefix(`${keyMarker}\0`)) : undefined;
  let lastKey: string | null = null;
  let lastUpload: string | null = null;
  scan: while (maxUploads > 0) {
    const page = await uploads.listRecords({ prefix: Buffer.from(prefix, 'utf8'), ...(after ? { after } : {}), limit: Math.min(1000, maxUploads + 1) });
    for (const [k, record] of page.entries) {
      const at = delimiter ? record.key.indexOf(delimiter, prefix.length) : -1;
      const common = at >= 0 ? record.key.slice(0, at + delimiter.length) : null;
      if (common !== null && Buffer.compare(Buffer.from(common), Buffer.from(keyMarker)) <= 0 && keyMarker.startsWith(common)) {
        after = pastPrefix(common); // reported on an earlier page
        continue scan;
      }
      if (found.length + prefixes.length >= maxUploads) {
        truncated = true;
        break scan;
      }
      if (common !== null) {
        prefixes.push(common);
        lastKey = common;
        lastUpload = null;
        after = pastPrefix(common);
        continue scan;
      }
      found.push(record);
      lastKey = record.key;
      lastUpload = record.uploadId;
      after = k;
    }
    if (!page.more) break;
  }
  const names = await displayNames(ctx, found.flatMap((u) => [u.initiator, u.owner]));
  const body: XmlNode = {
    Bucket: bucket.name,
    KeyMarker: enc(ctx, keyMarker),
    UploadIdMarker: uploadIdMarker,
    ...(truncated && lastKey !== null ? { NextKeyMarker: enc(ctx, lastKey), NextUploadIdMarker: lastUpload ?? '' } : {}),
    ...(delimiter ? { Delimiter: enc(ctx, delimiter) } : {}),
    Prefix: enc(ctx, prefix),
    MaxUploads: maxUploads,
    IsTruncated: truncated,
    Upload: found.map((u) => ({
      Key: enc(ctx, u.key),
      UploadId: u.uploadId,
      Initiator: ownerXml(names, u.initiator),
      Owner: ownerXml(names, u.owner),
      StorageClass: 'STANDARD',
      Initiated: isoDate(u.initiatedMs),
      ...checksumFields(u),
    })),
    CommonPrefixes: prefixes.map((p) => ({ Prefix: enc(ctx, p) })),
    ...(q.get('encoding-type') === 'url' ? { EncodingType: 'url' } : {}),
  };
  return { status: 200, headers: xmlHeaders, body: xmlDocument('ListMultipartUploadsResult', body) };
}
