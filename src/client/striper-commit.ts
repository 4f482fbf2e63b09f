/**
 * Committing a manifest: one transaction on the manifest object, conditional
 * on the generation it replaces (assertXattr str.gen; absent = null). On
 * Conflict it re-reads and tries again (bounded), so the last writer to
 * commit wins; with an explicit ifGeneration it does not retry (a
 * precondition). Every commit that replaces a striped generation first
 * records it in the pending registry, and deletes its pieces afterwards.
 */
import { TesseraError, isTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { ObjectOp } from './client.js';
import { isDefinitive, readManifest, type StriperContext } from './striper-context.js';
import { newGeneration, pieceCount, X, type Manifest } from './striper-layout.js';
import { removePieces } from './striper-pieces.js';
import { PendingLease, type ReplacedRef } from './striper-registry.js';

export interface CommitOptions {
  /** Commit only if the current generation is this (null: no striped object); no retries. */
  ifGeneration?: string | null;
  /** The manifest already read for the first attempt (skips one read). */
  known?: Manifest | null;
  /** The ops of an attempt that replaces `current` (after the generation assertion); may update the registry first. */
  prepare(current: Manifest | null): Promise<ObjectOp[]>;
  /** Set when the commit failed with an unknown outcome (its transaction may still land); otherwise a failure means nothing landed. */
  outcome?: { uncertain: boolean };
}

/** Commits; resolves with the manifest the commit replaced. */
export async function commitManifest(ctx: StriperContext, pool: string, name: string, o: CommitOptions): Promise<Manifest | null> {
  let known = o.known;
  for (let attempt = 1; ; attempt++) {
    const current = known !== undefined ? known : await readManifest(ctx, pool, name);
    known = undefined;
    checkPrecondition(name, current, o.ifGeneration);
    const ops = await o.prepare(current);
    const guard: ObjectOp = { type: 'assertXattr', name: X.generation, value: current ? Buffer.from(current.generation) : null };
    try {
      await ctx.client.transact(pool, name, [guard, ...ops]);
      return current;
    } catch (err) {
      if (o.outcome && !isDefinitive(err)) o.outcome.uncertain = true;
      if (!isTesseraError(err, 'Conflict')) throw err;
      // An earlier attempt of this very transaction landed (an ambiguous answer
      // retried): the manifest carries the generation this commit wrote, which
      // nobody else writes. It replaced `current`; taking it for someone else's
      // would remove the pieces just written.
      const written = ops.find((op) => op.type === 'setXattr' && op.name === X.generation);
      if (written?.type === 'setXattr' && (await readManifest(ctx, pool, name))?.generation === written.value.toString('latin1')) {
        if (o.outcome) o.outcome.uncertain = false;
        return current;
      }
      if (o.ifGeneration !== undefined) throw err;
      if (attempt >= limits.striperCommitAttemptsMax) {
        throw new TesseraError('Conflict', `${pool}/${name}: ${attempt} commit attempts lost to concurrent writers`, { cause: err });
      }
    }
    await ctx.io.clock.sleep(ctx.io.random.float() * Math.min(2 ** attempt, 100));
  }
}

export function checkPrecondition(name: string, current: Manifest | null, ifGeneration: string | null | undefined): void {
  if (ifGeneration === undefined || (current?.generation ?? null) === ifGeneration) return;
  throw new TesseraError('Conflict', `${name}: generation is ${current?.generation ?? 'absent'}, expected ${ifGeneration ?? 'absent'}`);
}

/** What a commit replacing m must clean up: its pieces (nothing when inline or absent). */
export function replacedRef(m: Manifest | null): ReplacedRef | null {
  if (!m || m.piecesPool === null) return null;
  return { pool: m.piecesPool, generation: m.generation, pieceCount: pieceCount(m) };
}

/**
 * Before a commit that writes no pieces (inline put, remove) replaces
 * `current`: records the replaced pieces in the registry when there are any.
 */
export async function guardReplaced(ctx: StriperContext, lease: PendingLease | null, where: { pool: string; name: string }, current: Manifest | null): Promise<PendingLease | null> {
  const ref = replacedRef(current);
  if (!lease) {
    if (!ref) return null;
    return PendingLease.begin(ctx, where.pool, newGeneration(ctx.io.random), { name: where.name, own: null, replaced: ref });
  }
  await lease.setReplaced(ref);
  await lease.beforeCommit();
  return lease;
}

/**
 * After a successful commit: deletes the replaced pieces and the registry
 * entry. A failure here does not fail the operation (it is done): the entry
 * stays and the sweeper finishes the cleanup.
 */
export async function finishReplace(ctx: StriperContext, lease: PendingLease | null): Promise<void> {
  if (!lease) return;
  try {
    const r = lease.replaced;
    if (r) await removePieces(ctx, { pool: r.pool, name: lease.name, generation: r.generation }, r.pieceCount);
    await lease.end();
  } catch {
    ctx.counters.cleanupsDeferred++;
  }
}

/** After a commit that surely did not happen: the entry goes (nothing of this operation is left). */
export async function dropLease(ctx: StriperContext, lease: PendingLease | null): Promise<void> {
  await lease?.end().catch(() => {
    ctx.counters.cleanupsDeferred++;
  });
}
