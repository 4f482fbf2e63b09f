/**
 * The selection algorithms behind pgMembers (cluster/placement.ts describes
 * the two phases). A PgMapper maps the pgs of one pool over one
 * PlacementIndex; it owns scratch buffers, so it serves one caller at a time.
 *
 * Every draw is straw2's ln(u) / rate (higher wins) with u from
 * placement-hash.ts and rate = weight x domain correction (placement-index.ts).
 * A domain's draw for a race is the best draw of its disks, so choosing a
 * domain, then a disk in it, is one flat race over disks: the domain wins in
 * proportion to its rate and the disk in proportion to its weight, and a disk
 * that does not win changes nothing (removing it keeps every outcome).
 */
import { assert } from '../src/lib/assert.js';
import { limits } from '../src/lib/limits.js';
import { poolWidth, type PoolInfo } from './map.js';
import { drawBitsKeyed, hash4Prefix, lnUniform, PERMUTATION_ROUNDS } from './placement-hash.js';
import { placementWidthMax, refillAttemptBase, type LevelPlan, type PlacementIndex } from './placement-index.js';

/** A position without a disk. */
export const HOLE = -1;


export class PgMapper {
  private readonly width: number;
  private readonly pgBits: number;
  private readonly plan: LevelPlan;
  private readonly domainOf: Int32Array;
  private readonly used: Uint8Array;
  private readonly bestValue: Float64Array;
  private readonly bestDisk: Int32Array;
  private readonly topDomain: Int32Array;
  /** Per slot s, its candidate (domain, disk, draw) pairs best first at [s * width ..], how many, and the next to look at. */
  private readonly pairValue: Float64Array;
  private readonly pairDomain: Int32Array;
  private readonly pairDisk: Int32Array;
  private readonly pairCount: Int32Array;
  private readonly pairNext: Int32Array;

  constructor(
    private readonly index: PlacementIndex,
    private readonly pool: PoolInfo,
  ) {
    this.width = poolWidth(pool);
    assert(Number.isInteger(this.width) && this.width >= 1 && this.width <= placementWidthMax, `placement: pool ${pool.id} has width ${this.width}`);
    const { pgCount } = pool;
    assert(
      Number.isInteger(pgCount) && pgCount >= 1 && pgCount <= limits.poolPgCountMax && (pgCount & (pgCount - 1)) === 0,
      `placement: pool ${pool.id} pgCount ${pgCount} is not a power of two up to ${limits.poolPgCountMax}`,
    );
    assert(Number.isInteger(pool.id) && pool.id >= 0 && pool.id <= 0xffffffff, `placement: pool id ${pool.id} is not a 32-bit integer`);
    this.pgBits = Math.log2(pgCount);
    this.plan = index.plan(pool.failureDomain, this.width);
    this.domainOf = index.domainOf(pool.failureDomain);
    const domains = index.domainCount(pool.failureDomain);
    this.used = new Uint8Array(domains);
    this.bestValue = new Float64Array(domains);
    this.bestDisk = new Int32Array(domains);
    this.topDomain = new Int32Array(this.width);
    this.pairValue = new Float64Array(this.width * this.width);
    this.pairDomain = new Int32Array(this.width * this.width);
    this.pairDisk = new Int32Array(this.width * this.width);
    this.pairCount = new Int32Array(this.width);
    this.pairNext = new Int32Array(this.width);
  }

  /** Disk ids: replicated up to width (primary first), erasure-coded exactly width with HOLEs. */
  members(pg: number): number[] {
    assert(Number.isInteger(pg) && pg >= 0 && pg < this.pool.pgCount, `placement: pg ${pg} is outside pool ${this.pool.id}`);
    const ids = this.index.diskIds;
    const slots = this.pool.redundancy.type === 'replicated' ? this.replicated(pg) : this.erasureCoded(pg);
    return Array.from(slots, (i) => (i === HOLE ? HOLE : ids[i]!));
  }

  /**
   * firstn: one race (attempt 0) over all weighted disks; the best disk of
   * each domain, domains best first. Out members are then replaced in their
   * rank's slot; the result lists the remaining members in order, then the
   * replacements, so a surviving member becomes primary.
   */
  private replicated(pg: number): Int32Array {
    const chosen = new Int32Array(this.width).fill(HOLE);
    this.used.fill(0);
    this.race(pg, 0, this.index.weighted);
    const found = this.topDomains(this.width);
    for (let rank = 0; rank < found; rank++) chosen[rank] = this.bestDisk[this.topDomain[rank]!]!;
    if (!this.dropOut(chosen)) return chosen.filter((i) => i !== HOLE);
    const before = chosen.slice();
    this.fill(chosen, pg, this.index.weightedIn, refillAttemptBase);
    const kept = before.filter((i) => i !== HOLE);
    const added = chosen.filter((i, rank) => i !== HOLE && before[rank] === HOLE);
    return Int32Array.from([...kept, ...added]);
  }

  /** indep: positions matched to domains by per-position races, then out positions refilled in place. */
  private erasureCoded(pg: number): Int32Array {
    const slots = new Int32Array(this.width).fill(HOLE);
    this.used.fill(0);
    this.fill(slots, pg, this.index.weighted, 0);
    if (this.dropOut(slots)) this.fill(slots, pg, this.index.weightedIn, refillAttemptBase);
    return slots;
  }

  /**
   * Turns members that are out into HOLEs and marks the domains of the rest
   * used; true if there was one. (A phase-1 hole means every weighted domain
   * is taken, so with nobody out there is nothing to refill.)
   */
  private dropOut(slots: Int32Array): boolean {
    let dropped = false;
    this.used.fill(0);
    for (let s = 0; s < slots.length; s++) {
      const i = slots[s]!;
      if (i === HOLE) continue;
      if (this.index.isIn[i] === 1) this.used[this.domainOf[i]!] = 1;
      else {
        slots[s] = HOLE;
        dropped = true;
      }
    }
    return dropped;
  }

  /**
   * Fills the HOLEs of `slots` with candidates of domains not `used`, one
   * domain per slot. Slot s races (attempt base + s) over the candidates; the
   * (slot, domain, draw) pairs are then taken best draw first, skipping a pair
   * whose slot is filled or whose domain is taken (the unique stable matching
   * when slots and domains both prefer higher draws). A slot can lose at most
   * one domain per other open slot, so only its `open` best domains matter.
   * Slots left open (no free domain) stay HOLE.
   */
  private fill(slots: Int32Array, pg: number, candidates: Int32Array, attemptBase: number): void {
    const { width, used, pairValue, pairDomain, pairDisk, pairCount, pairNext } = this;
    let open = 0;
    for (let s = 0; s < width; s++) if (slots[s] === HOLE) open++;
    for (let s = 0; s < width; s++) {
      pairCount[s] = 0;
      pairNext[s] = 0;
      if (slots[s] !== HOLE) continue;
      this.race(pg, attemptBase + s, candidates);
      pairCount[s] = this.topDomains(open);
      for (let k = 0; k < pairCount[s]!; k++) {
        const d = this.topDomain[k]!;
        pairValue[s * width + k] = this.bestValue[d]!;
        pairDomain[s * width + k] = d;
        pairDisk[s * width + k] = this.bestDisk[d]!;
      }
    }
    // Taking the best pair whose slot is open and domain free, again and
    // again, is taking all pairs best first and skipping the invalid ones.
    for (;;) {
      let bestSlot = HOLE;
      let bestPair = 0;
      for (let s = 0; s < width; s++) {
        if (slots[s] !== HOLE) continue;
        let k = pairNext[s]!;
        while (k < pairCount[s]! && used[pairDomain[s * width + k]!] === 1) k++;
        pairNext[s] = k;
        if (k === pairCount[s]) continue;
        if (bestSlot === HOLE || pairValue[s * width + k]! > pairValue[bestPair]!) {
          bestSlot = s;
          bestPair = s * width + k;
        }
      }
      if (bestSlot === HOLE) return;
      slots[bestSlot] = pairDisk[bestPair]!;
      used[pairDomain[bestPair]!] = 1;
    }
  }

  /**
   * One race: bestValue/bestDisk of every domain not `used`, over the
   * candidates (ties: lower disk id). A disk's draw is ln(u) / rate; disks of
   * certain domains (in every pg) map theirs into (0, 1], above every
   * ordinary draw (<= 0), keeping their order.
   */
  private race(pg: number, attempt: number, candidates: Int32Array): void {
    const { bestValue, bestDisk, domainOf, used, pgBits } = this;
    const { rate, certain } = this.plan;
    const ids = this.index.diskIds;
    bestValue.fill(-Infinity);
    bestDisk.fill(HOLE);
    const keys = this.index.permutationKeys(this.pool.id, attempt);
    const poolPg = hash4Prefix(this.pool.id, pg);
    for (const i of candidates) {
      const d = domainOf[i]!;
      if (used[d] === 1) continue;
      const bits = drawBitsKeyed(poolPg, pg, ids[i]!, attempt, pgBits, keys, i * PERMUTATION_ROUNDS);
      let value = lnUniform(bits) / rate[i]!;
      if (certain[i] === 1) value = -1 / (value - 1);
      if (value > bestValue[d]!) {
        bestValue[d] = value;
        bestDisk[d] = i;
      }
    }
  }

  /**
   * The `count` domains with the best draws of the last race, best first
   * (ties: lower number), into topDomain; returns how many there were.
   */
  private topDomains(count: number): number {
    const { bestValue, bestDisk, topDomain } = this;
    let found = 0;
    for (let d = 0; d < bestDisk.length; d++) {
      if (bestDisk[d] === HOLE) continue;
      const value = bestValue[d]!;
      if (found === count && !(value > bestValue[topDomain[found - 1]!]!)) continue;
      let k = found < count ? found++ : found - 1;
      for (; k > 0 && value > bestValue[topDomain[k - 1]!]!; k--) topDomain[k] = topDomain[k - 1]!;
      topDomain[k] = d;
    }
    return found;
  }
}
