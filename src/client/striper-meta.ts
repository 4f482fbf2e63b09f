/**
 * The manifest-only operations: remove (the manifest goes in one
 * conditional transaction, then the pieces) and setAttrs (the attributes are
 * replaced as a whole, atomically with the manifest; the generation and the
 * data stay).
 */
import { notFound } from '../lib/errors.js';
import { commitManifest, dropLease, finishReplace, guardReplaced } from './striper-commit.js';
import type { StriperContext } from './striper-context.js';
import { checkName, encodeAttrs, X } from './striper-layout.js';
import type { PendingLease } from './striper-registry.js';

export interface ConditionOptions {
  /** Only if the current generation is this (Conflict otherwise, without retrying). */
  ifGeneration?: string;
}

const preconditionOf = (o: ConditionOptions): { ifGeneration?: string } => (o.ifGeneration !== undefined ? { ifGeneration: o.ifGeneration } : {});

/** Removes the striped object (NotFound if there is none) and its pieces. */
export async function removeObject(ctx: StriperContext, pool: string, name: string, options: ConditionOptions): Promise<void> {
  checkName(name);
  let lease: PendingLease | null = null;
  const outcome = { uncertain: false };
  try {
    await commitManifest(ctx, pool, name, {
      ...preconditionOf(options),
      outcome,
      prepare: async (current) => {
        if (!current) throw notFound(`${pool}/${name}: no striped object`);
        lease = await guardReplaced(ctx, lease, { pool, name }, current);
        return [{ type: 'remove' }];
      },
    });
  } catch (err) {
    // An unknown outcome keeps the entry: the sweeper deletes the pieces if the removal did land.
    if (!outcome.uncertain) await dropLease(ctx, lease);
    throw err;
  }
  await finishReplace(ctx, lease);
}

/** Replaces the object's attributes (NotFound if there is no striped object). */
export async function setObjectAttrs(ctx: StriperContext, pool: string, name: string, attrs: ReadonlyMap<string, Buffer>, options: ConditionOptions): Promise<void> {
  checkName(name);
  const value = encodeAttrs(attrs);
  await commitManifest(ctx, pool, name, {
    ...preconditionOf(options),
    prepare: async (current) => {
      if (!current) throw notFound(`${pool}/${name}: no striped object`);
      return [{ type: 'setXattr', name: X.attrs, value }];
    },
  });
}
