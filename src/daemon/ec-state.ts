/**
 * The erasure-coding state of one placement group on one daemon, for both
 * roles it may play:
 *
 * - as primary: the pg's object locks, the order in which commits go out
 *   (version order: a version's commits are dispatched only after the
 *   previous version's were, and never if it failed), and a generation that
 *   peering bumps so writes begun before it fail instead of committing;
 * - as member: the last commit submitted to the local store (commits apply
 *   strictly in version order: a commit waits, bounded, for its turn), the
 *   records of versions staged here, and the stage/commit operations in
 *   flight (a peering query waits for them, so the snapshot it returns is
 *   consistent).
 */
import type { Clock } from '../io/io.js';
import { TesseraError } from '../lib/errors.js';
import type { Eversion } from '../protocol/osd-messages.js';
import type { ErasureCodec } from '../../native/index.js';
import { EcLayout } from './ec-layout.js';
import { ObjectLocks } from './ec-locks.js';
import type { EcCommitRecord } from './ec-record.js';

export interface CommitTurn {
  /** Settles when the previous version's commits were dispatched (rejects if that write failed). */
  previous: Promise<void>;
  dispatched(): void;
  failed(err: unknown): void;
}

export class EcPgState {
  readonly locks: ObjectLocks;
  generation = 0;
  private lastDispatch: Promise<void> = Promise.resolve();
  /** Member: the newest version whose commit went to the local store. */
  lastSubmitted: Eversion;
  /** Member: log entries are remembered in version order through this chain. */
  rememberChain: Promise<void> = Promise.resolve();
  readonly staged = new Map<string, EcCommitRecord>();
  /** Member: a recovery push rewrote the log in the store; reload it before answering a query. */
  logReplaced = false;
  private readonly turnWaiters = new Map<number, () => void>();
  /** Bumped when waiting commits must give up (the pg stopped taking sub-writes). */
  private turnEpoch = 0;
  private readonly memberOps = new Set<Promise<unknown>>();

  constructor(
    private readonly clock: Clock,
    readonly layout: EcLayout,
    readonly codec: ErasureCodec,
    head: Eversion,
  ) {
    this.locks = new ObjectLocks(clock);
    this.lastSubmitted = head;
  }

  /** Primary: the commit slot of the version just assigned (call right after assigning it). */
  takeCommitTurn(): CommitTurn {
    const previous = this.lastDispatch;
    let dispatched!: () => void;
    let failed!: (err: unknown) => void;
    this.lastDispatch = new Promise<void>((resolve, reject) => {
      dispatched = resolve;
      failed = reject;
    });
    this.lastDispatch.catch(() => undefined);
    return { previous, dispatched, failed };
  }

  /** Primary: a new peering run; writes of older generations must not commit. */
  newGeneration(): void {
    this.generation++;
    this.lastDispatch = Promise.resolve();
  }

  /** Member: resolves when `version` is the next to commit here; Conflict if it is past, Busy after waitMs. */
  async awaitTurn(version: number, waitMs: number): Promise<void> {
    const deadline = this.clock.monotonicMs() + waitMs;
    const epoch = this.turnEpoch;
    for (;;) {
      if (this.turnEpoch !== epoch) throw new TesseraError('Busy', `commit of version ${version} abandoned: the pg is peering`);
      const next = this.lastSubmitted.version + 1;
      if (next === version) return;
      if (next > version) throw new TesseraError('Conflict', `commit of version ${version} arrived after version ${next - 1}`);
      const left = deadline - this.clock.monotonicMs();
      if (left <= 0) throw new TesseraError('Busy', `commit of version ${version} waited ${waitMs} ms for version ${next}`);
      await new Promise<void>((resolve) => {
        const timer = this.clock.setTimeout(() => {
          if (this.turnWaiters.get(version) === wake) this.turnWaiters.delete(version);
          resolve();
        }, left);
        const wake = (): void => {
          this.clock.clearTimeout(timer);
          resolve();
        };
        this.turnWaiters.get(version)?.();
        this.turnWaiters.set(version, wake);
      });
    }
  }

  /** Member: a commit went to the store; the next version may go. */
  submitted(v: Eversion): void {
    this.lastSubmitted = v;
    const wake = this.turnWaiters.get(v.version + 1);
    this.turnWaiters.delete(v.version + 1);
    wake?.();
  }

  /** Member: counts a stage or commit in flight until it settles. */
  track<T>(p: Promise<T>): Promise<T> {
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.memberOps.add(settled);
    void settled.then(() => this.memberOps.delete(settled));
    return p;
  }

  /** Member: waits (bounded) until every stage and commit in flight has settled. */
  async drain(waitMs: number): Promise<void> {
    const deadline = this.clock.monotonicMs() + waitMs;
    while (this.memberOps.size > 0) {
      const left = deadline - this.clock.monotonicMs();
      if (left <= 0) throw new TesseraError('Busy', `erasure-coded sub-writes still in flight after ${waitMs} ms`);
      let timer!: ReturnType<Clock['setTimeout']>;
      await Promise.race([Promise.all([...this.memberOps]), new Promise<void>((resolve) => (timer = this.clock.setTimeout(resolve, left)))]);
      this.clock.clearTimeout(timer);
    }
  }

  /** Member: commits waiting for their turn fail now (Busy); the primary will peer. */
  abortTurns(): void {
    this.turnEpoch++;
    const waiters = [...this.turnWaiters.values()];
    this.turnWaiters.clear();
    for (const w of waiters) w();
  }

  /** Member: forgets staged records and restarts the commit order at `head` (peering settled the log). */
  resetMember(head: Eversion): void {
    this.staged.clear();
    this.lastSubmitted = head;
    this.abortTurns();
  }
}

/** One codec per (k, m), shared by a daemon's pgs (codecs keep decode tables; calls never yield). */
export class EcCodecs {
  private readonly codecs = new Map<string, ErasureCodec>();

  constructor(private readonly create: (o: { dataShards: number; parityShards: number }) => ErasureCodec) {}

  get(layout: EcLayout): ErasureCodec {
    const key = `${layout.dataShards}+${layout.parityShards}`;
    let c = this.codecs.get(key);
    if (!c) this.codecs.set(key, (c = this.create({ dataShards: layout.dataShards, parityShards: layout.parityShards })));
    return c;
  }
}
