/**
 * Build step (run by `npm run build` after tsc, from dist/native/wasm/build.js):
 * assembles the generated WAT kernels with wabt into dist/native/, beside the
 * compiled native/index.js that loads them, with their WAT text for reading:
 *   erasure.wasm          128-bit SIMD (i8x16.swizzle): runs on any Node.js >= 20
 *   erasure-relaxed.wasm  the same with i8x16.relaxed_swizzle: used where the
 *                         runtime has relaxed SIMD (Node.js >= 22, or the flag)
 * The .wasm files are never committed: this build makes them.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import wabtInit from 'wabt';
import { erasureWat, type SwizzleKind } from './erasure-wat.js';
import { webAssembly } from './webassembly-api.js';

// This file runs as dist/native/wasm/build.js; the kernels go to dist/native/.
const outDir = new URL('../', import.meta.url);

const KERNELS: { file: string; swizzle: SwizzleKind }[] = [
  { file: 'erasure', swizzle: 'standard' },
  { file: 'erasure-relaxed', swizzle: 'relaxed' },
];

async function main(): Promise<void> {
  const wabt = await wabtInit();
  mkdirSync(outDir, { recursive: true });
  for (const { file, swizzle } of KERNELS) {
    const text = erasureWat(swizzle);
    const module = wabt.parseWat(`${file}.wat`, text, { simd: true, relaxed_simd: swizzle === 'relaxed' });
    try {
      module.validate();
      const { buffer } = module.toBinary({});
      // The standard kernel must run here; the relaxed one only where relaxed SIMD is on.
      if (swizzle === 'standard' && !webAssembly.validate(buffer)) {
        throw new Error(`this Node.js (${process.version}) rejects ${file}.wasm`);
      }
      writeFileSync(new URL(`${file}.wat`, outDir), text);
      writeFileSync(new URL(`${file}.wasm`, outDir), buffer);
      console.log(`native: wrote ${fileURLToPath(new URL(`${file}.wasm`, outDir))} (${buffer.length} bytes)`);
    } finally {
      module.destroy();
    }
  }
}

main().catch((err: unknown) => {
  console.error('native: building the WebAssembly erasure kernels failed:', err);
  process.exitCode = 1;
});
