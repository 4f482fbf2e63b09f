/**
 * Deleting a generation's pieces, when their count is known (a committed
 * manifest says it, or the writer knows what it started) and when it is not
 * (a writer died mid-stream).
 *
 * The window rule: a writer starts pieces in index order with at most
 * `window` in flight, and stops at its first failure, so below any piece that
 * exists, fewer than `window` pieces in a row are missing. Deleting from 0
 * until `window` consecutive pieces are absent therefore finds them all.
 */
import { isTesseraError } from '../lib/errors.js';
import { forEachBounded, type StriperContext } from './striper-context.js';
import { pieceName } from './striper-layout.js';

export interface PieceSet {
  pool: string;
  name: string;
  generation: string;
}

/** Deletes pieces [0, count) (absent ones are fine). */
export async function removePieces(ctx: StriperContext, set: PieceSet, count: number): Promise<void> {
  await forEachBounded(count, ctx.settings.concurrency, async (i) => {
    await ctx.client.transact(set.pool, pieceName(set.name, set.generation, i), [{ type: 'remove', ifExists: true }]);
  });
}

/** Deletes pieces from 0 until `window` consecutive ones are absent; returns how many existed. */
export async function removePiecesByWindow(ctx: StriperContext, set: PieceSet, window: number): Promise<number> {
  let removed = 0;
  let missingRun = 0;
  for (let start = 0; missingRun < window; start += window) {
    const existed = new Array<boolean>(window).fill(false);
    await forEachBounded(window, ctx.settings.concurrency, async (k) => {
      existed[k] = await removeIfPresent(ctx, pieceName(set.name, set.generation, start + k), set.pool);
    });
    for (const e of existed) {
      missingRun = e ? 0 : missingRun + 1;
      if (e) removed++;
    }
  }
  return removed;
}

async function removeIfPresent(ctx: StriperContext, object: string, pool: string): Promise<boolean> {
  try {
    await ctx.client.transact(pool, object, [{ type: 'remove' }]);
    return true;
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return false;
    throw err;
  }
}
