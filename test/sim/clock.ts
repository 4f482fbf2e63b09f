/**
 * The simulated Clock and Random of src/io/io.ts. A process's timers are
 * events it owns (dropped when it dies, held while it is paused); wall time
 * is a fixed epoch plus the virtual time, so a run does not depend on the
 * day it runs. Each process's clock may run slightly fast or slow and its
 * wall clock be off (ClockSkew), as on separate hosts.
 */
import type { Clock, Random, TimerHandle } from '../../src/io/io.js';
import { seededRng, type Rng } from '../helpers/random.js';
import { never, type Scheduler, type SimEvent, type SimProcess } from './scheduler.js';

/** 2026-01-01T00:00:00Z: what nowMs() says at virtual time 0. */
export const SIM_EPOCH_MS = 1_767_225_600_000;

function abortError(reason: unknown): Error {
  // What node:timers/promises rejects with on abort.
  const err = new Error('The operation was aborted', { cause: reason }) as Error & { code: string };
  err.name = 'AbortError';
  err.code = 'ABORT_ERR';
  return err;
}

/** How one process's clock differs from the simulation's time. */
export interface ClockSkew {
  /** Its clock advances this much per simulated millisecond (1 +- a small drift). */
  rate: number;
  /** Its wall clock is this far off (hosts' clocks are not synchronised). */
  wallOffsetMs: number;
}

export const NO_SKEW: ClockSkew = { rate: 1, wallOffsetMs: 0 };

/** A process's clock: rate within +-maxDriftRatio, wall clock within +-maxWallOffsetMs. */
export function drawSkew(rng: Rng, maxDriftRatio: number, maxWallOffsetMs: number): ClockSkew {
  return { rate: 1 + (rng.float() * 2 - 1) * maxDriftRatio, wallOffsetMs: Math.round((rng.float() * 2 - 1) * maxWallOffsetMs) };
}

export function simClock(sched: Scheduler, owner: SimProcess, skew: ClockSkew = NO_SKEW): Clock {
  // Durations are in the process's own milliseconds: d of them take d / rate of the simulation's.
  const toSim = (ms: number): number => ms / skew.rate;
  return {
    nowMs: () => SIM_EPOCH_MS + skew.wallOffsetMs + Math.floor(sched.nowMs * skew.rate),
    monotonicMs: () => sched.nowMs * skew.rate,
    setTimeout: (callback, delayMs) => sched.schedule(toSim(delayMs), callback, owner) as unknown as TimerHandle,
    clearTimeout: (handle) => sched.cancel(handle as unknown as SimEvent),
    yield: () => (owner.alive ? new Promise<void>((resolve) => sched.schedule(0, resolve, owner)) : never()),
    sleep: (delayMs, signal) => {
      if (!owner.alive) return never();
      return new Promise<void>((resolve, reject) => {
        if (signal?.aborted) {
          reject(abortError(signal.reason));
          return;
        }
        const onAbort = (): void => {
          sched.cancel(ev);
          reject(abortError(signal!.reason));
        };
        const ev = sched.schedule(
          toSim(delayMs),
          () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
          owner,
        );
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    },
  };
}

/** The Random seam over the tests' seeded PRNG (mulberry32). */
export function simRandom(rng: Rng): Random {
  return { float: () => rng.float(), int: (bound) => rng.int(bound), bytes: (n) => rng.bytes(n) };
}

/** A PRNG derived from a seed and a purpose, so one stream's draws do not shift another's. */
export function derivedRng(seed: number, purpose: string): Rng {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (let i = 0; i < purpose.length; i++) h = Math.imul(h ^ purpose.charCodeAt(i), 0x01000193) >>> 0;
  return seededRng(h);
}
