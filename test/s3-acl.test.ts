/**
 * Access control as S3 clients use it, on a real cluster with two users and
 * anonymous callers: every canned ACL and every x-amz-grant-* form on buckets
 * and objects, what each allows and denies to the owner, another user and
 * anonymous (plain HTTP, no signature: a public-read object is fetchable like
 * with curl), Get/Put Bucket/Object ACL round trips through the AWS SDK, and
 * the errors (MalformedACLError, UnresolvableGrantByEmailAddress, ...).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetBucketAclCommand,
  GetBucketLocationCommand,
  GetObjectAclCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  PutBucketAclCommand,
  PutObjectAclCommand,
  PutObjectCommand,
  PutBucketVersioningCommand,
  type BucketCannedACL,
  type Grant,
  type S3Client,
} from '@aws-sdk/client-s3';
import { startS3Env, type S3TestEnv, bytes } from './helpers/s3.js';
import { addUser, codeOf, errorOf, rawRequest, type TestUser } from './helpers/s3-access.js';

const ALL_USERS = 'http://acs.amazonaws.com/groups/global/AllUsers';
const AUTHENTICATED_USERS = 'http://acs.amazonaws.com/groups/global/AuthenticatedUsers';
const LOG_DELIVERY = 'http://acs.amazonaws.com/groups/s3/LogDelivery';

let env: S3TestEnv;
let owner: S3Client;
let other: TestUser;

beforeAll(async () => {
  env = await startS3Env();
  owner = env.s3();
  other = await addUser(env, 'other', 'Other@Example.com');
}, 120_000);
afterAll(async () => {
  await env?.stop();
});

const anonymous = (method: string, path: string, body?: string) => rawRequest(env.endpoint, { method, path, ...(body !== undefined ? { body } : {}) });
const grantsOf = (grants: Grant[] | undefined) =>
  (grants ?? []).map((g) => `${g.Grantee?.Type}:${g.Grantee?.ID ?? g.Grantee?.URI}:${g.Permission}`).sort();

/** What each kind of caller may do with a bucket: list it, put into it. */
async function bucketAccess(bucket: string) {
  const can = async (p: Promise<unknown>) => p.then(() => true, () => false);
  const anonList = await anonymous('GET', `/${bucket}`);
  const anonPut = await anonymous('PUT', `/${bucket}/anon-${Math.random()}`, 'x');
  return {
    ownerList: await can(owner.send(new ListObjectsV2Command({ Bucket: bucket }))),
    otherList: await can(other.s3.send(new ListObjectsV2Command({ Bucket: bucket }))),
    otherPut: await can(other.s3.send(new PutObjectCommand({ Bucket: bucket, Key: `other-${Math.random()}`, Body: 'x' }))),
    anonList: anonList.status === 200,
    anonPut: anonPut.status === 200,
  };
}

describe('buckets', () => {
  it('are private by default: only the owner lists, writes and reads', async () => {
    await owner.send(new CreateBucketCommand({ Bucket: 'priv' }));
    await owner.send(new PutObjectCommand({ Bucket: 'priv', Key: 'k', Body: 'secret' }));
    expect(await bucketAccess('priv')).toEqual({ ownerList: true, otherList: false, otherPut: false, anonList: false, anonPut: false });
    expect((await errorOf(other.s3.send(new GetObjectCommand({ Bucket: 'priv', Key: 'k' })))).name).toBe('AccessDenied');
    expect((await errorOf(other.s3.send(new HeadBucketCommand({ Bucket: 'priv' })))).status).toBe(403);
    expect((await errorOf(other.s3.send(new DeleteObjectCommand({ Bucket: 'priv', Key: 'k' })))).name).toBe('AccessDenied');
    expect((await errorOf(other.s3.send(new GetBucketAclCommand({ Bucket: 'priv' })))).name).toBe('AccessDenied');
    expect((await errorOf(other.s3.send(new DeleteBucketCommand({ Bucket: 'priv' })))).name).toBe('AccessDenied');
    const anonGet = await anonymous('GET', '/priv/k');
    expect(anonGet.status).toBe(403);
    expect(codeOf(anonGet.body)).toBe('AccessDenied');
    // A key that does not exist is not revealed to who may not list.
    expect(codeOf((await anonymous('GET', '/priv/nope')).body)).toBe('AccessDenied');
    expect((await errorOf(owner.send(new GetObjectCommand({ Bucket: 'priv', Key: 'nope' })))).name).toBe('NoSuchKey');
    expect((await other.s3.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name) ?? []).not.toContain('priv');
    const acl = await owner.send(new GetBucketAclCommand({ Bucket: 'priv' }));
    expect(acl.Owner?.ID).toBe(env.userId);
    expect(acl.Owner?.DisplayName).toBe('tester');
    expect(grantsOf(acl.Grants)).toEqual([`CanonicalUser:${env.userId}:FULL_CONTROL`]);
  });

  it('honour each canned ACL given at creation', async () => {
    const cases: Array<[BucketCannedACL | 'log-delivery-write', string[], Awaited<ReturnType<typeof bucketAccess>>]> = [
      ['private', [], { ownerList: true, otherList: false, otherPut: false, anonList: false, anonPut: false }],
      ['public-read', [`Group:${ALL_USERS}:READ`], { ownerList: true, otherList: true, otherPut: false, anonList: true, anonPut: false }],
      ['public-read-write', [`Group:${ALL_USERS}:READ`, `Group:${ALL_USERS}:WRITE`], { ownerList: true, otherList: true, otherPut: true, anonList: true, anonPut: true }],
      ['authenticated-read', [`Group:${AUTHENTICATED_USERS}:READ`], { ownerList: true, otherList: true, otherPut: false, anonList: false, anonPut: false }],
      ['log-delivery-write', [`Group:${LOG_DELIVERY}:READ_ACP`, `Group:${LOG_DELIVERY}:WRITE`], { ownerList: true, otherList: false, otherPut: false, anonList: false, anonPut: false }],
    ];
    for (const [acl, extraGrants, expected] of cases) {
      const bucket = `canned-${acl}`;
      await owner.send(new CreateBucketCommand({ Bucket: bucket, ACL: acl as BucketCannedACL }));
      const got = await owner.send(new GetBucketAclCommand({ Bucket: bucket }));
      expect(grantsOf(got.Grants), acl).toEqual([`CanonicalUser:${env.userId}:FULL_CONTROL`, ...extraGrants].sort());
      expect(await bucketAccess(bucket), acl).toEqual(expected);
    }
    // What an anonymous writer stores belongs to the bucket's owner, private unless it asks otherwise.
    const listed = await owner.send(new ListObjectsV2Command({ Bucket: 'canned-public-read-write', Prefix: 'anon-', FetchOwner: true }));
    expect(listed.Contents?.[0]?.Owner?.ID).toBe(env.userId);
    expect((await errorOf(owner.send(new CreateBucketCommand({ Bucket: 'bad-canned', ACL: 'world-writable' as BucketCannedACL })))).name).toBe('InvalidArgument');
  });

  it('honour explicit grants by id, email and group', async () => {
    await owner.send(new CreateBucketCommand({ Bucket: 'grant-read', GrantRead: `id="${other.userId}"`, GrantFullControl: `id=${env.userId}` }));
    expect(await bucketAccess('grant-read')).toMatchObject({ ownerList: true, otherList: true, otherPut: false, anonList: false });
    // Grants replace the default: the owner keeps what it granted itself, and READ_ACP/WRITE_ACP always.
    await owner.send(new CreateBucketCommand({ Bucket: 'grant-write', GrantWrite: `emailAddress="other@example.com"`, GrantReadACP: `uri="${AUTHENTICATED_USERS}"` }));
    const acl = await other.s3.send(new GetBucketAclCommand({ Bucket: 'grant-write' }));
    expect(grantsOf(acl.Grants)).toEqual([`CanonicalUser:${other.userId}:WRITE`, `Group:${AUTHENTICATED_USERS}:READ_ACP`].sort());
    expect(acl.Grants?.find((g) => g.Permission === 'WRITE')?.Grantee?.DisplayName).toBe('other');
    expect(await bucketAccess('grant-write')).toMatchObject({ ownerList: false, otherList: false, otherPut: true, anonList: false });
    expect((await errorOf(other.s3.send(new PutBucketAclCommand({ Bucket: 'grant-write', ACL: 'public-read' })))).name).toBe('AccessDenied');
    await owner.send(new PutBucketAclCommand({ Bucket: 'grant-write', GrantWriteACP: `id="${other.userId}"`, GrantFullControl: `id="${env.userId}"` }));
    await other.s3.send(new PutBucketAclCommand({ Bucket: 'grant-write', ACL: 'public-read' }));
    // WRITE_ACP is not ownership: the bucket is still the owner's, and only the owner may delete it or read its location.
    expect(grantsOf((await owner.send(new GetBucketAclCommand({ Bucket: 'grant-write' }))).Grants)).toEqual([`CanonicalUser:${env.userId}:FULL_CONTROL`, `Group:${ALL_USERS}:READ`].sort());
    await owner.send(new PutBucketAclCommand({ Bucket: 'grant-write', GrantFullControl: `id="${other.userId}", id="${env.userId}"` }));
    expect((await errorOf(other.s3.send(new DeleteBucketCommand({ Bucket: 'grant-write' })))).name).toBe('AccessDenied');
    expect((await errorOf(other.s3.send(new GetBucketLocationCommand({ Bucket: 'grant-write' })))).name).toBe('AccessDenied');
    await owner.send(new CreateBucketCommand({ Bucket: 'grant-public', GrantRead: `uri="${ALL_USERS}"` }));
    expect((await anonymous('GET', '/grant-public')).status).toBe(200);

    expect((await errorOf(owner.send(new CreateBucketCommand({ Bucket: 'grant-bad1', GrantRead: 'emailAddress="nobody@example.com"' })))).name).toBe('UnresolvableGrantByEmailAddress');
    expect((await errorOf(owner.send(new CreateBucketCommand({ Bucket: 'grant-bad2', GrantRead: `id="${'0'.repeat(64)}"` })))).name).toBe('InvalidArgument');
    expect((await errorOf(owner.send(new CreateBucketCommand({ Bucket: 'grant-bad3', GrantRead: 'uri="http://example.com/group"' })))).name).toBe('InvalidArgument');
    expect((await errorOf(owner.send(new CreateBucketCommand({ Bucket: 'grant-bad4', GrantRead: 'nonsense' })))).name).toBe('InvalidArgument');
    expect((await errorOf(owner.send(new CreateBucketCommand({ Bucket: 'grant-bad5', ACL: 'public-read', GrantRead: `id="${other.userId}"` })))).name).toBe('InvalidRequest');
    for (const name of ['grant-bad1', 'grant-bad2', 'grant-bad3', 'grant-bad4', 'grant-bad5']) expect(await env.gateway.services.buckets.get(name)).toBeNull();
  });

  it('round-trip an AccessControlPolicy through PutBucketAcl and GetBucketAcl', async () => {
    await owner.send(new CreateBucketCommand({ Bucket: 'policy-doc' }));
    const Owner = { ID: env.userId };
    await owner.send(
      new PutBucketAclCommand({
        Bucket: 'policy-doc',
        AccessControlPolicy: {
          Owner,
          Grants: [
            { Grantee: { Type: 'CanonicalUser', ID: env.userId }, Permission: 'FULL_CONTROL' },
            { Grantee: { Type: 'AmazonCustomerByEmail', EmailAddress: 'other@EXAMPLE.com' }, Permission: 'READ' },
            { Grantee: { Type: 'Group', URI: AUTHENTICATED_USERS }, Permission: 'READ_ACP' },
          ],
        },
      }),
    );
    const got = await owner.send(new GetBucketAclCommand({ Bucket: 'policy-doc' }));
    expect(grantsOf(got.Grants)).toEqual([`CanonicalUser:${env.userId}:FULL_CONTROL`, `CanonicalUser:${other.userId}:READ`, `Group:${AUTHENTICATED_USERS}:READ_ACP`].sort());
    // What GetBucketAcl returns, PutBucketAcl takes back unchanged.
    await owner.send(new PutBucketAclCommand({ Bucket: 'policy-doc', AccessControlPolicy: { Owner: got.Owner!, Grants: got.Grants! } }));
    expect(grantsOf((await owner.send(new GetBucketAclCommand({ Bucket: 'policy-doc' }))).Grants)).toEqual(grantsOf(got.Grants));
    expect(await bucketAccess('policy-doc')).toMatchObject({ ownerList: true, otherList: true, otherPut: false, anonList: false });

    const put = (Grants: Grant[], owner_ = Owner) => owner.send(new PutBucketAclCommand({ Bucket: 'policy-doc', AccessControlPolicy: { Owner: owner_, Grants } }));
    expect((await errorOf(put([{ Grantee: { Type: 'CanonicalUser', ID: env.userId }, Permission: 'EVERYTHING' as 'READ' }]))).name).toBe('MalformedACLError');
    expect((await errorOf(put([{ Grantee: { Type: 'CanonicalUser' }, Permission: 'READ' }]))).name).toBe('MalformedACLError');
    expect((await errorOf(put([], { ID: other.userId }))).name).toBe('AccessDenied');
    expect((await errorOf(put([{ Grantee: { Type: 'AmazonCustomerByEmail', EmailAddress: 'ghost@example.com' }, Permission: 'READ' }]))).name).toBe('UnresolvableGrantByEmailAddress');
    expect((await errorOf(put(Array.from({ length: 101 }, () => ({ Grantee: { Type: 'Group', URI: ALL_USERS }, Permission: 'READ' as const }))))).name).toBe('MalformedACLError');
    expect((await errorOf(owner.send(new PutBucketAclCommand({ Bucket: 'policy-doc' })))).name).toBe('MalformedACLError');
    // Nothing of the refused documents was applied.
    expect(grantsOf((await owner.send(new GetBucketAclCommand({ Bucket: 'policy-doc' }))).Grants)).toEqual(grantsOf(got.Grants));
  });
});

describe('objects', () => {
  beforeAll(async () => {
    await owner.send(new CreateBucketCommand({ Bucket: 'objs' }));
  });

  it('a public-read object is fetchable with no signature at all; a private one is not', async () => {
    const body = Buffer.from('hello, world wide web');
    await owner.send(new PutObjectCommand({ Bucket: 'objs', Key: 'pub/index.html', Body: body, ACL: 'public-read', ContentType: 'text/html' }));
    await owner.send(new PutObjectCommand({ Bucket: 'objs', Key: 'priv.txt', Body: 'no' }));
    const res = await fetch(`${env.endpoint}/objs/pub/index.html`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html');
    expect(Buffer.from(await res.arrayBuffer()).equals(body)).toBe(true);
    expect((await fetch(`${env.endpoint}/objs/pub/index.html`, { method: 'HEAD' })).status).toBe(200);
    expect((await fetch(`${env.endpoint}/objs/pub/index.html`, { headers: { range: 'bytes=0-4' } })).status).toBe(206);
    expect((await fetch(`${env.endpoint}/objs/priv.txt`)).status).toBe(403);
    // Reading one object is not listing the bucket, nor writing or deleting in it.
    expect((await fetch(`${env.endpoint}/objs`)).status).toBe(403);
    expect((await fetch(`${env.endpoint}/objs/pub/index.html`, { method: 'PUT', body: 'overwrite' })).status).toBe(403);
    expect((await fetch(`${env.endpoint}/objs/pub/index.html`, { method: 'DELETE' })).status).toBe(403);
    // Anonymous readers may not ask for response header overrides (S3's rule).
    const override = await fetch(`${env.endpoint}/objs/pub/index.html?response-content-type=text/plain`);
    expect(override.status).toBe(400);
    expect(codeOf(await override.text())).toBe('InvalidRequest');
    expect(await (await other.s3.send(new GetObjectCommand({ Bucket: 'objs', Key: 'pub/index.html' }))).Body?.transformToString()).toBe(body.toString());
    expect((await errorOf(other.s3.send(new GetObjectCommand({ Bucket: 'objs', Key: 'priv.txt' })))).name).toBe('AccessDenied');
    // Overwriting without an ACL makes the object private again (an ACL belongs to the object written).
    await owner.send(new PutObjectCommand({ Bucket: 'objs', Key: 'pub/index.html', Body: body }));
    expect((await fetch(`${env.endpoint}/objs/pub/index.html`)).status).toBe(403);
  });

  it('honour authenticated-read and explicit grants', async () => {
    await owner.send(new PutObjectCommand({ Bucket: 'objs', Key: 'auth.txt', Body: 'members', ACL: 'authenticated-read' }));
    expect(await (await other.s3.send(new GetObjectCommand({ Bucket: 'objs', Key: 'auth.txt' }))).Body?.transformToString()).toBe('members');
    expect((await fetch(`${env.endpoint}/objs/auth.txt`)).status).toBe(403);
    await owner.send(new PutObjectCommand({ Bucket: 'objs', Key: 'granted.txt', Body: 'for other', GrantRead: `emailAddress="other@example.com"`, GrantReadACP: `id="${other.userId}"` }));
    await other.s3.send(new HeadObjectCommand({ Bucket: 'objs', Key: 'granted.txt' }));
    const acl = await other.s3.send(new GetObjectAclCommand({ Bucket: 'objs', Key: 'granted.txt' }));
    expect(acl.Owner?.ID).toBe(env.userId);
    expect(grantsOf(acl.Grants)).toEqual([`CanonicalUser:${other.userId}:READ`, `CanonicalUser:${other.userId}:READ_ACP`]);
    // The owner granted itself nothing here, but keeps READ_ACP and WRITE_ACP on what it owns.
    expect((await errorOf(owner.send(new GetObjectCommand({ Bucket: 'objs', Key: 'granted.txt' })))).name).toBe('AccessDenied');
    await owner.send(new GetObjectAclCommand({ Bucket: 'objs', Key: 'granted.txt' }));
    expect((await errorOf(other.s3.send(new PutObjectAclCommand({ Bucket: 'objs', Key: 'granted.txt', ACL: 'public-read' })))).name).toBe('AccessDenied');
    await owner.send(new PutObjectAclCommand({ Bucket: 'objs', Key: 'granted.txt', ACL: 'private' }));
    expect(await (await owner.send(new GetObjectCommand({ Bucket: 'objs', Key: 'granted.txt' }))).Body?.transformToString()).toBe('for other');
    expect((await errorOf(other.s3.send(new GetObjectCommand({ Bucket: 'objs', Key: 'granted.txt' })))).name).toBe('AccessDenied');
    expect((await errorOf(owner.send(new PutObjectCommand({ Bucket: 'objs', Key: 'bad.txt', Body: 'x', GrantRead: 'emailAddress="ghost@example.com"' })))).name).toBe('UnresolvableGrantByEmailAddress');
    expect((await errorOf(owner.send(new HeadObjectCommand({ Bucket: 'objs', Key: 'bad.txt' })))).status).toBe(404);
  });

  it('bucket-owner-read and bucket-owner-full-control give the bucket owner objects others wrote', async () => {
    await owner.send(new CreateBucketCommand({ Bucket: 'dropbox', GrantWrite: `id="${other.userId}"`, GrantFullControl: `id="${env.userId}"` }));
    await other.s3.send(new PutObjectCommand({ Bucket: 'dropbox', Key: 'mine', Body: 'other only' }));
    await other.s3.send(new PutObjectCommand({ Bucket: 'dropbox', Key: 'readable', Body: 'owner may read', ACL: 'bucket-owner-read' }));
    await other.s3.send(new PutObjectCommand({ Bucket: 'dropbox', Key: 'full', Body: 'owner has all', ACL: 'bucket-owner-full-control' }));
    // The writer owns what it wrote; the bucket owner sees it listed, but reads only what it was given.
    const listed = await owner.send(new ListObjectsV2Command({ Bucket: 'dropbox', FetchOwner: true }));
    expect(listed.Contents?.map((c) => [c.Key, c.Owner?.ID])).toEqual([['full', other.userId], ['mine', other.userId], ['readable', other.userId]]);
    expect((await errorOf(owner.send(new GetObjectCommand({ Bucket: 'dropbox', Key: 'mine' })))).name).toBe('AccessDenied');
    expect(await (await owner.send(new GetObjectCommand({ Bucket: 'dropbox', Key: 'readable' }))).Body?.transformToString()).toBe('owner may read');
    expect((await errorOf(owner.send(new GetObjectAclCommand({ Bucket: 'dropbox', Key: 'readable' })))).name).toBe('AccessDenied');
    const full = await owner.send(new GetObjectAclCommand({ Bucket: 'dropbox', Key: 'full' }));
    expect(full.Owner?.ID).toBe(other.userId);
    expect(grantsOf(full.Grants)).toEqual([`CanonicalUser:${env.userId}:FULL_CONTROL`, `CanonicalUser:${other.userId}:FULL_CONTROL`].sort());
    await owner.send(new PutObjectAclCommand({ Bucket: 'dropbox', Key: 'full', ACL: 'public-read' }));
    expect(await (await fetch(`${env.endpoint}/dropbox/full`)).text()).toBe('owner has all');
    // WRITE on the bucket lets its owner delete anything in it.
    await owner.send(new DeleteObjectCommand({ Bucket: 'dropbox', Key: 'mine' }));
    // The other user may not list (no READ on the bucket).
    expect((await errorOf(other.s3.send(new ListObjectsV2Command({ Bucket: 'dropbox' })))).name).toBe('AccessDenied');
  });

  it('round-trip an object AccessControlPolicy with the SDK', async () => {
    await owner.send(new PutObjectCommand({ Bucket: 'objs', Key: 'doc.txt', Body: 'document' }));
    await owner.send(
      new PutObjectAclCommand({
        Bucket: 'objs',
        Key: 'doc.txt',
        AccessControlPolicy: {
          Owner: { ID: env.userId },
          Grants: [
            { Grantee: { Type: 'CanonicalUser', ID: env.userId }, Permission: 'FULL_CONTROL' },
            { Grantee: { Type: 'Group', URI: ALL_USERS }, Permission: 'READ' },
            { Grantee: { Type: 'CanonicalUser', ID: other.userId }, Permission: 'WRITE_ACP' },
          ],
        },
      }),
    );
    const got = await owner.send(new GetObjectAclCommand({ Bucket: 'objs', Key: 'doc.txt' }));
    expect(grantsOf(got.Grants)).toEqual([`CanonicalUser:${env.userId}:FULL_CONTROL`, `Group:${ALL_USERS}:READ`, `CanonicalUser:${other.userId}:WRITE_ACP`].sort());
    expect((await fetch(`${env.endpoint}/objs/doc.txt`)).status).toBe(200);
    // The data and metadata are untouched by an ACL change.
    expect(await (await owner.send(new GetObjectCommand({ Bucket: 'objs', Key: 'doc.txt' }))).Body?.transformToString()).toBe('document');
    // WRITE_ACP lets the other user change the ACL (not read it).
    await other.s3.send(new PutObjectAclCommand({ Bucket: 'objs', Key: 'doc.txt', ACL: 'private' }));
    expect((await errorOf(other.s3.send(new GetObjectAclCommand({ Bucket: 'objs', Key: 'doc.txt' })))).name).toBe('AccessDenied');
    expect((await fetch(`${env.endpoint}/objs/doc.txt`)).status).toBe(403);
    expect((await errorOf(owner.send(new GetObjectAclCommand({ Bucket: 'objs', Key: 'missing' })))).name).toBe('NoSuchKey');
    expect((await errorOf(owner.send(new PutObjectAclCommand({ Bucket: 'objs', Key: 'doc.txt', AccessControlPolicy: { Owner: { ID: env.userId }, Grants: [{ Grantee: { Type: 'Group', URI: 'http://example.com/x' }, Permission: 'READ' }] } })))).name).toBe('InvalidArgument');
    const bytesBack = await bytes((await owner.send(new GetObjectCommand({ Bucket: 'objs', Key: 'doc.txt' }))).Body);
    expect(bytesBack.toString()).toBe('document');
  });

  it('keep an ACL per version: PutObjectAcl and GetObjectAcl take a versionId', async () => {
    await owner.send(new CreateBucketCommand({ Bucket: 'versioned' }));
    await owner.send(new PutBucketVersioningCommand({ Bucket: 'versioned', VersioningConfiguration: { Status: 'Enabled' } }));
    const v1 = (await owner.send(new PutObjectCommand({ Bucket: 'versioned', Key: 'k', Body: 'one' }))).VersionId!;
    const v2 = (await owner.send(new PutObjectCommand({ Bucket: 'versioned', Key: 'k', Body: 'two', ACL: 'public-read' }))).VersionId!;
    expect(await (await fetch(`${env.endpoint}/versioned/k`)).text()).toBe('two');
    expect((await fetch(`${env.endpoint}/versioned/k?versionId=${v1}`)).status).toBe(403);
    await owner.send(new PutObjectAclCommand({ Bucket: 'versioned', Key: 'k', VersionId: v1, ACL: 'public-read' }));
    expect(await (await fetch(`${env.endpoint}/versioned/k?versionId=${v1}`)).text()).toBe('one');
    const acl1 = await owner.send(new GetObjectAclCommand({ Bucket: 'versioned', Key: 'k', VersionId: v1 }));
    expect(grantsOf(acl1.Grants)).toEqual([`CanonicalUser:${env.userId}:FULL_CONTROL`, `Group:${ALL_USERS}:READ`]);
    // The current version's ACL is its own: making it private leaves v1 public.
    await owner.send(new PutObjectAclCommand({ Bucket: 'versioned', Key: 'k', ACL: 'private' }));
    expect((await fetch(`${env.endpoint}/versioned/k`)).status).toBe(403);
    expect((await fetch(`${env.endpoint}/versioned/k?versionId=${v2}`)).status).toBe(403);
    expect((await fetch(`${env.endpoint}/versioned/k?versionId=${v1}`)).status).toBe(200);
    expect((await errorOf(owner.send(new GetObjectAclCommand({ Bucket: 'versioned', Key: 'k', VersionId: '0'.repeat(32) })))).name).toBe('NoSuchVersion');
  });

  it('apply the ACL a multipart upload asks for', async () => {
    const up = await owner.send(new CreateMultipartUploadCommand({ Bucket: 'objs', Key: 'multi', ACL: 'public-read' }));
    const part = await owner.send(new UploadPartCommand({ Bucket: 'objs', Key: 'multi', UploadId: up.UploadId!, PartNumber: 1, Body: 'in parts' }));
    await owner.send(new CompleteMultipartUploadCommand({ Bucket: 'objs', Key: 'multi', UploadId: up.UploadId!, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag! }] } }));
    expect(await (await fetch(`${env.endpoint}/objs/multi`)).text()).toBe('in parts');
  });
});
