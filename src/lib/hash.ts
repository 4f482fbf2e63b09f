/**
 * The object hash every process agrees on: MurmurHash3 (x86, 32-bit, seed 0)
 * of the UTF-8 name. Placement maps an object to a placement group by its low
 * bits (pgCount is a power of two); the store orders objects by the
 * bit-reversed hash so that each placement group is one contiguous key range
 * (Ceph's trick), which makes "list the objects of pg p" a range scan.
 */
const encoder = new TextEncoder();

export function murmur3(data: Uint8Array, seed = 0): number {
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  let h = seed >>> 0;
  const blocks = data.length & ~3;
  for (let i = 0; i < blocks; i += 4) {
    let k = data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = data.length & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= data[blocks + 2]! << 16;
    if (tail >= 2) k ^= data[blocks + 1]! << 8;
    k ^= data[blocks]!;
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  return fmix32(h ^ data.length);
}

/** MurmurHash3's finalizer: a bijective 32-bit avalanche mix (placement uses it too). */
export function fmix32(value: number): number {
  let h = value | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function objectHash(name: string): number {
  return murmur3(encoder.encode(name));
}

export function reverseBits32(value: number): number {
  let v = value >>> 0;
  v = ((v >>> 1) & 0x55555555) | ((v & 0x55555555) << 1);
  v = ((v >>> 2) & 0x33333333) | ((v & 0x33333333) << 2);
  v = ((v >>> 4) & 0x0f0f0f0f) | ((v & 0x0f0f0f0f) << 4);
  v = ((v >>> 8) & 0x00ff00ff) | ((v & 0x00ff00ff) << 8);
  v = (v >>> 16) | (v << 16);
  return v >>> 0;
}

/** The store's sort key for an object: its hash with the bits reversed. */
export function objectSortKey(name: string): number {
  return reverseBits32(objectHash(name));
}

/**
 * The sort-key range [start, end) holding every object whose hash has the low
 * `bits` bits equal to `pg` (pgCount = 2^bits). end is 2^32 for the last range.
 */
export function pgSortKeyRange(pg: number, bits: number): { start: number; end: number } {
  if (bits === 0) return { start: 0, end: 0x1_0000_0000 };
  const start = reverseBits32(pg) >>> 0;
  return { start, end: start + 2 ** (32 - bits) };
}
