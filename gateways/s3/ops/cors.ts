/**
 * CORS operations: PutBucketCors / GetBucketCors / DeleteBucketCors (the
 * bucket owner's), the preflight (OPTIONS, anyone: no signature), and the
 * Access-Control-* headers the gateway adds to an actual request whose
 * Origin a rule allows (corsHeadersFor, errors included, so a browser can
 * read an S3 error).
 */
import type { IncomingMessage } from 'node:http';
import type { GatewayServices, S3Context, S3Response } from '../context.js';
import { authorizeBucket } from '../access.js';
import { corsConfigurationXml, corsResponseHeaders, matchCorsRule, parseCorsConfiguration, parseRequestHeaderList, storedCors, CORS_DOCUMENT_BYTES_MAX } from '../cors.js';
import { s3Error } from '../errors.js';
import { parseS3Request } from '../request.js';
import type { Operation } from '../router.js';
import { xmlDocument } from '../xml.js';
import { readVerifiedBody, xmlHeaders } from './util.js';

export async function putBucketCors(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'PutBucketCors');
  const config = parseCorsConfiguration(await readVerifiedBody(ctx, CORS_DOCUMENT_BYTES_MAX));
  await ctx.services.buckets.update(bucket.name, (b) => (b.id === bucket.id ? { ...b, cors: config } : b));
  return { status: 200 };
}

export async function getBucketCors(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'GetBucketCors');
  const config = storedCors(bucket.cors);
  if (!config) throw s3Error('NoSuchCORSConfiguration', 'The CORS configuration does not exist', { BucketName: bucket.name });
  return { status: 200, headers: xmlHeaders, body: xmlDocument('CORSConfiguration', corsConfigurationXml(config)) };
}

export async function deleteBucketCors(ctx: S3Context): Promise<S3Response> {
  const bucket = await authorizeBucket(ctx, 'DeleteBucketCors');
  await ctx.services.buckets.update(bucket.name, (b) => {
    if (b.id !== bucket.id) return b;
    const { cors: _removed, ...rest } = b;
    return rest;
  });
  return { status: 204 };
}

/** OPTIONS: a browser asks whether it may send a cross-origin request. */
export async function preflight(ctx: S3Context): Promise<S3Response> {
  const origin = ctx.req.headers.get('origin');
  const method = ctx.req.headers.get('access-control-request-method');
  if (!origin) throw s3Error('BadRequest', 'Insufficient information. Origin request header needed.');
  if (!method) throw s3Error('BadRequest', 'Invalid Access-Control-Request-Method: null');
  const bucket = await ctx.services.buckets.require(ctx.req.bucket!);
  const config = storedCors(bucket.cors);
  if (!config) throw s3Error('CORSForbidden', 'CORSResponse: CORS is not enabled for this bucket.', { Method: method, ResourceType: ctx.req.key === null ? 'BUCKET' : 'OBJECT' });
  const requestHeaders = parseRequestHeaderList(ctx.req.headers.get('access-control-request-headers'));
  const rule = matchCorsRule(config, { origin, method, requestHeaders });
  if (!rule) {
    throw s3Error('CORSForbidden', 'CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource\'s CORS spec.', {
      Method: method,
      ResourceType: ctx.req.key === null ? 'BUCKET' : 'OBJECT',
    });
  }
  return { status: 200, headers: { ...corsResponseHeaders(rule, { origin, requestHeaders }), 'content-length': 0 } };
}

/** The CORS operations of a request, for the router; null if it is none of them. */
export function corsRoute(ctx: S3Context): Operation | null {
  const { method, bucket, key, query } = ctx.req;
  if (!bucket) return null;
  if (method === 'OPTIONS') return preflight;
  if (key !== null || !query.has('cors')) return null;
  if (method === 'PUT') return putBucketCors;
  if (method === 'GET') return getBucketCors;
  if (method === 'DELETE') return deleteBucketCors;
  return async () => {
    throw s3Error('MethodNotAllowed', 'The specified method is not allowed against this resource.', { Method: method, ResourceType: 'BUCKET' });
  };
}

/**
 * The Access-Control-* headers for an actual (non-preflight) request with an
 * Origin, from its bucket's rules; none when there is no Origin, no bucket,
 * no configuration or no matching rule. Never throws: CORS only adds headers.
 */
export async function corsHeadersFor(services: GatewayServices, raw: IncomingMessage, baseDomains: readonly string[]): Promise<Record<string, string>> {
  const origin = raw.headers.origin;
  if (!origin || raw.method === 'OPTIONS') return {};
  try {
    const { bucket } = parseS3Request(raw, baseDomains);
    if (!bucket) return {};
    const config = storedCors((await services.buckets.get(bucket))?.cors);
    const rule = config && matchCorsRule(config, { origin, method: (raw.method ?? 'GET').toUpperCase() });
    return rule ? corsResponseHeaders(rule, { origin }) : {};
  } catch {
    return {};
  }
}
