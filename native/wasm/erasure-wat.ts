/**
 * The WebAssembly erasure-coding kernels, as WAT text generated from the
 * templates below (the build assembles them with wabt: native/wasm/build.ts).
 *
 * What they compute is ISA-L's ec_encode_data: for each output row r and byte
 * offset i, out_r[i] = XOR over j of c[r][j] * src_j[i] in GF(2^8), with each
 * multiplication done as ISA-L does it, by two 16-entry table lookups (low and
 * high nibble) with a byte shuffle, 16 bytes at a time. So the parity is
 * bit-identical to the addon's whatever the coefficients.
 *
 * Shape: the stripe is cut into column blocks of BLOCK_BYTES; in each block,
 * output rows go in groups of up to GROUP_ROWS_MAX; for each group, each
 * source's 2 tables per row are loaded into registers once and its block is
 * multiplied into the group's target blocks (stored for the first source,
 * XORed in after), which stay in L1. Why generated: WebAssembly locals cannot
 * be indexed at run time, so there is one function per group size with its
 * tables and rows unrolled.
 *
 * Memory (imported, owned by the caller: native/wasm-codec.ts):
 *   tbl:  32 bytes per (source j, output row r), entry j*rows + r: the products
 *         c*x for x = 0..15, then c*(x << 4) for x = 0..15.
 *   srcs: k little-endian i32 addresses of the sources; dsts: rows addresses.
 * Export: encode(len, k, rows, tbl, srcs, dsts), any len >= 0.
 *
 * Measured on V8 (Node 20, x64): keeping each source's tables in registers and
 * the targets' block in L1 beat keeping accumulators in registers (V8 spilled
 * them); 4x/2x unrolling was as good as any other choice within the noise of
 * a shared machine.
 */

/** Largest output-row group one pass keeps its tables in registers for. */
export const GROUP_ROWS_MAX = 4;
/**
 * Bytes per column block: the targets' block (GROUP_ROWS_MAX x this) stays in
 * the L1 cache while every source's block is multiplied into it. Measured with
 * 1 MiB shards: 1-2 KiB beat 4 KiB by 15-30% for 8+3 (many source streams),
 * larger blocks were no better; 64 KiB shards did not care.
 */
export const BLOCK_BYTES = 2 * 1024;

/** Vectors of 16 bytes per loop turn, by group size (registers: 2 tables per row + per vector x, lo, hi). */
function unrollFor(rows: number): number {
  return rows <= 2 ? 4 : 2;
}

/**
 * The two kernels differ only in the shuffle. i8x16.swizzle must zero lanes
 * whose index is 16 or more, which costs V8 an extra saturating add per
 * shuffle on x64; i8x16.relaxed_swizzle (relaxed SIMD: Node.js 22 on, or
 * --experimental-wasm-relaxed-simd) is the bare pshufb. Our indices are
 * nibbles, always 0..15, where both are defined and equal: same bytes.
 */
export type SwizzleKind = 'standard' | 'relaxed';
const SWIZZLE_OP: Record<SwizzleKind, string> = { standard: 'i8x16.swizzle', relaxed: 'i8x16.relaxed_swizzle' };
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/**
 * One loop turn over `unroll` vectors at $off of one source, for `rows` rows:
 * each product is stored (first source) or XORed into the target.
 */
function columnBody(rows: number, unroll: number, first: boolean, swizzle: string): string {
  return range(unroll)
    .map((u) => {
      const at = 16 * u;
      const products = range(rows).map((r) => {
        const product = `(v128.xor
            (${swizzle} (local.get $tlo${r}) (local.get $lo))
            (${swizzle} (local.get $thi${r}) (local.get $hi)))`;
        const value = first
          ? product
          : `(v128.xor (v128.load offset=${at} (i32.add (local.get $d${r}) (local.get $off))) ${product})`;
        return `
          (v128.store offset=${at} (i32.add (local.get $d${r}) (local.get $off)) ${value})`;
      });
      return `
          (local.set $x (v128.load offset=${at} (i32.add (local.get $src) (local.get $off))))
          (local.set $lo (v128.and (local.get $x) (local.get $mask)))
          (local.set $hi (v128.and (i16x8.shr_u (local.get $x) (i32.const 4)) (local.get $mask)))${products.join('')}`;
    })
    .join('');
}

/** Loops $off from $start to $end (a multiple of 16 apart) over one source. */
function columnLoop(rows: number, first: boolean, swizzle: string): string {
  const unroll = unrollFor(rows);
  const label = first ? 'set' : 'xor';
  const loop = (u: number, name: string): string => `
        (block $${name}_done
          (loop $${name}
            (br_if $${name}_done (i32.gt_u (i32.add (local.get $off) (i32.const ${16 * u})) (local.get $end)))${columnBody(rows, u, first, swizzle)}
            (local.set $off (i32.add (local.get $off) (i32.const ${16 * u})))
            (br $${name})))`;
  return `
        (local.set $off (local.get $start))${loop(unroll, `${label}_wide`)}${unroll > 1 ? loop(1, `${label}_single`) : ''}`;
}

/**
 * $dotR: rows [0, R) of a group over bytes [start, end) (a multiple of 16
 * apart, at most a block): for each source in turn, its 2R tables go to
 * registers and its block is multiplied into the targets' block.
 */
function dotFunction(rows: number, swizzle: string): string {
  const declare = (names: string[], type: string): string => names.map((n) => `(local $${n} ${type})`).join(' ');
  const tables = range(rows).flatMap((r) => [`tlo${r}`, `thi${r}`]);
  const targets = range(rows).map((r) => `d${r}`);
  const loadTables = range(rows)
    .map(
      (r) => `
      (local.set $tlo${r} (v128.load offset=${32 * r} (local.get $t)))
      (local.set $thi${r} (v128.load offset=${32 * r + 16} (local.get $t)))`,
    )
    .join('');
  const loadTargets = range(rows)
    .map((r) => `
    (local.set $d${r} (i32.load offset=${4 * r} (local.get $dsts)))`)
    .join('');
  return `
  (func $dot${rows} (type $dot)
    (param $start i32) (param $end i32) (param $k i32) (param $t i32) (param $stride i32) (param $srcs i32) (param $dsts i32)
    (local $s i32) (local $send i32) (local $src i32) (local $off i32) ${declare(targets, 'i32')}
    (local $mask v128) (local $x v128) (local $lo v128) (local $hi v128) ${declare(tables, 'v128')}
    (local.set $mask (v128.const i8x16 15 15 15 15 15 15 15 15 15 15 15 15 15 15 15 15))
    (local.set $send (i32.add (local.get $srcs) (i32.shl (local.get $k) (i32.const 2))))${loadTargets}
    (local.set $s (local.get $srcs))
    (loop $sources
      (local.set $src (i32.load (local.get $s)))${loadTables}
      (if (i32.eq (local.get $s) (local.get $srcs))
        (then${columnLoop(rows, true, swizzle)})
        (else${columnLoop(rows, false, swizzle)}))
      (local.set $t (i32.add (local.get $t) (local.get $stride)))
      (local.set $s (i32.add (local.get $s) (i32.const 4)))
      (br_if $sources (i32.lt_u (local.get $s) (local.get $send))))
  )`;
}

/** Byte at a time, for the last len % 16 bytes. */
const tailFunction = `
  (func $tail (param $start i32) (param $end i32) (param $k i32) (param $rows i32) (param $tbl i32) (param $srcs i32) (param $dsts i32)
    (local $r i32) (local $i i32) (local $s i32) (local $send i32) (local $t i32) (local $x i32) (local $acc i32) (local $stride i32)
    (local.set $stride (i32.shl (local.get $rows) (i32.const 5)))
    (local.set $send (i32.add (local.get $srcs) (i32.shl (local.get $k) (i32.const 2))))
    (block $rows_done
      (loop $each_row
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $i (local.get $start))
        (block $bytes_done
          (loop $each_byte
            (br_if $bytes_done (i32.ge_u (local.get $i) (local.get $end)))
            (local.set $acc (i32.const 0))
            (local.set $s (local.get $srcs))
            (local.set $t (i32.add (local.get $tbl) (i32.shl (local.get $r) (i32.const 5))))
            (loop $each_source
              (local.set $x (i32.load8_u (i32.add (i32.load (local.get $s)) (local.get $i))))
              (local.set $acc (i32.xor (local.get $acc) (i32.xor
                (i32.load8_u (i32.add (local.get $t) (i32.and (local.get $x) (i32.const 15))))
                (i32.load8_u offset=16 (i32.add (local.get $t) (i32.shr_u (local.get $x) (i32.const 4)))))))
              (local.set $t (i32.add (local.get $t) (local.get $stride)))
              (local.set $s (i32.add (local.get $s) (i32.const 4)))
              (br_if $each_source (i32.lt_u (local.get $s) (local.get $send))))
            (i32.store8 (i32.add (i32.load (i32.add (local.get $dsts) (i32.shl (local.get $r) (i32.const 2)))) (local.get $i))
              (local.get $acc))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $each_byte)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $each_row)))
  )`;

/** encode: for each column block, each group of up to GROUP_ROWS_MAX rows; then the tail. */
const encodeFunction = `
  (func $encode (export "encode")
    (param $len i32) (param $k i32) (param $rows i32) (param $tbl i32) (param $srcs i32) (param $dsts i32)
    (local $vend i32) (local $block i32) (local $bend i32) (local $row i32) (local $group i32) (local $stride i32)
    (local.set $vend (i32.and (local.get $len) (i32.const -16)))
    (local.set $stride (i32.shl (local.get $rows) (i32.const 5)))
    (block $blocks_done
      (loop $each_block
        (br_if $blocks_done (i32.ge_u (local.get $block) (local.get $vend)))
        (local.set $bend (select (local.get $vend) (i32.add (local.get $block) (i32.const ${BLOCK_BYTES}))
          (i32.lt_u (i32.sub (local.get $vend) (local.get $block)) (i32.const ${BLOCK_BYTES}))))
        (local.set $row (i32.const 0))
        (block $groups_done
          (loop $each_group
            (br_if $groups_done (i32.ge_u (local.get $row) (local.get $rows)))
            (local.set $group (select (i32.const ${GROUP_ROWS_MAX}) (i32.sub (local.get $rows) (local.get $row))
              (i32.gt_u (i32.sub (local.get $rows) (local.get $row)) (i32.const ${GROUP_ROWS_MAX}))))
            (call_indirect (type $dot) (local.get $block) (local.get $bend) (local.get $k)
              (i32.add (local.get $tbl) (i32.shl (local.get $row) (i32.const 5))) (local.get $stride)
              (local.get $srcs) (i32.add (local.get $dsts) (i32.shl (local.get $row) (i32.const 2)))
              (local.get $group))
            (local.set $row (i32.add (local.get $row) (local.get $group)))
            (br $each_group)))
        (local.set $block (local.get $bend))
        (br $each_block)))
    (call $tail (local.get $vend) (local.get $len) (local.get $k) (local.get $rows) (local.get $tbl)
      (local.get $srcs) (local.get $dsts))
  )`;

export function erasureWat(swizzle: SwizzleKind): string {
  const groupSizes = range(GROUP_ROWS_MAX).map((i) => i + 1);
  return `;; Generated by native/wasm/erasure-wat.ts (${swizzle} swizzle): edit that, not this.
(module
  (import "env" "memory" (memory 1))
  (type $dot (func (param i32 i32 i32 i32 i32 i32 i32)))
  ;; Indexed by group size; entry 0 is never called (groups have >= 1 row).
  (table ${GROUP_ROWS_MAX + 1} funcref)
  (elem (i32.const 0) $dot1 ${groupSizes.map((r) => `$dot${r}`).join(' ')})
${groupSizes.map((rows) => dotFunction(rows, SWIZZLE_OP[swizzle])).join('\n')}
${tailFunction}
${encodeFunction}
)
`;
}
