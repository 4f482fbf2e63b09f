/**
 * DeleteObjects: POST /bucket?delete with a <Delete> document of at most 1000
 * <Object><Key/><VersionId/></Object> and an optional <Quiet>.
 *
 * The body is read through the body verifier, and S3 requires it to carry an
 * integrity check: Content-MD5, or an x-amz-checksum-* value (header or
 * trailer; current SDKs send x-amz-checksum-crc32 and no Content-MD5). Keys
 * are taken verbatim: whitespace kept, XML character references decoded (the
 * SDKs write line breaks in keys as &#x0A;). Each key is deleted as a DELETE
 * would (versions.ts deleteKey), a bounded number at a time; a key's failure
 * is an <Error> entry, never the whole request's. Quiet answers list only
 * errors.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { S3Context, S3Response } from '../context.js';
import { authorizeBucket } from '../access.js';
import { checksumAlgorithmOfHeader } from '../auth/checksums.js';
import { s3Error, toS3Error } from '../errors.js';
import { isVersionId } from '../meta/versions.js';
import { KEY_BYTES_MAX } from '../request.js';
import type { Operation } from '../router.js';
import { xmlDocumentOrdered, type XmlValue } from '../xml.js';
import { readVerifiedBody, xmlHeaders } from './util.js';
import { deleteKey, type DeleteOutcome } from './versions.js';

export const DELETE_OBJECTS_KEYS_MAX = 1000;
/** 1000 keys of 1024 bytes, escaped, with their version ids and the markup. */
export const DELETE_OBJECTS_BODY_BYTES_MAX = 2 * 1024 * 1024;
/** Keys deleted at once. */
const DELETE_CONCURRENCY = 16;

interface Target {
  key: string;
  versionId: string | null;
}

const parser = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false,
  trimValues: false,
  processEntities: false,
  isArray: (_name, jpath) => jpath === 'Delete.Object',
});

const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Decodes XML's five named entities and numeric character references, in one pass. */
function xmlText(raw: string): string {
  return raw.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|amp|lt|gt|quot|apos);/g, (_m, ref: string) => {
    if (ref[0] !== '#') return named[ref]!;
    const code = ref[1] === 'x' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
    if (code > 0x10ffff || code === 0) throw s3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.');
    return String.fromCodePoint(code);
  });
}

const malformed = (why: string) => s3Error('MalformedXML', `The XML you provided was not well-formed or did not validate against our published schema (${why}).`);

export function parseDeleteDocument(body: Buffer): { targets: Target[]; quiet: boolean } {
  const text = body.toString('utf8');
  if (text.trim().length === 0 || XMLValidator.validate(text) !== true) throw malformed('not well-formed');
  const doc = (parser.parse(text) as Record<string, unknown>).Delete;
  if (typeof doc !== 'object' || doc === null) throw malformed('expected a Delete document');
  const { Object: objects = [], Quiet: quiet } = doc as { Object?: unknown[]; Quiet?: unknown };
  if (objects.length === 0) throw malformed('no Object');
  if (objects.length > DELETE_OBJECTS_KEYS_MAX) throw malformed(`more than ${DELETE_OBJECTS_KEYS_MAX} keys`);
  const targets = objects.map((o): Target => {
    if (typeof o !== 'object' || o === null || typeof (o as { Key?: unknown }).Key !== 'string') throw malformed('an Object without a Key');
    const { Key, VersionId } = o as { Key: string; VersionId?: unknown };
    const key = xmlText(Key);
    if (key === '') throw malformed('an empty Key');
    if (VersionId !== undefined && typeof VersionId !== 'string') throw malformed('a VersionId that is not text');
    return { key, versionId: VersionId === undefined ? null : xmlText(VersionId).trim() };
  });
  const q = typeof quiet === 'string' ? quiet.trim().toLowerCase() : '';
  if (quiet !== undefined && q !== 'true' && q !== 'false') throw malformed('Quiet must be true or false');
  return { targets, quiet: q === 'true' };
}

/** Whether the request carries Content-MD5 or a checksum value (which the body verifier has checked). */
function hasIntegrityCheck(ctx: S3Context): boolean {
  const h = ctx.req.headers;
  if (h.has('content-md5')) return true;
  for (const name of h.keys()) if (name.startsWith('x-amz-checksum-') && checksumAlgorithmOfHeader(name) !== null) return true;
  const trailer = h.get('x-amz-trailer');
  return trailer !== undefined && trailer.split(',').some((t) => checksumAlgorithmOfHeader(t.trim().toLowerCase()) !== null);
}

type Result = { target: Target; outcome: DeleteOutcome } | { target: Target; error: { code: string; message: string } };

async function deleteOne(ctx: S3Context, bucket: Parameters<typeof deleteKey>[1], target: Target): Promise<Result> {
  try {
    if (Buffer.byteLength(target.key) > KEY_BYTES_MAX) throw s3Error('KeyTooLongError', `Your key is too long (max ${KEY_BYTES_MAX} bytes)`);
    if (target.key.includes('\0')) throw s3Error('InvalidArgument', 'Object keys may not contain the NUL character');
    if (target.versionId !== null && !isVersionId(target.versionId)) throw s3Error('NoSuchVersion', 'The specified version does not exist.');
    return { target, outcome: await deleteKey(ctx, bucket, target.key, target.versionId) };
  } catch (err) {
    const { error, internal } = toS3Error(err);
    if (internal) console.error(`s3: DeleteObjects ${bucket.name}/${target.key}: ${(err as Error)?.stack ?? err}`);
    return { target, error: { code: error.code, message: error.message } };
  }
}

export async function deleteObjects(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'DeleteObjects');
  const body = await readVerifiedBody(ctx, DELETE_OBJECTS_BODY_BYTES_MAX);
  if (!hasIntegrityCheck(ctx)) throw s3Error('InvalidRequest', 'Missing required header for this request: Content-MD5 or x-amz-checksum-*');
  const { targets, quiet } = parseDeleteDocument(body);
  const results: Result[] = new Array(targets.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < targets.length; i = next++) results[i] = await deleteOne(ctx, bucket, targets[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(DELETE_CONCURRENCY, targets.length) }, worker));
  const children: Array<readonly [string, XmlValue]> = [];
  for (const r of results) {
    const base = { Key: r.target.key, ...(r.target.versionId !== null ? { VersionId: r.target.versionId } : {}) };
    if ('error' in r) children.push(['Error', { ...base, Code: r.error.code, Message: r.error.message }]);
    else if (!quiet) {
      const marker = r.outcome.deleteMarker ? { DeleteMarker: true, ...(r.outcome.versionId !== undefined ? { DeleteMarkerVersionId: r.outcome.versionId } : {}) } : {};
      children.push(['Deleted', { ...base, ...marker }]);
    }
  }
  return { status: 200, headers: xmlHeaders, body: xmlDocumentOrdered('DeleteResult', children) };
}

export function deleteObjectsRoute(ctx: S3Context): Operation | null {
  const { method, bucket, key, query } = ctx.req;
  if (method !== 'POST' || !bucket || key !== null || !query.has('delete')) return null;
  return deleteObjects;
}
