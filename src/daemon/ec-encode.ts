/**
 * From a write's plan (ec-plan.ts) to what each member receives: the shard
 * runs it rewrites (the same on every shard: whole chunks), its bytes for
 * them (data chunks as views into the logical stripes, parity coded stripe by
 * stripe into one buffer per parity shard), and its commit record. Pure; the
 * caller bounds memory (parity of the rewritten stripes, m x unit each; the
 * data is the plan's own buffers).
 */
import type { LogEntry } from '../protocol/osd-messages.js';
import type { ErasureCodec } from '../../native/index.js';
import type { EcLayout, ShardRun } from './ec-layout.js';
import type { EcPlan } from './ec-plan.js';
import type { EcCommitRecord } from './ec-record.js';

export interface EncodedWrite {
  runs: ShardRun[];
  /** Shard bytes at or past this are dropped before the runs move in (null: keep). */
  cutShardBytes: number | null;
  shardBytes: number;
  /**
   * By position: that member's bytes for the runs, back to back, as a list of
   * pieces (data chunks are views into the plan's stripes: never copied here;
   * parity is one buffer per position).
   */
  shards: Uint8Array[][];
}

/** Stripes a plan rewrites (its encoded size is this x unit x (k+m)). */
export function planStripes(plan: EcPlan, layout: EcLayout): number {
  if (!plan.exists) return 0;
  return plan.data.kind === 'all' ? layout.stripeCount(plan.sizeBytes) : plan.data.stripes.size;
}

/** Codes each stripe (k views into it) into the parity buffers at its index; collects the data chunk views per shard. */
function encodeStripes(layout: EcLayout, codec: ErasureCodec, stripes: readonly Buffer[]): Uint8Array[][] {
  const u = layout.unitBytes;
  const k = layout.dataShards;
  const parity = Array.from({ length: layout.parityShards }, () => Buffer.allocUnsafe(stripes.length * u));
  const shards: Uint8Array[][] = Array.from({ length: layout.width }, () => []);
  stripes.forEach((stripe, i) => {
    const data = Array.from({ length: k }, (_, d) => stripe.subarray(d * u, (d + 1) * u));
    codec.encode(data, parity.map((p) => p.subarray(i * u, (i + 1) * u)));
    data.forEach((chunk, d) => shards[d]!.push(chunk));
  });
  parity.forEach((p, j) => shards[k + j]!.push(p));
  return shards;
}

/** The whole content as stripe views (the last, partial stripe copied and zero-padded). */
function contentStripes(layout: EcLayout, content: Buffer): Buffer[] {
  const sb = layout.stripeBytes;
  const out: Buffer[] = [];
  for (let at = 0; at < content.length; at += sb) {
    if (at + sb <= content.length) {
      out.push(content.subarray(at, at + sb));
    } else {
      const tail = Buffer.alloc(sb);
      content.copy(tail, 0, at);
      out.push(tail);
    }
  }
  return out;
}

export function encodePlan(plan: EcPlan, layout: EcLayout, codec: ErasureCodec): EncodedWrite {
  const shardBytes = layout.shardBytes(plan.sizeBytes);
  if (!plan.exists) return { runs: [], cutShardBytes: null, shardBytes: 0, shards: Array.from({ length: layout.width }, () => []) };
  const data = plan.data;
  if (data.kind === 'all') {
    const stripes = contentStripes(layout, data.content);
    const runs = stripes.length > 0 ? [{ offsetBytes: 0, lengthBytes: stripes.length * layout.unitBytes }] : [];
    return { runs, cutShardBytes: plan.recreate ? null : 0, shardBytes, shards: encodeStripes(layout, codec, stripes) };
  }
  const sorted = [...data.stripes.keys()].sort((a, b) => a - b);
  const cut = data.cutBytes;
  return {
    runs: layout.runsOf(sorted),
    cutShardBytes: cut === null ? null : Math.floor(cut / layout.stripeBytes) * layout.unitBytes,
    shardBytes,
    shards: encodeStripes(layout, codec, sorted.map((s) => data.stripes.get(s)!)),
  };
}

/** The commit record of position `shard` for the write `entry`. */
export function recordFor(plan: EcPlan, encoded: EncodedWrite, entry: LogEntry, shard: number): EcCommitRecord {
  return {
    entry,
    shard,
    exists: plan.exists,
    recreate: plan.recreate,
    cutShardBytes: encoded.cutShardBytes,
    shardBytes: encoded.shardBytes,
    runs: encoded.runs,
    sizeBytes: plan.sizeBytes,
    setXattrs: plan.setXattrs,
    removeXattrs: plan.removeXattrs,
  };
}
