/**
 * Arithmetic in GF(2^8) with ISA-L's field (polynomial x^8+x^4+x^3+x^2+1,
 * 0x11d, generator 2) and the matrices Tessera's erasure code is defined by.
 *
 * Owns: the coding matrix (ISA-L's gf_gen_cauchy1_matrix, reproduced here and
 * checked against ISA-L itself in test/native-codec.test.ts), matrix inversion
 * for decoding, and the split multiplication tables the WebAssembly kernel
 * uses. Pure functions over small matrices (at most 40 x 32 bytes); the only
 * module state is the constant log/exp tables built once below.
 */

const POLYNOMIAL = 0x11d;

function buildTables(): { exp: Uint8Array; log: Uint8Array } {
  const exp = new Uint8Array(512);
  const log = new Uint8Array(256);
  let x = 1;
  for (let i = 0; i < 255; i++) {
    exp[i] = x;
    log[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= POLYNOMIAL;
  }
  for (let i = 255; i < 512; i++) exp[i] = exp[i - 255]!;
  return { exp, log };
}

const { exp: EXP, log: LOG } = buildTables();

export function gfMul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return EXP[LOG[a]! + LOG[b]!]!;
}

export function gfInv(a: number): number {
  if (a === 0) throw new RangeError('gfInv(0): zero has no inverse');
  return EXP[255 - LOG[a]!]!;
}

/**
 * ISA-L's gf_gen_cauchy1_matrix for k data and m parity shards: (k+m) rows of
 * k bytes, row-major. Rows 0..k-1 are the identity (data shards are stored as
 * is); row k+p, column j is 1/(i xor j) with i = k+p, which makes every k x k
 * submatrix invertible for k+m <= 256.
 */
export function cauchyMatrix(dataShards: number, parityShards: number): Uint8Array {
  const k = dataShards;
  const rows = dataShards + parityShards;
  const a = new Uint8Array(rows * k);
  for (let i = 0; i < k; i++) a[i * k + i] = 1;
  for (let i = k; i < rows; i++) {
    for (let j = 0; j < k; j++) a[i * k + j] = gfInv(i ^ j);
  }
  return a;
}

/** Inverse of an n x n row-major matrix by Gauss-Jordan elimination, or null if singular. */
export function invertMatrix(matrix: Uint8Array, n: number): Uint8Array | null {
  if (matrix.length !== n * n) throw new RangeError(`invertMatrix: expected ${n * n} bytes, got ${matrix.length}`);
  const a = Uint8Array.from(matrix);
  const inv = new Uint8Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let col = 0; col < n; col++) {
    let pivot = col;
    while (pivot < n && a[pivot * n + col] === 0) pivot++;
    if (pivot === n) return null;
    if (pivot !== col) {
      swapRows(a, n, pivot, col);
      swapRows(inv, n, pivot, col);
    }
    const scale = gfInv(a[col * n + col]!);
    for (let j = 0; j < n; j++) {
      a[col * n + j] = gfMul(a[col * n + j]!, scale);
      inv[col * n + j] = gfMul(inv[col * n + j]!, scale);
    }
    for (let row = 0; row < n; row++) {
      const factor = row === col ? 0 : a[row * n + col]!;
      if (factor === 0) continue;
      for (let j = 0; j < n; j++) {
        a[row * n + j]! ^= gfMul(factor, a[col * n + j]!);
        inv[row * n + j]! ^= gfMul(factor, inv[col * n + j]!);
      }
    }
  }
  return inv;
}

function swapRows(m: Uint8Array, n: number, r1: number, r2: number): void {
  for (let j = 0; j < n; j++) {
    const t = m[r1 * n + j]!;
    m[r1 * n + j] = m[r2 * n + j]!;
    m[r2 * n + j] = t;
  }
}

/** (rows x n) times (n x n), both row-major. */
export function multiplyMatrices(left: Uint8Array, right: Uint8Array, rows: number, n: number): Uint8Array {
  const out = new Uint8Array(rows * n);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < n; c++) {
      let acc = 0;
      for (let i = 0; i < n; i++) acc ^= gfMul(left[r * n + i]!, right[i * n + c]!);
      out[r * n + c] = acc;
    }
  }
  return out;
}

/**
 * The coefficients that rebuild `targets` from `survivors` (exactly k shard
 * indices, ascending): one row of k bytes per target, applied to the
 * survivors in the order given. A lost data shard's row is the matching row of
 * the inverse of the survivors' rows of the coding matrix; a lost parity
 * shard's row is its coding row times that inverse (re-encode from the
 * recovered data, in one pass).
 */
export function decodeCoefficients(
  coding: Uint8Array,
  dataShards: number,
  survivors: readonly number[],
  targets: readonly number[],
): Uint8Array {
  const k = dataShards;
  const picked = new Uint8Array(k * k);
  survivors.forEach((shard, row) => picked.set(coding.subarray(shard * k, shard * k + k), row * k));
  const inverse = invertMatrix(picked, k);
  // Any k rows of an identity-over-Cauchy matrix are independent: a singular
  // pick means the matrix or the survivor list is broken, not the input.
  if (inverse === null) throw new Error(`singular decode matrix for survivors ${survivors.join(',')}`);
  const out = new Uint8Array(targets.length * k);
  targets.forEach((shard, row) => {
    const codingRow = coding.subarray(shard * k, shard * k + k);
    out.set(multiplyMatrices(codingRow, inverse, 1, k), row * k);
  });
  return out;
}

/**
 * Split multiplication tables for the WebAssembly kernel: for each data
 * column j and each output row r (j-major: entry j*rows + r), 32 bytes,
 * c*x for x = 0..15 then c*(x<<4) for x = 0..15, with c = coefficients[r*k + j].
 * (ISA-L's ec_init_tables writes the same 32-byte entries, row-major.)
 */
export function splitTables(coefficients: Uint8Array, dataShards: number, rows: number): Uint8Array {
  const k = dataShards;
  const tables = new Uint8Array(32 * k * rows);
  for (let j = 0; j < k; j++) {
    for (let r = 0; r < rows; r++) {
      const c = coefficients[r * k + j]!;
      const base = (j * rows + r) * 32;
      for (let x = 0; x < 16; x++) {
        tables[base + x] = gfMul(c, x);
        tables[base + 16 + x] = gfMul(c, x << 4);
      }
    }
  }
  return tables;
}
