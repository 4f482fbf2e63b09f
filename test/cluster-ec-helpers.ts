/**
 * Checks of an erasure-coded object straight from its members' stores (not
 * through the primary): every shard present with the same version and size
 * xattrs and the format's length, the stored parity equal to the parity of
 * the stored data (every stripe decodes consistently), the data shards
 * joined equal to the expected bytes, and a decode from the parity plus the
 * other data shards equal too. `expected` null: no member holds a shard.
 */
import { expect } from 'vitest';
import { createErasureCodec } from '../native/index.js';
import { objectToPg } from '../cluster/placement.js';
import { EcLayout } from '../src/daemon/ec-layout.js';
import { decodeSize } from '../src/daemon/ec-record.js';
import { dataNs } from '../src/daemon/pg-log.js';
import { startTestCluster, type TestCluster } from './helpers/cluster.js';

export async function checkShards(cluster: TestCluster, poolName: string, name: string, expected: Buffer | null): Promise<void> {
  const pool = cluster.client.pool(poolName);
  const layout = EcLayout.forPool(pool);
  const codec = createErasureCodec({ dataShards: layout.dataShards, parityShards: layout.parityShards });
  const members = cluster.client.view.pg(pool, objectToPg(pool, name)).members;
  const shards: Buffer[] = [];
  const versions = new Set<string>();
  for (let p = 0; p < layout.width; p++) {
    const store = cluster.storeOf(members[p]!);
    try {
      const id = { ns: dataNs(pool.id, p), name };
      const x = await store.getXattrs(id).catch((err: { code?: string }) => {
        if (err.code === 'NotFound') return null;
        throw err;
      });
      if (expected === null) {
        expect(x, `${name}: shard ${p} left on disk ${members[p]}`).toBeNull();
        continue;
      }
      expect(x, `${name}: shard ${p} missing on disk ${members[p]}`).not.toBeNull();
      expect(decodeSize(x!.get('_s')), `${name}: shard ${p} size xattr`).toBe(expected.length);
      versions.add(x!.get('_v')!.toString('hex'));
      const data = await store.read(id);
      expect(data.length, `${name}: shard ${p} length`).toBe(layout.shardBytes(expected.length));
      shards.push(data);
    } finally {
      await store.close();
    }
  }
  if (expected === null) return;
  expect(versions.size, `${name}: every shard at one version`).toBe(1);
  const k = layout.dataShards;
  const parity = Array.from({ length: layout.parityShards }, () => Buffer.alloc(shards[0]!.length));
  if (parity[0]!.length > 0) codec.encode(shards.slice(0, k), parity);
  for (let j = 0; j < layout.parityShards; j++) expect(parity[j]!.equals(shards[k + j]!), `${name}: parity shard ${k + j} matches the data`).toBe(true);
  const joined = Buffer.alloc(layout.stripeCount(expected.length) * layout.stripeBytes);
  layout.join(shards, layout.stripeCount(expected.length), joined);
  expect(joined.subarray(0, expected.length).equals(expected), `${name}: data shards hold the expected bytes`).toBe(true);
  // Decode without the first m data shards (from parity).
  const lost = Array.from({ length: layout.parityShards }, (_, i) => i);
  const survivors: Array<Uint8Array | null> = shards.map((s, p) => (lost.includes(p) ? Buffer.alloc(s.length) : s));
  if (shards[0]!.length > 0) codec.reconstruct(survivors, lost);
  layout.join(survivors as Uint8Array[], layout.stripeCount(expected.length), joined);
  expect(joined.subarray(0, expected.length).equals(expected), `${name}: decodes from parity`).toBe(true);
}

/** 4 hosts x 1 disk with one erasure-coded 2+1 pool `poolName` of 8 pgs, host failure domain: a disk added on a host shifts positions. */
export function startEc21HostCluster(poolName: string): Promise<TestCluster> {
  return startTestCluster({
    hosts: 4,
    disksPerHost: 1,
    pools: [{ name: poolName, redundancy: { type: 'erasure', dataShards: 2, parityShards: 1 }, failureDomain: 'host', pgCount: 8 }],
  });
}
