/**
 * A daemon's index of the staging objects and recovery temporaries in its
 * store, by pool and pg, so peering's queries need no store scan (a scan of
 * a pool's staging namespace costs an iterator per query, and walks the
 * tombstones every removed staging object leaves behind).
 *
 * Built by one scan per erasure-coded pool when the daemon starts (before it
 * serves), then kept up to date by the only writers of that namespace, all in
 * this daemon: stage and commit (ec-member.ts), resolve, and recovery pushes
 * (notePush). Memory: one name per write in flight or left by a crash.
 */
import type { ObjectId, StoreApi, StoreOp } from '../store/types.js';
import { stagingNs } from './ec-record.js';

const LIST_PAGE = 1000;

/** The pg a staging name ("<pg>.…") or recovery temporary name ("r.<pg>.…") belongs to, or -1. */
export function pgOfStagingName(name: string): number {
  const body = name.startsWith('r.') ? name.slice(2) : name;
  const dot = body.indexOf('.');
  const pg = Number(body.slice(0, dot));
  return dot > 0 && Number.isSafeInteger(pg) ? pg : -1;
}

export class EcStagingIndex {
  /** pool -> pg -> names. */
  private readonly pools = new Map<number, Map<number, Set<string>>>();

  private constructor() {}

  static async build(store: StoreApi, poolIds: readonly number[]): Promise<EcStagingIndex> {
    const index = new EcStagingIndex();
    for (const poolId of poolIds) {
      let cursor: string | undefined;
      for (;;) {
        const page = await store.listObjects({ ns: stagingNs(poolId), limit: LIST_PAGE, ...(cursor ? { cursor } : {}) });
        for (const o of page.objects) index.add({ ns: stagingNs(poolId), name: o.name });
        if (!page.cursor) break;
        cursor = page.cursor;
      }
    }
    return index;
  }

  private poolOf(ns: number): number | null {
    return ns % 256 === 254 ? Math.floor(ns / 256) : null;
  }

  add(id: ObjectId): void {
    const poolId = this.poolOf(id.ns);
    const pg = pgOfStagingName(id.name);
    if (poolId === null || pg < 0) return;
    let pgs = this.pools.get(poolId);
    if (!pgs) this.pools.set(poolId, (pgs = new Map()));
    let names = pgs.get(pg);
    if (!names) pgs.set(pg, (names = new Set()));
    names.add(id.name);
  }

  remove(id: ObjectId): void {
    const poolId = this.poolOf(id.ns);
    if (poolId === null) return;
    const pgs = this.pools.get(poolId);
    const pg = pgOfStagingName(id.name);
    const names = pgs?.get(pg);
    names?.delete(id.name);
    if (names?.size === 0) pgs!.delete(pg);
  }

  /** Names of the pg's staging objects and recovery temporaries. */
  names(poolId: number, pg: number): string[] {
    return [...(this.pools.get(poolId)?.get(pg) ?? [])];
  }

  /** Records what a (recovery) transaction did in staging namespaces, once it is durable. */
  notePush(ops: readonly StoreOp[]): void {
    for (const op of ops) {
      if (op.type === 'remove') this.remove(op.id);
      else if (op.type === 'move') {
        this.remove(op.id);
        this.add(op.to);
      } else this.add(op.id);
    }
  }
}
