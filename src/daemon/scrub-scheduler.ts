/**
 * Background scrubs of the pgs a daemon is primary of (started by the daemon
 * process, src/cli/daemon.ts): one pg at a time, without repair, when an
 * interval has passed since its last scrub (deep: its last deep scrub), as
 * the pg's scrub record keeps them across restarts (scrub-record.ts); a pg
 * never scrubbed by this disk is first due at a moment spread over the
 * interval. What is found is logged and shown in status and metrics
 * (pg-scrub.ts records it). Limits: one pg scrubbed at a time; the check
 * runs every limits.scrubCheckIntervalMsDefault (shorter intervals: four
 * times per interval, at least SCHEDULER_CHECK_MS_MIN apart).
 */
import { toTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';
import { scrubPgSerialized } from './pg-scrub.js';

const SCHEDULER_CHECK_MS_MIN = 100;

export interface ScrubScheduleOptions {
  /** Shallow scrub of each pg this often; 0: never in the background. */
  intervalMs?: number;
  /** Deep scrub of each pg this often; 0: never in the background. */
  deepIntervalMs?: number;
  checkIntervalMs?: number;
  bytesPerSec?: number;
}

/**
 * What the background scheduler does with one pg now (wall-clock nowMs): a deep or shallow scrub, or
 * nothing. A pg is due an interval after its last scrub (deep: deep scrub) as its scrub record says; a pg
 * never scrubbed by this disk is first due at a moment drawn uniformly over the next interval (planned
 * here, once: `random` in [0, 1)), so the pgs of a new cluster, or of a disk that became their primary,
 * are spread over the interval instead of all due at once; a failed background scrub is not tried again
 * before retryAtMs. A deep scrub counts as a scrub.
 */
export function scrubDue(s: Pg['scrub'], o: { intervalMs: number; deepIntervalMs: number }, nowMs: number, random: () => number): { deep: boolean } | null {
  const dueAt = (lastAtMs: number, intervalMs: number, first: 'firstDueAtMs' | 'firstDeepDueAtMs'): number => {
    if (intervalMs <= 0) return Infinity;
    if (lastAtMs > 0) return lastAtMs + intervalMs;
    if (s[first] === 0) s[first] = nowMs + Math.floor(random() * intervalMs) + 1;
    return s[first];
  };
  const deep = dueAt(s.deepScrubbedAtMs, o.deepIntervalMs, 'firstDeepDueAtMs') <= nowMs;
  const shallow = dueAt(s.scrubbedAtMs, o.intervalMs, 'firstDueAtMs') <= nowMs;
  if ((!deep && !shallow) || nowMs < s.retryAtMs) return null;
  return { deep };
}

/**
 * Background scrubs: every checkIntervalMs, the pgs this daemon is primary of
 * (active) that are due (scrubDue: an interval after their last scrub, kept
 * across restarts in their scrub record; a pg never scrubbed here, at a
 * moment spread over the interval) are scrubbed one at a time (deep when the
 * deep interval is due), without repair: what is found is logged and shown
 * in status and metrics.
 */
export class ScrubScheduler {
  private readonly abort = new AbortController();
  private readonly loop: Promise<void>;

  constructor(
    private readonly osd: Osd,
    private readonly o: ScrubScheduleOptions = {},
  ) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    const { clock, random } = this.osd.io;
    const { signal } = this.abort;
    const intervalMs = this.o.intervalMs ?? limits.scrubIntervalMsDefault;
    const deepIntervalMs = this.o.deepIntervalMs ?? limits.deepScrubIntervalMsDefault;
    // Short intervals (tests) are looked at four times per interval.
    const quarter = [intervalMs, deepIntervalMs].filter((ms) => ms > 0).map((ms) => Math.max(SCHEDULER_CHECK_MS_MIN, ms / 4));
    const checkMs = this.o.checkIntervalMs ?? Math.min(limits.scrubCheckIntervalMsDefault, ...quarter);
    while (!signal.aborted) {
      await clock.sleep(checkMs, signal).catch(() => undefined);
      for (const pg of [...this.osd.pgs.values()]) {
        if (signal.aborted) return;
        if (pg.primary !== this.osd.diskId || pg.state !== 'active') continue;
        const due = scrubDue(pg.scrub, { intervalMs, deepIntervalMs }, clock.nowMs(), () => random.float());
        if (!due) continue;
        try {
          await scrubPgSerialized(this.osd, pg, { deep: due.deep, repair: false, ...(this.o.bytesPerSec !== undefined ? { bytesPerSec: this.o.bytesPerSec } : {}) });
        } catch (err) {
          if (!signal.aborted) console.error(`disk ${this.osd.diskId}: pg ${pg.key}: background scrub failed: ${toTesseraError(err).message}`);
          // Tried: not again before an interval (the shorter one) has passed.
          pg.scrub.retryAtMs = clock.nowMs() + Math.min(...[intervalMs, deepIntervalMs].filter((ms) => ms > 0));
        }
      }
    }
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }
}
