/**
 * A pg log as a member keeps it in its store (src/daemon/pg-log.ts), on a
 * real object store: appended entries load back in order with their tail;
 * a replacement keeps only what it names; and a stored log holding entries
 * at or below its tail (what a trim or a replacement should have removed:
 * seen once in a 1000-fault run, where the pg's primary then failed every
 * load with "log entry 403 follows head 603" and the pg never peered again)
 * loads without them instead of failing.
 *
 * And what left such a log: a store holding more entries than a log keeps
 * (writes in flight decide their trims before earlier ones are remembered),
 * loaded (the load trims in memory only), then activated (infoOps wrote the
 * trimmed tail beside the entries still stored). infoOps now removes them in
 * the same transaction (the last case fails on 7b6ba5c: entries from
 * version 1 stay below a tail of 201).
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { ObjectStore, type StoreOp } from '../src/store/index.js';
import { LOG_ENTRIES_MAX, PgLog, metaObject } from '../src/daemon/pg-log.js';
import { Reader } from '../src/lib/codec.js';
import { readEntry } from '../src/protocol/osd-messages.js';
import type { LogEntry } from '../src/protocol/osd-messages.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
let dir: Awaited<ReturnType<typeof makeTempDir>>;
let store: ObjectStore;

beforeEach(async () => {
  dir = await makeTempDir('pg-log');
  store = await ObjectStore.open({ io, path: dir.path, create: { clusterId: 'c1', diskId: 1 }, maintenance: { enabled: false } });
});
afterEach(async () => {
  await store.close();
  await dir.remove();
});

const entry = (version: number, epoch = 3): LogEntry => ({ epoch, version, object: `obj-${version}`, kind: 'modify', request: null });
const versions = (log: PgLog): number[] => log.entries.map((e) => e.version);

it('appended entries load back in order; a replacement keeps only what it names', async () => {
  let log = await PgLog.load(store, 1, 7);
  expect(log.head.version).toBe(0);
  for (let v = 1; v <= 5; v++) {
    await store.transact(log.appendOps(entry(v)));
    log.remember(entry(v));
  }
  expect(versions(await PgLog.load(store, 1, 7))).toEqual([1, 2, 3, 4, 5]);
  await store.transact(PgLog.replaceOps(1, 7, { epoch: 3, version: 3 }, [entry(4), entry(5), entry(6)], { lastEpochStarted: 9, lastActing: [1, 2] }));
  log = await PgLog.load(store, 1, 7);
  expect(versions(log)).toEqual([4, 5, 6]);
  expect(log.tail.version).toBe(3);
  expect(log.info.lastActing).toEqual([1, 2]);
});

/** Store ops that put entries into pg 1.7's log omap as appendOps writes them, and nothing else (no trim, no info). */
async function rawEntries(entries: LogEntry[]): Promise<StoreOp[]> {
  const scratch = await PgLog.load(store, 1, 99); // an empty log: its appendOps is one omapSet of the entry
  return entries.map((e) => {
    const op = scratch.appendOps(e)[0]!;
    if (op.type !== 'omapSet') throw new Error(`appendOps began with ${op.type}`);
    return { type: 'omapSet', id: metaObject(1, 7), entries: op.entries };
  });
}

it('entries at or below the stored tail are left out of the loaded log, not a failed load', async () => {
  // The state the fault run found: a tail (603 there) below which entries were still in the omap (403 there).
  await store.transact(PgLog.replaceOps(1, 7, { epoch: 3, version: 6 }, [entry(7), entry(8)], { lastEpochStarted: 9, lastActing: [1, 2] }));
  await store.transact(await rawEntries([entry(4), entry(5), entry(6)]));
  const log = await PgLog.load(store, 1, 7);
  expect(versions(log)).toEqual([7, 8]);
  expect(log.tail.version).toBe(6);
  expect(log.head.version).toBe(8);
  // A stored log with nothing above its tail loads as empty at its tail.
  await store.transact(PgLog.replaceOps(1, 7, { epoch: 3, version: 6 }, [], { lastEpochStarted: 9, lastActing: [1, 2] }));
  await store.transact(await rawEntries([entry(5)]));
  const empty = await PgLog.load(store, 1, 7);
  expect(versions(empty)).toEqual([]);
  expect(empty.head.version).toBe(6);
});

/** The versions of pg 1.7's stored log entries, read straight from the omap (no PgLog logic). */
async function storedVersions(): Promise<number[]> {
  const out: number[] = [];
  let afterKey: Buffer | undefined;
  for (;;) {
    const page = await store.omapList(metaObject(1, 7), { limit: 1000, ...(afterKey ? { afterKey } : {}) });
    for (const [, v] of page.entries) out.push(readEntry(new Reader(v, 'Corrupt', 'entry')).version);
    if (!page.more || page.entries.length === 0) return out;
    afterKey = page.entries[page.entries.length - 1]![0];
  }
}

it('a log stored longer than kept, loaded and activated, is stored exactly as loaded (no entries left below its tail)', async () => {
  // A full log (LOG_ENTRIES_MAX + 199 entries: the next append trims), then 5 writes built while none of them is
  // remembered yet (in flight together): none of their transactions trims, the store ends with 5 entries more.
  const full = LOG_ENTRIES_MAX + 199;
  await store.transact(PgLog.replaceOps(1, 7, { epoch: 3, version: 0 }, Array.from({ length: full }, (_, i) => entry(i + 1)), { lastEpochStarted: 2, lastActing: [1, 2] }));
  const primary = await PgLog.load(store, 1, 7);
  const inFlight = [1, 2, 3, 4, 5].map((i) => entry(full + i));
  const txns = inFlight.map((e) => primary.appendOps(e));
  expect(txns.every((ops) => ops.length === 1), 'no write in flight trims').toBe(true);
  await Promise.all(txns.map((ops) => store.transact(ops)));
  expect((await storedVersions()).length).toBe(full + 5);

  // Peering reloads and activates it: the load trims in memory (to LOG_ENTRIES_MAX at the first entry past the
  // slack, then the rest), and activation persists that.
  const loaded = await PgLog.load(store, 1, 7);
  expect(loaded.entries.length).toBe(LOG_ENTRIES_MAX + 3);
  expect(loaded.tail.version).toBe(full + 5 - LOG_ENTRIES_MAX - 3);
  await store.transact(loaded.infoOps({ lastEpochStarted: 5, lastActing: [1, 2] }));
  expect(Math.min(...(await storedVersions()))).toBeGreaterThan(loaded.tail.version);
  const again = await PgLog.load(store, 1, 7);
  expect(again.tail).toEqual(loaded.tail);
  expect(versions(again)).toEqual(versions(loaded));
  expect(again.info.lastEpochStarted).toBe(5);
});
