/**
 * Draw rates that make straw2 multi-pick proportional to weight.
 *
 * Choosing `width` distinct failure domains by straw2 (an exponential race:
 * the domain with the earliest arrival, rate = weight, wins; then the next
 * earliest among the rest, ...) is successive sampling without replacement.
 * Its inclusion probabilities are NOT proportional to weight: a heavy domain
 * cannot be picked twice, so it ends up under-used and light domains
 * over-used (CRUSH's "multi-pick anomaly": 3-8 % for disks of 1x-3x weight in
 * clusters of 12-100 disks). Ceph corrects it with weight sets an optimizer
 * writes into the map; here the correction is a pure function of the weights:
 *
 * 1. Targets: domain d should be in a fraction p_d = width * W_d / W of the
 *    pgs. A domain with p_d >= 1 is "certain" (in every pg; the rest share the
 *    remaining slots, recomputed until no target exceeds 1).
 * 2. Rates: find race rates lambda_d with inclusion(lambda)_d = p_d for the
 *    uncertain domains, by the iteration lambda_d *= (odds(p_d) /
 *    odds(inclusion_d))^step, odds(x) = x / (1 - x), with a step that halves
 *    whenever the worst relative error would not shrink. (Plain p / inclusion
 *    crawls when a target is near 1; the full odds step can oscillate.) The
 *    inclusion probability of d in the first s arrivals is
 *      incl_d = integral_0^inf lambda_d e^(-lambda_d t) P(N_{-d}(t) <= s - 1) dt
 *    where N_{-d}(t) counts the other domains that arrived by t (a sum of
 *    independent Bernoulli(1 - e^(-lambda_j t))). It is computed by Simpson's
 *    rule over ln t with prefix/suffix distributions of that count, O(domains x
 *    width) per node.
 *
 * Only floating-point arithmetic in a fixed order (Math.exp/expm1/log, fdlibm
 * ports in V8) is used, so the rates are identical in every process.
 */

import { assert } from '../src/lib/assert.js';

export interface DomainRates {
  /** Per domain: the factor its disks' weights are multiplied by in draws (1 for certain domains). */
  factors: number[];
  /** Per domain: in every pg (its target share reaches a whole slot). */
  certain: boolean[];
  /** Largest |inclusion / target - 1| left after solving (0 when nothing was solved). */
  residual: number;
}

/** Inclusion evaluations at most; random weights need 5-30, near-certain domains more. */
const EVALUATIONS_MAX = 100;
/** Relative inclusion error to stop at; the quadrature itself is good to about 1e-7. */
const TOLERANCE = 1e-7;
/** Simpson step over ln t, and the span covered below and above the race's time scale. */
const LN_STEP = 0.04;
const HEAD_SCALE = 1e-7;
const TAIL_PROBABILITY = 1e-14;

/**
 * Rates for choosing `width` distinct domains of the given weights (all > 0)
 * with inclusion proportional to weight, as far as whole slots allow.
 */
export function solveDomainRates(weights: readonly number[], width: number): DomainRates {
  const count = weights.length;
  const factors = new Array<number>(count).fill(1);
  const certain = capTargets(weights, width);
  const open: number[] = [];
  for (let d = 0; d < count; d++) if (!certain[d]) open.push(d);
  const slots = width - (count - open.length);
  if (slots <= 0 || open.length <= slots) {
    for (const d of open) certain[d] = slots > 0;
    return { factors, certain, residual: 0 };
  }
  let openWeight = 0;
  for (const d of open) openWeight += weights[d]!;
  const target = open.map((d) => (slots * weights[d]!) / openWeight);
  let rates = open.map((d) => weights[d]! / openWeight);
  let inclusion = inclusionProbabilities(rates, slots);
  let residual = worstError(inclusion, target);
  // Multiply each rate by (odds(target) / odds(inclusion))^step and keep the
  // result only if the worst error shrinks, else halve the step: the full
  // odds step converges in a few evaluations but can oscillate when several
  // targets are close to 1; the safeguard makes it monotone.
  let step = 1;
  for (let evaluations = 1; residual > TOLERANCE && evaluations < EVALUATIONS_MAX; evaluations++) {
    const next = rates.map((r, i) => r * Math.exp(step * Math.log(odds(target[i]!) / odds(Math.min(Math.max(inclusion[i]!, 1e-300), 1 - 1e-15)))));
    const sum = next.reduce((a, b) => a + b, 0);
    for (let i = 0; i < next.length; i++) next[i] = next[i]! / sum;
    const nextInclusion = inclusionProbabilities(next, slots);
    const nextResidual = worstError(nextInclusion, target);
    if (nextResidual < residual) {
      [rates, inclusion, residual] = [next, nextInclusion, nextResidual];
      step = Math.min(1, step * 1.5);
    } else {
      step /= 2;
    }
  }
  open.forEach((d, i) => (factors[d] = (rates[i]! * openWeight) / weights[d]!));
  return { factors, certain, residual };
}

const odds = (p: number): number => p / (1 - p);

function worstError(inclusion: readonly number[], target: readonly number[]): number {
  let worst = 0;
  for (let i = 0; i < target.length; i++) worst = Math.max(worst, Math.abs(inclusion[i]! / target[i]! - 1));
  return worst;
}

/** Marks the domains whose target share (width x weight / total) reaches 1. */
function capTargets(weights: readonly number[], width: number): boolean[] {
  const certain = new Array<boolean>(weights.length).fill(false);
  if (weights.length <= width) return certain.fill(true);
  for (let changed = true; changed; ) {
    changed = false;
    let rest = 0;
    let slots = width;
    weights.forEach((w, d) => (certain[d] ? slots-- : (rest += w)));
    if (slots <= 0) break;
    weights.forEach((w, d) => {
      if (!certain[d] && (slots * w) / rest >= 1 - 1e-12) {
        certain[d] = true;
        changed = true;
      }
    });
  }
  return certain;
}

/**
 * P(domain i is among the first `slots` arrivals) of an exponential race with
 * the given rates (summing to 1), for every i. Exported for tests.
 */
export function inclusionProbabilities(rates: readonly number[], slots: number): number[] {
  const n = rates.length;
  assert(slots >= 1 && slots < n && rates.every((r) => Number.isFinite(r) && r > 0), 'placement: inclusion needs positive rates and 1 <= slots < count');
  let rateMax = 0;
  for (const r of rates) rateMax = Math.max(rateMax, r);
  const tLow = HEAD_SCALE / rateMax;
  const tHigh = tailTime(rates, slots);
  const nodes = 2 * Math.ceil(Math.log(tHigh / tLow) / LN_STEP / 2);
  const h = Math.log(tHigh / tLow) / nodes;
  const result = rates.map((r) => -Math.expm1(-r * tLow)); // the head [0, tLow], where nobody else has arrived
  const prefix = new Float64Array((n + 1) * slots);
  const suffix = new Float64Array((n + 2) * slots);
  const arrived = new Float64Array(n);
  for (let node = 0; node <= nodes; node++) {
    const t = tLow * Math.exp(node * h);
    for (let j = 0; j < n; j++) arrived[j] = -Math.expm1(-rates[j]! * t);
    countDistributions(arrived, slots, prefix, suffix);
    const simpson = node === 0 || node === nodes ? 1 : node % 2 === 1 ? 4 : 2;
    for (let i = 0; i < n; i++) {
      // P(at most slots - 1 of the others arrived) = sum_a prefix_i(a) * suffixCdf_{i+1}(slots - 1 - a)
      let fewer = 0;
      for (let a = 0; a < slots; a++) fewer += prefix[i * slots + a]! * suffix[(i + 1) * slots + (slots - 1 - a)]!;
      const density = rates[i]! * t * Math.exp(-rates[i]! * t); // d/d(ln t) of the arrival cdf
      result[i] = result[i]! + ((simpson * h) / 3) * density * fewer;
    }
  }
  return result;
}

/**
 * prefix[i][a]: P(exactly a of domains 0..i-1 arrived), a < slots.
 * suffix[i][c]: P(at most c of domains i..n-1 arrived), c < slots.
 */
function countDistributions(arrived: Float64Array, slots: number, prefix: Float64Array, suffix: Float64Array): void {
  const n = arrived.length;
  prefix.fill(0, 0, slots);
  prefix[0] = 1;
  for (let i = 0; i < n; i++) {
    const p = arrived[i]!;
    const from = i * slots;
    const to = from + slots;
    prefix[to] = prefix[from]! * (1 - p);
    for (let a = 1; a < slots; a++) prefix[to + a] = prefix[from + a]! * (1 - p) + prefix[from + a - 1]! * p;
  }
  // Exact distributions first, then turned into cdfs in place.
  suffix.fill(0, n * slots, (n + 1) * slots);
  suffix[n * slots] = 1;
  for (let i = n - 1; i >= 0; i--) {
    const p = arrived[i]!;
    const from = (i + 1) * slots;
    const to = i * slots;
    suffix[to] = suffix[from]! * (1 - p);
    for (let c = 1; c < slots; c++) suffix[to + c] = suffix[from + c]! * (1 - p) + suffix[from + c - 1]! * p;
  }
  for (let i = 0; i <= n; i++) {
    for (let c = 1; c < slots; c++) suffix[i * slots + c] = suffix[i * slots + c]! + suffix[i * slots + c - 1]!;
  }
}

/** A time by which fewer than `slots` arrivals have a probability below TAIL_PROBABILITY. */
function tailTime(rates: readonly number[], slots: number): number {
  const arrived = new Float64Array(rates.length);
  const prefix = new Float64Array((rates.length + 1) * (slots + 1));
  const suffix = new Float64Array((rates.length + 2) * (slots + 1));
  let rateMin = Infinity;
  for (const r of rates) rateMin = Math.min(rateMin, r);
  // Counting slots + 1 arrivals of all n bounds "at most slots - 1 of the n - 1 others".
  // Rates are normalized and finite, so t * rateMin passes 64 within ~1100 doublings.
  for (let t = slots; ; t *= 2) {
    for (let j = 0; j < rates.length; j++) arrived[j] = -Math.expm1(-rates[j]! * t);
    countDistributions(arrived, slots + 1, prefix, suffix);
    if (suffix[slots]! < TAIL_PROBABILITY || t * rateMin > 64) return t;
  }
}
