/**
 * Validation of a cluster map: `checkMap(value)` proves that an untrusted
 * value (decoded JSON, an operator's edit, a map received over rpc) is a
 * well-formed ClusterMap, or throws InvalidArgument naming the first field
 * that is wrong ("invalid cluster map: disks[3].host: ...").
 *
 * It checks the shape strictly (exactly the known fields, of the right types:
 * an unknown field is refused, so a typo never silently drops data) and every
 * invariant of cluster/map.ts: unique ids and names, every reference names an
 * existing parent, pg counts are powers of two, replicated pools have
 * 1 <= minSize <= size, erasure-coded pools k >= 1, m >= 1; plus the bounds of
 * src/lib/limits.ts (list lengths, name lengths, pool widths).
 *
 * Pure: no I/O, no state. Cost is linear in the size of the map.
 */
import { DATA_SHARDS_MAX, PARITY_SHARDS_MAX } from '../native/index.js';
import { invalid, type TesseraError } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import type { ClusterMap, DiskInfo, FailureDomain, HostInfo, PgTempInfo, PoolInfo, PoolRedundancy, RackInfo, SiteInfo } from './map.js';

/** Ids travel as u32 on the wire and in store keys. */
const idMax = 0xffff_ffff;
const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const addressPattern = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})$/;
export const failureDomains: readonly FailureDomain[] = ['disk', 'host', 'rack', 'site'];

type Fields = Record<string, unknown>;

const fail = (path: string, message: string): TesseraError => invalid(`invalid cluster map: ${path}: ${message}`);

/** A plain object with exactly `keys` as its own fields (plus any of `optional`). */
function fields(value: unknown, path: string, keys: readonly string[], optional: readonly string[] = []): Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw fail(path, 'must be an object');
  const record = value as Fields;
  for (const key of Object.keys(record)) if (!keys.includes(key) && !optional.includes(key)) throw fail(path, `unknown field "${key}"`);
  for (const key of keys) if (!Object.hasOwn(record, key)) throw fail(path, `field "${key}" is missing`);
  return record;
}

function integer(value: unknown, path: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw fail(path, `must be an integer, is ${JSON.stringify(value)}`);
  if (value < min || value > max) throw fail(path, `must be in [${min}, ${max}], is ${value}`);
  return value;
}

function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') throw fail(path, `must be true or false, is ${JSON.stringify(value)}`);
  return value;
}

function boundedString(value: unknown, path: string, bytesMax: number): string {
  if (typeof value !== 'string') throw fail(path, `must be a string, is ${JSON.stringify(value)}`);
  if (Buffer.byteLength(value) > bytesMax) throw fail(path, `longer than ${bytesMax} bytes`);
  return value;
}

/** Names of sites, racks, hosts and pools, and the cluster id. */
export function checkName(value: unknown, path: string): string {
  const name = boundedString(value, path, limits.mapNameBytesMax);
  if (!namePattern.test(name)) throw fail(path, `"${name}" is not a name (letters, digits, '.', '_', '-'; starting with a letter or digit)`);
  return name;
}

export function checkAddress(value: unknown, path: string): string {
  const address = boundedString(value, path, limits.mapAddressBytesMax);
  const match = addressPattern.exec(address);
  if (match === null) throw fail(path, `"${address}" is not "host:port"`);
  const port = Number(match[2]);
  if (port < 1 || port > 65_535) throw fail(path, `port ${port} is out of range`);
  return address;
}

export function checkWeight(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw fail(path, `must be a finite number >= 0, is ${JSON.stringify(value)}`);
  return value;
}

function list(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) throw fail(path, 'must be a list');
  if (value.length > limits.mapEntriesMax) throw fail(path, `has ${value.length} entries, more than ${limits.mapEntriesMax}`);
  return value;
}

function checkSite(value: unknown, path: string): SiteInfo {
  const f = fields(value, path, ['name']);
  return { name: checkName(f.name, `${path}.name`) };
}

function checkRack(value: unknown, path: string): RackInfo {
  const f = fields(value, path, ['name', 'site']);
  return { name: checkName(f.name, `${path}.name`), site: checkName(f.site, `${path}.site`) };
}

function checkHost(value: unknown, path: string): HostInfo {
  const f = fields(value, path, ['name', 'rack']);
  return { name: checkName(f.name, `${path}.name`), rack: checkName(f.rack, `${path}.rack`) };
}

function checkDisk(value: unknown, path: string): DiskInfo {
  const f = fields(value, path, ['id', 'host', 'weight', 'address', 'up', 'in'], ['space']);
  const disk: DiskInfo = {
    id: integer(f.id, `${path}.id`, 0, idMax),
    host: checkName(f.host, `${path}.host`),
    weight: checkWeight(f.weight, `${path}.weight`),
    address: checkAddress(f.address, `${path}.address`),
    up: boolean(f.up, `${path}.up`),
    in: boolean(f.in, `${path}.in`),
  };
  if (f.space !== undefined) {
    if (f.space !== 'nearFull' && f.space !== 'full') throw fail(`${path}.space`, `must be "nearFull" or "full" (or absent), is ${JSON.stringify(f.space)}`);
    disk.space = f.space;
  }
  return disk;
}

/** Redundancy of a pool: sizes within the limits and the erasure codec's geometry. */
export function checkRedundancy(value: unknown, path: string): PoolRedundancy {
  const kind = (value as { type?: unknown } | null)?.type;
  if (kind === 'replicated') {
    const f = fields(value, path, ['type', 'size', 'minSize']);
    const size = integer(f.size, `${path}.size`, 1, limits.poolReplicasMax);
    const minSize = integer(f.minSize, `${path}.minSize`, 1, size);
    return { type: 'replicated', size, minSize };
  }
  if (kind === 'erasure') {
    const f = fields(value, path, ['type', 'dataShards', 'parityShards']);
    const dataShards = integer(f.dataShards, `${path}.dataShards`, 1, DATA_SHARDS_MAX);
    const parityShards = integer(f.parityShards, `${path}.parityShards`, 1, PARITY_SHARDS_MAX);
    return { type: 'erasure', dataShards, parityShards };
  }
  throw fail(`${path}.type`, `must be "replicated" or "erasure", is ${JSON.stringify(kind)}`);
}

export function checkPgCount(value: unknown, path: string): number {
  const pgCount = integer(value, path, 1, limits.poolPgCountMax);
  if ((pgCount & (pgCount - 1)) !== 0) throw fail(path, `must be a power of two, is ${pgCount}`);
  return pgCount;
}

export function checkFailureDomain(value: unknown, path: string): FailureDomain {
  if (!failureDomains.includes(value as FailureDomain)) throw fail(path, `must be one of ${failureDomains.join(', ')}, is ${JSON.stringify(value)}`);
  return value as FailureDomain;
}

function checkPool(value: unknown, path: string): PoolInfo {
  const f = fields(value, path, ['id', 'name', 'redundancy', 'failureDomain', 'pgCount', 'readOnly']);
  return {
    id: integer(f.id, `${path}.id`, 0, idMax),
    name: checkName(f.name, `${path}.name`),
    redundancy: checkRedundancy(f.redundancy, `${path}.redundancy`),
    failureDomain: checkFailureDomain(f.failureDomain, `${path}.failureDomain`),
    pgCount: checkPgCount(f.pgCount, `${path}.pgCount`),
    readOnly: boolean(f.readOnly, `${path}.readOnly`),
  };
}

/** Fails on the second entry with the same key. */
function unique<T>(items: readonly T[], path: string, key: (item: T) => string | number, what: string): Set<string | number> {
  const seen = new Set<string | number>();
  items.forEach((item, i) => {
    const k = key(item);
    if (seen.has(k)) throw fail(`${path}[${i}]`, `duplicate ${what} ${JSON.stringify(k)}`);
    seen.add(k);
  });
  return seen;
}

function references<T>(items: readonly T[], path: string, field: string, parent: (item: T) => string, known: Set<string | number>, what: string): void {
  items.forEach((item, i) => {
    if (!known.has(parent(item))) throw fail(`${path}[${i}].${field}`, `names unknown ${what} "${parent(item)}"`);
  });
}

function checkEntries<T>(value: unknown, path: string, check: (v: unknown, p: string) => T): T[] {
  return list(value, path).map((v, i) => check(v, `${path}[${i}]`));
}

/** Proves `value` is a valid ClusterMap, or throws InvalidArgument naming the first wrong field. */
export function checkMap(value: unknown): asserts value is ClusterMap {
  const f = fields(value, 'map', ['clusterId', 'epoch', 'sites', 'racks', 'hosts', 'disks', 'pools'], ['poolIdNext', 'pgTemp']);
  checkName(f.clusterId, 'clusterId');
  if (f.poolIdNext !== undefined) integer(f.poolIdNext, 'poolIdNext', 0, idMax + 1);
  integer(f.epoch, 'epoch', 1, Number.MAX_SAFE_INTEGER);
  const sites = checkEntries(f.sites, 'sites', checkSite);
  const racks = checkEntries(f.racks, 'racks', checkRack);
  const hosts = checkEntries(f.hosts, 'hosts', checkHost);
  const disks = checkEntries(f.disks, 'disks', checkDisk);
  const pools = checkEntries(f.pools, 'pools', checkPool);
  const siteNames = unique(sites, 'sites', (s) => s.name, 'site name');
  const rackNames = unique(racks, 'racks', (r) => r.name, 'rack name');
  const hostNames = unique(hosts, 'hosts', (h) => h.name, 'host name');
  unique(disks, 'disks', (d) => d.id, 'disk id');
  unique(pools, 'pools', (p) => p.id, 'pool id');
  unique(pools, 'pools', (p) => p.name, 'pool name');
  references(racks, 'racks', 'site', (r) => r.site, siteNames, 'site');
  references(hosts, 'hosts', 'rack', (h) => h.rack, rackNames, 'rack');
  references(disks, 'disks', 'host', (d) => d.host, hostNames, 'host');
  if (f.pgTemp !== undefined) {
    const temps = checkEntries(f.pgTemp, 'pgTemp', checkPgTemp);
    unique(temps, 'pgTemp', (t) => `${t.pool}.${t.pg}`, 'pg');
  }
}

function diskIdList(value: unknown, path: string): number[] {
  const ids = list(value, path);
  if (ids.length < 1 || ids.length > 64) throw fail(path, `must have 1 to 64 disk ids, has ${ids.length}`);
  return ids.map((id, i) => integer(id, `${path}[${i}]`, 0, idMax));
}

function checkPgTemp(value: unknown, path: string): PgTempInfo {
  const f = fields(value, path, ['pool', 'pg', 'up', 'acting']);
  const t: PgTempInfo = {
    pool: integer(f.pool, `${path}.pool`, 0, idMax),
    pg: integer(f.pg, `${path}.pg`, 0, idMax),
    up: diskIdList(f.up, `${path}.up`),
    acting: diskIdList(f.acting, `${path}.acting`),
  };
  if (new Set(t.up).size !== t.up.length) throw fail(`${path}.up`, 'lists a disk twice');
  if (!t.acting.every((id) => t.up.includes(id)) || new Set(t.acting).size !== t.acting.length) {
    throw fail(`${path}.acting`, 'must be a reordering of up (or of part of it: members left out, toofull)');
  }
  return t;
}
