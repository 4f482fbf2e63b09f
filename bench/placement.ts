/**
 * Cost of placement: mapping every pg of a pool (4096 pgs) over clusters of
 * 12, 100 and 1000 disks, for replicated size 3 (host level) and erasure
 * coding 4+2 (host and disk level), plus building the per-map index (the rate
 * solver runs on first use of a (level, width)). One JSON object per line
 * (STYLE.md #13): opsPerSec counts pgs mapped per second; p50Ms / p99Ms are
 * per whole-pool mapping. Baseline, measured in the same run: the bare straw2
 * draws the mapping needs (width x disks hash + log per pg for erasure-coded
 * pools, disks per pg for replicated ones) without any selection, so
 * ratioToBaseline is the share of time that is hashing. Not a test: nothing
 * here asserts.
 *
 * Run (from the repository root):
 *   npx tsc bench/placement.ts --outDir /tmp/placement-bench --rootDir . --module NodeNext \
 *     --moduleResolution NodeNext --target ES2022 --strict --skipLibCheck --types node
 *   node /tmp/placement-bench/bench/placement.js [secondsPerCase=1]
 */
import type { ClusterMap, PoolInfo } from '../cluster/map.js';
import { poolWidth } from '../cluster/map.js';
import { buildPlacementIndex, poolPgMembers } from '../cluster/placement.js';
import { hash4, lnUniform } from '../cluster/placement-hash.js';
import { emit, percentile, printHost } from './lib.js';

const secondsPerCase = Number(process.argv.find((a) => /^[0-9.]+$/.test(a)) ?? 1);
const pgCount = 4096;

function cluster(hosts: number, disksPerHost: number): ClusterMap {
  const map: ClusterMap = { clusterId: 'bench', epoch: 1, sites: [{ name: 's' }], racks: [], hosts: [], disks: [], pools: [] };
  for (let r = 0; r < 4; r++) map.racks.push({ name: `r${r}`, site: 's' });
  for (let h = 0; h < hosts; h++) {
    map.hosts.push({ name: `h${h}`, rack: `r${h % 4}` });
    for (let d = 0; d < disksPerHost; d++) {
      const id = h * disksPerHost + d;
      map.disks.push({ id, host: `h${h}`, weight: 1 + ((id * 37) % 20) / 10, address: '', up: true, in: true });
    }
  }
  return map;
}

/** Runs fn until secondsPerCase pass (at least 3 times); returns each run's milliseconds, sorted. */
function sample(fn: () => void): number[] {
  const runsMs: number[] = [];
  const endMs = performance.now() + secondsPerCase * 1000;
  while (runsMs.length < 3 || performance.now() < endMs) {
    const startMs = performance.now();
    fn();
    runsMs.push(performance.now() - startMs);
  }
  return runsMs.sort((a, b) => a - b);
}

let sink = 0;
/** The bare draws of one pool mapping: hash + log for each (pg, disk, attempt) a mapping races over. */
function drawsOnly(disks: number, races: number): void {
  for (let pg = 0; pg < pgCount; pg++) {
    for (let attempt = 0; attempt < races; attempt++) {
      for (let disk = 0; disk < disks; disk++) sink += lnUniform(hash4(1, pg, disk, attempt));
    }
  }
}

printHost({ bench: 'placement', pgCount, secondsPerCase });
for (const [hosts, disksPerHost] of [
  [6, 2],
  [20, 5],
  [100, 10],
] as const) {
  const map = cluster(hosts, disksPerHost);
  const disks = map.disks.length;
  const pools: PoolInfo[] = [
    { id: 1, name: 'rep3-host', redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount, readOnly: false },
    { id: 2, name: 'ec4+2-host', redundancy: { type: 'erasure', dataShards: 4, parityShards: 2 }, failureDomain: 'host', pgCount, readOnly: false },
    { id: 3, name: 'ec4+2-disk', redundancy: { type: 'erasure', dataShards: 4, parityShards: 2 }, failureDomain: 'disk', pgCount, readOnly: false },
  ];
  const buildMs = sample(() => {
    const index = buildPlacementIndex(map);
    for (const pool of pools) index.plan(pool.failureDomain, poolWidth(pool));
  });
  emit({ name: `placement/index/${disks}-disks`, opsPerSec: 1000 / percentile(buildMs, 50), bytesPerSec: 0, p50Ms: percentile(buildMs, 50), p99Ms: percentile(buildMs, 99), disks, pools: pools.length });
  const index = buildPlacementIndex(map);
  for (const pool of pools) {
    poolPgMembers(index, pool); // warm: solver, keys, JIT
    const runsMs = sample(() => poolPgMembers(index, pool));
    const races = pool.redundancy.type === 'replicated' ? 1 : poolWidth(pool);
    const baselineMs = sample(() => drawsOnly(disks, races));
    const opsPerSec = pgCount / (percentile(runsMs, 50) / 1000);
    const baselineOpsPerSec = pgCount / (percentile(baselineMs, 50) / 1000);
    emit({
      name: `placement/map-pool/${pool.name}/${disks}-disks`,
      opsPerSec,
      bytesPerSec: 0,
      p50Ms: percentile(runsMs, 50),
      p99Ms: percentile(runsMs, 99),
      baseline: `straw2-draws-only/${races}x${disks}`,
      baselineValue: baselineOpsPerSec,
      ratioToBaseline: opsPerSec / baselineOpsPerSec,
      disks,
      pgCount,
    });
  }
}
if (sink === 42) console.log('');
