/**
 * The conformance suite of the MapService interface (cluster/map-service.ts),
 * run against every backend: the embedded store, the rpc client over each
 * transport, and (issue 6) etcd. A backend joins by supplying a harness
 * factory; each test makes its own harness and cleans it up, also on failure.
 *
 * It proves: the initial map is epoch 1; update is an exact compare-and-set
 * on the epoch; concurrent changes never lose one and take one epoch each;
 * watch delivers newer epochs in order and stops on abort and on close;
 * invalid maps are refused (InvalidArgument) without changing the stored map;
 * the map survives close and reopen; a single-owner backend refuses a second
 * owner. Every wait is bounded (waitFor), so a broken backend fails rather
 * than hangs.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { addDisk, addHost, addRack, addSite, createPool, initialMap, nextEpoch, setDiskState } from '../../cluster/map-edit.js';
import type { MapService } from '../../cluster/map-service.js';
import type { ClusterMap } from '../../cluster/map.js';
import { isTesseraError, type ErrorCodeName } from '../../src/lib/errors.js';

export interface MapServiceHarness {
  /** A service on fresh storage holding `initial` as epoch 1. */
  create(initial: ClusterMap): Promise<MapService>;
  /** Once the last service made is closed: a new one on the same storage. */
  reopen(): Promise<MapService>;
  /** Opens a second owner of the storage while one is open (single-owner backends: must fail Locked). */
  openSecondOwner(): Promise<MapService>;
  /** Closes whatever is still open and removes the storage. Idempotent. */
  cleanup(): Promise<void>;
}

export interface MapServiceCapabilities {
  /** One process owns the storage (embedded): a second owner is refused. */
  singleOwner: boolean;
}

/** A small valid cluster: 1 site, 1 rack, 3 hosts of 2 disks, one replicated pool. */
export function sampleMap(clusterId = 'conformance'): ClusterMap {
  let m = addRack(addSite(initialMap({ clusterId }), { name: 'site0' }), { name: 'rack0', site: 'site0' });
  for (let h = 0; h < 3; h++) {
    m = addHost(m, { name: `host${h}`, rack: 'rack0' });
    for (let d = 0; d < 2; d++) m = addDisk(m, { id: h * 2 + d, host: `host${h}`, weight: 1, address: `127.0.0.1:${7000 + h * 2 + d}`, up: true });
  }
  return createPool(m, { name: 'rbd', redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 64 });
}

/** Polls until check() is true; fails after timeoutMs. */
export async function waitFor(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export async function errorCodeOf(promise: Promise<unknown>): Promise<ErrorCodeName | 'none'> {
  try {
    await promise;
    return 'none';
  } catch (err) {
    if (isTesseraError(err)) return err.code;
    throw err;
  }
}

const sleepMs = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function mapServiceConformance(name: string, makeHarness: () => Promise<MapServiceHarness>, capabilities: MapServiceCapabilities): void {
  describe(`map service conformance: ${name}`, () => {
    let harness: MapServiceHarness | null = null;
    const open = async (initial = sampleMap()): Promise<MapService> => {
      harness = await makeHarness();
      return harness.create(initial);
    };
    afterEach(async () => {
      await harness?.cleanup();
      harness = null;
    });

    test('starts at epoch 1 with the initial map', async () => {
      const initial = sampleMap();
      const service = await open({ ...initial, epoch: 7 });
      const map = await service.current();
      expect(map).toEqual({ ...initial, epoch: 1 });
      expect(Object.isFrozen(map) && Object.isFrozen(map.disks[0])).toBe(true);
    });

    test('update is a compare-and-set on the epoch', async () => {
      const service = await open();
      const m1 = await service.current();
      const m2 = nextEpoch(m1, (m) => setDiskState(m, 0, { up: false }));
      expect(await service.update(1, m2)).toEqual(m2);
      expect(await service.current()).toEqual(m2);
      const stale = nextEpoch(m1, (m) => setDiskState(m, 1, { in: false }));
      expect(await errorCodeOf(service.update(1, stale))).toBe('Conflict');
      expect(await errorCodeOf(service.update(3, nextEpoch(nextEpoch(m2, (m) => m), (m) => m)))).toBe('Conflict');
      expect(await errorCodeOf(service.update(2, { ...nextEpoch(m2, (m) => m), epoch: 4 }))).toBe('InvalidArgument');
      expect(await errorCodeOf(service.update(2, { ...nextEpoch(m2, (m) => m), clusterId: 'other' }))).toBe('WrongCluster');
      expect(await service.current()).toEqual(m2);
      const m3 = nextEpoch(m2, (m) => setDiskState(m, 1, { in: false }));
      expect((await service.update(2, m3)).epoch).toBe(3);
    });

    test('20 concurrent changes each adding a disk all land, one epoch each', async () => {
      const service = await open();
      const ids = Array.from({ length: 20 }, (_, i) => 100 + i);
      const results = await Promise.all(
        ids.map((id) => service.change((m) => addDisk(m, { id, host: `host${id % 3}`, weight: 1, address: `127.0.0.1:${9000 + id}` }))),
      );
      const epochs = results.map((m) => m.epoch).sort((a, b) => a - b);
      expect(epochs).toEqual(Array.from({ length: 20 }, (_, i) => i + 2));
      results.forEach((m, i) => expect(m.disks.some((d) => d.id === ids[i])).toBe(true));
      const final = await service.current();
      expect(final.epoch).toBe(21);
      for (const id of ids) expect(final.disks.filter((d) => d.id === id)).toHaveLength(1);
      expect(final.disks).toHaveLength(6 + 20);
    });

    test('change: a no-op edit stores nothing; an edit that throws ends the change', async () => {
      const service = await open();
      expect((await service.change((m) => setDiskState(m, 0, { up: true }))).epoch).toBe(1);
      expect(await errorCodeOf(service.change((m) => addDisk(m, { id: 0, host: 'host0', weight: 1, address: '127.0.0.1:1' })))).toBe('AlreadyExists');
      expect(await errorCodeOf(service.change((m) => addDisk(m, { id: 50, host: 'nowhere', weight: 1, address: '127.0.0.1:1' })))).toBe('NotFound');
      const drafts: ClusterMap[] = [];
      const changed = await service.change((draft) => {
        drafts.push(draft);
        draft.disks[0]!.weight = 2; // an edit may modify its private draft in place
        return draft;
      });
      expect(changed.epoch).toBe(2);
      expect(changed.disks[0]!.weight).toBe(2);
      expect((await service.current()).disks[0]!.weight).toBe(2);
    });

    test('watch delivers newer epochs in order and stops on abort', async () => {
      const service = await open();
      const seen: number[] = [];
      const abort = new AbortController();
      service.watch(1, (m) => seen.push(m.epoch), abort.signal);
      for (let i = 0; i < 3; i++) await service.change((m) => setDiskState(m, i, { up: false }));
      await waitFor(() => seen.at(-1) === 4, 'epoch 4 to be delivered');
      expect([...seen].sort((a, b) => a - b)).toEqual(seen);
      expect(new Set(seen).size).toBe(seen.length);
      expect(seen.every((e) => e > 1)).toBe(true);
      abort.abort();
      const count = seen.length;
      await service.change((m) => setDiskState(m, 4, { up: false }));
      await sleepMs(150);
      expect(seen).toHaveLength(count);
    });

    test('watch from an old epoch gets the current map at once; from the current one, only newer maps', async () => {
      const service = await open();
      await service.change((m) => setDiskState(m, 0, { up: false }));
      const abort = new AbortController();
      try {
        const fromOld: ClusterMap[] = [];
        const fromNow: number[] = [];
        service.watch(0, (m) => fromOld.push(m), abort.signal);
        service.watch(2, (m) => fromNow.push(m.epoch), abort.signal);
        await waitFor(() => fromOld.length > 0, 'the current map');
        expect(fromOld[0]!.epoch).toBe(2);
        expect(fromOld[0]!.disks[0]!.up).toBe(false);
        await sleepMs(50);
        expect(fromNow).toEqual([]);
        await service.change((m) => setDiskState(m, 1, { up: false }));
        await waitFor(() => fromNow.length > 0, 'epoch 3');
        expect(fromNow).toEqual([3]);
      } finally {
        abort.abort();
      }
    });

    test('watch ends when the service closes', async () => {
      const service = await open();
      const seen: number[] = [];
      service.watch(1, (m) => seen.push(m.epoch), new AbortController().signal);
      await service.close();
      await sleepMs(50);
      expect(seen).toEqual([]);
      expect(await errorCodeOf(service.current())).toBe('Closed');
    });

    test('invalid maps are refused with InvalidArgument and nothing is stored', async () => {
      const service = await open();
      const before = await service.current();
      const next = (edit: (m: ClusterMap) => void): ClusterMap => {
        const m = structuredClone(before) as ClusterMap;
        edit(m);
        return { ...m, epoch: 2 };
      };
      const invalidMaps: ClusterMap[] = [
        next((m) => (m.pools[0]!.pgCount = 48)),
        next((m) => m.disks.push({ ...m.disks[0]!, address: '127.0.0.1:7100' })),
        next((m) => (m.disks[1]!.host = 'ghost')),
        next((m) => (m.hosts[0]!.rack = 'ghost')),
        next((m) => (m.pools[0]!.redundancy = { type: 'replicated', size: 2, minSize: 3 })),
        next((m) => (m.pools[0]!.redundancy = { type: 'erasure', dataShards: 4, parityShards: 0 })),
        next((m) => (m.disks[0]!.weight = -1)),
        next((m) => Object.assign(m.disks[0]!, { extra: 1 })),
        next((m) => (m.sites = [...m.sites, { name: 'site0' }])),
      ];
      for (const bad of invalidMaps) expect(await errorCodeOf(service.update(1, bad))).toBe('InvalidArgument');
      const viaChange = service.change((m) => {
        m.pools[0]!.pgCount = 3;
        return m;
      });
      expect(await errorCodeOf(viaChange)).toBe('InvalidArgument');
      expect(await service.current()).toEqual(before);
    });

    test('the map survives close and reopen', async () => {
      const service = await open();
      for (let i = 0; i < 5; i++) await service.change((m) => setDiskState(m, i, { in: false }));
      const last = await service.current();
      await service.close();
      const reopened = await harness!.reopen();
      expect(await reopened.current()).toEqual(last);
      expect((await reopened.change((m) => setDiskState(m, 5, { in: false }))).epoch).toBe(last.epoch + 1);
    });

    test.runIf(capabilities.singleOwner)('a second owner of the same storage is refused', async () => {
      const service = await open();
      expect(await errorCodeOf(harness!.openSecondOwner())).toBe('Locked');
      expect((await service.change((m) => setDiskState(m, 0, { up: false }))).epoch).toBe(2);
    });

    test('calls after close fail Closed', async () => {
      const service = await open();
      await service.close();
      expect(await errorCodeOf(service.current())).toBe('Closed');
      expect(await errorCodeOf(service.change((m) => m))).toBe('Closed');
      await service.close(); // idempotent
    });
  });
}
