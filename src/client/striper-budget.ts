/**
 * The striper's memory budget: piece bytes that all puts and gets of one
 * Striper may hold at once (Garage's habit: reserve buffer memory before a
 * block is filled or fetched). A reservation is taken before a piece buffer
 * is filled (put) or a piece is fetched (get), and released when the piece is
 * written or consumed.
 *
 * Progress rule: an operation that holds nothing is always granted its next
 * reservation, even beyond the budget. So one piece per operation always
 * moves (a copy whose put waits on its own get cannot deadlock), and memory
 * stays under budgetBytes + (operations in progress) x (largest piece).
 * Waiters are served in arrival order otherwise; a wait can be aborted.
 */
import { TesseraError } from '../lib/errors.js';

interface Waiter {
  bytes: number;
  holder: BudgetHolder;
  grant: () => void;
}

export class ByteBudget {
  private usedBytes = 0;
  private peakBytes = 0;
  private readonly waiters: Waiter[] = [];

  constructor(readonly budgetBytes: number) {}

  /** One operation's view of the budget (it tracks what that operation holds). */
  holder(): BudgetHolder {
    return new BudgetHolder(this);
  }

  /** Bytes reserved now, and the most ever reserved at once (for tests and metrics). */
  get reservedBytes(): number {
    return this.usedBytes;
  }
  get reservedBytesPeak(): number {
    return this.peakBytes;
  }

  /** @internal */
  request(waiter: Waiter): void {
    this.waiters.push(waiter);
    this.serve();
  }

  /** @internal */
  cancel(waiter: Waiter): void {
    const at = this.waiters.indexOf(waiter);
    if (at >= 0) this.waiters.splice(at, 1);
  }

  /** @internal */
  give(bytes: number): void {
    this.usedBytes -= bytes;
    this.serve();
  }

  private take(w: Waiter): void {
    this.usedBytes += w.bytes;
    this.peakBytes = Math.max(this.peakBytes, this.usedBytes);
    w.holder.heldBytes += w.bytes;
    w.grant();
  }

  /** Grants waiters in order; a waiter whose operation holds nothing may pass the ones that do not fit. */
  private serve(): void {
    for (let i = 0; i < this.waiters.length; ) {
      const w = this.waiters[i]!;
      const inOrder = i === 0 && this.usedBytes + w.bytes <= this.budgetBytes;
      if (inOrder || w.holder.heldBytes === 0) {
        this.waiters.splice(i, 1);
        this.take(w);
      } else {
        i++;
      }
    }
  }
}

export class BudgetHolder {
  heldBytes = 0;

  constructor(private readonly budget: ByteBudget) {}

  /** Resolves with a release function once bytes are reserved; rejects Aborted if the signal fires first. */
  acquire(bytes: number, signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(aborted(signal));
    return new Promise((resolve, reject) => {
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        this.heldBytes -= bytes;
        this.budget.give(bytes);
      };
      const onAbort = (): void => {
        this.budget.cancel(waiter);
        reject(aborted(signal!));
      };
      const waiter: Waiter = {
        bytes,
        holder: this,
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.budget.request(waiter);
    });
  }
}

export function aborted(signal: AbortSignal): TesseraError {
  return new TesseraError('Aborted', 'the operation was aborted', { cause: signal.reason });
}
