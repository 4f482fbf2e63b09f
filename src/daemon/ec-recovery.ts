/**
 * Rebuilding erasure-coded shards during peering. Sources are the members
 * whose log is the authoritative one (every shard they hold is at its
 * latest committed version). For one object:
 *
 * - the sources' `_v` says the authoritative version (none: the object is
 *   deleted, and the targets' shards are removed);
 * - a target whose shard already carries that `_v` is left alone (a shard is
 *   only ever written whole by a commit or a rebuild of that version);
 * - otherwise k sources at that version are read slice by slice
 *   (limits.ecRecoverySliceBytes per shard), the targets' shards rebuilt and
 *   pushed (fenced) with the same xattrs; a shard larger than one slice goes
 *   to a temporary object first and is moved into place at the end, so a
 *   member never holds half a shard under the object's name.
 *
 * Backfill (a member whose log cannot be brought up to date from the log, or
 * whose shard position changed) compares every object the sources list, then
 * removes what the target holds beyond them. Memory: (k + targets) slices
 * per object, limits.ecRecoveryObjectsInflightMax objects at once.
 */
import { TesseraError, toTesseraError } from '../lib/errors.js';
import { pgSortKeyRange } from '../lib/hash.js';
import { limits } from '../lib/limits.js';
import { compareVersions } from '../protocol/osd-messages.js';
import type { ObjectId, StoreApi, StoreOp } from '../store/types.js';
import type { EcPgState } from './ec-state.js';
import { decodeSize, SIZE_XATTR, stagingNs } from './ec-record.js';
import { readShardSlices, type ShardReader } from './ec-shards.js';
import { checkAborted, forEachBounded, type MemberHandle } from './peering.js';
import type { Pg } from './pg.js';
import type { BackfillListing, RecoveryProgressSink } from './recovery-progress.js';
import { dataNs, decodeVersionValue, VERSION_XATTR } from './pg-log.js';

const LIST_PAGE = 1000;
const BATCH = 64;
const REMOVE_BATCH = 256;

export interface RecoveryMember {
  position: number;
  handle: MemberHandle;
}

export interface RecoveryContext {
  pg: Pg;
  ec: EcPgState;
  /** Members holding the authoritative state, the primary first when it is one. */
  sources: RecoveryMember[];
  signal: AbortSignal;
  /** Told of the objects planned and rebuilt (bytes: shard bytes written to the targets). */
  progress?: RecoveryProgressSink | undefined;
  /** Runs one object's shard writes (sizeBytes: shard bytes written) under the daemon's recovery throttle. Default: at once. */
  pace?: ((sizeBytes: number, copy: () => Promise<void>) => Promise<void>) | undefined;
}

const shardId = (pg: Pg, position: number, name: string): ObjectId => ({ ns: dataNs(pg.pool.id, position), name });

async function xattrsOrNull(store: StoreApi, id: ObjectId): Promise<Map<string, Buffer> | null> {
  try {
    return await store.getXattrs(id);
  } catch (err) {
    if (toTesseraError(err).code === 'NotFound') return null;
    throw err;
  }
}

const versionOf = (x: Map<string, Buffer> | null): string | null => {
  const v = x?.get(VERSION_XATTR);
  return v ? v.toString('hex') : null;
};

/**
 * Makes every target's shard of `name` the authoritative one (or absent); resolves with the shard bytes written.
 * `replace` (scrub repair): every target is rebuilt, even one whose shard carries the authoritative version (its
 * bytes are known bad); each target's shard is replaced only once its new bytes are built (one transaction, or a
 * temporary object moved into place), never removed first; and it is never removed for want of a source version.
 */
export async function rebuildObject(ctx: RecoveryContext, name: string, targets: readonly RecoveryMember[], replace = false): Promise<number> {
  checkAborted(ctx.signal);
  const { pg, ec } = ctx;
  const metas = await Promise.all(ctx.sources.map((s) => xattrsOrNull(s.handle.store, shardId(pg, s.position, name))));
  let newest: Map<string, Buffer> | null = null;
  for (const m of metas) {
    const v = m?.get(VERSION_XATTR);
    if (v && (!newest || compareVersions(decodeVersionValue(v), decodeVersionValue(newest.get(VERSION_XATTR)!)) > 0)) newest = m;
  }
  // (Replaced targets are not read: a bad shard's metadata may not read either.)
  const current = replace ? [] : await Promise.all(targets.map((t) => xattrsOrNull(t.handle.store, shardId(pg, t.position, name))));
  const stale = replace ? [...targets] : targets.filter((_, i) => versionOf(current[i]!) !== versionOf(newest));
  if (stale.length === 0) return 0;
  if (!newest && replace) throw new TesseraError('Unavailable', `pg ${pg.key}: object ${name}: no source holds a version to rebuild it from`);
  if (!newest) {
    await Promise.all(stale.map((t) => t.handle.push([{ type: 'remove', id: shardId(pg, t.position, name), ifExists: true }])));
    return 0;
  }
  const want = versionOf(newest);
  const usable = ctx.sources.filter((_, i) => versionOf(metas[i]!) === want);
  if (usable.length < ec.layout.dataShards) {
    throw new TesseraError('Unavailable', `pg ${pg.key}: object ${name} has ${usable.length} shards at its latest version, ${ec.layout.dataShards} needed to rebuild it`);
  }
  const reader: ShardReader = { poolId: pg.pool.id, layout: ec.layout, codec: ec.codec, stores: Array.from({ length: ec.layout.width }, () => null) };
  for (const s of usable) (reader.stores as Array<StoreApi | null>)[s.position] = s.handle.store;
  const writtenBytes = ec.layout.shardBytes(decodeSize(newest.get(SIZE_XATTR))) * stale.length;
  const write = (): Promise<void> => writeShards(ctx, reader, name, newest, stale);
  await (ctx.pace ? ctx.pace(writtenBytes, write) : write());
  return writtenBytes;
}

/** rebuildObject, reported to the recovery's progress. */
async function rebuildReported(ctx: RecoveryContext, name: string, targets: readonly RecoveryMember[]): Promise<void> {
  const bytes = await rebuildObject(ctx, name, targets);
  ctx.progress?.copied(bytes);
}

async function writeShards(ctx: RecoveryContext, reader: ShardReader, name: string, xattrs: Map<string, Buffer>, targets: readonly RecoveryMember[]): Promise<void> {
  const { pg } = ctx;
  const shardBytes = ctx.ec.layout.shardBytes(decodeSize(xattrs.get(SIZE_XATTR)));
  const slice = limits.ecRecoverySliceBytes;
  const positions = targets.map((t) => t.position);
  const finish = (id: ObjectId): StoreOp[] => [...xattrs].map(([n, value]) => ({ type: 'setXattr' as const, id, name: n, value }));
  if (shardBytes <= slice) {
    const data = await readShardSlices(reader, name, 0, shardBytes, positions);
    await Promise.all(
      targets.map((t) => {
        const id = shardId(pg, t.position, name);
        const write: StoreOp[] = shardBytes > 0 ? [{ type: 'write', id, offsetBytes: 0, data: data.get(t.position)! }] : [];
        return t.handle.push([{ type: 'remove', id, ifExists: true }, { type: 'create', id }, ...write, ...finish(id)]);
      }),
    );
    return;
  }
  const temps = new Map(targets.map((t) => [t.position, { ns: stagingNs(pg.pool.id), name: `r.${pg.pg}.${t.position}.${pg.nextStagingId()}` } as ObjectId]));
  await Promise.all(targets.map((t) => t.handle.push([{ type: 'remove', id: temps.get(t.position)!, ifExists: true }])));
  for (let at = 0; at < shardBytes; at += slice) {
    checkAborted(ctx.signal);
    const length = Math.min(slice, shardBytes - at);
    const data = await readShardSlices(reader, name, at, length, positions);
    await Promise.all(targets.map((t) => t.handle.push([{ type: 'write', id: temps.get(t.position)!, offsetBytes: at, data: data.get(t.position)! }])));
  }
  await Promise.all(
    targets.map((t) => {
      const id = shardId(pg, t.position, name);
      return t.handle.push([{ type: 'move', id: temps.get(t.position)!, to: id }, ...finish(id)]);
    }),
  );
}

/** Rebuilds the named objects on the targets that need each (bounded concurrency). */
export async function rebuildObjects(ctx: RecoveryContext, objects: Map<string, RecoveryMember[]>): Promise<void> {
  ctx.progress?.planned(objects.size);
  await forEachBounded([...objects], limits.ecRecoveryObjectsInflightMax, ([name, targets]) => rebuildReported(ctx, name, targets));
}

async function listPgNames(ctx: RecoveryContext, store: StoreApi, position: number, into: (names: string[]) => Promise<void>, listing?: BackfillListing): Promise<void> {
  const { pg } = ctx;
  const sortKeyRange = pgSortKeyRange(pg.pg, Math.log2(pg.pool.pgCount));
  let cursor: string | undefined;
  for (;;) {
    checkAborted(ctx.signal);
    const page = await store.listObjects({ ns: dataNs(pg.pool.id, position), sortKeyRange, limit: LIST_PAGE, ...(cursor ? { cursor } : {}) });
    listing?.page(page.objects.length, page.objects[page.objects.length - 1]?.sortKey ?? null, !page.cursor);
    await into(page.objects.map((o) => o.name));
    if (!page.cursor) return;
    cursor = page.cursor;
  }
}

async function removeAll(target: RecoveryMember, ids: ObjectId[]): Promise<void> {
  for (let i = 0; i < ids.length; i += REMOVE_BATCH) {
    await target.handle.push(ids.slice(i, i + REMOVE_BATCH).map((id) => ({ type: 'remove' as const, id, ifExists: true })));
  }
}

/**
 * Brings a target's whole shard of the pg up to date: every object a source
 * lists, then removes the target's objects the source does not have (and,
 * when the member held another position before, that position's objects).
 */
export async function backfill(ctx: RecoveryContext, target: RecoveryMember, previousPosition: number): Promise<void> {
  const source = ctx.sources[0]!;
  const names = new Set<string>();
  await listPgNames(ctx, source.handle.store, source.position, async (page) => {
    for (const n of page) names.add(n);
    for (let i = 0; i < page.length; i += BATCH) {
      await forEachBounded(page.slice(i, i + BATCH), limits.ecRecoveryObjectsInflightMax, (n) => rebuildReported(ctx, n, [target]));
    }
  }, ctx.progress?.backfill());
  const extra: ObjectId[] = [];
  await listPgNames(ctx, target.handle.store, target.position, async (page) => {
    for (const n of page) if (!names.has(n)) extra.push(shardId(ctx.pg, target.position, n));
  });
  await removeAll(target, extra);
  if (previousPosition >= 0 && previousPosition !== target.position) await removePosition(ctx, target, previousPosition);
}

/** Removes the target's objects of the pg under another position (one it held before). */
export async function removePosition(ctx: RecoveryContext, target: RecoveryMember, position: number): Promise<void> {
  const ids: ObjectId[] = [];
  await listPgNames(ctx, target.handle.store, position, async (page) => {
    for (const n of page) ids.push(shardId(ctx.pg, position, n));
  });
  await removeAll(target, ids);
}
