/**
 * A primary cut off from the map service and from the other hosts, but not
 * from a client that still holds the old map, is fenced by its lease
 * (src/daemon/lease.ts; issue 6, §5 Safety): no stale read, no acknowledged
 * write after the rest of the cluster moved on, and nothing acknowledged lost
 * once the partition heals.
 *
 * How: three hosts as network namespaces (test/helpers/netns.ts), one disk
 * each, the map service in the root namespace (short grace: 3 s, lease
 * 1.5 s), a replicated pool (size 3, min_size 2) and an erasure-coded one
 * (2+1). Objects whose pgs have disk 0 as primary are written; then
 * iptables rules in host 0's namespace drop its traffic to the other hosts
 * and to the map service's port, while the test process (root namespace, a
 * different port) still reaches it. Once the map marks disk 0 down (the
 * lease argument says its lease ended before that), the test's up-to-date
 * client overwrites an object through the new primary, and the old primary
 * is asked, with the old epoch, by raw rpc and by a client whose map is
 * frozen at the old epoch: every read and every write must be refused
 * (Unavailable), never answered with the old bytes or acknowledged. Then
 * the cut heals: disk 0 is marked up by its own heartbeat, its pgs come back
 * to it, and every acknowledged write reads back byte-exact, through the
 * client and from disk 0 as primary.
 *
 * Then the map service is killed -9 and restarted after longer than a lease:
 * every daemon's lease lapses, a write issued meanwhile waits (its primary
 * answers Unavailable, the client retries) and is acknowledged once the map
 * service is back; each daemon logs the lapse and the renewal.
 *
 * Skips loudly where namespaces or iptables are not available.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { objectToPg } from '../cluster/placement.js';
import type { ClusterMap } from '../cluster/map.js';
import type { MapService } from '../cluster/map-service.js';
import { TesseraClient } from '../src/client/client.js';
import { systemIo } from '../src/io/system.js';
import { isTesseraError, TesseraError } from '../src/lib/errors.js';
import { encodeOp, encodeRead, OsdOpcode } from '../src/protocol/osd-messages.js';
import { createTcpClient } from '../src/rpc/index.js';
import type { RpcClient } from '../src/rpc/types.js';
import { createNetnsLab, netnsSupport, type NetnsLab, type NetnsSupport } from './helpers/netns.js';
import { startFaultCluster, type FaultCluster } from './helpers/fault-cluster.js';
import { seededRng, testSeed } from './helpers/random.js';
import { listEveryPg, retryFor, sleep } from './helpers/wait.js';

const support: NetnsSupport = await netnsSupport();
const usable = support.ok && support.pairCuts;
if (!usable) {
  console.warn(`SKIPPED: test/cluster-partition.test.ts: ${support.ok ? 'iptables is not installed (scripts/system-deps.sh installs it)' : `network namespaces unavailable: ${support.reason}`}`);
}

const io = systemIo();
const REP = 'rep';
const EC = 'ec';
const DOWN_GRACE_MS = 3000;
const VICTIM = 0;
const KiB = 1024;
const seed = testSeed();
const rng = seededRng(seed);

/** A map service stuck at one epoch: a client that has not heard of anything since. */
function frozenMapService(map: ClusterMap): MapService {
  const refuse = (): Promise<never> => Promise.reject(new TesseraError('Unavailable', 'frozen map'));
  return { current: async () => map, update: refuse, change: refuse, watch: () => undefined, close: async () => undefined };
}

/** The error code a call failed with, or 'ok' (a write's acknowledgement; a read's bytes: 'ok' + what label says of them). */
async function outcome(call: Promise<unknown>, label: (value: unknown) => string = () => ''): Promise<string> {
  try {
    return `ok${label(await call)}`;
  } catch (err) {
    return isTesseraError(err) ? err.code : `thrown: ${(err as Error).message}`;
  }
}

describe.skipIf(!usable)('a partitioned primary is fenced by its lease', () => {
  let lab: NetnsLab;
  let cluster: FaultCluster;
  let raw: RpcClient;
  let frozen: TesseraClient | null = null;

  beforeAll(async () => {
    console.log(`cluster-partition seed: ${seed} (TESSERA_SEED=${seed} to replay)`);
    lab = await createNetnsLab({ hosts: 3 });
    cluster = await startFaultCluster({
      hosts: 3,
      disksPerHost: 1,
      lab,
      pools: [
        { name: REP, redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 8 },
        { name: EC, redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 }, failureDomain: 'host', pgCount: 4 },
      ],
      liveness: { downGraceMs: DOWN_GRACE_MS, outIntervalMs: 600_000, heartbeatIntervalMs: 250 },
      clientTimeoutMs: 60_000,
    });
  }, 90_000);

  afterAll(async () => {
    if (cluster && process.env.TESSERA_DEBUG) for (const id of cluster.diskIds) console.log(`--- disk ${id} stderr ---\n${cluster.stderrOf(id)}`);
    await frozen?.close().catch(() => undefined);
    await raw?.close().catch(() => undefined);
    await lab?.healAll().catch(() => undefined);
    await cluster?.stop();
    await lab?.remove();
  }, 60_000);

  const pgOf = (pool: string, name: string): number => objectToPg(cluster.client.pool(pool), name);
  const primaryOf = (pool: string, name: string): number => cluster.client.view.pg(cluster.client.pool(pool), pgOf(pool, name)).primary;
  /** Names (of a prefix) whose pg has disk `diskId` as primary in the client's map. */
  const namesWithPrimary = (pool: string, prefix: string, diskId: number, count: number): string[] => {
    const names: string[] = [];
    for (let i = 0; names.length < count; i++) if (primaryOf(pool, `${prefix}-${i}`) === diskId) names.push(`${prefix}-${i}`);
    return names;
  };
  const diskUp = async (diskId: number): Promise<boolean> => (await cluster.map.service.current()).disks.find((d) => d.id === diskId)?.up === true;

  /** Every disk up, every pg of both pools active (a full listing touches each pg's primary). */
  async function waitHealthy(): Promise<void> {
    await retryFor(90_000, async () => {
      const map = await cluster.client.view.refresh();
      if (!map.disks.every((d) => d.up)) throw new Error(`disks down: ${map.disks.filter((d) => !d.up).map((d) => d.id).join(',')}`);
      await listEveryPg(cluster.client, [REP, EC]);
    });
  }

  /** A read sent straight to disk `diskId`'s daemon as if by a client at `epoch`. */
  const rawRead = (epoch: number, pool: string, name: string): Promise<Buffer> =>
    raw.call(OsdOpcode.read, encodeRead({ epoch, poolId: cluster.client.pool(pool).id, pg: pgOf(pool, name), object: name, kind: 'data', options: {} }), [], { timeoutMs: 20_000, idempotent: true }).then((r) => r.payload);
  let rawSeq = 0;
  const rawWrite = (epoch: number, pool: string, name: string, data: Buffer): Promise<unknown> => {
    const { header, payload } = encodeOp({ epoch, poolId: cluster.client.pool(pool).id, pg: pgOf(pool, name), request: { client: 'ab'.repeat(16), seq: ++rawSeq }, object: name, ops: [{ type: 'writeFull', id: { ns: 0, name }, data }] });
    return raw.call(OsdOpcode.op, header, payload, { timeoutMs: 20_000 });
  };

  it('refuses every read and write once the rest of the cluster moved on, and loses nothing acknowledged', async () => {
    const { client } = cluster;
    await waitHealthy();
    // Acknowledged before the cut: objects of pgs disk 0 is primary of (and one elsewhere).
    const acked = new Map<string, { pool: string; data: Buffer }>();
    const put = async (pool: string, name: string, data: Buffer): Promise<{ epoch: number }> => {
      const version = await client.put(pool, name, data);
      acked.set(`${pool}/${name}`, { pool, data });
      return version;
    };
    const [repName, repOther] = namesWithPrimary(REP, 'rep', VICTIM, 2) as [string, string];
    const [ecName] = namesWithPrimary(EC, 'ec', VICTIM, 1) as [string];
    const [elsewhere] = namesWithPrimary(REP, 'far', 1, 1) as [string];
    const v1 = rng.bytes(24 * KiB + rng.int(8 * KiB));
    await put(REP, repName, v1);
    await put(REP, repOther, rng.bytes(8 * KiB));
    await put(EC, ecName, rng.bytes(100 * KiB + rng.int(50 * KiB)));
    await put(REP, elsewhere, rng.bytes(4 * KiB));
    const oldMap = client.view.map;
    const oldEpoch = oldMap.epoch;
    const victimAddress = client.view.address(VICTIM)!;
    const at = victimAddress.lastIndexOf(':');
    raw = createTcpClient({ io, host: victimAddress.slice(0, at), port: Number(victimAddress.slice(at + 1)) });
    expect((await rawRead(oldEpoch, REP, repName)).equals(v1), 'the primary serves while its lease holds').toBe(true);

    // The cut: host 0 loses the other hosts and the map service, not the test process.
    const mapPort = Number(cluster.mapAddress.slice(cluster.mapAddress.lastIndexOf(':') + 1));
    const others = [1, 2].filter((h) => h !== cluster.hostOf(VICTIM));
    await lab.cutHostFrom(cluster.hostOf(VICTIM), { hosts: others, rootPorts: [mapPort] });
    const cutAtMs = Date.now();
    while (await diskUp(VICTIM)) {
      if (Date.now() - cutAtMs > 60_000) throw new Error(`disk ${VICTIM} not marked down 60 s after the cut`);
      await sleep(50);
    }
    const markedDownMs = Date.now() - cutAtMs;
    // Marked down: by the lease argument its lease ended before this. Nothing is served from here on.
    expect(await outcome(rawRead(oldEpoch, REP, repName)), 'read at the old primary once it is marked down').toBe('Unavailable');
    expect(await outcome(rawRead(oldEpoch, EC, ecName)), 'EC read at the old primary once it is marked down').toBe('Unavailable');

    // The rest of the cluster moved on: a new primary takes a newer write.
    await client.view.refresh();
    expect(primaryOf(REP, repName)).not.toBe(VICTIM);
    const v2 = rng.bytes(24 * KiB + rng.int(8 * KiB));
    const v2Version = await put(REP, repName, v2);
    expect(v2Version.epoch, 'the newer write carries a newer epoch').toBeGreaterThan(oldEpoch);
    expect((await client.read(EC, ecName)).equals(acked.get(`${EC}/${ecName}`)!.data), 'EC object through the new primary (degraded)').toBe(true);
    const during = namesWithPrimary(REP, 'during', primaryOf(REP, repOther), 3);
    for (const name of during) await put(REP, name, rng.bytes(2 * KiB + rng.int(4 * KiB)));

    // The old primary, asked with the old map: no stale read, no acknowledgement, time after time.
    frozen = await TesseraClient.connect({ io, mapService: frozenMapService(oldMap), timeoutMs: 1500, retryBackoffMsMin: 50, retryBackoffMsMax: 200 });
    const refusals: Record<string, number> = {};
    const note = (what: string, code: string): void => {
      refusals[`${what} ${code}`] = (refusals[`${what} ${code}`] ?? 0) + 1;
    };
    const which = (bytes: unknown): string => ((bytes as Buffer).equals(v1) ? ' (v1: stale)' : (bytes as Buffer).equals(v2) ? ' (v2)' : ' (bytes of no version)');
    for (let round = 0; round < 5; round++) {
      note('raw read', await outcome(rawRead(oldEpoch, REP, repName), which));
      note('raw EC read', await outcome(rawRead(oldEpoch, EC, ecName)));
      note('raw write', await outcome(rawWrite(oldEpoch, REP, repOther, rng.bytes(1 * KiB))));
      note('frozen read', await outcome(frozen.read(REP, repName), which));
      note('frozen write', await outcome(frozen.put(REP, repName, rng.bytes(1 * KiB))));
    }
    expect(refusals).toEqual({ 'raw read Unavailable': 5, 'raw EC read Unavailable': 5, 'raw write Unavailable': 5, 'frozen read Unavailable': 5, 'frozen write Unavailable': 5 });
    expect(cluster.stderrOf(VICTIM)).toMatch(/primary lease lapsed/);

    // Healed: disk 0's heartbeat marks it up, its pgs come back to it, and it serves what was acknowledged.
    await lab.healAll();
    const healedAtMs = Date.now();
    while (!(await diskUp(VICTIM))) {
      if (Date.now() - healedAtMs > 60_000) throw new Error(`disk ${VICTIM} not marked up 60 s after the heal`);
      await sleep(50);
    }
    await waitHealthy();
    expect(primaryOf(REP, repName), 'the pg is back on its computed primary').toBe(VICTIM);
    const lost: string[] = [];
    for (const [key, { pool, data }] of acked) {
      const name = key.slice(pool.length + 1);
      if (!(await client.read(pool, name)).equals(data)) lost.push(key);
    }
    expect(lost, 'acknowledged writes not read back byte-exact').toEqual([]);
    // Straight from disk 0 at the current epoch: the newer write, not its old copy.
    let fromVictim: Buffer | null = null;
    for (let attempt = 0; fromVictim === null; attempt++) {
      try {
        fromVictim = await rawRead(client.view.epoch, REP, repName);
      } catch (err) {
        if (attempt > 100 || !isTesseraError(err) || !['Busy', 'Unavailable', 'StaleEpoch'].includes(err.code)) throw err;
        await sleep(100);
        await client.view.refresh();
      }
    }
    expect({ v2: fromVictim.equals(v2), v1: fromVictim.equals(v1) }, 'read at disk 0 after the heal').toEqual({ v2: true, v1: false });
    console.log(JSON.stringify({ case: 'partitioned-primary', seed, downGraceMs: DOWN_GRACE_MS, markedDownMs, acknowledged: acked.size, refusals }));
  }, 240_000);

  it('pauses client I/O while the map service restarts (every lease lapses), and resumes once it is back', async () => {
    const { client } = cluster;
    await waitHealthy();
    const name = 'during-map-restart';
    const data = rng.bytes(4 * KiB + rng.int(4 * KiB));
    const lapsedBefore = cluster.diskIds.map((id) => (cluster.stderrOf(id).match(/lease renewed after it lapsed/g) ?? []).length);
    // Down for longer than a lease (half the grace): every daemon's last answered heartbeat was sent before the kill.
    const startedMs = Date.now();
    const restarting = cluster.restartMap(DOWN_GRACE_MS);
    await sleep(DOWN_GRACE_MS / 2 + 500);
    const write = client.put(REP, name, data);
    await restarting;
    const mapBackMs = Date.now() - startedMs;
    await write;
    const ackedMs = Date.now() - startedMs;
    expect((await client.read(REP, name)).equals(data)).toBe(true);
    // Each daemon logged the lapse and the renewal (its heartbeats reach the restarted map service).
    const deadline = Date.now() + 30_000;
    for (;;) {
      const renewed = cluster.diskIds.map((id, i) => (cluster.stderrOf(id).match(/lease renewed after it lapsed/g) ?? []).length - lapsedBefore[i]!);
      if (renewed.every((n) => n >= 1)) break;
      if (Date.now() > deadline) throw new Error(`lease renewals after the map restart by disk: ${renewed.join(',')}`);
      await sleep(100);
    }
    await waitHealthy();
    console.log(JSON.stringify({ case: 'map-restart', downMs: DOWN_GRACE_MS, mapBackMs, writeAckedMs: ackedMs }));
  }, 120_000);
});
