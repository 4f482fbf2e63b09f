/**
 * The per-map precomputation placement works from: disks in id order with
 * their weights and states, each disk's failure domain at every level, and,
 * per (failure-domain level, width), the corrected draw rate of every disk
 * (placement-weights.ts). Build it once per map epoch with
 * buildPlacementIndex(map) and pass it to every pgMembers call.
 *
 * Everything is ordered by disk id or by name, never by the order of the
 * map's arrays, so two processes holding the same map build the same index.
 * The per-level rate tables and the permutation keys are computed on first
 * use and cached inside the index (not in module state); an index is never
 * shared between maps.
 */
import { assert } from '../src/lib/assert.js';
import type { ClusterMap, FailureDomain } from './map.js';
import { PERMUTATION_ROUNDS, permutationKeys } from './placement-hash.js';
import { solveDomainRates } from './placement-weights.js';

/** Largest pool width (k + m, or replica count) placement accepts. */
export const placementWidthMax = 64;

/** Phase-1 races use attempts 0 .. width - 1; phase-2 races (refills of out members) this plus the position. */
export const refillAttemptBase = 1 << 16;

/** Draw rates of one (level, width): what a straw2 draw divides by. */
export interface LevelPlan {
  /** Per disk index: weight x its domain's correction factor; 0 for disks that take no data. */
  rate: Float64Array;
  /** Per disk index: its domain is in every pg (draws of certain domains beat all others). */
  certain: Uint8Array;
  /** Largest relative inclusion error the rate solver left. */
  residual: number;
}

export class PlacementIndex {
  readonly epoch: number;
  /** Disk ids, ascending. Disk "index" below means a position in this array. */
  readonly diskIds: readonly number[];
  /** Weight if finite and > 0, else 0 (the disk takes no data). */
  readonly weight: Float64Array;
  readonly isIn: Uint8Array;
  readonly isUp: Uint8Array;
  /** Indexes of disks with weight > 0 (in or out): the set every draw is taken over. */
  readonly weighted: Int32Array;
  /** The subset of `weighted` that is in: the set refills are taken from. */
  readonly weightedIn: Int32Array;
  private readonly positionOf = new Map<number, number>();
  private readonly domains: Record<FailureDomain, { of: Int32Array; count: number }>;
  private readonly plans = new Map<string, LevelPlan>();
  private readonly keys = new Map<string, Uint32Array>();

  constructor(map: ClusterMap) {
    this.epoch = map.epoch;
    const disks = [...map.disks].sort((a, b) => a.id - b.id);
    this.diskIds = disks.map((d) => d.id);
    this.weight = Float64Array.from(disks, (d) => (Number.isFinite(d.weight) && d.weight > 0 ? d.weight : 0));
    this.isIn = Uint8Array.from(disks, (d) => (d.in ? 1 : 0));
    this.isUp = Uint8Array.from(disks, (d) => (d.up ? 1 : 0));
    disks.forEach((d, i) => {
      assert(Number.isInteger(d.id) && d.id >= 0 && d.id <= 0x7fffffff, `placement: disk id ${d.id} is not a 31-bit integer`);
      assert(!this.positionOf.has(d.id), `placement: disk id ${d.id} appears twice`);
      this.positionOf.set(d.id, i);
    });
    const weighted = disks.flatMap((d, i) => (this.weight[i]! > 0 ? [i] : []));
    this.weighted = Int32Array.from(weighted);
    this.weightedIn = Int32Array.from(weighted.filter((i) => this.isIn[i] === 1));
    this.domains = domainTables(map, disks);
  }

  /** The disk's index, or -1 for an id the map does not have. */
  indexOf(diskId: number): number {
    return this.positionOf.get(diskId) ?? -1;
  }

  domainOf(level: FailureDomain): Int32Array {
    return this.domains[level].of;
  }

  domainCount(level: FailureDomain): number {
    return this.domains[level].count;
  }

  /** Draw rates for choosing `width` distinct domains at `level`. */
  plan(level: FailureDomain, width: number): LevelPlan {
    const cacheKey = `${level}/${width}`;
    const cached = this.plans.get(cacheKey);
    if (cached !== undefined) return cached;
    const { of, count } = this.domains[level];
    // Domain weights over the weighted disks, in or out: marking a disk out
    // must not move anything but what it holds (docs/placement.md).
    const domainWeight = new Float64Array(count);
    for (const i of this.weighted) domainWeight[of[i]!] = domainWeight[of[i]!]! + this.weight[i]!;
    const present: number[] = [];
    for (let d = 0; d < count; d++) if (domainWeight[d]! > 0) present.push(d);
    const solved = solveDomainRates(
      present.map((d) => domainWeight[d]!),
      width,
    );
    const factor = new Float64Array(count);
    const certainDomain = new Uint8Array(count);
    present.forEach((d, k) => {
      factor[d] = solved.factors[k]!;
      certainDomain[d] = solved.certain[k] ? 1 : 0;
    });
    const rate = new Float64Array(this.diskIds.length);
    const certain = new Uint8Array(this.diskIds.length);
    for (const i of this.weighted) {
      rate[i] = this.weight[i]! * factor[of[i]!]!;
      certain[i] = certainDomain[of[i]!]!;
    }
    const plan = { rate, certain, residual: solved.residual };
    this.plans.set(cacheKey, plan);
    return plan;
  }

  /**
   * The pg-permutation round keys of every disk for (pool, attempt): disk
   * index i's at [i * PERMUTATION_ROUNDS ..]. Cached for the attempts
   * placement uses (at most 2 x width per pool).
   */
  permutationKeys(poolId: number, attempt: number): Uint32Array {
    const cacheKey = `${poolId}/${attempt}`;
    const cached = this.keys.get(cacheKey);
    if (cached !== undefined) return cached;
    const keys = new Uint32Array(this.diskIds.length * PERMUTATION_ROUNDS);
    this.diskIds.forEach((id, i) => permutationKeys(poolId, id, attempt, keys, i * PERMUTATION_ROUNDS));
    if (attempt % refillAttemptBase < placementWidthMax && attempt < 2 * refillAttemptBase) this.keys.set(cacheKey, keys);
    return keys;
  }
}

export function buildPlacementIndex(map: ClusterMap): PlacementIndex {
  return new PlacementIndex(map);
}

/** Each disk's domain number at every level; domains are numbered in name (or disk id) order. */
function domainTables(map: ClusterMap, disks: ClusterMap['disks']): Record<FailureDomain, { of: Int32Array; count: number }> {
  const rackOfHost = new Map(map.hosts.map((h) => [h.name, h.rack]));
  const siteOfRack = new Map(map.racks.map((r) => [r.name, r.site]));
  const names = (level: Exclude<FailureDomain, 'disk'>): string[] =>
    disks.map((d) => {
      const rack = rackOfHost.get(d.host);
      assert(rack !== undefined, `placement: disk ${d.id} names unknown host ${d.host}`);
      if (level === 'host') return d.host;
      const site = siteOfRack.get(rack);
      assert(site !== undefined, `placement: host ${d.host} names unknown rack ${rack}`);
      return level === 'rack' ? rack : site;
    });
  const number = (keys: string[]): { of: Int32Array; count: number } => {
    const sorted = [...new Set(keys)].sort();
    const id = new Map(sorted.map((k, i) => [k, i]));
    return { of: Int32Array.from(keys, (k) => id.get(k)!), count: sorted.length };
  };
  return {
    disk: { of: Int32Array.from(disks, (_, i) => i), count: disks.length },
    host: number(names('host')),
    rack: number(names('rack')),
    site: number(names('site')),
  };
}
