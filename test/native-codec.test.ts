/**
 * The erasure codec conformance suite (native/index.ts), run against every
 * implementation this process has: the ISA-L addon, and the WebAssembly
 * kernels (standard SIMD always, relaxed SIMD where the runtime accepts it).
 *
 * Proves: parity is bit-identical across implementations for random data, every
 * k <= 12 and m <= 4, at lengths around the kernels' edges (16-byte vectors,
 * 64-byte ISA-L minimum, 4 KiB blocks); every erasure pattern of up to m shards
 * (data and parity) rebuilds the original for k <= 6, random patterns for
 * larger k up to 32+8; shards from allocateShards and plain buffers give the
 * same bytes; our Cauchy matrix is ISA-L's gf_gen_cauchy1_matrix. Misuse
 * throws TesseraError('InvalidArgument'), never a crash. An implementation
 * that is not available is skipped with a console.warn saying why.
 */
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { isTesseraError } from '../src/lib/errors.js';
import { cauchyMatrix, gfMul, invertMatrix, multiplyMatrices } from '../native/gf256.js';
import {
  availableCodecs,
  createErasureCodec,
  nativeStatus,
  SHARD_BYTES_MAX,
  type CodecImplementation,
  type ErasureCodec,
} from '../native/index.js';

const ALL: CodecImplementation[] = ['isa-l', 'wasm-relaxed-simd', 'wasm-simd'];
const available = availableCodecs();
const reasons: Record<CodecImplementation, string> = {
  'isa-l': `ISA-L addon not loaded (${nativeStatus().fallbackReason}); install libisal-dev and run npm run build:native`,
  'wasm-relaxed-simd': 'this runtime has no relaxed SIMD (Node.js >= 22 has it); test/native-loading.test.ts cross-checks it in a child process with the flag',
  'wasm-simd': 'dist/native/erasure.wasm missing: run npm run build',
};
for (const implementation of ALL) {
  if (!available.includes(implementation)) console.warn(`SKIPPING ${implementation} codec tests: ${reasons[implementation]}`);
}

/** A tiny deterministic generator, so a failing case can be replayed from its seed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function encodeFresh(codec: ErasureCodec, data: Uint8Array[]): Uint8Array[] {
  const parity = Array.from({ length: codec.parityShards }, () => new Uint8Array(data[0]!.length));
  codec.encode(data, parity);
  return parity;
}

/** Loses `lost` shards, rebuilds them into fresh buffers, and checks they match. */
function expectRebuilds(codec: ErasureCodec, original: Uint8Array[], lost: number[]): void {
  const shards: (Uint8Array | null)[] = original.map((s, i) => (lost.includes(i) ? new Uint8Array(s.length).fill(0xa5) : s));
  codec.reconstruct(shards, lost);
  for (const i of lost) expect(Buffer.from(shards[i]!).equals(Buffer.from(original[i]!)), `shard ${i} of lost [${lost}]`).toBe(true);
}

function* subsets(n: number, size: number, start = 0): Generator<number[]> {
  if (size === 0) {
    yield [];
    return;
  }
  for (let i = start; i <= n - size; i++) for (const rest of subsets(n, size - 1, i + 1)) yield [i, ...rest];
}

function expectInvalid(fn: () => unknown, message: RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(isTesseraError(thrown, 'InvalidArgument'), `expected InvalidArgument, got ${String(thrown)}`).toBe(true);
  expect((thrown as Error).message).toMatch(message);
}

describe('GF(2^8) and the coding matrix', () => {
  it('multiplies in ISA-L field 0x11d and inverts matrices', () => {
    expect(gfMul(0x80, 2)).toBe(0x1d);
    expect(gfMul(3, 7)).toBe(9);
    const random = rng(7);
    for (let n = 1; n <= 12; n++) {
      const m = Uint8Array.from({ length: n * n }, () => Math.floor(random() * 256));
      const inverse = invertMatrix(m, n);
      if (inverse === null) continue; // random matrices may be singular
      const product = multiplyMatrices(m, inverse, n, n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) expect(product[i * n + j]).toBe(i === j ? 1 : 0);
    }
    expect(invertMatrix(new Uint8Array(4), 2)).toBeNull();
  });

  it('every k rows of the Cauchy matrix are invertible (k <= 8, m <= 4)', () => {
    for (let k = 1; k <= 8; k++) {
      for (let m = 1; m <= 4; m++) {
        const coding = cauchyMatrix(k, m);
        for (const rows of subsets(k + m, k)) {
          const picked = new Uint8Array(k * k);
          rows.forEach((row, r) => picked.set(coding.subarray(row * k, row * k + k), r * k));
          expect(invertMatrix(picked, k), `k=${k} m=${m} rows ${rows}`).not.toBeNull();
        }
      }
    }
  });

  it.skipIf(!available.includes('isa-l'))('equals ISA-L gf_gen_cauchy1_matrix for every k <= 32, m <= 8', () => {
    const addon = createRequire(import.meta.url)(nativeStatus().addonPath!) as {
      cauchyMatrix(k: number, m: number): Uint8Array;
    };
    for (let k = 1; k <= 32; k++) {
      for (let m = 1; m <= 8; m++) {
        expect(Buffer.from(cauchyMatrix(k, m)).equals(Buffer.from(addon.cauchyMatrix(k, m))), `k=${k} m=${m}`).toBe(true);
      }
    }
  });
});

describe('implementations agree byte for byte', () => {
  const lengths = [1, 15, 16, 17, 63, 64, 65, 100, 4096, 4096 + 13, 3 * 4096 + 7];

  it('gives identical parity for every k <= 12, m <= 4 (random data)', () => {
    expect(available.length, 'at least the WebAssembly codec').toBeGreaterThan(0);
    const random = rng(42);
    for (let k = 1; k <= 12; k++) {
      for (let m = 1; m <= 4; m++) {
        const codecs = available.map((implementation) => createErasureCodec({ dataShards: k, parityShards: m, implementation }));
        for (const length of [lengths[Math.floor(random() * lengths.length)]!, 1000 + Math.floor(random() * 9000)]) {
          const data = Array.from({ length: k }, () => randomBytes(length));
          const [reference, ...others] = codecs.map((codec) => encodeFresh(codec, data));
          others.forEach((parity, c) => {
            parity.forEach((shard, p) => {
              const what = `${codecs[c + 1]!.implementation} vs ${codecs[0]!.implementation}, ${k}+${m}, ${length} B, parity ${p}`;
              expect(Buffer.from(shard).equals(Buffer.from(reference![p]!)), what).toBe(true);
            });
          });
        }
      }
    }
  });

  it('gives identical parity at every edge length for 4+2, 8+3 and 32+8', () => {
    for (const [k, m] of [
      [4, 2],
      [8, 3],
      [32, 8],
    ] as const) {
      const codecs = available.map((implementation) => createErasureCodec({ dataShards: k, parityShards: m, implementation }));
      for (const length of lengths) {
        const data = Array.from({ length: k }, () => randomBytes(length));
        const parities = codecs.map((codec) => encodeFresh(codec, data));
        for (const parity of parities.slice(1)) {
          parity.forEach((shard, p) => expect(Buffer.from(shard).equals(Buffer.from(parities[0]![p]!))).toBe(true));
        }
      }
    }
  });

  it('parity of a known input is fixed (the on-disk format does not drift)', () => {
    // 2+2, data shards [1,2,3] and [4,5,6]: parity row i is 1/(i xor j) over ISA-L's field.
    for (const implementation of available) {
      const codec = createErasureCodec({ dataShards: 2, parityShards: 2, implementation });
      const parity = encodeFresh(codec, [Uint8Array.of(1, 2, 3), Uint8Array.of(4, 5, 6)]);
      const coding = cauchyMatrix(2, 2);
      const expected = [2, 3].map((row) =>
        Uint8Array.from([0, 1, 2], (i) => gfMul(coding[row * 2]!, [1, 2, 3][i]!) ^ gfMul(coding[row * 2 + 1]!, [4, 5, 6][i]!)),
      );
      expect(parity.map((p) => [...p])).toEqual(expected.map((p) => [...p]));
    }
  });
});

for (const implementation of ALL) {
  describe.skipIf(!available.includes(implementation))(`${implementation} codec`, () => {
    const make = (k: number, m: number): ErasureCodec => createErasureCodec({ dataShards: k, parityShards: m, implementation });

    it('reports its geometry and implementation', () => {
      const codec = make(8, 3);
      expect([codec.dataShards, codec.parityShards, codec.implementation]).toEqual([8, 3, implementation]);
    });

    it('rebuilds every erasure pattern of up to m shards (k <= 6, m <= 4)', () => {
      for (let k = 1; k <= 6; k++) {
        for (let m = 1; m <= 4; m++) {
          const codec = make(k, m);
          const data = Array.from({ length: k }, () => randomBytes(97));
          const original = [...data, ...encodeFresh(codec, data)];
          for (let lost = 1; lost <= m; lost++) for (const pattern of subsets(k + m, lost)) expectRebuilds(codec, original, pattern);
        }
      }
    });

    it('rebuilds random erasure patterns for larger k (up to 32+8)', () => {
      const random = rng(1234);
      for (const [k, m] of [
        [7, 3],
        [8, 4],
        [10, 4],
        [12, 4],
        [16, 6],
        [20, 8],
        [32, 8],
      ] as const) {
        const codec = make(k, m);
        const data = Array.from({ length: k }, () => randomBytes(4096 + 33));
        const original = [...data, ...encodeFresh(codec, data)];
        for (let trial = 0; trial < 25; trial++) {
          const count = 1 + Math.floor(random() * m);
          const pattern: number[] = [];
          while (pattern.length < count) {
            const shard = Math.floor(random() * (k + m));
            if (!pattern.includes(shard)) pattern.push(shard);
          }
          expectRebuilds(codec, original, pattern);
        }
      }
    });

    it('rebuilds only what is asked, with other lost shards left null', () => {
      const codec = make(4, 2);
      const data = Array.from({ length: 4 }, () => randomBytes(1000));
      const original = [...data, ...encodeFresh(codec, data)];
      const shards: (Uint8Array | null)[] = [...original];
      shards[1] = null; // lost, not wanted
      shards[2] = new Uint8Array(1000); // lost, wanted
      codec.reconstruct(shards, [2]);
      expect(Buffer.from(shards[2]!).equals(Buffer.from(original[2]!))).toBe(true);
      expect(shards[1]).toBeNull();
      codec.reconstruct(original, []); // nothing to do
    });

    it('keeps decoding right across more patterns than its table cache holds', () => {
      const codec = make(6, 3);
      const data = Array.from({ length: 6 }, () => randomBytes(256));
      const original = [...data, ...encodeFresh(codec, data)];
      const patterns = [...subsets(9, 3), ...subsets(9, 2)]; // 84 + 36 > 64 entries
      for (let pass = 0; pass < 2; pass++) for (const pattern of patterns) expectRebuilds(codec, original, pattern);
    });

    it('codes shards from allocateShards in place, with the same bytes as plain buffers', () => {
      const codec = make(5, 3);
      for (const length of [1, 64, 4096 + 5, 70_000]) {
        const shards = codec.allocateShards(length);
        expect(shards).toHaveLength(8);
        expect(shards.every((s) => s.length === length && s.every((b) => b === 0))).toBe(true);
        const data = Array.from({ length: 5 }, () => randomBytes(length));
        data.forEach((d, i) => shards[i]!.set(d));
        codec.encode(shards.slice(0, 5), shards.slice(5));
        const plain = encodeFresh(codec, data);
        plain.forEach((p, i) => expect(Buffer.from(shards[5 + i]!).equals(Buffer.from(p))).toBe(true));
        const original = shards.map((s) => Uint8Array.from(s));
        shards[0]!.fill(0);
        shards[6]!.fill(0);
        codec.reconstruct(shards, [0, 6]);
        expect(Buffer.from(shards[0]!).equals(Buffer.from(original[0]!))).toBe(true);
        expect(Buffer.from(shards[6]!).equals(Buffer.from(original[6]!))).toBe(true);
      }
    });

    it('codes views at odd offsets into a shared buffer', () => {
      const codec = make(3, 2);
      const backing = randomBytes(5 * 1001 + 3);
      const views = Array.from({ length: 5 }, (_, i) => backing.subarray(3 + i * 1001, 3 + i * 1001 + 1000));
      const data = views.slice(0, 3).map((v) => Uint8Array.from(v));
      codec.encode(views.slice(0, 3), views.slice(3));
      encodeFresh(codec, data).forEach((p, i) => expect(Buffer.from(views[3 + i]!).equals(Buffer.from(p))).toBe(true));
    });

    it('rejects misuse with InvalidArgument', () => {
      const codec = make(4, 2);
      const shard = (n = 64): Uint8Array => new Uint8Array(n);
      const four = (): Uint8Array[] => [shard(), shard(), shard(), shard()];
      expectInvalid(() => codec.encode([shard(), shard(), shard()], [shard(), shard()]), /expected 4 data shards, got 3/);
      expectInvalid(() => codec.encode(four(), [shard()]), /expected 2 parity shards, got 1/);
      expectInvalid(() => codec.encode([shard(), shard(), shard(), shard(65)], [shard(), shard()]), /same length/);
      expectInvalid(() => codec.encode(four(), [shard(), shard(63)]), /same length/);
      expectInvalid(() => codec.encode([shard(0), shard(0), shard(0), shard(0)], [shard(0), shard(0)]), /must not be empty/);
      expectInvalid(() => codec.encode([...four().slice(0, 3), 'x' as unknown as Uint8Array], [shard(), shard()]), /not a Uint8Array/);
      const data = four();
      expectInvalid(() => codec.encode(data, [data[0]!, shard()]), /overlaps/);
      const backing = new Uint8Array(64 * 6);
      const overlapping = [0, 1, 2, 3, 4, 5].map((i) => backing.subarray(i * 60, i * 60 + 64));
      expectInvalid(() => codec.encode(overlapping.slice(0, 4), overlapping.slice(4)), /overlaps/);
      const own = codec.allocateShards(64); // the in-place path checks too
      expectInvalid(() => codec.encode(own.slice(0, 4), [own[4]!, own[1]!]), /overlaps/);
      expectInvalid(() => codec.encode(own.slice(0, 4), [own[4]!, own[4]!.subarray(0)]), /overlaps/);
      expectInvalid(() => codec.reconstruct([own[0]!, own[2]!, own[2]!, own[3]!, own[4]!, own[5]!], [0, 1]), /overlaps/);
      expectInvalid(() => codec.reconstruct([data[0]!, data[2]!, data[2]!, data[3]!, shard(), shard()], [0, 1]), /overlaps/);

      const full = [...four(), shard(), shard()];
      expectInvalid(() => codec.reconstruct(full.slice(0, 5), [0]), /expected 6 shard entries/);
      expectInvalid(() => codec.reconstruct([shard(), shard(), shard(), shard(), shard(), shard()], [0, 1, 2]), /3 surviving shards, need 4/);
      expectInvalid(() => codec.reconstruct([shard(), shard(), null, null, shard(), shard()], [1]), /3 surviving shards, need 4/);
      expectInvalid(() => codec.reconstruct(full, [6]), /not in 0\.\.5/);
      expectInvalid(() => codec.reconstruct(full, [-1]), /not in 0\.\.5/);
      expectInvalid(() => codec.reconstruct(full, [1.5]), /not in 0\.\.5/);
      expectInvalid(() => codec.reconstruct(full, [1, 1]), /listed twice/);
      expectInvalid(() => codec.reconstruct([null, ...full.slice(1)], [0]), /no output buffer/);
      expectInvalid(() => codec.reconstruct([shard(), shard(), shard(), shard(65), shard(), shard()], [0]), /same length/);
      expectInvalid(() => codec.reconstruct([shard(0), shard(0), shard(0), shard(0), shard(0), shard(0)], [0]), /must not be empty/);
      expectInvalid(() => codec.reconstruct([...full.slice(0, 5), 7 as unknown as Uint8Array], [0]), /neither a Uint8Array nor null/);

      expectInvalid(() => codec.allocateShards(0), /shard size/);
      expectInvalid(() => codec.allocateShards(SHARD_BYTES_MAX + 1), /shard size/);
      expectInvalid(() => codec.allocateShards(1.5), /shard size/);
    });
  });
}

describe('createErasureCodec', () => {
  it('rejects bad geometries and unknown implementations with InvalidArgument', () => {
    expectInvalid(() => createErasureCodec({ dataShards: 0, parityShards: 2 }), /dataShards/);
    expectInvalid(() => createErasureCodec({ dataShards: 33, parityShards: 2 }), /dataShards/);
    expectInvalid(() => createErasureCodec({ dataShards: 2.5, parityShards: 2 }), /dataShards/);
    expectInvalid(() => createErasureCodec({ dataShards: 4, parityShards: 0 }), /parityShards/);
    expectInvalid(() => createErasureCodec({ dataShards: 4, parityShards: 9 }), /parityShards/);
    expectInvalid(
      () => createErasureCodec({ dataShards: 4, parityShards: 2, implementation: 'gpu' as CodecImplementation }),
      /unknown implementation/,
    );
  });

  it('picks the fastest available implementation by default, as nativeStatus says', () => {
    const codec = createErasureCodec({ dataShards: 4, parityShards: 2 });
    expect(codec.implementation).toBe(available[0]);
    expect(nativeStatus().codec).toBe(available[0]);
  });

  it.skipIf(!available.includes('isa-l'))('the addon itself refuses bad arguments with an exception, not a crash', () => {
    const addon = createRequire(import.meta.url)(nativeStatus().addonPath!) as {
      encode(length: number, tables: Uint8Array, sources: unknown, targets: unknown): void;
      initTables(k: number, rows: number, coefficients: Uint8Array, tables: Uint8Array): void;
      crc32c(data: unknown, previous: number): number;
    };
    const tables = new Uint8Array(32 * 2 * 1);
    expect(() => addon.encode(100, tables, [new Uint8Array(100), new Uint8Array(99)], [new Uint8Array(100)])).toThrow(/shorter/);
    expect(() => addon.encode(100, tables, [new Uint8Array(100)], [new Uint8Array(100)])).toThrow(/tables/);
    expect(() => addon.encode(100, tables, 'nope', [new Uint8Array(100)])).toThrow();
    expect(() => addon.encode(100, tables, [new Float32Array(100)], [new Uint8Array(100)])).toThrow(/Uint8Array/);
    expect(() => addon.encode(0, tables, [new Uint8Array(1)], [new Uint8Array(1)])).toThrow(/range/);
    expect(() => addon.initTables(2, 1, new Uint8Array(3), tables)).toThrow(/initTables/);
    expect(() => addon.crc32c('text', 0)).toThrow(/Uint8Array/);
  });
});
