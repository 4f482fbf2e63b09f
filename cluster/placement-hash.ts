/**
 * The random numbers placement draws from: pure 32-bit integer hashing, so
 * every process (and any port to another language) computes the same bits.
 *
 * - `hash4(a, b, c, d)` is MurmurHash3 (x86, 32-bit, seed 0) of the 16 bytes
 *   le32(a) || le32(b) || le32(c) || le32(d); a test checks it against
 *   src/lib/hash.ts's murmur3 over those bytes.
 * - `drawBits(pool, pg, disk, attempt, pgBits)` is the 32-bit uniform behind
 *   one straw2 draw. Its top pgBits bits are a pseudo-random permutation of
 *   the pg number, keyed by (pool, disk, attempt); its low 32 - pgBits bits
 *   come from hash4(pool, pg, disk, attempt). Over the pgs of a pool, a disk's
 *   uniforms are therefore stratified: exactly one pg falls in each 1/pgCount
 *   slice of (0, 1]. Each draw is still uniform and draws of different disks
 *   (or attempts) are independent-looking, so the expected placement is that
 *   of plain hashing; the stratification only removes part of the pg-to-pg
 *   noise, which is what makes per-disk shares even at realistic pg counts
 *   (docs/placement.md has the figures).
 * - `lnUniform(bits)` is Math.log((bits + 1) / 2^32), in [-22.19, 0]. V8's
 *   Math.log is a port of fdlibm's, bit-identical on every platform.
 */

/** Salt that separates permutation keys from the per-pg low bits. */
const STRATUM_SALT = 0x5354_5241;

function mixWord(h: number, word: number): number {
  let k = Math.imul(word | 0, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

import { fmix32 } from '../src/lib/hash.js';

export { fmix32 };

/** MurmurHash3 x86-32, seed 0, of four little-endian 32-bit words. */
export function hash4(a: number, b: number, c: number, d: number): number {
  return hash4Finish(hash4Prefix(a, b), c, d);
}

/** hash4's state after its first two words: hash4(a, b, c, d) = hash4Finish(hash4Prefix(a, b), c, d). */
export function hash4Prefix(a: number, b: number): number {
  return mixWord(mixWord(0, a), b);
}

export function hash4Finish(prefix: number, c: number, d: number): number {
  return fmix32(mixWord(mixWord(prefix, c), d) ^ 16);
}

/** Rounds of the pg permutation; each takes one 32-bit round key. */
export const PERMUTATION_ROUNDS = 4;

/**
 * Writes the round keys of one (pool, disk, attempt) permutation into
 * out[offset .. offset + PERMUTATION_ROUNDS): the fmix32 chain of
 * hash4(pool, disk, attempt, STRATUM_SALT).
 */
export function permutationKeys(poolId: number, diskId: number, attempt: number, out: Uint32Array, offset: number): void {
  let k = hash4(poolId, diskId, attempt, STRATUM_SALT);
  for (let round = 0; round < PERMUTATION_ROUNDS; round++) {
    k = fmix32((k + 0x9e3779b9) | 0);
    out[offset + round] = k;
  }
}

/**
 * A bijection of [0, 2^bits) chosen by the round keys at keys[offset..]:
 * per round, add the key, multiply by the key made odd, xor-shift right by
 * ceil(bits / 2); each step is invertible modulo 2^bits. bits <= 30.
 */
export function permuteBits(value: number, keys: Uint32Array, offset: number, bits: number): number {
  if (bits === 0) return 0;
  const mask = (1 << bits) - 1;
  const shift = (bits + 1) >>> 1;
  let x = value & mask;
  for (let round = 0; round < PERMUTATION_ROUNDS; round++) {
    const k = keys[offset + round]!;
    x = (x + k) & mask;
    x = Math.imul(x, k | 1) & mask;
    x ^= x >>> shift;
  }
  return x;
}

/**
 * The 32-bit uniform of one draw, given hash4Prefix(pool, pg) and the round
 * keys of its permutation at keys[offset..].
 */
export function drawBitsKeyed(poolPg: number, pg: number, diskId: number, attempt: number, pgBits: number, keys: Uint32Array, offset: number): number {
  const low = hash4Finish(poolPg, diskId, attempt);
  if (pgBits === 0) return low;
  const stratum = permuteBits(pg, keys, offset, pgBits);
  return ((stratum << (32 - pgBits)) | (low >>> pgBits)) >>> 0;
}

/** drawBitsKeyed with the round keys computed on the spot. */
export function drawBits(poolId: number, pg: number, diskId: number, attempt: number, pgBits: number): number {
  const keys = new Uint32Array(PERMUTATION_ROUNDS);
  permutationKeys(poolId, diskId, attempt, keys, 0);
  return drawBitsKeyed(hash4Prefix(poolId, pg), pg, diskId, attempt, pgBits, keys, 0);
}

/** ln of the uniform (bits + 1) / 2^32 in (0, 1]. */
export function lnUniform(bits: number): number {
  return Math.log((bits + 1) / 4294967296);
}
