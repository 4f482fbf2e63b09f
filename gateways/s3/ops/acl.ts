/**
 * ACL operations: GetBucketAcl / PutBucketAcl / GetObjectAcl / PutObjectAcl,
 * and the ACL a new bucket or object asks for in its request headers.
 *
 * A PUT ?acl takes either headers (x-amz-acl, x-amz-grant-*) or an
 * AccessControlPolicy document, never both; the document's Owner must be the
 * resource's owner (an ACL never changes ownership). Grantee types are told
 * by their element (ID, URI, EmailAddress), so xsi:type need not be parsed.
 * An object's ACL (the current one's, or a version's by versionId) is changed
 * in place with a compare-and-set on its index entries (VersionIndex.update),
 * so a concurrent overwrite is never undone.
 */
import { authorizeBucket, authorizeObject } from '../access.js';
import { aclFromHeaders, permissions, resolveGrants, storedAcl, type Acl, type Grantee, type Permission } from '../acl.js';
import { requestHeaders } from '../auth/index.js';
import type { S3Context, S3Response } from '../context.js';
import { s3Error } from '../errors.js';
import { isDeleteMarker } from '../meta/versions.js';
import type { Operation } from '../router.js';
import { escapeXml, parseXmlDocument, xmlList } from '../xml.js';
import { requestedEntry, requestedVersion, versionIdHeader, versionsOf } from './versions.js';
import { readVerifiedBody, xmlHeaders } from './util.js';

const ACL_DOCUMENT_BYTES_MAX = 64 * 1024;
const XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"';

/** An AccessControlPolicy document (built by hand: grantees carry an xsi:type attribute). */
async function policyDocument(ctx: S3Context, owner: string, acl: Acl): Promise<string> {
  const names = new Map<string, string>();
  const nameOf = async (id: string): Promise<string> => {
    if (!names.has(id)) names.set(id, (await ctx.services.users.get(id))?.displayName ?? '');
    return escapeXml(names.get(id)!);
  };
  const out = ['<?xml version="1.0" encoding="UTF-8"?>\n<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'];
  out.push(`<Owner><ID>${escapeXml(owner)}</ID><DisplayName>${await nameOf(owner)}</DisplayName></Owner><AccessControlList>`);
  for (const g of acl.grants) {
    const grantee =
      'id' in g.grantee
        ? `<Grantee ${XSI} xsi:type="CanonicalUser"><ID>${escapeXml(g.grantee.id)}</ID><DisplayName>${await nameOf(g.grantee.id)}</DisplayName></Grantee>`
        : `<Grantee ${XSI} xsi:type="Group"><URI>${escapeXml(g.grantee.uri)}</URI></Grantee>`;
    out.push(`<Grant>${grantee}<Permission>${g.permission}</Permission></Grant>`);
  }
  out.push('</AccessControlList></AccessControlPolicy>');
  return out.join('');
}

const malformed = (why: string) => s3Error('MalformedACLError', `The XML you provided was not well-formed or did not validate against our published schema (${why}).`);

const text = (v: unknown): string | undefined => (typeof v === 'string' ? v.trim() : undefined);

function parseGrant(raw: unknown): { grantee: Grantee | { email: string }; permission: Permission } {
  if (typeof raw !== 'object' || raw === null) throw malformed('a Grant needs a Grantee and a Permission');
  const { Grantee: g, Permission: p } = raw as Record<string, unknown>;
  const permission = text(p);
  if (!permission || !(permissions as readonly string[]).includes(permission)) throw malformed(`unknown permission ${permission ?? ''}`);
  if (typeof g !== 'object' || g === null) throw malformed('a Grant needs a Grantee');
  const fields = g as Record<string, unknown>;
  const id = text(fields.ID);
  const uri = text(fields.URI);
  const email = text(fields.EmailAddress);
  if ([id, uri, email].filter((v) => v !== undefined && v !== '').length !== 1) throw malformed('a Grantee has exactly one of ID, URI, EmailAddress');
  const grantee = id ? { id } : uri ? { uri } : { email: email! };
  return { grantee, permission: permission as Permission };
}

/** Parses an AccessControlPolicy; its owner must be `owner`. */
async function aclFromDocument(ctx: S3Context, body: Buffer, owner: string): Promise<Acl> {
  let doc: Record<string, unknown>;
  try {
    doc = parseXmlDocument(body, 'AccessControlPolicy', ACL_DOCUMENT_BYTES_MAX);
  } catch {
    throw malformed('expected an AccessControlPolicy document');
  }
  const docOwner = text((doc.Owner as Record<string, unknown> | undefined)?.ID);
  if (!docOwner) throw malformed('the Owner ID is missing');
  if (docOwner !== owner) throw s3Error('AccessDenied', 'Access Denied (an ACL cannot change the owner)');
  const list = doc.AccessControlList;
  const grants = typeof list === 'object' && list !== null ? xmlList((list as Record<string, unknown>).Grant) : [];
  return resolveGrants(ctx, grants.map(parseGrant));
}

/** The ACL a PUT ?acl asks for: from its headers or its document (exactly one of them). */
async function requestedAcl(ctx: S3Context, o: { resourceOwner: string; bucketOwner: string; on: 'bucket' | 'object' }): Promise<Acl> {
  const fromHeaders = await aclFromHeaders(ctx, requestHeaders(ctx.auth, ctx.req.raw), o);
  const body = await readVerifiedBody(ctx, ACL_DOCUMENT_BYTES_MAX);
  if (body.length > 0 && fromHeaders) throw s3Error('InvalidRequest', 'Specifying both an ACL document and ACL headers is not allowed');
  if (body.length > 0) return aclFromDocument(ctx, body, o.resourceOwner);
  if (!fromHeaders) throw malformed('no ACL document and no x-amz-acl or x-amz-grant-* header');
  return fromHeaders;
}

/** The ACL a new bucket or object asks for in its headers (null: none, private). */
export function newResourceAcl(ctx: S3Context, o: { resourceOwner: string; bucketOwner: string; on: 'bucket' | 'object' }): Promise<Acl | null> {
  return aclFromHeaders(ctx, requestHeaders(ctx.auth, ctx.req.raw), o);
}

export async function getBucketAcl(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'GetBucketAcl');
  return { status: 200, headers: xmlHeaders, body: await policyDocument(ctx, bucket.owner, storedAcl(bucket.acl, bucket.owner)) };
}

export async function putBucketAcl(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'PutBucketAcl');
  const acl = await requestedAcl(ctx, { resourceOwner: bucket.owner, bucketOwner: bucket.owner, on: 'bucket' });
  await ctx.services.buckets.update(bucket.name, (b) => {
    if (b.id !== bucket.id) throw s3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: b.name });
    return { ...b, acl };
  });
  return { status: 200 };
}

export async function getObjectAcl(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'GetObjectAcl');
  const entry = await requestedEntry(ctx, { bucket, key: ctx.req.key!, versionId: requestedVersion(ctx), action: 'GetObjectAcl' });
  return { status: 200, headers: { ...xmlHeaders, ...versionIdHeader(bucket, entry) }, body: await policyDocument(ctx, entry.owner, storedAcl(entry.acl, entry.owner)) };
}

export async function putObjectAcl(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'PutObjectAcl');
  const key = ctx.req.key!;
  const versionId = requestedVersion(ctx);
  const first = await requestedEntry(ctx, { bucket, key, versionId, action: 'PutObjectAcl' });
  const acl = await requestedAcl(ctx, { resourceOwner: first.owner, bucketOwner: bucket.owner, on: 'object' });
  // In place, with a compare-and-set on the version (and current) entry: checked again on what is there now.
  const updated = await versionsOf(ctx, bucket).update(key, versionId, (e) => {
    authorizeObject(ctx, 'PutObjectAcl', bucket, isDeleteMarker(e) ? null : e, key);
    if (e.owner !== first.owner) throw s3Error('OperationAborted', 'A conflicting operation replaced the object meanwhile. Please try again.');
    return { ...e, acl };
  });
  if (!updated) throw s3Error(versionId === null ? 'NoSuchKey' : 'NoSuchVersion', 'The specified key does not exist.', { Key: key, ...(versionId !== null ? { VersionId: versionId } : {}) });
  return { status: 200, headers: versionIdHeader(bucket, updated) };
}

/** The ACL operations of a request (?acl), for the router; null if it is not one. */
export function aclRoute(ctx: S3Context): Operation | null {
  const { method, bucket, key, query } = ctx.req;
  if (!bucket || !query.has('acl')) return null;
  if (method === 'GET') return key === null ? getBucketAcl : getObjectAcl;
  if (method === 'PUT') return key === null ? putBucketAcl : putObjectAcl;
  return async () => {
    throw s3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.', { Method: method, ResourceType: key === null ? 'BUCKET' : 'OBJECT' });
  };
}
