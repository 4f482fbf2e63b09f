/**
 * CRC-64/NVME (the checksum S3 calls CRC64NVME): reflected, polynomial
 * 0xad93d23594c93659 (0x9a6c9329ac4bc9b5 reversed), initial value and final
 * xor all ones; check value of "123456789" is 0xae8b14860a799888.
 *
 * Table-driven, slice-by-8, with the 64-bit state held as two 32-bit halves
 * (BigInt per byte would be two orders of magnitude slower). The tables are
 * computed once at load and never written afterwards.
 */
const POLY_HI = 0x9a6c9329;
const POLY_LO = 0xac4bc9b5;
const SLICES = 8;

function buildTables(): { hi: Uint32Array; lo: Uint32Array } {
  const hi = new Uint32Array(SLICES * 256);
  const lo = new Uint32Array(SLICES * 256);
  for (let i = 0; i < 256; i++) {
    let h = 0;
    let l = i;
    for (let bit = 0; bit < 8; bit++) {
      const carry = l & 1;
      l = ((l >>> 1) | (h << 31)) >>> 0;
      h = h >>> 1;
      if (carry) {
        l = (l ^ POLY_LO) >>> 0;
        h = (h ^ POLY_HI) >>> 0;
      }
    }
    hi[i] = h;
    lo[i] = l;
  }
  // Table k advances a byte through k more zero bytes: T[k][i] = T[k-1][i] >> 8 ^ T[0][T[k-1][i] & 0xff].
  for (let k = 1; k < SLICES; k++) {
    for (let i = 0; i < 256; i++) {
      const ph = hi[(k - 1) * 256 + i]!;
      const pl = lo[(k - 1) * 256 + i]!;
      const idx = pl & 0xff;
      lo[k * 256 + i] = (((pl >>> 8) | (ph << 24)) ^ lo[idx]!) >>> 0;
      hi[k * 256 + i] = ((ph >>> 8) ^ hi[idx]!) >>> 0;
    }
  }
  return { hi, lo };
}

const { hi: TH, lo: TL } = buildTables();

/** An incremental CRC-64/NVME. */
export class Crc64Nvme {
  #hi = 0xffffffff;
  #lo = 0xffffffff;

  update(data: Uint8Array): this {
    let i = 0;
    const end8 = data.length - (data.length % 8);
    let h = this.#hi;
    let l = this.#lo;
    for (; i < end8; i += 8) {
      const xl = l ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24));
      const xh = h ^ (data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24));
      const a = 7 * 256 + (xl & 0xff);
      const b = 6 * 256 + ((xl >>> 8) & 0xff);
      const c = 5 * 256 + ((xl >>> 16) & 0xff);
      const d = 4 * 256 + (xl >>> 24);
      const e = 3 * 256 + (xh & 0xff);
      const f = 2 * 256 + ((xh >>> 8) & 0xff);
      const g = 256 + ((xh >>> 16) & 0xff);
      const k = xh >>> 24;
      l = TL[a]! ^ TL[b]! ^ TL[c]! ^ TL[d]! ^ TL[e]! ^ TL[f]! ^ TL[g]! ^ TL[k]!;
      h = TH[a]! ^ TH[b]! ^ TH[c]! ^ TH[d]! ^ TH[e]! ^ TH[f]! ^ TH[g]! ^ TH[k]!;
    }
    for (; i < data.length; i++) {
      const idx = (l ^ data[i]!) & 0xff;
      l = ((l >>> 8) | (h << 24)) ^ TL[idx]!;
      h = (h >>> 8) ^ TH[idx]!;
    }
    this.#hi = h >>> 0;
    this.#lo = l >>> 0;
    return this;
  }

  /** The CRC so far, big-endian (8 bytes), as S3 encodes it before base64. */
  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE((this.#hi ^ 0xffffffff) >>> 0, 0);
    out.writeUInt32BE((this.#lo ^ 0xffffffff) >>> 0, 4);
    return out;
  }
}

/** CRC-64/NVME of data, big-endian bytes. */
export function crc64nvme(data: Uint8Array): Buffer {
  return new Crc64Nvme().update(data).digest();
}
