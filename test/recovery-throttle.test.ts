/**
 * The RecoveryThrottle (src/daemon/recovery-throttle.ts) on a hand-driven
 * clock, with copies that finish when the test says: it bounds copies at
 * once; blocking copies (a pg waits for them before serving I/O) go before
 * background ones, and within a class pgs with fewer up-to-date members go
 * first (the last redundancy is rebuilt first), equal priorities in order;
 * while clients are active (in flight, or ended less than clientRecentMs
 * ago) background copies run at most opsInflightBusyMax at once and get
 * their full slots back when clients pause, blocking copies never held
 * back; background copies wait out the byte budget's debt, blocking copies
 * add to it without waiting; a cancelled wait leaves the queue.
 */
import { expect, it } from 'vitest';
import type { Clock } from '../src/io/io.js';
import { RecoveryThrottle, type ClientActivity } from '../src/daemon/recovery-throttle.js';

interface ManualClock extends Clock {
  advance(ms: number): void;
  /** Delays asked of sleep(), in order. */
  slept: number[];
}

function manualClock(): ManualClock {
  let now = 1_000_000;
  const sleepers: { dueMs: number; resolve: () => void }[] = [];
  const clock: ManualClock = {
    slept: [],
    nowMs: () => now,
    monotonicMs: () => now,
    setTimeout: () => {
      throw new Error('not used');
    },
    clearTimeout: () => undefined,
    yield: () => Promise.resolve(),
    sleep(delayMs, signal) {
      clock.slept.push(delayMs);
      return new Promise<void>((resolve, reject) => {
        signal?.addEventListener('abort', () => reject(new Error('aborted')), { once: true });
        sleepers.push({ dueMs: now + delayMs, resolve });
      });
    },
    advance(ms) {
      now += ms;
      for (const s of sleepers.filter((x) => x.dueMs <= now)) {
        sleepers.splice(sleepers.indexOf(s), 1);
        s.resolve();
      }
    },
  };
  return clock;
}

/** Copies that record when they start and end when finish(id) is called. */
function copies(): { copy: (id: string) => () => Promise<void>; started: string[]; running: Set<string>; finish: (id: string) => Promise<void> } {
  const started: string[] = [];
  const running = new Set<string>();
  const ends = new Map<string, () => void>();
  return {
    started,
    running,
    copy: (id) => () =>
      new Promise<void>((resolve) => {
        started.push(id);
        running.add(id);
        ends.set(id, () => {
          running.delete(id);
          resolve();
        });
      }),
    async finish(id) {
      const end = ends.get(id);
      if (!end) throw new Error(`copy ${id} is not running`);
      end();
      await settle();
    },
  };
}

/** Lets promise continuations run (the throttle hands a freed slot on in a continuation). */
const settle = async (): Promise<void> => {
  for (let i = 0; i < 10; i++) await Promise.resolve();
};

it('bounds copies at once; blocking copies first, then fewer up-to-date members first, equal priorities in order', async () => {
  const clock = manualClock();
  const t = new RecoveryThrottle(clock, { opsInflightMax: 2, bytesPerSec: 0 });
  const c = copies();
  const all = [
    t.run({ priority: 2, sizeBytes: 1, blocking: false }, c.copy('bg2-a')),
    t.run({ priority: 2, sizeBytes: 1, blocking: false }, c.copy('bg2-b')),
    t.run({ priority: 2, sizeBytes: 1, blocking: false }, c.copy('bg2-c')),
    t.run({ priority: 1, sizeBytes: 1, blocking: false }, c.copy('bg1')), // a pg down to its last up-to-date copy
    t.run({ priority: 2, sizeBytes: 1, blocking: true }, c.copy('block2')),
    t.run({ priority: 0, sizeBytes: 1, blocking: true }, c.copy('block0')),
  ];
  await settle();
  expect(c.started).toEqual(['bg2-a', 'bg2-b']);
  expect(t.counts).toEqual({ running: 2, waiting: 4 });
  await c.finish('bg2-a');
  await c.finish('bg2-b');
  expect(c.running.size).toBe(2);
  for (const id of ['block0', 'block2', 'bg1']) await c.finish(id);
  await c.finish('bg2-c');
  await Promise.all(all);
  expect(c.started).toEqual(['bg2-a', 'bg2-b', 'block0', 'block2', 'bg1', 'bg2-c']);
  expect(t.stats).toMatchObject({ copies: 6, bytes: 6, blockingCopies: 2 });
});

it('while clients are active, background copies run opsInflightBusyMax at once; blocking ones are not held; all slots come back when clients pause', async () => {
  const clock = manualClock();
  let inflight = 1;
  let lastEndedMs = -Infinity;
  const clients: ClientActivity = { inflight: () => inflight, lastEndedMs: () => lastEndedMs };
  const t = new RecoveryThrottle(clock, { opsInflightMax: 3, opsInflightBusyMax: 1, clientRecentMs: 100, bytesPerSec: 0 }, clients);
  expect(t.clientsActive()).toBe(true);
  const c = copies();
  const all = ['a', 'b', 'c', 'd'].map((id) => t.run({ priority: 1, sizeBytes: 1, blocking: false }, c.copy(id)));
  await settle();
  expect(c.started).toEqual(['a']); // one background copy while a client request is in flight
  all.push(t.run({ priority: 1, sizeBytes: 1, blocking: true }, c.copy('urgent')));
  await settle();
  expect(c.started).toEqual(['a', 'urgent']); // a pg waits for it: not held back for clients
  // The client request ends: still active for clientRecentMs.
  inflight = 0;
  lastEndedMs = clock.monotonicMs();
  clock.advance(50);
  expect(t.clientsActive()).toBe(true);
  await c.finish('a');
  expect(c.started).toEqual(['a', 'urgent']); // 'urgent' holds the one slot background copies get
  await c.finish('urgent');
  expect(c.started).toEqual(['a', 'urgent', 'b']);
  // Clients pause: the next end hands out every slot.
  clock.advance(100);
  expect(t.clientsActive()).toBe(false);
  await c.finish('b');
  expect([...c.running].sort()).toEqual(['c', 'd']);
  await c.finish('c');
  await c.finish('d');
  await Promise.all(all);
});

it('background copies wait out the byte budget; blocking copies add to its debt without waiting', async () => {
  const clock = manualClock();
  const MiB = 1024 * 1024;
  const t = new RecoveryThrottle(clock, { opsInflightMax: 4, bytesPerSec: MiB });
  const c = copies();
  // The bucket holds one second's worth: the first MiB goes at once.
  const first = t.run({ priority: 1, sizeBytes: MiB, blocking: false }, c.copy('first'));
  await settle();
  expect(c.started).toEqual(['first']);
  // A blocking 2 MiB copy starts at once, 2 s in debt; a background MiB then waits 3 s.
  const urgent = t.run({ priority: 1, sizeBytes: 2 * MiB, blocking: true }, c.copy('urgent'));
  const later = t.run({ priority: 1, sizeBytes: MiB, blocking: false }, c.copy('later'));
  await settle();
  expect(c.started).toEqual(['first', 'urgent']);
  expect(clock.slept).toEqual([3000]);
  clock.advance(2999);
  await settle();
  expect(c.started).toEqual(['first', 'urgent']);
  clock.advance(1);
  await settle();
  expect(c.started).toEqual(['first', 'urgent', 'later']);
  for (const id of ['first', 'urgent', 'later']) await c.finish(id);
  await Promise.all([first, urgent, later]);
  expect(t.stats).toMatchObject({ copies: 3, bytes: 4 * MiB, blockingCopies: 1 });
});

it('a cancelled wait leaves the queue', async () => {
  const clock = manualClock();
  const t = new RecoveryThrottle(clock, { opsInflightMax: 1, bytesPerSec: 0 });
  const c = copies();
  const first = t.run({ priority: 0, sizeBytes: 0, blocking: false }, c.copy('first'));
  const abort = new AbortController();
  const second = t.run({ priority: 0, sizeBytes: 0, blocking: false, signal: abort.signal }, c.copy('second'));
  await settle();
  expect(t.counts).toEqual({ running: 1, waiting: 1 });
  abort.abort();
  await expect(second).rejects.toMatchObject({ code: 'Aborted' });
  expect(t.counts).toEqual({ running: 1, waiting: 0 });
  await c.finish('first');
  await first;
  expect(c.started).toEqual(['first']);
  expect(t.counts).toEqual({ running: 0, waiting: 0 });
});
