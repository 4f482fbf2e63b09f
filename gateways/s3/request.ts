/**
 * What an S3 request names: bucket and key (path-style `/bucket/key`, or
 * virtual-host-style `bucket.<baseDomain>/key`), decoded query parameters
 * and headers. The raw target stays available for signature checks.
 */
import type { IncomingMessage } from 'node:http';
import { s3Error } from './errors.js';

export interface S3Request {
  method: string;
  bucket: string | null;
  /** Object key (decoded), or null for service/bucket requests. */
  key: string | null;
  query: Map<string, string>;
  /** Lowercase header name -> value (repeated headers joined with ","). */
  headers: Map<string, string>;
  raw: IncomingMessage;
  /** Where this request came from, for logs. */
  remote: string;
}

export const KEY_BYTES_MAX = 1024;

function decodePath(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw s3Error('InvalidArgument', 'the request path is not valid percent-encoding');
  }
}

function parseQuery(raw: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!raw) return out;
  for (const part of raw.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    const v = eq < 0 ? '' : part.slice(eq + 1);
    try {
      out.set(decodeURIComponent(k.replace(/\+/g, ' ')), decodeURIComponent(v.replace(/\+/g, ' ')));
    } catch {
      throw s3Error('InvalidArgument', 'the query string is not valid percent-encoding');
    }
  }
  return out;
}

/**
 * Checks and normalizes the domains of virtual-host-style addressing
 * (`--domain`, like MinIO's MINIO_DOMAIN): lowercase host names without a
 * port, longest first, so `b.s3.example.com` names bucket `b` under
 * `s3.example.com` even when `example.com` is also given. Throws a plain
 * Error naming the bad value (a start-up error).
 */
export function baseDomainsOf(domains: readonly string[]): string[] {
  const out = new Set<string>();
  for (const given of domains) {
    const d = given.trim().toLowerCase().replace(/\.$/, '');
    if (!/^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(d)) throw new Error(`--domain ${JSON.stringify(given)}: not a host name (no scheme, port or path)`);
    out.add(d);
  }
  return [...out].sort((a, b) => b.length - a.length);
}

export function parseS3Request(raw: IncomingMessage, baseDomains: readonly string[]): S3Request {
  const target = raw.url ?? '/';
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const query = parseQuery(q < 0 ? '' : target.slice(q + 1));
  const headers = new Map<string, string>();
  const given = raw.headers; // built by Node for every request already (names lower-case)
  for (const k in given) {
    const v = given[k];
    if (v === undefined) continue;
    headers.set(k, typeof v === 'string' ? v : v.join(','));
  }
  const host = (headers.get('host') ?? '').replace(/:\d+$/, '').toLowerCase();
  let bucket: string | null = null;
  let keyPath = path;
  // baseDomains come longest first (baseDomainsOf): the most specific domain names the bucket.
  // A host that is itself a domain (s3.example.com with example.com also given) addresses the service: path-style.
  const vhost = baseDomains.includes(host) ? undefined : baseDomains.find((d) => host.endsWith(`.${d}`));
  if (vhost) {
    bucket = host.slice(0, host.length - vhost.length - 1);
  } else {
    const rest = path.replace(/^\//, '');
    const slash = rest.indexOf('/');
    const first = slash < 0 ? rest : rest.slice(0, slash);
    if (first) bucket = decodePath(first);
    keyPath = slash < 0 ? '' : rest.slice(slash);
  }
  const keyRaw = keyPath.replace(/^\//, '');
  const key = keyRaw ? decodePath(keyRaw) : null;
  if (key !== null && Buffer.byteLength(key) > KEY_BYTES_MAX) throw s3Error('KeyTooLongError', `Your key is too long (max ${KEY_BYTES_MAX} bytes)`);
  // XML cannot carry U+0000 (listings could not name the key), and the bucket index's version keys use 0x00 as the key's end.
  if (key !== null && key.includes('\0')) throw s3Error('InvalidArgument', 'Object keys may not contain the NUL character');
  return { method: (raw.method ?? 'GET').toUpperCase(), bucket, key, query, headers, raw, remote: raw.socket.remoteAddress ?? '' };
}
