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
 * So the comparison with the data is only conclusive when at least one
 * parity shard checked agrees with the data (`checked` minus the wrong
 * ones): the data is then consistent with it, and the differing parity
 * shards are wrong.
 *
 * When a stripe does not add up and two or more parity shards are checked,
 * the check also leaves each shard out in turn (`withoutOne`): it decodes
 * the stripe from k of the other shards and compares the rest of them with
 * that decode. The code has distance m + 1 over the k + m shards (n - k + 1
 * over the n read), so with n - k >= 2 one wrong shard is the only one whose
 * absence leaves the others consistent, in every stripe it is wrong in; a
 * shard that does so in every slice that does not add up is the wrong one
 * when it is the only such shard. None, or several (two shards wrong, or one
 * wrong in some stripes and another in others), is ambiguous. With one parity
 * shard (n - k = 1) leaving a shard out always leaves k shards, which always
 * decode: nothing can be told, and it is not tried.
 *
 * Every read is pinned to the object's version (the `_v` the scrub map
 * showed: a shard at another version fails the read, Conflict), so bytes of
 * two versions are never compared; a version that moves while the object is
 * read makes the check answer "changed" (the caller compares again under the
 * object's lock).
 *
 * Memory: one object at a time, slice by slice (limits.ecRecoverySliceBytes
 * of each of the k + m shards read, and m coded, reused for the decodes that
 * leave a shard out); reads are paced at bytesPerSec (all shards' bytes
 * count). The decodes cost up to k + m reconstructs of a slice, only for
 * slices that do not add up.
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

/** A shard position that differs: how many stripes differ and the shard offset of the first. */
export interface WrongShard {
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
  /**
   * `checked`: the parity positions compared (those with a store); `parity`: those that differ from the
   * parity of the data. `withoutOne` (null when fewer than two parity positions were checked): the positions
   * each of which, left out, leaves every other shard read consistent with a decode of k of them in every
   * slice that does not add up, with the stripes where it differs from that decode. Exactly one: that shard
   * is the wrong one.
   */
  | { kind: 'wrong'; parity: WrongShard[]; checked: number[]; withoutOne: WrongShard[] | null };

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
  const wrong = new Map<number, WrongShard>();
  // Leaving one shard out tells something only when k + 1 others are left.
  const suspects = parityPositions.length >= 2 ? new Map(positions.map((p) => [p, { position: p, stripes: 0, firstOffsetBytes: 0 }])) : null;
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
    const shards = new Map(positions.map((p, i) => [p, (reads[i] as PromiseFulfilledResult<Buffer>).value]));
    const coded = Array.from({ length: layout.parityShards }, () => Buffer.allocUnsafe(lengthBytes));
    codec.encode(dataPositions.map((p) => shards.get(p)!), coded);
    let addsUp = true;
    for (const p of parityPositions) addsUp = countWrongStripes(wrong, p, shards.get(p)!, coded[p - k]!, at, unit) && addsUp;
    // (The coded parity is compared: its buffers are reused for the decodes.)
    if (!addsUp && suspects) await leaveEachOut(codec, layout.width, shards, suspects, coded, at, unit, o.clock);
    if (o.bytesPerSec > 0) await o.clock.sleep(((lengthBytes * positions.length) / o.bytesPerSec) * 1000);
  }
  if (wrong.size === 0) return { kind: 'ok' };
  return { kind: 'wrong', parity: [...wrong.values()], checked: parityPositions, withoutOne: suspects ? [...suspects.values()] : null };
}

/** Counts into `wrong` the stripes where shard `position`'s stored bytes differ from `expected`; whether none does. */
function countWrongStripes(wrong: Map<number, WrongShard>, position: number, stored: Buffer, expected: Buffer, at: number, unit: number): boolean {
  if (stored.equals(expected)) return true;
  for (let s = 0; s < stored.length; s += unit) {
    if (stored.subarray(s, s + unit).equals(expected.subarray(s, s + unit))) continue;
    const w = wrong.get(position) ?? { position, stripes: 0, firstOffsetBytes: at + s };
    w.stripes++;
    wrong.set(position, w);
  }
  return false;
}

/**
 * A slice that does not add up: each suspect in turn is left out, k of the other shards decode the rest of
 * them (and the suspect), and the suspect stays one only if every other shard equals that decode; its
 * stripes that differ from the decode are counted. `spare`: at least width - k buffers of the slice's length.
 */
async function leaveEachOut(codec: ErasureCodec, width: number, shards: ReadonlyMap<number, Buffer>, suspects: Map<number, WrongShard>, spare: readonly Buffer[], at: number, unit: number, clock: Clock): Promise<void> {
  const k = codec.dataShards;
  for (const c of [...suspects.keys()]) {
    // One decode of a slice per candidate (up to about a second for 32+8 in WebAssembly): other work runs between them.
    await clock.yield();
    const rest = [...shards.keys()].filter((p) => p !== c);
    const targets = [...rest.slice(k), c];
    const input: Array<Uint8Array | null> = Array.from({ length: width }, () => null);
    for (const p of rest.slice(0, k)) input[p] = shards.get(p)!;
    targets.forEach((p, i) => (input[p] = spare[i]!));
    codec.reconstruct(input, targets);
    const decoded = (p: number): Buffer => spare[targets.indexOf(p)]!;
    if (!rest.slice(k).every((p) => shards.get(p)!.equals(decoded(p)))) {
      suspects.delete(c);
      continue;
    }
    const found = new Map<number, WrongShard>();
    countWrongStripes(found, c, shards.get(c)!, decoded(c), at, unit);
    const w = found.get(c);
    const s = suspects.get(c)!;
    if (w && s.stripes === 0) s.firstOffsetBytes = w.firstOffsetBytes;
    s.stripes += w?.stripes ?? 0;
  }
}
