/**
 * Failure reports between pg peers, in one process: the counting rules
 * (cluster/peer-reports.ts `accusation`: distinct hosts, reporters on the
 * target's host or down not counted, lapsed reports and reports older than
 * the target's last coming up not counted), and the map daemon's
 * LivenessMonitor acting on them (cluster/liveness.ts) on an embedded map
 * store with short timings: a disk reported by disks of two other hosts gets
 * its heartbeats refused (Fenced, naming the reporters) and is marked down
 * once a grace has passed since the last heartbeat that was granted a lease,
 * although it keeps heartbeating; it is not marked up while the reports
 * stand; withdrawn, its next heartbeat marks it up. Reports from one host
 * only (two disks there) refuse nothing; reports not refreshed lapse. The
 * report rpc through a map daemon answers the settings reporters use, and
 * the accused query (`tessera status`) names the disks refused and why.
 */
import { afterEach, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { isTesseraError } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import { EmbeddedMapStore } from '../cluster/map-store-embedded.js';
import { LivenessMonitor, resolveLiveness } from '../cluster/liveness.js';
import { connectMapService, startMapDaemon } from '../cluster/map-daemon.js';
import { addDisk, addHost, setDiskState } from '../cluster/map-edit.js';
import { accusation, accusations, decodeAccused, decodePeerReport, encodePeerReport, PeerReportOpcode, type HeldReport } from '../cluster/peer-reports.js';
import { sampleMap } from './helpers/map-service-conformance.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// sampleMap: host0 has disks 0,1; host1 2,3; host2 4,5.
const held = (targets: number[], o: { epoch?: number; expiresMs?: number } = {}): HeldReport => ({ epoch: o.epoch ?? 5, targets: new Set(targets), expiresMs: o.expiresMs ?? 1000 });

it('counts reports by distinct hosts, never from the target\'s host or from down disks, nor lapsed or older than its last coming up', () => {
  const map = setDiskState(sampleMap('rules'), 5, { up: false });
  const rule = (reports: Array<[number, HeldReport]>, o: { minDownReporters?: number; upFromEpoch?: number; nowMs?: number } = {}) =>
    accusation({ map, target: 0, reports: new Map(reports), nowMs: o.nowMs ?? 500, minDownReporters: o.minDownReporters ?? 2, upFromEpoch: o.upFromEpoch ?? 0 });
  expect(rule([[2, held([0])], [4, held([0])]])).toEqual({ accused: true, reporters: [2, 4], hosts: ['host1', 'host2'] });
  // Two disks of one host are one reporter host.
  expect(rule([[2, held([0])], [3, held([0])]])).toEqual({ accused: false, reporters: [2, 3], hosts: ['host1'] });
  expect(rule([[2, held([0])], [3, held([0])]], { minDownReporters: 1 }).accused).toBe(true);
  // The target's own host (disk 1) does not count; a down reporter (disk 5) does not count.
  expect(rule([[1, held([0])], [2, held([0])]])).toMatchObject({ accused: false, reporters: [2] });
  expect(rule([[5, held([0])], [2, held([0])]])).toMatchObject({ accused: false, reporters: [2] });
  // Lapsed, or made before the target last came up (epoch 7).
  expect(rule([[2, held([0])], [4, held([0], { expiresMs: 400 })]]).accused).toBe(false);
  expect(rule([[2, held([0], { epoch: 7 })], [4, held([0], { epoch: 6 })]], { upFromEpoch: 7 })).toMatchObject({ accused: false, reporters: [2] });
  // Reports of other disks do not count for this one; an unknown target is nobody's.
  expect(rule([[2, held([1])], [4, held([3])]]).reporters).toEqual([]);
  expect(accusation({ map, target: 99, reports: new Map([[2, held([99])], [4, held([99])]]), nowMs: 0, minDownReporters: 1, upFromEpoch: 0 }).accused).toBe(false);
});

it('accuses one side of a split, not both: reports from a disk already accused do not count', () => {
  // Two more hosts: host3 (disks 6,7), so that hosts {0,1} and {2,3} can be cut from each other.
  let map = sampleMap('split');
  map = addHost(map, { name: 'host3', rack: 'rack0' });
  for (const id of [6, 7]) map = addDisk(map, { id, host: 'host3', weight: 1, address: `127.0.0.1:${7000 + id}`, up: true });
  const side = (reporters: number[], targets: number[]): Array<[number, HeldReport]> => reporters.map((r) => [r, held(targets)]);
  const reports = new Map([...side([0, 1, 2, 3], [4, 5, 6, 7]), ...side([4, 5, 6, 7], [0, 1, 2, 3])]);
  const decide = (r: ReadonlyMap<number, HeldReport>) => accusations({ map, reports: r, nowMs: 500, minDownReporters: 2, upFromEpoch: () => 0 });
  // Every disk is reported by two hosts; the lowest ids go first, and their reports then count no more.
  expect([...decide(reports).keys()]).toEqual([0, 1, 2, 3]);
  expect(decide(reports).get(0)).toEqual({ accused: true, reporters: [4, 5, 6, 7], hosts: ['host2', 'host3'] });
  // One host cut from the three others: it alone is accused (its own reports of them come from one host).
  const one = new Map([...side([2, 3, 4, 5, 6, 7], [0, 1]), ...side([0, 1], [2, 3, 4, 5, 6, 7])]);
  expect([...decide(one).keys()]).toEqual([0, 1]);
  // The disk reported by more hosts goes first, whatever its id: 7 by three hosts; 0 by two, one of them 7's.
  const more = new Map([...side([0, 2, 4], [7]), ...side([7, 3], [0])]);
  expect([...decide(more).keys()]).toEqual([7]);
});

it('encodes reports within their limit; settings are validated', () => {
  const r = { reporter: 3, epoch: 12, targets: [0, 5, 7] };
  expect(decodePeerReport(encodePeerReport(r))).toEqual(r);
  const tooMany = Array.from({ length: limits.peerReportTargetsMax + 1 }, (_, i) => i + 10);
  expect(() => encodePeerReport({ reporter: 3, epoch: 1, targets: tooMany })).toThrow(/at most/);
  expect(() => decodePeerReport(encodePeerReport({ reporter: 3, epoch: 1, targets: [3] }))).toThrow(/reports itself/);
  expect(resolveLiveness({ downGraceMs: 3000 })).toMatchObject({ peerGraceMs: 3000, minDownReporters: limits.minDownReportersDefault });
  expect(() => resolveLiveness({ downGraceMs: 3000, heartbeatIntervalMs: 250, peerGraceMs: 400 })).toThrow(/peerGraceMs/);
  expect(() => resolveLiveness({ minDownReporters: 0 })).toThrow(/minDownReporters/);
});

async function fenced(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'granted';
  } catch (err) {
    if (isTesseraError(err, 'Fenced')) return err.message;
    throw err;
  }
}

it('refuses leases to a disk reported by two hosts, marks it down once its last lease ended, and up again once the reports are withdrawn', async () => {
  const dir = await makeTempDir('peer-reports');
  const store = await EmbeddedMapStore.open({ io, path: dir.path, create: sampleMap('peers') });
  cleanups.push(async () => (await store.close(), await dir.remove()));
  const downGraceMs = 600;
  const monitor = new LivenessMonitor(io, store, { downGraceMs, outIntervalMs: 60_000, heartbeatIntervalMs: 50, peerGraceMs: 200 });
  cleanups.push(() => monitor.close());
  // Every disk heartbeats all along, disk 0 too (it reaches the map daemon); refusals are counted.
  const refusals: string[] = [];
  let beating = true;
  const beats = (async () => {
    while (beating) {
      await Promise.all([0, 1, 2, 3, 4, 5].map(async (diskId) => {
        const outcome = await fenced(monitor.heartbeat({ diskId, epoch: 1, usedBytes: 1, totalBytes: 100 }));
        if (outcome !== 'granted') refusals.push(`${diskId}: ${outcome}`);
      }));
      await sleep(50);
    }
  })();
  cleanups.push(async () => ((beating = false), await beats));
  const up0 = async (): Promise<boolean> => (await store.current()).disks.find((d) => d.id === 0)!.up;
  const epoch = (await store.current()).epoch;

  // One host (disks 2 and 3 of host1) reporting: nothing refused, disk 0 stays up past the grace.
  expect(await monitor.peerReport({ reporter: 2, epoch, targets: [0] })).toEqual({ peerGraceMs: 200, pingIntervalMs: 50 });
  await monitor.peerReport({ reporter: 3, epoch, targets: [0] });
  await sleep(downGraceMs + 300);
  expect(refusals).toEqual([]);
  expect(await up0()).toBe(true);

  // A second host (disk 4) reports too: disk 0's heartbeats are refused, naming the reporters.
  const reportedMs = Date.now();
  const refresh = async (): Promise<void> => {
    for (const reporter of [2, 3, 4]) await monitor.peerReport({ reporter, epoch, targets: [0] });
  };
  await refresh();
  expect(await fenced(monitor.heartbeat({ diskId: 0, epoch, usedBytes: 1, totalBytes: 100 }))).toMatch(/reported unreachable by disks 2,3,4 \(hosts host1,host2\)/);
  // Reports refreshed (they lapse after peerReportTtlIntervals intervals otherwise) until disk 0 is marked down.
  while (await up0()) {
    if (Date.now() - reportedMs > 10_000) throw new Error('disk 0 not marked down 10 s after the reports');
    await refresh();
    await sleep(30);
  }
  // Not before a grace since its last granted heartbeat (which came before the reports).
  expect(Date.now() - reportedMs).toBeGreaterThanOrEqual(downGraceMs - 100);
  expect(monitor.accusedDisks().get(0)).toMatch(/disks 2,3,4/);
  // It keeps heartbeating but stays down while the reports stand.
  for (let i = 0; i < 8; i++) {
    await refresh();
    await sleep(50);
  }
  expect(await up0()).toBe(false);
  expect(refusals.every((r) => r.startsWith('0: '))).toBe(true);

  // Withdrawn (the reporters reach it again): its next heartbeat marks it up.
  for (const reporter of [2, 3, 4]) await monitor.peerReport({ reporter, epoch, targets: [] });
  const withdrawnMs = Date.now();
  while (!(await up0())) {
    if (Date.now() - withdrawnMs > 5000) throw new Error('disk 0 not marked up 5 s after the withdrawal');
    await sleep(20);
  }
  expect(monitor.accusedDisks().size).toBe(0);

  // Reports that are not refreshed lapse (after peerReportTtlIntervals intervals, and no sooner than the down
  // grace): disk 0's heartbeats are granted leases again without a withdrawal.
  const now = (await store.current()).epoch;
  await monitor.peerReport({ reporter: 2, epoch: now, targets: [0] });
  await monitor.peerReport({ reporter: 4, epoch: now, targets: [0] });
  expect(await fenced(monitor.heartbeat({ diskId: 0, epoch: now, usedBytes: 1, totalBytes: 100 }))).toMatch(/disks 2,4/);
  await sleep(limits.peerReportTtlIntervals * 50 + 100);
  expect(await fenced(monitor.heartbeat({ diskId: 0, epoch: now, usedBytes: 1, totalBytes: 100 })), 'still accused within the down grace').toMatch(/disks 2,4/);
  await sleep(Math.max(limits.peerReportTtlIntervals * 50, downGraceMs) + 200 - (limits.peerReportTtlIntervals * 50 + 100));
  expect(await fenced(monitor.heartbeat({ diskId: 0, epoch: now, usedBytes: 1, totalBytes: 100 }))).toBe('granted');
  expect(await up0()).toBe(true);
}, 30_000);

it('takes reports over rpc through a map daemon, answering the settings; refuses unknown reporters', async () => {
  const dir = await makeTempDir('peer-reports-rpc');
  const mapd = await startMapDaemon({ io, dir: dir.path, host: '127.0.0.1', port: 0, create: sampleMap('rpc'), liveness: { downGraceMs: 2000, peerGraceMs: 1500, minDownReporters: 1 } });
  cleanups.push(async () => (await mapd.close(), await dir.remove()));
  const conn = connectMapService(io, `127.0.0.1:${mapd.port}`);
  cleanups.push(() => conn.close());
  expect(await conn.peerReports.report({ reporter: 1, epoch: 1, targets: [] })).toEqual({ peerGraceMs: 1500, pingIntervalMs: 500 });
  await conn.peerReports.report({ reporter: 2, epoch: 1, targets: [0] });
  // minDownReporters 1: one host is enough.
  expect(await fenced(conn.liveness.heartbeat({ diskId: 0, epoch: 1, usedBytes: 1, totalBytes: 10 }))).toMatch(/disks 2 \(hosts host1\)/);
  // What `tessera status` asks each map daemon: the disks it refuses leases to, and who accuses them.
  const accused = decodeAccused((await conn.rpc.call(PeerReportOpcode.accused, Buffer.alloc(0), [], { timeoutMs: 5000 })).header);
  expect(accused).toEqual([{ diskId: 0, by: 'disks 2 (hosts host1)' }]);
  await expect(conn.peerReports.report({ reporter: 77, epoch: 1, targets: [0] })).rejects.toMatchObject({ code: 'NotFound' });
});
