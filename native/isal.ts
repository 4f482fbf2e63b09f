/**
 * The ISA-L addon (native/src/tessera_native.c, built by `npm run build:native`
 * into native/build/Release/) and the CodingBackend over it. Loading never
 * throws: a missing or broken addon is reported as a reason, and native/index.ts
 * falls back to WebAssembly.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { TesseraError } from '../src/lib/errors.js';
import type { CodingBackend } from './codec.js';

/** The addon's exports; see native/src/tessera_native.c. */
export interface IsalAddon {
  crc32c(data: Uint8Array, previous: number): number;
  crc32cChunks(data: Uint8Array, chunkBytes: number, out: Uint32Array): void;
  initTables(dataShards: number, rows: number, coefficients: Uint8Array, tables: Uint8Array): void;
  encode(lengthBytes: number, tables: Uint8Array, sources: readonly Uint8Array[], targets: readonly Uint8Array[]): void;
  cauchyMatrix(dataShards: number, parityShards: number): Uint8Array;
  alignmentPadding(view: Uint8Array): number;
}

export type AddonLoad = { addon: IsalAddon; path: string } | { addon: null; reason: string };

const ADDON_FILE = 'tessera_native.node';

/** Where the addon is, from native/ (tests run the sources) or from dist/native/ (compiled). */
function addonCandidates(): string[] {
  return [
    new URL(`./build/Release/${ADDON_FILE}`, import.meta.url),
    new URL(`../../native/build/Release/${ADDON_FILE}`, import.meta.url),
  ].map((url) => fileURLToPath(url));
}

export function loadAddon(): AddonLoad {
  const path = addonCandidates().find((candidate) => existsSync(candidate));
  if (path === undefined) return { addon: null, reason: `native/build/Release/${ADDON_FILE} is not built` };
  try {
    const addon = createRequire(import.meta.url)(path) as IsalAddon;
    // A stale build from another layout would fail later in odd ways; check the shape now.
    for (const name of ['crc32c', 'crc32cChunks', 'initTables', 'encode', 'cauchyMatrix', 'alignmentPadding'] as const) {
      if (typeof addon[name] !== 'function') return { addon: null, reason: `${path} lacks ${name}(): rebuild it` };
    }
    return { addon, path };
  } catch (err) {
    return { addon: null, reason: `${path} failed to load: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/**
 * Shard buffers for ISA-L: one allocation, each shard on a 64-byte boundary.
 * Measured: AVX-512 code on shards 16 bytes off a cache line (what a plain
 * large Uint8Array gets from malloc) runs about a quarter slower.
 */
function allocateAligned(addon: IsalAddon, count: number, shardSizeBytes: number): Uint8Array[] {
  const stride = Math.ceil(shardSizeBytes / 64) * 64;
  const memory = new Uint8Array(stride * count + 63);
  const start = addon.alignmentPadding(memory);
  return Array.from({ length: count }, (_, i) => memory.subarray(start + i * stride, start + i * stride + shardSizeBytes));
}

export function isalBackend(addon: IsalAddon): CodingBackend<Uint8Array> {
  return {
    implementation: 'isa-l',
    prepare(coefficients, dataShards, rows) {
      const tables = new Uint8Array(32 * dataShards * rows);
      addon.initTables(dataShards, rows, coefficients, tables);
      return tables;
    },
    code(tables, lengthBytes, sources, targets) {
      try {
        addon.encode(lengthBytes, tables, sources, targets);
      } catch (err) {
        if ((err as { code?: unknown }).code === 'ERR_TESSERA_OVERLAP') {
          throw new TesseraError('InvalidArgument', `erasure codec: ${(err as Error).message}`);
        }
        throw err;
      }
    },
    allocateShards: (count, shardSizeBytes) => allocateAligned(addon, count, shardSizeBytes),
  };
}
