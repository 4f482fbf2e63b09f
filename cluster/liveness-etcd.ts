/**
 * Liveness shared through etcd (cluster/liveness.ts's `LivenessRecords`), so
 * that any number of map daemons on one etcd judge every disk together:
 *
 *   <prefix>/<clusterId>/liveness/alive/<diskId>   a disk's record, attached to an etcd lease of TTL ttlSeconds
 *   <prefix>/<clusterId>/liveness/out/<diskId>     the judge marked this disk out (a heartbeat marks it in again)
 *   <prefix>/<clusterId>/liveness/leader           the judge: the one map daemon that marks disks down and out
 *   <prefix>/<clusterId>/liveness/reports/<diskId> a reporter's peer failure reports (cluster/peer-reports.ts), on an etcd lease of the report TTL
 *
 * - Refresh (every heartbeat, by whichever map daemon received it), after
 *   the heartbeat was received:
 *   - the record exists on lease L (the one this map daemon saw it on last):
 *     keep L alive (etcd sets its expiry to now + TTL), then one read-only
 *     transaction: if the record is still on L (compare Lease == L), read
 *     the map key's mod revision; else read the record, and start over with
 *     the lease it is on.
 *   - no record: grant a new lease G, then one transaction: if the record
 *     does not exist (Create == 0), put it on G and read the map key's mod
 *     revision; else read it and keep its lease alive as above.
 *   A present record is never put again, so never moved to another lease:
 *   it lives exactly as long as the lease it was created on, which every
 *   refresh extends. So a record found on L at revision Q (after L's
 *   keepalive, or created at Q on a G granted after the receipt) stays
 *   present until at least (that keepalive or grant) + TTL on the etcd
 *   leader's clock (a leader change only extends leases; an expired lease
 *   cannot be kept alive, etcd answers TTL 0). The epoch answered is the
 *   map's at Q or later. cluster/liveness.ts uses both for its lease
 *   argument. A keepalive, unlike a grant, is not a raft proposal: etcd
 *   3.5.3+ confirms leadership before a renew (etcd PR 13690); 3.4
 *   (Debian's 3.4.23 here) may renew on a leader already replaced, in its
 *   memory only, until it steps down (later still when its raft loop is
 *   stuck: slow fdatasync, starved CPU), and the new leader, which extended
 *   every lease by an election timeout when it took over (etcd PR 4778),
 *   never learns of that renewal. So the transaction's raft term must be
 *   the keepalive's, else the round is repeated: both headers carry the
 *   term of the last entry the answering member applied (the keepalive's
 *   taken before the renewal), and a linearizable read has applied at least
 *   the first entry of the leader that confirmed it. A renewal in vain
 *   needs a leader that took over (applied its first entry) before it; the
 *   read after it then shows that leader's term or a later one, while the
 *   keepalive's header shows an older one (the old leader's own, or that of
 *   a follower that forwarded it to the old leader). Equal terms: no leader
 *   took over before the renewal, and any later one extends the lease from
 *   after it. Cost, once the record exists: a keepalive (answered by the
 *   etcd leader from memory: no raft proposal) and a read-only transaction
 *   (a linearizable read): no etcd write, where a grant and a put (two raft
 *   proposals) were needed before (test/liveness-etcd-refresh.test.ts counts
 *   them from etcd's metrics). All map daemons of a cluster must refresh
 *   this way: an older one, which replaced records on fresh leases when the
 *   record's mod revision preceded its grant, could move a record kept alive
 *   here onto a lease granted before that keepalive, which expires sooner.
 *   So the settings they agree on (agreeOnSettings) name the record
 *   protocol: an older map daemon and this one refuse to serve together.
 * - The judge: a campaign creates the leader key (if absent) attached to a
 *   lease of its own (TTL ttlSeconds), kept alive at every check; losing it
 *   (expired: this map daemon was cut off or stalled) ends the leadership. The
 *   judge's map changes compare, in the transaction that stores the map, that
 *   the leader key is still attached to its lease and that the record of
 *   every disk marked down is absent: a deposed judge, or a disk whose
 *   heartbeat came in meanwhile, makes the change fail (nothing stored).
 *   close() revokes the judge's lease so another map daemon takes over at
 *   once; after kill -9 it takes over within ttlSeconds.
 *
 * - Peer failure reports: whichever map daemon receives a reporter's set
 *   stores it under the reporter's key (JSON {epoch, targets}) on a fresh
 *   etcd lease whose TTL is the report's (rounded up to whole seconds), or
 *   deletes the key for an empty set; every map daemon reads them all at
 *   each check. They only decide whether a disk's heartbeats are refused
 *   (its record then not refreshed); a mark down still needs its record
 *   absent, so they change nothing in the lease argument above. Reports
 *   exist only while disks are reported: a grant and a put per reporter and
 *   heartbeat interval then, nothing otherwise.
 *
 * Bounds: a refresh makes at most refreshAttemptsMax rounds (a keepalive or
 * a grant, then a transaction; repeated when etcd's leader changed between
 * the two); the leases remembered are one per disk
 * heard; `present` reads keys only, one per disk of the cluster; every call
 * is bounded by the EtcdClient's budget.
 */
import type { ILeaseKeepAliveResponse } from 'etcd3';
import { castGrpcError } from 'etcd3';
import { TesseraError, notFound } from '../src/lib/errors.js';
import type { EtcdAttempt, EtcdClient } from './etcd-client.js';
import type { LivenessRecords } from './liveness.js';
import type { PeerReport } from './peer-reports.js';
import { limits } from '../src/lib/limits.js';
import type { MapEdit } from './map-service.js';
import { isGuardFailure, type EtcdMapStore } from './map-store-etcd.js';
import type { ClusterMap } from './map.js';

/** Rounds of a refresh: enough for a stale lease, a record created meanwhile, its lease, and a leader change. */
const refreshAttemptsMax = 5;
/**
 * How records are refreshed, part of the settings every map daemon of a cluster must share: records are only
 * created where absent and kept alive on their lease (map daemons before it put records on fresh leases).
 */
const recordProtocol = 'create-once-keepalive';

/** What every map daemon of one cluster must agree on (agreeOnSettings), in a fixed key order. */
export interface LivenessSettings {
  downGraceMs: number;
  outIntervalMs: number;
  heartbeatIntervalMs: number;
  leaseMs: number;
}

export interface EtcdLivenessOptions {
  client: EtcdClient;
  store: EtcdMapStore;
  keyPrefix: string;
  /** TTL of each disk record and of the judge's hold: ceil(downGraceMs / 1000) (etcd counts whole seconds). */
  ttlSeconds: number;
  /** Who this map daemon is (the leader key's value: for operators and tests); may be set later (`identity`). */
  identity: string;
  log?: (message: string) => void;
}

export class EtcdLivenessRecords implements LivenessRecords {
  readonly leaderKey: string;
  /** Written as the records' and the leader key's value. */
  identity: string;
  private readonly base: string;
  /** Per disk, the etcd lease its record was on at this map daemon's last refresh (one entry per disk heard). */
  private readonly recordLeases = new Map<number, string>();
  /** The etcd lease this map daemon's leadership is attached to (null: not the judge). */
  private leaderLeaseId: string | null = null;
  private closed = false;

  constructor(private readonly o: EtcdLivenessOptions) {
    this.base = `${o.keyPrefix}/${o.store.clusterId}/liveness`;
    this.leaderKey = `${this.base}/leader`;
    this.identity = o.identity;
    if (!(Number.isSafeInteger(o.ttlSeconds) && o.ttlSeconds >= 1)) throw new TesseraError('InvalidArgument', `liveness records: ttlSeconds ${o.ttlSeconds} must be a whole number >= 1`);
  }

  private aliveKey = (diskId: number): string => `${this.base}/alive/${diskId}`;
  private outKey = (diskId: number): string => `${this.base}/out/${diskId}`;
  private reportKey = (diskId: number): string => `${this.base}/reports/${diskId}`;

  async refresh(diskId: number, signal?: AbortSignal): Promise<number> {
    const { client, store, ttlSeconds } = this.o;
    const { identity } = this;
    const { etcd } = client;
    const key = this.aliveKey(diskId);
    // The lease the record was on when this map daemon last saw it (a guess: checked below).
    let leaseId = this.recordLeases.get(diskId) ?? null;
    for (let attempt = 1; attempt <= refreshAttemptsMax; attempt++) {
      let result;
      if (leaseId !== null) {
        // Extend the lease (expiry: now + TTL, after the heartbeat's receipt), then check the record is on it.
        const held = leaseId;
        const kept = await client.run(`liveness: keep the record of disk ${diskId}`, signal, (call) => keepAliveAnswer(client, held, call));
        if (!kept.alive) {
          leaseId = null; // expired: its record is gone, or on another lease (read below)
          continue;
        }
        result = await client.run(`liveness: record of disk ${diskId}`, signal, (call) =>
          etcd
            .if(key, 'Lease', '==', held)
            .then({ request_range: { key: Buffer.from(store.key), keys_only: true } })
            .else(etcd.get(key))
            .options(call)
            .commit(),
        );
        // The read (linearizable) applied the entries of the leader that confirmed it: a later term than the
        // keepalive's means a leader was elected before the read, maybe before the keepalive, which an old leader
        // may then have answered in vain (etcd 3.4): keep the lease alive again, under the leader of now.
        if (result.succeeded && String(result.header?.raft_term ?? '') !== kept.raftTerm) continue;
      } else {
        // No record, or one on a lease unknown here: a new record only where there is none (Create == 0).
        // A grant repeated after a lost answer makes an extra lease, which expires unused.
        const grant = await client.run(`liveness: lease for disk ${diskId}`, signal, (call) => etcd.leaseClient.leaseGrant({ TTL: ttlSeconds }, call));
        leaseId = grant.ID;
        result = await client.run(`liveness: new record of disk ${diskId}`, signal, (call) =>
          etcd
            .if(key, 'Create', '==', 0)
            .then(etcd.put(key).value(identity).lease(grant.ID), { request_range: { key: Buffer.from(store.key), keys_only: true } })
            .else(etcd.get(key))
            .options(call)
            .commit(),
        );
      }
      if (!result.succeeded) {
        // The record is on another lease (or was created meanwhile): keep that one alive instead, never replace it.
        const kv = result.responses[0]?.response_range?.kvs[0];
        leaseId = kv !== undefined && kv.lease !== '0' ? kv.lease : null;
        continue;
      }
      this.recordLeases.set(diskId, leaseId);
      const mapKv = result.responses.at(-1)?.response_range?.kvs[0];
      if (mapKv === undefined) throw notFound(`no cluster map at etcd key ${store.key}`);
      return store.epochSince(BigInt(mapKv.mod_revision), signal);
    }
    this.recordLeases.delete(diskId);
    throw new TesseraError('Busy', `liveness: the record of disk ${diskId} kept changing leases under this refresh (${refreshAttemptsMax} attempts)`);
  }

  /**
   * Every map daemon of the cluster must judge with the same settings: a record refreshed by one with a shorter
   * grace (TTL) could expire before the primary lease another granted ends, and the disk be marked down while it
   * still serves. The first map daemon stores its settings at `<base>/settings`; one started with others refuses
   * to start (InvalidArgument). To change them: stop every map daemon, delete that key, start them all with the new
   * flags.
   */
  async agreeOnSettings(settings: LivenessSettings, signal?: AbortSignal): Promise<void> {
    const { client } = this.o;
    const key = `${this.base}/settings`;
    const mine = JSON.stringify({ ...settings, recordProtocol });
    const result = await client.run('liveness: settings', signal, (call) =>
      client.etcd.if(key, 'Create', '==', 0).then(client.etcd.put(key).value(mine)).else(client.etcd.get(key)).options(call).commit(),
    );
    if (result.succeeded) return;
    const stored = result.responses[0]?.response_range?.kvs[0]?.value.toString();
    if (stored !== mine) {
      throw new TesseraError('InvalidArgument', `liveness settings ${mine} differ from those the cluster's map daemons use (${stored ?? 'unreadable'}, etcd key ${key}): start every map daemon with the same failure-detection flags (to change them, stop them all and delete that key)`);
    }
  }

  async present(signal?: AbortSignal): Promise<Set<number>> {
    const { client } = this.o;
    const prefix = `${this.base}/alive/`;
    const keys = await client.run('liveness: records', signal, (call) => client.etcd.getAll().prefix(prefix).options(call).keys());
    return new Set(keys.map((k) => Number(k.slice(prefix.length))).filter((id) => Number.isSafeInteger(id)));
  }

  async lead(signal?: AbortSignal): Promise<boolean> {
    if (this.closed) return false;
    const { client, ttlSeconds } = this.o;
    const { identity } = this;
    const { etcd } = client;
    if (this.leaderLeaseId !== null) {
      const leaseId = this.leaderLeaseId;
      const alive = await client.run('liveness: keep leadership', signal, (call) => keepAliveOnce(client, leaseId, call)).catch(() => null);
      // null: no answer (etcd unreachable): the transaction fence decides whether a change of ours still lands.
      if (alive === false) {
        this.leaderLeaseId = null;
        this.o.log?.('liveness: no longer the judge (its etcd lease expired)');
      }
      return this.leaderLeaseId !== null;
    }
    const holder = await client.run('liveness: leader', signal, (call) => etcd.get(this.leaderKey).options(call).exec());
    if (holder.kvs.length > 0) return false;
    const grant = await client.run('liveness: leadership lease', signal, (call) => etcd.leaseClient.leaseGrant({ TTL: ttlSeconds }, call));
    const won = await client.run('liveness: campaign', signal, (call) =>
      etcd.if(this.leaderKey, 'Create', '==', 0).then(etcd.put(this.leaderKey).value(identity).lease(grant.ID)).else(etcd.get(this.leaderKey)).options(call).commit(),
    );
    const kv = won.responses[0]?.response_range?.kvs[0];
    // A repeated attempt whose first one landed finds our own lease on the key.
    if (won.succeeded || (kv !== undefined && kv.lease === grant.ID)) {
      this.leaderLeaseId = grant.ID;
      this.o.log?.(`liveness: ${identity} is the judge now (marks silent disks down and out)`);
      return true;
    }
    return false;
  }

  async putReports(report: PeerReport, ttlMs: number, signal?: AbortSignal): Promise<void> {
    const { client } = this.o;
    const { etcd } = client;
    const key = this.reportKey(report.reporter);
    if (report.targets.length === 0) {
      await client.run(`liveness: reports of disk ${report.reporter} withdrawn`, signal, (call) => etcd.delete().key(key).options(call).exec());
      return;
    }
    // A fresh lease per refresh: the previous one expires by itself (reports exist only while peers are unreachable).
    const grant = await client.run(`liveness: lease for the reports of disk ${report.reporter}`, signal, (call) => etcd.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttlMs / 1000)) }, call));
    const value = JSON.stringify({ epoch: report.epoch, targets: report.targets });
    await client.run(`liveness: reports of disk ${report.reporter}`, signal, (call) => etcd.put(key).value(value).lease(grant.ID).options(call).exec());
  }

  async reports(signal?: AbortSignal): Promise<Array<{ reporter: number; epoch: number; targets: number[] }>> {
    const { client } = this.o;
    const prefix = `${this.base}/reports/`;
    const all = await client.run('liveness: peer reports', signal, (call) => client.etcd.getAll().prefix(prefix).options(call).strings());
    const out: Array<{ reporter: number; epoch: number; targets: number[] }> = [];
    for (const [key, value] of Object.entries(all)) {
      const reporter = Number(key.slice(prefix.length));
      const parsed = parseReports(value);
      // Written only by map daemons; anything else is skipped rather than trusted.
      if (Number.isSafeInteger(reporter) && parsed !== null) out.push({ reporter, ...parsed });
    }
    return out;
  }

  async markedOut(diskId: number, signal?: AbortSignal): Promise<boolean> {
    const { client } = this.o;
    const res = await client.run('liveness: marked out?', signal, (call) => client.etcd.get(this.outKey(diskId)).options(call).exec());
    return res.kvs.length > 0;
  }

  async judge(edit: MapEdit, o: { silent: readonly number[]; out: readonly number[]; signal?: AbortSignal }): Promise<ClusterMap | null> {
    const leaseId = this.leaderLeaseId;
    if (leaseId === null) return null;
    const change = this.o.store.changeGuarded(
      edit,
      {
        what: `the judge's lease and silence of disks ${o.silent.join(',') || '-'}`,
        leases: [{ key: this.leaderKey, leaseId }],
        absent: o.silent.map(this.aliveKey),
        put: o.out.map((id) => ({ key: this.outKey(id), value: this.identity })),
      },
      o.signal ? { signal: o.signal } : {},
    );
    return change.catch((err: unknown) => {
      if (isGuardFailure(err)) return null;
      throw err;
    });
  }

  change(edit: MapEdit, o: { back: readonly number[]; signal?: AbortSignal }): Promise<ClusterMap> {
    return this.o.store.changeGuarded(edit, { what: 'nothing', delete: o.back.map(this.outKey) }, o.signal ? { signal: o.signal } : {});
  }

  async close(): Promise<void> {
    this.closed = true;
    const leaseId = this.leaderLeaseId;
    this.leaderLeaseId = null;
    if (leaseId === null) return;
    const { client } = this.o;
    // Best effort: after a failure the lease expires by itself within ttlSeconds.
    await client.run('liveness: resign', undefined, (call) => client.etcd.leaseClient.leaseRevoke({ ID: leaseId }, call)).catch(() => undefined);
  }
}

/** One keepalive of an etcd lease: false once etcd says it expired (TTL 0). */
async function keepAliveOnce(client: EtcdClient, leaseId: string, call: EtcdAttempt): Promise<boolean> {
  return (await keepAliveAnswer(client, leaseId, call)).alive;
}

/**
 * One keepalive of an etcd lease: whether etcd says it is alive (TTL > 0), and the raft term in the answer's header
 * (the answering member's, taken before the renewal: the term of the last entry it applied).
 */
async function keepAliveAnswer(client: EtcdClient, leaseId: string, call: EtcdAttempt): Promise<{ alive: boolean; raftTerm: string }> {
  const stream = await client.etcd.leaseClient.leaseKeepAlive(call);
  try {
    const res = await new Promise<ILeaseKeepAliveResponse>((resolve, reject) => {
      stream.on('data', resolve);
      // Stays attached: a stream error after the answer must not become an unhandled 'error' event.
      stream.on('error', (err: Error) => reject(castGrpcError(err)));
      stream.write({ ID: leaseId });
    });
    return { alive: Number(res.TTL) > 0, raftTerm: String(res.header?.raft_term ?? '') };
  } finally {
    stream.end();
  }
}

/** A stored report value, or null when it is not one (at most limits.peerReportTargetsMax disk ids). */
function parseReports(value: string): { epoch: number; targets: number[] } | null {
  try {
    const doc = JSON.parse(value) as { epoch?: unknown; targets?: unknown };
    const { epoch, targets } = doc;
    if (!Number.isSafeInteger(epoch) || !Array.isArray(targets) || targets.length > limits.peerReportTargetsMax) return null;
    if (!targets.every((t) => Number.isSafeInteger(t) && (t as number) >= 0)) return null;
    return { epoch: epoch as number, targets: targets as number[] };
  } catch {
    return null;
  }
}
