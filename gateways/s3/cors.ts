/**
 * Bucket CORS configuration (kept in BucketRecord.cors): parsing and
 * validating a CORSConfiguration document, rendering it back, and matching a
 * browser's request against its rules.
 *
 * A rule matches when the request's Origin matches one of its AllowedOrigin
 * patterns (at most one `*` wildcard each), its method (the preflight's
 * Access-Control-Request-Method) is one of AllowedMethod, and, for a
 * preflight, every header named in Access-Control-Request-Headers matches an
 * AllowedHeader (case-insensitive, one `*` wildcard each). The first matching
 * rule wins, as in S3. Limits as S3: 100 rules, 64 KiB document.
 */
import { s3Error } from './errors.js';
import { parseXmlDocument, xmlList, type XmlNode } from './xml.js';

export interface CorsRule {
  id?: string;
  allowedOrigins: string[];
  allowedMethods: CorsMethod[];
  allowedHeaders: string[];
  exposeHeaders: string[];
  maxAgeSeconds?: number;
}

export interface CorsConfig {
  rules: CorsRule[];
}

export const corsMethods = ['GET', 'PUT', 'POST', 'DELETE', 'HEAD'] as const;
export type CorsMethod = (typeof corsMethods)[number];

export const CORS_RULES_MAX = 100;
export const CORS_DOCUMENT_BYTES_MAX = 64 * 1024;
const RULE_ID_CHARS_MAX = 255;

function strings(value: unknown, element: string): string[] {
  return xmlList(value).map((v) => {
    if (typeof v !== 'string') throw s3Error('MalformedXML', `${element} must be text`);
    return v;
  });
}

function oneWildcard(values: string[], element: string): void {
  for (const v of values) {
    if (v.split('*').length > 2) throw s3Error('InvalidRequest', `${element} "${v}" can not have more than one wildcard.`);
  }
}

function parseRule(raw: unknown): CorsRule {
  if (typeof raw !== 'object' || raw === null) throw s3Error('MalformedXML', 'A CORSRule needs AllowedOrigin and AllowedMethod');
  const r = raw as Record<string, unknown>;
  const allowedOrigins = strings(r.AllowedOrigin, 'AllowedOrigin');
  const methods = strings(r.AllowedMethod, 'AllowedMethod');
  if (allowedOrigins.length === 0 || methods.length === 0) throw s3Error('MalformedXML', 'A CORSRule needs at least one AllowedOrigin and one AllowedMethod');
  for (const m of methods) {
    if (!(corsMethods as readonly string[]).includes(m)) throw s3Error('InvalidRequest', `Found unsupported HTTP method in CORS config. Unsupported method is ${m}`);
  }
  const allowedHeaders = strings(r.AllowedHeader, 'AllowedHeader');
  const exposeHeaders = strings(r.ExposeHeader, 'ExposeHeader');
  oneWildcard(allowedOrigins, 'AllowedOrigin');
  oneWildcard(allowedHeaders, 'AllowedHeader');
  for (const h of exposeHeaders) {
    if (h.includes('*')) throw s3Error('InvalidRequest', `ExposeHeader "${h}" contains wildcard. We currently do not support wildcard for ExposeHeader.`);
  }
  const rule: CorsRule = { allowedOrigins, allowedMethods: methods as CorsMethod[], allowedHeaders, exposeHeaders };
  if (r.ID !== undefined) {
    if (typeof r.ID !== 'string' || r.ID.length > RULE_ID_CHARS_MAX) throw s3Error('InvalidArgument', `A CORS rule ID is text of at most ${RULE_ID_CHARS_MAX} characters`);
    rule.id = r.ID;
  }
  if (r.MaxAgeSeconds !== undefined) {
    if (typeof r.MaxAgeSeconds !== 'string' || !/^\d{1,10}$/.test(r.MaxAgeSeconds) || Number(r.MaxAgeSeconds) > 2 ** 31 - 1) {
      throw s3Error('MalformedXML', 'MaxAgeSeconds must be a non-negative integer');
    }
    rule.maxAgeSeconds = Number(r.MaxAgeSeconds);
  }
  return rule;
}

/** Parses and validates a PutBucketCors document. */
export function parseCorsConfiguration(body: Buffer): CorsConfig {
  const doc = parseXmlDocument(body, 'CORSConfiguration', CORS_DOCUMENT_BYTES_MAX);
  const known = new Set(['CORSRule']);
  for (const k of Object.keys(doc)) if (!known.has(k)) throw s3Error('MalformedXML', `Unexpected element ${k} in CORSConfiguration`);
  const rules = xmlList(doc.CORSRule).map(parseRule);
  if (rules.length === 0) throw s3Error('MalformedXML', 'A CORSConfiguration needs at least one CORSRule');
  if (rules.length > CORS_RULES_MAX) throw s3Error('InvalidRequest', `A CORS configuration has at most ${CORS_RULES_MAX} rules`);
  return { rules };
}

export function corsConfigurationXml(config: CorsConfig): XmlNode {
  return {
    CORSRule: config.rules.map((r) => ({
      ...(r.id !== undefined ? { ID: r.id } : {}),
      AllowedHeader: r.allowedHeaders,
      AllowedMethod: r.allowedMethods,
      AllowedOrigin: r.allowedOrigins,
      ExposeHeader: r.exposeHeaders,
      ...(r.maxAgeSeconds !== undefined ? { MaxAgeSeconds: r.maxAgeSeconds } : {}),
    })),
  };
}

/** The stored configuration (absent: none). */
export function storedCors(value: unknown): CorsConfig | null {
  if (value === undefined || value === null) return null;
  return value as CorsConfig;
}

/** `pattern` with at most one `*` matching any run of characters. */
function wildcardMatch(pattern: string, value: string): boolean {
  const star = pattern.indexOf('*');
  if (star < 0) return pattern === value;
  const head = pattern.slice(0, star);
  const tail = pattern.slice(star + 1);
  return value.length >= head.length + tail.length && value.startsWith(head) && value.endsWith(tail);
}

/** The first rule allowing this origin, method and (preflight) request headers; null if none. */
export function matchCorsRule(config: CorsConfig, o: { origin: string; method: string; requestHeaders?: string[] }): CorsRule | null {
  const headers = (o.requestHeaders ?? []).map((h) => h.toLowerCase());
  for (const rule of config.rules) {
    if (!rule.allowedOrigins.some((p) => wildcardMatch(p, o.origin))) continue;
    if (!(rule.allowedMethods as readonly string[]).includes(o.method)) continue;
    if (!headers.every((h) => rule.allowedHeaders.some((p) => wildcardMatch(p.toLowerCase(), h)))) continue;
    return rule;
  }
  return null;
}

/** The Access-Control-* headers a matched rule gives a response (preflight or actual request). */
export function corsResponseHeaders(rule: CorsRule, o: { origin: string; requestHeaders?: string[] }): Record<string, string> {
  const anyOrigin = rule.allowedOrigins.includes('*');
  const headers: Record<string, string> = {
    'access-control-allow-origin': anyOrigin ? '*' : o.origin,
    'access-control-allow-methods': rule.allowedMethods.join(', '),
    vary: 'Origin, Access-Control-Request-Headers, Access-Control-Request-Method',
  };
  if (!anyOrigin) headers['access-control-allow-credentials'] = 'true';
  if (o.requestHeaders && o.requestHeaders.length > 0) headers['access-control-allow-headers'] = o.requestHeaders.join(', ');
  if (rule.exposeHeaders.length > 0) headers['access-control-expose-headers'] = rule.exposeHeaders.join(', ');
  if (rule.maxAgeSeconds !== undefined) headers['access-control-max-age'] = String(rule.maxAgeSeconds);
  return headers;
}

/** Access-Control-Request-Headers as a list of names. */
export function parseRequestHeaderList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h !== '');
}
