/**
 * Placement: object -> placement group -> ordered member disks. Pure
 * functions of the map (hierarchy, weights, in/out) and the pool (id, pg
 * count, width, failure-domain level); up/down never changes a mapping (the
 * acting set, pgActing, is derived from it). docs/placement.md describes the
 * algorithm, the reasons behind it and its measured balance and movement.
 *
 * - objectToPg: the low bits of the object hash (src/lib/hash.ts).
 * - pgMembers: straw2 (weighted exponential races over stratified 32-bit
 *   hashes, placement-hash.ts) choosing members in distinct failure domains,
 *   with per-domain rate corrections that keep multi-pick proportional to
 *   weight (placement-weights.ts). Two phases (placement-select.ts):
 *   1. Over every disk with weight > 0, in or out. Replicated pools take the
 *      best disk of each of the first `size` domains of one race (CRUSH
 *      "chooseleaf firstn"). Erasure-coded pools run one race per position
 *      and match positions to distinct domains best draw first (CRUSH
 *      "indep": one position's change does not shift the others).
 *   2. Members that are out are replaced by races over the in disks of
 *      domains no remaining member uses. Replicated pools keep the remaining
 *      members in order and append the replacements; erasure-coded pools put
 *      a replacement in the position it replaces.
 *   So marking a disk out (or in again) changes only the pgs, and for
 *   erasure-coded pools only the positions, that hold it in phase 1.
 * - Not enough failure domains: replicated pools return a shorter list;
 *   erasure-coded pools return `width` entries with HOLE (-1) where no disk
 *   could be found. A hole always means that no free domain was left: the
 *   matching has no retry budget to run out of.
 */
import { objectHash } from '../src/lib/hash.js';
import type { ClusterMap, PoolInfo } from './map.js';
import { buildPlacementIndex, PlacementIndex } from './placement-index.js';
import { HOLE, PgMapper } from './placement-select.js';

export { buildPlacementIndex, PlacementIndex, placementWidthMax } from './placement-index.js';
export { HOLE } from './placement-select.js';

export function objectToPg(pool: PoolInfo, name: string): number {
  return objectHash(name) & (pool.pgCount - 1);
}

/**
 * The pg's member disk ids: for replicated pools up to `size` disks, primary
 * first; for erasure-coded pools exactly k + m entries, shard i on entry i,
 * HOLE where there is none. Pass an index (buildPlacementIndex) when mapping
 * more than one pg; given a map, this builds a throwaway index.
 */
export function pgMembers(map: ClusterMap | PlacementIndex, pool: PoolInfo, pg: number): number[] {
  return new PgMapper(asIndex(map), pool).members(pg);
}

/** pgMembers of every pg of the pool, in pg order. */
export function poolPgMembers(map: ClusterMap | PlacementIndex, pool: PoolInfo): number[][] {
  const mapper = new PgMapper(asIndex(map), pool);
  const result: number[][] = [];
  for (let pg = 0; pg < pool.pgCount; pg++) result.push(mapper.members(pg));
  return result;
}

/**
 * The members that are up. Erasure-coded pools keep positions (HOLE for a
 * down, unknown or missing member); replicated pools drop them, keeping order.
 */
export function pgActing(map: ClusterMap | PlacementIndex, members: readonly number[], pool: PoolInfo): number[] {
  const index = asIndex(map);
  const acting = members.map((id) => (id !== HOLE && index.isUp[index.indexOf(id)] === 1 ? id : HOLE));
  return pool.redundancy.type === 'replicated' ? acting.filter((id) => id !== HOLE) : acting;
}

/**
 * The pg's temporary acting set (map.pgTemp) if it applies: replicated pools only, and only while
 * the computed members still equal the entry's `up`. Otherwise null.
 */
export function pgTempActing(map: ClusterMap, members: readonly number[], pool: PoolInfo, pg: number): number[] | null {
  if (!map.pgTemp || pool.redundancy.type !== 'replicated') return null;
  const temp = map.pgTemp.find((t) => t.pool === pool.id && t.pg === pg);
  if (!temp || temp.up.length !== members.length || temp.up.some((id, i) => id !== members[i])) return null;
  return temp.acting;
}

/**
 * Members, acting set and primary of a pg as every process computes them: pgMembers, then the
 * temporary acting set if one applies (its order, down members dropped), else pgActing.
 */
export function pgPlacement(map: ClusterMap, index: PlacementIndex, pool: PoolInfo, pg: number): { members: number[]; acting: number[]; primary: number } {
  const members = pgMembers(index, pool, pg);
  const temp = pgTempActing(map, members, pool, pg);
  const acting = temp ? pgActing(index, temp, pool) : pgActing(index, members, pool);
  return { members, acting, primary: primaryOf(acting) };
}

/** The first entry that is not a hole (the primary), or HOLE. */
export function primaryOf(acting: readonly number[]): number {
  return acting.find((id) => id !== HOLE) ?? HOLE;
}

function asIndex(map: ClusterMap | PlacementIndex): PlacementIndex {
  return map instanceof PlacementIndex ? map : buildPlacementIndex(map);
}
