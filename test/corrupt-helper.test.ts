/**
 * The test helper that corrupts an object's bytes on disk (test/helpers/corrupt.ts), on a segment directory
 * made here: content half random and half zeros (an erasure-coded shard's padding), in a file with long zero
 * runs around it. It must flip only places of the random half (a needle of zeros is found at every offset of
 * every zero run: the fault suite spent minutes flipping them, the flips undoing each other, and the live copy
 * read back intact), never more than a few, and leave the zero runs as they were.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { corruptObjectOnDisk } from './helpers/corrupt.js';
import { seededRng } from './helpers/random.js';
import { makeTempDir } from './helpers/tmp.js';

let dir: Awaited<ReturnType<typeof makeTempDir>>;
beforeEach(async () => {
  dir = await makeTempDir('corrupt-helper');
});
afterEach(async () => {
  await dir.remove();
});

it('flips only where the content is random-looking, in few places, never in zero runs', async () => {
  const random = randomBytes(8192);
  const content = Buffer.concat([random, Buffer.alloc(8192)]);
  const before = Buffer.concat([Buffer.alloc(1 << 20), content, Buffer.alloc(1 << 20)]);
  await mkdir(join(dir.path, 'segments'));
  const file = join(dir.path, 'segments', '00000001.seg');
  for (let seed = 1; seed <= 20; seed++) {
    await writeFile(file, before);
    const places = await corruptObjectOnDisk(dir.path, content, seededRng(seed));
    expect(places.length, `seed ${seed}`).toBe(1);
    const start = places[0]!.offsetBytes;
    expect(start, `seed ${seed}: a place inside the random half`).toBeGreaterThanOrEqual(1 << 20);
    expect(start + 64, `seed ${seed}`).toBeLessThanOrEqual((1 << 20) + random.length);
    const after = await readFile(file);
    let changed = 0;
    for (let i = 0; i < after.length; i++) if (after[i] !== before[i]) changed++;
    expect(changed, `seed ${seed}: bytes changed`).toBe(16);
    expect(after.subarray((1 << 20) + random.length).equals(before.subarray((1 << 20) + random.length)), `seed ${seed}: zeros untouched`).toBe(true);
  }
});
