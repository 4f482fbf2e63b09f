/**
 * crc32c combine: the CRC-32C of A followed by B from crc32c(A), crc32c(B)
 * and the length of B alone, without the bytes. zlib's crc32_combine method
 * (zlib 1.2.12 and later: multiply crc(A) by x^(8 * len(B)) modulo the
 * polynomial, then add crc(B)), adapted to the Castagnoli polynomial
 * (reflected 0x82F63B78). The pre- and post-inversion of the standard CRC
 * cancel out in that formula, so it holds for crc32c() values as they are.
 *
 * Cost: O(log len(B)) multiplications of 32-bit polynomials (each at most 32
 * shift-and-xor steps); combining one 64 KiB chunk is one multiplication.
 * Used where a checksum of bytes already verified chunk by chunk is needed
 * again (the daemon's rpc trailer over a store read: docs/store.md).
 *
 * The only module state is X2N, a table computed once at load and never
 * written again.
 */
import { TesseraError } from '../src/lib/errors.js';

/** The CRC-32C polynomial, bit-reflected. */
const POLY = 0x82f63b78;

/** a * b modulo POLY, both reflected polynomials (bit 31 is x^0). */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if ((a & m) !== 0) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** X2N[k] = x^(2^k) modulo POLY. */
const X2N: Uint32Array = (() => {
  const table = new Uint32Array(32);
  let p = 0x40000000; // x^1
  table[0] = p;
  for (let k = 1; k < 32; k++) table[k] = p = multModP(p, p);
  return table;
})();

/** x^(n * 2^k) modulo POLY. */
function x2nModP(n: number, k: number): number {
  let p = 0x80000000; // x^0
  while (n > 0) {
    if (n % 2 === 1) p = multModP(X2N[k & 31]!, p);
    n = Math.floor(n / 2);
    k++;
  }
  return p;
}

/**
 * The multiplier that shifts a crc over lengthBytes bytes (x^(8 * lengthBytes)):
 * for combining many pieces of the same length, compute it once and use
 * crc32cCombineWith.
 */
export function crc32cShiftOperator(lengthBytes: number): number {
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes < 0) throw new TesseraError('InvalidArgument', `crc32cShiftOperator: bad length ${lengthBytes}`);
  return x2nModP(lengthBytes, 3);
}

/** crc32c(A || B) from crc32c(A) and crc32c(B), with operator = crc32cShiftOperator(len(B)). */
export function crc32cCombineWith(crcA: number, crcB: number, operator: number): number {
  return (multModP(operator, crcA >>> 0) ^ crcB) >>> 0;
}

/** crc32c(A || B) from crc32c(A), crc32c(B) and len(B) in bytes. Unsigned 32-bit result. */
export function crc32cCombine(crcA: number, crcB: number, lengthBBytes: number): number {
  return crc32cCombineWith(crcA, crcB, crc32cShiftOperator(lengthBBytes));
}
