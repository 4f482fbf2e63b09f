/** Small helpers shared by the S3 operations. */
import { s3Error } from '../errors.js';
import type { S3Context } from '../context.js';

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
