/**
 * GetObject / HeadObject with ?partNumber=N: the bytes of part N of a
 * multipart object (206, Content-Range, x-amz-mp-parts-count); a single-part
 * object is its own part 1. With x-amz-checksum-mode: ENABLED the answer
 * carries the part's checksum when the object's is COMPOSITE, and the
 * object's when the object is one part; a FULL_OBJECT checksum of several
 * parts describes no part, so none is sent (as S3).
 */
import type { Striper, StripedPool } from '../../../src/client/striper.js';
import { checksumHeaderName, type ChecksumAlgorithm } from '../auth/index.js';
import type { S3Context } from '../context.js';
import { s3Error } from '../errors.js';
import type { IndexEntry } from '../meta/bucket-index.js';
import { segmentsOf } from '../meta/part-table.js';

export interface PartSelection {
  start: number;
  end: number;
  headers: Record<string, string | number>;
}

const PART_NUMBER_MAX = 10_000;

/** The byte range and headers ?partNumber selects, or null when the request has none. */
export async function partSelection(ctx: S3Context, striper: Striper, pools: StripedPool, entry: IndexEntry): Promise<PartSelection | null> {
  const v = ctx.req.query.get('partNumber');
  if (v === undefined) return null;
  const n = /^\d{1,5}$/.test(v) ? Number(v) : NaN;
  if (!(n >= 1 && n <= PART_NUMBER_MAX)) throw s3Error('InvalidArgument', `Part number must be an integer between 1 and ${PART_NUMBER_MAX}, inclusive`, { ArgumentName: 'partNumber', ArgumentValue: v });
  if (ctx.req.headers.has('range')) throw s3Error('InvalidRequest', 'Cannot specify both Range header and partNumber query parameter');
  const unsatisfiable = () => s3Error('InvalidPartNumber', 'The requested partnumber is not satisfiable', { PartNumberRequested: v, ActualPartCount: String(entry.parts ? (entry.partTable?.count ?? entry.parts.length) : 1) });
  const checksumMode = ctx.req.headers.get('x-amz-checksum-mode')?.toUpperCase() === 'ENABLED';
  if (!entry.parts) {
    if (n !== 1) throw unsatisfiable();
    if (entry.sizeBytes === 0) return null;
    const headers: Record<string, string | number> = {};
    if (checksumMode) for (const [alg, value] of Object.entries(entry.checksums ?? {})) headers[checksumHeaderName(alg as ChecksumAlgorithm)] = value;
    return { start: 0, end: entry.sizeBytes - 1, headers };
  }
  const segments = await segmentsOf(striper, pools, entry);
  if (n > segments.length) throw unsatisfiable();
  let start = 0;
  for (let i = 0; i < n - 1; i++) start += segments[i]!.sizeBytes;
  const part = segments[n - 1]!;
  const headers: Record<string, string | number> = { 'x-amz-mp-parts-count': segments.length };
  if (checksumMode) {
    const source = entry.checksumType === 'COMPOSITE' ? part.checksums : segments.length === 1 ? entry.checksums : undefined;
    for (const [alg, value] of Object.entries(source ?? {})) headers[checksumHeaderName(alg as ChecksumAlgorithm)] = value;
  }
  // An empty part (a one-part object of no bytes) has no range to name: answered as the whole (empty) object.
  if (part.sizeBytes === 0) return null;
  return { start, end: start + part.sizeBytes - 1, headers };
}
