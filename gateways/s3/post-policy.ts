/**
 * Browser-upload (POST Object) policy documents: parsing the base64 JSON
 * policy and checking a form against it, as S3 does:
 * - `expiration` (ISO 8601) must be in the future;
 * - every condition must hold: `{"field": "value"}` and `["eq", "$field",
 *   "value"]` exact, `["starts-with", "$field", "prefix"]` (for
 *   Content-Type, each comma-separated value), `["content-length-range",
 *   min, max]` on the file's size (returned, checked while it streams);
 *   `bucket` is the bucket the form is posted to;
 * - every form field except policy, x-amz-signature, file and x-ignore-*
 *   must be named by a condition.
 * Field names are case-insensitive, values are not. A malformed policy is
 * InvalidPolicyDocument; a policy the form breaks is AccessDenied. The
 * policy's signature is SigV4Verifier.verifyPostPolicy's to check.
 */
import { s3Error } from './errors.js';

export type PolicyCondition =
  | { kind: 'eq' | 'starts-with'; field: string; value: string; text: string }
  | { kind: 'content-length-range'; minBytes: number; maxBytes: number; text: string };

export interface PostPolicy {
  expirationMs: number;
  conditions: PolicyCondition[];
}

export const POLICY_CONDITIONS_MAX = 256;
/** Form fields no condition needs to name. */
const UNCHECKED_FIELDS = new Set(['policy', 'x-amz-signature', 'file']);

const invalid = (why: string) => s3Error('InvalidPolicyDocument', `Invalid Policy: ${why}`);
const denied = (why: string) => s3Error('AccessDenied', `Invalid according to Policy: ${why}`);

function fieldName(raw: unknown, text: string): string {
  if (typeof raw !== 'string' || !raw.startsWith('$') || raw.length < 2) throw invalid(`Invalid field name in condition ${text}`);
  return raw.slice(1).toLowerCase();
}

function byteCount(raw: unknown, text: string): number {
  const n = typeof raw === 'string' && /^\d{1,16}$/.test(raw) ? Number(raw) : raw;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw invalid(`Invalid content-length-range bounds in ${text}`);
  return n;
}

function parseCondition(raw: unknown): PolicyCondition[] {
  const text = JSON.stringify(raw);
  if (Array.isArray(raw)) {
    const op = typeof raw[0] === 'string' ? raw[0].toLowerCase() : '';
    if (op === 'content-length-range') {
      if (raw.length !== 3) throw invalid(`Invalid content-length-range condition ${text}`);
      const minBytes = byteCount(raw[1], text);
      const maxBytes = byteCount(raw[2], text);
      if (minBytes > maxBytes) throw invalid(`Invalid content-length-range condition ${text}`);
      return [{ kind: 'content-length-range', minBytes, maxBytes, text }];
    }
    if (op !== 'eq' && op !== 'starts-with') throw invalid(`Invalid condition ${text}`);
    if (raw.length !== 3 || typeof raw[2] !== 'string') throw invalid(`Invalid condition ${text}`);
    return [{ kind: op, field: fieldName(raw[1], text), value: raw[2], text }];
  }
  if (typeof raw === 'object' && raw !== null) {
    const entries = Object.entries(raw);
    if (entries.length === 0) throw invalid(`Invalid condition ${text}`);
    return entries.map(([k, v]) => {
      if (typeof v !== 'string') throw invalid(`Invalid condition ${text}`);
      return { kind: 'eq' as const, field: k.toLowerCase(), value: v, text: JSON.stringify({ [k]: v }) };
    });
  }
  throw invalid(`Invalid condition ${text}`);
}

/** Decodes and parses the base64 policy field. */
export function parsePostPolicy(policyBase64: string): PostPolicy {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(policyBase64) || policyBase64.length % 4 !== 0) throw invalid('the policy is not base64');
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(policyBase64, 'base64').toString('utf8'));
  } catch {
    throw invalid('the policy is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw invalid('the policy is not a JSON object');
  const { expiration, conditions } = doc as { expiration?: unknown; conditions?: unknown };
  if (typeof expiration !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/.test(expiration) || Number.isNaN(Date.parse(expiration))) {
    throw invalid('expiration must be an ISO 8601 GMT date');
  }
  if (!Array.isArray(conditions)) throw invalid('conditions must be a list');
  if (conditions.length > POLICY_CONDITIONS_MAX) throw invalid(`at most ${POLICY_CONDITIONS_MAX} conditions`);
  return { expirationMs: Date.parse(expiration), conditions: conditions.flatMap(parseCondition) };
}

function holds(c: Extract<PolicyCondition, { kind: 'eq' | 'starts-with' }>, value: string): boolean {
  if (c.kind === 'eq') return value === c.value;
  if (c.field === 'content-type') return value.split(',').every((v) => v.trim().startsWith(c.value));
  return value.startsWith(c.value);
}

/**
 * Checks the form's fields (lower-case names) against the policy; returns the
 * size range the file must fall in (null: any). Throws AccessDenied.
 */
export function checkPostPolicy(policy: PostPolicy, o: { fields: ReadonlyMap<string, string>; bucket: string; nowMs: number }): { minBytes: number; maxBytes: number } | null {
  if (o.nowMs > policy.expirationMs) throw denied('Policy expired.');
  let range: { minBytes: number; maxBytes: number } | null = null;
  const named = new Set<string>();
  for (const c of policy.conditions) {
    if (c.kind === 'content-length-range') {
      range = range ? { minBytes: Math.max(range.minBytes, c.minBytes), maxBytes: Math.min(range.maxBytes, c.maxBytes) } : { minBytes: c.minBytes, maxBytes: c.maxBytes };
      continue;
    }
    named.add(c.field);
    const value = c.field === 'bucket' ? o.bucket : (o.fields.get(c.field) ?? '');
    if (!holds(c, value)) throw denied(`Policy Condition failed: ${c.text}`);
  }
  const extra = [...o.fields.keys()].filter((f) => !UNCHECKED_FIELDS.has(f) && !f.startsWith('x-ignore-') && !named.has(f));
  if (extra.length > 0) throw denied(`Extra input fields: ${extra.join(', ')}`);
  return range;
}
