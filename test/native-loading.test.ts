/**
 * How native/ picks its implementations, seen from fresh Node.js processes
 * that load the compiled module (dist/native, made by `npm run build`).
 *
 * Proves: without the addon, or with a broken one, the process still codes and
 * checksums (same bytes as this process), reports the fallback in
 * nativeStatus(), and prints exactly one message on stderr however often it is
 * used; with the addon, it prints nothing and reports ISA-L. The relaxed-SIMD
 * kernel, which Node.js 20 only runs behind a flag, is cross-checked in a child
 * started with that flag. Each child gets a temporary copy of dist/native and
 * src/lib that is removed afterwards.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { availableCodecs, createErasureCodec, nativeStatus } from '../native/index.js';

const root = fileURLToPath(new URL('../', import.meta.url));
const distNative = path.join(root, 'dist/native');
const built = existsSync(path.join(distNative, 'index.js')) && existsSync(path.join(distNative, 'erasure.wasm'));
if (!built) console.warn('SKIPPING native loading tests: dist/native is not built (run npm run build)');
const hasAddon = nativeStatus().addonPath !== null;
if (!hasAddon) console.warn(`SKIPPING the with-addon loading test: ${nativeStatus().fallbackReason}`);

const FALLBACK_MESSAGE = /tessera: ISA-L addon not in use/g;

/** The child: uses crc32c and the codec several times, prints what it got as JSON. */
const CHILD = `
import { crc32c, createErasureCodec, nativeStatus, availableCodecs } from './dist/native/index.js';
const data = [0, 1, 2, 3].map((i) => Uint8Array.from({ length: 5000 }, (_, b) => (b * 31 + i * 7) & 255));
const results = [];
for (let round = 0; round < 3; round++) {
  const codec = createErasureCodec({ dataShards: 4, parityShards: 2 });
  const parity = [new Uint8Array(5000), new Uint8Array(5000)];
  codec.encode(data, parity);
  results.push({ codec: codec.implementation, crc: crc32c(new TextEncoder().encode('123456789')), parity: parity.map((p) => Buffer.from(p).toString('base64')) });
}
console.log(JSON.stringify({ status: nativeStatus(), available: availableCodecs(), results }));
`;

const temporary: string[] = [];
afterAll(() => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});

/** A throwaway tree: dist/native and dist/src/lib copied, node_modules linked, no addon unless given. */
function sandbox(addonBytes?: Uint8Array): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tessera-native-'));
  temporary.push(dir);
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  cpSync(distNative, path.join(dir, 'dist/native'), { recursive: true });
  cpSync(path.join(root, 'dist/src/lib'), path.join(dir, 'dist/src/lib'), { recursive: true });
  if (addonBytes !== undefined) {
    mkdirSync(path.join(dir, 'native/build/Release'), { recursive: true });
    writeFileSync(path.join(dir, 'native/build/Release/tessera_native.node'), addonBytes);
  }
  writeFileSync(path.join(dir, 'child.mjs'), CHILD);
  return dir;
}

interface ChildReport {
  status: ReturnType<typeof nativeStatus>;
  available: string[];
  results: { codec: string; crc: number; parity: string[] }[];
}

function runChild(cwd: string, nodeArgs: string[] = []): { report: ChildReport; stderr: string } {
  const child = spawnSync(process.execPath, [...nodeArgs, 'child.mjs'], { cwd, encoding: 'utf8', timeout: 60_000 });
  expect(child.status, child.stderr).toBe(0);
  return { report: JSON.parse(child.stdout) as ChildReport, stderr: child.stderr };
}

/** What this process computes for the child's stripe, with the WebAssembly codec. */
function expectedParity(): string[] {
  const data = [0, 1, 2, 3].map((i) => Uint8Array.from({ length: 5000 }, (_, b) => (b * 31 + i * 7) & 255));
  const parity = [new Uint8Array(5000), new Uint8Array(5000)];
  createErasureCodec({ dataShards: 4, parityShards: 2, implementation: 'wasm-simd' }).encode(data, parity);
  return parity.map((p) => Buffer.from(p).toString('base64'));
}

describe.skipIf(!built)('loading native/', () => {
  it('without the addon: falls back, same bytes, one message on stderr', () => {
    const { report, stderr } = runChild(sandbox());
    expect(stderr.match(FALLBACK_MESSAGE)).toHaveLength(1);
    expect(stderr).toMatch(/apt-get install libisal-dev/);
    expect(stderr).toMatch(/npm run build:native/);
    expect(report.status).toMatchObject({ codec: 'wasm-simd', checksum: '@node-rs/crc32', addonPath: null });
    expect(report.status.fallbackReason).toMatch(/not built/);
    expect(report.available).toEqual(['wasm-simd']);
    for (const result of report.results) {
      expect(result).toEqual({ codec: 'wasm-simd', crc: 0xe3069283, parity: expectedParity() });
    }
  });

  it('with a broken addon file: falls back and says why, without crashing', () => {
    const { report, stderr } = runChild(sandbox(new TextEncoder().encode('not a shared object')));
    expect(stderr.match(FALLBACK_MESSAGE)).toHaveLength(1);
    expect(report.status.fallbackReason).toMatch(/failed to load/);
    expect(report.results[0]).toEqual({ codec: 'wasm-simd', crc: 0xe3069283, parity: expectedParity() });
  });

  it.skipIf(!hasAddon)('with the addon: ISA-L, no message, same bytes', () => {
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', CHILD], { cwd: root, encoding: 'utf8' });
    expect(child.status, child.stderr).toBe(0);
    expect(child.stderr).toBe('');
    const report = JSON.parse(child.stdout) as ChildReport;
    expect(report.status).toMatchObject({ codec: 'isa-l', checksum: 'isa-l', fallbackReason: null });
    for (const result of report.results) {
      expect(result).toEqual({ codec: 'isa-l', crc: 0xe3069283, parity: expectedParity() });
    }
  });
});

/** Relaxed-SIMD kernel against the standard one (and ISA-L), in a child that has relaxed SIMD. */
const RELAXED_CHILD = `
import { randomBytes } from 'node:crypto';
import { createErasureCodec, availableCodecs } from './dist/native/index.js';
const failures = [];
let checked = 0;
const others = availableCodecs().filter((c) => c !== 'wasm-relaxed-simd');
for (let k = 1; k <= 12; k++) for (let m = 1; m <= 4; m++) for (const length of [1, 17, 64, 4096 + 13, 70000]) {
  const relaxed = createErasureCodec({ dataShards: k, parityShards: m, implementation: 'wasm-relaxed-simd' });
  const data = Array.from({ length: k }, () => randomBytes(length));
  const encode = (codec) => { const p = Array.from({ length: m }, () => new Uint8Array(length)); codec.encode(data, p); return p; };
  const mine = encode(relaxed);
  for (const other of others) {
    const theirs = encode(createErasureCodec({ dataShards: k, parityShards: m, implementation: other }));
    if (!theirs.every((p, i) => Buffer.from(p).equals(mine[i]))) failures.push(\`\${k}+\${m} \${length} vs \${other}\`);
    checked++;
  }
  const shards = [...data, ...mine];
  const lost = [0, k + m - 1].slice(0, Math.min(m, 2));
  const original = lost.map((i) => Buffer.from(shards[i]));
  lost.forEach((i) => (shards[i] = new Uint8Array(length)));
  relaxed.reconstruct(shards, lost);
  if (!lost.every((i, n) => original[n].equals(shards[i]))) failures.push(\`\${k}+\${m} \${length} reconstruct\`);
}
console.log(JSON.stringify({ available: availableCodecs(), checked, failures }));
`;

const relaxedBuilt = built && existsSync(path.join(distNative, 'erasure-relaxed.wasm'));
if (!relaxedBuilt) console.warn('SKIPPING relaxed-SIMD cross-check: dist/native/erasure-relaxed.wasm is not built (npm run build)');

describe.skipIf(!relaxedBuilt)('the relaxed-SIMD kernel', () => {
  it('writes the same parity as the standard kernel (and ISA-L) and rebuilds', () => {
    // With the addon, run in the project so the child compares against ISA-L too.
    const dir = hasAddon ? root : sandbox();
    const flags = availableCodecs().includes('wasm-relaxed-simd') ? [] : ['--experimental-wasm-relaxed-simd'];
    const child = spawnSync(process.execPath, [...flags, '--input-type=module', '-e', RELAXED_CHILD], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 120_000,
    });
    if (child.status !== 0 && /relaxed/.test(child.stderr) && /flag|option/.test(child.stderr)) {
      console.warn(`SKIPPING relaxed-SIMD cross-check: this Node.js cannot enable relaxed SIMD: ${child.stderr}`);
      return;
    }
    expect(child.status, child.stderr).toBe(0);
    const report = JSON.parse(child.stdout) as { available: string[]; checked: number; failures: string[] };
    expect(report.available).toContain('wasm-relaxed-simd');
    expect(report.checked).toBeGreaterThan(0);
    expect(report.failures).toEqual([]);
  });
});
