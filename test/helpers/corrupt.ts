/**
 * Corrupts an object's bytes where a daemon keeps them: it searches the
 * disk's segment files (DIR/segments/*.seg, docs/store.md) for a run of the
 * object's current content and flips bytes in every place it is found, as a
 * failing disk would. The content is random per version, so a 64-byte run
 * names this object's blobs only (older versions of the same object too,
 * which nothing reads any more); a run with few distinct bytes (zeros of an
 * erasure-coded shard's padding) names nothing and is not used.
 */
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Rng } from './random.js';

const NEEDLE_BYTES = 64;
const FLIP_BYTES = 16;
/** Distinct byte values a needle must hold (random bytes: about 57 of 64). */
const NEEDLE_DISTINCT_MIN = 24;
/** Places one needle may be found in (the object's current copy and a few older versions). */
const PLACES_MAX = 16;

async function findAll(path: string, needle: Buffer): Promise<number[]> {
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    const chunkBytes = 8 * 1024 * 1024;
    const found: number[] = [];
    const buf = Buffer.alloc(chunkBytes + needle.length);
    for (let pos = 0; pos < size; pos += chunkBytes) {
      const { bytesRead } = await file.read(buf, 0, buf.length, pos);
      const view = buf.subarray(0, bytesRead);
      for (let at = view.indexOf(needle); at !== -1 && at < chunkBytes; at = view.indexOf(needle, at + 1)) found.push(pos + at);
    }
    return found;
  } finally {
    await file.close();
  }
}

/**
 * Flips FLIP_BYTES bytes of `content` (the object's current bytes) in the
 * disk's segment files. Returns the places changed (none: the object is not
 * there in a form this finds, e.g. inline in metadata).
 */
export async function corruptObjectOnDisk(diskDir: string, content: Buffer, rng: Rng): Promise<Array<{ file: string; offsetBytes: number }>> {
  if (content.length < NEEDLE_BYTES * 2) return [];
  const dir = join(diskDir, 'segments');
  // The daemon compacts meanwhile: a segment listed here may be gone by the time it is read or opened (its live
  // bytes moved to a newer segment). Such a file is skipped, and an attempt that flipped nothing lists again.
  const gone = (err: unknown): boolean => (err as NodeJS.ErrnoException).code === 'ENOENT';
  for (let attempt = 0; attempt < 12; attempt++) {
    const files = (await readdir(dir)).filter((f) => f.endsWith('.seg')).sort();
    const at = rng.int(content.length - NEEDLE_BYTES);
    const needle = content.subarray(at, at + NEEDLE_BYTES);
    // Only a run of random-looking bytes names this object: a run of zeros (an erasure-coded shard's padding, say)
    // is everywhere, and flipping it at thousands of overlapping places took minutes and undid itself (XOR twice).
    if (new Set(needle).size < NEEDLE_DISTINCT_MIN) continue;
    const places: Array<{ file: string; offsetBytes: number }> = [];
    for (const f of files) {
      try {
        for (const offsetBytes of await findAll(join(dir, f), needle)) places.push({ file: join(dir, f), offsetBytes });
      } catch (err) {
        if (!gone(err)) throw err;
      }
    }
    // A needle found in more places than an object has copies of itself is not this object's: another needle.
    if (places.length > PLACES_MAX) continue;
    const flipped: typeof places = [];
    for (const p of places) {
      let file;
      try {
        file = await open(p.file, 'r+');
      } catch (err) {
        if (gone(err)) continue;
        throw err;
      }
      try {
        const bytes = Buffer.alloc(FLIP_BYTES);
        await file.read(bytes, 0, FLIP_BYTES, p.offsetBytes + (NEEDLE_BYTES - FLIP_BYTES) / 2);
        for (let i = 0; i < FLIP_BYTES; i++) bytes[i] = bytes[i]! ^ 0xff;
        await file.write(bytes, 0, FLIP_BYTES, p.offsetBytes + (NEEDLE_BYTES - FLIP_BYTES) / 2);
        await file.sync();
      } finally {
        await file.close();
      }
      flipped.push(p);
    }
    if (flipped.length > 0) return flipped;
  }
  return [];
}
