/**
 * What a heartbeat costs etcd, and that the cheaper refresh keeps the
 * guarantee cluster/liveness.ts's lease argument needs (cluster/liveness-etcd.ts):
 * a disk's record, present at the refresh's revision, lives at least a TTL
 * after the refresh; and a present record is never moved to another lease.
 *
 * How: one etcd member (test/helpers/etcd.ts), the map in it, two map
 * daemons' liveness records (x and y, each with its own etcd client) in this
 * process. Counted from etcd's own /metrics around the refreshes: raft
 * proposals committed, leases granted and renewed (keepalives), puts and
 * transactions; the figures are printed. Checked with etcd's lease API: the
 * record's lease, and its TTL left, before and after a refresh. A keepalive
 * answered as an etcd 3.4 leader already replaced would (TTL given, nothing
 * renewed, an older raft term in its header: the client's keepalive call is
 * replaced once) is not taken for a renewal: the record's lease is extended
 * at that refresh all the same. And the settings every map daemon must share
 * name the record protocol, so one from before (settings stored without it)
 * and a new one do not mix.
 *
 * Skips loudly without /usr/bin/etcd; etcd is stopped in afterAll.
 */
import { EventEmitter } from 'node:events';
import { afterAll, describe, expect, test } from 'vitest';
import { EtcdClient } from '../cluster/etcd-client.js';
import { EtcdLivenessRecords } from '../cluster/liveness-etcd.js';
import { addDisk, addHost, addRack, addSite, initialMap } from '../cluster/map-edit.js';
import { EtcdMapStore } from '../cluster/map-store-etcd.js';
import type { ClusterMap } from '../cluster/map.js';
import { systemIo } from '../src/io/system.js';
import { skipWithoutEtcd, startEtcdCluster, type EtcdCluster } from './helpers/etcd.js';
import { sleep } from './helpers/wait.js';

const io = systemIo();
const skip = skipWithoutEtcd('etcd liveness refresh cost (test/liveness-etcd-refresh.test.ts)');
const TTL_SECONDS = 60;
const REFRESHES = 20;
const COUNTED = ['etcd_server_proposals_committed_total', 'etcd_debugging_lease_granted_total', 'etcd_debugging_lease_renewed_total', 'etcd_mvcc_put_total', 'etcd_mvcc_txn_total', 'etcd_mvcc_range_total'];

function clusterMap(): ClusterMap {
  let m = addRack(addSite(initialMap({ clusterId: 'refresh' }), { name: 's' }), { name: 'r', site: 's' });
  m = addHost(m, { name: 'h0', rack: 'r' });
  for (let d = 0; d < 3; d++) m = addDisk(m, { id: d, host: 'h0', weight: 1, address: `127.0.0.1:${7000 + d}`, up: true, in: true });
  return m;
}

/** The counters of COUNTED from etcd's /metrics (0 when absent). */
async function counters(clientUrl: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${clientUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const name of COUNTED) {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    out[name] = line ? Number(line.slice(name.length + 1)) : 0;
  }
  return out;
}

describe.skipIf(skip)('a heartbeat refresh on etcd', () => {
  let etcd: EtcdCluster | null = null;
  const closers: Array<() => Promise<unknown>> = [];
  afterAll(async () => {
    while (closers.length > 0) await closers.pop()!().catch((err: unknown) => console.error('teardown:', err));
    await etcd?.stop();
  });

  test('costs no etcd write once the record exists, extends its lease, and never moves a present record to another lease', async () => {
    etcd = await startEtcdCluster({ size: 1 });
    const url = etcd.endpoints[0]!;
    const open = async (identity: string): Promise<{ records: EtcdLivenessRecords; client: EtcdClient }> => {
      const client = new EtcdClient({ io, endpoints: etcd!.endpoints });
      closers.push(() => client.close());
      const store = await EtcdMapStore.open({ io, client, create: clusterMap() });
      closers.push(() => store.close());
      const records = new EtcdLivenessRecords({ client, store, keyPrefix: '/tessera', ttlSeconds: TTL_SECONDS, identity });
      closers.push(() => records.close());
      return { records, client };
    };
    const x = await open('x');
    const y = await open('y');
    const key = '/tessera/refresh/liveness/alive/1';
    const record = async (): Promise<{ lease: string; modRevision: string } | null> => {
      const res = await x.client.run('test', undefined, (call) => x.client.etcd.get(key).options(call).exec());
      const kv = res.kvs[0];
      return kv ? { lease: kv.lease, modRevision: kv.mod_revision } : null;
    };
    const ttlLeft = async (lease: string): Promise<number> =>
      Number((await x.client.run('test', undefined, (call) => x.client.etcd.leaseClient.leaseTimeToLive({ ID: lease }, call))).TTL);

    // The first refresh creates the record; count the ones after it.
    await x.records.refresh(1);
    const first = await record();
    expect(first).not.toBeNull();
    const before = await counters(url);
    for (let i = 0; i < REFRESHES; i++) await x.records.refresh(1);
    const after = await counters(url);
    const perRefresh = Object.fromEntries(COUNTED.map((n) => [n, (after[n]! - before[n]!) / REFRESHES]));
    console.log(`etcd per heartbeat refresh (${REFRESHES} refreshes of an existing record): ${JSON.stringify(perRefresh)}`);
    expect(perRefresh['etcd_server_proposals_committed_total']).toBe(0);
    expect(perRefresh['etcd_debugging_lease_granted_total']).toBe(0);
    expect(perRefresh['etcd_debugging_lease_renewed_total']).toBe(1);
    // Same lease, record not rewritten.
    expect(await record()).toEqual(first);

    // A refresh extends the record's lease: less than the TTL left after a wait, the full TTL again after the refresh.
    await sleep(3000);
    const waited = await ttlLeft(first!.lease);
    expect(waited).toBeLessThan(TTL_SECONDS - 1);
    await x.records.refresh(1);
    expect(await ttlLeft(first!.lease)).toBeGreaterThan(waited);

    // Another map daemon's refresh keeps the record on the lease it has (never moved to a lease of its own).
    await y.records.refresh(1);
    expect(await record()).toEqual(first);

    // The record's lease gone (as if it expired): the next refresh, by x whose lease it was, makes a new record.
    await x.client.run('test', undefined, (call) => x.client.etcd.leaseClient.leaseRevoke({ ID: first!.lease }, call));
    expect(await record()).toBeNull();
    await x.records.refresh(1);
    const second = await record();
    expect(second).not.toBeNull();
    expect(second!.lease).not.toBe(first!.lease);
    // y still remembers the first lease: it finds it gone, finds the record on the new one, and keeps that one alive.
    await y.records.refresh(1);
    expect(await record()).toEqual(second);
    expect(await ttlLeft(second!.lease)).toBeGreaterThan(TTL_SECONDS - 10);
  }, 120_000);

  test('a keepalive answered by an etcd leader already replaced (etcd 3.4) is not taken for a renewal', async () => {
    etcd ??= await startEtcdCluster({ size: 1 });
    const client = new EtcdClient({ io, endpoints: etcd.endpoints });
    closers.push(() => client.close());
    const store = await EtcdMapStore.open({ io, client, create: { ...clusterMap(), clusterId: 'deposed' } });
    closers.push(() => store.close());
    const records = new EtcdLivenessRecords({ client, store, keyPrefix: '/tessera', ttlSeconds: TTL_SECONDS, identity: 'x' });
    closers.push(() => records.close());
    const key = '/tessera/deposed/liveness/alive/1';
    await records.refresh(1);
    const got = await client.run('test', undefined, (call) => client.etcd.get(key).options(call).exec());
    const lease = got.kvs[0]!.lease;
    const term = BigInt(got.header.raft_term);
    const ttlLeft = async (): Promise<number> => Number((await client.run('test', undefined, (call) => client.etcd.leaseClient.leaseTimeToLive({ ID: lease }, call))).TTL);
    await sleep(3000);
    const waited = await ttlLeft();
    expect(waited).toBeLessThan(TTL_SECONDS - 1);
    // The next keepalive is answered as a leader of an older term would, in its memory only: TTL given, nothing renewed
    // in the etcd that counts (the test's stand-in for a 3.4 leader replaced but not stepped down). Later ones are real.
    const leaseClient = client.etcd.leaseClient;
    const real = leaseClient.leaseKeepAlive.bind(leaseClient);
    let deposedAnswers = 0;
    leaseClient.leaseKeepAlive = (async (...args: Parameters<typeof real>) => {
      if (deposedAnswers > 0) return real(...args);
      deposedAnswers++;
      const stream = new EventEmitter() as EventEmitter & { write(req: { ID: string }): void; end(): void };
      stream.write = (req) => setImmediate(() => stream.emit('data', { ID: req.ID, TTL: String(TTL_SECONDS), header: { ...got.header, raft_term: String(term - 1n) } }));
      stream.end = () => undefined;
      return stream;
    }) as unknown as typeof leaseClient.leaseKeepAlive;
    try {
      await records.refresh(1);
    } finally {
      leaseClient.leaseKeepAlive = real;
    }
    expect(deposedAnswers).toBe(1);
    // The record's lease really was extended at this refresh (its TTL is whole again), not left to the vain renewal.
    expect(await ttlLeft()).toBeGreaterThan(waited + 1);
  }, 60_000);

  test('a map daemon refuses to serve beside one that refreshes records the older way (grant and put)', async () => {
    etcd ??= await startEtcdCluster({ size: 1 });
    const client = new EtcdClient({ io, endpoints: etcd.endpoints });
    closers.push(() => client.close());
    const store = await EtcdMapStore.open({ io, client, create: { ...clusterMap(), clusterId: 'older' } });
    closers.push(() => store.close());
    const records = new EtcdLivenessRecords({ client, store, keyPrefix: '/tessera', ttlSeconds: 20, identity: 'new' });
    closers.push(() => records.close());
    const settings = { downGraceMs: 20_000, outIntervalMs: 600_000, heartbeatIntervalMs: 5000, leaseMs: 10_000 };
    // What a map daemon from before stored: the same settings, without the record protocol.
    await client.run('test', undefined, (call) => client.etcd.put('/tessera/older/liveness/settings').value(JSON.stringify(settings)).options(call).exec());
    await expect(records.agreeOnSettings(settings)).rejects.toMatchObject({ code: 'InvalidArgument' });
  }, 60_000);
});
