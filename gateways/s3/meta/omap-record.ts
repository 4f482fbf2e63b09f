/**
 * JSON records kept as values of an omap key in a metadata object, with
 * compare-and-set updates (omapCompare on the exact bytes read): the building
 * block of the gateway's users, buckets and bucket index.
 */
import { TesseraError, isTesseraError } from '../../../src/lib/errors.js';
import type { ObjectOp, TesseraClient } from '../../../src/client/client.js';

export const RECORD_UPDATE_ATTEMPTS_MAX = 32;

export class OmapRecords<T> {
  constructor(
    private readonly client: TesseraClient,
    private readonly pool: string,
    private readonly object: string,
  ) {}

  private key(k: string): Buffer {
    return Buffer.from(k, 'utf8');
  }

  /** The record and its exact stored bytes (for compare-and-set), or null. */
  async getRaw(k: string): Promise<{ value: T; raw: Buffer } | null> {
    let raw: Buffer | undefined;
    try {
      [raw] = await this.client.omapGet(this.pool, this.object, [this.key(k)]);
    } catch (err) {
      if (isTesseraError(err, 'NotFound')) return null;
      throw err;
    }
    return raw ? { value: JSON.parse(raw.toString('utf8')) as T, raw } : null;
  }

  async get(k: string): Promise<T | null> {
    return (await this.getRaw(k))?.value ?? null;
  }

  /**
   * Stores next (null: removes) if the key still holds expected (null: absent); Conflict otherwise.
   * `also` are more changes of the same object, applied in the same transaction (all or nothing).
   */
  async compareAndSet(k: string, expected: Buffer | null, next: T | null, also: ObjectOp[] = []): Promise<void> {
    const key = this.key(k);
    await this.client.transact(this.pool, this.object, [
      { type: 'create' },
      { type: 'omapCompare', key, value: expected },
      next === null ? { type: 'omapRemoveKeys', keys: [key] } : { type: 'omapSet', entries: [[key, Buffer.from(JSON.stringify(next))]] },
      ...also,
    ]);
  }

  /** Changes of this object in one transaction (compare ops make it conditional). */
  async transact(ops: ObjectOp[]): Promise<void> {
    await this.client.transact(this.pool, this.object, [{ type: 'create' }, ...ops]);
  }

  /** The values of several keys in one read (absent: undefined). */
  async getMany(keys: string[]): Promise<Array<Buffer | undefined>> {
    try {
      return await this.client.omapGet(this.pool, this.object, keys.map((k) => this.key(k)));
    } catch (err) {
      if (isTesseraError(err, 'NotFound')) return keys.map(() => undefined);
      throw err;
    }
  }

  /**
   * Read-modify-write with retries on Conflict; edit returns the next value (null removes) or undefined for no change.
   * also(current, next) gives more changes of the object for the same transaction.
   */
  async update(k: string, edit: (current: T | null) => T | null | undefined, also?: (current: T | null, next: T | null) => ObjectOp[]): Promise<T | null> {
    for (let attempt = 0; attempt < RECORD_UPDATE_ATTEMPTS_MAX; attempt++) {
      const current = await this.getRaw(k);
      const next = edit(current?.value ?? null);
      if (next === undefined) return current?.value ?? null;
      try {
        await this.compareAndSet(k, current?.raw ?? null, next, also?.(current?.value ?? null, next));
        return next;
      } catch (err) {
        if (!isTesseraError(err, 'Conflict')) throw err;
      }
    }
    throw new TesseraError('Busy', `record ${k} of ${this.object} kept changing; retry`);
  }

  /**
   * Every record with its stored bytes, in key order (paged): those starting with prefix, after afterKey, before endKey.
   * pageEntries: entries per read (1000 unless given; a caller that needs fewer reads fewer).
   */
  async *list(options: { prefix?: string; afterKey?: string; endKey?: string; pageEntries?: number } = {}): AsyncGenerator<[string, T, Buffer]> {
    let after = options.afterKey !== undefined ? this.key(options.afterKey) : undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.omapList(this.pool, this.object, {
          limit: Math.min(options.pageEntries ?? 1000, 1000),
          ...(options.prefix ? { prefix: this.key(options.prefix) } : {}),
          ...(options.endKey !== undefined ? { endKey: this.key(options.endKey) } : {}),
          ...(after ? { afterKey: after } : {}),
        });
      } catch (err) {
        if (isTesseraError(err, 'NotFound')) return;
        throw err;
      }
      for (const [k, v] of page.entries) yield [k.toString('utf8'), JSON.parse(v.toString('utf8')) as T, v];
      if (!page.more || page.entries.length === 0) return;
      after = page.entries[page.entries.length - 1]![0];
    }
  }
}
