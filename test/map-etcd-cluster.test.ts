/**
 * The map service on a three-member etcd cluster on loopback ports
 * (test/helpers/etcd.ts), and several map service processes at once.
 *
 * It proves: killing the etcd leader (kill -9, by PID) does not stop the map
 * service: updates from two independent stores go on after the election and
 * both stores' watches reach the newest epoch, in order; losing a second
 * member (no quorum) makes calls fail Unavailable or Timeout within their
 * budget instead of hanging, and the service resumes once a member is back.
 * Then two map daemons serve the same cluster from etcd, one in this process
 * and one in a child process (dist/, so `npm run build` first): a change
 * made through either reaches the other's watchers, the pg history is shared,
 * and kill -9 of the child leaves the other serving.
 *
 * Every process started here is stopped by PID in afterAll, also on failure.
 * Without /usr/bin/etcd everything here is skipped with a loud warning.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';
import { connectMapService, startMapDaemon, type MapConnection, type MapDaemon } from '../cluster/map-daemon.js';
import { setDiskState } from '../cluster/map-edit.js';
import { EtcdMapStore } from '../cluster/map-store-etcd.js';
import { systemIo } from '../src/io/system.js';
import { skipWithoutEtcd, startEtcdCluster, type EtcdCluster } from './helpers/etcd.js';
import { errorCodeOf, sampleMap, waitFor } from './helpers/map-service-conformance.js';

const io = systemIo();
const skip = skipWithoutEtcd('etcd cluster map service tests (test/map-etcd-cluster.test.ts)');
const distMapDaemon = fileURLToPath(new URL('../dist/cluster/map-daemon.js', import.meta.url));
const distSystemIo = fileURLToPath(new URL('../dist/src/io/system.js', import.meta.url));

/** Closers run newest first, each once, also when a test failed. */
function closers(): { add: (close: () => Promise<unknown>) => void; runAll: () => Promise<void> } {
  const list: Array<() => Promise<unknown>> = [];
  return {
    add: (close) => list.push(close),
    async runAll() {
      while (list.length > 0) await list.pop()!().catch((err: unknown) => console.error('teardown:', err));
    },
  };
}

describe.skipIf(skip)('map service on a three-member etcd cluster', () => {
  let etcd: EtcdCluster | null = null;
  const open = closers();
  afterAll(async () => {
    await open.runAll();
    await etcd?.stop();
  });

  test('the leader killed: updates and watches go on; quorum lost: calls fail in time; quorum back: it resumes', async () => {
    etcd = await startEtcdCluster({ size: 3 });
    const endpoints = etcd.endpoints;
    const a = await EtcdMapStore.open({ io, endpoints, create: sampleMap('three'), callTimeoutMs: 20_000, watchResyncMs: 500 });
    open.add(() => a.close());
    const b = await EtcdMapStore.open({ io, endpoints, clusterId: 'three', callTimeoutMs: 20_000, watchResyncMs: 500 });
    open.add(() => b.close());
    const seenByA: number[] = [];
    const seenByB: number[] = [];
    const abort = new AbortController();
    open.add(async () => abort.abort());
    a.watch(0, (m) => seenByA.push(m.epoch), abort.signal);
    b.watch(0, (m) => seenByB.push(m.epoch), abort.signal);

    await a.change((m) => setDiskState(m, 0, { up: false }));
    await waitFor(() => seenByB.at(-1) === 2, 'b to see epoch 2');

    const leader = await etcd.leader();
    await leader.kill();
    expect((await a.change((m) => setDiskState(m, 1, { up: false }))).epoch).toBe(3);
    expect((await b.change((m) => setDiskState(m, 2, { up: false }))).epoch).toBe(4);
    await waitFor(() => seenByA.at(-1) === 4 && seenByB.at(-1) === 4, 'both watches to reach epoch 4', 20_000);
    expect((await b.current()).disks.slice(0, 3).map((d) => d.up)).toEqual([false, false, false]);

    // One member of three left: no quorum. A store with a short budget fails in time, not never.
    const second = etcd.members.find((m) => m !== leader && m.pid !== null)!;
    await second.kill();
    const c = await EtcdMapStore.open({ io, endpoints, clusterId: 'three', callTimeoutMs: 2_000 }).catch((err: unknown) => err);
    expect(c).toMatchObject({ code: expect.stringMatching(/^(Unavailable|Timeout)$/) });
    const started = Date.now();
    const during = await errorCodeOf(a.change((m) => setDiskState(m, 3, { up: false }), { signal: AbortSignal.timeout(3_000) }));
    expect(['Unavailable', 'Timeout', 'Aborted']).toContain(during);
    expect(Date.now() - started).toBeLessThan(10_000);

    await second.restart();
    expect((await a.change((m) => setDiskState(m, 4, { up: false }))).epoch).toBe(5);
    await waitFor(() => seenByA.at(-1) === 5 && seenByB.at(-1) === 5, 'both watches to reach epoch 5', 20_000);
    for (const seen of [seenByA, seenByB]) {
      expect([...seen].sort((x, y) => x - y)).toEqual(seen);
      expect(new Set(seen).size).toBe(seen.length);
    }
    await leader.restart();
    expect((await b.change((m) => setDiskState(m, 5, { up: false }))).epoch).toBe(6);
  });
});

interface ChildMapDaemon {
  port: number;
  pid: number;
  kill(): Promise<void>;
}

/** A map daemon on etcd in a child process (from dist/); prints {"listening":true,"port":N} when serving. */
async function startChildMapDaemon(endpoints: string[], clusterId: string): Promise<ChildMapDaemon> {
  for (const path of [distMapDaemon, distSystemIo]) if (!existsSync(path)) throw new Error(`${path} is missing: run npm run build first`);
  const script = `
    const { startMapDaemon } = await import(${JSON.stringify(distMapDaemon)});
    const { systemIo } = await import(${JSON.stringify(distSystemIo)});
    const mapd = await startMapDaemon({ io: systemIo(), etcd: { endpoints: JSON.parse(process.env.ETCD_ENDPOINTS), clusterId: process.env.CLUSTER_ID }, host: '127.0.0.1', port: 0 });
    process.stdout.write(JSON.stringify({ listening: true, port: mapd.port }) + '\\n');
    process.once('SIGTERM', () => mapd.close().then(() => process.exit(0)));`;
  const child: ChildProcess = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ETCD_ENDPOINTS: JSON.stringify(endpoints), CLUSTER_ID: clusterId },
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8192)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
    await exited;
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child map daemon not listening after 30 s: ${stderr}`)), 30_000);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (!line.includes('"listening"')) return;
        clearTimeout(timer);
        resolve((JSON.parse(line) as { port: number }).port);
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`child map daemon exited before listening: ${stderr}`));
      });
    });
    return { port, pid: child.pid!, kill };
  } catch (err) {
    await kill();
    throw err;
  }
}

describe.skipIf(skip)('several map daemons on one etcd', () => {
  let etcd: EtcdCluster | null = null;
  const open = closers();
  afterAll(async () => {
    await open.runAll();
    await etcd?.stop();
  });

  test('a change through either daemon reaches the other\'s watchers; kill -9 of one leaves the other serving', async () => {
    etcd = await startEtcdCluster({ size: 1 });
    const mapd: MapDaemon = await startMapDaemon({ io, etcd: { endpoints: etcd.endpoints }, host: '127.0.0.1', port: 0, create: sampleMap('multi') });
    open.add(() => mapd.close());
    const child = await startChildMapDaemon(etcd.endpoints, 'multi');
    open.add(() => child.kill());
    const here: MapConnection = connectMapService(io, `127.0.0.1:${mapd.port}`);
    open.add(() => here.close());
    const there: MapConnection = connectMapService(io, `127.0.0.1:${child.port}`);
    open.add(() => there.close());

    const seenHere: number[] = [];
    const seenThere: number[] = [];
    const abort = new AbortController();
    open.add(async () => abort.abort());
    here.service.watch(1, (m) => seenHere.push(m.epoch), abort.signal);
    there.service.watch(1, (m) => seenThere.push(m.epoch), abort.signal);

    expect((await there.service.change((m) => setDiskState(m, 0, { up: false }))).epoch).toBe(2);
    await waitFor(() => seenHere.at(-1) === 2, 'the in-process daemon\'s watcher to see epoch 2', 10_000);
    expect((await here.service.change((m) => setDiskState(m, 1, { up: false }))).epoch).toBe(3);
    await waitFor(() => seenThere.at(-1) === 3, 'the child daemon\'s watcher to see epoch 3', 10_000);

    await there.history.put(1, 3, null, { epoch: 3, acting: [0, 2, 4] });
    expect(await here.history.get(1, 3)).toEqual({ epoch: 3, acting: [0, 2, 4] });
    expect(await errorCodeOf(here.history.put(1, 3, null, { epoch: 4, acting: [1] }))).toBe('Conflict');

    await child.kill();
    expect((await here.service.change((m) => setDiskState(m, 2, { up: false }))).epoch).toBe(4);
    await waitFor(() => seenHere.at(-1) === 4, 'epoch 4 after the child was killed', 10_000);
    await here.history.put(1, 3, 3, { epoch: 4, acting: [1, 2, 4] });
    expect(await here.history.get(1, 3)).toEqual({ epoch: 4, acting: [1, 2, 4] });
  });
});
