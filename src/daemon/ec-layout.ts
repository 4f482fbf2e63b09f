/**
 * The arithmetic of the erasure-coded object format (docs/erasure-coding.md,
 * "The EC pool format"): where a logical byte lives, how long shards are, and
 * moving bytes between an object's logical order and its k data shards.
 *
 * An object of N bytes is cut into stripes of k x unit bytes; logical offset
 * L lies in stripe s = floor(L / (k*unit)), data shard d = floor((L mod
 * k*unit) / unit), at shard offset s*unit + (L mod unit). Every shard holds
 * ceil(N / (k*unit)) whole chunks (the last stripe is zero-padded, and zero
 * data has zero parity), so all k+m shards of an object have one length.
 *
 * Pure functions; no I/O.
 */
import { assert } from '../lib/assert.js';
import { limits } from '../lib/limits.js';
import type { PoolInfo } from '../../cluster/map.js';

/** One piece of a logical range that lies in one chunk (one stripe, one data shard). */
export interface Piece {
  shard: number;
  shardOffsetBytes: number;
  logicalOffsetBytes: number;
  lengthBytes: number;
}

/** A contiguous range of shard bytes, the same on every shard (whole chunks). */
export interface ShardRun {
  offsetBytes: number;
  lengthBytes: number;
}

export class EcLayout {
  /** Logical bytes per stripe (k x unit). */
  readonly stripeBytes: number;
  /** Shards per stripe (k + m). */
  readonly width: number;

  constructor(
    readonly dataShards: number,
    readonly parityShards: number,
    readonly unitBytes: number = limits.ecStripeUnitBytes,
  ) {
    assert(dataShards >= 1 && parityShards >= 1, 'an EC layout has data and parity shards');
    assert(unitBytes > 0 && Number.isInteger(unitBytes), 'the stripe unit is a positive integer');
    this.stripeBytes = dataShards * unitBytes;
    this.width = dataShards + parityShards;
  }

  static forPool(pool: PoolInfo): EcLayout {
    assert(pool.redundancy.type === 'erasure', `pool ${pool.id} is erasure-coded`);
    return new EcLayout(pool.redundancy.dataShards, pool.redundancy.parityShards);
  }

  /** Stripes an object of sizeBytes occupies. */
  stripeCount(sizeBytes: number): number {
    return Math.ceil(sizeBytes / this.stripeBytes);
  }

  /** Bytes of each shard of an object of sizeBytes. */
  shardBytes(sizeBytes: number): number {
    return this.stripeCount(sizeBytes) * this.unitBytes;
  }

  /** The pieces of the logical range [offsetBytes, offsetBytes + lengthBytes), in logical order. */
  pieces(offsetBytes: number, lengthBytes: number): Piece[] {
    const out: Piece[] = [];
    const end = offsetBytes + lengthBytes;
    let at = offsetBytes;
    while (at < end) {
      const stripe = Math.floor(at / this.stripeBytes);
      const inStripe = at - stripe * this.stripeBytes;
      const shard = Math.floor(inStripe / this.unitBytes);
      const inChunk = inStripe - shard * this.unitBytes;
      const length = Math.min(this.unitBytes - inChunk, end - at);
      out.push({ shard, shardOffsetBytes: stripe * this.unitBytes + inChunk, logicalOffsetBytes: at, lengthBytes: length });
      at += length;
    }
    return out;
  }

  /** `stripes` whole stripes from the data shards (each stripes x unit bytes) into logical order. */
  join(shards: readonly Uint8Array[], stripes: number, out: Uint8Array): void {
    assert(out.length >= stripes * this.stripeBytes, 'join needs room for every stripe');
    const u = this.unitBytes;
    for (let s = 0; s < stripes; s++) {
      for (let d = 0; d < this.dataShards; d++) out.set(shards[d]!.subarray(s * u, (s + 1) * u), s * this.stripeBytes + d * u);
    }
  }

  /** Maximal runs of consecutive stripes, as shard byte ranges (stripes sorted ascending). */
  runsOf(sortedStripes: readonly number[]): ShardRun[] {
    const runs: ShardRun[] = [];
    for (const s of sortedStripes) {
      const last = runs[runs.length - 1];
      if (last && last.offsetBytes + last.lengthBytes === s * this.unitBytes) last.lengthBytes += this.unitBytes;
      else runs.push({ offsetBytes: s * this.unitBytes, lengthBytes: this.unitBytes });
    }
    return runs;
  }
}
