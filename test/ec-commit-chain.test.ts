/**
 * Why an erasure-coded member's pg log cannot have a gap (and EC peering may
 * compare heads): a member's commits form a chain in its store. Each commit
 * transaction (src/daemon/ec-record.ts commitOps, as ec-member.ts
 * commitInTurn builds it, on top of the last commit it submitted) asserts
 * the pg's `head` xattr holds the previous version; the store rejects a
 * refused transaction alone, without its changes, also when later ones
 * share its commit group. So when the store refuses version N (here a
 * per-store limit: the shard would have more xattrs than this store allows,
 * the others' being larger), version N+1, submitted right behind it before
 * anyone knew, is refused too (Conflict), and the member's log ends at N-1
 * with no later entry: it is behind, which peering sees by its head, not
 * holed. A real ObjectStore on a temporary directory; no daemon.
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { systemIo } from '../src/io/system.js';
import { ObjectStore } from '../src/store/index.js';
import { commitOps, encodeRecord, readHead, stageOps, type EcCommitRecord } from '../src/daemon/ec-record.js';
import { dataNs, PgLog } from '../src/daemon/pg-log.js';
import type { LogEntry } from '../src/protocol/osd-messages.js';
import { isTesseraError } from '../src/lib/errors.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
const POOL = 3;
const PG = 5;
const SHARD = 1;
let dir: { path: string; remove: () => Promise<void> };
let store: ObjectStore;

beforeEach(async () => {
  dir = await makeTempDir('ec-chain');
  // At most 4 xattrs per object: a shard carries _s and _v, so a write setting 3 client xattrs is refused here.
  store = await ObjectStore.open({ io, path: dir.path, create: { clusterId: 'c', diskId: 1 }, maintenance: { enabled: false }, limits: { xattrCountMax: 4 } });
});
afterEach(async () => {
  await store.close();
  await dir.remove();
});

const entry = (version: number, object: string): LogEntry => ({ epoch: 2, version, object, kind: 'modify', request: { client: 'ab'.repeat(16), seq: version } });

/** The commit record of a whole-shard write of `data` (one run) setting `xattrs`. */
function record(version: number, object: string, data: Buffer, xattrs: number): EcCommitRecord {
  const setXattrs = Array.from({ length: xattrs }, (_, i) => [`x${i}`, Buffer.from('v')] as [string, Buffer]);
  return { entry: entry(version, object), shard: SHARD, exists: true, recreate: true, cutShardBytes: null, shardBytes: data.length, runs: [{ offsetBytes: 0, lengthBytes: data.length }], sizeBytes: data.length * 2, setXattrs, removeXattrs: [] };
}

const stage = (r: EcCommitRecord, data: Buffer): Promise<void> => store.transact(stageOps(POOL, PG, r, encodeRecord(r), data));
const codeOf = (p: Promise<unknown>): Promise<string> => p.then(() => 'committed', (err: unknown) => (isTesseraError(err) ? err.code : String(err)));

it('a commit the store refuses fails every commit after it on that member: its log ends before it, with no gap', async () => {
  const log = await PgLog.load(store, POOL, PG);
  const first = randomBytes(4096);
  const r1 = record(1, 'a', first, 0);
  await stage(r1, first);
  await store.transact(commitOps(POOL, PG, r1, { epoch: 0, version: 0 }, log));
  log.remember(r1.entry);

  // Version 2 (3 client xattrs: refused by this store) and version 3 (another object, fine on its own), both staged.
  const d2 = randomBytes(4096);
  const d3 = randomBytes(4096);
  const r2 = record(2, 'b', d2, 3);
  const r3 = record(3, 'c', d3, 0);
  await stage(r2, d2);
  await stage(r3, d3);
  // The member submits 3 right behind 2 (its last submitted commit), before 2's outcome is known: one commit group.
  const groupsBefore = store.commitStats().groups;
  const c2 = codeOf(store.transact(commitOps(POOL, PG, r2, r1.entry, log)));
  const c3 = codeOf(store.transact(commitOps(POOL, PG, r3, r2.entry, log)));
  expect([await c2, await c3]).toEqual(['LimitExceeded', 'Conflict']);
  // Both settled at the first commit stage; their group is counted at the second (a loaded machine may not be there yet).
  await store.whenCommitted();
  const commitGroups = store.commitStats().groups - groupsBefore;
  console.log(JSON.stringify({ case: 'refused commit', outcomes: { 2: await c2, 3: await c3 }, commitGroups }));
  // The case this test is for: the refused commit and the next one in the same group (two groups would prove less).
  expect(commitGroups).toBe(1);

  // The stored log and head end at 1; neither later write touched a shard.
  expect(await readHead(store, POOL, PG)).toEqual({ epoch: 2, version: 1 });
  expect((await PgLog.load(store, POOL, PG)).entries.map((e) => e.version)).toEqual([1]);
  for (const name of ['b', 'c']) await expect(store.stat({ ns: dataNs(POOL, SHARD), name })).rejects.toMatchObject({ code: 'NotFound' });
  expect((await store.read({ ns: dataNs(POOL, SHARD), name: 'a' })).equals(first)).toBe(true);
});
