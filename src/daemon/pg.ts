/**
 * One placement group as one of its members sees it: its place in the
 * current interval (role, acting set, the epoch the interval started in), its
 * state, and its log. The primary orders writes (versions), applies them
 * locally and replicates them to every other acting member, acknowledging
 * only when all have them durably; a replica applies them in version order.
 *
 * States: peering (new interval: no I/O until the primary has settled the
 * pg's history), active, incomplete (no member of the last interval that
 * could take writes is reachable: no I/O, to never serve stale data; the
 * reason is in incompleteWhy and in the Busy error), and stray (not a
 * member).
 */
import { setMaxListeners } from 'node:events';
import type { Clock } from '../io/io.js';
import { limits } from '../lib/limits.js';
import { TesseraError, invalid } from '../lib/errors.js';
import { compareVersions, type Eversion, type LogEntry, type RequestId } from '../protocol/osd-messages.js';
import { type Inconsistency } from '../protocol/osd-admin-messages.js';
import type { ObjectId, StoreOp } from '../store/types.js';
import type { PoolInfo } from '../../cluster/map.js';
import type { EcPgState } from './ec-state.js';
import { dataNs, encodeVersionValue, PgLog, VERSION_XATTR } from './pg-log.js';

export type PgState = 'peering' | 'active' | 'incomplete';

/**
 * Acting members an interval needs to take writes: min_size members up and complete (replicated), k+1
 * shards (erasure-coded: one failure from losing the ability to read). An interval with fewer serves
 * reads only; while no interval of a pg could ever take writes, peering records its intervals as
 * neverWritable (cluster/pg-history.ts): they hold no data, and bind no later interval.
 */
export function writeQuorum(pool: PoolInfo): number {
  const r = pool.redundancy;
  return r.type === 'replicated' ? r.minSize : r.dataShards + 1;
}

/** Ops whose success depends on the object's state: they are decided at the primary first. */
const conditionalOps = new Set<StoreOp['type']>(['create', 'remove', 'removeXattr', 'assertXattr', 'assertExists', 'omapCompare', 'omapRemoveKeys', 'omapRemoveRange', 'omapClear']);

export function isConditional(op: StoreOp): boolean {
  if (!conditionalOps.has(op.type)) return false;
  if (op.type === 'create') return op.exclusive === true;
  if (op.type === 'remove') return op.ifExists !== true;
  return true;
}

/**
 * Primary, replicated pools: the writes of one object in flight here. They take versions in arrival
 * order (turn); a conditional write keeps its turn while it decides, after the local store transactions
 * of the object's earlier writes have settled (applied).
 */
interface ObjectWrites {
  /** Settles when the last write queued for the object has taken its version or given up. */
  turn: Promise<void>;
  /** Settles when the local store transactions of the object's writes that took a version have settled. */
  applied: Promise<void>;
  /** Writes queued here or with a local store transaction in flight; the entry goes at zero. */
  holders: number;
}

/** A write's place in its object's order (Pg.withObjectTurn). */
export interface ObjectTurn {
  /** Resolves when the local store transactions of the object's earlier writes have settled. */
  earlierApplied(): Promise<void>;
  /** Call in the step that takes the version, with its local store transaction: the next write of the object may go. */
  versionTaken(local: Promise<unknown>): void;
}

/** What a conditional write's decision assumed (Pg.decisionPoint); it holds while nothing here moved. */
export interface DecisionPoint {
  stateChanges: number;
  exclusiveRuns: number;
}

/**
 * An interval's abort controller. Every sub-write (and replica repop) in flight for the pg listens on its signal
 * until its call settles (src/rpc/calls.ts removes the listener): more than Node's default 10 at c=32 EC writes,
 * which made every EC daemon warn MaxListenersExceeded. The limit is set to what a pg may have in flight.
 */
function intervalController(): AbortController {
  const c = new AbortController();
  setMaxListeners(limits.pgIntervalListenersMax, c.signal);
  return c;
}

export class Pg {
  private currentState: PgState = 'peering';
  /** Counts changes of state: a decision taken while active holds only while this stays (the pg never left active). */
  private stateChanges = 0;
  /** Map epoch the current interval started in: older repops and pushes are refused. */
  intervalStart = 0;
  /** Newest map epoch the interval was compared against (osd.ts maybeNewInterval: an epoch skipped is a possible change). */
  mapEpoch = 0;
  acting: number[] = [];
  /** Acting members by position: erasure-coded pools keep HOLE (-1) for a shard whose member is down; replicated: = acting. */
  positions: number[] = [];
  primary = -1;
  /** Erasure-coding state (src/daemon/ec-state.ts); null for replicated pools. */
  ec: EcPgState | null = null;
  /** Writes submitted to the local store, in version order, not yet known to be committed. */
  private assigned: Eversion;
  /** Held by an exclusive run (repair: withPgQuiet in pg-repair.ts): writes take no version meanwhile. */
  private gate: Promise<void> = Promise.resolve();
  /** Exclusive runs of the gate begun, and whether one is running (a conditional write's decision spans neither). */
  private exclusiveRuns = 0;
  private exclusiveActive = false;
  /** Primary, replicated pools: objects with writes in flight here (bounded by the daemon's requests in flight, limits.daemonInflightMax). */
  private readonly objectWrites = new Map<string, ObjectWrites>();
  /** Local store submissions of a replica, chained to keep version order. */
  replicaChain: Promise<{ done: Promise<void> }> = Promise.resolve({ done: Promise.resolve() });
  /** Replicated writes submitted to the local store and not yet committed. */
  replicaBacklog = 0;
  /** Writes in flight per object (reads wait for them, to never show an unacknowledged write). */
  private readonly inflightObjects = new Map<string, Promise<unknown>>();
  /** Client requests in flight, by request id, so a retry joins the first attempt. */
  readonly inflightRequests = new Map<string, Promise<Eversion>>();
  /** Peering runs one at a time; a new interval aborts the old run. */
  peering: AbortController | null = null;
  /** Primary: why the last peering run of this interval failed (it is retried), until one ends; told to the clients refused meanwhile. */
  peeringFailure: string | null = null;
  /** Primary: why the pg is incomplete (which interval's members it waits for), set by the peering run that found it. */
  incompleteWhy: string | null = null;
  /** Aborts when the interval ends (endInterval): the primary's repops in flight for it stop waiting. */
  intervalAbort = intervalController();
  /**
   * Replicated pools: client writes' store transactions in flight on this member (as primary or replica).
   * Peering's query waits for them, so the log it reports holds every write this store has.
   */
  private readonly storeWrites = new Set<Promise<void>>();
  /**
   * A write's transaction became durable after its interval ended, so its entry is in the store's log
   * but not in memory: the log in memory is reloaded before it is reported or used again.
   */
  logBehindStore = false;
  /** Primary, replicated pools: acting members being backfilled while the pg is active without them (no repops). */
  backfilling = new Set<number>();
  /**
   * Primary, replicated pools: members the temporary acting set leaves out because their store had no
   * room to be brought up to date (toofull; peering.ts), while the pg serves I/O without them.
   */
  tooFull = new Set<number>();
  private stagingIds = 0;
  /**
   * Scrub, as primary (src/daemon/pg-scrub.ts): when it was last scrubbed and deep-scrubbed (wall-clock
   * ms; 0: never by this disk), whether the last one was deep, how many inconsistencies it left unrepaired
   * and the first of them (at most limits.scrubInconsistenciesKeptMax: `tessera pg inconsistent`), as the
   * pg's scrub record on disk holds them (src/daemon/scrub-record.ts, loaded with the pg); the background
   * scheduler's first due times for a pg never scrubbed here (spread over the intervals; 0: not planned)
   * and the earliest retry after a failed background scrub; the scrub running.
   */
  readonly scrub: {
    scrubbedAtMs: number;
    deepScrubbedAtMs: number;
    lastDeep: boolean;
    inconsistent: number;
    left: Inconsistency[];
    firstDueAtMs: number;
    firstDeepDueAtMs: number;
    retryAtMs: number;
    running: Promise<unknown> | null;
  } = {
    scrubbedAtMs: 0,
    deepScrubbedAtMs: 0,
    lastDeep: false,
    inconsistent: 0,
    left: [],
    firstDueAtMs: 0,
    firstDeepDueAtMs: 0,
    retryAtMs: 0,
    running: null,
  };

  constructor(
    readonly pool: PoolInfo,
    readonly pg: number,
    public log: PgLog,
  ) {
    this.assigned = log.head;
  }

  /** Names temporary objects of recovery (unique within this daemon's lifetime and pg). */
  nextStagingId(): number {
    return ++this.stagingIds;
  }

  get state(): PgState {
    return this.currentState;
  }

  set state(next: PgState) {
    if (next !== this.currentState) this.stateChanges++;
    this.currentState = next;
  }

  get key(): string {
    return `${this.pool.id}.${this.pg}`;
  }

  /** Adopts the log after recovery or activation rewrote it (read from the store: it holds every durable entry). */
  resetLog(log: PgLog): void {
    this.log = log;
    this.assigned = log.head;
    this.logBehindStore = false;
  }

  objectId(name: string, shard = 0): ObjectId {
    return { ns: dataNs(this.pool.id, shard), name };
  }

  /** A client write's ops on this pg's object (NotSupported, Invalid: ops a client may not send). */
  clientOps(object: string, ops: readonly StoreOp[]): StoreOp[] {
    const id = this.objectId(object);
    const out: StoreOp[] = [];
    for (const op of ops) {
      // Both name a second object (any namespace: another pg's log, another pool), changed outside its pg.
      if (op.type === 'move' || op.type === 'moveRange') throw new TesseraError('NotSupported', `${op.type} is not supported on pools`);
      if ((op.type === 'setXattr' || op.type === 'removeXattr' || op.type === 'assertXattr') && op.name.startsWith('_')) {
        throw invalid(`xattr names starting with "_" are reserved (${op.name})`);
      }
      out.push({ ...op, id } as StoreOp);
    }
    return out;
  }

  /** The store transaction of a client write: its ops on this pg's object, the object's version, the log entry. */
  buildWrite(object: string, ops: readonly StoreOp[], entry: LogEntry): StoreOp[] {
    const id = this.objectId(object);
    const out = this.clientOps(object, ops);
    if (entry.kind === 'modify') out.push({ type: 'setXattr', id, name: VERSION_XATTR, value: encodeVersionValue(entry) });
    out.push(...this.log.appendOps(entry));
    return out;
  }

  /** Next version for a write by this primary in `epoch`. */
  nextVersion(epoch: number): Eversion {
    this.assigned = { epoch, version: this.assigned.version + 1 };
    return this.assigned;
  }

  /** A write failed before its store transaction was submitted: its version was never written anywhere, give it back. */
  releaseVersion(v: Eversion): void {
    if (compareVersions(this.assigned, v) === 0) this.assigned = { epoch: v.epoch, version: v.version - 1 };
  }

  /**
   * Writes (exclusive false) run fn once no exclusive run is queued before them; an exclusive run
   * (repair) runs fn once those before it are done, and no write runs fn until it ends. A write's fn
   * takes its version and submits its store transaction in one step, so an exclusive run starting
   * after it can wait for that transaction (settleStoreWrites).
   */
  async withGate<T>(exclusive: boolean, fn: () => Promise<T>): Promise<T> {
    const before = this.gate;
    if (!exclusive) {
      await before;
      return fn();
    }
    let open!: () => void;
    this.gate = new Promise((resolve) => (open = resolve));
    try {
      await before;
      this.exclusiveRuns++;
      this.exclusiveActive = true;
      return await fn();
    } finally {
      this.exclusiveActive = false;
      open();
    }
  }

  /**
   * Primary, replicated pools: runs a write of `object` in that object's order. Writes of one object
   * take versions in arrival order: fn is called once every earlier write of the object has taken its
   * version or given up, and the next one waits until fn calls turn.versionTaken (or ends). Writes of
   * other objects never wait here.
   */
  async withObjectTurn<T>(object: string, fn: (turn: ObjectTurn) => Promise<T>): Promise<T> {
    let w = this.objectWrites.get(object);
    if (!w) {
      w = { turn: Promise.resolve(), applied: Promise.resolve(), holders: 0 };
      this.objectWrites.set(object, w);
    }
    const writes = w;
    writes.holders++;
    const before = writes.turn;
    let release!: () => void;
    writes.turn = new Promise((resolve) => (release = resolve));
    const drop = (): void => {
      if (--writes.holders === 0 && this.objectWrites.get(object) === writes) this.objectWrites.delete(object);
    };
    const turn: ObjectTurn = {
      earlierApplied: () => writes.applied,
      versionTaken: (local) => {
        const settled = local.then(
          () => undefined,
          () => undefined,
        );
        writes.holders++;
        writes.applied = Promise.all([writes.applied, settled]).then(() => undefined);
        void settled.then(drop);
        release();
      },
    };
    try {
      await before;
      return await fn(turn);
    } finally {
      release();
      drop();
    }
  }

  /** Primary: where a conditional write's decision starts, once no exclusive run (repair) is running. */
  async decisionPoint(): Promise<DecisionPoint> {
    while (this.exclusiveActive) await this.withGate(false, () => Promise.resolve());
    this.requireActive();
    return { stateChanges: this.stateChanges, exclusiveRuns: this.exclusiveRuns };
  }

  /** The pg stayed active and no repair ran since the decision point (what the store showed then still holds). */
  decisionHolds(p: DecisionPoint): boolean {
    return this.currentState === 'active' && this.stateChanges === p.stateChanges && this.exclusiveRuns === p.exclusiveRuns;
  }

  /**
   * The current interval ended (new acting set or primary, or no longer a member): repops sent in it
   * fail at once instead of waiting for a member that may be stopped (the client retries the write
   * with its request id; the pg log deduplicates it). The next interval gets a fresh signal.
   */
  endInterval(): void {
    this.intervalAbort.abort(new TesseraError('StaleEpoch', `pg ${this.key}: interval ${this.intervalStart} ended`));
    this.intervalAbort = intervalController();
  }

  /**
   * A client write's store transaction (replicated pools): peering's query waits for it. `entry` is
   * remembered in the log once it is durable, if the interval it was written in still holds (else the
   * log is marked behind the store: the entry is there, whatever happened to the interval since).
   * onSettled runs first, in the same step (a replica's backlog count moves with its log head).
   */
  trackStoreWrite(txn: Promise<void>, entry: LogEntry, interval: number, onSettled?: () => void): Promise<void> {
    const done = txn.then(
      () => {
        onSettled?.();
        if (this.intervalStart === interval && !this.logBehindStore) this.log.remember(entry);
        else this.logBehindStore = true;
      },
      (err: unknown) => {
        onSettled?.();
        throw err;
      },
    );
    const settled = done.then(
      () => undefined,
      () => undefined,
    );
    this.storeWrites.add(settled);
    void settled.then(() => this.storeWrites.delete(settled));
    return done;
  }

  /** Waits (bounded) until no client write's store transaction is in flight here. */
  async settleStoreWrites(clock: Clock, waitMs: number): Promise<void> {
    const deadline = clock.monotonicMs() + waitMs;
    while (this.storeWrites.size > 0) {
      const left = deadline - clock.monotonicMs();
      if (left <= 0) throw new TesseraError('Busy', `pg ${this.key}: writes still in flight after ${waitMs} ms`);
      let timer!: ReturnType<Clock['setTimeout']>;
      await Promise.race([Promise.all([...this.storeWrites]), new Promise<void>((resolve) => (timer = clock.setTimeout(resolve, left)))]);
      clock.clearTimeout(timer);
    }
  }

  /** Marks a write of an object in flight until done settles. */
  trackObject(object: string, done: Promise<unknown>): void {
    const settled = done.then(
      () => undefined,
      () => undefined,
    );
    const prev = this.inflightObjects.get(object);
    const chained = prev ? Promise.all([prev, settled]) : settled;
    this.inflightObjects.set(object, chained);
    void chained.then(() => {
      if (this.inflightObjects.get(object) === chained) this.inflightObjects.delete(object);
    });
  }

  /** Resolves when no write of the object is in flight. */
  async objectSettled(object: string): Promise<void> {
    for (let p = this.inflightObjects.get(object); p; p = this.inflightObjects.get(object)) await p;
  }

  requireActive(): void {
    if (this.state === 'active') return;
    const why =
      this.state === 'peering' && this.peeringFailure
        ? ` (its last peering run failed, retrying: ${this.peeringFailure})`
        : this.state === 'incomplete' && this.incompleteWhy
          ? ` (${this.incompleteWhy})`
          : '';
    throw new TesseraError('Busy', `pg ${this.key} is ${this.state}${why}`);
  }
}

export const requestKey = (r: RequestId): string => `${r.client}:${r.seq}`;
