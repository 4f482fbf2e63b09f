/**
 * `tessera pool create|ls|rm`: pools in the cluster map, changed with the map
 * service's compare-and-set (change()).
 *
 * Pool ids are never reused (daemons may still hold a removed pool's data
 * under its id): the map remembers the ids removed pools had (poolIdNext,
 * cluster/map-edit.ts removePool) and nextPoolId stays above them.
 * `pool rm` refuses without --yes-i-really-mean-it; it removes the pool
 * from the map: clients can no longer reach its objects at once, and daemons
 * stop serving its pgs (the objects stay on the disks: no purge yet).
 */
import { createPool, removePool } from '../../cluster/map-edit.js';
import type { ClusterMap, FailureDomain, PoolInfo, PoolRedundancy } from '../../cluster/map.js';
import { poolWidth } from '../../cluster/map.js';
import { CliError, table, withCluster, type TargetOptions } from './target.js';

type Out = (text: string) => void;

export interface PoolCreateOptions {
  name: string;
  redundancy: PoolRedundancy;
  failureDomain: FailureDomain;
  pgCount: number;
}

/** Failure domains of each kind in the map that have at least one disk that is in. */
function domainsWithDisks(map: ClusterMap, level: FailureDomain): number {
  const domains = new Set<string>();
  for (const d of map.disks) {
    if (!d.in || d.weight === 0) continue;
    const host = map.hosts.find((h) => h.name === d.host);
    const rack = map.racks.find((r) => r.name === host?.rack);
    domains.add(level === 'disk' ? String(d.id) : level === 'host' ? d.host : level === 'rack' ? (host?.rack ?? '') : (rack?.site ?? ''));
  }
  return domains.size;
}

export const describeRedundancy = (r: PoolRedundancy): string => (r.type === 'replicated' ? `replicated size ${r.size} min_size ${r.minSize}` : `erasure ${r.dataShards}+${r.parityShards}`);

export async function poolCreate(t: TargetOptions, o: PoolCreateOptions, out: Out): Promise<void> {
  await withCluster(t, async (c) => {
    const map = await c.current();
    if (map.pools.some((p) => p.name === o.name)) throw new CliError(`pool ${o.name} exists`);
    const draftWidth = o.redundancy.type === 'replicated' ? o.redundancy.size : o.redundancy.dataShards + o.redundancy.parityShards;
    const domains = domainsWithDisks(map, o.failureDomain);
    if (domains < draftWidth) throw new CliError(`a pool of ${draftWidth} members one per ${o.failureDomain} needs ${draftWidth} ${o.failureDomain}s with disks in; the map has ${domains} (see --failure-domain)`);
    const next = await c.map.service.change((draft) => createPool(draft, { name: o.name, redundancy: o.redundancy, failureDomain: o.failureDomain, pgCount: o.pgCount }));
    const pool = next.pools.find((p) => p.name === o.name)!;
    out(`pool ${pool.name} created (id ${pool.id}, ${describeRedundancy(pool.redundancy)}, ${pool.pgCount} pgs, one member per ${pool.failureDomain}; map epoch ${next.epoch})\n`);
  });
}

const poolJson = (p: PoolInfo): Record<string, unknown> => ({ id: p.id, name: p.name, redundancy: p.redundancy, failureDomain: p.failureDomain, pgCount: p.pgCount, width: poolWidth(p), readOnly: p.readOnly });

export async function poolList(t: TargetOptions, json: boolean, out: Out): Promise<void> {
  await withCluster(t, async (c) => {
    const map = await c.current();
    if (json) return out(`${JSON.stringify(map.pools.map(poolJson))}\n`);
    out(table([['ID', 'NAME', 'REDUNDANCY', 'PGS', 'FAILURE DOMAIN'], ...map.pools.map((p) => [String(p.id), p.name, describeRedundancy(p.redundancy), String(p.pgCount), p.failureDomain])]));
  });
}

export const CONFIRM_FLAG = 'yes-i-really-mean-it';

export async function poolRemove(t: TargetOptions, o: { name: string; confirmed: boolean }, out: Out): Promise<void> {
  if (!o.confirmed) throw new CliError(`removing pool ${o.name} makes all its objects unreachable; to do it, repeat with --${CONFIRM_FLAG}`);
  await withCluster(t, async (c) => {
    const next = await c.map.service.change((draft) => removePool(draft, o.name));
    out(`pool ${o.name} removed (map epoch ${next.epoch})\n`);
  });
}
