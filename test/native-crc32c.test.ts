/**
 * crc32c (native/index.ts): the standard CRC-32C (Castagnoli), as a running
 * value, from every implementation this process has (the ISA-L addon and
 * @node-rs/crc32), plus the default crc32c() the store uses.
 *
 * Proves: the standard check value and RFC 3720 (iSCSI) test vectors; that
 * crc32c(b, crc32c(a)) === crc32c(a + b) at every split of random data; that
 * the implementations agree on random data of many lengths and offsets, also
 * as running values; misuse throws InvalidArgument; crc32cCombine gives
 * crc32c of a concatenation from the two checksums and the second length
 * (every split, empty pieces, lengths up to 128 MiB, many pieces folded in
 * order). A missing addon is skipped with a console.warn saying why.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isTesseraError } from '../src/lib/errors.js';
import { crc32c, crc32cChunks, crc32cCombine, crc32cCombineWith, crc32cShiftOperator, crc32cWith, nativeStatus, type ChecksumImplementation } from '../native/index.js';

const status = nativeStatus();
const implementations: ChecksumImplementation[] = status.addonPath === null ? ['@node-rs/crc32'] : ['isa-l', '@node-rs/crc32'];
if (status.addonPath === null) {
  console.warn(
    `SKIPPING ISA-L crc32c tests: addon not loaded (${status.fallbackReason}); install libisal-dev and run npm run build:native`,
  );
}

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
const VECTORS: [string, Uint8Array, number][] = [
  ['empty', new Uint8Array(0), 0],
  ['"123456789" (the check value)', ascii('123456789'), 0xe3069283],
  ['"a"', ascii('a'), 0xc1d04330],
  ['32 zero bytes (RFC 3720 B.4)', new Uint8Array(32), 0x8a9136aa],
  ['32 0xff bytes (RFC 3720 B.4)', new Uint8Array(32).fill(0xff), 0x62a8ab43],
  ['0..31 ascending (RFC 3720 B.4)', Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
  ['31..0 descending (RFC 3720 B.4)', Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0x113fdb5c],
];

for (const implementation of [...implementations, 'default' as const]) {
  const crc = implementation === 'default' ? crc32c : crc32cWith(implementation);
  describe(`crc32c: ${implementation}`, () => {
    it('matches the standard test vectors', () => {
      for (const [name, data, expected] of VECTORS) expect(crc(data).toString(16), name).toBe(expected.toString(16));
    });

    it('continues a running value at every split', () => {
      const data = randomBytes(300);
      const whole = crc(data);
      for (let split = 0; split <= data.length; split++) {
        expect(crc(data.subarray(split), crc(data.subarray(0, split)))).toBe(whole);
      }
      // Three pieces, and a piece that is empty.
      expect(crc(data.subarray(200), crc(data.subarray(100, 200), crc(data.subarray(0, 100))))).toBe(whole);
      expect(crc(new Uint8Array(0), whole)).toBe(whole);
    });

    it('returns unsigned 32-bit integers', () => {
      for (let i = 0; i < 50; i++) {
        const value = crc(randomBytes(1 + i * 7));
        expect(Number.isInteger(value) && value >= 0 && value <= 0xffffffff).toBe(true);
      }
    });

    it('rejects misuse with InvalidArgument', () => {
      const bad: [unknown, unknown][] = [
        ['text', 0],
        [[1, 2, 3], 0],
        [new Uint16Array(4), 0],
        [new Uint8Array(4), -1],
        [new Uint8Array(4), 2 ** 32],
        [new Uint8Array(4), 1.5],
        [new Uint8Array(4), Number.NaN],
      ];
      for (const [data, previous] of bad) {
        let thrown: unknown;
        try {
          (crc as (d: unknown, p: unknown) => number)(data, previous);
        } catch (err) {
          thrown = err;
        }
        expect(isTesseraError(thrown, 'InvalidArgument'), `${String(data)} / ${String(previous)}`).toBe(true);
      }
    });
  });
}

describe.skipIf(status.addonPath === null)('crc32c: addon and fallback agree', () => {
  const isal = (): ReturnType<typeof crc32cWith> => crc32cWith('isa-l');
  const nodeRs = crc32cWith('@node-rs/crc32');

  it('on random data of many lengths and alignments, and as running values', () => {
    const backing = randomBytes(1 << 20);
    for (const length of [1, 3, 7, 8, 15, 16, 63, 64, 100, 255, 256, 1000, 4096, 4099, 65536, 1 << 20]) {
      for (const offset of [0, 1, 5]) {
        const view = backing.subarray(offset, Math.min(backing.length, offset + length));
        const previous = crc32c(backing.subarray(0, 7));
        expect(isal()(view)).toBe(nodeRs(view));
        expect(isal()(view, previous)).toBe(nodeRs(view, previous));
      }
    }
  });

  it('is what crc32c() uses when the addon is loaded', () => {
    expect(status.checksum).toBe('isa-l');
  });
});

describe('crc32cChunks', () => {
  it('gives the crc32c of every chunk, the last one short, and refuses a short output', () => {
    for (const [length, chunk] of [[0, 4096], [1, 4096], [4096, 4096], [4097, 4096], [1_000_003, 65536], [777, 7]] as const) {
      const data = randomBytes(length);
      const out = new Uint32Array(Math.ceil(length / chunk));
      crc32cChunks(data, chunk, out);
      for (let i = 0; i < out.length; i++) expect(out[i]).toBe(crc32c(data.subarray(i * chunk, (i + 1) * chunk)));
    }
    expect(() => crc32cChunks(randomBytes(10_000), 4096, new Uint32Array(2))).toThrow(/out holds 2 values, 3 needed/);
    expect(() => crc32cChunks(randomBytes(10), 0, new Uint32Array(1))).toThrow(/bad chunk size/);
  });
});

describe('crc32cCombine', () => {
  it('equals the direct crc32c of the concatenation at every split', () => {
    const data = randomBytes(300);
    const whole = crc32c(data);
    for (let split = 0; split <= data.length; split++) {
      const a = data.subarray(0, split);
      const b = data.subarray(split);
      expect(crc32cCombine(crc32c(a), crc32c(b), b.length), `split ${split}`).toBe(whole);
    }
  });

  it('holds for large and odd lengths, and for many pieces folded in order', () => {
    const data = randomBytes(5 * 1024 * 1024 + 13);
    const whole = crc32c(data);
    for (const split of [1, 4095, 65536, 1 << 20, 4 * 1024 * 1024, data.length - 1]) {
      const a = data.subarray(0, split);
      const b = data.subarray(split);
      expect(crc32cCombine(crc32c(a), crc32c(b), b.length)).toBe(whole);
    }
    // 64 KiB chunks the way a blob stores them (the last one short), with one shift operator.
    const chunk = 65536;
    const out = new Uint32Array(Math.ceil(data.length / chunk));
    crc32cChunks(data, chunk, out);
    const op = crc32cShiftOperator(chunk);
    let folded = 0;
    for (let i = 0; i < out.length; i++) {
      const length = Math.min(chunk, data.length - i * chunk);
      folded = length === chunk ? crc32cCombineWith(folded, out[i]!, op) : crc32cCombine(folded, out[i]!, length);
    }
    expect(folded).toBe(whole);
  });

  it('treats empty pieces as nothing, and reaches lengths up to 128 MiB', () => {
    const a = randomBytes(1000);
    expect(crc32cCombine(crc32c(a), 0, 0)).toBe(crc32c(a));
    expect(crc32cCombine(0, crc32c(a), a.length)).toBe(crc32c(a));
    // crc32c of zeros is cheap to compute directly: compare a long run of them.
    const zeros = new Uint8Array(128 * 1024 * 1024);
    expect(crc32cCombine(crc32c(a), crc32c(zeros), zeros.length)).toBe(crc32c(zeros, crc32c(a)));
  });

  it('rejects misuse with InvalidArgument', () => {
    const bad: [number, number, number][] = [[-1, 0, 1], [0, 2 ** 32, 1], [0, 0, -1], [0, 0, 1.5], [1.5, 0, 0]];
    for (const args of bad) {
      let thrown: unknown;
      try {
        crc32cCombine(args[0], args[1], args[2]);
      } catch (err) {
        thrown = err;
      }
      expect(isTesseraError(thrown, 'InvalidArgument'), args.join(',')).toBe(true);
    }
  });
});
