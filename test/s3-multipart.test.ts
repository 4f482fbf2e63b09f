/**
 * S3 multipart uploads through the real AWS SDK (v3, default settings, and
 * @aws-sdk/lib-storage's Upload) on a real cluster (startS3Env): objects of
 * 5 MiB parts and a small last one read back byte-exact, whole, by ranges
 * across part boundaries and by partNumber; a >64 MiB stream; the ETag
 * (MD5 of the part MD5s, "-N") and the checksums (COMPOSITE and
 * FULL_OBJECT, checked against values computed here); every error case;
 * part overwrite, abort and complete leaving no data behind (the data pool
 * is listed); ListParts / ListMultipartUploads pagination; UploadPartCopy
 * with ranges and conditions; long part lists (a second gateway with
 * lowered limits, so that hundreds of parts cost kilobytes); and kill -9 of
 * the daemon serving an upload's metadata while parts are uploaded.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { crc32, crc32c } from '@node-rs/crc32';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
  type ChecksumAlgorithm,
  type CompletedPart,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { S3Gateway } from '../gateways/s3/gateway.js';
import { crc64nvme } from '../gateways/s3/auth/crc64nvme.js';
import { combineCrcs } from '../gateways/s3/ops/multipart-checksum.js';
import { objectToPg } from '../cluster/placement.js';
import { startS3Env, type S3TestEnv, bytes } from './helpers/s3.js';
import { seededRng, testSeed } from './helpers/random.js';

const MiB = 1024 * 1024;
const seed = testSeed();
let env: S3TestEnv;
let s3: S3Client;

beforeAll(async () => {
  console.log(`s3-multipart seed ${seed} (TESSERA_SEED to replay)`);
  env = await startS3Env();
  s3 = env.s3();
  await s3.send(new CreateBucketCommand({ Bucket: 'mpb' }));
}, 120_000);
afterAll(async () => {
  await env?.stop();
});

async function errorOf(p: Promise<unknown>): Promise<{ name: string; status: number | undefined; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode, message: e.message };
  }
  throw new Error('expected an error');
}

const md5 = (b: Buffer): Buffer => createHash('md5').update(b).digest();
const multipartEtag = (parts: Buffer[]): string => `"${createHash('md5').update(Buffer.concat(parts.map(md5))).digest('hex')}-${parts.length}"`;
const b64 = (n: number, width: 4 | 8): string => {
  const out = Buffer.alloc(width);
  if (width === 4) out.writeUInt32BE(n >>> 0);
  else out.writeBigUInt64BE(BigInt(n));
  return out.toString('base64');
};

/** Names in a pool (paged). */
async function poolNames(pool = 'rep'): Promise<string[]> {
  const names: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.cluster.client.list(pool, { limit: 1000, ...(cursor ? { cursor } : {}) });
    names.push(...page.names);
    cursor = page.cursor;
  } while (cursor);
  return names;
}

async function bucketId(bucket: string): Promise<string> {
  return (await env.gateway.services.buckets.get(bucket))!.id;
}

/** Objects (data manifests, pieces, upload metadata) that belong to an upload. */
async function uploadObjects(bucket: string, uploadId: string): Promise<string[]> {
  const id = await bucketId(bucket);
  return (await poolNames()).filter((n) => n.startsWith(`${id}/${uploadId}`) || n === `s3.upload.${id}.${uploadId}`);
}

async function upload(client: S3Client, bucket: string, key: string, parts: Buffer[], extra: { ChecksumAlgorithm?: ChecksumAlgorithm } = {}): Promise<{ uploadId: string; completed: CompletedPart[] }> {
  const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ...extra }));
  const completed: CompletedPart[] = [];
  for (const [i, Body] of parts.entries()) {
    const r = await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: i + 1, Body, ...extra }));
    completed.push({ PartNumber: i + 1, ETag: r.ETag!, ...(r.ChecksumCRC32 ? { ChecksumCRC32: r.ChecksumCRC32 } : {}), ...(r.ChecksumSHA256 ? { ChecksumSHA256: r.ChecksumSHA256 } : {}), ...(r.ChecksumCRC32C ? { ChecksumCRC32C: r.ChecksumCRC32C } : {}) });
  }
  return { uploadId: UploadId!, completed };
}

describe('checksum combination', () => {
  it('combines CRC32, CRC32C and CRC64NVME of parts into the CRC of the whole', () => {
    const rng = seededRng(seed);
    for (let round = 0; round < 20; round++) {
      const parts = Array.from({ length: 1 + rng.int(5) }, () => rng.bytes(rng.int(3) === 0 ? 0 : rng.int(70_000)));
      const whole = Buffer.concat(parts);
      expect(combineCrcs('crc32', parts.map((p) => ({ crcBase64: b64(crc32(p), 4), sizeBytes: p.length })))).toBe(b64(crc32(whole), 4));
      expect(combineCrcs('crc32c', parts.map((p) => ({ crcBase64: b64(crc32c(p), 4), sizeBytes: p.length })))).toBe(b64(crc32c(whole), 4));
      expect(combineCrcs('crc64nvme', parts.map((p) => ({ crcBase64: crc64nvme(p).toString('base64'), sizeBytes: p.length })))).toBe(crc64nvme(whole).toString('base64'));
    }
  });
});

describe('multipart through the SDK', () => {
  const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB + 3), randomBytes(777)];
  const whole = Buffer.concat(parts);

  it('completes an upload of 5 MiB parts and a small one: byte-exact, ranges across boundaries, partNumber reads, ETag', async () => {
    const { uploadId, completed } = await upload(s3, 'mpb', 'obj', parts);
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: 'obj', UploadId: uploadId, MultipartUpload: { Parts: completed } }));
    expect(done.ETag).toBe(multipartEtag(parts));
    // No algorithm asked for: S3's default, a FULL_OBJECT CRC64NVME of the whole object.
    expect(done.ChecksumCRC64NVME).toBe(crc64nvme(whole).toString('base64'));
    expect(done.ChecksumType).toBe('FULL_OBJECT');

    const got = await s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'obj', ChecksumMode: 'ENABLED' }));
    expect((await bytes(got.Body)).equals(whole)).toBe(true);
    expect(got.ETag).toBe(done.ETag);
    expect(got.ChecksumCRC64NVME).toBe(done.ChecksumCRC64NVME);
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'mpb', Key: 'obj' }));
    expect(head.ContentLength).toBe(whole.length);
    for (const [start, end] of [[5 * MiB - 10, 5 * MiB + 10], [0, whole.length - 1], [10 * MiB - 5, whole.length - 1], [5 * MiB, 10 * MiB + 2], [123, 124]] as const) {
      const r = await s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'obj', Range: `bytes=${start}-${end}` }));
      expect((await bytes(r.Body)).equals(whole.subarray(start, end + 1)), `${start}-${end}`).toBe(true);
    }
    for (const [i, part] of parts.entries()) {
      const r = await s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'obj', PartNumber: i + 1 }));
      expect((await bytes(r.Body)).equals(part), `part ${i + 1}`).toBe(true);
      expect(r.PartsCount).toBe(3);
      expect(r.ContentLength).toBe(part.length);
      expect(r.$metadata.httpStatusCode).toBe(206);
      const h = await s3.send(new HeadObjectCommand({ Bucket: 'mpb', Key: 'obj', PartNumber: i + 1 }));
      expect(h.ContentLength).toBe(part.length);
      expect(h.PartsCount).toBe(3);
    }
    expect((await errorOf(s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'obj', PartNumber: 4 })))).status).toBe(416);
    expect((await errorOf(s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'obj', PartNumber: 1, Range: 'bytes=0-1' })))).name).toBe('InvalidRequest');
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: 'mpb', Prefix: 'obj' }));
    expect(listed.Contents?.[0]?.ETag).toBe(done.ETag);
    expect(listed.Contents?.[0]?.Size).toBe(whole.length);
    // The upload is gone, and with it every part record: only the parts the object names remain.
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: 'mpb' }))).Uploads ?? []).toEqual([]);
    expect((await uploadObjects('mpb', uploadId)).filter((n) => !n.includes('\0'))).toHaveLength(3);
    // A single-part object is its own part 1.
    await s3.send(new PutObjectCommand({ Bucket: 'mpb', Key: 'single', Body: Buffer.from('one part') }));
    const single = await s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'single', PartNumber: 1 }));
    expect((await bytes(single.Body)).toString()).toBe('one part');
    expect((await errorOf(s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'single', PartNumber: 2 })))).name).toBe('InvalidPartNumber');
    // Deleting the object removes every part.
    await s3.send(new DeleteObjectCommand({ Bucket: 'mpb', Key: 'obj' }));
    expect(await uploadObjects('mpb', uploadId)).toEqual([]);
  });

  it('stores COMPOSITE and FULL_OBJECT checksums as S3 computes them', async () => {
    // SHA256: composite, the part checksums required in the complete.
    const sha = await upload(s3, 'mpb', 'sha', parts, { ChecksumAlgorithm: 'SHA256' });
    const missing = await errorOf(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: 'sha', UploadId: sha.uploadId, MultipartUpload: { Parts: sha.completed.map((p) => ({ PartNumber: p.PartNumber, ETag: p.ETag })) } })));
    expect(missing.name).toBe('InvalidRequest');
    const wrong = await errorOf(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: 'sha', UploadId: sha.uploadId, MultipartUpload: { Parts: sha.completed.map((p, i) => (i === 1 ? { ...p, ChecksumSHA256: sha.completed[0]!.ChecksumSHA256 } : p)) } })));
    expect(wrong.name).toBe('InvalidPart');
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: 'sha', UploadId: sha.uploadId, MultipartUpload: { Parts: sha.completed } }));
    const shaParts = parts.map((p) => createHash('sha256').update(p).digest());
    expect(done.ChecksumSHA256).toBe(`${createHash('sha256').update(Buffer.concat(shaParts)).digest('base64')}-3`);
    expect(done.ChecksumType).toBe('COMPOSITE');
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'mpb', Key: 'sha', ChecksumMode: 'ENABLED' }));
    expect(head.ChecksumSHA256).toBe(done.ChecksumSHA256);
    const part2 = await s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'sha', PartNumber: 2, ChecksumMode: 'ENABLED' }));
    expect((await bytes(part2.Body)).equals(parts[1]!)).toBe(true);
    expect(part2.ChecksumSHA256).toBe(shaParts[1]!.toString('base64'));
    // A part uploaded with another algorithm than the upload's is refused.
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'mpb', Key: 'mismatch', ChecksumAlgorithm: 'SHA256' }));
    expect((await errorOf(s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: 'mismatch', UploadId, PartNumber: 1, Body: parts[2], ChecksumAlgorithm: 'CRC32' })))).name).toBe('InvalidRequest');
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'mpb', Key: 'mismatch', UploadId }));

    // CRC32C FULL_OBJECT: the CRC of the whole object; the complete may carry it, and must then be right.
    const full = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'mpb', Key: 'full', ChecksumAlgorithm: 'CRC32C', ChecksumType: 'FULL_OBJECT' }));
    expect(full.ChecksumType).toBe('FULL_OBJECT');
    const completed: CompletedPart[] = [];
    for (const [i, Body] of parts.entries()) {
      const r = await s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: 'full', UploadId: full.UploadId, PartNumber: i + 1, Body, ChecksumAlgorithm: 'CRC32C' }));
      completed.push({ PartNumber: i + 1, ETag: r.ETag! });
    }
    const expected = b64(crc32c(whole), 4);
    const bad = await errorOf(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: 'full', UploadId: full.UploadId, ChecksumCRC32C: b64(crc32c(whole) ^ 1, 4), ChecksumType: 'FULL_OBJECT', MultipartUpload: { Parts: completed } })));
    expect(bad.name).toBe('BadDigest');
    const ok = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: 'full', UploadId: full.UploadId, ChecksumCRC32C: expected, ChecksumType: 'FULL_OBJECT', MultipartUpload: { Parts: completed } }));
    expect(ok.ChecksumCRC32C).toBe(expected);
    const got = await s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'full', ChecksumMode: 'ENABLED' }));
    expect((await bytes(got.Body)).equals(whole)).toBe(true);
    expect(got.ChecksumCRC32C).toBe(expected);
    // Invalid pairs at creation.
    expect((await errorOf(s3.send(new CreateMultipartUploadCommand({ Bucket: 'mpb', Key: 'x', ChecksumAlgorithm: 'SHA1', ChecksumType: 'FULL_OBJECT' })))).name).toBe('InvalidRequest');
    expect((await errorOf(s3.send(new CreateMultipartUploadCommand({ Bucket: 'mpb', Key: 'x', ChecksumAlgorithm: 'CRC64NVME', ChecksumType: 'COMPOSITE' })))).name).toBe('InvalidRequest');
  });

  it('streams a >64 MiB object with lib-storage (CRC32 composite) and reads it back byte-exact', async () => {
    const rng = seededRng(seed ^ 0x5eed);
    const chunkBytes = 1024 * 1024 + 13;
    const chunks = 70;
    const sent = createHash('sha256');
    const source = Readable.from(
      (function* () {
        for (let i = 0; i < chunks; i++) {
          const c = rng.bytes(chunkBytes);
          sent.update(c);
          yield c;
        }
      })(),
    );
    const result = await new Upload({ client: s3, params: { Bucket: 'mpb', Key: 'big', Body: source }, queueSize: 4 }).done();
    expect(result.ETag).toMatch(/^"[0-9a-f]{32}-15"$/);
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'mpb', Key: 'big', ChecksumMode: 'ENABLED' }));
    expect(head.ContentLength).toBe(chunks * chunkBytes);
    expect(head.ChecksumCRC32).toMatch(/-15$/);
    const got = await s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'big' }));
    const received = createHash('sha256');
    let length = 0;
    for await (const c of got.Body as Readable) {
      received.update(c as Buffer);
      length += (c as Buffer).length;
    }
    expect(length).toBe(chunks * chunkBytes);
    expect(received.digest('hex')).toBe(sent.digest('hex'));
    await s3.send(new DeleteObjectCommand({ Bucket: 'mpb', Key: 'big' }));
  }, 300_000);

  it('answers every error case with the right code', async () => {
    const key = 'errors';
    const { uploadId, completed } = await upload(s3, 'mpb', key, [randomBytes(5 * MiB), randomBytes(100), randomBytes(200)]);
    const complete = (Parts: CompletedPart[], UploadId = uploadId) => errorOf(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: key, UploadId, MultipartUpload: { Parts } })));
    const bogus = '0'.repeat(32);
    expect((await complete(completed, bogus)).name).toBe('NoSuchUpload');
    expect((await errorOf(s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: key, UploadId: bogus, PartNumber: 1, Body: 'x' })))).name).toBe('NoSuchUpload');
    expect((await errorOf(s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: 'other-key', UploadId: uploadId, PartNumber: 1, Body: 'x' })))).name).toBe('NoSuchUpload');
    expect((await errorOf(s3.send(new ListPartsCommand({ Bucket: 'mpb', Key: key, UploadId: bogus })))).name).toBe('NoSuchUpload');
    expect((await errorOf(s3.send(new AbortMultipartUploadCommand({ Bucket: 'mpb', Key: key, UploadId: bogus })))).name).toBe('NoSuchUpload');
    for (const PartNumber of [0, 10001]) {
      expect((await errorOf(s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: key, UploadId: uploadId, PartNumber, Body: 'x' })))).name).toBe('InvalidArgument');
    }
    expect((await complete([completed[0]!, { ...completed[1]!, ETag: '"0123456789abcdef0123456789abcdef"' }])).name).toBe('InvalidPart');
    expect((await complete([completed[0]!, { PartNumber: 7, ETag: completed[1]!.ETag }])).name).toBe('InvalidPart');
    expect((await complete([completed[1]!, completed[0]!])).name).toBe('InvalidPartOrder');
    expect((await complete([completed[0]!, completed[0]!])).name).toBe('InvalidPartOrder');
    const small = await complete(completed);
    expect(small.name).toBe('EntityTooSmall'); // part 2 (100 bytes) is not last
    expect((await complete([])).name).toBe('MalformedXML');
    // Still open after every refusal: completing with parts 1 and 3 works (a gap is allowed).
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: key, UploadId: uploadId, MultipartUpload: { Parts: [completed[0]!, completed[2]!] } }));
    expect(done.ETag).toMatch(/-2"$/);
    // Unused part 2 is collected with the upload; a retried complete gets the same answer.
    expect((await uploadObjects('mpb', uploadId)).filter((n) => !n.includes('\0'))).toHaveLength(2);
    const again = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: key, UploadId: uploadId, MultipartUpload: { Parts: [completed[0]!, completed[2]!] } }));
    expect(again.ETag).toBe(done.ETag);
    expect((await errorOf(s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: key, UploadId: uploadId, PartNumber: 1, Body: 'x' })))).name).toBe('NoSuchUpload');
    await s3.send(new DeleteObjectCommand({ Bucket: 'mpb', Key: key }));
  });

  it('replaces a re-uploaded part and removes the replaced data; abort leaves nothing', async () => {
    const key = 'overwrite';
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'mpb', Key: key }));
    const first = randomBytes(5 * MiB);
    const second = randomBytes(5 * MiB + 1);
    await s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: key, UploadId, PartNumber: 1, Body: first }));
    const r2 = await s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: key, UploadId, PartNumber: 1, Body: second }));
    const tail = await s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: key, UploadId, PartNumber: 2, Body: 'tail' }));
    const listed = await s3.send(new ListPartsCommand({ Bucket: 'mpb', Key: key, UploadId }));
    expect(listed.Parts?.map((p) => [p.PartNumber, p.ETag, p.Size])).toEqual([
      [1, r2.ETag, second.length],
      [2, tail.ETag, 4],
    ]);
    const manifests = (await uploadObjects('mpb', UploadId!)).filter((n) => !n.includes('\0') && !n.startsWith('s3.'));
    expect(manifests.filter((n) => n.includes(`${UploadId}.1.`))).toHaveLength(1);
    // Concurrent uploads of one part number: one wins, the others' data is gone.
    const racers = Array.from({ length: 4 }, () => randomBytes(100_000));
    const answers = await Promise.all(racers.map((Body) => s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: key, UploadId, PartNumber: 3, Body }))));
    const part3 = (await s3.send(new ListPartsCommand({ Bucket: 'mpb', Key: key, UploadId }))).Parts!.find((p) => p.PartNumber === 3)!;
    expect(answers.map((a) => a.ETag)).toContain(part3.ETag);
    expect((await uploadObjects('mpb', UploadId!)).filter((n) => n.includes(`${UploadId}.3.`) && !n.includes('\0'))).toHaveLength(1);
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'mpb', Key: key, UploadId }));
    expect(await uploadObjects('mpb', UploadId!)).toEqual([]);
    expect((await errorOf(s3.send(new ListPartsCommand({ Bucket: 'mpb', Key: key, UploadId })))).name).toBe('NoSuchUpload');
    expect((await errorOf(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: key, UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: r2.ETag }] } })))).name).toBe('NoSuchUpload');
  });

  it('pages ListParts and ListMultipartUploads', async () => {
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'mpb', Key: 'paged' }));
    for (let n = 1; n <= 7; n++) await s3.send(new UploadPartCommand({ Bucket: 'mpb', Key: 'paged', UploadId, PartNumber: n * 3, Body: `part ${n}` }));
    const seen: number[] = [];
    let marker: string | undefined;
    for (let page = 0; ; page++) {
      const r = await s3.send(new ListPartsCommand({ Bucket: 'mpb', Key: 'paged', UploadId, MaxParts: 3, ...(marker ? { PartNumberMarker: marker } : {}) }));
      seen.push(...(r.Parts ?? []).map((p) => p.PartNumber!));
      if (!r.IsTruncated) break;
      marker = String(r.NextPartNumberMarker);
      expect(page).toBeLessThan(5);
    }
    expect(seen).toEqual([3, 6, 9, 12, 15, 18, 21]);
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'mpb', Key: 'paged', UploadId }));

    await s3.send(new CreateBucketCommand({ Bucket: 'mpu-list' }));
    const keys = ['a/1', 'a/2', 'b', 'b', 'c/x/y', 'd'];
    const ids: Array<[string, string]> = [];
    for (const Key of keys) ids.push([Key, (await s3.send(new CreateMultipartUploadCommand({ Bucket: 'mpu-list', Key }))).UploadId!]);
    const all: Array<[string, string]> = [];
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    for (let page = 0; ; page++) {
      const r = await s3.send(new ListMultipartUploadsCommand({ Bucket: 'mpu-list', MaxUploads: 2, ...(keyMarker ? { KeyMarker: keyMarker } : {}), ...(idMarker ? { UploadIdMarker: idMarker } : {}) }));
      all.push(...(r.Uploads ?? []).map((u) => [u.Key!, u.UploadId!] as [string, string]));
      if (!r.IsTruncated) break;
      keyMarker = r.NextKeyMarker;
      idMarker = r.NextUploadIdMarker;
      expect(page).toBeLessThan(5);
    }
    expect(all).toEqual(ids); // by key, then by initiation
    const top = await s3.send(new ListMultipartUploadsCommand({ Bucket: 'mpu-list', Delimiter: '/' }));
    expect(top.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['a/', 'c/']);
    expect(top.Uploads?.map((u) => u.Key)).toEqual(['b', 'b', 'd']);
    const inA = await s3.send(new ListMultipartUploadsCommand({ Bucket: 'mpu-list', Prefix: 'a/' }));
    expect(inA.Uploads?.map((u) => u.Key)).toEqual(['a/1', 'a/2']);
    expect(inA.Uploads?.[0]?.Initiator?.ID).toBe(env.userId);
    // Deleting the bucket ends its uploads.
    await s3.send(new DeleteBucketCommand({ Bucket: 'mpu-list' }));
    const id = (await poolNames()).filter((n) => n.startsWith('s3.upload'));
    for (const [, u] of ids) expect(id.some((n) => n.endsWith(u))).toBe(false);
  });

  it('copies parts from objects and ranges of objects (UploadPartCopy), with the copy-source conditions', async () => {
    const source = randomBytes(12 * MiB + 5);
    const put = await s3.send(new PutObjectCommand({ Bucket: 'mpb', Key: 'copy-src', Body: source }));
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'mpb', Key: 'copied' }));
    const ranges = [
      [0, 5 * MiB - 1],
      [5 * MiB, 11 * MiB],
    ] as const;
    const tail = [11 * MiB + 1, source.length - 1] as const;
    const completed: CompletedPart[] = [];
    for (const [i, [a, b]] of ranges.entries()) {
      const r = await s3.send(new UploadPartCopyCommand({ Bucket: 'mpb', Key: 'copied', UploadId, PartNumber: i + 1, CopySource: 'mpb/copy-src', CopySourceRange: `bytes=${a}-${b}`, CopySourceIfMatch: put.ETag }));
      expect(r.CopyPartResult?.ETag).toBe(`"${md5(source.subarray(a, b + 1)).toString('hex')}"`);
      completed.push({ PartNumber: i + 1, ETag: r.CopyPartResult!.ETag! });
    }
    // A whole object as a part (then a small last part), and ranges of a multipart source across its part boundaries.
    const whole = await s3.send(new UploadPartCopyCommand({ Bucket: 'mpb', Key: 'copied', UploadId, PartNumber: 3, CopySource: '/mpb/copy-src' }));
    completed.push({ PartNumber: 3, ETag: whole.CopyPartResult!.ETag! });
    const last = await s3.send(new UploadPartCopyCommand({ Bucket: 'mpb', Key: 'copied', UploadId, PartNumber: 4, CopySource: 'mpb/copy-src', CopySourceRange: `bytes=${tail[0]}-${tail[1]}` }));
    completed.push({ PartNumber: 4, ETag: last.CopyPartResult!.ETag! });
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: 'copied', UploadId, MultipartUpload: { Parts: completed } }));
    const expected = Buffer.concat([...ranges.map(([a, b]) => source.subarray(a, b + 1)), source, source.subarray(tail[0], tail[1] + 1)]);
    expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'copied' }))).Body)).equals(expected)).toBe(true);
    const second = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'mpb', Key: 'copied2' }));
    const across = [5 * MiB - 3, 17 * MiB + 5 + 4] as const; // parts 1..4 of 'copied'
    const c = await s3.send(new UploadPartCopyCommand({ Bucket: 'mpb', Key: 'copied2', UploadId: second.UploadId, PartNumber: 1, CopySource: 'mpb/copied', CopySourceRange: `bytes=${across[0]}-${across[1]}`, CopySourceIfNoneMatch: '"nope"' }));
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mpb', Key: 'copied2', UploadId: second.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: c.CopyPartResult!.ETag }] } }));
    expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'mpb', Key: 'copied2' }))).Body)).equals(expected.subarray(across[0], across[1] + 1))).toBe(true);
    expect(done.ETag).toMatch(/-4"$/);
    // Refusals: conditions, ranges, sources.
    const third = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'mpb', Key: 'copied3' }));
    const copy = (extra: object) => errorOf(s3.send(new UploadPartCopyCommand({ Bucket: 'mpb', Key: 'copied3', UploadId: third.UploadId, PartNumber: 1, CopySource: 'mpb/copy-src', ...extra })));
    expect((await copy({ CopySourceIfMatch: '"0123"' })).status).toBe(412);
    expect((await copy({ CopySourceIfNoneMatch: put.ETag })).status).toBe(412);
    expect((await copy({ CopySourceIfUnmodifiedSince: new Date(Date.now() - 3600_000) })).status).toBe(412);
    expect((await copy({ CopySourceRange: `bytes=0-${source.length}` })).name).toBe('InvalidRange');
    expect((await copy({ CopySourceRange: 'bytes=5-1' })).name).toBe('InvalidArgument');
    expect((await copy({ CopySource: 'mpb/absent' })).name).toBe('NoSuchKey');
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'mpb', Key: 'copied3', UploadId: third.UploadId }));
    expect(await uploadObjects('mpb', third.UploadId!)).toEqual([]);
  });
});

describe('long part lists and lowered limits', () => {
  let gateway: S3Gateway;
  let small: S3Client;

  beforeAll(async () => {
    gateway = await env.gatewayWith({
      multipart: { partBytesMin: 1, partBytesMax: 256 * 1024, objectBytesMax: 1024 * 1024, entryInlineBytesMax: 2048 },
    });
    small = new S3Client({ endpoint: `http://127.0.0.1:${gateway.port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }, maxAttempts: 1 });
    await small.send(new CreateBucketCommand({ Bucket: 'mp-long' }));
  });
  afterAll(async () => {
    small?.destroy();
    await gateway?.close();
  });

  it('keeps a long part list in a part table: reads, ranges, partNumber, removal', async () => {
    const rng = seededRng(seed ^ 0x7ab1e);
    const parts = Array.from({ length: 120 }, () => rng.bytes(1 + rng.int(5000)));
    const whole = Buffer.concat(parts);
    const { uploadId, completed } = await upload(small, 'mp-long', 'many', parts);
    const done = await small.send(new CompleteMultipartUploadCommand({ Bucket: 'mp-long', Key: 'many', UploadId: uploadId, MultipartUpload: { Parts: completed } }));
    expect(done.ETag).toBe(multipartEtag(parts));
    const id = await bucketId('mp-long');
    expect((await poolNames()).filter((n) => n === `${id}/${uploadId}.parts`)).toHaveLength(1);
    expect((await bytes((await small.send(new GetObjectCommand({ Bucket: 'mp-long', Key: 'many' }))).Body)).equals(whole)).toBe(true);
    for (let i = 0; i < 10; i++) {
      const a = rng.int(whole.length);
      const b = Math.min(whole.length - 1, a + rng.int(20_000));
      const r = await small.send(new GetObjectCommand({ Bucket: 'mp-long', Key: 'many', Range: `bytes=${a}-${b}` }));
      expect((await bytes(r.Body)).equals(whole.subarray(a, b + 1))).toBe(true);
    }
    const p = await small.send(new GetObjectCommand({ Bucket: 'mp-long', Key: 'many', PartNumber: 97 }));
    expect((await bytes(p.Body)).equals(parts[96]!)).toBe(true);
    expect(p.PartsCount).toBe(120);
    await small.send(new DeleteObjectCommand({ Bucket: 'mp-long', Key: 'many' }));
    expect((await poolNames()).filter((n) => n.startsWith(`${id}/${uploadId}`))).toEqual([]);
  });

  it('refuses parts and objects over the limits (EntityTooLarge)', async () => {
    const { UploadId } = await small.send(new CreateMultipartUploadCommand({ Bucket: 'mp-long', Key: 'large' }));
    expect((await errorOf(small.send(new UploadPartCommand({ Bucket: 'mp-long', Key: 'large', UploadId, PartNumber: 1, Body: randomBytes(256 * 1024 + 1) })))).name).toBe('EntityTooLarge');
    const completed: CompletedPart[] = [];
    for (let n = 1; n <= 5; n++) completed.push({ PartNumber: n, ETag: (await small.send(new UploadPartCommand({ Bucket: 'mp-long', Key: 'large', UploadId, PartNumber: n, Body: randomBytes(256 * 1024) }))).ETag! });
    expect((await errorOf(small.send(new CompleteMultipartUploadCommand({ Bucket: 'mp-long', Key: 'large', UploadId, MultipartUpload: { Parts: completed } })))).name).toBe('EntityTooLarge');
    await small.send(new AbortMultipartUploadCommand({ Bucket: 'mp-long', Key: 'large', UploadId }));
  });
});

describe('kill -9 of a daemon during a multipart upload', () => {
  it('keeps every acknowledged part and the completed object; an interrupted upload can be completed or aborted after', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'mp-crash' }));
    const id = await bucketId('mp-crash');
    const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(1234)];
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'mp-crash', Key: 'k' }));
    const other = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'mp-crash', Key: 'other' }));
    const completed: CompletedPart[] = [];
    completed.push({ PartNumber: 1, ETag: (await s3.send(new UploadPartCommand({ Bucket: 'mp-crash', Key: 'k', UploadId, PartNumber: 1, Body: parts[0] }))).ETag! });
    await s3.send(new UploadPartCommand({ Bucket: 'mp-crash', Key: 'other', UploadId: other.UploadId, PartNumber: 1, Body: parts[1] }));
    // The victim: the primary of the upload's own metadata object.
    const pool = env.cluster.client.pool('rep');
    const view = env.cluster.client.view;
    const victim = view.pg(view.pool(pool.id), objectToPg(pool, `s3.upload.${id}.${UploadId}`)).primary;
    const inFlight = s3.send(new UploadPartCommand({ Bucket: 'mp-crash', Key: 'k', UploadId, PartNumber: 2, Body: parts[1] }));
    await new Promise((r) => setTimeout(r, 30));
    await env.cluster.killDisk(victim);
    completed.push({ PartNumber: 2, ETag: (await inFlight).ETag! });
    for (const n of [3, 4]) completed.push({ PartNumber: n, ETag: (await s3.send(new UploadPartCommand({ Bucket: 'mp-crash', Key: 'k', UploadId, PartNumber: n, Body: parts[n - 1] }))).ETag! });
    const listed = await s3.send(new ListPartsCommand({ Bucket: 'mp-crash', Key: 'k', UploadId }));
    expect(listed.Parts?.map((p) => p.ETag)).toEqual(completed.map((p) => p.ETag));
    await env.cluster.restartDisk(victim);
    await env.cluster.client.view.refresh();
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mp-crash', Key: 'k', UploadId, MultipartUpload: { Parts: completed } }));
    expect(done.ETag).toBe(multipartEtag(parts));
    expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'mp-crash', Key: 'k' }))).Body)).equals(Buffer.concat(parts))).toBe(true);
    // The other upload survived the failure too, and aborts cleanly.
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: 'mp-crash' }))).Uploads?.map((u) => u.UploadId)).toEqual([other.UploadId]);
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'mp-crash', Key: 'other', UploadId: other.UploadId }));
    expect(await uploadObjects('mp-crash', other.UploadId!)).toEqual([]);
    // Kill again during a complete: the completed object reads back whole.
    const again = await upload(s3, 'mp-crash', 'k2', parts);
    const victim2 = view.pg(view.pool(pool.id), objectToPg(pool, `s3.upload.${id}.${again.uploadId}`)).primary;
    const completing = s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mp-crash', Key: 'k2', UploadId: again.uploadId, MultipartUpload: { Parts: again.completed } }));
    await new Promise((r) => setTimeout(r, 5));
    await env.cluster.killDisk(victim2);
    expect((await completing).ETag).toBe(multipartEtag(parts));
    expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'mp-crash', Key: 'k2' }))).Body)).equals(Buffer.concat(parts))).toBe(true);
    await env.cluster.restartDisk(victim2);
    await env.cluster.client.view.refresh();
    const left = await uploadObjects('mp-crash', again.uploadId);
    expect(left.filter((n) => n.startsWith('s3.'))).toEqual([]);
    expect(left.filter((n) => !n.includes('\0'))).toHaveLength(4); // the parts the object names, nothing else
  }, 300_000);
});

describe('a complete interrupted after it decided (a gateway that died)', () => {
  it('is finished by the retried complete, or by an abort', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'mp-resume' }));
    const parts = [randomBytes(5 * MiB), randomBytes(4321)];
    const client = env.cluster.client;
    const transact = client.transact.bind(client);
    // Index writes fail: the complete stops right after its plan is recorded, as if its gateway had died there.
    const failIndexWrites = (on: boolean) => {
      client.transact = on
        ? async (pool, name, ops) => {
            if (name.startsWith('s3.index.')) {
              const { TesseraError } = await import('../src/lib/errors.js');
              throw new TesseraError('Unavailable', 'injected: index write lost');
            }
            return transact(pool, name, ops);
          }
        : transact;
    };
    for (const finish of ['complete', 'abort'] as const) {
      const key = `resume-${finish}`;
      const { uploadId, completed } = await upload(s3, 'mp-resume', key, parts);
      failIndexWrites(true);
      try {
        const failed = await errorOf(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mp-resume', Key: key, UploadId: uploadId, MultipartUpload: { Parts: completed } })));
        expect(failed.status).toBe(503);
      } finally {
        failIndexWrites(false);
      }
      // Left behind: visible, and no part can change any more.
      expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: 'mp-resume', Prefix: key }))).Uploads?.map((u) => u.UploadId)).toEqual([uploadId]);
      expect((await errorOf(s3.send(new UploadPartCommand({ Bucket: 'mp-resume', Key: key, UploadId: uploadId, PartNumber: 1, Body: 'x' })))).name).toBe('NoSuchUpload');
      if (finish === 'complete') {
        const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'mp-resume', Key: key, UploadId: uploadId, MultipartUpload: { Parts: completed } }));
        expect(done.ETag).toBe(multipartEtag(parts));
      } else {
        expect((await errorOf(s3.send(new AbortMultipartUploadCommand({ Bucket: 'mp-resume', Key: key, UploadId: uploadId })))).name).toBe('NoSuchUpload');
      }
      expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: 'mp-resume', Key: key }))).Body)).equals(Buffer.concat(parts))).toBe(true);
      const left = await uploadObjects('mp-resume', uploadId);
      expect(left.filter((n) => n.startsWith('s3.'))).toEqual([]);
      expect(left.filter((n) => !n.includes('\0'))).toHaveLength(2);
    }
  });
});
