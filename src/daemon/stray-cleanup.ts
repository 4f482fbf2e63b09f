/**
 * Removes this disk's stray copies: what it holds of pgs it is no longer a
 * member of (the disk was marked out, a disk was added, weights changed, a
 * temporary acting set ended). Ceph's "stray" pg removal. Without it every
 * rebalance would leave the old copies on their disks for good.
 *
 * Finding them: pgs this daemon leaves while it runs (osd.ts tells us,
 * noteLeft), and at start a scan of the store: each pool's meta namespace
 * (pg meta objects "pg.<n>", recovery temporaries "staging.<pg>.<n>", scrub
 * records "scrub.<n>"), its
 * erasure-coded staging namespace, and one listing (limit 1) of each data
 * namespace per pg this disk is not a member of (a member filled by a
 * backfill that was cut short holds objects and no log yet).
 *
 * Safety: a copy is removed only when it cannot be the last one holding an
 * acknowledged write. The pg's current primary must answer (pgClean) that
 * the pg is active and clean: every member of its computed set acting and
 * complete (replicated: none being filled in the background, no temporary
 * acting set; erasure-coded: every position filled, which peering only
 * activates once rebuilt), and the pg history registry must record that
 * very interval, with an acting set without this disk. Every interval after
 * the one recorded holds every write (cluster/pg-history.ts), so this copy
 * is not needed. The check is repeated before every batch when the map
 * epoch moved; membership is checked synchronously right before each batch
 * is submitted.
 *
 * Order of removal, so that a crash or a disk joining the pg again midway is
 * harmless: (1) the pg's log is emptied (meta object replaced by an empty
 * one; erasure-coded: its shard position kept), so from then on this disk is
 * a member with nothing, which peering fills (from the log if the
 * authoritative log starts at 0, else by a backfill that also removes extra
 * objects); the in-memory Pg is dropped first, and pg loads (osd.ts pgFor)
 * wait for a batch in flight (exclusive()). (2) data objects, (3) staging
 * objects, in batches of BATCH through the recovery throttle (client I/O
 * first). (4) the meta object last (with the pg's scrub record, which a
 * disk keeps as primary: src/daemon/scrub-record.ts): until then the start-up scan finds the
 * pg again after kill -9. Memory: one set of pg keys, one page of names.
 */
import { toTesseraError } from '../lib/errors.js';
import { pgSortKeyRange } from '../lib/hash.js';
import { encodeControl, OsdOpcode } from '../protocol/osd-messages.js';
import { decodePgCleanReply, type PgCleanReply, type PgCleanRequest, type StrayStats } from '../protocol/osd-admin-messages.js';
import type { ObjectId, StoreOp } from '../store/types.js';
import type { PoolInfo } from '../../cluster/map.js';
import { HOLE, pgTempActing } from '../../cluster/placement.js';
import { stagingNs } from './ec-record.js';
import { pgOfStagingName } from './ec-index.js';
import { dataNs, metaNs, metaObject, PgLog } from './pg-log.js';
import { scrubRecordObject } from './scrub-record.js';
import type { Osd } from './osd.js';

/** Objects removed per transaction. */
const BATCH = 128;
const LIST_PAGE = 1000;
/** Recovery throttle priority of a removal batch: after every copy (copies use the count of up-to-date members, < 64). */
const PRIORITY = 1000;
const CLEAN_TIMEOUT_MS = 10_000;

type Outcome = 'removed' | 'member' | 'wait';

export interface StrayCleanerOptions {
  /** How often pgs waiting for their primary's go-ahead are asked again (default 2000 ms). */
  retryMs?: number;
}

export class StrayCleaner {
  /** Pgs ("pool.pg") this disk may hold stray data of. */
  private readonly candidates = new Set<string>();
  /** The last reason each waiting pg was not removed (logged when it changes). */
  private readonly reasons = new Map<string, string>();
  private readonly locks = new Map<string, Promise<void>>();
  private readonly stop = new AbortController();
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private woken = false;
  /** Figures for status and metrics. */
  readonly stats = { pgsRemoved: 0, objectsRemoved: 0 };

  constructor(
    private readonly osd: Osd,
    private readonly options: StrayCleanerOptions = {},
  ) {}

  private log(message: string): void {
    console.error(`disk ${this.osd.diskId}: ${message}`);
  }

  /** Scans the store for stray pgs, then removes them in the background until close(). */
  start(): void {
    this.loop ??= (async () => {
      try {
        await this.scan();
      } catch (err) {
        if (!this.stop.signal.aborted) this.log(`stray scan failed: ${toTesseraError(err).message}`);
      }
      await this.run();
    })();
  }

  /** A pg this disk was a member of and is no longer. */
  noteLeft(poolId: number, pg: number): void {
    this.candidates.add(`${poolId}.${pg}`);
    this.poke();
  }

  /** The map changed: waiting pgs are asked again. */
  poke(): void {
    this.woken = true;
    this.wake?.();
  }

  figures(): StrayStats {
    return { pgsWaiting: this.candidates.size, ...this.stats };
  }

  /** Runs fn while no removal batch of the pg is in flight (pg loads: they must see the store after it). */
  async exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const chained = before.then(() => mine);
    this.locks.set(key, chained);
    await before;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(key) === chained) this.locks.delete(key);
    }
  }

  private isMember(pool: PoolInfo, pg: number): boolean {
    return this.osd.view.pg(pool, pg).members.includes(this.osd.diskId);
  }

  /** Every pg of the map's pools this store holds something of while not a member. */
  private async scan(): Promise<void> {
    const { store } = this.osd;
    for (const pool of this.osd.view.map.pools) {
      const found = new Set<number>();
      const listNs = async (ns: number, pgOf: (name: string) => number): Promise<void> => {
        let cursor: string | undefined;
        do {
          if (this.stop.signal.aborted) return;
          const page = await store.listObjects({ ns, limit: LIST_PAGE, ...(cursor ? { cursor } : {}) });
          for (const o of page.objects) {
            const pg = pgOf(o.name);
            if (pg >= 0 && pg < pool.pgCount) found.add(pg);
          }
          cursor = page.cursor;
        } while (cursor);
      };
      await listNs(metaNs(pool.id), (name) => Number(/^(?:pg|staging|scrub)\.(\d+)(?:\.|$)/.exec(name)?.[1] ?? -1));
      if (pool.redundancy.type === 'erasure') await listNs(stagingNs(pool.id), pgOfStagingName);
      const bits = Math.log2(pool.pgCount);
      for (let pg = 0; pg < pool.pgCount && !this.stop.signal.aborted; pg++) {
        if (found.has(pg) || this.isMember(pool, pg)) continue;
        for (const ns of shardNamespaces(pool)) {
          const page = await store.listObjects({ ns, sortKeyRange: pgSortKeyRange(pg, bits), limit: 1 });
          if (page.objects.length > 0) {
            found.add(pg);
            break;
          }
        }
      }
      for (const pg of found) if (!this.isMember(pool, pg)) this.candidates.add(`${pool.id}.${pg}`);
    }
    if (this.candidates.size > 0) this.log(`${this.candidates.size} pg(s) with stray copies found in the store`);
  }

  private async run(): Promise<void> {
    const { signal } = this.stop;
    const retryMs = this.options.retryMs ?? 2000;
    while (!signal.aborted) {
      this.woken = false;
      let waiting = 0;
      for (const key of [...this.candidates].sort()) {
        if (signal.aborted) return;
        let outcome: Outcome;
        try {
          outcome = await this.tryRemove(key);
        } catch (err) {
          if (signal.aborted) return;
          outcome = 'wait';
          this.noteReason(key, `failed: ${toTesseraError(err).message}`);
        }
        if (outcome === 'wait') waiting++;
        else {
          this.candidates.delete(key);
          this.reasons.delete(key);
        }
      }
      if (this.woken) continue;
      // Nothing left: sleep until a pg is left or the map changes; else retry after retryMs too.
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.wake = null;
          this.osd.io.clock.clearTimeout(timer);
          signal.removeEventListener('abort', done);
          resolve();
        };
        const timer = this.osd.io.clock.setTimeout(done, waiting > 0 ? retryMs : 3_600_000);
        this.wake = done;
        signal.addEventListener('abort', done);
      });
    }
  }

  private noteReason(key: string, reason: string): void {
    if (this.reasons.get(key) === reason) return;
    this.reasons.set(key, reason);
    this.log(`pg ${key}: stray copy kept: ${reason}`);
  }

  /**
   * The go-ahead for removing this disk's copy of the pg, at the map epoch held now: null, or why not.
   * The pg's primary says it is clean, and the registry records its interval without this disk.
   */
  private async confirm(pool: PoolInfo, pg: number): Promise<string | null> {
    const { osd } = this;
    const epoch = osd.view.epoch;
    const placement = osd.view.pg(pool, pg);
    if (placement.primary === HOLE) return 'no primary is up';
    const request: PgCleanRequest = { epoch, poolId: pool.id, pg };
    let reply: PgCleanReply;
    try {
      const raw = await osd.peers.rpc(placement.primary).call(OsdOpcode.pgClean, encodeControl(request), [], { idempotent: true, timeoutMs: CLEAN_TIMEOUT_MS, signal: this.stop.signal });
      reply = decodePgCleanReply(raw.header);
    } catch (err) {
      return `primary ${placement.primary} did not answer (${toTesseraError(err).code})`;
    }
    if (!reply.clean) return `not clean at primary ${placement.primary}: ${reply.reason}`;
    if (reply.acting.includes(osd.diskId)) return `still in the acting set at primary ${placement.primary}`;
    const record = await osd.options.pgHistory.get(pool.id, pg);
    if (!record) return 'no interval recorded';
    if (record.epoch !== reply.intervalStart) return `the recorded interval (${record.epoch}) is not the primary's (${reply.intervalStart})`;
    if (record.acting.includes(osd.diskId)) return `this disk is in the last recorded interval (${record.epoch})`;
    if (osd.view.epoch !== epoch) return 'the map changed meanwhile';
    return null;
  }

  private async tryRemove(key: string): Promise<Outcome> {
    const { osd } = this;
    const [poolId, pg] = key.split('.').map(Number) as [number, number];
    const pool = osd.view.map.pools.find((p) => p.id === poolId);
    if (!pool) return 'removed'; // a removed pool: the pool purger deletes it all
    if (this.isMember(pool, pg)) return 'member';
    const why = await this.confirm(pool, pg);
    if (why) {
      this.noteReason(key, why);
      return 'wait';
    }
    let confirmedEpoch = osd.view.epoch;
    /** Before each batch: the primary asked again if the map moved; membership is checked again, synchronously, under the lock. */
    const stillStray = async (): Promise<Outcome | null> => {
      if (this.stop.signal.aborted) return 'wait';
      if (osd.view.epoch !== confirmedEpoch) {
        if (this.isMember(pool, pg)) return 'member';
        const again = await this.confirm(pool, pg);
        if (again) {
          this.noteReason(key, again);
          return 'wait';
        }
        confirmedEpoch = osd.view.epoch;
      }
      return this.isMember(pool, pg) ? 'member' : null;
    };
    let removed = 0;
    /** One batch: re-checked, submitted, and waited for under the pg's lock (pg loads wait for it). */
    const batch = async (ops: StoreOp[]): Promise<Outcome | null> => {
      return osd.recovery.run({ priority: PRIORITY, sizeBytes: 0, blocking: false, signal: this.stop.signal }, async () => {
        const stop = await stillStray();
        if (stop) return stop;
        return this.exclusive(key, async () => {
          if (this.isMember(pool, pg) || osd.view.epoch !== confirmedEpoch) return this.isMember(pool, pg) ? 'member' : 'wait';
          this.forgetLoaded(key);
          await osd.store.transact(ops);
          return null;
        });
      });
    };
    // (1) The log emptied: from here on this disk holds nothing of the pg as far as peering is concerned.
    const log = await PgLog.load(osd.store, pool.id, pg);
    const meta = metaObject(pool.id, pg);
    const emptied = PgLog.replaceOps(pool.id, pg, { epoch: 0, version: 0 }, [], { lastEpochStarted: 0, lastActing: [], ...(log.info.shard !== undefined ? { shard: log.info.shard } : {}) });
    let stop = await batch([{ type: 'remove', id: meta, ifExists: true }, ...emptied]);
    if (stop) return stop;
    // (2) data objects, (3) staging objects.
    const bits = Math.log2(pool.pgCount);
    for (const ns of shardNamespaces(pool)) {
      // Pages continue after the last name listed (a listing from the start would walk the removed keys' tombstones again).
      let after: string | undefined;
      do {
        const page = await osd.store.listObjects({ ns, sortKeyRange: pgSortKeyRange(pg, bits), limit: BATCH, ...(after ? { cursor: after } : {}) });
        if (page.objects.length > 0) {
          stop = await batch(page.objects.map((o) => ({ type: 'remove' as const, id: { ns, name: o.name }, ifExists: true })));
          if (stop) return stop;
          removed += page.objects.length;
        }
        after = page.cursor;
      } while (after);
    }
    const stagings: ObjectId[] = [];
    if (pool.redundancy.type === 'erasure') for (const name of osd.ecStagings.names(pool.id, pg)) stagings.push({ ns: stagingNs(pool.id), name });
    let cursor: string | undefined;
    do {
      const page = await osd.store.listObjects({ ns: metaNs(pool.id), limit: LIST_PAGE, ...(cursor ? { cursor } : {}) });
      for (const o of page.objects) if (o.name.startsWith(`staging.${pg}.`)) stagings.push({ ns: metaNs(pool.id), name: o.name });
      cursor = page.cursor;
    } while (cursor);
    for (let i = 0; i < stagings.length; i += BATCH) {
      const ids = stagings.slice(i, i + BATCH);
      stop = await batch(ids.map((id) => ({ type: 'remove' as const, id, ifExists: true })));
      if (stop) return stop;
      for (const id of ids) if (id.ns === stagingNs(pool.id)) osd.ecStagings.remove(id);
      removed += ids.length;
    }
    // (4) the meta object last, with the pg's scrub record (src/daemon/scrub-record.ts).
    stop = await batch([{ type: 'remove', id: meta, ifExists: true }, { type: 'remove', id: scrubRecordObject(pool.id, pg), ifExists: true }]);
    if (stop) return stop;
    this.stats.pgsRemoved++;
    this.stats.objectsRemoved += removed;
    this.log(`pg ${key}: stray copy removed (${removed} objects; clean on its members at epoch ${confirmedEpoch})`);
    return 'removed';
  }

  /** Drops the daemon's in-memory Pg of a pg it is not a member of (it reloads from the store if it joins again). */
  private forgetLoaded(key: string): void {
    const pg = this.osd.pgs.get(key);
    if (!pg) return;
    pg.peering?.abort();
    pg.peering = null;
    pg.endInterval();
    this.osd.pgs.delete(key);
  }

  /** Stops after the batch in flight. */
  async close(): Promise<void> {
    this.stop.abort();
    await this.loop;
  }
}

/** The namespaces holding a pg's objects: shard 0 (replicated), or one per shard position (erasure-coded). */
function shardNamespaces(pool: PoolInfo): number[] {
  const r = pool.redundancy;
  const n = r.type === 'erasure' ? r.dataShards + r.parityShards : 1;
  return Array.from({ length: n }, (_, i) => dataNs(pool.id, i));
}

/** The primary's answer to pgClean: whether the pg is active with every member of its computed set complete. */
export async function pgCleanState(osd: Osd, request: PgCleanRequest): Promise<PgCleanReply> {
  await osd.catchUp(request.epoch);
  const key = `${request.poolId}.${request.pg}`;
  const pg = osd.pgs.get(key);
  const reply = (clean: boolean, reason: string): PgCleanReply => ({ epoch: osd.view.epoch, clean, reason, intervalStart: pg?.intervalStart ?? 0, acting: pg ? [...pg.positions] : [] });
  const pool = osd.view.map.pools.find((p) => p.id === request.poolId);
  if (!pool || !pg || !osd.view.pg(pool, request.pg).members.includes(osd.diskId)) return reply(false, 'pg not held here');
  osd.syncInterval(pg);
  if (pg.primary !== osd.diskId) return reply(false, 'not its primary');
  if (pg.intervalStart === 0 || pg.state !== 'active') return reply(false, `pg is ${pg.state}`);
  if (pg.backfilling.size > 0) return reply(false, `disk(s) ${[...pg.backfilling].join(',')} being filled`);
  const placement = osd.view.pg(pool, request.pg);
  if (pgTempActing(osd.view.map, placement.members, pool, request.pg) !== null) return reply(false, 'temporary acting set');
  if (pg.positions.some((d) => d === HOLE) || placement.members.some((d) => !pg.positions.includes(d))) return reply(false, 'a member is not acting');
  const size = pool.redundancy.type === 'erasure' ? pool.redundancy.dataShards + pool.redundancy.parityShards : pool.redundancy.size;
  if (pg.positions.length < size) return reply(false, `${pg.positions.length} of ${size} members`);
  return reply(true, 'clean');
}
