/**
 * The simulation's event loop: a virtual clock over a heap of timed events.
 * Time moves only when the process has nothing else to run: before each
 * event the real event loop is given one turn (setImmediate), which drains
 * every promise continuation and process.nextTick queued so far (stream
 * internals use them); then the earliest event runs and the clock jumps to
 * its time. Events at one time run in the order they were scheduled, so a
 * run is a function of its seed.
 *
 * Every event may belong to a simulated process (SimProcess): a dead
 * process's events are dropped (its timers never fire, its I/O never
 * completes), a paused one's are held until it resumes (SIGSTOP).
 */
export class SimProcess {
  alive = true;
  paused = false;
  /** Events that came due while paused, run at resume in order. */
  held: SimEvent[] = [];

  constructor(
    /** For traces: e.g. "osd.3#2" (disk 3, second incarnation). */
    readonly name: string,
    /** The machine: network cuts are between hosts. */
    readonly host: string,
  ) {}
}

export interface SimEvent {
  atMs: number;
  seq: number;
  run: () => void;
  owner: SimProcess | null;
  cancelled: boolean;
}

export class Scheduler {
  nowMs = 0;
  eventsRun = 0;
  private seq = 0;
  private readonly heap: SimEvent[] = [];

  schedule(delayMs: number, run: () => void, owner: SimProcess | null): SimEvent {
    const d = Number.isFinite(delayMs) && delayMs > 0 ? delayMs : 0;
    const ev: SimEvent = { atMs: this.nowMs + d, seq: this.seq++, run, owner, cancelled: false };
    this.push(ev);
    return ev;
  }

  cancel(ev: SimEvent): void {
    ev.cancelled = true;
  }

  /** Events that came due while the process was paused run now, in their order. */
  resume(p: SimProcess): void {
    p.paused = false;
    for (const ev of p.held.splice(0)) if (!ev.cancelled) this.schedule(0, ev.run, p);
  }

  kill(p: SimProcess): void {
    p.alive = false;
    p.paused = false;
    p.held = [];
  }

  /** Pending events (dropped ones included until they come due). */
  get pending(): number {
    return this.heap.length;
  }

  /**
   * Runs events until `until` settles and returns its outcome. Fails when the
   * promise can no longer settle (no event left) or virtual time passes
   * deadlineMs: both are hangs of the code under test.
   */
  async runUntil<T>(until: Promise<T>, what: string, deadlineMs = Number.POSITIVE_INFINITY): Promise<T> {
    let settled = false;
    until.then(
      () => (settled = true),
      () => (settled = true),
    );
    for (;;) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (settled) return until;
      const ev = this.pop();
      if (!ev) throw new Error(`simulation: nothing left to run and ${what} never finished (at ${this.nowMs} ms)`);
      if (ev.atMs > deadlineMs) {
        this.push(ev);
        throw new Error(`simulation: ${what} did not finish by ${deadlineMs} ms of simulated time`);
      }
      this.nowMs = Math.max(this.nowMs, ev.atMs);
      const owner = ev.owner;
      if (owner && !owner.alive) continue;
      if (owner?.paused) {
        owner.held.push(ev);
        continue;
      }
      this.eventsRun++;
      ev.run();
    }
  }

  private pop(): SimEvent | undefined {
    for (;;) {
      const h = this.heap;
      if (h.length === 0) return undefined;
      const top = h[0]!;
      const last = h.pop()!;
      if (h.length > 0) {
        h[0] = last;
        this.down(0);
      }
      if (!top.cancelled) return top;
    }
  }

  private push(ev: SimEvent): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && before(h[l]!, h[m]!)) m = l;
      if (r < h.length && before(h[r]!, h[m]!)) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}

/** A promise that never settles: what an operation of a dead process returns. */
export function never<T>(): Promise<T> {
  return new Promise<T>(() => undefined);
}
