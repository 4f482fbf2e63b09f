/**
 * The canonical forms SigV4 signs, exactly as S3 computes them:
 * - the URI: each path segment percent-decoded to bytes and re-encoded with
 *   AWS's UriEncode (unreserved A-Z a-z 0-9 - . _ ~ kept, everything else
 *   %XX upper-case); S3 does not double-encode and does not normalise `.`,
 *   `..` or empty segments; `%2F` inside a segment stays `%2F`;
 * - the query: every parameter decoded (`+` is a space) and re-encoded the
 *   same way, sorted by name then value;
 * - the headers: lower-case names, values of repeated headers joined by `,`,
 *   each value trimmed with inner runs of white space folded to one space.
 *
 * Strings here are byte strings: one char per byte, as Node's HTTP parser
 * gives header values (latin1). The canonical request is hashed as latin1, so
 * the bytes a client signed are the bytes we hash. Chars above 0xff (a caller
 * that passed real Unicode) are taken as UTF-8 first.
 */
import { s3Error } from './errors.js';

/** Headers as received: lower-case name to values in arrival order. */
export type HeaderMap = ReadonlyMap<string, readonly string[]>;

const HEX = '0123456789ABCDEF';

function isUnreserved(code: number): boolean {
  return (
    (code >= 0x61 && code <= 0x7a) || // a-z
    (code >= 0x41 && code <= 0x5a) || // A-Z
    (code >= 0x30 && code <= 0x39) || // 0-9
    code === 0x2d || code === 0x2e || code === 0x5f || code === 0x7e // - . _ ~
  );
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x41 && code <= 0x46) return code - 0x41 + 10;
  if (code >= 0x61 && code <= 0x66) return code - 0x61 + 10;
  return -1;
}

function encodeByte(byte: number): string {
  return isUnreserved(byte) ? String.fromCharCode(byte) : `%${HEX[byte >> 4]}${HEX[byte & 15]}`;
}

/** A string whose chars are all bytes: chars above 0xff become their UTF-8 bytes. */
export function toByteString(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[^\u0000-\u00ff]/.test(value)) return value;
  return Buffer.from(value, 'utf8').toString('latin1');
}

/**
 * AWS UriEncode of one raw (possibly percent-encoded) URI component:
 * escapes are decoded to bytes, then every byte that is not unreserved is
 * %XX-encoded. Returns null for a malformed escape.
 */
/** Only unreserved characters: already canonical (the common case of a path segment or parameter). */
const ALL_UNRESERVED = /^[A-Za-z0-9._~-]*$/;

export function canonicalComponent(raw: string, plusIsSpace: boolean): string | null {
  if (ALL_UNRESERVED.test(raw)) return raw;
  const bytes = toByteString(raw);
  let out = '';
  for (let i = 0; i < bytes.length; i++) {
    const code = bytes.charCodeAt(i);
    if (code === 0x25) {
      const high = hexValue(bytes.charCodeAt(i + 1));
      const low = hexValue(bytes.charCodeAt(i + 2));
      if (high < 0 || low < 0) return null;
      out += encodeByte((high << 4) | low);
      i += 2;
    } else if (code === 0x2b && plusIsSpace) {
      out += '%20';
    } else {
      out += encodeByte(code);
    }
  }
  return out;
}

/** The request target split into its raw path and raw query (absolute-form targets lose scheme and authority). */
export function splitTarget(url: string): { rawPath: string; rawQuery: string } {
  let target = url;
  const scheme = /^https?:\/\/[^/?]*/i.exec(target);
  if (scheme) target = target.slice(scheme[0].length) || '/';
  const hash = target.indexOf('#');
  if (hash >= 0) target = target.slice(0, hash);
  const question = target.indexOf('?');
  return question < 0
    ? { rawPath: target, rawQuery: '' }
    : { rawPath: target.slice(0, question), rawQuery: target.slice(question + 1) };
}

/** The canonical URI of a raw path (S3: single encoding, no normalisation). */
export function canonicalUri(rawPath: string): string {
  if (!rawPath.startsWith('/')) throw s3Error('InvalidURI', 'The request path must start with "/".');
  const segments = rawPath.split('/');
  const out: string[] = [];
  for (const segment of segments) {
    const encoded = canonicalComponent(segment, false);
    if (encoded === null) throw s3Error('InvalidURI', 'Couldn\'t parse the specified URI: malformed percent-encoding in the path.');
    out.push(encoded);
  }
  return out.join('/');
}

export interface QueryParam {
  /** Canonically encoded name and value. */
  name: string;
  value: string;
}

/** The query's parameters, canonically encoded, in the order sent. Empty pieces (`a=1&&b=2`) are skipped. */
export function parseQuery(rawQuery: string, countMax: number): QueryParam[] {
  if (rawQuery === '') return [];
  const pieces = rawQuery.split('&');
  if (pieces.length > countMax) throw s3Error('InvalidRequest', `The request has more than ${countMax} query parameters.`);
  const params: QueryParam[] = [];
  for (const piece of pieces) {
    if (piece === '') continue;
    const eq = piece.indexOf('=');
    const name = canonicalComponent(eq < 0 ? piece : piece.slice(0, eq), true);
    const value = canonicalComponent(eq < 0 ? '' : piece.slice(eq + 1), true);
    if (name === null || value === null) {
      throw s3Error('InvalidURI', 'Couldn\'t parse the specified URI: malformed percent-encoding in the query.');
    }
    params.push({ name, value });
  }
  return params;
}

/** The canonical query string: sorted by encoded name, then value; `exclude` names (encoded) are left out. */
export function canonicalQuery(params: readonly QueryParam[], exclude?: string): string {
  const kept = exclude === undefined ? [...params] : params.filter((p) => p.name !== exclude);
  kept.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.value < b.value ? -1 : a.value > b.value ? 1 : 0));
  return kept.map((p) => `${p.name}=${p.value}`).join('&');
}

/** Node's IncomingMessage.rawHeaders (name, value, name, value, ...) as a HeaderMap. */
export function headerMapFromRaw(rawHeaders: readonly string[]): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    const values = map.get(name);
    if (values) values.push(rawHeaders[i + 1]!);
    else map.set(name, [rawHeaders[i + 1]!]);
  }
  return map;
}

/** One header's value: repeated headers joined by `,` (as SigV4 and HTTP combine them); undefined when absent. */
export function headerValue(headers: HeaderMap, name: string): string | undefined {
  const values = headers.get(name);
  return values === undefined ? undefined : values.join(',');
}

const ASCII_SPACE_EDGES = /^[\t\n\v\f\r ]+|[\t\n\v\f\r ]+$/g;
const ASCII_SPACE_RUN = /[\t\n\v\f\r ]+/g;

/** A header value as SigV4 canonicalises it: trimmed, inner white space runs folded to one space. */
/** Printable ASCII words separated by single spaces: nothing to trim or collapse (most header values). */
const ALREADY_CANONICAL_VALUE = /^[!-~]+(?: [!-~]+)*$/;

export function canonicalHeaderValue(values: readonly string[]): string {
  if (values.length === 1 && ALREADY_CANONICAL_VALUE.test(values[0]!)) return values[0]!;
  // ASCII white space only: in a byte string, 0x85 and 0xa0 (which /\s/ would
  // match) are UTF-8 continuation bytes, not spaces.
  return values.map((v) => toByteString(v).replace(ASCII_SPACE_EDGES, '').replace(ASCII_SPACE_RUN, ' ')).join(',');
}

/** The canonical headers block (each `name:value\n`) for the signed header names, which must all be present. */
export function canonicalHeaders(headers: HeaderMap, signedNames: readonly string[]): string {
  let out = '';
  for (const name of signedNames) {
    const values = headers.get(name);
    if (values === undefined) {
      throw s3Error('SignatureDoesNotMatch', `The signed header '${name}' is not in the request.`);
    }
    out += `${name}:${canonicalHeaderValue(values)}\n`;
  }
  return out;
}

/** Presigned-URL parameters that carry the signature itself rather than a hoisted header. */
const SIGNATURE_PARAMS = new Set(['x-amz-algorithm', 'x-amz-credential', 'x-amz-date', 'x-amz-expires', 'x-amz-signedheaders', 'x-amz-signature', 'x-amz-content-sha256']);

/**
 * The headers of a presigned request as S3 sees them: signers hoist x-amz-*
 * headers into the query (x-amz-meta-*, x-amz-acl, x-amz-checksum-crc32, ...),
 * and S3 honours them as headers. A real header of the same name wins.
 */
export function withHoistedHeaders(headers: HeaderMap, rawQuery: string, countMax: number): Map<string, string[]> {
  const merged = new Map<string, string[]>([...headers].map(([name, values]) => [name, [...values]]));
  for (const param of parseQuery(rawQuery, countMax)) {
    const name = decodeComponent(param.name).toLowerCase();
    if (!name.startsWith('x-amz-') || SIGNATURE_PARAMS.has(name) || headers.has(name)) continue;
    const values = merged.get(name) ?? [];
    merged.set(name, [...values, decodeComponent(param.value)]);
  }
  return merged;
}

/** Decodes a canonically encoded component back to its byte string. */
export function decodeComponent(encoded: string): string {
  return encoded.replace(/%([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}
