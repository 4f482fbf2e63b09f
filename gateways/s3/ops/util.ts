/** Small helpers shared by the S3 operations. */
import { pipeline } from 'node:stream/promises';
import { crc32c } from '../../../src/client/checksum.js';
import { createBodyVerifier } from '../auth/index.js';
import { s3Error } from '../errors.js';
import type { S3Context } from '../context.js';
import type { XmlNode } from '../xml.js';

export const xmlHeaders = { 'content-type': 'application/xml' };

export function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

export function isoDate(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, '.000Z');
}

/** The signed-in user, or AccessDenied for anonymous requests. */
export function requireUser(ctx: S3Context): string {
  if (!ctx.userId) throw s3Error('AccessDenied', 'Access Denied');
  return ctx.userId;
}

/** Reads a small request body (XML documents) under a byte limit. */
export async function readSmallBody(ctx: S3Context, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of ctx.req.raw) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) throw s3Error('MaxMessageLengthExceeded', 'Your request was too big.');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * Reads a small request body (XML documents) under a byte limit through the
 * body verifier: aws-chunked framing decoded, x-amz-content-sha256,
 * Content-MD5 and x-amz-checksum-* verified (the SDK sends a CRC32 with
 * every configuration document). The bytes are returned only if all held.
 */
export async function readVerifiedBody(ctx: S3Context, maxBytes: number): Promise<Buffer> {
  const verifier = createBodyVerifier(ctx.auth, ctx.req.raw, { crc32c });
  if (verifier.declaredLengthBytes !== null && verifier.declaredLengthBytes > maxBytes) throw s3Error('MaxMessageLengthExceeded', 'Your request was too big.');
  const chunks: Buffer[] = [];
  let total = 0;
  await pipeline(ctx.req.raw, verifier, async (source: AsyncIterable<Buffer>) => {
    for await (const chunk of source) {
      total += chunk.length;
      if (total > maxBytes) throw s3Error('MaxMessageLengthExceeded', 'Your request was too big.');
      chunks.push(chunk);
    }
  });
  return Buffer.concat(chunks);
}

/**
 * Display names of the users a listing names, from their user records: one
 * lookup per distinct user per answer (a page of 1000 keys of one writer is
 * one lookup). A user that no longer exists has an empty name.
 */
export async function displayNames(ctx: S3Context, ids: Iterable<string | null>): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const id of ids) if (id !== null && !out.has(id)) out.set(id, (await ctx.services.users.get(id))?.displayName ?? '');
  return out;
}

/** An Owner / Initiator element: the canonical id and its display name (anonymous for null). */
export const ownerXml = (names: ReadonlyMap<string, string>, id: string | null): XmlNode =>
  id === null ? { ID: 'anonymous', DisplayName: 'anonymous' } : { ID: id, DisplayName: names.get(id) ?? '' };
