/**
 * Listing markers at their edges (found in review of 77d9633), through the SDK against a real gateway:
 * - a delimiter of two characters and a one-character marker that is a key, not a common prefix: the next page
 *   (v2 continuation token, v1 Marker, v2 StartAfter) lists every key after it ('ab', 'ac', 'b'); at 77d9633 the
 *   marker was taken for a common prefix and the keys under it were skipped;
 * - max-keys 1 under prefix 'dir/' with an object named 'dir/': the pages list 'dir/' once, then 'dir/x', then end
 *   (before, a marker equal to the prefix was dropped and 'dir/' came back on every page).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CreateBucketCommand, ListObjectsCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';

let env: S3TestEnv;
beforeAll(async () => {
  env = await startS3Env();
}, 120_000);
afterAll(async () => {
  await env?.stop();
});

it('a two-character delimiter and a one-character marker: no key after the marker is skipped', async () => {
  const s3 = env.s3();
  await s3.send(new CreateBucketCommand({ Bucket: 'mkr' }));
  for (const Key of ['a', 'ab', 'ac', 'b']) await s3.send(new PutObjectCommand({ Bucket: 'mkr', Key, Body: Buffer.from('x') }));
  const p1 = await s3.send(new ListObjectsV2Command({ Bucket: 'mkr', Delimiter: '--', MaxKeys: 1 }));
  expect(p1.Contents?.map((c) => c.Key)).toEqual(['a']);
  const p2 = await s3.send(new ListObjectsV2Command({ Bucket: 'mkr', Delimiter: '--', MaxKeys: 1000, ContinuationToken: p1.NextContinuationToken }));
  const v1 = await s3.send(new ListObjectsCommand({ Bucket: 'mkr', Delimiter: '--', MaxKeys: 1000, Marker: 'a' }));
  const sa = await s3.send(new ListObjectsV2Command({ Bucket: 'mkr', Delimiter: '--', StartAfter: 'a' }));
  expect({ p2: p2.Contents?.map((c) => c.Key), v1: v1.Contents?.map((c) => c.Key), sa: sa.Contents?.map((c) => c.Key) }).toEqual({
    p2: ['ab', 'ac', 'b'],
    v1: ['ab', 'ac', 'b'],
    sa: ['ab', 'ac', 'b'],
  });
}, 120_000);

it('max-keys 1 and a key equal to the prefix: listed once, then the next key, then the end', async () => {
  const s3 = env.s3();
  await s3.send(new CreateBucketCommand({ Bucket: 'loop' }));
  for (const Key of ['dir/', 'dir/x']) await s3.send(new PutObjectCommand({ Bucket: 'loop', Key, Body: Buffer.from('x') }));
  const keys: string[] = [];
  let token: string | undefined;
  for (let i = 0; i < 5; i++) {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: 'loop', Prefix: 'dir/', MaxKeys: 1, ...(token ? { ContinuationToken: token } : {}) }));
    keys.push(...(r.Contents ?? []).map((c) => c.Key!));
    if (!r.IsTruncated) break;
    token = r.NextContinuationToken;
  }
  expect(keys).toEqual(['dir/', 'dir/x']);
}, 120_000);
