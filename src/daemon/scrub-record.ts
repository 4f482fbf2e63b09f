/**
 * A pg's scrub record, kept by the primary that scrubbed it, in its own
 * store: when the pg was last scrubbed and deep-scrubbed (wall-clock ms),
 * whether the last scrub was deep, how many inconsistencies it left
 * unrepaired and the first of them (at most limits.scrubInconsistenciesKeptMax:
 * the count goes on past it). A restarted primary loads it with the pg
 * (src/daemon/osd.ts pgFor), so `tessera pg inconsistent`, the pg's
 * `+inconsistent` state and the background scheduler's times survive a
 * restart (src/daemon/pg-scrub.ts writes it after each scrub).
 *
 * Where: the object "scrub.<pg>" in the pool's meta namespace (beside the pg
 * log's "pg.<pg>", not in it: that object is rewritten by every write, and
 * its omap is the log). Its xattr "scrub" holds the times and counts (JSON);
 * its omap one key per kept inconsistency ("i" + index as u32be, JSON). A
 * scrub replaces it whole in one transaction. It is not replicated: a disk
 * that becomes a pg's primary uses the record it holds (it scrubbed the pg
 * when it was primary before), or counts the pg as never scrubbed here.
 * Stray cleanup removes it with the pg's other objects; the pool purger with
 * the pool's.
 *
 * A record that does not decode is reported and ignored (the pg loads as
 * never scrubbed here): a scrub record never stops a pg from loading.
 */
import { corrupt, toTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { inconsistencyFromJson, type Inconsistency } from '../protocol/osd-admin-messages.js';
import type { ObjectId, StoreApi, StoreOp } from '../store/types.js';
import { metaNs } from './pg-log.js';

const RECORD_XATTR = 'scrub';
const FORMAT = 1;
/** Bytes of an inconsistency's detail kept on disk (details are a line or two; a longer one is cut). */
const DETAIL_BYTES_MAX = 1024;

export const scrubRecordObject = (poolId: number, pg: number): ObjectId => ({ ns: metaNs(poolId), name: `scrub.${pg}` });

export interface ScrubRecord {
  /** Wall-clock ms of the last scrub (shallow or deep) and of the last deep scrub; 0: never. */
  scrubbedAtMs: number;
  deepScrubbedAtMs: number;
  /** Whether the last scrub was deep. */
  lastDeep: boolean;
  /** Inconsistencies the last scrub left unrepaired, all of them. */
  unrepaired: number;
  /** The first of them (at most limits.scrubInconsistenciesKeptMax). */
  kept: Inconsistency[];
}

const indexKey = (i: number): Buffer => {
  const k = Buffer.alloc(5);
  k[0] = 0x69; // 'i'
  k.writeUInt32BE(i, 1);
  return k;
};

function cutDetail(detail: string): string {
  if (Buffer.byteLength(detail) <= DETAIL_BYTES_MAX) return detail;
  return `${Buffer.from(detail).subarray(0, DETAIL_BYTES_MAX - 3).toString('utf8').replace(/\uFFFD$/, '')}...`;
}

/** Store ops replacing the pg's scrub record with `r` (the kept list cut to the limit). */
export function scrubRecordOps(poolId: number, pg: number, r: ScrubRecord): StoreOp[] {
  const id = scrubRecordObject(poolId, pg);
  const kept = r.kept.slice(0, limits.scrubInconsistenciesKeptMax);
  const head = { format: FORMAT, scrubbedAtMs: r.scrubbedAtMs, deepScrubbedAtMs: r.deepScrubbedAtMs, lastDeep: r.lastDeep, unrepaired: Math.max(r.unrepaired, kept.length), kept: kept.length };
  const ops: StoreOp[] = [
    { type: 'remove', id, ifExists: true },
    { type: 'create', id },
    { type: 'setXattr', id, name: RECORD_XATTR, value: Buffer.from(JSON.stringify(head)) },
  ];
  if (kept.length > 0) {
    const entries = kept.map((i, n) => {
      const doc = { object: i.object, diskId: i.diskId, kinds: i.kinds, detail: cutDetail(i.detail), authDiskId: i.authDiskId };
      return [indexKey(n), Buffer.from(JSON.stringify(doc))] as const;
    });
    ops.push({ type: 'omapSet', id, entries });
  }
  return ops;
}

const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function decodeInconsistency(b: Buffer): Inconsistency {
  const d = JSON.parse(b.toString('utf8')) as unknown;
  if (typeof d !== 'object' || d === null || Array.isArray(d)) throw new Error('not an object');
  return { ...inconsistencyFromJson(d as Record<string, unknown>), repaired: false };
}

/** The pg's scrub record in this store; null when there is none (never scrubbed by this disk as primary). */
export async function loadScrubRecord(store: StoreApi, poolId: number, pg: number): Promise<ScrubRecord | null> {
  const id = scrubRecordObject(poolId, pg);
  let raw: Buffer | undefined;
  try {
    raw = (await store.getXattrs(id)).get(RECORD_XATTR);
  } catch (err) {
    if (toTesseraError(err).code === 'NotFound') return null;
    throw err;
  }
  try {
    if (!raw) throw new Error('no record xattr');
    const h = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
    if (h.format !== FORMAT || !isUint(h.scrubbedAtMs) || !isUint(h.deepScrubbedAtMs) || typeof h.lastDeep !== 'boolean' || !isUint(h.unrepaired) || !isUint(h.kept)) throw new Error('fields');
    if (h.kept > limits.scrubInconsistenciesKeptMax || h.kept > h.unrepaired) throw new Error(`${h.kept} inconsistencies kept`);
    const kept: Inconsistency[] = [];
    if (h.kept > 0) {
      const page = await store.omapList(id, { limit: h.kept });
      for (const [k, v] of page.entries) {
        if (k.length !== 5 || k[0] !== 0x69 || k.readUInt32BE(1) !== kept.length) throw new Error('inconsistency keys out of order');
        kept.push(decodeInconsistency(v));
      }
      if (kept.length !== h.kept) throw new Error(`${kept.length} inconsistencies stored, ${h.kept} recorded`);
    }
    return { scrubbedAtMs: h.scrubbedAtMs, deepScrubbedAtMs: h.deepScrubbedAtMs, lastDeep: h.lastDeep, unrepaired: h.unrepaired, kept };
  } catch (err) {
    const e = corrupt(`pg ${poolId}.${pg}: scrub record is unreadable`, err);
    console.error(`${e.message} (${err instanceof Error ? err.message : String(err)}): ignored, the pg counts as never scrubbed here`);
    return null;
  }
}
