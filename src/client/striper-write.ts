/**
 * put: a byte source becomes a striped object. A source that ends within
 * inlineBytesMax is written inline, in the manifest's one transaction. A
 * longer one: a fresh generation is recorded in the pending registry, its
 * pieces are written (at most `concurrency` at once, each reserved in the
 * memory budget before it is filled), then the manifest is committed
 * (compare-and-swap, striper-commit.ts) and the replaced pieces deleted.
 *
 * On failure: a commit that surely did not happen deletes its own pieces and
 * registry entry; one whose outcome is unknown (the cluster stopped
 * answering) keeps both, since the commit may still land: the sweeper
 * settles it after the grace period.
 */
import { invalid, limitExceeded } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { ObjectOp } from './client.js';
import type { BudgetHolder } from './striper-budget.js';
import { commitManifest, dropLease, finishReplace, guardReplaced, replacedRef, checkPrecondition } from './striper-commit.js';
import { isDefinitive, readManifest, type StriperContext } from './striper-context.js';
import { PieceCutter, type ByteSource } from './striper-cutter.js';
import { checkName, encodeAttrs, manifestXattrOps, newGeneration, pieceName, trailer, type Manifest, type PoolPair, type StripedRef } from './striper-layout.js';
import { removePieces, type PieceSet } from './striper-pieces.js';
import { PendingLease } from './striper-registry.js';

export interface PutOptions {
  /** The source's length when known: checked (InvalidArgument if the source differs), and a large size skips the inline attempt. */
  sizeBytes?: number;
  /** The caller's attributes (ETag, content type, ...), stored with the manifest, replaced as a whole. */
  attrs?: ReadonlyMap<string, Buffer>;
  /** Commit only over this generation (null: only if absent); Conflict otherwise, without retrying. */
  ifGeneration?: string | null;
  signal?: AbortSignal;
}

/** What was written: the generation, its size and where its bytes are (a StripedRef, for Striper.getAt). */
export type PutResult = StripedRef;

interface PutJob {
  ctx: StriperContext;
  pools: PoolPair;
  name: string;
  encodedAttrs: Buffer;
  options: PutOptions;
}

export async function putObject(ctx: StriperContext, pools: PoolPair, name: string, source: ByteSource, options: PutOptions): Promise<PutResult> {
  checkName(name);
  const { sizeBytes } = options;
  if (sizeBytes !== undefined && (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0)) throw invalid('sizeBytes must be a non-negative integer');
  if (sizeBytes !== undefined && sizeBytes > limits.striperObjectSizeBytesMax) throw limitExceeded(`objects are at most ${limits.striperObjectSizeBytesMax} bytes`);
  const job: PutJob = { ctx, pools, name, encodedAttrs: encodeAttrs(options.attrs ?? new Map()), options };
  const { pieceBytes } = ctx.settings;
  const inlineBytesMax = pools.manifests === pools.pieces ? ctx.settings.inlineBytesMax : ctx.settings.inlineBytesMaxAcrossPools;
  const holder = ctx.budget.holder();
  const cutter = new PieceCutter(source, pieceBytes, limits.striperObjectSizeBytesMax, options.signal, sizeBytes);
  try {
    const release = await holder.acquire(cutter.nextPieceBytesMax(), options.signal);
    let first: Buffer | null;
    let inline: boolean;
    try {
      first = await cutter.next();
      inline = (sizeBytes === undefined || sizeBytes <= inlineBytesMax) && (first?.length ?? 0) <= inlineBytesMax && (await cutter.exhausted());
    } catch (err) {
      release();
      throw err;
    }
    if (!inline) return await putStriped(job, { first, release, cutter, holder });
    try {
      const data = first ?? Buffer.alloc(0);
      checkSize(sizeBytes, data.length);
      return await putInline(job, data);
    } finally {
      release();
    }
  } finally {
    await cutter.close();
  }
}

function checkSize(expectedBytes: number | undefined, actualBytes: number): void {
  if (expectedBytes !== undefined && expectedBytes !== actualBytes) {
    throw invalid(`the source yielded ${actualBytes} bytes${actualBytes > expectedBytes ? ' or more' : ''}, sizeBytes says ${expectedBytes}`);
  }
}

async function putInline(job: PutJob, data: Buffer): Promise<PutResult> {
  const { ctx, pools, name } = job;
  const manifest: Manifest = { generation: newGeneration(ctx.io.random), sizeBytes: data.length, pieceBytes: 0, piecesPool: null, attrs: new Map() };
  const ops = [...inlineDataOps(data, manifest.generation), ...manifestXattrOps(manifest, job.encodedAttrs)];
  let lease: PendingLease | null = null;
  const outcome = { uncertain: false };
  try {
    await commitManifest(ctx, pools.manifests, name, {
      ...preconditionOf(job.options),
      outcome,
      prepare: async (current) => {
        lease = await guardReplaced(ctx, lease, { pool: pools.manifests, name }, current);
        return ops;
      },
    });
  } catch (err) {
    if (!outcome.uncertain) {
      await dropLease(ctx, lease);
      throw err;
    }
    if (!(await landedAfterAll(job, manifest.generation))) throw err;
  }
  await finishReplace(ctx, lease);
  return { sizeBytes: data.length, generation: manifest.generation, pieceBytes: 0, piecesPool: null };
}

/** The manifest's data when inline: the bytes, then the generation (small ones in one buffer, large ones without a copy). */
function inlineDataOps(data: Buffer, generation: string): ObjectOp[] {
  if (data.length <= 64 * 1024) return [{ type: 'writeFull', data: Buffer.concat([data, trailer(generation)]) }];
  return [
    { type: 'writeFull', data },
    { type: 'write', offsetBytes: data.length, data: trailer(generation) },
  ];
}

const preconditionOf = (o: PutOptions): { ifGeneration?: string | null } => (o.ifGeneration !== undefined ? { ifGeneration: o.ifGeneration } : {});

/** After a commit failed with an unknown outcome: true if it did land (our generation is current). */
async function landedAfterAll(job: PutJob, generation: string): Promise<boolean> {
  const now = await readManifest(job.ctx, job.pools.manifests, job.name).catch(() => null);
  return now?.generation === generation;
}

interface Stream {
  /** The first piece (null: the source was empty although sizeBytes promised more). */
  first: Buffer | null;
  release: () => void;
  cutter: PieceCutter;
  holder: BudgetHolder;
}

interface Progress {
  started: number;
  /** A piece write failed with an unknown outcome: it may still land. */
  ambiguous: boolean;
}

async function putStriped(job: PutJob, stream: Stream): Promise<PutResult> {
  const { ctx, pools, name } = job;
  const generation = newGeneration(ctx.io.random);
  let current: Manifest | null;
  let lease: PendingLease;
  try {
    current = await readManifest(ctx, pools.manifests, name);
    checkPrecondition(name, current, job.options.ifGeneration);
    lease = await PendingLease.begin(ctx, pools.manifests, generation, {
      name,
      own: { pool: pools.pieces, generation, window: ctx.settings.concurrency },
      replaced: replacedRef(current),
    });
  } catch (err) {
    stream.release();
    throw err;
  }
  const set: PieceSet = { pool: pools.pieces, name, generation };
  const progress: Progress = { started: 0, ambiguous: false };
  let sizeBytes: number;
  try {
    sizeBytes = await writePieces(job, set, stream, lease, progress);
    checkSize(job.options.sizeBytes, sizeBytes);
  } catch (err) {
    await abandon(ctx, set, lease, progress);
    throw err;
  }
  const { pieceBytes } = ctx.settings;
  const manifest: Manifest = { generation, sizeBytes, pieceBytes, piecesPool: pools.pieces, attrs: new Map() };
  await commitStriped(job, manifest, current, lease, progress);
  return { sizeBytes, generation, pieceBytes, piecesPool: pools.pieces };
}

async function commitStriped(job: PutJob, manifest: Manifest, known: Manifest | null, lease: PendingLease, progress: Progress): Promise<void> {
  const { ctx, pools, name } = job;
  const ops: ObjectOp[] = [{ type: 'writeFull', data: trailer(manifest.generation) }, ...manifestXattrOps(manifest, job.encodedAttrs)];
  const outcome = { uncertain: false };
  try {
    await commitManifest(ctx, pools.manifests, name, {
      ...preconditionOf(job.options),
      known,
      outcome,
      prepare: async (current) => {
        await lease.setReplaced(replacedRef(current));
        await lease.beforeCommit();
        return ops;
      },
    });
  } catch (err) {
    // Surely not committed: our pieces are garbage. Unknown: the commit may still land, leave it all to the sweeper.
    if (!outcome.uncertain) await abandon(ctx, { pool: pools.pieces, name, generation: manifest.generation }, lease, progress);
    else if (await landedAfterAll(job, manifest.generation)) return finishReplace(ctx, lease);
    throw err;
  }
  await finishReplace(ctx, lease);
}

/** Deletes what a failed put wrote; the entry stays when a piece write may still land (the sweeper comes back for it). */
async function abandon(ctx: StriperContext, set: PieceSet, lease: PendingLease, progress: Progress): Promise<void> {
  try {
    await removePieces(ctx, set, progress.started);
    if (!progress.ambiguous) await lease.end();
  } catch {
    ctx.counters.cleanupsDeferred++;
  }
}

/** Writes the stream's pieces (at most `concurrency` in flight); resolves with the bytes written. */
async function writePieces(job: PutJob, set: PieceSet, stream: Stream, lease: PendingLease, progress: Progress): Promise<number> {
  const { ctx, options } = job;
  const inflight = new Set<Promise<void>>();
  let failure: { err: unknown } | null = null;
  let piece: Buffer | null = stream.first;
  let release = stream.release;
  let sizeBytes = 0;
  const launch = (data: Buffer, done: () => void): void => {
    const index = progress.started++;
    const write: Promise<void> = ctx.client
      .transact(set.pool, pieceName(set.name, set.generation, index), [{ type: 'writeFull', data }])
      .then(
        () => undefined,
        (err: unknown) => {
          failure ??= { err };
          if (!isDefinitive(err)) progress.ambiguous = true;
        },
      )
      .finally(() => {
        done();
        inflight.delete(write);
      });
    inflight.add(write);
  };
  try {
    while (piece && !failure) {
      sizeBytes += piece.length;
      if (options.sizeBytes !== undefined && sizeBytes > options.sizeBytes) checkSize(options.sizeBytes, sizeBytes);
      await lease.keepAlive();
      launch(piece, release);
      release = () => {};
      while (inflight.size >= ctx.settings.concurrency) await Promise.race(inflight);
      if (failure) break;
      release = await stream.holder.acquire(stream.cutter.nextPieceBytesMax(), options.signal);
      piece = await stream.cutter.next();
    }
  } finally {
    release();
    await Promise.all(inflight);
  }
  if (failure) throw (failure as { err: unknown }).err;
  return sizeBytes;
}
