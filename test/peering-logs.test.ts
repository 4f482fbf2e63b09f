/**
 * How peering compares two members' pg logs (src/daemon/peering.ts, pure
 * functions): equal heads are not equal logs when one has a gap (a write
 * its store refused while a later write of the pg committed), and the
 * point up to which two logs agree stops before the first entry only one
 * of them holds, so recovery copies every object from there on.
 */
import { expect, it } from 'vitest';
import { commonPoint, sameLog } from '../src/daemon/peering.js';
import type { LogEntry, MemberInfo } from '../src/protocol/osd-messages.js';

const entry = (version: number, epoch = 1): LogEntry => ({ epoch, version, object: `obj-${version}`, kind: 'modify', request: null });
function log(versions: Array<number | [number, number]>, tail = 0): MemberInfo {
  const entries = versions.map((v) => (Array.isArray(v) ? entry(v[0], v[1]) : entry(v)));
  const last = entries[entries.length - 1];
  return { head: last ? { epoch: last.epoch, version: last.version } : { epoch: 1, version: tail }, tail: { epoch: 1, version: tail }, lastEpochStarted: 1, lastActing: [], entries };
}

it('the same head with a gap is not the same log, either way round', () => {
  const full = log([1, 2, 3, 4, 5, 6]);
  const gap = log([1, 2, 3, 4, 6]);
  expect(sameLog(full, full)).toBe(true);
  expect(sameLog(gap, full)).toBe(false);
  expect(sameLog(full, gap)).toBe(false);
  // A target whose log reaches further back than the source's is the same log if it agrees over the source's.
  expect(sameLog(log([1, 2, 3, 4, 5, 6]), log([4, 5, 6], 3))).toBe(true);
});

it('the common point stops before the first entry only one log holds', () => {
  // Target lacks 5: everything after 4 is recovered (5 and 6 named by the source, 6 by the target).
  expect(commonPoint(log([1, 2, 3, 4, 6]), log([1, 2, 3, 4, 5, 6]))?.version).toBe(4);
  // Source lacks 5: the target's 5 is divergent, recovered from the source's state.
  expect(commonPoint(log([1, 2, 3, 4, 5, 6]), log([1, 2, 3, 4, 6]))?.version).toBe(4);
  // Behind: the target's head.
  expect(commonPoint(log([1, 2, 3]), log([1, 2, 3, 4, 5]))?.version).toBe(3);
  // Divergent entries of an older epoch after 2: back to 2.
  expect(commonPoint(log([1, 2, [3, 1], [4, 1]]), log([1, 2, [3, 2], [4, 2], [5, 2]]))?.version).toBe(2);
  // They disagree from the first entry above both tails: no common point (backfill).
  expect(commonPoint(log([2, 3]), log([1, 2, 3]))).toBeNull();
});
