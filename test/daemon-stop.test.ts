/**
 * A storage daemon's stop is bounded: on SIGTERM it closes cleanly, or, when
 * that takes longer than --stop-timeout-ms (a step waiting on a peer or the
 * map service), it says where it waited and exits with code 70 without a
 * clean close. Nothing acknowledged is lost by that: the store opens as
 * after a crash. Here the limit is 1 ms, so the clean close cannot finish in
 * time; the write acknowledged before reads back after a restart.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { setDiskState } from '../cluster/map-edit.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';
import { startDaemonProcess } from './helpers/daemon-process.js';
import { listEveryPg, retryFor } from './helpers/wait.js';

const POOL = 'rep';
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startTestCluster({
    hosts: 1,
    disksPerHost: 1,
    pools: [{ name: POOL, redundancy: { type: 'replicated', size: 1, minSize: 1 }, failureDomain: 'host', pgCount: 4 }],
  });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

async function startDisk0(extraArgs: string[] = []): Promise<void> {
  const map = `127.0.0.1:${cluster.mapd.port}`;
  cluster.daemons.set(0, await startDaemonProcess({ diskPath: cluster.diskDir(0), clusterId: 'testcluster', diskId: 0, map, extraArgs }));
  await cluster.mapd.service.change((m) => setDiskState(m, 0, { up: true }));
  await retryFor(60_000, () => listEveryPg(cluster.client, [POOL]));
}

it('a stop that takes longer than --stop-timeout-ms exits 70 saying where it waited; acknowledged writes survive', async () => {
  await cluster.killDisk(0);
  await startDisk0(['--stop-timeout-ms', '1']);
  const data = randomBytes(100_000);
  await cluster.client.put(POOL, 'kept', data);
  const daemon = cluster.daemons.get(0)!;
  const code = await daemon.stop();
  expect(code, daemon.stderr()).toBe(70);
  expect(daemon.stderr()).toMatch(/disk 0: not stopped 1 ms after the signal \(waiting in: .+\); exiting without a clean close/);
  await startDisk0();
  expect((await cluster.client.read(POOL, 'kept')).equals(data)).toBe(true);
  // A normal stop is clean: exit 0.
  expect(await cluster.daemons.get(0)!.stop()).toBe(0);
  await startDisk0();
}, 120_000);
