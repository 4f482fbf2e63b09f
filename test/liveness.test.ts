/**
 * Failure detection and recovery pacing in one process: the map daemon's
 * LivenessMonitor (cluster/liveness.ts) on an embedded map store with short
 * timings and heartbeats sent by hand (down after the grace, out after the
 * interval, up and in again on a heartbeat, space states from the reported
 * bytes, disks never seen up left in, options validated); the heartbeat rpc
 * through a map daemon; the optional `space` field of the map (canonical
 * bytes unchanged without it); the primary lease
 * (src/daemon/lease.ts): held until a heartbeat's send time + leaseMs, never
 * shortened, logged when it lapses and comes back, renewed by a reply naming
 * a newer map only once the daemon holds it, unfenced with an older map daemon.
 */
import { afterEach, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { EmbeddedMapStore } from '../cluster/map-store-embedded.js';
import { decodeReply, LivenessMonitor, resolveLiveness, spaceState } from '../cluster/liveness.js';
import { heartbeatTimeoutMs, PrimaryLease, startHeartbeats } from '../src/daemon/lease.js';
import type { MapView } from '../cluster/map-view.js';
import { connectMapService, startMapDaemon } from '../cluster/map-daemon.js';
import { addDisk, nextEpoch, setDiskSpace, setDiskState } from '../cluster/map-edit.js';
import { decodeMap, encodeMap } from '../cluster/map-codec.js';
import { checkMap } from '../cluster/map-check.js';
import { sampleMap } from './helpers/map-service-conformance.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function openStore() {
  const dir = await makeTempDir('liveness');
  const store = await EmbeddedMapStore.open({ io, path: dir.path, create: sampleMap('live') });
  cleanups.push(async () => (await store.close(), await dir.remove()));
  return store;
}

it('marks a silent disk down after the grace and out after the interval; a heartbeat brings it back up and in', async () => {
  const store = await openStore();
  const monitor = new LivenessMonitor(io, store, { downGraceMs: 300, outIntervalMs: 400, heartbeatIntervalMs: 50 });
  cleanups.push(() => monitor.close());
  // Disks 0-4 heartbeat; disk 5 falls silent.
  let beating = true;
  const beats = (async () => {
    while (beating) {
      await Promise.all([0, 1, 2, 3, 4].map((diskId) => monitor.heartbeat({ diskId, epoch: 1, usedBytes: 10, totalBytes: 100 })));
      await sleep(50);
    }
  })();
  cleanups.push(async () => ((beating = false), await beats));
  const t0 = Date.now();
  const down = await until('down', async () => ((await store.current()).disks.find((d) => d.id === 5)!.up ? undefined : Date.now() - t0));
  expect(down).toBeGreaterThanOrEqual(250);
  const out = await until('out', async () => ((await store.current()).disks.find((d) => d.id === 5)!.in ? undefined : Date.now() - t0));
  expect(out).toBeGreaterThanOrEqual(650);
  const map = await store.current();
  expect(map.disks.filter((d) => d.id !== 5).every((d) => d.up && d.in)).toBe(true);
  // It comes back: one heartbeat marks it up and in (the monitor marked it out), with its space state.
  const reply = await monitor.heartbeat({ diskId: 5, epoch: map.epoch, usedBytes: 90, totalBytes: 100 });
  expect(reply.heartbeatIntervalMs).toBe(50);
  const back = (await store.current()).disks.find((d) => d.id === 5)!;
  expect(back).toMatchObject({ up: true, in: true, space: 'nearFull' });
  expect(reply.epoch).toBe((await store.current()).epoch);
  await monitor.heartbeat({ diskId: 5, epoch: reply.epoch, usedBytes: 96, totalBytes: 100 });
  expect((await store.current()).disks.find((d) => d.id === 5)!.space).toBe('full');
  await monitor.heartbeat({ diskId: 5, epoch: reply.epoch, usedBytes: 10, totalBytes: 100 });
  expect((await store.current()).disks.find((d) => d.id === 5)!.space).toBeUndefined();
});

it('leaves in a disk it never saw up, and out a disk an operator marked out', async () => {
  const store = await openStore();
  await store.change((m) => setDiskState(addDisk(m, { id: 9, host: 'host0', weight: 1, address: '127.0.0.1:7009', up: false, in: true }), 4, { in: false }));
  const monitor = new LivenessMonitor(io, store, { downGraceMs: 100, outIntervalMs: 100, heartbeatIntervalMs: 20 });
  cleanups.push(() => monitor.close());
  await sleep(600);
  const map = await store.current();
  expect(map.disks.find((d) => d.id === 9)).toMatchObject({ up: false, in: true });
  // Disk 4 (marked out by an operator) heartbeats: up again, but it stays out.
  await monitor.heartbeat({ diskId: 4, epoch: map.epoch, usedBytes: 0, totalBytes: 100 });
  expect((await store.current()).disks.find((d) => d.id === 4)).toMatchObject({ up: true, in: false });
  await expect(monitor.heartbeat({ diskId: 77, epoch: 1, usedBytes: 0, totalBytes: 1 })).rejects.toMatchObject({ code: 'NotFound' });
});

it('with several map daemons a heartbeat times out, and the next goes to another map daemon, before the lease ends', () => {
  for (const downGraceMs of [400, 3000, 4000, 20_000, 120_000]) {
    const { heartbeatIntervalMs: intervalMs, leaseMs } = resolveLiveness({ downGraceMs });
    const timeoutMs = heartbeatTimeoutMs(intervalMs, leaseMs, 2);
    // The heartbeat after the last answered one is sent an interval later; it times out; the retry comes a quarter interval after.
    expect(intervalMs + timeoutMs + Math.max(20, Math.floor(intervalMs / 4)), `grace ${downGraceMs}`).toBeLessThan(leaseMs);
    expect(heartbeatTimeoutMs(intervalMs, leaseMs, 1)).toBe(Math.min(5_000, leaseMs));
  }
});

it('validates its options', () => {
  expect(resolveLiveness()).toEqual({ downGraceMs: 20_000, outIntervalMs: 600_000, heartbeatIntervalMs: 5_000, leaseMs: 10_000, nearFullRatio: 0.85, fullRatio: 0.95, peerGraceMs: 20_000, minDownReporters: 2 });
  expect(() => resolveLiveness({ downGraceMs: 100, heartbeatIntervalMs: 80 })).toThrow(/at most half/);
  // A lease must end before the disk can be marked down, and outlast two heartbeat intervals.
  expect(() => resolveLiveness({ downGraceMs: 1000, leaseMs: 800 })).toThrow(/leaseMs 800/);
  expect(() => resolveLiveness({ downGraceMs: 1000, leaseMs: 300, heartbeatIntervalMs: 200 })).toThrow(/at most half of leaseMs/);
  expect(resolveLiveness({ downGraceMs: 1000, leaseMs: 750, heartbeatIntervalMs: 250 }).leaseMs).toBe(750);
  expect(() => resolveLiveness({ nearFullRatio: 0.9, fullRatio: 0.8 })).toThrow(/nearFullRatio/);
  expect(() => resolveLiveness({ outIntervalMs: 0 })).toThrow(/must be > 0/);
  expect(spaceState(0, 0, { nearFullRatio: 0.5, fullRatio: 0.9 })).toBeUndefined();
  expect(spaceState(95, 100, { nearFullRatio: 0.85, fullRatio: 0.95 })).toBe('full');
});

it('heartbeats travel over the map daemon rpc', async () => {
  const dir = await makeTempDir('liveness-rpc');
  const mapd = await startMapDaemon({ io, dir: dir.path, host: '127.0.0.1', port: 0, create: sampleMap('rpc'), liveness: { downGraceMs: 2000, heartbeatIntervalMs: 100 } });
  const conn = connectMapService(io, `127.0.0.1:${mapd.port}`);
  cleanups.push(async () => (await conn.close(), await mapd.close(), await dir.remove()));
  await mapd.service.change((m) => setDiskState(m, 2, { up: false }));
  const reply = await conn.liveness.heartbeat({ diskId: 2, epoch: 1, usedBytes: 1, totalBytes: 2 });
  expect(reply.heartbeatIntervalMs).toBe(100);
  expect(reply.leaseMs, 'half the grace').toBe(1000);
  expect((await mapd.service.current()).disks.find((d) => d.id === 2)).toMatchObject({ up: true });
  // A map daemon that grants no lease (an older one: two fields) reads as no lease.
  expect(decodeReply(Buffer.from([100, 7]))).toEqual({ heartbeatIntervalMs: 100, epoch: 7 });
});

it('the map carries a disk space state only when set: canonical bytes unchanged without it', () => {
  const m = sampleMap('spacemap');
  const bytes = encodeMap(m);
  expect(bytes.toString()).not.toContain('"space"');
  const full = nextEpoch(m, (d) => setDiskSpace(d, 3, 'full'));
  expect(decodeMap(encodeMap(full)).disks.find((d) => d.id === 3)!.space).toBe('full');
  const cleared = nextEpoch(full, (d) => setDiskSpace(d, 3, undefined));
  expect(encodeMap({ ...cleared, epoch: m.epoch })).toEqual(bytes);
  expect(setDiskSpace(m, 3, undefined)).toBe(m); // nothing changes: same map
  expect(() => checkMap({ ...m, disks: m.disks.map((d) => ({ ...d, space: 'empty' })) })).toThrow(/nearFull/);
});

it('a primary lease holds until its heartbeat\'s send time + leaseMs, never shortened, and is logged when it lapses and comes back', () => {
  let nowMs = 1000;
  const logs: string[] = [];
  const lease = new PrimaryLease({ monotonicMs: () => nowMs }, (m) => logs.push(m), true);
  expect(lease.holds(), 'none granted yet').toBe(false);
  expect(() => lease.check()).toThrow(/lease lapsed/);
  lease.renew(900, 500); // sent at 900: holds until 1400
  expect(lease.holds()).toBe(true);
  lease.renew(800, 500); // an older heartbeat's late reply shortens nothing
  nowMs = 1350;
  expect(lease.holds()).toBe(true);
  nowMs = 1400;
  expect(lease.holds()).toBe(false);
  let code = '';
  try {
    lease.check();
  } catch (err) {
    code = (err as { code: string }).code;
  }
  expect(code, 'clients retry it').toBe('Unavailable');
  expect([lease.lapses, lease.refusals]).toEqual([2, 2]);
  lease.noticeLapse();
  expect(lease.lapses, 'one lapse is noticed once').toBe(2);
  lease.renew(1450, 500);
  nowMs = 1500;
  expect(lease.holds()).toBe(true);
  expect(logs.filter((l) => l.includes('renewed'))).toHaveLength(2);
  // Not enforced: no heartbeats, or a map daemon that grants none.
  const open = new PrimaryLease({ monotonicMs: () => nowMs }, () => undefined, false);
  expect(open.holds()).toBe(true);
  lease.unfenced();
  expect(lease.holds()).toBe(true);
});

it('a heartbeat reply naming a newer map renews the lease only once the daemon holds that map', async () => {
  const run = async (o: { replyEpoch: number; reachable: number; leaseMs?: number }): Promise<{ holds: boolean; epoch: number; logs: string[] }> => {
    let epoch = 3;
    const view = { get epoch() { return epoch; }, refresh: async () => { epoch = Math.max(epoch, o.reachable); } } as unknown as MapView;
    const logs: string[] = [];
    const lease = new PrimaryLease(io.clock, (m) => logs.push(m), true);
    const stop = new AbortController();
    const reporter = { heartbeat: async () => ({ heartbeatIntervalMs: 20, epoch: o.replyEpoch, ...(o.leaseMs !== undefined ? { leaseMs: o.leaseMs } : {}) }) };
    const { firstReply, stopped } = startHeartbeats({ io, reporter, lease, view, diskId: 1, space: () => ({ usedBytes: 0, totalBytes: 1 }), refreshSpace: () => undefined, signal: stop.signal, log: () => undefined });
    await firstReply;
    const holds = lease.holds();
    stop.abort();
    await stopped;
    return { holds, epoch, logs };
  };
  // Marked down (and up) while cut off: the reply names epoch 5; the daemon may not serve before it holds it.
  expect(await run({ replyEpoch: 5, reachable: 4, leaseMs: 60_000 })).toMatchObject({ holds: false, epoch: 4 });
  expect(await run({ replyEpoch: 5, reachable: 5, leaseMs: 60_000 })).toMatchObject({ holds: true, epoch: 5 });
  expect(await run({ replyEpoch: 2, reachable: 3, leaseMs: 60_000 })).toMatchObject({ holds: true, epoch: 3 });
  // An older map daemon grants no lease: served unfenced, and said so.
  const unfenced = await run({ replyEpoch: 3, reachable: 3 });
  expect(unfenced.holds).toBe(true);
  expect(unfenced.logs.join('\n')).toMatch(/grants no primary lease/);
});
