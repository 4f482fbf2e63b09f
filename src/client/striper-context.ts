/**
 * What the striper's modules share: the client, the io seams, the memory
 * budget and the resolved settings; reading a manifest; telling a write that
 * surely did not happen from one whose outcome is unknown; a bounded fan-out.
 */
import type { Io } from '../io/io.js';
import { invalid, isTesseraError, type ErrorCodeName } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { TesseraClient } from './client.js';
import { ByteBudget } from './striper-budget.js';
import { ReadBufferPool } from './striper-buffers.js';
import { GENERATION_CHARS, parseManifest, type Manifest } from './striper-layout.js';

export interface StriperSettings {
  pieceBytes: number;
  inlineBytesMax: number;
  inlineBytesMaxAcrossPools: number;
  concurrency: number;
  leaseMs: number;
  prefetchBytes: number;
}

export interface StriperCounters {
  /** Cleanups after a successful operation that failed and were left to the sweeper. */
  cleanupsDeferred: number;
  /** Reads that re-opened an object whose pieces vanished under them (overwritten or removed). */
  readRestarts: number;
}

export interface StriperContext {
  client: TesseraClient;
  io: Io;
  budget: ByteBudget;
  /** Reused read buffers of chunksAt (one of this Striper's pieces plus the trailer each). */
  buffers: ReadBufferPool;
  settings: StriperSettings;
  counters: StriperCounters;
}

export interface StriperOptions {
  /** Size of each piece of a striped object (default 4 MiB; 64 KiB to 64 MiB). Objects keep the piece size they were written with. */
  pieceBytes?: number;
  /** Objects up to this size are stored inline in the manifest (default pieceBytes; at most pieceBytes). */
  inlineBytesMax?: number;
  /**
   * The same where the pieces' pool is not the manifests' (e.g. pieces on an erasure-coded pool): default 0,
   * so such objects' bytes always go to the pieces' pool and never take the manifests' redundancy (at most inlineBytesMax).
   */
  inlineBytesMaxAcrossPools?: number;
  /** Pieces one put writes, or one get reads ahead, at once (default 4). */
  concurrency?: number;
  /** Piece bytes all operations of this Striper hold at once (default 256 MiB; each operation may always hold one piece). */
  bufferBytesMax?: number;
  /** A writer's lease on its pending-registry entry (default 10 min; must exceed twice the client's timeoutMs, and stay below the sweeper's graceMs). */
  leaseMs?: number;
  /** Manifest data open() reads with the metadata: inline objects up to this size arrive in one round trip (default 64 KiB). */
  prefetchBytes?: number;
}

export function makeContext(client: TesseraClient, o: StriperOptions): StriperContext {
  const pieceBytes = o.pieceBytes ?? limits.striperPieceBytesDefault;
  const settings: StriperSettings = {
    pieceBytes,
    inlineBytesMax: o.inlineBytesMax ?? pieceBytes,
    inlineBytesMaxAcrossPools: o.inlineBytesMaxAcrossPools ?? 0,
    concurrency: o.concurrency ?? limits.striperConcurrencyDefault,
    leaseMs: o.leaseMs ?? limits.striperLeaseMsDefault,
    prefetchBytes: o.prefetchBytes ?? limits.striperPrefetchBytesDefault,
  };
  const bufferBytesMax = o.bufferBytesMax ?? limits.striperBufferBytesDefault;
  const whole = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;
  if (!whole(pieceBytes) || pieceBytes < limits.striperPieceBytesMin || pieceBytes > limits.striperPieceBytesMax) {
    throw invalid(`pieceBytes must be ${limits.striperPieceBytesMin} to ${limits.striperPieceBytesMax}`);
  }
  if (!whole(settings.inlineBytesMax) || settings.inlineBytesMax > pieceBytes) throw invalid('inlineBytesMax must be 0 to pieceBytes');
  if (!whole(settings.inlineBytesMaxAcrossPools) || settings.inlineBytesMaxAcrossPools > settings.inlineBytesMax) throw invalid('inlineBytesMaxAcrossPools must be 0 to inlineBytesMax');
  if (!whole(settings.concurrency) || settings.concurrency < 1 || settings.concurrency > limits.striperConcurrencyMax) {
    throw invalid(`concurrency must be 1 to ${limits.striperConcurrencyMax}`);
  }
  if (!whole(bufferBytesMax) || bufferBytesMax < pieceBytes) throw invalid('bufferBytesMax must hold at least one piece');
  if (!whole(settings.leaseMs) || settings.leaseMs < 1) throw invalid('leaseMs must be positive');
  if (!whole(settings.prefetchBytes) || settings.prefetchBytes > limits.striperPieceBytesMax) throw invalid('prefetchBytes is out of range');
  const buffers = new ReadBufferPool(pieceBytes + GENERATION_CHARS, limits.striperPooledBuffersMax);
  return { client, io: client.io, budget: new ByteBudget(bufferBytesMax), buffers, settings, counters: { cleanupsDeferred: 0, readRestarts: 0 } };
}

/** The manifest of `name`; null when absent or not a striped object. */
export async function readManifest(ctx: StriperContext, pool: string, name: string): Promise<Manifest | null> {
  try {
    return parseManifest(await ctx.client.getXattrs(pool, name), `${pool}/${name}`);
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return null;
    throw err;
  }
}

/**
 * Errors after which a write is known not to have happened anywhere: a
 * conditional write is decided on the pg's primary before it is replicated,
 * and these are refusals. Anything else (Unavailable, Timeout, ...) after the
 * client's own retries leaves the outcome unknown.
 */
const DEFINITIVE = new Set<ErrorCodeName>(['Conflict', 'InvalidArgument', 'LimitExceeded', 'NotFound', 'AlreadyExists', 'NotSupported', 'NoSpace']);

export const isDefinitive = (err: unknown): boolean => isTesseraError(err) && DEFINITIVE.has(err.code);

/** Runs fn(0..count-1) with at most `concurrency` at once; waits for all, then throws the first failure. */
export async function forEachBounded(count: number, concurrency: number, fn: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | null = null;
  const worker = async (): Promise<void> => {
    while (next < count && !failure) {
      const index = next++;
      try {
        await fn(index);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(count, concurrency) }, worker));
  if (failure) throw (failure as { err: unknown }).err;
}
