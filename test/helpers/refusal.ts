/**
 * What the "one member's store refuses a write" cluster tests share
 * (test/cluster-replica-refusal, test/cluster-ec-refusal, test/cluster-toofull):
 * restarting a member with a capacity just above what its store holds,
 * sending a big write and small ones of one pg while that member is paused
 * until the primary has sent a version after the big one on, reading every
 * acknowledged write back, and reading one member's copy from its store.
 */
import { expect } from 'vitest';
import { TesseraClient } from '../../src/client/client.js';
import { setDiskState } from '../../cluster/map-edit.js';
import { isTesseraError } from '../../src/lib/errors.js';
import type { Eversion } from '../../src/protocol/osd-messages.js';
import { dataNs } from '../../src/daemon/pg-log.js';
import type { TestCluster } from './cluster.js';
import { startDaemonProcess } from './daemon-process.js';
import { listEveryPg, retryFor, sleep, waitFor } from './wait.js';

/** Restarts a disk's daemon (kill -9 first), with a capacity or its real one, and waits until every pg of the pools is active. */
export async function restartDisk(cluster: TestCluster, pools: readonly string[], diskId: number, capacityBytes?: number): Promise<void> {
  await cluster.killDisk(diskId);
  const map = `127.0.0.1:${cluster.mapd.port}`;
  cluster.daemons.set(diskId, await startDaemonProcess({ diskPath: cluster.diskDir(diskId), clusterId: 'testcluster', diskId, map, ...(capacityBytes !== undefined ? { capacityBytes } : {}) }));
  await cluster.mapd.service.change((m) => setDiskState(m, diskId, { up: true }));
  await retryFor(60_000, () => listEveryPg(cluster.client, pools));
}

/**
 * Restarts the disk with room for `headroomBytes` more than its store holds now (capacity = used + headroom + the
 * store's reserve of 4 MiB at this size), and checks the map does not call it full (so primaries still send to it).
 */
export async function restartNearlyFull(cluster: TestCluster, pools: readonly string[], diskId: number, headroomBytes: number): Promise<number> {
  const store = cluster.storeOf(diskId);
  const usedBytes = (await store.statfs()).usedBytes;
  await store.close();
  const capacityBytes = usedBytes + 4 * 1024 * 1024 + headroomBytes;
  await restartDisk(cluster, pools, diskId, capacityBytes);
  expect((await cluster.mapd.service.current()).disks.find((d) => d.id === diskId)?.space ?? 'ok').not.toBe('full');
  return capacityBytes;
}

/**
 * With `pausedDisk` stopped (SIGSTOP), sends the big write, then the small ones, waits until `sentOnAfterBig` says
 * the primary has sent a version after the big one's on to its members, resumes the disk, and settles every write
 * (big first). The client used gives up after 5 s per call, so a write the pg cannot take fails rather than waits.
 */
export async function writeWhilePaused(
  cluster: TestCluster,
  o: { pool: string; pausedDisk: number; big: [string, Buffer]; small: Array<[string, Buffer]>; sentOnAfterBig: { what: string; check: () => Promise<boolean> } },
): Promise<Array<PromiseSettledResult<Eversion>>> {
  const short = await TesseraClient.connect({ io: cluster.io, mapService: cluster.mapd.service, timeoutMs: 5000 });
  try {
    cluster.pauseDisk(o.pausedDisk);
    const bigWrite = short.put(o.pool, o.big[0], o.big[1]);
    await sleep(20);
    const smallWrites = o.small.map(([name, data]) => short.put(o.pool, name, data));
    await waitFor(o.sentOnAfterBig.what, 60_000, async () => ((await o.sentOnAfterBig.check()) ? true : undefined));
    cluster.resumeDisk(o.pausedDisk);
    return await Promise.allSettled([bigWrite, ...smallWrites]);
  } finally {
    cluster.resumeDisk(o.pausedDisk);
    await short.close();
  }
}

/** Reads every acknowledged write through the client (each pg's primary) and expects its bytes. */
export async function expectAcknowledged(client: TesseraClient, pool: string, acked: Map<string, Buffer>, when: string): Promise<void> {
  for (const [name, data] of acked) {
    const got = await client.read(pool, name).catch((err: unknown) => (isTesseraError(err) ? err.code : String(err)));
    expect(Buffer.isBuffer(got) && got.equals(data), `${when}: acknowledged ${name} (${data.length} bytes) read back ${Buffer.isBuffer(got) ? `${got.length} other bytes` : got}`).toBe(true);
  }
}

/** One disk's copy of an object of `pool`, read from its store directly: the bytes, or the error code. */
export async function copyOn(cluster: TestCluster, pool: string, diskId: number, name: string): Promise<Buffer | string> {
  const store = cluster.storeOf(diskId);
  try {
    return await store.read({ ns: dataNs(cluster.client.pool(pool).id, 0), name });
  } catch (err) {
    return isTesseraError(err) ? err.code : String(err);
  } finally {
    await store.close();
  }
}
