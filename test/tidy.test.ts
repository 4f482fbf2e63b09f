/**
 * The house rules that can be checked mechanically: imports point down the
 * layers (docs/architecture.md), no module-level mutable singletons of the
 * obvious kinds, and no direct use of the clock, timers, randomness, file
 * system or network in layers that must go through src/io.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Which project folders each folder may import from (itself always). */
const allowed: Record<string, string[]> = {
  'src/lib': [],
  'src/io': ['src/lib'],
  native: ['src/lib'],
  'src/store': ['src/lib', 'src/io', 'native'],
  'src/rpc': ['src/lib', 'src/io', 'native'],
  'src/protocol': ['src/lib', 'src/io', 'src/rpc', 'src/store'],
  cluster: ['src/lib', 'src/io', 'src/rpc', 'native'],
  'src/daemon': ['src/lib', 'src/io', 'src/rpc', 'src/protocol', 'src/store', 'cluster', 'native'],
  // src/store: its types only (StoreOp and friends are the vocabulary of object operations).
  'src/client': ['src/lib', 'src/io', 'src/rpc', 'src/protocol', 'src/store', 'cluster', 'native'],
  // Metric definitions and their HTTP endpoint (prom-client); the processes in src/cli wire them.
  'src/metrics': ['src/lib'],
  gateways: ['src/lib', 'src/io', 'src/client', 'src/metrics'],
  'src/cli': ['src/lib', 'src/io', 'src/rpc', 'src/protocol', 'src/store', 'src/daemon', 'src/client', 'cluster', 'gateways', 'native', 'src/metrics'],
  'src/bin': ['src/lib', 'src/io', 'src/cli', 'src/daemon', 'src/client', 'cluster', 'gateways', 'native', 'src/metrics'],
};

/** Layers that must reach time, randomness, disk and network through src/io. */
const seamed = ['src/store', 'src/rpc', 'src/daemon', 'src/client', 'cluster', 'gateways'];

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(join(root, dir));
  } catch {
    return out;
  }
  for (const name of entries) {
    const rel = join(dir, name);
    if (statSync(join(root, rel)).isDirectory()) out.push(...filesUnder(rel));
    else if (name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

function folderOf(file: string): string | undefined {
  return Object.keys(allowed)
    .filter((f) => file === f || file.startsWith(`${f}/`))
    .sort((a, b) => b.length - a.length)[0];
}

function importsOf(file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]/g)) out.push(m[1]!);
  for (const m of text.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push(m[1]!);
  return out;
}

const sources = Object.keys(allowed).flatMap(filesUnder);

describe('tidy', () => {
  it('finds the sources', () => {
    expect(sources.length).toBeGreaterThan(50);
  });

  it('imports point down the layers', () => {
    const violations: string[] = [];
    for (const file of sources) {
      const from = folderOf(file)!;
      for (const spec of importsOf(file)) {
        if (!spec.startsWith('.')) continue;
        const target = relative(root, resolve(root, dirname(file), spec));
        const to = folderOf(target);
        if (!to || to === from) continue;
        if (!allowed[from]!.includes(to)) violations.push(`${file} imports ${target} (${from} may not import ${to})`);
      }
    }
    expect(violations).toEqual([]);
  });

  it('layers behind the src/io seams do not reach the clock, timers, randomness, disk or network directly', () => {
    const banned = [/\bDate\.now\(/, /\bMath\.random\(/, /(?<![.\w])setTimeout\(/, /(?<![.\w])setInterval\(/, /from ['"]node:(fs|net|fs\/promises|dgram|http)['"]/, /\bperformance\.now\(/];
    const violations: string[] = [];
    for (const file of sources.filter((f) => seamed.some((s) => f === s || f.startsWith(`${s}/`)))) {
      // Type-only imports carry no behaviour; comments neither.
      const text = readFileSync(join(root, file), 'utf8')
        .replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')
        .replace(/^import type .*$/gm, '');
      for (const re of banned) if (re.test(text)) violations.push(`${file}: ${re.source}`);
    }
    expect(violations).toEqual([]);
  });

  it('composite signals go through anySignal (Node 20 drops a collected AbortSignal.timeout source of AbortSignal.any)', () => {
    const violations = sources
      .filter((file) => file !== 'src/lib/signals.ts')
      .filter((file) => /\bAbortSignal\.any\(/.test(readFileSync(join(root, file), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '')));
    expect(violations).toEqual([]);
  });
});
