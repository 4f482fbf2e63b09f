/**
 * Scrubbing one store: an object's digest (what replicas compare: size,
 * crc32c of the data, of the xattrs and of the omap) computed by reading
 * everything, which verifies every chunk's stored checksum on the way; and a
 * whole-namespace pass that reports every object that fails. Reads are
 * paced (bytesPerSec) so client I/O keeps priority.
 */
import { crc32c } from '../../native/index.js';
import type { Io } from '../io/io.js';
import { isTesseraError, toTesseraError } from '../lib/errors.js';
import type { ObjectId, StoreApi } from './types.js';

export interface ObjectDigest {
  sizeBytes: number;
  dataCrc: number;
  xattrsCrc: number;
  omapCrc: number;
  omapKeys: number;
}

export interface ScrubError {
  name: string;
  code: string;
  message: string;
}

export interface ScrubReport {
  objects: number;
  bytes: number;
  errors: ScrubError[];
}

const READ_PIECE_BYTES = 4 * 1024 * 1024;
const OMAP_PAGE = 1000;
const LIST_PAGE = 500;
const ERRORS_KEPT_MAX = 1000;

/** Reads the whole object (verifying every checksum) and digests it. */
export async function digestObject(store: StoreApi, id: ObjectId): Promise<ObjectDigest> {
  const { sizeBytes } = await store.stat(id);
  let dataCrc = 0;
  for (let at = 0; at < sizeBytes; at += READ_PIECE_BYTES) {
    dataCrc = crc32c(await store.read(id, { offsetBytes: at, lengthBytes: READ_PIECE_BYTES }), dataCrc);
  }
  let xattrsCrc = 0;
  const xattrs = [...(await store.getXattrs(id))].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [k, v] of xattrs) xattrsCrc = crc32c(v, crc32c(Buffer.from(`${k}\0`), xattrsCrc));
  let omapCrc = 0;
  let omapKeys = 0;
  let afterKey: Buffer | undefined;
  for (;;) {
    const page = await store.omapList(id, { limit: OMAP_PAGE, ...(afterKey ? { afterKey } : {}) });
    for (const [k, v] of page.entries) {
      omapCrc = crc32c(v, crc32c(k, omapCrc));
      omapKeys++;
    }
    if (!page.more || page.entries.length === 0) break;
    afterKey = page.entries[page.entries.length - 1]![0];
  }
  return { sizeBytes, dataCrc, xattrsCrc, omapCrc, omapKeys };
}

export interface ScrubOptions {
  io: Io;
  ns: number;
  sortKeyRange?: { start: number; end: number };
  /** Read pacing; default unlimited. */
  bytesPerSec?: number;
  signal?: AbortSignal;
}

/** Digests every object of a namespace (range), collecting the ones that fail (Corrupt and others). */
export async function scrubNamespace(store: StoreApi, o: ScrubOptions): Promise<ScrubReport> {
  const report: ScrubReport = { objects: 0, bytes: 0, errors: [] };
  let cursor: string | undefined;
  for (;;) {
    o.signal?.throwIfAborted();
    const page = await store.listObjects({ ns: o.ns, limit: LIST_PAGE, ...(o.sortKeyRange ? { sortKeyRange: o.sortKeyRange } : {}), ...(cursor ? { cursor } : {}) });
    for (const { name } of page.objects) {
      try {
        const d = await digestObject(store, { ns: o.ns, name });
        report.bytes += d.sizeBytes;
        if (o.bytesPerSec) await o.io.clock.sleep((d.sizeBytes / o.bytesPerSec) * 1000, o.signal);
      } catch (err) {
        if (isTesseraError(err, 'NotFound')) continue; // removed meanwhile
        const e = toTesseraError(err);
        if (report.errors.length < ERRORS_KEPT_MAX) report.errors.push({ name, code: e.code, message: e.message });
      }
      report.objects++;
    }
    if (!page.cursor) return report;
    cursor = page.cursor;
  }
}
