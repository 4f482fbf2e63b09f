/**
 * Browser-based uploads (POST Object) on a real cluster: forms built by hand
 * as a browser sends them (multipart/form-data, the file last), with a policy
 * document signed by the SigV4 algorithm (the signing key derived as in
 * gateways/s3/auth/signing.ts). Proves the accepted forms store the file
 * byte-exact with its metadata and ACL and answer as asked (204, 200, 201
 * with a PostResponse, 303 to a redirect), and that each policy violation,
 * a bad signature, a malformed form and a missing permission is refused with
 * S3's error and stores nothing.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, GetObjectAclCommand, GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { deriveSigningKey, signatureHex } from '../gateways/s3/auth/signing.js';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';
import { addUser, codeOf, errorOf, rawRequest, type TestUser } from './helpers/s3-access.js';

let env: S3TestEnv;
let s3: S3Client;
let other: TestUser;

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
  other = await addUser(env, 'other', 'other@example.com');
  await s3.send(new CreateBucketCommand({ Bucket: 'uploads' }));
  await s3.send(new CreateBucketCommand({ Bucket: 'open', ACL: 'public-read-write' }));
}, 120_000);
afterAll(async () => {
  await env?.stop();
});

const amzDateOf = (ms: number): string => new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');

interface Signer {
  accessKeyId: string;
  secretAccessKey: string;
}

/** The signed fields of a form: the policy (base64) and its SigV4 signature, as a browser-upload page gets them from its server. */
function signedFields(o: { conditions: unknown[]; expiresInMs?: number; signer?: Signer; extra?: Record<string, string>; tamper?: (policyBase64: string) => string }): Record<string, string> {
  const signer = o.signer ?? { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey };
  const now = Date.now();
  const amzDate = amzDateOf(now);
  const scope = { date: amzDate.slice(0, 8), region: 'us-east-1', service: 's3' };
  const credential = `${signer.accessKeyId}/${scope.date}/${scope.region}/s3/aws4_request`;
  const fields = { 'x-amz-algorithm': 'AWS4-HMAC-SHA256', 'x-amz-credential': credential, 'x-amz-date': amzDate };
  const policy = {
    expiration: new Date(now + (o.expiresInMs ?? 3600_000)).toISOString(),
    conditions: [...o.conditions, ...Object.entries(fields).map(([k, v]) => ({ [k]: v }))],
  };
  const policyBase64 = Buffer.from(JSON.stringify(policy)).toString('base64');
  const signature = signatureHex(deriveSigningKey(signer.secretAccessKey, scope), policyBase64);
  return { ...fields, ...o.extra, policy: o.tamper ? o.tamper(policyBase64) : policyBase64, 'x-amz-signature': signature };
}

/** A multipart/form-data body as browsers build it: the fields in order, then the file. */
function formBody(fields: Record<string, string>, file: { name: string; data: Buffer; contentType?: string } | null, boundary = `----TesseraForm${randomBytes(8).toString('hex')}`): { body: Buffer; contentType: string } {
  const parts: Buffer[] = [];
  for (const [name, value] of Object.entries(fields)) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`));
  }
  if (file) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${file.name}"\r\nContent-Type: ${file.contentType ?? 'application/octet-stream'}\r\n\r\n`));
    parts.push(file.data, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

function post(bucket: string, fields: Record<string, string>, file: { name: string; data: Buffer; contentType?: string } | null = { name: 'f.bin', data: Buffer.from('data') }) {
  const { body, contentType } = formBody(fields, file);
  return rawRequest(env.endpoint, { method: 'POST', path: `/${bucket}`, headers: { 'content-type': contentType, 'content-length': String(body.length) }, body });
}

async function exists(bucket: string, key: string): Promise<boolean> {
  const e = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).then(() => null, (err: { $metadata?: { httpStatusCode?: number } }) => err);
  if (e === null) return true;
  expect(e.$metadata?.httpStatusCode).toBe(404);
  return false;
}

const standard = () => [{ bucket: 'uploads' }, ['starts-with', '$key', 'user/'], ['content-length-range', 1, 10 * 1024 * 1024]];

it('stores a signed upload byte-exact with its metadata, ACL and ${filename}, and answers 201 with a PostResponse', async () => {
  const data = randomBytes(6 * 1024 * 1024 + 123); // several striper pieces
  const fields = signedFields({
    conditions: [...standard(), { acl: 'public-read' }, { success_action_status: '201' }, ['starts-with', '$Content-Type', 'image/'], ['starts-with', '$x-amz-meta-color', ''], { 'cache-control': 'max-age=60' }],
  });
  const res = await post('uploads', { key: 'user/${filename}', acl: 'public-read', success_action_status: '201', 'Content-Type': 'image/png', 'x-amz-meta-color': 'green', 'Cache-Control': 'max-age=60', ...fields }, { name: 'photo.png', data, contentType: 'image/png' });
  expect(res.status, res.body.toString()).toBe(201);
  const xml = res.body.toString();
  expect(xml).toContain('<Bucket>uploads</Bucket>');
  expect(xml).toContain('<Key>user/photo.png</Key>');
  expect(xml).toMatch(/<ETag>"[0-9a-f]{32}"<\/ETag>/);
  expect(res.headers.location).toBe(`${env.endpoint}/uploads/user/photo.png`);
  const got = await s3.send(new GetObjectCommand({ Bucket: 'uploads', Key: 'user/photo.png' }));
  expect(Buffer.from(await got.Body!.transformToByteArray()).equals(data)).toBe(true);
  expect(got.ContentType).toBe('image/png');
  expect(got.CacheControl).toBe('max-age=60');
  expect(got.Metadata?.color).toBe('green');
  expect(got.ETag).toBe(res.headers.etag);
  // public-read from the form's acl field: fetchable without a signature; owned by the policy's signer.
  expect((await fetch(`${env.endpoint}/uploads/user/photo.png`, { method: 'HEAD' })).status).toBe(200);
  expect((await s3.send(new GetObjectAclCommand({ Bucket: 'uploads', Key: 'user/photo.png' }))).Owner?.ID).toBe(env.userId);
});

it('answers 204 by default, 200 when asked, and 303 to success_action_redirect', async () => {
  const plain = await post('uploads', { key: 'user/a', ...signedFields({ conditions: standard() }) });
  expect(plain.status).toBe(204);
  expect(plain.body.length).toBe(0);
  const ok = await post('uploads', { key: 'user/b', success_action_status: '200', ...signedFields({ conditions: [...standard(), { success_action_status: '200' }] }) });
  expect(ok.status).toBe(200);
  const redirect = 'https://app.example.com/done?from=upload';
  const moved = await post('uploads', { key: 'user/c d', success_action_redirect: redirect, ...signedFields({ conditions: [...standard(), { success_action_redirect: redirect }] }) });
  expect(moved.status).toBe(303);
  const location = new URL(String(moved.headers.location));
  expect(location.origin + location.pathname).toBe('https://app.example.com/done');
  expect(location.searchParams.get('from')).toBe('upload');
  expect(location.searchParams.get('bucket')).toBe('uploads');
  expect(location.searchParams.get('key')).toBe('user/c d');
  expect(location.searchParams.get('etag')).toMatch(/^"[0-9a-f]{32}"$/);
  for (const key of ['user/a', 'user/b', 'user/c d']) expect(await exists('uploads', key)).toBe(true);
});

it('refuses every policy violation with S3 errors, and stores nothing', async () => {
  const cases: Array<[string, Record<string, string>, { name: string; data: Buffer } | null, number, string, RegExp?]> = [
    ['expired', { key: 'user/v1', ...signedFields({ conditions: standard(), expiresInMs: -1000 }) }, undefined!, 403, 'AccessDenied', /Policy expired/],
    ['key outside its prefix', { key: 'admin/v2', ...signedFields({ conditions: standard() }) }, undefined!, 403, 'AccessDenied', /Condition failed/],
    ['another bucket', { key: 'user/v3', ...signedFields({ conditions: [{ bucket: 'elsewhere' }, ['starts-with', '$key', 'user/']] }) }, undefined!, 403, 'AccessDenied', /Condition failed/],
    ['a field the policy does not name', { key: 'user/v4', 'x-amz-meta-extra': '1', ...signedFields({ conditions: standard() }) }, undefined!, 403, 'AccessDenied', /Extra input fields: x-amz-meta-extra/],
    ['acl other than the policy says', { key: 'user/v5', acl: 'public-read-write', ...signedFields({ conditions: [...standard(), { acl: 'private' }] }) }, undefined!, 403, 'AccessDenied', /Condition failed/],
    ['content-type outside starts-with', { key: 'user/v6', 'Content-Type': 'text/html', ...signedFields({ conditions: [...standard(), ['starts-with', '$Content-Type', 'image/']] }) }, undefined!, 403, 'AccessDenied'],
    ['too large', { key: 'user/v7', ...signedFields({ conditions: [{ bucket: 'uploads' }, ['starts-with', '$key', 'user/'], ['content-length-range', 1, 1000]] }) }, { name: 'big', data: randomBytes(5000) }, 400, 'EntityTooLarge'],
    ['too small', { key: 'user/v8', ...signedFields({ conditions: [{ bucket: 'uploads' }, ['starts-with', '$key', 'user/'], ['content-length-range', 100, 1000]] }) }, { name: 'small', data: randomBytes(10) }, 400, 'EntityTooSmall'],
    ['tampered policy', { key: 'user/v9', ...signedFields({ conditions: standard(), tamper: (p) => Buffer.from(Buffer.from(p, 'base64').toString().replace('user/', 'admin')).toString('base64') }) }, undefined!, 403, 'SignatureDoesNotMatch'],
    ['wrong secret', { key: 'user/v10', ...signedFields({ conditions: standard(), signer: { accessKeyId: env.accessKeyId, secretAccessKey: 'not-the-secret-at-all-00000' } }) }, undefined!, 403, 'SignatureDoesNotMatch'],
    ['unknown access key', { key: 'user/v11', ...signedFields({ conditions: standard(), signer: { accessKeyId: 'TKUNKNOWNUNKNOWN0000', secretAccessKey: 'whatever-whatever-whatever' } }) }, undefined!, 403, 'InvalidAccessKeyId'],
    ['a credential scoped to another service', { key: 'user/v12', ...signedFields({ conditions: standard() }), 'x-amz-credential': `${env.accessKeyId}/20250101/us-east-1/iam/aws4_request` }, undefined!, 400, 'InvalidArgument'],
    ['no signature', (({ 'x-amz-signature': _s, ...rest }) => ({ key: 'user/v13', ...rest }))(signedFields({ conditions: standard() })), undefined!, 400, 'InvalidArgument'],
    ['no key', signedFields({ conditions: standard() }), undefined!, 400, 'InvalidArgument'],
    ['no file', { key: 'user/v15', ...signedFields({ conditions: standard() }) }, null, 400, 'IncorrectNumberOfFilesInPostRequest'],
    ['SigV2 fields', { key: 'user/v16', AWSAccessKeyId: env.accessKeyId, policy: 'e30=', signature: 'abc' }, undefined!, 400, 'InvalidRequest'],
    ['an unsupported field', { key: 'user/v17', tagging: '<Tagging/>', ...signedFields({ conditions: [...standard(), ['starts-with', '$tagging', '']] }) }, undefined!, 501, 'NotImplemented'],
  ];
  for (const [what, fields, file, status, code, message] of cases) {
    const res = await post('uploads', fields, file === undefined ? undefined : file);
    expect(res.status, what).toBe(status);
    expect(codeOf(res.body), what).toBe(code);
    if (message) expect(res.body.toString(), what).toMatch(message);
  }
  for (let n = 1; n <= 17; n++) expect(await exists('uploads', `user/v${n}`)).toBe(false);
  expect(await exists('uploads', 'admin/v2')).toBe(false);
});

it('refuses a malformed policy document and a malformed form', async () => {
  // A policy that is signed but is not a policy: InvalidPolicyDocument.
  const signer = { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey };
  const amzDate = amzDateOf(Date.now());
  const scope = { date: amzDate.slice(0, 8), region: 'us-east-1', service: 's3' };
  for (const doc of ['{"conditions": []}', '{"expiration": "2030-01-01T00:00:00.000Z", "conditions": [["between", "$key", 1]]}', 'not json']) {
    const policy = Buffer.from(doc).toString('base64');
    const res = await post('uploads', {
      key: 'user/m',
      'x-amz-algorithm': 'AWS4-HMAC-SHA256',
      'x-amz-credential': `${signer.accessKeyId}/${scope.date}/us-east-1/s3/aws4_request`,
      'x-amz-date': amzDate,
      policy,
      'x-amz-signature': signatureHex(deriveSigningKey(signer.secretAccessKey, scope), policy),
    });
    expect(res.status, doc).toBe(400);
    expect(codeOf(res.body), doc).toBe('InvalidPolicyDocument');
  }
  // A body that ends inside the file part (no closing boundary): nothing is stored.
  const { body, contentType } = formBody({ key: 'user/cut', ...signedFields({ conditions: standard() }) }, { name: 'x', data: randomBytes(3000) });
  const cut = body.subarray(0, body.length - 40);
  const res = await rawRequest(env.endpoint, { method: 'POST', path: '/uploads', headers: { 'content-type': contentType, 'content-length': String(cut.length) }, body: cut });
  expect(res.status).toBe(400);
  expect(codeOf(res.body)).toBe('MalformedPOSTRequest');
  const noBoundary = await rawRequest(env.endpoint, { method: 'POST', path: '/uploads', headers: { 'content-type': 'multipart/form-data', 'content-length': '3' }, body: 'abc' });
  expect(codeOf(noBoundary.body)).toBe('MalformedPOSTRequest');
  expect(await exists('uploads', 'user/cut')).toBe(false);
  expect(await exists('uploads', 'user/m')).toBe(false);
});

it('decides by the bucket ACL who may upload: the signer, or anyone where AllUsers may write', async () => {
  // Another user's valid signature does not give it WRITE on a bucket it was not granted.
  const denied = await post('uploads', { key: 'user/by-other', ...signedFields({ conditions: standard(), signer: other }) });
  expect(denied.status).toBe(403);
  expect(codeOf(denied.body)).toBe('AccessDenied');
  expect(await exists('uploads', 'user/by-other')).toBe(false);
  // No policy at all: an anonymous upload, refused on a private bucket, accepted where AllUsers may write.
  const anonymous = await post('uploads', { key: 'user/anon' });
  expect(codeOf(anonymous.body)).toBe('AccessDenied');
  const open = await post('open', { key: 'dropped/${filename}' }, { name: 'note.txt', data: Buffer.from('left here') });
  expect(open.status).toBe(204);
  const got = await s3.send(new GetObjectCommand({ Bucket: 'open', Key: 'dropped/note.txt' }));
  expect(await got.Body!.transformToString()).toBe('left here');
  // Anonymous uploads belong to the bucket owner.
  expect((await s3.send(new GetObjectAclCommand({ Bucket: 'open', Key: 'dropped/note.txt' }))).Owner?.ID).toBe(env.userId);
  // A signed upload to a missing bucket.
  expect((await errorOf(s3.send(new HeadObjectCommand({ Bucket: 'missing-bucket', Key: 'k' })))).status).toBe(404);
  expect(codeOf((await post('missing-bucket', { key: 'k' })).body)).toBe('NoSuchBucket');
});
