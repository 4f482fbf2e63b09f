/**
 * Pure functions on an object's extent map: a list of extents sorted by
 * logical offset that never overlap. Writes punch their range and insert a
 * new extent; zero and truncate only punch. Every function returns a new list
 * and leaves its input untouched (the input may be the committed record).
 */
import { assert } from '../lib/assert.js';
import type { Extent } from './records.js';

/** Index of the first extent that ends after offset. */
function firstEndingAfter(extents: readonly Extent[], offset: number): number {
  let lo = 0;
  let hi = extents.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = extents[mid]!;
    if (e.logicalOffset + e.lengthBytes <= offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Removes [start, end); pushes the removed pieces onto `removed`. */
export function punch(extents: readonly Extent[], start: number, end: number, removed: Extent[]): Extent[] {
  if (end <= start) return extents.slice();
  const first = firstEndingAfter(extents, start);
  const out = extents.slice(0, first);
  let i = first;
  for (; i < extents.length; i++) {
    const e = extents[i]!;
    const eEnd = e.logicalOffset + e.lengthBytes;
    if (e.logicalOffset >= end) break;
    if (e.logicalOffset < start) out.push({ ...e, lengthBytes: start - e.logicalOffset });
    const cutStart = Math.max(start, e.logicalOffset);
    const cutEnd = Math.min(end, eEnd);
    removed.push({ ...e, logicalOffset: cutStart, lengthBytes: cutEnd - cutStart, blobOffset: e.blobOffset + (cutStart - e.logicalOffset) });
    if (eEnd > end) out.push({ ...e, logicalOffset: end, lengthBytes: eEnd - end, blobOffset: e.blobOffset + (end - e.logicalOffset) });
  }
  for (; i < extents.length; i++) out.push(extents[i]!);
  return out;
}

/** Inserts extents into a map where their ranges are free (punch first), merging physically contiguous neighbours. */
export function insert(extents: readonly Extent[], added: readonly Extent[]): Extent[] {
  const out = extents.slice();
  for (const e of added) {
    const at = firstEndingAfter(out, e.logicalOffset);
    const next = out[at];
    assert(next === undefined || next.logicalOffset >= e.logicalOffset + e.lengthBytes, 'inserted range is free');
    out.splice(at, 0, e);
  }
  return mergeContiguous(out);
}

function contiguous(a: Extent, b: Extent): boolean {
  return a.blob === b.blob && a.logicalOffset + a.lengthBytes === b.logicalOffset && a.blobOffset + a.lengthBytes === b.blobOffset;
}

export function mergeContiguous(extents: Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    const last = out[out.length - 1];
    if (last && contiguous(last, e)) out[out.length - 1] = { ...last, lengthBytes: last.lengthBytes + e.lengthBytes };
    else out.push(e);
  }
  return out;
}

/** Extents overlapping [start, end), in order. */
export function overlapping(extents: readonly Extent[], start: number, end: number): Extent[] {
  const out: Extent[] = [];
  for (let i = firstEndingAfter(extents, start); i < extents.length; i++) {
    const e = extents[i]!;
    if (e.logicalOffset >= end) break;
    out.push(e);
  }
  return out;
}

export function checkExtentMap(extents: readonly Extent[], sizeBytes: number): void {
  let end = 0;
  for (const e of extents) {
    assert(e.lengthBytes > 0, 'extent is not empty');
    assert(e.logicalOffset >= end, 'extents sorted and disjoint');
    assert(e.blobOffset + e.lengthBytes <= e.blob.lengthBytes, 'extent inside its blob');
    end = e.logicalOffset + e.lengthBytes;
  }
  assert(end <= sizeBytes, 'extents end within the object size');
}
