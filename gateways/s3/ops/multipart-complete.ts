/**
 * CompleteMultipartUpload (docs/s3-multipart.md, "Complete").
 *
 * 1. Plan: the requested parts are checked against the records (InvalidPart,
 *    InvalidPartOrder, EntityTooSmall, checksums, sizes); the ETag, size,
 *    checksum and modification time are fixed.
 * 2. Decide: the upload's state moves from open to completing with the plan
 *    (compare-and-set): no part can change after this, and any later request
 *    (a client's retry, an Abort, another gateway) finishes the same object.
 * 3. Commit: ONE index entry naming the parts' data objects (no byte is
 *    copied; long part lists go to a part table, meta/part-table.ts), through
 *    versions.ts commitEntry like every write; then the plan is marked
 *    committed.
 * 4. Clean up: the data of parts not used, and of 'd' entries, is removed,
 *    then the upload's object, then its listing record.
 *
 * A request that finds the state already completing (its gateway died, or
 * the client retried) resumes at 3: it commits unless the index shows the
 * object committed (its entry carries the upload id) or superseded (a later
 * write, or the parts' data already removed by the write that replaced it).
 */
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { crc32c } from '../../../src/client/checksum.js';
import { TesseraError, isTesseraError } from '../../../src/lib/errors.js';
import { authorizeBucket } from '../access.js';
import { checksumAlgorithms, createBodyVerifier, type ChecksumAlgorithm } from '../auth/index.js';
import type { S3Context, S3Response } from '../context.js';
import { S3Error, s3Error } from '../errors.js';
import type { IndexEntry } from '../meta/bucket-index.js';
import type { BucketRecord } from '../meta/buckets.js';
import { writePartTable, type PartRef } from '../meta/part-table.js';
import type { CompletionPlan, PartRecord, UploadContents, UploadRecord, UploadStore } from '../meta/uploads.js';
import { parseXmlDocument, xmlDocument, xmlList } from '../xml.js';
import { checksumElement, objectChecksum } from './multipart-checksum.js';
import { multipartLimits, noSuchUpload, removeDataObjects, uploadsOf } from './multipart.js';
import { checkWriteCondition, dataPools, indexOf, writeConditionOf, type WriteCondition } from './object.js';
import { xmlHeaders } from './util.js';
import { commitEntry } from './versions.js';

const COMPLETE_ATTEMPTS_MAX = 16;

interface RequestedPart {
  partNumber: number;
  etag: string;
  checksums: Partial<Record<ChecksumAlgorithm, string>>;
}

const unquote = (etag: string): string => etag.trim().replace(/^"|"$/g, '');

/** Reads the document through the body verifier, without taking the x-amz-checksum-* headers (the object's, here) as the body's. */
async function readCompleteBody(ctx: S3Context, maxBytes: number): Promise<Buffer> {
  const raw = ctx.req.raw;
  const rawHeaders: string[] = [];
  for (let i = 0; i + 1 < raw.rawHeaders.length; i += 2) {
    const name = raw.rawHeaders[i]!.toLowerCase();
    if (name === 'x-amz-sdk-checksum-algorithm' || checksumAlgorithms.some((a) => name === `x-amz-checksum-${a}`)) continue;
    rawHeaders.push(raw.rawHeaders[i]!, raw.rawHeaders[i + 1]!);
  }
  const verifier = createBodyVerifier(ctx.auth, { method: raw.method, url: raw.url, rawHeaders }, { crc32c });
  if (verifier.declaredLengthBytes !== null && verifier.declaredLengthBytes > maxBytes) throw s3Error('MaxMessageLengthExceeded', 'Your request was too big.');
  const chunks: Buffer[] = [];
  let total = 0;
  await pipeline(raw, verifier, async (source: AsyncIterable<Buffer>) => {
    for await (const chunk of source) {
      total += chunk.length;
      if (total > maxBytes) throw s3Error('MaxMessageLengthExceeded', 'Your request was too big.');
      chunks.push(chunk);
    }
  });
  return Buffer.concat(chunks);
}

function parseRequestedParts(body: Buffer, maxBytes: number): RequestedPart[] {
  const doc = parseXmlDocument(body, 'CompleteMultipartUpload', maxBytes);
  const malformed = () => s3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.');
  const parts = xmlList(doc.Part).map((p) => {
    if (typeof p !== 'object' || p === null) throw malformed();
    const fields = p as Record<string, unknown>;
    const n = typeof fields.PartNumber === 'string' && /^\d{1,9}$/.test(fields.PartNumber) ? Number(fields.PartNumber) : NaN;
    if (!Number.isInteger(n) || typeof fields.ETag !== 'string') throw malformed();
    const checksums: RequestedPart['checksums'] = {};
    for (const alg of checksumAlgorithms) {
      const v = fields[checksumElement(alg)];
      if (typeof v === 'string') checksums[alg] = v;
    }
    return { partNumber: n, etag: fields.ETag, checksums };
  });
  if (parts.length === 0) throw malformed();
  return parts;
}

function bitmapOf(partNumbers: readonly number[]): string {
  const bits = Buffer.alloc(Math.ceil(Math.max(...partNumbers) / 8));
  for (const n of partNumbers) bits[(n - 1) >> 3]! |= 1 << ((n - 1) & 7);
  return bits.toString('base64');
}

function numbersOf(bitmap: string): number[] {
  const bits = Buffer.from(bitmap, 'base64');
  const out: number[] = [];
  for (let i = 0; i < bits.length * 8; i++) if (bits[i >> 3]! & (1 << (i & 7))) out.push(i + 1);
  return out;
}

const invalidPart = (uploadId: string, p: RequestedPart) =>
  s3Error('InvalidPart', "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.", { UploadId: uploadId, PartNumber: String(p.partNumber), ETag: p.etag });

/** Checks the request against the parts (S3's errors) and fixes what the object will be. */
function makePlan(ctx: S3Context, record: UploadRecord, contents: UploadContents, requested: RequestedPart[], condition: WriteCondition | null): CompletionPlan {
  const limits = multipartLimits(ctx);
  const { algorithm, type, defaulted } = record.checksum;
  if (requested.length > limits.partsMax) throw s3Error('InvalidArgument', `A multipart upload has at most ${limits.partsMax} parts`);
  const chosen: PartRecord[] = [];
  for (const [i, p] of requested.entries()) {
    if (i > 0 && p.partNumber <= requested[i - 1]!.partNumber) throw s3Error('InvalidPartOrder', 'The list of parts was not in ascending order. Parts must be ordered by part number.', { UploadId: record.uploadId });
    const rec = contents.parts.get(p.partNumber)?.value;
    if (!rec || unquote(rec.etag) !== unquote(p.etag)) throw invalidPart(record.uploadId, p);
    for (const [alg, v] of Object.entries(p.checksums)) if (rec.checksums[alg] !== v) throw invalidPart(record.uploadId, p);
    if (!defaulted && type === 'COMPOSITE' && p.checksums[algorithm] === undefined) {
      throw s3Error('InvalidRequest', `The upload was created using a ${algorithm} checksum. The complete request must include the checksum for each part. It was missing for part ${p.partNumber} in the request.`);
    }
    chosen.push(rec);
  }
  for (const [i, rec] of chosen.entries()) {
    if (i < chosen.length - 1 && rec.sizeBytes < limits.partBytesMin) {
      throw s3Error('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.', { ProposedSize: String(rec.sizeBytes), MinSizeAllowed: String(limits.partBytesMin), PartNumber: String(rec.partNumber), ETag: rec.etag });
    }
  }
  const sizeBytes = chosen.reduce((s, p) => s + p.sizeBytes, 0);
  if (sizeBytes > limits.objectBytesMax) throw s3Error('EntityTooLarge', 'Your proposed upload exceeds the maximum allowed object size.');
  const h = ctx.req.headers;
  const declaredSize = h.get('x-amz-mp-object-size');
  if (declaredSize !== undefined && Number(declaredSize) !== sizeBytes) throw s3Error('InvalidRequest', `The provided 'x-amz-mp-object-size' header value ${declaredSize} does not match what was computed: ${sizeBytes}`);
  const value = objectChecksum(record.checksum, chosen.map((p) => ({ checksum: p.checksums[algorithm] ?? '', sizeBytes: p.sizeBytes })));
  checkObjectChecksumHeaders(ctx, record, value);
  const md5 = createHash('md5');
  for (const p of chosen) md5.update(Buffer.from(unquote(p.etag), 'hex'));
  return {
    parts: bitmapOf(chosen.map((p) => p.partNumber)),
    etag: `"${md5.digest('hex')}-${chosen.length}"`,
    mtimeMs: ctx.services.io.clock.nowMs(),
    sizeBytes,
    checksum: { algorithm, type, value },
    ...(condition ? { condition } : {}),
  };
}

/** A conditional complete refused at its commit (412, or NoSuchKey for If-Match on no object). */
export const isConditionRefusal = (err: unknown): err is S3Error => err instanceof S3Error && (err.code === 'PreconditionFailed' || err.code === 'NoSuchKey');

/** x-amz-checksum-type and x-amz-checksum-<algorithm> on the complete: the object's, as the client computed them. */
function checkObjectChecksumHeaders(ctx: S3Context, record: UploadRecord, value: string): void {
  const { algorithm, type } = record.checksum;
  const h = ctx.req.headers;
  const typeHeader = h.get('x-amz-checksum-type');
  if (typeHeader !== undefined && typeHeader.toUpperCase() !== type) throw s3Error('InvalidRequest', `The upload was created using the ${record.checksum.defaulted ? 'null' : type} checksum mode. The complete request must use the same checksum mode.`);
  for (const alg of checksumAlgorithms) {
    const given = h.get(`x-amz-checksum-${alg}`);
    if (given === undefined) continue;
    if (alg !== algorithm) throw s3Error('InvalidRequest', `Checksum Type mismatch occurred, expected checksum Type: ${algorithm}, actual checksum Type: ${alg}`);
    // A composite value may come with or without its "-N".
    const expected = type === 'COMPOSITE' ? value.replace(/-\d+$/, '') : value;
    if (given.replace(/-\d+$/, '') !== expected) throw s3Error('BadDigest', `The ${alg.toUpperCase()} you specified did not match the calculated checksum.`);
  }
}

/** The index entry of the completed object (its part list inline, or in a part table). */
async function entryOf(ctx: S3Context, bucket: BucketRecord, record: UploadRecord, plan: CompletionPlan, parts: PartRecord[]): Promise<IndexEntry> {
  const alg = plan.checksum.algorithm;
  const refs: PartRef[] = parts.map((p) => ({ data: p.data, sizeBytes: p.sizeBytes, etag: p.etag, ...(p.checksums[alg] ? { checksums: { [alg]: p.checksums[alg] } } : {}) }));
  const entry: IndexEntry = {
    sizeBytes: plan.sizeBytes,
    etag: plan.etag,
    mtimeMs: plan.mtimeMs,
    data: null,
    parts: refs,
    uploadId: record.uploadId,
    owner: record.owner,
    ...(record.acl !== undefined ? { acl: record.acl } : {}),
    ...(record.contentType !== undefined ? { contentType: record.contentType } : {}),
    headers: record.headers,
    meta: record.meta,
    checksums: { [alg]: plan.checksum.value },
    checksumType: plan.checksum.type,
  };
  if (Buffer.byteLength(JSON.stringify(entry)) <= multipartLimits(ctx).entryInlineBytesMax) return entry;
  const table = partTableName(bucket, record.uploadId);
  await writePartTable(ctx.services.striper, dataPools(ctx, bucket), table, refs);
  return { ...entry, parts: [], partTable: { data: table, count: refs.length } };
}

const partTableName = (bucket: BucketRecord, uploadId: string): string => `${bucket.id}/${uploadId}.parts`;

/**
 * Whether a resumed completion still has to write its entry: not if the
 * index shows it (committed), nor if something newer is there or its parts
 * are already gone (superseded: it was committed and replaced, or it would
 * be older than what is there anyway).
 */
async function resumeDecision(ctx: S3Context, bucket: BucketRecord, record: UploadRecord, plan: CompletionPlan, first: PartRecord): Promise<'commit' | 'committed' | 'superseded'> {
  const current = await indexOf(ctx, bucket).get(record.key);
  if (current?.uploadId === record.uploadId) return 'committed';
  if (current && current.mtimeMs > plan.mtimeMs) return 'superseded';
  try {
    await ctx.services.striper.stat(dataPools(ctx, bucket), first.data);
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return 'superseded';
    throw err;
  }
  return 'commit';
}

/**
 * Finishes a completing upload (steps 3 and 4); every step can run again.
 * Returns the committed entry and the answer's headers, or null when the
 * upload is gone or not completing.
 */
export async function finishCompletion(
  ctx: S3Context,
  o: { bucket: BucketRecord; uploads: UploadStore; record: UploadRecord; contents?: UploadContents; fresh?: boolean },
): Promise<{ entry: IndexEntry; headers: Record<string, string> } | null> {
  const { bucket, uploads, record } = o;
  const contents = o.contents ?? (await uploads.contents(record.uploadId));
  const state = contents.state;
  if (!state) {
    await uploads.removeRecord(record.key, record.uploadId);
    return null;
  }
  if (state.value.s !== 'completing') return null;
  const plan = state.value.plan;
  const chosen = numbersOf(plan.parts);
  const parts = chosen.map((n) => {
    const p = contents.parts.get(n)?.value;
    if (!p) throw new TesseraError('Corrupt', `upload ${record.uploadId}: part ${n} of its completion plan has no record`);
    return p;
  });
  const entry = await entryOf(ctx, bucket, record, plan, parts);
  let headers: Record<string, string> = {};
  const garbage: string[] = [];
  if (!plan.committed) {
    const decision = o.fresh ? 'commit' : await resumeDecision(ctx, bucket, record, plan, parts[0]!);
    if (decision === 'commit') {
      try {
        headers = (await commitEntry(ctx, bucket, record.key, entry, plan.condition ? checkWriteCondition(record.key, plan.condition) : undefined)).headers;
      } catch (err) {
        if (!plan.condition || !isConditionRefusal(err)) throw err;
        // Refused by its condition: nothing was committed; the upload opens again (as S3 keeps it), its parts untouched.
        if (entry.partTable) await removeDataObjects(ctx, bucket, [entry.partTable.data]);
        await uploads.setState(record.uploadId, state.raw, { s: 'open' }).catch((e: unknown) => {
          if (!isTesseraError(e, 'Conflict')) throw e;
        });
        throw err;
      }
    }
    // Superseded in an unversioned bucket: nothing names these parts (a versioned bucket may keep them as an older version).
    if (decision === 'superseded' && bucket.versioning === 'Unversioned') garbage.push(...parts.map((p) => p.data), ...(entry.partTable ? [entry.partTable.data] : []));
    await uploads.setState(record.uploadId, state.raw, { s: 'completing', plan: { ...plan, committed: true } }).catch(() => undefined);
  }
  const used = new Set(chosen);
  for (const [n, p] of contents.parts) if (!used.has(n)) garbage.push(p.value.data);
  await removeDataObjects(ctx, bucket, [...garbage, ...contents.owned]);
  await uploads.destroy(record.uploadId);
  await uploads.removeRecord(record.key, record.uploadId);
  return { entry, headers };
}

function completeAnswer(ctx: S3Context, bucket: BucketRecord, key: string, entry: IndexEntry, headers: Record<string, string>): S3Response {
  const host = ctx.req.headers.get('host') ?? 'localhost';
  const path = `/${bucket.name}/${key.split('/').map(encodeURIComponent).join('/')}`;
  const alg = Object.keys(entry.checksums ?? {})[0] as ChecksumAlgorithm | undefined;
  return {
    status: 200,
    headers: { ...xmlHeaders, ...headers },
    body: xmlDocument('CompleteMultipartUploadResult', {
      Location: `http://${host}${path}`,
      Bucket: bucket.name,
      Key: key,
      ETag: entry.etag,
      ...(alg ? { [checksumElement(alg)]: entry.checksums![alg], ChecksumType: entry.checksumType } : {}),
    }),
  };
}

export async function completeMultipartUpload(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'CompleteMultipartUpload');
  const key = ctx.req.key!;
  // If-None-Match: * / If-Match: decided with the commit's compare-and-set (the plan carries them to whoever commits).
  const condition = writeConditionOf(ctx);
  const limits = multipartLimits(ctx);
  const requested = parseRequestedParts(await readCompleteBody(ctx, limits.completeBodyBytesMax), limits.completeBodyBytesMax);
  const uploads = uploadsOf(ctx, bucket);
  const uploadId = ctx.req.query.get('uploadId') ?? '';
  const record = /^[0-9a-f]{32}$/.test(uploadId) ? await uploads.record(key, uploadId) : null;
  if (record) {
    for (let attempt = 0; attempt < COMPLETE_ATTEMPTS_MAX; attempt++) {
      const contents = await uploads.contents(uploadId);
      const state = contents.state;
      if (state?.value.s === 'aborting') throw noSuchUpload(uploadId);
      let ours = false;
      if (state?.value.s === 'open') {
        const plan = makePlan(ctx, record, contents, requested, condition);
        try {
          state.raw = await uploads.setState(uploadId, state.raw, { s: 'completing', plan });
        } catch (err) {
          if (isTesseraError(err, 'Conflict')) continue;
          throw err;
        }
        state.value = { s: 'completing', plan };
        ours = true;
      }
      const done = await finishCompletion(ctx, { bucket, uploads, record, contents, fresh: ours });
      // Finished by this request, or resumed with the same parts (a retry): its answer. Another list: that upload is done.
      if (done && (ours || (state?.value.s === 'completing' && state.value.plan.parts === bitmapOf(requested.map((p) => p.partNumber))))) {
        return completeAnswer(ctx, bucket, key, done.entry, done.headers);
      }
      break;
    }
  }
  // No upload (any more): a retry of a complete that finished gets the same answer.
  const current = await indexOf(ctx, bucket).get(key);
  if (current?.uploadId === uploadId) return completeAnswer(ctx, bucket, key, current, {});
  throw noSuchUpload(uploadId);
}
