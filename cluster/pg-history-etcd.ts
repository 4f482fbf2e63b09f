/**
 * The pg history registry (cluster/pg-history.ts) in etcd, beside the map:
 *
 *   <keyPrefix>/<clusterId>/pg/<poolId>.<pg>   {"epoch":E,"acting":[...]} (JSON; "neverWritable":true while no interval could take writes)
 *
 * One key per pg, so pgs never contend with each other. `get` is a
 * linearizable read. `put(pool, pg, expected, next)` reads the record and its
 * mod revision, checks the stored epoch is `expected` (null: no record; else
 * Conflict) and that next is newer (else InvalidArgument), then runs one
 * transaction: if the key is unchanged (mod_revision equal, or for null
 * create_revision 0, i.e. absent) put next, else Conflict. An attempt whose
 * answer was lost is repeated; if the key then holds exactly `next`, the put
 * reports success (its own earlier attempt landed). Two primaries can thus
 * never both record an interval over the same expected one. etcd answers once
 * a majority has the write fsynced: durable on resolve.
 *
 * Calls are bounded by the EtcdClient's budget (Unavailable or Timeout). The
 * client is shared with the map store and stays its owner's to close; close()
 * here refuses new calls and waits for those in flight.
 */
import type { IKeyValue } from 'etcd3';
import { TesseraError, corrupt, invalid } from '../src/lib/errors.js';
import type { EtcdAttempt, EtcdClient } from './etcd-client.js';
import { checkName } from './map-check.js';
import { checkEtcdKeyPrefix, etcdKeyPrefixDefault } from './map-store-etcd.js';
import type { PgHistory, PgIntervalRecord } from './pg-history.js';

/** Acting set length bound; the pg history's rpc decoder (cluster/pg-history.ts) uses the same. */
const ACTING_MAX = 64;
const ID_MAX = 2 ** 32;

export interface EtcdPgHistoryOptions {
  client: EtcdClient;
  clusterId: string;
  /** Default "/tessera", as the map store's. */
  keyPrefix?: string;
}

export class EtcdPgHistory implements PgHistory {
  private readonly prefix: string;
  private readonly inflight = new Set<Promise<unknown>>();
  private closed = false;

  constructor(private readonly options: EtcdPgHistoryOptions) {
    const keyPrefix = checkEtcdKeyPrefix(options.keyPrefix ?? etcdKeyPrefixDefault);
    this.prefix = `${keyPrefix}/${checkName(options.clusterId, 'clusterId')}/pg/`;
  }

  /** The key of one pg's record. */
  keyOf(poolId: number, pg: number): string {
    if (!isId(poolId) || !isId(pg)) throw invalid(`pg ${poolId}.${pg}: pool id and pg must be integers in [0, 2^32)`);
    return `${this.prefix}${poolId}.${pg}`;
  }

  get(poolId: number, pg: number): Promise<PgIntervalRecord | null> {
    return this.track(async () => {
      const key = this.keyOf(poolId, pg);
      const { client } = this.options;
      const response = await client.run(`pg history get ${poolId}.${pg}`, undefined, (call) => client.etcd.get(key).options(call).exec());
      const kv = response.kvs[0];
      return kv === undefined ? null : decodeRecord(kv, key);
    });
  }

  put(poolId: number, pg: number, expectedEpoch: number | null, next: PgIntervalRecord): Promise<void> {
    return this.track(async () => {
      const key = this.keyOf(poolId, pg);
      if (expectedEpoch !== null && (!Number.isSafeInteger(expectedEpoch) || expectedEpoch < 0)) throw invalid(`pg ${poolId}.${pg}: expected epoch ${expectedEpoch} is not an epoch`);
      const bytes = encodeRecord(next, `pg ${poolId}.${pg}`);
      const progress = { sent: false };
      await this.options.client.run(`pg history put ${poolId}.${pg}`, undefined, (call) => this.compareAndSet(key, expectedEpoch, next, bytes, call, progress));
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.inflight].map((p) => p.catch(() => undefined)));
  }

  private async compareAndSet(key: string, expectedEpoch: number | null, next: PgIntervalRecord, bytes: Buffer, call: EtcdAttempt, progress: { sent: boolean }): Promise<void> {
    const { etcd } = this.options.client;
    const response = await etcd.get(key).options(call).exec();
    const kv = response.kvs[0];
    if (progress.sent && kv !== undefined && Buffer.from(kv.value).equals(bytes)) return;
    const stored = kv === undefined ? null : decodeRecord(kv, key);
    if ((stored?.epoch ?? null) !== expectedEpoch) {
      throw new TesseraError('Conflict', `pg ${key.slice(this.prefix.length)}: interval of epoch ${stored?.epoch ?? 'none'} is stored, not ${expectedEpoch ?? 'none'}`);
    }
    if (stored && next.epoch <= stored.epoch) throw invalid(`pg ${key.slice(this.prefix.length)}: interval epoch ${next.epoch} is not newer than ${stored.epoch}`);
    progress.sent = true;
    const guard = kv === undefined ? etcd.if(key, 'Create', '==', 0) : etcd.if(key, 'Mod', '==', kv.mod_revision);
    const result = await guard.then(etcd.put(key).value(bytes)).options(call).commit();
    if (result.succeeded) return;
    throw new TesseraError('Conflict', `pg ${key.slice(this.prefix.length)}: its interval changed while it was being recorded`);
  }

  private track<T>(call: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new TesseraError('Closed', 'pg history is closed'));
    const promise = call();
    this.inflight.add(promise);
    void promise.then(
      () => this.inflight.delete(promise),
      () => this.inflight.delete(promise),
    );
    return promise;
  }
}

const isId = (n: number): boolean => Number.isSafeInteger(n) && n >= 0 && n < ID_MAX;

/** Canonical JSON of a valid record (InvalidArgument otherwise). */
function encodeRecord(record: PgIntervalRecord, what: string): Buffer {
  if (!Number.isSafeInteger(record.epoch) || record.epoch < 1) throw invalid(`${what}: interval epoch ${record.epoch} is not an epoch`);
  if (!Array.isArray(record.acting) || record.acting.length > ACTING_MAX || !record.acting.every((d) => Number.isSafeInteger(d) && d >= -1 && d < ID_MAX)) {
    throw invalid(`${what}: acting set must be at most ${ACTING_MAX} disk ids (or -1)`);
  }
  if (record.neverWritable !== undefined && record.neverWritable !== true) throw invalid(`${what}: neverWritable is true or absent`);
  return Buffer.from(JSON.stringify({ epoch: record.epoch, acting: [...record.acting], ...(record.neverWritable === true ? { neverWritable: true } : {}) }), 'utf8');
}

function decodeRecord(kv: IKeyValue, key: string): PgIntervalRecord {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(kv.value).toString('utf8'));
  } catch (err) {
    throw corrupt(`etcd key ${key} is not JSON`, err);
  }
  const r = value as Partial<PgIntervalRecord> | null;
  const ok =
    typeof r === 'object' &&
    r !== null &&
    Object.keys(r).length === (r.neverWritable === undefined ? 2 : 3) &&
    (r.neverWritable === undefined || r.neverWritable === true) &&
    Number.isSafeInteger(r.epoch) &&
    (r.epoch as number) >= 1 &&
    Array.isArray(r.acting) &&
    r.acting.length <= ACTING_MAX &&
    r.acting.every((d) => Number.isSafeInteger(d) && d >= -1 && d < ID_MAX);
  if (!ok) throw corrupt(`etcd key ${key} does not hold a pg interval record`);
  return { epoch: r.epoch as number, acting: [...(r.acting as number[])], ...(r.neverWritable === true ? { neverWritable: true as const } : {}) };
}
