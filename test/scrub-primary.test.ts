/**
 * Who may scrub and record (src/daemon/pg-scrub.ts scrubPg), on a real
 * object store with a stand-in daemon (one disk, a replicated pool):
 *
 * - a disk that is not the pg's primary (an on-demand scrub queued behind a
 *   background one after the primary moved: requireActive holds on replicas
 *   too) refuses with StaleEpoch and writes no scrub record;
 * - a scrub during which the pool is removed (osd.ts onMap drops the pg and
 *   ends its interval) writes no scrub record after the purge; nor does one
 *   whose interval ended meanwhile;
 * - the control: the primary's scrub of an unchanged pg writes its record.
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { ObjectStore } from '../src/store/index.js';
import type { StoreApi } from '../src/store/types.js';
import type { PoolInfo } from '../cluster/map.js';
import { Pg } from '../src/daemon/pg.js';
import { PgLog } from '../src/daemon/pg-log.js';
import type { Osd } from '../src/daemon/osd.js';
import { scrubPg, scrubPgSerialized } from '../src/daemon/pg-scrub.js';
import { loadScrubRecord } from '../src/daemon/scrub-record.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();
let dir: Awaited<ReturnType<typeof makeTempDir>>;
let store: ObjectStore;

beforeEach(async () => {
  dir = await makeTempDir('scrub-primary');
  store = await ObjectStore.open({ io, path: dir.path, create: { clusterId: 'c1', diskId: 1 }, maintenance: { enabled: false } });
});
afterEach(async () => {
  await store.close();
  await dir.remove();
});

const pool: PoolInfo = { id: 3, name: 'p', redundancy: { type: 'replicated', size: 2, minSize: 1 }, failureDomain: 'host', pgCount: 4, readOnly: false };

/** Disk 1's pg 1 of the pool, active in interval 7 with `primary`; a stand-in daemon holding it (its store: `storeOf`). */
async function setup(primary: number, storeOf: (osd: { pgs: Map<string, Pg>; view: { map: { pools: PoolInfo[] } } }) => StoreApi = () => store): Promise<{ osd: Osd; pg: Pg }> {
  const pg = new Pg(pool, 1, await PgLog.load(store, pool.id, 1));
  pg.state = 'active';
  pg.intervalStart = 7;
  pg.primary = primary;
  pg.acting = primary === 1 ? [1] : [primary, 1];
  pg.positions = [...pg.acting];
  const o = { diskId: 1, io, view: { epoch: 9, map: { pools: [pool] } }, pgs: new Map([[pg.key, pg]]) };
  return { osd: Object.assign(o, { store: storeOf(o) }) as unknown as Osd, pg };
}

it('a disk that is not the primary refuses to scrub (StaleEpoch) and writes no record', async () => {
  const { osd, pg } = await setup(2);
  await expect(scrubPg(osd, pg, { deep: false, repair: true })).rejects.toMatchObject({ code: 'StaleEpoch' });
  await expect(scrubPgSerialized(osd, pg, { deep: true, repair: true })).rejects.toMatchObject({ code: 'StaleEpoch' });
  expect(await loadScrubRecord(store, pool.id, 1)).toBeNull();
});

it("the primary's scrub records; not when the pool is removed or the interval ends during it", async () => {
  const ok = await setup(1);
  const r = await scrubPg(ok.osd, ok.pg, { deep: true, repair: false });
  expect(r.scrubbed).toBe(true);
  expect((await loadScrubRecord(store, pool.id, 1))?.lastDeep).toBe(true);

  for (const event of ['pool removed', 'interval ended'] as const) {
    // A fresh store directory per case: no record yet.
    await store.close();
    await dir.remove();
    dir = await makeTempDir('scrub-primary');
    store = await ObjectStore.open({ io, path: dir.path, create: { clusterId: 'c1', diskId: 1 }, maintenance: { enabled: false } });
    // The event lands while the scrub lists the pg's objects (what osd.ts onMap does on a new map).
    let pgRef: Pg | null = null;
    const { osd, pg } = await setup(1, (o) =>
      new Proxy(store, {
        get(target, prop, receiver) {
          const v = Reflect.get(target, prop, receiver) as unknown;
          if (prop !== 'listObjects' || typeof v !== 'function') return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
          return async (...args: unknown[]) => {
            const page = await (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
            if (event === 'pool removed') {
              o.view.map.pools = [];
              pgRef!.endInterval();
              o.pgs.delete(pgRef!.key);
            } else {
              pgRef!.endInterval();
              pgRef!.intervalStart = 8;
            }
            return page;
          };
        },
      }),
    );
    pgRef = pg;
    await scrubPg(osd, pg, { deep: false, repair: false });
    expect(await loadScrubRecord(store, pool.id, 1), event).toBeNull();
  }
});
