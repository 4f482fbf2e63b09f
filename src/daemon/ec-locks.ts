/**
 * Waiting primitives of the EC write path, every wait bounded in time:
 *
 * - ObjectLocks: per-object shared/exclusive locks, first come first served.
 *   A primary's write of an object (read-modify-write through commit) holds
 *   it exclusively; reads hold it shared, so a read never mixes shards of two
 *   versions and never shows an unacknowledged write.
 * - ByteBudget: a semaphore in bytes (encoded shard buffers held by writes).
 *
 * A waiter that times out fails Busy (the client retries) and leaves the queue.
 */
import type { Clock } from '../io/io.js';
import { TesseraError } from '../lib/errors.js';
import { assert } from '../lib/assert.js';

export type LockMode = 'shared' | 'exclusive';

interface Waiter {
  mode: LockMode;
  grant: () => void;
}

interface LockState {
  holders: number;
  exclusive: boolean;
  queue: Waiter[];
}

export class ObjectLocks {
  private readonly locks = new Map<string, LockState>();

  constructor(private readonly clock: Clock) {}

  /** Resolves with a release function once the lock is held; Busy after waitMs. */
  acquire(object: string, mode: LockMode, waitMs: number): Promise<() => void> {
    let state = this.locks.get(object);
    if (!state) this.locks.set(object, (state = { holders: 0, exclusive: false, queue: [] }));
    const s = state;
    if (s.queue.length === 0 && this.compatible(s, mode)) return Promise.resolve(this.take(object, s, mode));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        mode,
        grant: () => {
          this.clock.clearTimeout(timer);
          resolve(this.take(object, s, mode));
        },
      };
      const timer = this.clock.setTimeout(() => {
        const at = s.queue.indexOf(waiter);
        if (at < 0) return;
        s.queue.splice(at, 1);
        this.wake(object, s);
        reject(new TesseraError('Busy', `object ${object} stayed locked for ${waitMs} ms`));
      }, waitMs);
      s.queue.push(waiter);
    });
  }

  /** Objects with a holder or a waiter (tests, metrics). */
  get size(): number {
    return this.locks.size;
  }

  private compatible(s: LockState, mode: LockMode): boolean {
    if (s.holders === 0) return true;
    return mode === 'shared' && !s.exclusive;
  }

  private take(object: string, s: LockState, mode: LockMode): () => void {
    s.holders++;
    s.exclusive = mode === 'exclusive';
    let released = false;
    return () => {
      assert(!released, `lock of ${object} released twice`);
      released = true;
      s.holders--;
      if (s.holders === 0) s.exclusive = false;
      this.wake(object, s);
    };
  }

  private wake(object: string, s: LockState): void {
    while (s.queue.length > 0 && this.compatible(s, s.queue[0]!.mode)) s.queue.shift()!.grant();
    if (s.holders === 0 && s.queue.length === 0) this.locks.delete(object);
  }
}

export class ByteBudget {
  private used = 0;
  private readonly queue: Array<{ bytes: number; grant: () => void }> = [];

  constructor(
    private readonly clock: Clock,
    readonly capacityBytes: number,
  ) {}

  /** Reserves min(bytes, capacity); resolves with the release function; Busy after waitMs. */
  reserve(bytes: number, waitMs: number): Promise<() => void> {
    const amount = Math.min(bytes, this.capacityBytes);
    if (this.queue.length === 0 && this.used + amount <= this.capacityBytes) return Promise.resolve(this.take(amount));
    return new Promise((resolve, reject) => {
      const waiter = {
        bytes: amount,
        grant: () => {
          this.clock.clearTimeout(timer);
          resolve(this.take(amount));
        },
      };
      const timer = this.clock.setTimeout(() => {
        const at = this.queue.indexOf(waiter);
        if (at < 0) return;
        this.queue.splice(at, 1);
        this.wake();
        reject(new TesseraError('Busy', `no room for ${amount} bytes of erasure-coded writes within ${waitMs} ms`));
      }, waitMs);
      this.queue.push(waiter);
    });
  }

  private take(amount: number): () => void {
    this.used += amount;
    let released = false;
    return () => {
      assert(!released, 'a byte reservation is released once');
      released = true;
      this.used -= amount;
      this.wake();
    };
  }

  private wake(): void {
    while (this.queue.length > 0 && this.used + this.queue[0]!.bytes <= this.capacityBytes) this.queue.shift()!.grant();
  }
}
