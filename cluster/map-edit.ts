/**
 * Pure edits of a cluster map, for operators (`tessera disk add`, `pool
 * create`, ...), `tessera up`, and daemons marking disks up or down. Each
 * takes a map and returns a new one (the input is never modified; unchanged
 * parts are shared), without touching the epoch: `nextEpoch(map, edit)`
 * applies edits, sets epoch + 1 and validates the result, and map services'
 * `change(edit)` runs it in a compare-and-set loop.
 *
 * Errors: adding what exists is AlreadyExists; naming a parent or target that
 * does not exist is NotFound; a bad value is InvalidArgument.
 *
 * Ids are never reused: disks are marked out, never removed, and pool ids
 * come from nextPoolId, which stays above the ids of removed pools
 * (removePool records them in map.poolIdNext).
 */
import { TesseraError, invalid } from '../src/lib/errors.js';
import { checkAddress, checkFailureDomain, checkMap, checkName, checkPgCount, checkRedundancy, checkWeight } from './map-check.js';
import { cloneMap, freezeMap } from './map-codec.js';
import { buildPlacementIndex, pgMembers } from './placement.js';
import type { ClusterMap, DiskInfo, DiskSpaceState, FailureDomain, HostInfo, PoolInfo, PoolRedundancy, RackInfo, SiteInfo } from './map.js';

const alreadyExists = (message: string): TesseraError => new TesseraError('AlreadyExists', message);
const notFound = (message: string): TesseraError => new TesseraError('NotFound', message);

/** Epoch 1 of a new cluster: no failure domains, disks or pools yet. */
export function initialMap(options: { clusterId: string }): ClusterMap {
  const map: ClusterMap = { clusterId: options.clusterId, epoch: 1, sites: [], racks: [], hosts: [], disks: [], pools: [] };
  checkMap(map);
  return freezeMap(map);
}

export function addSite(map: ClusterMap, site: SiteInfo): ClusterMap {
  const name = checkName(site.name, 'site.name');
  if (map.sites.some((s) => s.name === name)) throw alreadyExists(`site "${name}" exists`);
  return { ...map, sites: [...map.sites, { name }] };
}

export function addRack(map: ClusterMap, rack: RackInfo): ClusterMap {
  const name = checkName(rack.name, 'rack.name');
  if (map.racks.some((r) => r.name === name)) throw alreadyExists(`rack "${name}" exists`);
  if (!map.sites.some((s) => s.name === rack.site)) throw notFound(`site "${rack.site}" does not exist`);
  return { ...map, racks: [...map.racks, { name, site: rack.site }] };
}

export function addHost(map: ClusterMap, host: HostInfo): ClusterMap {
  const name = checkName(host.name, 'host.name');
  if (map.hosts.some((h) => h.name === name)) throw alreadyExists(`host "${name}" exists`);
  if (!map.racks.some((r) => r.name === host.rack)) throw notFound(`rack "${host.rack}" does not exist`);
  return { ...map, hosts: [...map.hosts, { name, rack: host.rack }] };
}

/** The smallest disk id above every id in the map (0 for the first). */
export function nextDiskId(map: ClusterMap): number {
  return map.disks.reduce((max, d) => Math.max(max, d.id + 1), 0);
}

/** The smallest pool id above every id in the map and every id a removed pool had (0 for the first). */
export function nextPoolId(map: ClusterMap): number {
  return map.pools.reduce((max, p) => Math.max(max, p.id + 1), map.poolIdNext ?? 0);
}

export interface NewDisk {
  id: number;
  host: string;
  weight: number;
  address: string;
  /** Default false: its daemon marks it up once it runs. */
  up?: boolean;
  /** Default true: it takes data as soon as it is up. */
  in?: boolean;
}

export function addDisk(map: ClusterMap, disk: NewDisk): ClusterMap {
  if (!Number.isSafeInteger(disk.id) || disk.id < 0 || disk.id > 0xffff_ffff) throw invalid(`disk id ${disk.id} must be an integer in [0, 2^32)`);
  if (map.disks.some((d) => d.id === disk.id)) throw alreadyExists(`disk ${disk.id} exists`);
  if (!map.hosts.some((h) => h.name === disk.host)) throw notFound(`host "${disk.host}" does not exist`);
  const added: DiskInfo = {
    id: disk.id,
    host: disk.host,
    weight: checkWeight(disk.weight, 'disk.weight'),
    address: checkAddress(disk.address, 'disk.address'),
    up: disk.up ?? false,
    in: disk.in ?? true,
  };
  return { ...map, disks: [...map.disks, added] };
}

/** Replaces disk `id` with edit(disk); the map itself when nothing changed. */
function editDisk(map: ClusterMap, id: number, edit: (d: DiskInfo) => DiskInfo): ClusterMap {
  const index = map.disks.findIndex((d) => d.id === id);
  const disk = map.disks[index];
  if (disk === undefined) throw notFound(`disk ${id} does not exist`);
  const edited = edit(disk);
  if (edited.up === disk.up && edited.in === disk.in && edited.weight === disk.weight && edited.address === disk.address && edited.space === disk.space) return map;
  const disks = map.disks.slice();
  disks[index] = edited;
  return { ...map, disks };
}

/** Marks a disk up/down and/or in/out. Returns the map itself when it already had that state. */
export function setDiskState(map: ClusterMap, diskId: number, state: { up?: boolean; in?: boolean }): ClusterMap {
  return editDisk(map, diskId, (d) => ({ ...d, up: state.up ?? d.up, in: state.in ?? d.in }));
}

/** The space state a disk's daemon reports (undefined: below near full); returns the same map if nothing changes. */
export function setDiskSpace(map: ClusterMap, diskId: number, space: DiskSpaceState | undefined): ClusterMap {
  return editDisk(map, diskId, (d) => {
    const { space: _old, ...rest } = d;
    return space === undefined ? rest : { ...rest, space };
  });
}

export function setDiskWeight(map: ClusterMap, diskId: number, weight: number): ClusterMap {
  const checked = checkWeight(weight, 'weight');
  return editDisk(map, diskId, (d) => ({ ...d, weight: checked }));
}

/** A daemon that restarted on another port announces its new address. */
export function setDiskAddress(map: ClusterMap, diskId: number, address: string): ClusterMap {
  const checked = checkAddress(address, 'address');
  return editDisk(map, diskId, (d) => ({ ...d, address: checked }));
}

export interface NewPool {
  /** Default nextPoolId(map). */
  id?: number;
  name: string;
  redundancy: PoolRedundancy;
  failureDomain: FailureDomain;
  /** A power of two. */
  pgCount: number;
  /** Default false. */
  readOnly?: boolean;
}

export function createPool(map: ClusterMap, pool: NewPool): ClusterMap {
  const id = pool.id ?? nextPoolId(map);
  if (!Number.isSafeInteger(id) || id < 0 || id > 0xffff_ffff) throw invalid(`pool id ${id} must be an integer in [0, 2^32)`);
  const name = checkName(pool.name, 'pool.name');
  if (map.pools.some((p) => p.id === id)) throw alreadyExists(`pool id ${id} exists`);
  if (pool.id !== undefined && id < (map.poolIdNext ?? 0)) throw alreadyExists(`pool id ${id} may have belonged to a removed pool (ids below ${map.poolIdNext} are not given again)`);
  if (map.pools.some((p) => p.name === name)) throw alreadyExists(`pool "${name}" exists`);
  const created: PoolInfo = {
    id,
    name,
    redundancy: checkRedundancy(pool.redundancy, 'pool.redundancy'),
    failureDomain: checkFailureDomain(pool.failureDomain, 'pool.failureDomain'),
    pgCount: checkPgCount(pool.pgCount, 'pool.pgCount'),
    readOnly: pool.readOnly ?? false,
  };
  return { ...map, pools: [...map.pools, created] };
}

/** Removes pool `name`; its id (and every id below the next) is never given again. */
export function removePool(map: ClusterMap, name: string): ClusterMap {
  if (!map.pools.some((p) => p.name === name)) throw notFound(`pool "${name}" does not exist`);
  return { ...map, pools: map.pools.filter((p) => p.name !== name), poolIdNext: nextPoolId(map) };
}

/**
 * Sets a pg's temporary acting set (a reordering of its computed members, a member holding the pg's
 * data first, possibly without members whose store has no room for the pg: toofull), or clears it
 * (`acting` null or its computed members in order); drops every entry that no longer applies (pool
 * gone or not replicated, computed members changed). Replicated pools only.
 */
export function setPgTemp(map: ClusterMap, poolId: number, pg: number, acting: readonly number[] | null): ClusterMap {
  const index = buildPlacementIndex(map);
  const pool = map.pools.find((p) => p.id === poolId);
  if (!pool) throw notFound(`pool ${poolId} does not exist`);
  if (pool.redundancy.type !== 'replicated') throw invalid(`pool ${pool.name} is erasure-coded: temporary acting sets are for replicated pools`);
  if (!Number.isInteger(pg) || pg < 0 || pg >= pool.pgCount) throw invalid(`pg ${pg} is not a pg of pool ${pool.name}`);
  const kept = (map.pgTemp ?? []).filter((t) => {
    if (t.pool === poolId && t.pg === pg) return false;
    const p = map.pools.find((x) => x.id === t.pool);
    if (!p || p.redundancy.type !== 'replicated' || t.pg >= p.pgCount) return false;
    const members = pgMembers(index, p, t.pg);
    return members.length === t.up.length && members.every((id, i) => id === t.up[i]);
  });
  const up = pgMembers(index, pool, pg);
  const reordered = acting !== null && (acting.length !== up.length || acting.some((id, i) => id !== up[i]));
  if (acting !== null && (acting.length < 1 || !acting.every((id) => up.includes(id)) || new Set(acting).size !== acting.length)) {
    throw invalid(`pg ${poolId}.${pg}: temporary acting set ${acting.join(',')} is not drawn from its members ${up.join(',')}`);
  }
  const pgTemp = reordered ? [...kept, { pool: poolId, pg, up, acting: [...acting] }] : kept;
  const { pgTemp: _old, ...rest } = map;
  return pgTemp.length > 0 ? { ...rest, pgTemp } : rest;
}

/**
 * The map after `edit`, at epoch map.epoch + 1: validated (InvalidArgument)
 * and deep-frozen. `edit` gets a private mutable copy, so it may modify it in
 * place or return a new map; `map` itself is never modified.
 */
export function nextEpoch(map: ClusterMap, edit: (draft: ClusterMap) => ClusterMap): ClusterMap {
  const edited = edit(cloneMap(map));
  if (edited.clusterId !== map.clusterId) throw invalid(`an edit may not change the cluster id (${map.clusterId} -> ${edited.clusterId})`);
  return freezeMap({ ...edited, epoch: map.epoch + 1 });
}
