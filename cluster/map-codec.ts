/**
 * The cluster map's byte form, shared by the map store's files and the map
 * service's rpc payloads: canonical JSON (UTF-8, fields in a fixed order, no
 * whitespace), so equal maps encode to equal bytes and can be compared by
 * their encodings.
 *
 * Maps handed out by decodeMap (and held by map services) are deep-frozen:
 * nobody edits a map in place; edits build a new map (cluster/map-edit.ts).
 *
 * Limits: an encoding is at most limits.mapBytesMax bytes; decodeMap checks
 * the length before it parses and validates everything (checkMap) after.
 */
import { TesseraError, type ErrorCodeName } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import { checkMap } from './map-check.js';
import type { ClusterMap, DiskInfo, PoolInfo, PoolRedundancy } from './map.js';

const redundancyFields = (r: PoolRedundancy): PoolRedundancy =>
  r.type === 'replicated' ? { type: r.type, size: r.size, minSize: r.minSize } : { type: r.type, dataShards: r.dataShards, parityShards: r.parityShards };

// `space` only when set: maps without it keep their bytes.
const diskFields = (d: DiskInfo): DiskInfo => ({ id: d.id, host: d.host, weight: d.weight, address: d.address, up: d.up, in: d.in, ...(d.space !== undefined ? { space: d.space } : {}) });

const poolFields = (p: PoolInfo): PoolInfo => ({
  id: p.id,
  name: p.name,
  redundancy: redundancyFields(p.redundancy),
  failureDomain: p.failureDomain,
  pgCount: p.pgCount,
  readOnly: p.readOnly,
});

/** A fresh copy with fields in canonical order, sharing nothing with the input. */
export function cloneMap(map: ClusterMap): ClusterMap {
  return {
    clusterId: map.clusterId,
    epoch: map.epoch,
    sites: map.sites.map((s) => ({ name: s.name })),
    racks: map.racks.map((r) => ({ name: r.name, site: r.site })),
    hosts: map.hosts.map((h) => ({ name: h.name, rack: h.rack })),
    disks: map.disks.map(diskFields),
    pools: map.pools.map(poolFields),
    // Only once a pool was removed: maps without it keep their bytes.
    ...(map.poolIdNext !== undefined ? { poolIdNext: map.poolIdNext } : {}),
    ...(map.pgTemp !== undefined && map.pgTemp.length > 0
      ? { pgTemp: [...map.pgTemp].sort((a, b) => a.pool - b.pool || a.pg - b.pg).map((t) => ({ pool: t.pool, pg: t.pg, up: [...t.up], acting: [...t.acting] })) }
      : {}),
  };
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** A validated, canonical, deep-frozen copy of map (InvalidArgument if it is not a valid map). */
export function freezeMap(map: ClusterMap): ClusterMap {
  checkMap(map);
  return deepFreeze(cloneMap(map));
}

/** Canonical bytes of a valid map (InvalidArgument if it is not one, LimitExceeded if it is too large). */
export function encodeMap(map: ClusterMap): Buffer {
  checkMap(map);
  const bytes = Buffer.from(JSON.stringify(cloneMap(map)), 'utf8');
  if (bytes.length > limits.mapBytesMax) throw new TesseraError('LimitExceeded', `cluster map of ${bytes.length} bytes is larger than ${limits.mapBytesMax}`);
  return bytes;
}

export interface DecodeMapOptions {
  /** The code of every failure: InvalidArgument (default) for input from callers, Corrupt for files, ProtocolError for replies. */
  errorCode?: ErrorCodeName;
}

/** Parses and fully validates untrusted bytes; the result is canonical and deep-frozen. */
export function decodeMap(bytes: Uint8Array, options: DecodeMapOptions = {}): ClusterMap {
  const code = options.errorCode ?? 'InvalidArgument';
  if (bytes.byteLength > limits.mapBytesMax) throw new TesseraError(code, `cluster map of ${bytes.byteLength} bytes is larger than ${limits.mapBytesMax}`);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new TesseraError(code, `cluster map is not JSON: ${(err as Error).message}`, { cause: err });
  }
  try {
    checkMap(value);
  } catch (err) {
    if (err instanceof TesseraError && err.code !== code) throw new TesseraError(code, err.message, { cause: err });
    throw err;
  }
  return deepFreeze(cloneMap(value));
}

/** True when both maps encode to the same bytes (same content, field order aside). */
export function sameMap(a: ClusterMap, b: ClusterMap): boolean {
  return JSON.stringify(cloneMap(a)) === JSON.stringify(cloneMap(b));
}
