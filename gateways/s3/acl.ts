/**
 * S3 access control lists: what a bucket or object record keeps in its `acl`
 * field, how requests set it (x-amz-acl canned ACLs, x-amz-grant-* headers,
 * an AccessControlPolicy document), and whether it grants a caller a
 * permission.
 *
 * An ACL is a list of grants; the resource's owner is its record's `owner`.
 * A grantee is a canonical user id or a group URI (AllUsers: anyone, signed
 * or not; AuthenticatedUsers: any signed user; LogDelivery: nobody here).
 * Grants by email address are resolved to the user's id when set, as S3 does.
 * FULL_CONTROL implies every other permission; the owner always holds
 * READ_ACP and WRITE_ACP (it can always repair its own ACL). A record without
 * an ACL is private: its owner has FULL_CONTROL. At most GRANTS_MAX grants.
 */
import { assert } from '../../src/lib/assert.js';
import type { S3Context } from './context.js';
import { s3Error } from './errors.js';

export const permissions = ['FULL_CONTROL', 'READ', 'WRITE', 'READ_ACP', 'WRITE_ACP'] as const;
export type Permission = (typeof permissions)[number];

export const groupUris = {
  allUsers: 'http://acs.amazonaws.com/groups/global/AllUsers',
  authenticatedUsers: 'http://acs.amazonaws.com/groups/global/AuthenticatedUsers',
  logDelivery: 'http://acs.amazonaws.com/groups/s3/LogDelivery',
} as const;
const knownGroups: readonly string[] = Object.values(groupUris);

export type Grantee = { id: string } | { uri: string };
export interface Grant {
  grantee: Grantee;
  permission: Permission;
}
export interface Acl {
  grants: Grant[];
}

/** S3's limit on the grants of one ACL. */
export const GRANTS_MAX = 100;

export const cannedAcls = ['private', 'public-read', 'public-read-write', 'authenticated-read', 'bucket-owner-read', 'bucket-owner-full-control', 'log-delivery-write'] as const;
export type CannedAcl = (typeof cannedAcls)[number];

/** x-amz-grant-* header -> the permission it grants. */
export const grantHeaders: ReadonlyArray<readonly [string, Permission]> = [
  ['x-amz-grant-read', 'READ'],
  ['x-amz-grant-write', 'WRITE'],
  ['x-amz-grant-read-acp', 'READ_ACP'],
  ['x-amz-grant-write-acp', 'WRITE_ACP'],
  ['x-amz-grant-full-control', 'FULL_CONTROL'],
];

export const privateAcl = (owner: string): Acl => ({ grants: [{ grantee: { id: owner }, permission: 'FULL_CONTROL' }] });

/**
 * The grants of a canned ACL. `resourceOwner` owns the bucket or object;
 * `bucketOwner` is the owner of the bucket an object is in (the
 * bucket-owner-* ACLs are about objects; on a bucket they are private, as S3).
 */
export function cannedAcl(name: CannedAcl, o: { resourceOwner: string; bucketOwner: string; on: 'bucket' | 'object' }): Acl {
  const acl = privateAcl(o.resourceOwner);
  const add = (grantee: Grantee, permission: Permission): void => void acl.grants.push({ grantee, permission });
  switch (name) {
    case 'private':
      break;
    case 'public-read':
      add({ uri: groupUris.allUsers }, 'READ');
      break;
    case 'public-read-write':
      add({ uri: groupUris.allUsers }, 'READ');
      add({ uri: groupUris.allUsers }, 'WRITE');
      break;
    case 'authenticated-read':
      add({ uri: groupUris.authenticatedUsers }, 'READ');
      break;
    case 'bucket-owner-read':
      if (o.on === 'object' && o.bucketOwner !== o.resourceOwner) add({ id: o.bucketOwner }, 'READ');
      break;
    case 'bucket-owner-full-control':
      if (o.on === 'object' && o.bucketOwner !== o.resourceOwner) add({ id: o.bucketOwner }, 'FULL_CONTROL');
      break;
    case 'log-delivery-write':
      add({ uri: groupUris.logDelivery }, 'WRITE');
      add({ uri: groupUris.logDelivery }, 'READ_ACP');
      break;
  }
  return acl;
}

export function isCannedAcl(value: string): value is CannedAcl {
  return (cannedAcls as readonly string[]).includes(value);
}

function isGrant(g: unknown): g is Grant {
  if (typeof g !== 'object' || g === null) return false;
  const { grantee, permission } = g as Partial<Grant>;
  if (!(permissions as readonly string[]).includes(permission as string) || typeof grantee !== 'object' || grantee === null) return false;
  return typeof (grantee as { id?: unknown }).id === 'string' || typeof (grantee as { uri?: unknown }).uri === 'string';
}

/** The ACL a record keeps (absent: private to its owner). A malformed stored ACL is a bug, not an operating condition. */
export function storedAcl(value: unknown, owner: string): Acl {
  if (value === undefined || value === null) return privateAcl(owner);
  const grants = (value as { grants?: unknown }).grants;
  assert(Array.isArray(grants) && grants.every(isGrant), 'a stored ACL is a list of grants');
  return { grants };
}

/** Whether the ACL gives `caller` (a user id, or null when anonymous) the permission. */
export function aclAllows(acl: Acl, o: { owner: string; caller: string | null; permission: Permission }): boolean {
  if (o.caller === o.owner && (o.permission === 'READ_ACP' || o.permission === 'WRITE_ACP')) return true;
  return acl.grants.some((g) => {
    if (g.permission !== o.permission && g.permission !== 'FULL_CONTROL') return false;
    if ('id' in g.grantee) return o.caller !== null && g.grantee.id === o.caller;
    if (g.grantee.uri === groupUris.allUsers) return true;
    if (g.grantee.uri === groupUris.authenticatedUsers) return o.caller !== null;
    return false;
  });
}

/** Checks a grant list's size and grantees; resolves email grantees to user ids. */
export async function resolveGrants(ctx: S3Context, grants: Array<{ grantee: Grantee | { email: string }; permission: Permission }>): Promise<Acl> {
  if (grants.length > GRANTS_MAX) throw s3Error('MalformedACLError', `An ACL has at most ${GRANTS_MAX} grants.`);
  const out: Grant[] = [];
  for (const g of grants) {
    if ('email' in g.grantee) {
      out.push({ grantee: { id: await userIdOfEmail(ctx, g.grantee.email) }, permission: g.permission });
    } else if ('id' in g.grantee) {
      if (!(await ctx.services.users.get(g.grantee.id))) throw s3Error('InvalidArgument', 'Invalid id', { ArgumentName: 'CanonicalUser/ID', ArgumentValue: g.grantee.id });
      out.push({ grantee: { id: g.grantee.id }, permission: g.permission });
    } else {
      if (!knownGroups.includes(g.grantee.uri)) throw s3Error('InvalidArgument', 'Invalid group uri', { ArgumentName: 'Group/URI', ArgumentValue: g.grantee.uri });
      out.push({ grantee: { uri: g.grantee.uri }, permission: g.permission });
    }
  }
  return { grants: out };
}

/** The user with this email address (case-insensitive); UnresolvableGrantByEmailAddress if none or several. */
async function userIdOfEmail(ctx: S3Context, email: string): Promise<string> {
  const wanted = email.trim().toLowerCase();
  // Users are few (an admin creates them); a scan is fine until an email index exists.
  const found = (await ctx.services.users.list()).filter((u) => u.email !== '' && u.email.toLowerCase() === wanted);
  if (found.length !== 1) throw s3Error('UnresolvableGrantByEmailAddress', 'The email address you provided does not match any account on record.', { EmailAddress: email });
  return found[0]!.userId;
}

/** One x-amz-grant-* header value: `id="...", uri="...", emailAddress="..."` (quotes optional). */
export function parseGrantHeader(value: string, permission: Permission): Array<{ grantee: Grantee | { email: string }; permission: Permission }> {
  const out: Array<{ grantee: Grantee | { email: string }; permission: Permission }> = [];
  const item = /\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|([^,"]*?))\s*(?:,|$)/y;
  let at = 0;
  while (at < value.length) {
    item.lastIndex = at;
    const m = item.exec(value);
    if (!m || m[0].length === 0) throw s3Error('InvalidArgument', 'Invalid grant header syntax', { ArgumentName: 'x-amz-grant', ArgumentValue: value });
    at = item.lastIndex;
    const type = m[1]!.toLowerCase();
    const v = (m[2] ?? m[3] ?? '').trim();
    if (v === '') throw s3Error('InvalidArgument', 'A grantee needs a value', { ArgumentName: 'x-amz-grant', ArgumentValue: value });
    if (type === 'id') out.push({ grantee: { id: v }, permission });
    else if (type === 'uri') out.push({ grantee: { uri: v }, permission });
    else if (type === 'emailaddress') out.push({ grantee: { email: v }, permission });
    else throw s3Error('InvalidArgument', `Unknown grantee type ${m[1]}`, { ArgumentName: 'x-amz-grant', ArgumentValue: value });
  }
  if (out.length === 0) throw s3Error('InvalidArgument', 'Invalid grant header syntax', { ArgumentName: 'x-amz-grant', ArgumentValue: value });
  return out;
}

/**
 * The ACL a request's headers ask for (x-amz-acl or x-amz-grant-*), or null
 * when they ask for none. Both at once is InvalidRequest, as S3.
 * `headers` are the request's as S3 honours them (a presigned URL's hoisted
 * x-amz-* parameters included).
 */
export async function aclFromHeaders(
  ctx: S3Context,
  headers: ReadonlyMap<string, readonly string[]>,
  o: { resourceOwner: string; bucketOwner: string; on: 'bucket' | 'object' },
): Promise<Acl | null> {
  const canned = headers.get('x-amz-acl')?.join(',').trim();
  const grants = grantHeaders.flatMap(([name, permission]) => (headers.get(name) ?? []).flatMap((v) => parseGrantHeader(v, permission)));
  if (canned !== undefined && grants.length > 0) throw s3Error('InvalidRequest', 'Specifying both Canned ACLs and Header Grants is not allowed');
  if (canned !== undefined) {
    if (canned === 'aws-exec-read') throw s3Error('NotImplemented', 'The aws-exec-read canned ACL is not supported.');
    if (!isCannedAcl(canned)) throw s3Error('InvalidArgument', `Invalid canned ACL ${canned}`, { ArgumentName: 'x-amz-acl', ArgumentValue: canned });
    return cannedAcl(canned, o);
  }
  return grants.length > 0 ? resolveGrants(ctx, grants) : null;
}
