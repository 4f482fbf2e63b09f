/**
 * A pg's scrub record (src/daemon/scrub-record.ts) on a real object store,
 * and the background scheduler's choice (scrub-scheduler.ts scrubDue).
 *
 * Record: what a scrub left and when it ran loads back after the store is
 * closed and opened again; more inconsistencies than a pg keeps are cut to
 * limits.scrubInconsistenciesKeptMax with the count of all kept; a new
 * record replaces the old one whole; a record that does not decode is
 * ignored (the pg counts as never scrubbed here) instead of failing the load.
 *
 * Schedule: a pg is due an interval after its recorded scrub (deep: after
 * its recorded deep scrub); pgs never scrubbed here are first due at moments
 * spread over the interval (100 pgs land in every tenth of it, none at
 * once), each planned once; a failed scrub waits for its retry time.
 *
 * Replies (a scrub's result, `pg inconsistent`) are checked like the record:
 * an inconsistency with an unknown kind or a malformed field is a ProtocolError.
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { ObjectStore } from '../src/store/index.js';
import { limits } from '../src/lib/limits.js';
import { loadScrubRecord, scrubRecordObject, scrubRecordOps, type ScrubRecord } from '../src/daemon/scrub-record.js';
import { scrubDue } from '../src/daemon/scrub-scheduler.js';
import type { Pg } from '../src/daemon/pg.js';
import { decodePgInconsistentReply, decodePgScrubResult, INCONSISTENCY_KINDS, type Inconsistency } from '../src/protocol/osd-admin-messages.js';
import { encodeControl } from '../src/protocol/osd-messages.js';
import { isTesseraError } from '../src/lib/errors.js';
import { makeTempDir } from './helpers/tmp.js';
import { seededRng } from './helpers/random.js';

const io = systemIo();
let dir: Awaited<ReturnType<typeof makeTempDir>>;
let store: ObjectStore;

const open = (create: boolean): Promise<ObjectStore> =>
  ObjectStore.open({ io, path: dir.path, ...(create ? { create: { clusterId: 'c1', diskId: 1 } } : {}), maintenance: { enabled: false } });

beforeEach(async () => {
  dir = await makeTempDir('scrub-record');
  store = await open(true);
});
afterEach(async () => {
  await store.close();
  await dir.remove();
});

const inconsistency = (i: number): Inconsistency => ({
  object: `obj-${i}`,
  diskId: i % 3,
  // Every kind of the closed list round-trips.
  kinds: [INCONSISTENCY_KINDS[i % INCONSISTENCY_KINDS.length]!],
  detail: `detail ${i}`,
  authDiskId: i % 5 === 0 ? null : 7,
  repaired: false,
});

it('a scrub record loads back after a reopen, cut to the kept limit with the count of all', async () => {
  expect(await loadScrubRecord(store, 2, 5)).toBeNull();
  const many = Array.from({ length: limits.scrubInconsistenciesKeptMax + 37 }, (_, i) => inconsistency(i));
  const record: ScrubRecord = { scrubbedAtMs: 1_700_000_000_123, deepScrubbedAtMs: 1_700_000_000_000, lastDeep: true, unrepaired: many.length, kept: many };
  await store.transact(scrubRecordOps(2, 5, record));
  await store.close();
  store = await open(false);
  const loaded = await loadScrubRecord(store, 2, 5);
  expect(loaded).toEqual({ ...record, kept: many.slice(0, limits.scrubInconsistenciesKeptMax) });
  expect(loaded!.unrepaired).toBe(limits.scrubInconsistenciesKeptMax + 37);
  // Another pg's record is its own.
  expect(await loadScrubRecord(store, 2, 6)).toBeNull();

  // A later scrub replaces it whole.
  const clean: ScrubRecord = { scrubbedAtMs: 1_700_000_100_000, deepScrubbedAtMs: 1_700_000_000_000, lastDeep: false, unrepaired: 0, kept: [] };
  await store.transact(scrubRecordOps(2, 5, clean));
  expect(await loadScrubRecord(store, 2, 5)).toEqual(clean);
  const page = await store.omapList(scrubRecordObject(2, 5), { limit: 1000 });
  expect(page.entries).toHaveLength(0);
});

it('a scrub record that does not decode is ignored', async () => {
  await store.transact(scrubRecordOps(1, 0, { scrubbedAtMs: 5, deepScrubbedAtMs: 0, lastDeep: false, unrepaired: 2, kept: [inconsistency(1), inconsistency(2)] }));
  const id = scrubRecordObject(1, 0);
  await store.transact([{ type: 'omapSet', id, entries: [[Buffer.from([0x69, 0, 0, 0, 1]), Buffer.from('{not json')]] }]);
  expect(await loadScrubRecord(store, 1, 0)).toBeNull();
  await store.transact([{ type: 'setXattr', id, name: 'scrub', value: Buffer.from('{"format":1}') }]);
  expect(await loadScrubRecord(store, 1, 0)).toBeNull();
});

const fresh = (): Pg['scrub'] => ({ scrubbedAtMs: 0, deepScrubbedAtMs: 0, lastDeep: false, inconsistent: 0, left: [], firstDueAtMs: 0, firstDeepDueAtMs: 0, retryAtMs: 0, running: null });
const HOUR = 3_600_000;

it('the scheduler uses the recorded times and spreads pgs never scrubbed here over the interval', () => {
  const o = { intervalMs: 24 * HOUR, deepIntervalMs: 7 * 24 * HOUR };
  const now = 1_800_000_000_000;
  const never = (): number => {
    throw new Error('a pg with a record draws no first due time');
  };
  // Recorded: due an interval after the recorded scrub, deep after the recorded deep scrub.
  const recorded = { ...fresh(), scrubbedAtMs: now - 23 * HOUR, deepScrubbedAtMs: now - 23 * HOUR };
  expect(scrubDue(recorded, o, now, never)).toBeNull();
  expect(scrubDue(recorded, o, now + HOUR, never)).toEqual({ deep: false });
  expect(scrubDue({ ...recorded, deepScrubbedAtMs: now - 8 * 24 * HOUR }, o, now, never)).toEqual({ deep: true });
  // A failed background scrub waits for its retry time.
  expect(scrubDue({ ...recorded, retryAtMs: now + 2 * HOUR }, o, now + HOUR, never)).toBeNull();

  // Never scrubbed here: first due times spread over the next interval, each planned once.
  const rng = seededRng(11);
  const pgs = Array.from({ length: 100 }, fresh);
  for (const s of pgs) expect(scrubDue(s, o, now, () => rng.float())).toBeNull();
  const tenths = new Set(pgs.map((s) => Math.floor(((s.firstDueAtMs - now) / o.intervalMs) * 10)));
  expect([...tenths].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (const s of pgs) {
    expect(s.firstDueAtMs).toBeGreaterThan(now);
    expect(s.firstDueAtMs).toBeLessThanOrEqual(now + o.intervalMs);
    expect(s.firstDeepDueAtMs).toBeGreaterThan(now);
    expect(s.firstDeepDueAtMs).toBeLessThanOrEqual(now + o.deepIntervalMs);
  }
  const planned = pgs.map((s) => s.firstDueAtMs);
  const first = Math.min(...planned);
  const s0 = pgs[planned.indexOf(first)]!;
  expect(scrubDue(s0, o, first - 1, never)).toBeNull();
  expect(scrubDue(s0, o, first, never)).toEqual({ deep: s0.firstDeepDueAtMs <= first });
  expect(pgs.filter((s) => scrubDue(s, o, first, never) !== null)).toHaveLength(1);
});

it('scrub replies are checked like records: an unknown kind, a bad disk id or repaired flag is a ProtocolError', () => {
  const good = { object: 'o', diskId: 2, kinds: ['shard'], detail: 'd', authDiskId: null, repaired: true };
  const scrubReply = (i: object): Buffer => encodeControl({ poolId: 1, pg: 0, deep: true, scrubbed: true, inconsistencies: [i] });
  const listReply = (i: object): Buffer => encodeControl({ diskId: 1, epoch: 3, pgs: [{ poolId: 1, pg: 0, deep: true, scrubbedAgoMs: 5, unrepaired: 1, inconsistencies: [i] }] });
  expect(decodePgScrubResult(scrubReply(good)).inconsistencies).toEqual([good]);
  expect(decodePgInconsistentReply(listReply(good)).pgs[0]!.inconsistencies).toEqual([good]);
  for (const bad of [{ kinds: ['bogus'] }, { kinds: 7 }, { kinds: [] }, { authDiskId: 'nope' }, { diskId: -1 }, { repaired: 'maybe' }, { object: 5 }]) {
    const i = { ...good, ...bad };
    expect(() => decodePgScrubResult(scrubReply(i)), JSON.stringify(bad)).toThrow(/ProtocolError|kinds|authDiskId|diskId|repaired|object/);
    expect(() => decodePgInconsistentReply(listReply(i)), JSON.stringify(bad)).toThrow(/ProtocolError|kinds|authDiskId|diskId|repaired|object/);
    try {
      decodePgScrubResult(scrubReply(i));
    } catch (err) {
      expect(isTesseraError(err, 'ProtocolError'), String(err)).toBe(true);
    }
  }
});
