/**
 * The cluster map's validation, byte form and edits (pure functions, no I/O):
 * every invariant of cluster/map.ts is enforced with InvalidArgument naming
 * the field; decodeMap fully validates untrusted bytes and never hands out a
 * half-checked map; encodings are canonical; edits never modify their input
 * and nextEpoch bumps the epoch by exactly one.
 */
import { describe, expect, test } from 'vitest';
import { checkMap } from '../cluster/map-check.js';
import { decodeMap, encodeMap, sameMap } from '../cluster/map-codec.js';
import {
  addDisk,
  addHost,
  addRack,
  addSite,
  createPool,
  initialMap,
  nextDiskId,
  nextEpoch,
  nextPoolId,
  removePool,
  setDiskAddress,
  setDiskState,
  setDiskWeight,
  setPgTemp,
} from '../cluster/map-edit.js';
import { buildPlacementIndex, pgMembers, pgPlacement } from '../cluster/placement.js';
import type { ClusterMap } from '../cluster/map.js';
import { TesseraError, type ErrorCodeName } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import { sampleMap } from './helpers/map-service-conformance.js';

function failure(run: () => unknown): { code: ErrorCodeName; message: string } {
  try {
    run();
  } catch (err) {
    if (err instanceof TesseraError) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected a TesseraError, nothing was thrown');
}

/** A mutable deep copy of the sample with one change. */
function mutated(change: (m: Record<string, any>) => void): unknown {
  const m = structuredClone(sampleMap()) as Record<string, any>;
  change(m);
  return m;
}

describe('checkMap', () => {
  test('accepts the sample and an empty new cluster', () => {
    expect(() => checkMap(sampleMap())).not.toThrow();
    expect(() => checkMap(initialMap({ clusterId: 'c1' }))).not.toThrow();
  });

  const cases: Array<[string, (m: Record<string, any>) => void, string]> = [
    ['not an object', (m) => (m.sites = 5), 'sites: must be a list'],
    ['unknown top-level field', (m) => (m.extra = 1), 'map: unknown field "extra"'],
    ['missing field', (m) => delete m.pools, 'map: field "pools" is missing'],
    ['epoch 0', (m) => (m.epoch = 0), 'epoch: must be in [1,'],
    ['fractional epoch', (m) => (m.epoch = 1.5), 'epoch: must be an integer'],
    ['bad cluster id', (m) => (m.clusterId = 'a b'), 'clusterId:'],
    ['empty name', (m) => (m.sites[0].name = ''), 'sites[0].name'],
    ['name too long', (m) => (m.hosts[0].name = 'h'.repeat(limits.mapNameBytesMax + 1)), 'hosts[0].name: longer than'],
    ['duplicate site', (m) => m.sites.push({ name: 'site0' }), 'sites[1]: duplicate site name "site0"'],
    ['duplicate host', (m) => m.hosts.push({ name: 'host1', rack: 'rack0' }), 'hosts[3]: duplicate host name'],
    ['rack of unknown site', (m) => (m.racks[0].site = 'mars'), 'racks[0].site: names unknown site "mars"'],
    ['host of unknown rack', (m) => (m.hosts[2].rack = 'r9'), 'hosts[2].rack: names unknown rack "r9"'],
    ['disk of unknown host', (m) => (m.disks[5].host = 'h9'), 'disks[5].host: names unknown host "h9"'],
    ['duplicate disk id', (m) => (m.disks[5].id = 0), 'disks[5]: duplicate disk id 0'],
    ['negative disk id', (m) => (m.disks[0].id = -1), 'disks[0].id'],
    ['disk id beyond u32', (m) => (m.disks[0].id = 2 ** 32), 'disks[0].id'],
    ['negative weight', (m) => (m.disks[0].weight = -0.5), 'disks[0].weight'],
    ['NaN weight', (m) => (m.disks[0].weight = Number.NaN), 'disks[0].weight'],
    ['address without port', (m) => (m.disks[0].address = 'localhost'), 'disks[0].address'],
    ['port 0', (m) => (m.disks[0].address = 'localhost:0'), 'port 0 is out of range'],
    ['port too large', (m) => (m.disks[0].address = 'localhost:70000'), 'port 70000'],
    ['up not boolean', (m) => (m.disks[0].up = 1), 'disks[0].up'],
    ['disk extra field', (m) => (m.disks[0].zone = 'a'), 'disks[0]: unknown field "zone"'],
    ['pg count not a power of two', (m) => (m.pools[0].pgCount = 96), 'pools[0].pgCount: must be a power of two'],
    ['pg count zero', (m) => (m.pools[0].pgCount = 0), 'pools[0].pgCount'],
    ['pg count too large', (m) => (m.pools[0].pgCount = limits.poolPgCountMax * 2), 'pools[0].pgCount'],
    ['minSize above size', (m) => (m.pools[0].redundancy = { type: 'replicated', size: 2, minSize: 3 }), 'pools[0].redundancy.minSize'],
    ['minSize 0', (m) => (m.pools[0].redundancy = { type: 'replicated', size: 2, minSize: 0 }), 'pools[0].redundancy.minSize'],
    ['erasure m = 0', (m) => (m.pools[0].redundancy = { type: 'erasure', dataShards: 4, parityShards: 0 }), 'parityShards'],
    ['erasure k = 0', (m) => (m.pools[0].redundancy = { type: 'erasure', dataShards: 0, parityShards: 2 }), 'dataShards'],
    ['erasure k too large', (m) => (m.pools[0].redundancy = { type: 'erasure', dataShards: 100, parityShards: 2 }), 'dataShards'],
    ['unknown redundancy', (m) => (m.pools[0].redundancy = { type: 'mirror' }), 'redundancy.type'],
    ['redundancy with stray field', (m) => (m.pools[0].redundancy.dataShards = 4), 'unknown field "dataShards"'],
    ['unknown failure domain', (m) => (m.pools[0].failureDomain = 'row'), 'pools[0].failureDomain'],
    ['duplicate pool name', (m) => m.pools.push({ ...m.pools[0], id: 9 }), 'duplicate pool name'],
    ['duplicate pool id', (m) => m.pools.push({ ...m.pools[0], name: 'other' }), 'duplicate pool id'],
    ['too many entries', (m) => (m.sites = Array.from({ length: limits.mapEntriesMax + 1 }, (_, i) => ({ name: `s${i}` }))), 'more than'],
  ];
  test.each(cases)('refuses %s', (_what, change, message) => {
    const f = failure(() => checkMap(mutated(change)));
    expect(f.code).toBe('InvalidArgument');
    expect(f.message).toContain(message);
  });

  test('refuses non-objects', () => {
    for (const value of [null, 1, 'map', [], undefined]) expect(failure(() => checkMap(value)).code).toBe('InvalidArgument');
  });

  test('accepts IPv6 and host name addresses', () => {
    expect(() => checkMap(mutated((m) => (m.disks[0].address = '[::1]:7000')))).not.toThrow();
    expect(() => checkMap(mutated((m) => (m.disks[0].address = 'node-3.example.com:7000')))).not.toThrow();
  });
});

describe('encodeMap / decodeMap', () => {
  test('round trip, canonical bytes, frozen result', () => {
    const map = sampleMap();
    const bytes = encodeMap(map);
    const decoded = decodeMap(bytes);
    expect(decoded).toEqual(map);
    expect(Object.isFrozen(decoded.pools[0]!.redundancy)).toBe(true);
    const reordered = JSON.parse(JSON.stringify(map), (_k, v: unknown) =>
      v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).reverse()) : v,
    ) as ClusterMap;
    expect(encodeMap(reordered).equals(bytes)).toBe(true);
    expect(sameMap(reordered, map)).toBe(true);
    expect(sameMap(map, setDiskWeight(map, 0, 3))).toBe(false);
  });

  test('refuses bytes that are not a valid map, with the code asked for', () => {
    expect(failure(() => decodeMap(Buffer.from('{"clusterId":'))).code).toBe('InvalidArgument');
    expect(failure(() => decodeMap(Buffer.from([0xff, 0xfe, 0x00]))).code).toBe('InvalidArgument');
    expect(failure(() => decodeMap(Buffer.from('null'))).code).toBe('InvalidArgument');
    const invalidJson = Buffer.from(JSON.stringify(mutated((m) => (m.pools[0].pgCount = 3))));
    expect(failure(() => decodeMap(invalidJson, { errorCode: 'Corrupt' }))).toMatchObject({ code: 'Corrupt', message: expect.stringContaining('pgCount') });
    expect(failure(() => decodeMap(invalidJson, { errorCode: 'ProtocolError' })).code).toBe('ProtocolError');
  });

  test('checks the length before parsing', () => {
    const huge = Buffer.alloc(limits.mapBytesMax + 1, 0x20);
    expect(failure(() => decodeMap(huge))).toMatchObject({ code: 'InvalidArgument', message: expect.stringContaining('larger than') });
  });

  test('encodeMap refuses an invalid map', () => {
    expect(failure(() => encodeMap(mutated((m) => (m.epoch = -1)) as ClusterMap)).code).toBe('InvalidArgument');
  });
});

describe('edits', () => {
  const base = (): ClusterMap => sampleMap();

  test('build a hierarchy, refusing duplicates (AlreadyExists) and unknown parents (NotFound)', () => {
    let m = addSite(initialMap({ clusterId: 'c' }), { name: 's' });
    expect(failure(() => addSite(m, { name: 's' })).code).toBe('AlreadyExists');
    expect(failure(() => addRack(m, { name: 'r', site: 'nope' })).code).toBe('NotFound');
    m = addRack(m, { name: 'r', site: 's' });
    expect(failure(() => addHost(m, { name: 'h', rack: 'nope' })).code).toBe('NotFound');
    m = addHost(m, { name: 'h', rack: 'r' });
    expect(failure(() => addHost(m, { name: 'bad name', rack: 'r' })).code).toBe('InvalidArgument');
    expect(nextDiskId(m)).toBe(0);
    m = addDisk(m, { id: nextDiskId(m), host: 'h', weight: 2, address: '10.0.0.1:7000' });
    expect(m.disks[0]).toEqual({ id: 0, host: 'h', weight: 2, address: '10.0.0.1:7000', up: false, in: true });
    expect(nextDiskId(m)).toBe(1);
    expect(failure(() => addDisk(m, { id: 0, host: 'h', weight: 1, address: '10.0.0.1:7001' })).code).toBe('AlreadyExists');
    expect(failure(() => addDisk(m, { id: 1, host: 'x', weight: 1, address: '10.0.0.1:7001' })).code).toBe('NotFound');
    expect(failure(() => addDisk(m, { id: 1, host: 'h', weight: 1, address: 'nowhere' })).code).toBe('InvalidArgument');
    expect(failure(() => addDisk(m, { id: 1.5, host: 'h', weight: 1, address: '10.0.0.1:7001' })).code).toBe('InvalidArgument');
    expect(() => checkMap(m)).not.toThrow();
  });

  test('disk state, weight and address; unchanged state returns the same map', () => {
    const m = base();
    expect(setDiskState(m, 0, { up: true })).toBe(m);
    const down = setDiskState(m, 0, { up: false, in: false });
    expect(down.disks[0]).toMatchObject({ up: false, in: false });
    expect(m.disks[0]).toMatchObject({ up: true, in: true });
    expect(setDiskWeight(m, 1, 0).disks[1]!.weight).toBe(0);
    expect(failure(() => setDiskWeight(m, 1, -1)).code).toBe('InvalidArgument');
    expect(failure(() => setDiskState(m, 99, { up: true })).code).toBe('NotFound');
    expect(setDiskAddress(m, 2, '127.0.0.1:9999').disks[2]!.address).toBe('127.0.0.1:9999');
    expect(failure(() => setDiskAddress(m, 2, '127.0.0.1:')).code).toBe('InvalidArgument');
  });

  test('createPool validates pg count and sizes, and picks the next id', () => {
    const m = base();
    expect(nextPoolId(m)).toBe(1);
    const ec = createPool(m, { name: 'ec', redundancy: { type: 'erasure', dataShards: 4, parityShards: 2 }, failureDomain: 'disk', pgCount: 32 });
    expect(ec.pools[1]).toEqual({ id: 1, name: 'ec', redundancy: { type: 'erasure', dataShards: 4, parityShards: 2 }, failureDomain: 'disk', pgCount: 32, readOnly: false });
    const pool = { name: 'p', redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 } as const;
    expect(failure(() => createPool(m, { ...pool, pgCount: 12 })).code).toBe('InvalidArgument');
    expect(failure(() => createPool(m, { ...pool, redundancy: { type: 'replicated', size: 3, minSize: 4 } })).code).toBe('InvalidArgument');
    expect(failure(() => createPool(m, { ...pool, redundancy: { type: 'replicated', size: 99, minSize: 1 } })).code).toBe('InvalidArgument');
    expect(failure(() => createPool(m, { ...pool, failureDomain: 'row' as never })).code).toBe('InvalidArgument');
    expect(failure(() => createPool(m, { ...pool, name: 'rbd' })).code).toBe('AlreadyExists');
    expect(failure(() => createPool(m, { ...pool, id: 0 })).code).toBe('AlreadyExists');
  });

  test('removePool: the removed id (and every id below the next) is never given again, also across encoding', () => {
    const m = base();
    const pool = { redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 } as const;
    const two = createPool(createPool(m, { ...pool, name: 'a' }), { ...pool, name: 'b' });
    expect(two.pools.map((p) => p.id)).toEqual([0, 1, 2]);
    expect(encodeMap(two).toString()).not.toContain('poolIdNext'); // maps that never removed a pool keep their bytes
    const removed = removePool(two, 'b');
    expect(removed.pools.map((p) => p.name)).toEqual(['rbd', 'a']);
    expect(removed.poolIdNext).toBe(3);
    const decoded = decodeMap(encodeMap(removed));
    expect(decoded.poolIdNext).toBe(3);
    expect(nextPoolId(decoded)).toBe(3);
    expect(createPool(decoded, { ...pool, name: 'b' }).pools.find((p) => p.name === 'b')!.id).toBe(3);
    expect(failure(() => createPool(decoded, { ...pool, name: 'c', id: 2 })).code).toBe('AlreadyExists');
    expect(nextPoolId(removePool(removePool(decoded, 'a'), 'rbd'))).toBe(3);
    expect(failure(() => removePool(m, 'nope')).code).toBe('NotFound');
    expect(failure(() => checkMap({ ...removed, poolIdNext: -1 })).code).toBe('InvalidArgument');
  });

  test('nextEpoch: epoch + 1, validated, frozen, input untouched even by an edit that mutates its draft', () => {
    const m = base();
    const snapshot = structuredClone(m);
    const next = nextEpoch(m, (draft) => {
      draft.disks[0]!.weight = 5;
      draft.epoch = 99; // ignored: the epoch is always the input's + 1
      return draft;
    });
    expect(next.epoch).toBe(m.epoch + 1);
    expect(next.disks[0]!.weight).toBe(5);
    expect(m).toEqual(snapshot);
    expect(Object.isFrozen(next)).toBe(true);
    expect(() => {
      (next.disks[0] as { weight: number }).weight = 1;
    }).toThrow(TypeError);
    expect(failure(() => nextEpoch(m, (d) => ({ ...d, clusterId: 'other' }))).code).toBe('InvalidArgument');
    expect(failure(() => nextEpoch(m, (d) => ({ ...d, pools: [{ ...d.pools[0]!, pgCount: 5 }] })))).toMatchObject({ code: 'InvalidArgument' });
    expect(nextEpoch(nextEpoch(m, (d) => d), (d) => d).epoch).toBe(m.epoch + 2);
  });
});

describe('temporary acting sets (map.pgTemp)', () => {
  const pool = (m: ClusterMap) => m.pools.find((p) => p.name === 'rbd')!;

  test('setPgTemp reorders the acting set every process computes, and clears it', () => {
    const m = sampleMap();
    const index = buildPlacementIndex(m);
    const up = pgMembers(index, pool(m), 5);
    const acting = [up[2]!, up[0]!, up[1]!];
    const temp = nextEpoch(m, (d) => setPgTemp(d, pool(m).id, 5, acting));
    expect(temp.pgTemp).toEqual([{ pool: pool(m).id, pg: 5, up, acting }]);
    const p = pgPlacement(temp, buildPlacementIndex(temp), pool(temp), 5);
    expect(p).toEqual({ members: up, acting, primary: up[2] });
    // Other pgs are untouched.
    expect(pgPlacement(temp, buildPlacementIndex(temp), pool(temp), 6).primary).toBe(pgMembers(index, pool(m), 6)[0]);
    // The byte form keeps it; decoding validates it.
    expect(sameMap(decodeMap(encodeMap(temp)), temp)).toBe(true);
    // Clearing (null, or the computed order) removes the field.
    const cleared = nextEpoch(temp, (d) => setPgTemp(d, pool(m).id, 5, null));
    expect(cleared.pgTemp).toBeUndefined();
    expect(nextEpoch(temp, (d) => setPgTemp(d, pool(m).id, 5, up)).pgTemp).toBeUndefined();
  });

  test('an entry stops applying when the computed members change, and the next change drops it', () => {
    const m = sampleMap();
    const up = pgMembers(buildPlacementIndex(m), pool(m), 9);
    const temp = nextEpoch(m, (d) => setPgTemp(d, pool(m).id, 9, [up[1]!, up[0]!, up[2]!]));
    // The computed primary's disk goes out: placement picks another member, the entry no longer applies.
    const moved = nextEpoch(temp, (d) => setDiskState(d, up[0]!, { in: false }));
    const index = buildPlacementIndex(moved);
    const members = pgMembers(index, pool(moved), 9);
    expect(members).not.toEqual(up);
    expect(pgPlacement(moved, index, pool(moved), 9).acting).toEqual(members.filter((id) => moved.disks.find((d) => d.id === id)!.up));
    // Setting another pg's entry drops the stale one.
    const other = pgMembers(index, pool(moved), 3);
    const next = nextEpoch(moved, (d) => setPgTemp(d, pool(moved).id, 3, [other[1]!, other[0]!, other[2]!]));
    expect(next.pgTemp?.map((t) => t.pg)).toEqual([3]);
  });

  test('a temporary acting set may leave members out (toofull): they are members, not acting', () => {
    const m = sampleMap();
    const index = buildPlacementIndex(m);
    const up = pgMembers(index, pool(m), 1);
    const next = nextEpoch(m, (d) => setPgTemp(d, pool(m).id, 1, [up[0]!, up[2]!]));
    expect(next.pgTemp).toEqual([{ pool: pool(m).id, pg: 1, up, acting: [up[0]!, up[2]!] }]);
    const placed = pgPlacement(next, buildPlacementIndex(next), pool(next), 1);
    expect(placed.members).toEqual(up);
    expect(placed.acting).toEqual([up[0]!, up[2]!]);
    expect(nextEpoch(next, (d) => setPgTemp(d, pool(m).id, 1, null)).pgTemp).toBeUndefined();
  });

  test('bad entries are refused and change nothing', () => {
    const m = sampleMap();
    const up = pgMembers(buildPlacementIndex(m), pool(m), 1);
    expect(failure(() => setPgTemp(m, pool(m).id, 1, [])).code).toBe('InvalidArgument');
    expect(failure(() => setPgTemp(m, pool(m).id, 1, [up[0]!, up[0]!])).code).toBe('InvalidArgument');
    expect(failure(() => setPgTemp(m, pool(m).id, 1, [up[0]!, up[1]!, 99])).code).toBe('InvalidArgument');
    expect(failure(() => setPgTemp(m, pool(m).id, 64, null)).code).toBe('InvalidArgument');
    expect(failure(() => setPgTemp(m, 77, 1, null)).code).toBe('NotFound');
    const bad = (pgTemp: unknown) => failure(() => checkMap({ ...m, pgTemp })).message;
    expect(bad([{ pool: 1, pg: 1, up: [0, 2, 4], acting: [0, 2, 5] }])).toMatch(/pgTemp\[0\]\.acting: must be a reordering of up/);
    expect(bad([{ pool: 1, pg: 1, up: [0, 0, 4], acting: [0, 0, 4] }])).toMatch(/lists a disk twice/);
    expect(bad([{ pool: 1, pg: 1, up: [0, 2], acting: [2, 0] }, { pool: 1, pg: 1, up: [0, 2], acting: [2, 0] }])).toMatch(/pgTemp/);
    expect(bad([{ pool: 1, pg: 1, up: [0], acting: [0], extra: 1 }])).toMatch(/unknown field "extra"/);
    expect(m.pgTemp).toBeUndefined();
  });
});
