/**
 * Settling two-phase writes at peering (pure; src/daemon/ec-peering.ts runs it).
 *
 * A version is committed somewhere only after every acting member of its
 * interval staged it, and logs hold committed versions only. So, with H the
 * head of the authoritative member (newestMember):
 *
 * - versions up to H are committed: a member behind H commits the ones it
 *   has staged, in order, while each matches the authoritative log (same
 *   epoch, object, kind and request) and follows its head;
 * - versions past H were committed nowhere: the run of them, in order, that
 *   every acting member has staged identically is rolled FORWARD (committed
 *   everywhere); from the first one some member lacks, all are rolled BACK
 *   (their staging objects removed: no shard was touched by them).
 *
 * A member whose data belongs to another position, or whose head is not on
 * the authoritative history (divergent), commits nothing: recovery rebuilds
 * it. Everything not committed is removed by the member (ecResolve).
 */
import { compareVersions, type Eversion, type LogEntry } from '../protocol/osd-messages.js';
import { sameEntry } from './ec-record.js';

export interface ResolveMember {
  position: number;
  /** Map epoch of the last interval the member was activated in. */
  lastEpochStarted: number;
  head: Eversion;
  tail: Eversion;
  entries: readonly LogEntry[];
  /** Position the member's data belongs to (-1: unknown). */
  shard: number;
  stagings: ReadonlyArray<{ shard: number; entry: LogEntry }>;
}

export interface ResolvePlan {
  /** Versions past the newest head rolled forward, in order. */
  forward: LogEntry[];
  /** Per member (same order as the input): the versions it commits, in order. */
  commit: LogEntry[][];
}

/**
 * The authoritative member: the newest last activated interval first, then
 * the newest head (the first of equals). A member of a later interval holds
 * every write acknowledged before it (its peering saw to that); a longer log
 * from an older interval holds writes that were rolled back since (e.g. a
 * primary that committed a version locally, then crashed, while the others
 * had not all staged it): those are divergent, rebuilt from the sources.
 */
export function newestMember<T extends { head: Eversion; lastEpochStarted: number }>(members: readonly T[]): number {
  let best = 0;
  members.forEach((m, i) => {
    const b = members[best]!;
    if (m.lastEpochStarted > b.lastEpochStarted || (m.lastEpochStarted === b.lastEpochStarted && compareVersions(m.head, b.head) > 0)) best = i;
  });
  return best;
}

const ownStaging = (m: ResolveMember, version: number): LogEntry | undefined => m.stagings.find((s) => s.shard === m.position && s.entry.version === version)?.entry;

/** Whether the member's head is a point of the authoritative history. */
export function onHistory(head: Eversion, auth: { head: Eversion; tail: Eversion; entries: readonly LogEntry[] }): boolean {
  if (head.version === 0 && head.epoch === 0) return auth.tail.version === 0;
  if (compareVersions(head, auth.tail) === 0) return true;
  return auth.entries.some((e) => e.version === head.version && e.epoch === head.epoch);
}

/** The versions up to the authoritative head the member can commit from its stagings, in order (null: it can commit nothing). */
function chainOf(m: ResolveMember, auth: ResolveMember, byVersion: Map<number, LogEntry>): LogEntry[] | null {
  const ownsData = m.shard === m.position || (m.shard === -1 && m.entries.length === 0 && m.head.version === 0);
  if (!ownsData || !onHistory(m.head, auth)) return null;
  const out: LogEntry[] = [];
  for (let v = m.head.version + 1; v <= auth.head.version; v++) {
    const t = byVersion.get(v);
    const s = ownStaging(m, v);
    if (!t || !s || !sameEntry(s, t)) break;
    out.push(t);
  }
  return out;
}

export function planResolve(members: readonly ResolveMember[]): ResolvePlan {
  const auth = members[newestMember(members)]!;
  const byVersion = new Map(auth.entries.map((e) => [e.version, e]));
  const chains = members.map((m) => chainOf(m, auth, byVersion));
  // Past the head: forward only while every member reaches the previous version and staged this one identically.
  const forward: LogEntry[] = [];
  const reaches = (m: ResolveMember, i: number, v: number): boolean => chains[i] !== null && m.head.version + chains[i]!.length + forward.length === v - 1;
  for (let v = auth.head.version + 1; ; v++) {
    const candidate = ownStaging(members[0]!, v);
    if (!candidate) break;
    const everywhere = members.every((m, i) => {
      const s = ownStaging(m, v);
      return reaches(m, i, v) && s !== undefined && sameEntry(s, candidate);
    });
    if (!everywhere) break;
    forward.push(candidate);
  }
  return { forward, commit: chains.map((c) => (c ? [...c, ...forward] : [])) };
}
