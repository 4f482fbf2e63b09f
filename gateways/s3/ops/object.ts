/**
 * Object operations: PutObject, GetObject, HeadObject, DeleteObject.
 *
 * A PUT streams the verified body (gateways/s3/auth: aws-chunked framing,
 * signatures, MD5 and checksums) into a new striped object in the bucket's
 * data pool, then points the key's index entry at it with a compare-and-set;
 * the data it replaced is then removed. So an overwrite is atomic (readers
 * see the old or the new object), concurrent PUTs of one key end with the
 * last to commit, and neither leaves garbage. A GET reads the entry, then the
 * data it names; if that data was replaced meanwhile, it reads the entry again.
 * Versioned buckets (versions.ts): the commit adds a version instead of
 * replacing, GET/HEAD/DELETE take a versionId.
 *
 * Objects of at most INLINE_OBJECT_BYTES_MAX (4 KiB) declared by their
 * request are read into memory and stored in their index entry (`inline`):
 * the commit's compare-and-set writes data and entry at once, a GET reads
 * only the entry, and a replaced inline entry leaves nothing to remove.
 */
import type { IncomingMessage } from 'node:http';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32c } from '../../../src/client/checksum.js';
import type { StripedChunk, StripedRef } from '../../../src/client/striper.js';
import { isTesseraError } from '../../../src/lib/errors.js';
import { createBodyVerifier, checksumHeaderName, type ChecksumAlgorithm } from '../auth/index.js';
import type { S3Context, S3Response } from '../context.js';
import { ChunkBody } from '../chunk-body.js';
import { clientOf } from '../client-gets.js';
import type { Socket } from 'node:net';
import { authorizeBucket, freshBucket, writerOf } from '../access.js';
import { newResourceAcl } from './acl.js';
import { S3Error, s3Error } from '../errors.js';
import { BucketIndex, INLINE_OBJECT_BYTES_MAX, type IndexEntry } from '../meta/bucket-index.js';
import type { BucketRecord } from '../meta/buckets.js';
import { httpDate } from './util.js';
import { dataNamesOf, segmentsOf } from '../meta/part-table.js';
import { abandonWrite, beginWrite, type PendingWrite } from '../meta/journal.js';
import { partSelection } from './multipart-get.js';
import { commitEntry, deleteObjectResponse, requestedEntry, requestedVersion, versionIdHeader } from './versions.js';

export const PUT_BYTES_MAX = 5 * 1024 * 1024 * 1024;
export const USER_META_BYTES_MAX = 2048;
export const STORED_HEADERS = ['content-encoding', 'content-disposition', 'content-language', 'cache-control', 'expires'];
const READ_RETRIES = 3;

/** The bucket's index, with the bucket's own shard count (its record's). */
export function indexOf(ctx: S3Context, bucket: BucketRecord): BucketIndex {
  return new BucketIndex(ctx.services.client, ctx.services.metaPool, bucket);
}

export const dataPools = (ctx: S3Context, bucket: BucketRecord) => ({ manifests: ctx.services.metaPool, pieces: bucket.dataPool });

export function userMeta(ctx: S3Context): Record<string, string> {
  const meta: Record<string, string> = {};
  let bytes = 0;
  for (const [k, v] of ctx.req.headers) {
    if (!k.startsWith('x-amz-meta-')) continue;
    meta[k.slice(11)] = v;
    bytes += k.length - 11 + v.length;
  }
  if (bytes > USER_META_BYTES_MAX) throw s3Error('MetadataTooLarge', `Your metadata headers exceed the maximum allowed metadata size (${USER_META_BYTES_MAX} bytes)`);
  return meta;
}

export function storedHeaders(ctx: S3Context): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of STORED_HEADERS) {
    const v = ctx.req.headers.get(h);
    if (v !== undefined) out[h] = v;
  }
  return out;
}

/** Streams the verified request body into a new striped object; returns its entry (not yet in the index). */
export async function storeBody(ctx: S3Context, bucket: BucketRecord, dataName: string, computeChecksums: readonly ChecksumAlgorithm[] = []): Promise<Pick<IndexEntry, 'sizeBytes' | 'etag' | 'checksums' | 'dataRef'>> {
  const verifier = createBodyVerifier(ctx.auth, ctx.req.raw, { crc32c, computeChecksums });
  // pipeline (not pipe): a client that disconnects mid-body errors the verifier instead of leaving it waiting.
  void pipeline(ctx.req.raw, verifier).catch(() => undefined);
  // A byte stream (not Readable.from's default object mode, which would buffer 16 chunks of any size).
  const body = Readable.from(verifier, { objectMode: false });
  const declared = Number(ctx.req.headers.get('x-amz-decoded-content-length') ?? ctx.req.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > PUT_BYTES_MAX) throw s3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed object size.');
  const stored = await ctx.services.striper.put(dataPools(ctx, bucket), dataName, body, Number.isFinite(declared) ? { sizeBytes: declared } : {});
  const digest = verifier.result();
  if (digest.decodedLengthBytes !== stored.sizeBytes) throw s3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header.');
  return { sizeBytes: stored.sizeBytes, etag: `"${digest.md5Hex}"`, checksums: digest.checksums as Record<string, string>, dataRef: dataRefOf(stored) };
}

/** What an entry keeps of its data object's put result (dataRef). */
export const dataRefOf = (stored: StripedRef): NonNullable<IndexEntry['dataRef']> => ({ generation: stored.generation, pieceBytes: stored.pieceBytes, piecesPool: stored.piecesPool });

/** The declared body length (x-amz-decoded-content-length, else Content-Length), or NaN. */
function declaredLength(ctx: S3Context): number {
  return Number(ctx.req.headers.get('x-amz-decoded-content-length') ?? ctx.req.headers.get('content-length') ?? NaN);
}

/**
 * Reads a small verified body (declared at most INLINE_OBJECT_BYTES_MAX) into
 * memory, for an entry that holds its bytes: nothing goes to the striper.
 */
export async function readSmallBody(ctx: S3Context, declaredBytes: number): Promise<Pick<IndexEntry, 'sizeBytes' | 'etag' | 'checksums' | 'inline'>> {
  const verifier = createBodyVerifier(ctx.auth, ctx.req.raw, { crc32c });
  feedBody(ctx.req.raw, verifier);
  const { chunks, sizeBytes } = await collectBody(verifier, declaredBytes);
  const digest = verifier.result();
  if (digest.decodedLengthBytes !== sizeBytes || sizeBytes !== declaredBytes) throw s3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header.');
  return { sizeBytes, etag: `"${digest.md5Hex}"`, checksums: digest.checksums as Record<string, string>, inline: Buffer.concat(chunks, sizeBytes).toString('base64') };
}

/**
 * The verified bytes of a small body, at most declaredBytes (more: the
 * verifier is destroyed, IncompleteBody). Listens for 'data' and 'end'
 * rather than iterating the stream asynchronously (an async iterator, and a
 * promise per chunk, on every small PUT). Settles once: at the end (every
 * check passed), on the verifier's error, or when it closes without either.
 */
function collectBody(verifier: Readable, declaredBytes: number): Promise<{ chunks: Buffer[]; sizeBytes: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let sizeBytes = 0;
    const tooLong = () => s3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header.');
    verifier.on('data', (chunk: Buffer) => {
      sizeBytes += chunk.length;
      if (sizeBytes > declaredBytes) verifier.destroy(tooLong());
      else chunks.push(chunk);
    });
    let settled = false;
    verifier.once('end', () => {
      settled = true;
      resolve({ chunks, sizeBytes });
    });
    verifier.on('error', (err) => {
      settled = true;
      reject(err);
    });
    verifier.once('close', () => {
      if (!settled) reject(tooLong());
    });
  });
}

/**
 * Pipes a request body into its verifier without stream/promises' pipeline,
 * which costs an AbortController and, when it ends, a DOMException with its
 * stack per request (measurable on 4 KiB PUTs: docs/s3-api.md). As with
 * pipeline, a client that goes away before the end of its body errors the
 * verifier, so the reader does not wait; a verifier that fails stops the
 * piping, and the error answer closes the connection (gateway.ts).
 */
function feedBody(raw: IncomingMessage, verifier: Writable): void {
  raw.once('error', (err) => verifier.destroy(err));
  raw.once('close', () => {
    if (!raw.readableEnded) verifier.destroy(s3Error('IncompleteBody', 'The client closed the connection before the end of its body.'));
  });
  raw.pipe(verifier);
}

export async function putObject(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'PutObject');
  const owner = writerOf(ctx, bucket);
  const acl = await newResourceAcl(ctx, { resourceOwner: owner, bucketOwner: bucket.owner, on: 'object' });
  const key = ctx.req.key!;
  if (!ctx.req.headers.has('content-length') && !ctx.req.headers.has('x-amz-decoded-content-length') && ctx.req.headers.get('transfer-encoding') !== 'chunked') {
    throw s3Error('MissingContentLength', 'You must provide the Content-Length HTTP header.');
  }
  const meta = userMeta(ctx);
  const writeCondition = putCondition(ctx);
  const declared = declaredLength(ctx);
  // Small objects live in their index entry: no data object, so nothing to clean up on failure.
  const small = Number.isFinite(declared) && declared <= INLINE_OBJECT_BYTES_MAX;
  const dataName = small ? null : `${bucket.id}/${ctx.services.io.random.bytes(12).toString('hex')}`;
  // Journaled before a byte is stored: a gateway killed before the commit leaves a record the sweep frees it by.
  const pending = dataName === null ? null : await beginData(ctx, bucket, key, dataName);
  let stored;
  try {
    stored = dataName === null ? await readSmallBody(ctx, declared) : await storeBody(ctx, bucket, dataName);
  } catch (err) {
    if (dataName !== null) await discardData(ctx, bucket, dataName, pending);
    throw err;
  }
  if (dataName !== null) ctx.services.faultPoint?.('after-data');
  const entry: IndexEntry = {
    ...stored,
    mtimeMs: ctx.services.io.clock.nowMs(),
    data: dataName,
    owner,
    ...(acl ? { acl } : {}),
    ...(ctx.req.headers.get('content-type') ? { contentType: ctx.req.headers.get('content-type')! } : {}),
    headers: storedHeaders(ctx),
    meta,
  };
  let committed;
  try {
    committed = await commitEntry(ctx, bucket, key, entry, writeCondition, pending);
  } catch (err) {
    if (dataName !== null) await discardData(ctx, bucket, dataName, pending);
    throw err;
  }
  const headers: Record<string, string> = { etag: entry.etag, ...committed.headers };
  for (const [alg, v] of Object.entries(entry.checksums ?? {})) if (ctx.req.headers.has(checksumHeaderName(alg as ChecksumAlgorithm)) || ctx.req.headers.get('x-amz-sdk-checksum-algorithm')?.toLowerCase() === alg) headers[checksumHeaderName(alg as ChecksumAlgorithm)] = v;
  return { status: 200, headers };
}

/**
 * Conditional writes (If-None-Match: *, If-Match: <etag>), decided with the
 * commit's compare-and-set, so two conditional PUTs of a new key cannot both
 * win. If-None-Match with anything but "*" is NotImplemented, as S3.
 */
export function putCondition(ctx: S3Context): ((current: IndexEntry | null) => void) | undefined {
  const given = writeConditionOf(ctx);
  return given ? checkWriteCondition(ctx.req.key!, given) : undefined;
}

/** A write's conditions as data (kept in a multipart completion plan, so whoever finishes it applies them). */
export interface WriteCondition {
  ifNoneMatch?: true;
  ifMatch?: string;
}

/** The request's If-None-Match: * / If-Match, or null; If-None-Match with an ETag is NotImplemented, as S3. */
export function writeConditionOf(ctx: S3Context): WriteCondition | null {
  const ifMatch = ctx.req.headers.get('if-match');
  const ifNoneMatch = ctx.req.headers.get('if-none-match');
  if (ifMatch === undefined && ifNoneMatch === undefined) return null;
  if (ifNoneMatch !== undefined && ifNoneMatch.trim() !== '*') throw s3Error('NotImplemented', 'If-None-Match on a write only takes "*".');
  return { ...(ifNoneMatch !== undefined ? { ifNoneMatch: true as const } : {}), ...(ifMatch !== undefined ? { ifMatch } : {}) };
}

/** The check of a write condition against the key's current object (null: none), for commitEntry. */
export function checkWriteCondition(key: string, c: WriteCondition): (current: IndexEntry | null) => void {
  return (current) => {
    if (c.ifNoneMatch && current) throw s3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-None-Match' });
    if (c.ifMatch !== undefined) {
      if (!current) throw s3Error('NoSuchKey', 'The specified key does not exist.', { Key: key });
      if (!etagMatches(c.ifMatch, current.etag)) throw s3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Match' });
    }
  };
}

/** Journals the data object a write is about to store for key (meta/journal.ts), before any byte of it. */
export function beginData(ctx: S3Context, bucket: BucketRecord, key: string, dataName: string): Promise<PendingWrite> {
  return beginWrite(indexOf(ctx, bucket), key, dataName, ctx.services.io.clock.nowMs());
}

/** A write that failed before (or at) its commit: its data goes, then its journal record. */
export async function discardData(ctx: S3Context, bucket: BucketRecord, dataName: string, pending: PendingWrite | null): Promise<void> {
  await ctx.services.striper.remove(dataPools(ctx, bucket), dataName).catch(() => undefined);
  await abandonWrite(indexOf(ctx, bucket), pending);
}

/** Removes the data an index entry pointed to (it was replaced or deleted). */
export async function removeData(ctx: S3Context, bucket: BucketRecord, entry: IndexEntry | null): Promise<void> {
  if (!entry) return;
  const names = await dataNamesOf(ctx.services.striper, dataPools(ctx, bucket), entry);
  for (const name of names) {
    await ctx.services.striper.remove(dataPools(ctx, bucket), name).catch((err: unknown) => {
      if (!isTesseraError(err, 'NotFound')) console.error(`s3: could not remove replaced data ${name}: ${(err as Error).message}`);
    });
  }
}

const invalidRange = (range: string, sizeBytes: number) =>
  s3Error('InvalidRange', 'The requested range is not satisfiable', { RangeRequested: range, ActualObjectSize: String(sizeBytes) }, { 'content-range': `bytes */${sizeBytes}` });

function parseRange(header: string | undefined, sizeBytes: number): { start: number; end: number } | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null; // S3 ignores a malformed Range
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) throw invalidRange(header, sizeBytes);
    start = Math.max(0, sizeBytes - suffix);
    end = sizeBytes - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? sizeBytes - 1 : Math.min(Number(m[2]), sizeBytes - 1);
    if (m[2] !== '' && Number(m[2]) < start) return null;
  }
  if (start >= sizeBytes) throw invalidRange(header, sizeBytes);
  return { start, end };
}

export function etagMatches(list: string, etag: string): boolean {
  return list.split(',').some((t) => {
    const v = t.trim();
    return v === '*' || v === etag || `"${v}"` === etag;
  });
}

/** If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, in S3's order of precedence. */
function checkConditions(ctx: S3Context, entry: IndexEntry): void {
  const h = ctx.req.headers;
  const ifMatch = h.get('if-match');
  const ifNoneMatch = h.get('if-none-match');
  const since = h.get('if-modified-since');
  const unmodifiedSince = h.get('if-unmodified-since');
  const mtimeS = Math.floor(entry.mtimeMs / 1000);
  const notModified = () => s3Error('NotModified', 'Not Modified', {}, { etag: entry.etag, 'last-modified': httpDate(entry.mtimeMs) });
  if (ifMatch !== undefined && !etagMatches(ifMatch, entry.etag)) throw s3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Match' });
  if (ifMatch === undefined && unmodifiedSince !== undefined) {
    const t = Date.parse(unmodifiedSince);
    if (!Number.isNaN(t) && mtimeS > Math.floor(t / 1000)) throw s3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Unmodified-Since' });
  }
  if (ifNoneMatch !== undefined && etagMatches(ifNoneMatch, entry.etag)) throw notModified();
  if (ifNoneMatch === undefined && since !== undefined) {
    const t = Date.parse(since);
    if (!Number.isNaN(t) && mtimeS <= Math.floor(t / 1000)) throw notModified();
  }
}

function objectHeaders(ctx: S3Context, entry: IndexEntry, ranged: boolean): Record<string, string | number> {
  const headers: Record<string, string | number> = {
    etag: entry.etag,
    'last-modified': httpDate(entry.mtimeMs),
    'content-type': entry.contentType ?? 'binary/octet-stream',
    'accept-ranges': 'bytes',
  };
  const stored = entry.headers;
  if (stored) for (const k in stored) headers[k] = stored[k]!;
  const meta = entry.meta;
  if (meta) for (const k in meta) headers[`x-amz-meta-${k}`] = meta[k]!;
  // Whole-object checksums describe whole objects: a ranged answer carries none (as S3).
  if (!ranged && ctx.req.headers.get('x-amz-checksum-mode')?.toUpperCase() === 'ENABLED') {
    for (const [alg, v] of Object.entries(entry.checksums ?? {})) headers[checksumHeaderName(alg as ChecksumAlgorithm)] = v;
    if (entry.checksumType) headers['x-amz-checksum-type'] = entry.checksumType;
  }
  if (ctx.req.query.size > 0) {
    for (const [param, header] of RESPONSE_HEADER_PARAMS) {
      const v = ctx.req.query.get(param);
      if (v === undefined) continue;
      // What HTTP cannot carry in a header (a line break: header injection) is refused, not sent.
      if (INVALID_HEADER_CHAR.test(v)) throw s3Error('InvalidArgument', `${param} holds a character a header cannot carry.`, { ArgumentName: param });
      headers[header] = v;
    }
  }
  return headers;
}

/** Node's own test of a header value (_http_common's checkInvalidHeaderChar). */
const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/;

/** Query parameters of a GET/HEAD that set a response header (S3's response-* overrides). */
const RESPONSE_HEADER_PARAMS = [
  ['response-content-type', 'content-type'],
  ['response-content-language', 'content-language'],
  ['response-expires', 'expires'],
  ['response-cache-control', 'cache-control'],
  ['response-content-disposition', 'content-disposition'],
  ['response-content-encoding', 'content-encoding'],
] as const;

/**
 * The key's current entry (or the version asked for) if the caller may read it
 * (NoSuchKey, or AccessDenied to a caller who may not list the bucket), and the
 * bucket record it was decided with. The record may be cached (access.ts); a
 * refusal is decided again with the current record when that differs.
 */
async function currentEntry(ctx: S3Context, bucket: BucketRecord): Promise<{ bucket: BucketRecord; entry: IndexEntry }> {
  const read = (b: BucketRecord) => requestedEntry(ctx, { bucket: b, key: ctx.req.key!, versionId: requestedVersion(ctx), action: ctx.req.method === 'HEAD' ? 'HeadObject' : 'GetObject' });
  try {
    return { bucket, entry: await read(bucket) };
  } catch (err) {
    if (!(err instanceof S3Error) || !['NoSuchKey', 'NoSuchVersion', 'AccessDenied'].includes(err.code)) throw err;
    const fresh = await freshBucket(ctx, bucket);
    if (!fresh) throw err;
    return { bucket: fresh, entry: await read(fresh) };
  }
}

export async function headObject(ctx: S3Context): Promise<S3Response> {
  const { bucket, entry } = await currentEntry(ctx, await authorizeBucket(ctx, 'HeadObject'));
  checkConditions(ctx, entry);
  const part = await partSelection(ctx, ctx.services.striper, dataPools(ctx, bucket), entry);
  const range = part ?? parseRange(ctx.req.headers.get('range'), entry.sizeBytes);
  const headers: Record<string, string | number> = Object.assign(objectHeaders(ctx, entry, range !== null), versionIdHeader(bucket, entry), part?.headers);
  if (range) {
    headers['content-range'] = `bytes ${range.start}-${range.end}/${entry.sizeBytes}`;
    headers['content-length'] = range.end - range.start + 1;
    return { status: 206, headers };
  }
  headers['content-length'] = entry.sizeBytes;
  return { status: 200, headers };
}

/** The bytes [start, end] of an object, across its parts when multipart. */
export async function* objectBytes(ctx: S3Context, bucket: BucketRecord, entry: IndexEntry, start: number, end: number): AsyncGenerator<Buffer> {
  if (entry.inline !== undefined) {
    yield Buffer.from(entry.inline, 'base64').subarray(start, end + 1);
    return;
  }
  const pools = dataPools(ctx, bucket);
  // A single data object whose generation the entry names: its pieces are read straight away (no manifest read).
  if (entry.dataRef && entry.data !== null && !entry.parts) {
    yield* ctx.services.striper.getAt(pools, entry.data, { ...entry.dataRef, sizeBytes: entry.sizeBytes }, { offsetBytes: start, lengthBytes: end - start + 1 });
    return;
  }
  const segments = await segmentsOf(ctx.services.striper, pools, entry);
  let base = 0;
  for (const part of segments) {
    const partEnd = base + part.sizeBytes - 1;
    if (partEnd >= start && base <= end) {
      const from = Math.max(start, base) - base;
      const to = Math.min(end, partEnd) - base;
      yield* ctx.services.striper.get(pools, part.data, { offsetBytes: from, lengthBytes: to - from + 1 });
    }
    base += part.sizeBytes;
    if (base > end) break;
  }
}

/**
 * objectBytes as chunks that lend their memory (GetObject's body): a single
 * data object named by generation is read into the striper's reused buffers
 * (chunksAt), given back when the response has written them; anything else
 * (multipart, older entries) is objectBytes' fresh buffers, nothing to give back.
 */
async function* objectChunks(ctx: S3Context, bucket: BucketRecord, entry: IndexEntry, start: number, end: number): AsyncGenerator<StripedChunk> {
  if (entry.dataRef && entry.data !== null && !entry.parts && entry.inline === undefined) {
    const ref = { ...entry.dataRef, sizeBytes: entry.sizeBytes };
    yield* ctx.services.striper.chunksAt(dataPools(ctx, bucket), entry.data, ref, { offsetBytes: start, lengthBytes: end - start + 1 });
    return;
  }
  for await (const data of objectBytes(ctx, bucket, entry, start, end)) yield { data, release: NOTHING_LENT };
}

const NOTHING_LENT = (): void => {};

export async function getObject(ctx: S3Context): Promise<S3Response> {
  // This GET's slot among its client's GET responses in flight (client-gets.ts), taken before any data is read and
  // given back when the response ends (the ChunkBody's end), or here if it fails first. Its turn is taken now,
  // before any await: pipelined GETs on one connection take their slots in the order they arrived.
  const turn = ctx.services.clientGets.arrive(ctx.req.raw.socket as Socket | null);
  const slot: { giveBack: (() => void) | null } = { giveBack: null };
  const take = async (): Promise<() => void> => (slot.giveBack ??= await turn.take(clientOf(ctx.auth, ctx.req.remote)));
  let res: S3Response;
  try {
    res = await getObjectBody(ctx, take);
  } catch (err) {
    slot.giveBack?.();
    throw err;
  } finally {
    turn.done();
  }
  // A retry that found the object replaced by an inline one answers from memory: nothing to hold.
  if (!(res.body instanceof ChunkBody)) slot.giveBack?.();
  return res;
}

/** GetObject; `takeSlot` takes this GET's slot (waits, then SlowDown, when its client has too many in flight) before data is read. */
async function getObjectBody(ctx: S3Context, takeSlot: () => Promise<() => void>): Promise<S3Response> {
  let bucket = await authorizeBucket(ctx, 'GetObject');
  for (let attempt = 0; ; attempt++) {
    let entry: IndexEntry;
    ({ bucket, entry } = await currentEntry(ctx, bucket));
    checkConditions(ctx, entry);
    const part = await partSelection(ctx, ctx.services.striper, dataPools(ctx, bucket), entry);
    const range = part ?? parseRange(ctx.req.headers.get('range'), entry.sizeBytes);
    const start = range?.start ?? 0;
    const end = range?.end ?? entry.sizeBytes - 1;
    const headers: Record<string, string | number> = Object.assign(objectHeaders(ctx, entry, range !== null), versionIdHeader(bucket, entry), part?.headers);
    headers['content-length'] = Math.max(0, end - start + 1);
    if (range) headers['content-range'] = `bytes ${start}-${end}/${entry.sizeBytes}`;
    if (entry.sizeBytes === 0) return { status: 200, headers, body: Buffer.alloc(0) };
    // An inline object's bytes came with its entry: one buffer, sent with the headers in one write (no stream to set up).
    if (entry.inline !== undefined) return { status: range ? 206 : 200, headers, body: Buffer.from(entry.inline, 'base64').subarray(start, end + 1) };
    const giveBack = await takeSlot();
    // Read the first piece before answering: a replaced object (its data removed) is retried from the index.
    const chunks = objectChunks(ctx, bucket, entry, start, end);
    let first: IteratorResult<StripedChunk>;
    try {
      first = await chunks.next();
    } catch (err) {
      if (isTesseraError(err, 'NotFound') || isTesseraError(err, 'Conflict')) {
        if (attempt < READ_RETRIES) continue;
        // Replaced under every attempt: a retryable 503, never the 412 a Conflict maps to (this GET set no condition).
        throw s3Error('SlowDown', 'The object was replaced while it was being read; please retry.');
      }
      throw err;
    }
    // The range is not empty, so a chunk came (the striper yields none empty).
    if (first.done) throw new Error(`GetObject: no bytes for a range of ${end - start + 1}`);
    // Written chunk by chunk with backpressure: at most one chunk beyond the striper's read-ahead, each given back
    // (its buffer reused) once the socket has written it.
    return { status: range ? 206 : 200, headers, body: new ChunkBody(first.value, chunks, giveBack) };
  }
}

export async function deleteObject(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'DeleteObject');
  return deleteObjectResponse(ctx, bucket);
}

