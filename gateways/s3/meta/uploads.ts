/**
 * Multipart uploads' metadata, in the metadata pool (docs/s3-multipart.md):
 *
 * - "s3.uploads.<bucketId>": one omap entry per upload in progress, key
 *   `<object key> 0x00 <uploadId>` (keys never hold 0x00), value the
 *   UploadRecord: what the object will be (metadata, ACL, checksum kind).
 *   ListMultipartUploads reads it in order: by key, then by upload id (ids
 *   start with their creation time, so by initiation).
 * - "s3.upload.<bucketId>.<uploadId>": the upload's own object, omap
 *   's'             -> its state: open, completing (with the plan), aborting;
 *   'p' + 5 digits  -> a part's record (data object, size, ETag, checksums);
 *   'd' + data name -> data the upload owns that no part record names: a
 *                      part being written, or a part that was replaced.
 *
 * Invariants: a part record or 'd' entry is only added while the state is
 * open (each transaction compares the state's exact bytes), so once an abort
 * or a complete has moved the state on, every byte of data the upload owns
 * is named by a 'p' or 'd' entry and is collected from there. Data is
 * removed only after the entry naming it is gone from 'p' (replaced) or the
 * upload is finished. The state's transitions are compare-and-set.
 */
import type { TesseraClient } from '../../../src/client/client.js';
import { isTesseraError } from '../../../src/lib/errors.js';
import { limits } from '../../../src/lib/limits.js';
import type { ChecksumType, UploadChecksum } from '../ops/multipart-checksum.js';

export interface UploadRecord {
  key: string;
  uploadId: string;
  initiatedMs: number;
  /** Who will own the object (the writer; the bucket owner for anonymous writers). */
  owner: string;
  /** Who created the upload (null: anonymous). */
  initiator: string | null;
  contentType?: string;
  headers: Record<string, string>;
  meta: Record<string, string>;
  acl?: unknown;
  checksum: UploadChecksum;
}

export interface PartRecord {
  partNumber: number;
  /** The part's striped object (data pool), immutable. */
  data: string;
  sizeBytes: number;
  /** Quoted MD5 hex. */
  etag: string;
  mtimeMs: number;
  /** Every checksum computed for the part (base64), by algorithm. */
  checksums: Record<string, string>;
}

/** What a complete decided, fixed before anything is committed, so that any later request can finish it the same way. */
export interface CompletionPlan {
  /** Chosen part numbers, as a bitmap (bit n-1 for part n), base64. */
  parts: string;
  etag: string;
  mtimeMs: number;
  sizeBytes: number;
  checksum: { algorithm: string; type: ChecksumType; value: string };
  /** The index entry was written (set right after; absent: check the index). */
  committed?: boolean;
  /** The complete's If-None-Match: * / If-Match (ops/object.ts WriteCondition): whoever commits the plan checks it with the commit. */
  condition?: { ifNoneMatch?: true; ifMatch?: string };
}

export type UploadState = { s: 'open' } | { s: 'completing'; plan: CompletionPlan } | { s: 'aborting' };

export interface Stored<T> {
  value: T;
  raw: Buffer;
}

/** Everything in an upload's object. */
export interface UploadContents {
  state: Stored<UploadState> | null;
  parts: Map<number, Stored<PartRecord>>;
  /** Data names of 'd' entries. */
  owned: string[];
}

const STATE = Buffer.from('s');
const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
const partKey = (n: number): Buffer => utf8(`p${String(n).padStart(5, '0')}`);
const dataKey = (name: string): Buffer => utf8(`d${name}`);
const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const parse = <T>(raw: Buffer): Stored<T> => ({ value: JSON.parse(raw.toString('utf8')) as T, raw });

/** The listing key of an upload. */
export const uploadKey = (key: string, uploadId: string): Buffer => Buffer.concat([utf8(key), Buffer.from([0]), utf8(uploadId)]);

export class UploadStore {
  readonly listing: string;

  constructor(
    private readonly client: TesseraClient,
    private readonly pool: string,
    private readonly bucketId: string,
  ) {
    this.listing = `s3.uploads.${bucketId}`;
  }

  private object(uploadId: string): string {
    return `s3.upload.${this.bucketId}.${uploadId}`;
  }

  /** Lists the upload first (so that a failure after it leaves something ListMultipartUploads shows and Abort removes), then opens its object. */
  async create(record: UploadRecord): Promise<void> {
    const k = uploadKey(record.key, record.uploadId);
    await this.client.transact(this.pool, this.listing, [{ type: 'create' }, { type: 'omapCompare', key: k, value: null }, { type: 'omapSet', entries: [[k, json(record)]] }]);
    await this.client.transact(this.pool, this.object(record.uploadId), [{ type: 'create', exclusive: true }, { type: 'omapSet', entries: [[STATE, json({ s: 'open' })]] }]);
  }

  async record(key: string, uploadId: string): Promise<UploadRecord | null> {
    try {
      const [raw] = await this.client.omapGet(this.pool, this.listing, [uploadKey(key, uploadId)]);
      return raw ? parse<UploadRecord>(raw).value : null;
    } catch (err) {
      if (isTesseraError(err, 'NotFound')) return null;
      throw err;
    }
  }

  async removeRecord(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.transact(this.pool, this.listing, [{ type: 'omapRemoveKeys', keys: [uploadKey(key, uploadId)] }]);
    } catch (err) {
      if (!isTesseraError(err, 'NotFound')) throw err;
    }
  }

  /** A page of upload records with listing keys > after (and starting with prefix). */
  async listRecords(o: { prefix: Buffer; after?: Buffer; limit: number }): Promise<{ entries: Array<[Buffer, UploadRecord]>; more: boolean }> {
    try {
      const page = await this.client.omapList(this.pool, this.listing, { prefix: o.prefix, limit: o.limit, ...(o.after && Buffer.compare(o.after, o.prefix) > 0 ? { afterKey: o.after } : {}) });
      return { entries: page.entries.map(([k, v]) => [k, parse<UploadRecord>(v).value]), more: page.more };
    } catch (err) {
      if (isTesseraError(err, 'NotFound')) return { entries: [], more: false };
      throw err;
    }
  }

  /** The state and a part's record (one read), null when the upload's object is gone. */
  async stateAndPart(uploadId: string, partNumber: number): Promise<{ state: Stored<UploadState> | null; part: Stored<PartRecord> | null }> {
    try {
      const [s, p] = await this.client.omapGet(this.pool, this.object(uploadId), [STATE, partKey(partNumber)]);
      return { state: s ? parse<UploadState>(s) : null, part: p ? parse<PartRecord>(p) : null };
    } catch (err) {
      if (isTesseraError(err, 'NotFound')) return { state: null, part: null };
      throw err;
    }
  }

  async state(uploadId: string): Promise<Stored<UploadState> | null> {
    return (await this.stateAndPart(uploadId, 1)).state;
  }

  /** Replaces the state if it still holds `expected`'s bytes; Conflict otherwise (also when the upload is gone). */
  async setState(uploadId: string, expected: Buffer, next: UploadState): Promise<Buffer> {
    const raw = json(next);
    await this.client.transact(this.pool, this.object(uploadId), [{ type: 'omapCompare', key: STATE, value: expected }, { type: 'omapSet', entries: [[STATE, raw]] }]);
    return raw;
  }

  /** Records data about to be written for the upload (Conflict unless the state is still `open`'s bytes). */
  async claimData(uploadId: string, open: Buffer, dataName: string, atMs: number): Promise<void> {
    await this.client.transact(this.pool, this.object(uploadId), [{ type: 'omapCompare', key: STATE, value: open }, { type: 'omapSet', entries: [[dataKey(dataName), json({ atMs })]] }]);
  }

  /**
   * Makes `part` the record of its part number if the state is still open and
   * the record still `previous` (Conflict otherwise). In the same transaction
   * the new data stops being a 'd' entry and the replaced data becomes one.
   */
  async putPart(uploadId: string, o: { open: Buffer; previous: Stored<PartRecord> | null; part: PartRecord }): Promise<void> {
    const k = partKey(o.part.partNumber);
    const set: Array<[Buffer, Buffer]> = [[k, json(o.part)]];
    if (o.previous) set.push([dataKey(o.previous.value.data), json({ replacedMs: o.part.mtimeMs })]);
    await this.client.transact(this.pool, this.object(uploadId), [
      { type: 'omapCompare', key: STATE, value: o.open },
      { type: 'omapCompare', key: k, value: o.previous?.raw ?? null },
      { type: 'omapSet', entries: set },
      { type: 'omapRemoveKeys', keys: [dataKey(o.part.data)] },
    ]);
  }

  /** Forgets a 'd' entry whose data is gone (best effort: a leftover entry only costs a NotFound at cleanup). */
  async forgetData(uploadId: string, dataName: string): Promise<void> {
    await this.client.transact(this.pool, this.object(uploadId), [{ type: 'omapRemoveKeys', keys: [dataKey(dataName)] }]).catch(() => undefined);
  }

  /** A page of part records with part number > after. */
  async listParts(uploadId: string, o: { after: number; limit: number }): Promise<{ parts: PartRecord[]; more: boolean }> {
    try {
      const page = await this.client.omapList(this.pool, this.object(uploadId), { prefix: utf8('p'), afterKey: partKey(o.after), limit: o.limit });
      return { parts: page.entries.map(([, v]) => parse<PartRecord>(v).value), more: page.more };
    } catch (err) {
      if (isTesseraError(err, 'NotFound')) return { parts: [], more: false };
      throw err;
    }
  }

  /** Everything in the upload's object (paged reads: up to 10,000 parts and their 'd' entries). */
  async contents(uploadId: string): Promise<UploadContents> {
    const out: UploadContents = { state: null, parts: new Map(), owned: [] };
    let after: Buffer | undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.omapList(this.pool, this.object(uploadId), { limit: limits.listPageEntriesMax, ...(after ? { afterKey: after } : {}) });
      } catch (err) {
        if (isTesseraError(err, 'NotFound')) return out;
        throw err;
      }
      for (const [k, v] of page.entries) {
        const kind = String.fromCharCode(k[0]!);
        if (kind === 's' && k.length === 1) out.state = parse<UploadState>(v);
        else if (kind === 'p') {
          const p = parse<PartRecord>(v);
          out.parts.set(p.value.partNumber, p);
        } else if (kind === 'd') out.owned.push(k.subarray(1).toString('utf8'));
      }
      if (!page.more || page.entries.length === 0) return out;
      after = page.entries[page.entries.length - 1]![0];
    }
  }

  /** Removes the upload's object (its state, records and entries at once). */
  async destroy(uploadId: string): Promise<void> {
    await this.client.transact(this.pool, this.object(uploadId), [{ type: 'remove', ifExists: true }]);
  }
}
