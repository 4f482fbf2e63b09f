/**
 * The bounds of S3 multipart uploads, in one place. The S3 values are the
 * defaults; a gateway may lower `partBytesMin` and `entryInlineBytesMax`
 * (tests do, to reach many-part paths without gigabytes of data).
 */
import { assert } from '../../../src/lib/assert.js';

const MiB = 1024 * 1024;

export interface MultipartLimits {
  /** Part numbers are 1..partsMax. */
  partsMax: number;
  /** Every part but the last of a completed upload is at least this big (EntityTooSmall). */
  partBytesMin: number;
  /** One part (UploadPart body, UploadPartCopy range) at most (EntityTooLarge / InvalidRequest). */
  partBytesMax: number;
  /** A completed object at most (EntityTooLarge). */
  objectBytesMax: number;
  /** A CompleteMultipartUpload document at most (MaxMessageLengthExceeded). */
  completeBodyBytesMax: number;
  /** Index entries of multipart objects keep their part list inline up to this JSON size; larger lists go to a part table. */
  entryInlineBytesMax: number;
  /** ListParts / ListMultipartUploads answers at most this many items. */
  listMax: number;
  /** Part data removals (abort, complete, replaced parts) in flight at once. */
  removeConcurrency: number;
}

export const defaultMultipartLimits: Readonly<MultipartLimits> = {
  partsMax: 10_000,
  partBytesMin: 5 * MiB,
  partBytesMax: 5 * 1024 * MiB,
  objectBytesMax: 5 * 1024 * 1024 * MiB,
  completeBodyBytesMax: 8 * MiB,
  entryInlineBytesMax: 32 * 1024,
  listMax: 1000,
  removeConcurrency: 8,
};

export function resolveMultipartLimits(overrides: Partial<MultipartLimits> = {}): MultipartLimits {
  const l = { ...defaultMultipartLimits, ...overrides };
  assert(l.partsMax >= 1 && l.partsMax <= 10_000, 'part numbers fit the 5-digit omap keys');
  assert(l.partBytesMin >= 1 && l.partBytesMin <= l.partBytesMax, 'the minimum part size is within the maximum');
  assert(l.partBytesMax <= l.objectBytesMax, 'a part fits in an object');
  // The index entry is one omap value (64 KiB) and holds ACLs and metadata besides the part list.
  assert(l.entryInlineBytesMax <= 40 * 1024, 'an inline part list leaves room in a 64 KiB index entry');
  assert(l.listMax >= 1 && l.removeConcurrency >= 1, 'listings and removals make progress');
  return l;
}
