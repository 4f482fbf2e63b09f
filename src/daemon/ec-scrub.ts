/**
 * Erasure-coded deep scrub of parity: an object's data shards are read,
 * coded again with the pool's codec (the write path's encode, ec-encode.ts)
 * and the result compared with the stored parity shards. A parity shard that
 * differs while its own chunk checksums pass (bytes written wrong, by a bug)
 * is found only this way: reading it verifies its checksums, not that it is
 * the parity of the data.
 *
 * Neither side is taken as authoritative here: the caller (pg-scrub.ts
 * parityOf) decides. A data shard written wrong with good checksums shows as
 * every parity shard differing (each parity shard depends on every data
 * shard); a parity shard written wrong shows as that shard alone differing.
 * So a mismatch is only repairable when at least one parity shard checked
 * agrees with the data (`checked` minus the wrong ones): the data is then
 * consistent with it, and the differing parity shards are rebuilt. When every
 * parity shard checked differs (always so with one parity shard), coding
 * parity from the data could make a wrong data shard permanent: reported,
 * never repaired automatically.
 *
 * Every read is pinned to the object's version (the `_v` the scrub map
 * showed: a shard at another version fails the read, Conflict), so bytes of
 * two versions are never compared; a version that moves while the object is
 * read makes the check answer "changed" (the caller compares again under the
 * object's lock).
 *
 * Memory: one object at a time, slice by slice (limits.ecRecoverySliceBytes
 * of each of the k + m shards read, and m coded); reads are paced at
 * bytesPerSec (all shards' bytes count).
 */
import { assert } from '../lib/assert.js';
import { toTesseraError, type TesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import type { Clock } from '../io/io.js';
import type { StoreApi } from '../store/types.js';
import type { EcLayout } from './ec-layout.js';
import type { ErasureCodec } from '../../native/index.js';
import { readOne } from './ec-shards.js';

export interface ParityCheckOptions {
  poolId: number;
  layout: EcLayout;
  codec: ErasureCodec;
  name: string;
  /** By position: the store holding that shard; every data position must have one, parity positions without one are not checked. */
  stores: ReadonlyArray<StoreApi | null>;
  /** The object's version (`_v` value) every shard read must carry. */
  version: Buffer;
  /** Shard bytes to compare (the shards' length; a shorter shard reads as zeros past its end, as the format pads). */
  shardBytes: number;
  /** Pace of the reads (bytes of all shards per second; 0: unpaced). */
  bytesPerSec: number;
  clock: Clock;
}

/** A parity position that differs: how many stripes differ and the shard offset of the first. */
export interface WrongParity {
  position: number;
  stripes: number;
  firstOffsetBytes: number;
}

export type ParityCheck =
  | { kind: 'ok' }
  /** A shard is at another version now (a write landed while it was read). */
  | { kind: 'changed' }
  /** A shard could not be read (its scrub map entry reports it). */
  | { kind: 'unreadable'; position: number; error: TesseraError }
  /** `checked`: the parity positions compared (those with a store); `parity`: those that differ. */
  | { kind: 'wrong'; parity: WrongParity[]; checked: number[] };

/** Compares the stored parity of one object with the parity of its data shards. */
export async function checkParity(o: ParityCheckOptions): Promise<ParityCheck> {
  const { layout, codec } = o;
  const k = layout.dataShards;
  const unit = layout.unitBytes;
  const dataPositions = Array.from({ length: k }, (_, p) => p);
  assert(dataPositions.every((p) => o.stores[p]), `object ${o.name}: a parity check has every data shard`);
  const parityPositions = Array.from({ length: layout.parityShards }, (_, j) => k + j).filter((p) => o.stores[p]);
  if (parityPositions.length === 0 || o.shardBytes === 0) return { kind: 'ok' };
  const positions = [...dataPositions, ...parityPositions];
  const wrong = new Map<number, WrongParity>();
  // A slice is whole stripe units (the slice limit is a multiple of the unit; shard lengths are whole units).
  const sliceBytes = Math.max(unit, Math.floor(limits.ecRecoverySliceBytes / unit) * unit);
  for (let at = 0; at < o.shardBytes; at += sliceBytes) {
    const lengthBytes = Math.min(sliceBytes, o.shardBytes - at);
    const reads = await Promise.allSettled(positions.map((p) => readOne(o, p, o.name, at, lengthBytes)));
    for (let i = 0; i < reads.length; i++) {
      const r = reads[i]!;
      if (r.status === 'fulfilled') continue;
      const e = toTesseraError(r.reason);
      if (e.code === 'Conflict' || e.code === 'NotFound') return { kind: 'changed' };
      return { kind: 'unreadable', position: positions[i]!, error: e };
    }
    const shards = reads.map((r) => (r as PromiseFulfilledResult<Buffer>).value);
    const coded = Array.from({ length: layout.parityShards }, () => Buffer.allocUnsafe(lengthBytes));
    codec.encode(shards.slice(0, k), coded);
    parityPositions.forEach((p, i) => {
      const stored = shards[k + i]!;
      const mine = coded[p - k]!;
      if (stored.equals(mine)) return;
      for (let s = 0; s < lengthBytes; s += unit) {
        if (stored.subarray(s, s + unit).equals(mine.subarray(s, s + unit))) continue;
        const w = wrong.get(p) ?? { position: p, stripes: 0, firstOffsetBytes: at + s };
        w.stripes++;
        wrong.set(p, w);
      }
    });
    if (o.bytesPerSec > 0) await o.clock.sleep(((lengthBytes * positions.length) / o.bytesPerSec) * 1000);
  }
  return wrong.size === 0 ? { kind: 'ok' } : { kind: 'wrong', parity: [...wrong.values()], checked: parityPositions };
}
