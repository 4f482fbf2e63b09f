/**
 * That placement is the same everywhere and stays the same: every process
 * that holds a map must compute the same members for every pg, today and
 * after an upgrade (a change here moves every cluster's data).
 *
 * Proves: hash4 is MurmurHash3 of its 16 bytes (so any language can
 * reimplement it); the pg permutation is a bijection; the rate solver's
 * inclusion probabilities are exact and it meets its targets; fresh Node.js
 * processes (one of them without JIT) compute the same mappings as this one,
 * and those mappings match a pinned digest. The children run a copy of
 * cluster/placement*.ts and what it imports, transpiled into a temporary
 * directory that is removed afterwards (no dependency on a built dist/).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import type { ClusterMap, PoolInfo } from '../cluster/map.js';
import { buildPlacementIndex, poolPgMembers } from '../cluster/placement.js';
import { hash4, PERMUTATION_ROUNDS, permutationKeys, permuteBits } from '../cluster/placement-hash.js';
import { inclusionProbabilities, solveDomainRates } from '../cluster/placement-weights.js';
import { murmur3 } from '../src/lib/hash.js';
import { seededRng, testSeed } from './helpers/random.js';

const root = fileURLToPath(new URL('../', import.meta.url));
const seed = testSeed();
console.log(`placement-determinism.test seed: ${seed} (replay with TESSERA_SEED=${seed})`);
const rng = seededRng(seed);

/**
 * sha256 of the mappings of FIXTURE_POOLS over fixtureMap(). Changing it means
 * every existing cluster would move its data: do it only on purpose.
 */
const PINNED_DIGEST = '96ec88dbe7d22c4b1884af42bc7f6ae7d65823df3d1a0bb1bfa81ad20a70e1d6';

/** 2 sites, 4 racks, 10 hosts, 1-3 disks each, uneven weights, two disks out, one of weight 0. */
function fixtureMap(): ClusterMap {
  const map: ClusterMap = { clusterId: 'fixture', epoch: 42, sites: [{ name: 'east' }, { name: 'west' }], racks: [], hosts: [], disks: [], pools: [] };
  for (let r = 0; r < 4; r++) map.racks.push({ name: `rack-${r}`, site: r % 2 === 0 ? 'east' : 'west' });
  let id = 3;
  for (let h = 0; h < 10; h++) {
    map.hosts.push({ name: `host-${h}`, rack: `rack-${h % 4}` });
    for (let d = 0; d <= h % 3; d++) {
      map.disks.push({ id, host: `host-${h}`, weight: 1 + ((id * 37) % 23) / 10, address: `10.0.0.${h}:${7000 + d}`, up: id % 5 !== 0, in: id !== 8 && id !== 20 });
      id += 1 + (id % 2);
    }
  }
  map.disks[4]!.weight = 0;
  return map;
}

const pool = (id: number, redundancy: PoolInfo['redundancy'], failureDomain: PoolInfo['failureDomain'], pgCount: number): PoolInfo => ({
  id,
  name: `pool-${id}`,
  redundancy,
  failureDomain,
  pgCount,
  readOnly: false,
});

const FIXTURE_POOLS: PoolInfo[] = [
  pool(1, { type: 'replicated', size: 3, minSize: 2 }, 'host', 256),
  pool(2, { type: 'erasure', dataShards: 4, parityShards: 2 }, 'disk', 256),
  pool(3, { type: 'erasure', dataShards: 3, parityShards: 2 }, 'rack', 128),
  pool(4, { type: 'replicated', size: 2, minSize: 1 }, 'site', 64),
  pool(5, { type: 'erasure', dataShards: 2, parityShards: 1 }, 'host', 1),
];

function digest(map: ClusterMap, pools: PoolInfo[]): string {
  const index = buildPlacementIndex(map);
  return createHash('sha256')
    .update(JSON.stringify(pools.map((p) => poolPgMembers(index, p))))
    .digest('hex');
}

const temporary: string[] = [];
afterAll(() => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});

/** Transpiles `entry` (relative to the repository) and every relative import it reaches into `outDir`. */
function transpileTree(entry: string, outDir: string): void {
  const seen = new Set<string>();
  const visit = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = readFileSync(path.join(root, file), 'utf8');
    const { outputText } = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
    const target = path.join(outDir, file.replace(/\.ts$/, '.js'));
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, outputText);
    for (const match of source.matchAll(/from '(\.\.?\/[^']+)\.js'/g)) visit(path.normalize(path.join(path.dirname(file), `${match[1]}.ts`)));
  };
  visit(entry);
}

const CHILD = `
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { buildPlacementIndex, poolPgMembers } from './cluster/placement.js';
const { map, pools } = JSON.parse(readFileSync('input.json', 'utf8'));
const index = buildPlacementIndex(map);
console.log(createHash('sha256').update(JSON.stringify(pools.map((p) => poolPgMembers(index, p)))).digest('hex'));
`;

describe('placement determinism', () => {
  it('hash4 is MurmurHash3 (x86, 32-bit, seed 0) of its four words as 16 little-endian bytes', () => {
    for (let i = 0; i < 1000; i++) {
      const words = [0, 1, 2, 3].map(() => (rng.float() * 2 ** 32) >>> 0);
      const bytes = new Uint8Array(16);
      const view = new DataView(bytes.buffer);
      words.forEach((w, k) => view.setUint32(4 * k, w, true));
      expect(hash4(words[0]!, words[1]!, words[2]!, words[3]!)).toBe(murmur3(bytes));
    }
  });

  it('the pg permutation is a bijection for every pg count', () => {
    const keys = new Uint32Array(PERMUTATION_ROUNDS);
    for (let bits = 0; bits <= 12; bits++) {
      permutationKeys(rng.int(1000), rng.int(1000), rng.int(10), keys, 0);
      const seen = new Set<number>();
      for (let x = 0; x < 2 ** bits; x++) seen.add(permuteBits(x, keys, 0, bits));
      expect(seen.size).toBe(2 ** bits);
      expect(Math.max(...seen)).toBe(2 ** bits - 1);
    }
  });

  it('computes exact multi-pick inclusion probabilities and rates that meet the weight-proportional targets', () => {
    // Two picks: P(j) = l_j + sum_{i != j} l_i l_j / (1 - l_i), exactly.
    const rates = [0.1, 0.3, 0.25, 0.05, 0.2, 0.1];
    const exact = rates.map((lj, j) => lj + rates.reduce((s, li, i) => (i === j ? s : s + (li * lj) / (1 - li)), 0));
    inclusionProbabilities(rates, 2).forEach((p, j) => expect(p).toBeCloseTo(exact[j]!, 9));
    for (let round = 0; round < 8; round++) {
      const weights = Array.from({ length: 4 + rng.int(30) }, () => 0.5 + 3 * rng.float());
      const width = 1 + rng.int(Math.min(8, weights.length));
      const { factors, certain, residual } = solveDomainRates(weights, width);
      expect(residual).toBeLessThan(1e-3);
      const open = weights.flatMap((w, d) => (certain[d] ? [] : [d]));
      const slots = width - (weights.length - open.length);
      if (slots <= 0 || open.length <= slots) continue;
      const openWeight = open.reduce((s, d) => s + weights[d]!, 0);
      const rate = open.map((d) => weights[d]! * factors[d]!);
      const sum = rate.reduce((a, b) => a + b, 0);
      inclusionProbabilities(
        rate.map((r) => r / sum),
        slots,
      ).forEach((p, k) => expect(Math.abs(p / ((slots * weights[open[k]!]!) / openWeight) - 1)).toBeLessThanOrEqual(residual + 1e-12));
    }
  });

  it('computes the same mappings in fresh processes (with and without JIT) as here, and as pinned', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tessera-placement-'));
    temporary.push(dir);
    transpileTree('cluster/placement.ts', dir);
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
    writeFileSync(path.join(dir, 'input.json'), JSON.stringify({ map: fixtureMap(), pools: FIXTURE_POOLS }));
    writeFileSync(path.join(dir, 'child.mjs'), CHILD);
    const here = digest(fixtureMap(), FIXTURE_POOLS);
    for (const flags of [[], ['--jitless']]) {
      const child = spawnSync(process.execPath, [...flags, 'child.mjs'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
      expect(child.status, child.stderr).toBe(0);
      expect(child.stdout.trim(), `child with flags [${flags.join(' ')}]`).toBe(here);
    }
    expect(here).toBe(PINNED_DIGEST);
  });
});
