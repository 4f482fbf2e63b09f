/**
 * The cluster map: the hierarchy of failure domains (site > rack > host >
 * disk), every disk's weight, address and state, and every pool, under an
 * epoch that grows by one on every change. Daemons and clients hold a copy;
 * the map service (cluster/map-service) is its single source of truth.
 *
 * Invariants (checkMap asserts them): ids are unique; every host names an
 * existing rack, every rack an existing site; every disk an existing host;
 * pool pg counts are powers of two; replicated pools have 1 <= minSize <=
 * size; erasure-coded pools have k >= 1, m >= 1.
 */

export type FailureDomain = 'disk' | 'host' | 'rack' | 'site';

export interface SiteInfo {
  name: string;
}

export interface RackInfo {
  name: string;
  site: string;
}

export interface HostInfo {
  name: string;
  rack: string;
}

export interface DiskInfo {
  /** Unique, never reused. */
  id: number;
  host: string;
  /** Relative capacity (e.g. TiB); 0 takes no data. */
  weight: number;
  /** Where its daemon listens, "host:port". */
  address: string;
  /** Up: its daemon is alive. Down disks keep their data mapped to them (degraded) until marked out. */
  up: boolean;
  /** In: it holds data. Out disks get nothing mapped to them. */
  in: boolean;
  /**
   * Space state its daemon last reported (cluster/liveness.ts), absent when
   * below the near-full ratio. Writes to a pg with a full member are refused
   * (Full); near full is a warning. Placement ignores it.
   */
  space?: DiskSpaceState;
}

export type DiskSpaceState = 'nearFull' | 'full';

export type PoolRedundancy =
  | { type: 'replicated'; size: number; minSize: number }
  | { type: 'erasure'; dataShards: number; parityShards: number };

export interface PoolInfo {
  /** Unique, never reused. */
  id: number;
  name: string;
  redundancy: PoolRedundancy;
  failureDomain: FailureDomain;
  /** A power of two. */
  pgCount: number;
  /** Read-only pools (in a pool set) accept no new data. */
  readOnly: boolean;
}

export interface ClusterMap {
  clusterId: string;
  epoch: number;
  sites: SiteInfo[];
  racks: RackInfo[];
  hosts: HostInfo[];
  disks: DiskInfo[];
  pools: PoolInfo[];
  /**
   * Pool ids below this have been given (some to pools since removed) and
   * are never given again: daemons may still hold a removed pool's objects
   * under its id. Absent until a pool is removed.
   */
  poolIdNext?: number;
  /**
   * Temporary acting sets (replicated pools): a pg whose computed primary must
   * first be filled (a new or emptied disk) is served meanwhile by a member
   * that has its data; see PgTempInfo. Absent when there are none.
   */
  pgTemp?: PgTempInfo[];
}

/**
 * A pg's temporary acting set (Ceph's pg_temp): `acting` is a reordering of
 * `up`, the pg's computed members when it was set, with a member holding the
 * pg's data first (it is the primary). Members of `up` missing from `acting`
 * are left out because their store had no room to be brought up to date
 * (toofull): the pg is served without them (degraded) until the primary has
 * filled them and clears the entry. It applies only while the computed
 * members still equal `up`; a stale entry is ignored and dropped at the next
 * change of pg temps. Set and cleared by the pg's primary (src/daemon/peering.ts).
 */
export interface PgTempInfo {
  pool: number;
  pg: number;
  up: number[];
  acting: number[];
}

/** Members a pg of this pool has: size for replicated, k + m for erasure-coded. */
export function poolWidth(pool: PoolInfo): number {
  return pool.redundancy.type === 'replicated' ? pool.redundancy.size : pool.redundancy.dataShards + pool.redundancy.parityShards;
}
