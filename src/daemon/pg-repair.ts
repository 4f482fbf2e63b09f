/**
 * Repairing one object of a replicated pg from a good copy: read repair (the
 * primary's own copy fails its checksum on a client read) and scrub repair
 * (src/daemon/pg-scrub.ts pushes the authoritative copy to a bad member).
 *
 * A repair runs holding the pg's write gate (no new write of the pg is
 * ordered meanwhile) after the primary's own store writes in flight have
 * finished, and copies only a source whose version xattr equals the version
 * it expects: a replica still applying a write would otherwise hand back an
 * older object. Objects are copied whole (data, xattrs with the version,
 * omap) with the recovery copy (peering.ts copyObject), whose read of the
 * source verifies every checksum there: a corrupt source fails and the next
 * member is tried.
 */
import { isTesseraError, TesseraError, toTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { compareVersions, type Eversion } from '../protocol/osd-messages.js';
import type { ObjectId, StoreApi } from '../store/types.js';
import type { Osd } from './osd.js';
import type { Pg } from './pg.js';
import { decodeVersionValue, VERSION_XATTR } from './pg-log.js';
import { copyObject } from './peering.js';

/** Attempts (with a short wait between) while a replica's version differs from the primary's: a write may be landing there. */
const READ_REPAIR_ATTEMPTS = 3;
const READ_REPAIR_RETRY_MS = 200;

/** The object's version xattr; null when the object is absent; zero when it has none. */
export async function objectVersion(store: StoreApi, id: ObjectId): Promise<Eversion | null> {
  try {
    const v = (await store.getXattrs(id)).get(VERSION_XATTR);
    return v ? decodeVersionValue(v) : { epoch: 0, version: 0 };
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return null;
    throw err;
  }
}

const sameVersion = (a: Eversion | null, b: Eversion | null): boolean => (a === null || b === null ? a === b : compareVersions(a, b) === 0);

/** Runs fn while no new write of the pg is ordered and none of the primary's own store writes is in flight. */
export async function withPgQuiet<T>(osd: Osd, pg: Pg, fn: () => Promise<T>): Promise<T> {
  return pg.withGate(true, async () => {
    await pg.settleStoreWrites(osd.io.clock, limits.peeringWriteDrainMsMax);
    return fn();
  });
}

/**
 * The primary's copy of `name` failed its checksum (`cause`): replaces it with
 * an up-to-date acting replica's copy. Throws Corrupt (with the reasons) when
 * no member has a good copy of the same version.
 */
export async function readRepair(osd: Osd, pg: Pg, name: string, cause: unknown): Promise<void> {
  const id = pg.objectId(name);
  const reasons: string[] = [];
  for (let attempt = 0; attempt < READ_REPAIR_ATTEMPTS; attempt++) {
    if (attempt > 0) await osd.io.clock.sleep(READ_REPAIR_RETRY_MS);
    pg.requireActive();
    const done = await withPgQuiet(osd, pg, async () => {
      const wanted = await objectVersion(osd.store, id);
      for (const diskId of pg.acting) {
        if (diskId === osd.diskId || pg.backfilling.has(diskId)) continue;
        const source = osd.memberHandle(pg, diskId);
        try {
          const have = await objectVersion(source.store, id);
          if (!sameVersion(have, wanted)) {
            reasons.push(`disk ${diskId} holds version ${JSON.stringify(have)}, the primary ${JSON.stringify(wanted)}`);
            continue;
          }
          await copyObject(pg, source, osd.memberHandle(pg, osd.diskId), name, new AbortController().signal);
          console.error(`disk ${osd.diskId}: pg ${pg.key}: read repair of ${name} from disk ${diskId} (local copy: ${toTesseraError(cause).message})`);
          return true;
        } catch (err) {
          reasons.push(`disk ${diskId}: ${toTesseraError(err).code} ${toTesseraError(err).message}`);
        }
      }
      return false;
    });
    if (done) return;
  }
  throw new TesseraError('Corrupt', `pg ${pg.key}: ${name} is corrupt on the primary and no replica has a good copy of its version (${reasons.join('; ')})`, { cause });
}
