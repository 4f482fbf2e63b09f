/**
 * ListObjects (v1) and ListObjectsV2: prefix, delimiter and common prefixes,
 * marker / start-after / continuation-token, max-keys, encoding-type=url,
 * fetch-owner; keys in UTF-8 byte order (the bucket index's order). Common
 * prefixes are found by skipping: after a prefix is seen, the scan of the
 * index shards (BucketIndex.scan) skips everything under it, within each
 * shard's buffered page where it can.
 */
import type { S3Context, S3Response } from '../context.js';
import { authorizeBucket } from '../access.js';
import { s3Error } from '../errors.js';
import { xmlDocument, type XmlNode } from '../xml.js';
import { indexOf } from './object.js';
import { displayNames, isoDate, ownerXml, xmlHeaders } from './util.js';
import type { IndexEntry } from '../meta/bucket-index.js';

const MAX_KEYS = 1000;
/** A shard is read at most PAGE + 1 entries at a time (fewer when the bucket has many shards: BucketIndex.scan). */
const PAGE = 1000;

interface Listing {
  contents: Array<[string, IndexEntry]>;
  prefixes: string[];
  truncated: boolean;
  /** The last key or prefix returned: where the next page starts after. */
  last: string | null;
}

const isDeleteMarker = (e: IndexEntry): boolean => e.data === null && !e.parts && e.inline === undefined;

async function list(ctx: S3Context, o: { prefix: string; delimiter: string; after: string; maxKeys: number }): Promise<Listing> {
  const bucket = await authorizeBucket(ctx, 'ListObjects');
  const out: Listing = { contents: [], prefixes: [], truncated: false, last: null };
  if (o.maxKeys === 0) return out;
  const scan = indexOf(ctx, bucket).scan({ prefix: o.prefix, ...(o.after ? { after: o.after } : {}), pageEntriesMax: PAGE + 1 });
  // A marker that is a common prefix of this listing (a previous page ended with it: its NextContinuationToken or
  // NextMarker) resumes past every key under it, as S3 does; from the prefix itself, the page would list it again.
  // (indexOf's -1 must not pass for a marker one character shorter than a longer delimiter.)
  const delimiterAt = o.delimiter && o.after && o.after.startsWith(o.prefix) ? o.after.indexOf(o.delimiter, o.prefix.length) : -1;
  if (delimiterAt >= 0 && delimiterAt === o.after.length - o.delimiter.length) scan.skipPrefix(o.after);
  for (;;) {
    const next = await scan.next();
    if (!next) return out;
    const [key, entry] = next;
    if (isDeleteMarker(entry)) continue;
    if (out.contents.length + out.prefixes.length >= o.maxKeys) {
      out.truncated = true;
      return out;
    }
    const at = o.delimiter ? key.indexOf(o.delimiter, o.prefix.length) : -1;
    if (at >= 0) {
      const common = key.slice(0, at + o.delimiter.length);
      out.prefixes.push(common);
      out.last = common;
      scan.skipPrefix(common); // the rest under it, in each shard's page first: only shards whose page runs out read again
      continue;
    }
    out.contents.push([key, entry]);
    out.last = key;
  }
}

/**
 * A key, prefix or marker as a listing shows it: percent-encoded (UTF-8,
 * '/' kept) with encoding-type=url, which lets XML carry keys with control
 * characters. Any other encoding-type is InvalidArgument, as S3.
 */
export function enc(ctx: S3Context, s: string): string {
  const type = ctx.req.query.get('encoding-type');
  if (type === undefined) return s;
  if (type !== 'url') throw s3Error('InvalidArgument', 'Invalid Encoding Method specified in Request', { ArgumentName: 'encoding-type', ArgumentValue: type });
  return encodeURIComponent(s).replace(/%2F/g, '/');
}

export function maxKeys(ctx: S3Context): number {
  const v = ctx.req.query.get('max-keys');
  if (v === undefined) return MAX_KEYS;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw s3Error('InvalidArgument', 'max-keys must be a non-negative integer');
  return Math.min(n, MAX_KEYS);
}

async function contentsXml(ctx: S3Context, contents: Array<[string, IndexEntry]>, withOwner: boolean): Promise<XmlNode[]> {
  const names = withOwner ? await displayNames(ctx, contents.map(([, e]) => e.owner)) : new Map<string, string>();
  return contents.map(([key, e]) => ({
    Key: enc(ctx, key),
    LastModified: isoDate(e.mtimeMs),
    ETag: e.etag,
    Size: e.sizeBytes,
    StorageClass: 'STANDARD',
    ...(withOwner ? { Owner: ownerXml(names, e.owner) } : {}),
  }));
}

export async function listObjectsV2(ctx: S3Context): Promise<S3Response> {
  const q = ctx.req.query;
  const prefix = q.get('prefix') ?? '';
  const delimiter = q.get('delimiter') ?? '';
  const token = q.get('continuation-token');
  let after = q.get('start-after') ?? '';
  if (token !== undefined) {
    try {
      after = Buffer.from(token, 'base64url').toString('utf8');
    } catch {
      throw s3Error('InvalidArgument', 'The continuation token provided is incorrect');
    }
  }
  const mk = maxKeys(ctx);
  const r = await list(ctx, { prefix, delimiter, after, maxKeys: mk });
  const body: XmlNode = {
    Name: ctx.req.bucket!,
    Prefix: enc(ctx, prefix),
    ...(q.has('start-after') ? { StartAfter: enc(ctx, q.get('start-after')!) } : {}),
    ...(token !== undefined ? { ContinuationToken: token } : {}),
    KeyCount: r.contents.length + r.prefixes.length,
    MaxKeys: mk,
    ...(delimiter ? { Delimiter: enc(ctx, delimiter) } : {}),
    IsTruncated: r.truncated,
    ...(r.truncated && r.last !== null ? { NextContinuationToken: Buffer.from(r.last).toString('base64url') } : {}),
    ...(q.get('encoding-type') === 'url' ? { EncodingType: 'url' } : {}),
    Contents: await contentsXml(ctx, r.contents, q.get('fetch-owner') === 'true'),
    CommonPrefixes: r.prefixes.map((p) => ({ Prefix: enc(ctx, p) })),
  };
  return { status: 200, headers: xmlHeaders, body: xmlDocument('ListBucketResult', body) };
}

export async function listObjectsV1(ctx: S3Context): Promise<S3Response> {
  const q = ctx.req.query;
  const prefix = q.get('prefix') ?? '';
  const delimiter = q.get('delimiter') ?? '';
  const marker = q.get('marker') ?? '';
  const mk = maxKeys(ctx);
  const r = await list(ctx, { prefix, delimiter, after: marker, maxKeys: mk });
  const body: XmlNode = {
    Name: ctx.req.bucket!,
    Prefix: enc(ctx, prefix),
    Marker: enc(ctx, marker),
    MaxKeys: mk,
    ...(delimiter ? { Delimiter: enc(ctx, delimiter) } : {}),
    IsTruncated: r.truncated,
    ...(r.truncated && delimiter && r.last !== null ? { NextMarker: enc(ctx, r.last) } : {}),
    ...(q.get('encoding-type') === 'url' ? { EncodingType: 'url' } : {}),
    Contents: await contentsXml(ctx, r.contents, true),
    CommonPrefixes: r.prefixes.map((p) => ({ Prefix: enc(ctx, p) })),
  };
  return { status: 200, headers: xmlHeaders, body: xmlDocument('ListBucketResult', body) };
}
