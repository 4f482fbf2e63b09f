/**
 * Where a multipart object's part list lives. An index entry is one omap
 * value (at most 64 KiB), so a completed upload keeps its parts inline in
 * `entry.parts` only while they fit a budget (multipart-limits.ts
 * entryInlineBytesMax, about 200 parts); a longer list (up to 10,000 parts)
 * is written as a JSON striped object, the part table, next to the parts'
 * data, and the entry names it: `parts: []` (so every "is it multipart?"
 * check still holds) and `partTable: { data, count }`.
 *
 * Readers resolve an entry's segments here (GetObject's objectBytes,
 * removeData, partNumber reads); nothing else may read `entry.parts` for
 * bytes. The table is immutable, like the parts it lists, and is removed
 * with them, after them.
 */
import type { Striper, StripedPool } from '../../../src/client/striper.js';
import { TesseraError } from '../../../src/lib/errors.js';
import type { IndexEntry } from './bucket-index.js';

export type PartRef = NonNullable<IndexEntry['parts']>[number];

/** The object's segments in order: its parts, or its one data object. */
export async function segmentsOf(striper: Striper, pools: StripedPool, entry: IndexEntry): Promise<PartRef[]> {
  if (entry.partTable) {
    const parts = JSON.parse((await striper.read(pools, entry.partTable.data)).toString('utf8')) as PartRef[];
    if (!Array.isArray(parts) || parts.length !== entry.partTable.count) throw new TesseraError('Corrupt', `part table ${entry.partTable.data} lists ${parts.length} parts, its entry ${entry.partTable.count}`);
    return parts;
  }
  if (entry.parts) return entry.parts;
  return entry.data === null ? [] : [{ data: entry.data, sizeBytes: entry.sizeBytes, etag: entry.etag }];
}

/** Every data object an entry owns, the part table last (it is how the parts are found). */
export async function dataNamesOf(striper: Striper, pools: StripedPool, entry: IndexEntry): Promise<string[]> {
  if (!entry.partTable) return (await segmentsOf(striper, pools, entry)).map((p) => p.data);
  let parts: PartRef[] = [];
  try {
    parts = await segmentsOf(striper, pools, entry);
  } catch (err) {
    // The table is gone: an earlier removal got through the parts and the table already.
    if (!(err instanceof TesseraError && err.code === 'NotFound')) throw err;
  }
  return [...parts.map((p) => p.data), entry.partTable.data];
}

/** Writes the part table (idempotent: the same name always gets the same list). */
export async function writePartTable(striper: Striper, pools: StripedPool, name: string, parts: readonly PartRef[]): Promise<void> {
  await striper.put(pools, name, Buffer.from(JSON.stringify(parts)));
}
