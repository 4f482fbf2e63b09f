/**
 * Recovery from the log: the store's metadata writes are unsynced between
 * checkpoints, so a power loss can take the KvStore back to its last
 * checkpoint while the segment log holds every acknowledged group. Here the
 * KvStore is the in-memory one, crashed at random points (losing every
 * unsynced write); reopening must replay the log and bring back every
 * acknowledged transaction, whole. Data, xattrs, omap, removes, overwrites.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { ObjectStore } from '../src/store/index.js';
import { MemoryKvDisk } from '../src/store/kv-memory.js';
import { isTesseraError } from '../src/lib/errors.js';
import { makeTempDir } from './helpers/tmp.js';
import { seededRng, testSeed } from './helpers/random.js';
import { dataFor, indexId, objectFor, opsFor, removedBy } from './fixtures/crash-workload.js';

const seed = testSeed();
const rng = seededRng(seed);
let dir: Awaited<ReturnType<typeof makeTempDir>>;

beforeAll(async () => {
  console.log(`store-replay seed: ${seed}`);
  dir = await makeTempDir('replay');
});
afterAll(async () => {
  await dir.remove();
});

it('replays every acknowledged group after the KvStore loses its unsynced writes', async () => {
  const disk = new MemoryKvDisk();
  const open = (): Promise<ObjectStore> =>
    ObjectStore.open({
      io: systemIo(),
      path: dir.path,
      create: { clusterId: 'replay', diskId: 1 },
      openKv: async () => disk.open(),
      limits: { segmentBytesMax: 4 * 1024 * 1024 },
      maintenance: { enabled: false },
    });
  const committed = new Set<number>();
  let next = 0;
  let replayedTotal = 0;
  for (let round = 0; round < 10; round++) {
    const store = await open();
    replayedTotal += store.replayedRecords;
    const acked: number[] = [];
    const inFlight: Array<Promise<void>> = [];
    const count = 20 + rng.int(60);
    for (let i = 0; i < count; i++) {
      const seq = next++;
      inFlight.push(store.transact(opsFor(seed, seq)).then(() => void acked.push(seq)));
      if (rng.int(4) === 0) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(inFlight);
    acked.forEach((s) => committed.add(s));
    // Power loss: the KvStore forgets every write since its last sync; the old store instance is abandoned.
    disk.crash();
    await store.close().catch(() => undefined);
  }
  const store = await open();
  replayedTotal += store.replayedRecords;
  try {
    for (let s = 0; s < next; s++) {
      const [indexed] = await store.omapGet(indexId, [Buffer.from(`k${String(s).padStart(8, '0')}`)]);
      expect(indexed?.toString(), `index entry of acknowledged txn ${s}`).toBe(String(s));
      const removed = removedBy(s + 5) === s && committed.has(s + 5);
      let present = true;
      try {
        await store.stat(objectFor(s));
      } catch (err) {
        if (!isTesseraError(err, 'NotFound')) throw err;
        present = false;
      }
      expect(present, `object of txn ${s}`).toBe(!removed);
      if (present) expect((await store.read(objectFor(s))).equals(dataFor(seed, s))).toBe(true);
    }
    expect(store.space().objects).toBe([...Array(next).keys()].filter((s) => !(removedBy(s + 5) === s && committed.has(s + 5))).length + 1);
  } finally {
    await store.close();
  }
  console.log(`store-replay: ${next} transactions, ${replayedTotal} log records replayed over 10 crashes`);
  expect(replayedTotal).toBeGreaterThan(0);
}, 120_000);
