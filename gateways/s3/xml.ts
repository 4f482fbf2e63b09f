/**
 * XML in and out of the S3 gateway. Out: a tiny builder (elements, escaped
 * text) for S3's response documents. In: fast-xml-parser with entity and
 * size limits; anything that is not the expected document is MalformedXML.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { s3Error } from './errors.js';

export type XmlNode = { [name: string]: XmlValue };
export type XmlValue = string | number | boolean | null | undefined | XmlNode | XmlValue[];

const XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n';
const S3_NS = 'http://s3.amazonaws.com/doc/2006-03-01/';

/** Escapes text for XML; a carriage return too, which parsers would otherwise read as a line feed (keys may hold one). */
export function escapeXml(text: string): string {
  return text.replace(/[&<>"'\r]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;', '\r': '&#xD;' })[c]!);
}

function render(name: string, value: XmlValue, out: string[]): void {
  if (value === undefined) return;
  if (Array.isArray(value)) {
    for (const v of value) render(name, v, out);
    return;
  }
  if (value === null) {
    out.push(`<${name}/>`);
    return;
  }
  if (typeof value === 'object') {
    out.push(`<${name}>`);
    for (const [k, v] of Object.entries(value)) render(k, v, out);
    out.push(`</${name}>`);
    return;
  }
  out.push(`<${name}>${escapeXml(String(value))}</${name}>`);
}

/** A whole response document: <Root xmlns="...">...</Root>. */
export function xmlDocument(root: string, body: XmlNode, options: { namespace?: boolean } = {}): string {
  const out: string[] = [XML_DECL, options.namespace === false ? `<${root}>` : `<${root} xmlns="${S3_NS}">`];
  for (const [k, v] of Object.entries(body)) render(k, v, out);
  out.push(`</${root}>`);
  return out.join('');
}

/** A document whose children come in the given order, names repeating and interleaving (ListVersionsResult's Version and DeleteMarker). */
export function xmlDocumentOrdered(root: string, children: ReadonlyArray<readonly [string, XmlValue]>): string {
  const out: string[] = [XML_DECL, `<${root} xmlns="${S3_NS}">`];
  for (const [k, v] of children) render(k, v, out);
  out.push(`</${root}>`);
  return out.join('');
}

const parser = new XMLParser({ ignoreAttributes: true, parseTagValue: false, trimValues: true, processEntities: true, htmlEntities: false });

/** Parses a request document; MalformedXML unless it is well formed and its root is `root`. */
export function parseXmlDocument(body: Buffer, root: string, maxBytes: number): Record<string, unknown> {
  if (body.length > maxBytes) throw s3Error('MalformedXML', `document is over ${maxBytes} bytes`);
  const text = body.toString('utf8');
  if (text.trim().length === 0 || XMLValidator.validate(text) !== true) throw s3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.');
  const doc = parser.parse(text) as Record<string, unknown>;
  const rootValue = doc[root];
  if (rootValue === undefined) throw s3Error('MalformedXML', `expected a ${root} document`);
  return (typeof rootValue === 'object' && rootValue !== null ? rootValue : {}) as Record<string, unknown>;
}

/** An element that may appear once or many times, as a list. */
export function xmlList(value: unknown): unknown[] {
  if (value === undefined || value === null || value === '') return [];
  return Array.isArray(value) ? value : [value];
}
