/**
 * The pg history registry: for each placement group, the last interval that
 * went active (the map epoch it started in and its acting set). A new
 * primary reads it before activating a pg: it may go active only if it has
 * heard from at least one member of that interval, which holds every write
 * the interval acknowledged (writes need every acting member); then it
 * records its own interval, compare-and-set on the epoch, so two primaries
 * can never both activate. Every interval that activates is recorded, even
 * one below the write quorum (it serves reads of what its members hold,
 * which may include writes applied but never acknowledged); such records
 * carry neverWritable while no interval before could take writes either,
 * and then bind no later interval (the pg holds no data). It lives beside the map in the map service
 * process (embedded: one file, rewritten atomically, writes grouped), and
 * travels over rpc with opcodes 120-129.
 */
import { join } from 'node:path';
import type { Io } from '../src/io/io.js';
import { Reader, Writer } from '../src/lib/codec.js';
import { TesseraError, corrupt } from '../src/lib/errors.js';
import type { RpcClient, RpcHandler } from '../src/rpc/types.js';

export interface PgIntervalRecord {
  /** Map epoch the interval went active in. */
  epoch: number;
  /** Its acting disks in order (-1: a hole, erasure-coded pools). */
  acting: number[];
  /**
   * No interval of this pg up to this one could take writes (each had fewer acting members than
   * the pool's write quorum: min_size, k+1 shards), so no store holds any of its data, applied or
   * acknowledged: a later interval need not hear from these members. Absent: false.
   */
  neverWritable?: true;
}

/** The record as stored: neverWritable only when true. */
function normalRecord(r: PgIntervalRecord): PgIntervalRecord {
  return { epoch: r.epoch, acting: [...r.acting], ...(r.neverWritable === true ? { neverWritable: true as const } : {}) };
}

export interface PgHistory {
  get(poolId: number, pg: number): Promise<PgIntervalRecord | null>;
  /**
   * Stores next if the stored record's epoch is expectedEpoch (null: none
   * stored yet), else Conflict; next.epoch must be newer. Durable on resolve.
   */
  put(poolId: number, pg: number, expectedEpoch: number | null, next: PgIntervalRecord): Promise<void>;
  close(): Promise<void>;
}

const key = (poolId: number, pg: number): string => `${poolId}.${pg}`;
const FILE = 'pg-history.json';
const ACTING_MAX = 64;

export class EmbeddedPgHistory implements PgHistory {
  private readonly records = new Map<string, PgIntervalRecord>();
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;
  private closed = false;

  private constructor(
    private readonly io: Io,
    private readonly dir: string,
  ) {}

  static async open(io: Io, dir: string): Promise<EmbeddedPgHistory> {
    const h = new EmbeddedPgHistory(io, dir);
    const path = join(dir, FILE);
    if (await io.fs.stat(path)) {
      let parsed: unknown;
      try {
        parsed = JSON.parse((await io.fs.readFile(path)).toString('utf8'));
      } catch (err) {
        throw corrupt(`${path} is not valid JSON`, err);
      }
      for (const [k, v] of Object.entries(parsed as Record<string, PgIntervalRecord>)) {
        if (!/^\d+\.\d+$/.test(k) || !Number.isSafeInteger(v?.epoch) || !Array.isArray(v.acting) || (v.neverWritable !== undefined && v.neverWritable !== true)) throw corrupt(`${path}: bad record ${k}`);
        h.records.set(k, normalRecord({ epoch: v.epoch, acting: v.acting.map(Number), ...(v.neverWritable ? { neverWritable: true } : {}) }));
      }
    }
    return h;
  }

  async get(poolId: number, pg: number): Promise<PgIntervalRecord | null> {
    this.check();
    return this.records.get(key(poolId, pg)) ?? null;
  }

  async put(poolId: number, pg: number, expectedEpoch: number | null, next: PgIntervalRecord): Promise<void> {
    this.check();
    const k = key(poolId, pg);
    const stored = this.records.get(k) ?? null;
    if ((stored?.epoch ?? null) !== expectedEpoch) {
      throw new TesseraError('Conflict', `pg ${k}: interval of epoch ${stored?.epoch ?? 'none'} is stored, not ${expectedEpoch ?? 'none'}`);
    }
    if (stored && next.epoch <= stored.epoch) throw new TesseraError('InvalidArgument', `pg ${k}: interval epoch ${next.epoch} is not newer than ${stored.epoch}`);
    const record = normalRecord(next);
    this.records.set(k, record);
    try {
      await this.flush();
    } catch (err) {
      // Not durable: readers must not go on seeing it (a later put may have replaced it meanwhile: that one stands).
      if (this.records.get(k) === record) {
        if (stored) this.records.set(k, stored);
        else this.records.delete(k);
      }
      throw err;
    }
  }

  /**
   * Groups concurrent puts into one atomic file write. A failed write (e.g. ENOSPC) fails the puts
   * it carried and leaves the file as it was; the next flush writes again (the chain goes on).
   */
  private flush(): Promise<void> {
    this.dirty = true;
    this.writing = this.writing
      .catch(() => undefined)
      .then(async () => {
        if (!this.dirty) return;
        this.dirty = false;
        const body = JSON.stringify(Object.fromEntries(this.records));
        try {
          await this.io.fs.writeFileAtomic(join(this.dir, FILE), Buffer.from(body));
        } catch (err) {
          this.dirty = true;
          throw err;
        }
      });
    return this.writing;
  }

  private check(): void {
    if (this.closed) throw new TesseraError('Closed', 'pg history is closed');
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.writing.catch(() => undefined);
  }
}

export const PgHistoryOpcode = { get: 120, put: 121 } as const;

/** epoch, acting; then a flag byte only when neverWritable (a record without it is the format before the flag). */
function encodeRecord(w: Writer, r: PgIntervalRecord): void {
  w.varint(r.epoch).varint(r.acting.length);
  for (const d of r.acting) w.varint(d + 1);
  if (r.neverWritable === true) w.bool(true);
}

function decodeRecord(r: Reader): PgIntervalRecord {
  const epoch = r.varint();
  const n = r.varint(ACTING_MAX);
  const acting: number[] = [];
  for (let i = 0; i < n; i++) acting.push(r.varint() - 1);
  if (r.remainingBytes === 0) return { epoch, acting };
  if (!r.bool()) throw new TesseraError('ProtocolError', 'pg history record: a neverWritable flag that is false');
  return { epoch, acting, neverWritable: true };
}

/** Serves a PgHistory over rpc. */
export function pgHistoryHandler(history: PgHistory): RpcHandler {
  return async ({ op, header }) => {
    const r = new Reader(header, 'ProtocolError', 'pg history request');
    const poolId = r.varint();
    const pg = r.varint();
    if (op === PgHistoryOpcode.get) {
      r.end();
      const rec = await history.get(poolId, pg);
      const w = new Writer(32).bool(rec !== null);
      if (rec) encodeRecord(w, rec);
      return { header: w.finish() };
    }
    if (op === PgHistoryOpcode.put) {
      const expected = r.bool() ? r.varint() : null;
      const next = decodeRecord(r);
      r.end();
      await history.put(poolId, pg, expected, next);
      return { header: Buffer.alloc(0) };
    }
    throw new TesseraError('NotSupported', `unknown pg history operation ${op}`);
  };
}

/** The PgHistory of a map service in another process. */
export class PgHistoryClient implements PgHistory {
  constructor(
    private readonly rpc: RpcClient,
    private readonly timeoutMs = 10_000,
  ) {}

  async get(poolId: number, pg: number): Promise<PgIntervalRecord | null> {
    const reply = await this.rpc.call(PgHistoryOpcode.get, new Writer(16).varint(poolId).varint(pg).finish(), [], { idempotent: true, timeoutMs: this.timeoutMs });
    const r = new Reader(reply.header, 'ProtocolError', 'pg history reply');
    const rec = r.bool() ? decodeRecord(r) : null;
    r.end();
    return rec;
  }

  async put(poolId: number, pg: number, expectedEpoch: number | null, next: PgIntervalRecord): Promise<void> {
    const w = new Writer(64).varint(poolId).varint(pg).bool(expectedEpoch !== null);
    if (expectedEpoch !== null) w.varint(expectedEpoch);
    encodeRecord(w, next);
    // Not idempotent on the wire, but a retried put either lands or reports Conflict, which the caller re-reads.
    await this.rpc.call(PgHistoryOpcode.put, w.finish(), [], { timeoutMs: this.timeoutMs });
  }

  async close(): Promise<void> {}
}
