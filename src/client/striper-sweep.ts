/**
 * The sweeper: finishes what dead or failed writers left in the pending
 * registry (striper-registry.ts). For each entry older than graceMs it reads
 * the object's manifest and deletes every generation the entry names that
 * the manifest does not: the writer's own pieces (window rule: their count
 * is unknown) and the pieces its commit replaced (count known). Then the
 * entry goes. A generation the manifest names is live and stays.
 *
 * Safe while writers run, provided graceMs exceeds every writer's lease plus
 * the clock skew between hosts: a writer that could not refresh its entry
 * within its lease never commits. Run it periodically (e.g. hourly) per
 * manifest pool; each run is bounded by entriesMax and resumes nothing (the
 * entries it did not reach wait for the next run).
 *
 * Not covered: a piece write that lands after its writer gave up and after
 * the sweeper handled its entry (an rpc that outlived the client's timeout
 * by more than the grace period). A full scan of the piece pool would find
 * such pieces (their names carry the generation); it is not implemented.
 */
import { invalid, isTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { TesseraClient } from './client.js';
import { aborted } from './striper-budget.js';
import { forEachBounded, makeContext, readManifest, type StriperContext } from './striper-context.js';
import { registryShardName } from './striper-layout.js';
import { removePieces, removePiecesByWindow } from './striper-pieces.js';
import { decodeEntry, type PendingEntry } from './striper-registry.js';

export interface SweepOptions {
  /** Entries refreshed more recently than this are left alone (default 1 h; must exceed writers' leaseMs plus clock skew). */
  graceMs?: number;
  /** Entries examined in this run at most (default 100,000). */
  entriesMax?: number;
  /** Entries handled at once (default 4). */
  concurrency?: number;
  signal?: AbortSignal;
}

export interface SweepReport {
  entriesExamined: number;
  /** Younger than the grace period: left for a later run. */
  entriesYoung: number;
  /** Handled and removed. */
  entriesSettled: number;
  /** Generations whose pieces were deleted. */
  generationsCollected: number;
  /** Entries that could not be handled (their error is in errors; they stay for the next run). */
  entriesFailed: number;
  errors: string[];
}

const PAGE_ENTRIES = 256;
const ERRORS_KEPT = 20;

/** Sweeps the pending registry of a manifest pool. */
export async function sweepStriperOrphans(client: TesseraClient, manifestPool: string, options: SweepOptions = {}): Promise<SweepReport> {
  const graceMs = options.graceMs ?? limits.striperSweepGraceMsDefault;
  const entriesMax = options.entriesMax ?? 100_000;
  if (!Number.isSafeInteger(graceMs) || graceMs < 0) throw invalid('graceMs must be a non-negative integer');
  const ctx = makeContext(client, { concurrency: options.concurrency ?? limits.striperConcurrencyDefault });
  const report: SweepReport = { entriesExamined: 0, entriesYoung: 0, entriesSettled: 0, generationsCollected: 0, entriesFailed: 0, errors: [] };
  const sweep = { ctx, pool: manifestPool, graceMs, report };
  for (let shard = 0; shard < limits.striperRegistryShards && report.entriesExamined < entriesMax; shard++) {
    let afterKey: Buffer | undefined;
    for (;;) {
      if (options.signal?.aborted) throw aborted(options.signal);
      const limit = Math.min(PAGE_ENTRIES, entriesMax - report.entriesExamined);
      const page = await listShard(ctx, manifestPool, shard, limit, afterKey);
      report.entriesExamined += page.entries.length;
      await forEachBounded(page.entries.length, ctx.settings.concurrency, (i) => settleEntry(sweep, shard, page.entries[i]!));
      const last = page.entries[page.entries.length - 1];
      if (!page.more || !last || report.entriesExamined >= entriesMax) break;
      afterKey = last[0];
    }
  }
  return report;
}

async function listShard(ctx: StriperContext, pool: string, shard: number, limit: number, afterKey: Buffer | undefined) {
  try {
    return await ctx.client.omapList(pool, registryShardName(shard), { limit, ...(afterKey ? { afterKey } : {}) });
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return { entries: [], more: false };
    throw err;
  }
}

interface Sweep {
  ctx: StriperContext;
  pool: string;
  graceMs: number;
  report: SweepReport;
}

async function settleEntry(sweep: Sweep, shard: number, [key, value]: [Buffer, Buffer]): Promise<void> {
  const { ctx, report } = sweep;
  try {
    const entry = decodeEntry(value);
    if (ctx.io.clock.nowMs() - entry.refreshedMs < sweep.graceMs) {
      report.entriesYoung++;
      return;
    }
    report.generationsCollected += await collect(sweep, entry);
    await ctx.client.transact(sweep.pool, registryShardName(shard), [{ type: 'omapRemoveKeys', keys: [key] }]);
    report.entriesSettled++;
  } catch (err) {
    report.entriesFailed++;
    if (report.errors.length < ERRORS_KEPT) report.errors.push(`entry ${printable(key)}: ${(err as Error).message}`);
  }
}

/** Deletes the entry's generations that the manifest does not name; returns how many. */
async function collect(sweep: Sweep, entry: PendingEntry): Promise<number> {
  const { ctx } = sweep;
  const live = (await readManifest(ctx, sweep.pool, entry.name))?.generation;
  let collected = 0;
  if (entry.own && entry.own.generation !== live) {
    await removePiecesByWindow(ctx, { pool: entry.own.pool, name: entry.name, generation: entry.own.generation }, entry.own.window);
    collected++;
  }
  if (entry.replaced && entry.replaced.generation !== live) {
    await removePieces(ctx, { pool: entry.replaced.pool, name: entry.name, generation: entry.replaced.generation }, entry.replaced.pieceCount);
    collected++;
  }
  return collected;
}

const printable = (key: Buffer): string => key.subarray(0, 64).toString('latin1');
