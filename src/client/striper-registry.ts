/**
 * The pending registry: which pieces an operation in progress may leave
 * behind. Before a put writes its first piece, and before any commit that
 * replaces a striped object, the operation records an entry in one of the
 * pool's registry shards (omap objects in the manifest pool): the object's
 * name, the generation it writes (with its write window), the generation
 * its commit replaces (with its piece count) and when it last refreshed it.
 * It removes the entry once the replaced (or its own, on failure) pieces are
 * deleted. A writer that dies leaves the entry; the sweeper
 * (striper-sweep.ts) finishes its work once the entry is older than the
 * grace period.
 *
 * The entry is a lease: a writer refreshes it while it writes, gives up if
 * it could not refresh within leaseMs, and only commits with at least half a
 * lease left; the sweeper waits graceMs > leaseMs + clock skew, so it never
 * collects the pieces of a writer that may still commit.
 */
import { Reader, Writer } from '../lib/codec.js';
import { TesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { StriperContext } from './striper-context.js';
import { registryShardName, registryShardOf } from './striper-layout.js';

export interface PendingEntry {
  /** The striped object's name (its manifest, in the manifest pool). */
  name: string;
  /** Wall-clock time of the last refresh, by the writer's clock. */
  refreshedMs: number;
  /** The generation this operation writes pieces of, at most `window` at once (count unknown until it is done). */
  own: { pool: string; generation: string; window: number } | null;
  /** The generation this operation's commit replaces: its pieces go once the commit is done. */
  replaced: ReplacedRef | null;
}

export interface ReplacedRef {
  pool: string;
  generation: string;
  pieceCount: number;
}

const FORMAT = 1;

export function encodeEntry(e: PendingEntry): Buffer {
  const w = new Writer(128).u8(FORMAT).string(e.name).u64(e.refreshedMs);
  w.bool(e.own !== null);
  if (e.own) w.string(e.own.pool).string(e.own.generation).varint(e.own.window);
  w.bool(e.replaced !== null);
  if (e.replaced) w.string(e.replaced.pool).string(e.replaced.generation).varint(e.replaced.pieceCount);
  return Buffer.from(w.finish());
}

export function decodeEntry(data: Buffer): PendingEntry {
  const r = new Reader(data, 'Corrupt', 'striper pending entry');
  if (r.u8() !== FORMAT) throw new TesseraError('Corrupt', 'striper pending entry: unknown format');
  const name = r.string(limits.objectNameBytesMax);
  const refreshedMs = r.u64();
  const pool = (): string => r.string(limits.mapNameBytesMax);
  const own = r.bool() ? { pool: pool(), generation: r.string(64), window: r.varint(limits.striperConcurrencyMax) } : null;
  const replaced = r.bool() ? { pool: pool(), generation: r.string(64), pieceCount: r.varint() } : null;
  r.end();
  return { name, refreshedMs, own, replaced };
}

/** A live entry of this process: refreshed while its operation runs, removed when it ends. */
export class PendingLease {
  private refreshedAtMs = 0;

  private constructor(
    private readonly ctx: StriperContext,
    private readonly pool: string,
    private readonly key: string,
    private entry: PendingEntry,
  ) {}

  /** Records the entry (the operation may write pieces or commit a replacement once this resolves). */
  static async begin(ctx: StriperContext, pool: string, key: string, entry: Omit<PendingEntry, 'refreshedMs'>): Promise<PendingLease> {
    const lease = new PendingLease(ctx, pool, key, { ...entry, refreshedMs: 0 });
    await lease.write();
    return lease;
  }

  get name(): string {
    return this.entry.name;
  }

  get replaced(): PendingEntry['replaced'] {
    return this.entry.replaced;
  }

  /** Points the entry at the generation the next commit attempt replaces. */
  async setReplaced(replaced: PendingEntry['replaced']): Promise<void> {
    if (replaced?.generation === this.entry.replaced?.generation) return;
    this.requireAlive();
    this.entry = { ...this.entry, replaced };
    await this.write();
  }

  /** Refreshes the entry when a quarter of the lease has passed; Timeout if the lease already ran out. */
  async keepAlive(): Promise<void> {
    if (this.ageMs() >= this.ctx.settings.leaseMs / 4) await this.refresh();
  }

  /** Before a commit: at least half a lease must be left (a commit is bounded by the client's timeout). */
  async beforeCommit(): Promise<void> {
    if (this.ageMs() >= this.ctx.settings.leaseMs / 2) await this.refresh();
  }

  /** Removes the entry: the operation left nothing behind. */
  async end(): Promise<void> {
    await this.ctx.client.transact(this.pool, registryShardName(registryShardOf(this.key)), [{ type: 'omapRemoveKeys', keys: [Buffer.from(this.key)] }]);
  }

  private async refresh(): Promise<void> {
    this.requireAlive();
    await this.write();
  }

  private requireAlive(): void {
    if (this.ageMs() < this.ctx.settings.leaseMs) return;
    throw new TesseraError('Timeout', `striped write of ${this.entry.name}: its lease of ${this.ctx.settings.leaseMs} ms ran out (a sweeper may have collected its pieces)`);
  }

  private ageMs(): number {
    return this.ctx.io.clock.monotonicMs() - this.refreshedAtMs;
  }

  private async write(): Promise<void> {
    // Times are taken before the write is sent: the lease counts from the earliest moment the entry could carry.
    const startedMs = this.ctx.io.clock.monotonicMs();
    this.entry = { ...this.entry, refreshedMs: this.ctx.io.clock.nowMs() };
    const value = encodeEntry(this.entry);
    await this.ctx.client.transact(this.pool, registryShardName(registryShardOf(this.key)), [{ type: 'omapSet', entries: [[Buffer.from(this.key), value]] }]);
    this.refreshedAtMs = startedMs;
  }
}
