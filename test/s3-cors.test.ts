/**
 * Bucket CORS on a real cluster: Put/Get/DeleteBucketCors through the AWS SDK
 * (round trip, validation errors, owner only), preflights as a browser sends
 * them (OPTIONS with Origin and Access-Control-Request-*, no signature):
 * allowed by the first matching rule (wildcard origins, allowed headers) or
 * refused with 403 CORSForbidden; and the Access-Control-* headers on actual
 * requests (success and errors) whose Origin a rule allows, absent otherwise.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  CreateBucketCommand,
  DeleteBucketCorsCommand,
  GetBucketCorsCommand,
  PutBucketCorsCommand,
  PutObjectCommand,
  type CORSRule,
  type S3Client,
} from '@aws-sdk/client-s3';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';
import { addUser, codeOf, errorOf, rawRequest, type TestUser } from './helpers/s3-access.js';

let env: S3TestEnv;
let s3: S3Client;
let other: TestUser;

const rules: CORSRule[] = [
  {
    ID: 'web-app',
    AllowedOrigins: ['https://app.example.com', 'http://*.example.org'],
    AllowedMethods: ['GET', 'PUT', 'POST', 'HEAD'],
    AllowedHeaders: ['Content-Type', 'x-amz-*'],
    ExposeHeaders: ['ETag', 'x-amz-meta-color'],
    MaxAgeSeconds: 600,
  },
  { AllowedOrigins: ['*'], AllowedMethods: ['GET'] },
];

beforeAll(async () => {
  env = await startS3Env();
  s3 = env.s3();
  other = await addUser(env, 'other', 'other@example.com');
  await s3.send(new CreateBucketCommand({ Bucket: 'site' }));
  await s3.send(new CreateBucketCommand({ Bucket: 'nocors' }));
  await s3.send(new PutObjectCommand({ Bucket: 'site', Key: 'app.js', Body: 'console.log(1)', ACL: 'public-read', ContentType: 'text/javascript' }));
  await s3.send(new PutObjectCommand({ Bucket: 'site', Key: 'private.txt', Body: 'no' }));
  await s3.send(new PutBucketCorsCommand({ Bucket: 'site', CORSConfiguration: { CORSRules: rules } }));
}, 120_000);
afterAll(async () => {
  await env?.stop();
});

const preflight = (path: string, headers: Record<string, string>) => rawRequest(env.endpoint, { method: 'OPTIONS', path, headers });

it('round-trips the configuration, and only the owner may set, read or delete it', async () => {
  const got = await s3.send(new GetBucketCorsCommand({ Bucket: 'site' }));
  expect(got.CORSRules).toEqual([
    { ID: 'web-app', AllowedOrigins: rules[0]!.AllowedOrigins, AllowedMethods: rules[0]!.AllowedMethods, AllowedHeaders: rules[0]!.AllowedHeaders, ExposeHeaders: rules[0]!.ExposeHeaders, MaxAgeSeconds: 600 },
    { AllowedOrigins: ['*'], AllowedMethods: ['GET'] },
  ]);
  expect((await errorOf(other.s3.send(new GetBucketCorsCommand({ Bucket: 'site' })))).name).toBe('AccessDenied');
  expect((await errorOf(other.s3.send(new PutBucketCorsCommand({ Bucket: 'site', CORSConfiguration: { CORSRules: rules } })))).name).toBe('AccessDenied');
  expect((await errorOf(other.s3.send(new DeleteBucketCorsCommand({ Bucket: 'site' })))).name).toBe('AccessDenied');
  expect((await errorOf(s3.send(new GetBucketCorsCommand({ Bucket: 'nocors' })))).name).toBe('NoSuchCORSConfiguration');
});

it('refuses invalid configurations as S3 does, and keeps the one it had', async () => {
  const put = (CORSRules: CORSRule[]) => errorOf(s3.send(new PutBucketCorsCommand({ Bucket: 'site', CORSConfiguration: { CORSRules } })));
  expect((await put([{ AllowedOrigins: ['*'], AllowedMethods: ['PATCH'] }])).name).toBe('InvalidRequest');
  expect((await put([{ AllowedOrigins: ['http://*.*.example.com'], AllowedMethods: ['GET'] }])).name).toBe('InvalidRequest');
  expect((await put([{ AllowedOrigins: ['*'], AllowedMethods: ['GET'], AllowedHeaders: ['x-*-*'] }])).name).toBe('InvalidRequest');
  expect((await put([{ AllowedOrigins: ['*'], AllowedMethods: ['GET'], ExposeHeaders: ['*'] }])).name).toBe('InvalidRequest');
  expect((await put([{ AllowedOrigins: [], AllowedMethods: ['GET'] }])).name).toBe('MalformedXML');
  expect((await put([])).name).toBe('MalformedXML');
  expect((await put(Array.from({ length: 101 }, () => ({ AllowedOrigins: ['*'], AllowedMethods: ['GET'] })))).name).toBe('InvalidRequest');
  expect((await s3.send(new GetBucketCorsCommand({ Bucket: 'site' }))).CORSRules).toHaveLength(2);
});

it('answers preflights from the first matching rule', async () => {
  const allowed = await preflight('/site/upload/photo.png', { origin: 'https://app.example.com', 'access-control-request-method': 'PUT', 'access-control-request-headers': 'content-type, x-amz-meta-color' });
  expect(allowed.status).toBe(200);
  expect(allowed.headers['access-control-allow-origin']).toBe('https://app.example.com');
  expect(allowed.headers['access-control-allow-methods']).toBe('GET, PUT, POST, HEAD');
  expect(allowed.headers['access-control-allow-headers']).toBe('content-type, x-amz-meta-color');
  expect(allowed.headers['access-control-expose-headers']).toBe('ETag, x-amz-meta-color');
  expect(allowed.headers['access-control-max-age']).toBe('600');
  expect(allowed.headers['access-control-allow-credentials']).toBe('true');
  expect(allowed.headers.vary).toContain('Origin');
  // One wildcard in an origin; the bucket itself (POST of a browser form) as well as keys.
  const wildcard = await preflight('/site', { origin: 'http://cdn.example.org', 'access-control-request-method': 'POST' });
  expect(wildcard.status).toBe(200);
  expect(wildcard.headers['access-control-allow-origin']).toBe('http://cdn.example.org');
  // The catch-all rule: any origin may GET; it answers '*' and no credentials.
  const anyone = await preflight('/site/app.js', { origin: 'https://elsewhere.net', 'access-control-request-method': 'GET' });
  expect(anyone.status).toBe(200);
  expect(anyone.headers['access-control-allow-origin']).toBe('*');
  expect(anyone.headers['access-control-allow-credentials']).toBeUndefined();

  const refused: Array<[string, Record<string, string>]> = [
    ['a method no rule allows', { origin: 'https://app.example.com', 'access-control-request-method': 'DELETE' }],
    ['a header no rule allows', { origin: 'https://app.example.com', 'access-control-request-method': 'PUT', 'access-control-request-headers': 'x-custom' }],
    ['an origin only the GET rule covers', { origin: 'https://elsewhere.net', 'access-control-request-method': 'PUT' }],
    ['a scheme the wildcard does not cover', { origin: 'https://cdn.example.org', 'access-control-request-method': 'PUT' }],
  ];
  for (const [what, headers] of refused) {
    const res = await preflight('/site/k', headers);
    expect(res.status, what).toBe(403);
    expect(codeOf(res.body), what).toBe('CORSForbidden');
    expect(res.headers['access-control-allow-origin'], what).toBeUndefined();
  }
  const noConfig = await preflight('/nocors/k', { origin: 'https://app.example.com', 'access-control-request-method': 'GET' });
  expect(noConfig.status).toBe(403);
  expect(codeOf(noConfig.body)).toBe('CORSForbidden');
  expect(codeOf((await preflight('/site/k', { 'access-control-request-method': 'GET' })).body)).toBe('BadRequest');
  expect(codeOf((await preflight('/site/k', { origin: 'https://app.example.com' })).body)).toBe('BadRequest');
  expect(codeOf((await preflight('/no-such-bucket/k', { origin: 'https://app.example.com', 'access-control-request-method': 'GET' })).body)).toBe('NoSuchBucket');
});

it('adds Access-Control-* headers to actual requests whose Origin a rule allows, errors included', async () => {
  const get = await rawRequest(env.endpoint, { method: 'GET', path: '/site/app.js', headers: { origin: 'https://app.example.com' } });
  expect(get.status).toBe(200);
  expect(get.body.toString()).toBe('console.log(1)');
  expect(get.headers['access-control-allow-origin']).toBe('https://app.example.com');
  expect(get.headers['access-control-expose-headers']).toBe('ETag, x-amz-meta-color');
  expect(get.headers['access-control-allow-credentials']).toBe('true');
  const any = await rawRequest(env.endpoint, { method: 'GET', path: '/site/app.js', headers: { origin: 'https://elsewhere.net' } });
  expect(any.headers['access-control-allow-origin']).toBe('*');
  // An error a browser should be able to read carries them too.
  const denied = await rawRequest(env.endpoint, { method: 'GET', path: '/site/private.txt', headers: { origin: 'https://app.example.com' } });
  expect(denied.status).toBe(403);
  expect(denied.headers['access-control-allow-origin']).toBe('https://app.example.com');
  // No Origin, an origin no rule allows for the method, a bucket without rules: no CORS headers.
  const plain = await rawRequest(env.endpoint, { method: 'GET', path: '/site/app.js' });
  expect(plain.headers['access-control-allow-origin']).toBeUndefined();
  const wrongMethod = await rawRequest(env.endpoint, { method: 'DELETE', path: '/site/app.js', headers: { origin: 'https://elsewhere.net' } });
  expect(wrongMethod.status).toBe(403);
  expect(wrongMethod.headers['access-control-allow-origin']).toBeUndefined();
  const noRules = await rawRequest(env.endpoint, { method: 'GET', path: '/nocors/x', headers: { origin: 'https://app.example.com' } });
  expect(noRules.headers['access-control-allow-origin']).toBeUndefined();
});

it('stops answering preflights once the configuration is deleted', async () => {
  await s3.send(new DeleteBucketCorsCommand({ Bucket: 'site' }));
  expect((await errorOf(s3.send(new GetBucketCorsCommand({ Bucket: 'site' })))).name).toBe('NoSuchCORSConfiguration');
  const res = await preflight('/site/app.js', { origin: 'https://app.example.com', 'access-control-request-method': 'GET' });
  expect(res.status).toBe(403);
  expect(codeOf(res.body)).toBe('CORSForbidden');
  const get = await rawRequest(env.endpoint, { method: 'GET', path: '/site/app.js', headers: { origin: 'https://app.example.com' } });
  expect(get.status).toBe(200);
  expect(get.headers['access-control-allow-origin']).toBeUndefined();
});
