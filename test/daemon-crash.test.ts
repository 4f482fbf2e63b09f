/**
 * Crash durability through the daemon: this process drives the crash
 * workload over TCP with 16 transactions in flight; the daemon is killed -9
 * at a random moment, restarted on the same disk, and every transaction it
 * acknowledged must be there, whole; those in flight all-or-nothing. 20 rounds.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { StoreClient } from '../src/protocol/store-client.js';
import { createTcpClient } from '../src/rpc/index.js';
import { isTesseraError } from '../src/lib/errors.js';
import { makeTempDir } from './helpers/tmp.js';
import { seededRng, testSeed } from './helpers/random.js';
import { killAllDaemons, startDaemonProcess } from './helpers/daemon-process.js';
import { dataFor, indexId, objectFor, opsFor, removedBy } from './fixtures/crash-workload.js';

const io = systemIo();
const ROUNDS = Number(process.env.TESSERA_CRASH_ROUNDS ?? 20);
const seed = testSeed();
const rng = seededRng(seed);
let dir: Awaited<ReturnType<typeof makeTempDir>>;

beforeAll(async () => {
  console.log(`daemon-crash seed: ${seed}`);
  dir = await makeTempDir('dcrash');
});
afterAll(async () => {
  await killAllDaemons();
  await dir.remove();
});

const connect = (port: number): StoreClient => new StoreClient(createTcpClient({ io, host: '127.0.0.1', port, limits: { rpcAttemptsMax: 1 } }), { timeoutMs: 20_000 });

async function exists(p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return true;
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return false;
    throw err;
  }
}

it(`acknowledged transactions survive kill -9 of the daemon (${ROUNDS} rounds)`, async () => {
  const committed = new Set<number>();
  let nextSeq = 0;
  let totalAcked = 0;
  const indexed = async (client: StoreClient, s: number): Promise<boolean> => {
    const [value] = await client.omapGet(indexId, [Buffer.from(`k${String(s).padStart(8, '0')}`)]).catch((err) => {
      if (isTesseraError(err, 'NotFound')) return [undefined];
      throw err;
    });
    return value !== undefined;
  };
  const checkObject = async (client: StoreClient, s: number): Promise<void> => {
    const removed = removedBy(s + 5) === s && committed.has(s + 5);
    const present = await exists(client.stat(objectFor(s)));
    expect(present, `object of txn ${s}`).toBe(committed.has(s) && !removed);
    if (present) expect((await client.read(objectFor(s))).equals(dataFor(seed, s)), `bytes of txn ${s}`).toBe(true);
  };
  for (let round = 0; round < ROUNDS; round++) {
    const daemon = await startDaemonProcess({ diskPath: dir.path, clusterId: 'dc', diskId: 0 });
    const client = connect(daemon.port);
    const acked: number[] = [];
    const startSeq = nextSeq;
    let next = startSeq;
    let killed = false;
    const worker = async (): Promise<void> => {
      while (!killed) {
        const seq = next++;
        try {
          await client.transact(opsFor(seed, seq));
          acked.push(seq);
        } catch {
          return; // the daemon is gone; this one is in flight, not acknowledged
        }
      }
    };
    const workers = Array.from({ length: 16 }, worker);
    await new Promise((r) => setTimeout(r, 50 + rng.int(500)));
    await daemon.kill();
    killed = true;
    await Promise.all(workers);
    await client.close();
    totalAcked += acked.length;
    const highest = next - 1;
    const restarted = await startDaemonProcess({ diskPath: dir.path });
    const checker = connect(restarted.port);
    try {
      for (let s = startSeq; s <= highest; s++) if (await indexed(checker, s)) committed.add(s);
      for (const a of acked) expect(committed.has(a), `acknowledged txn ${a}`).toBe(true);
      for (let s = startSeq; s <= highest; s++) await checkObject(checker, s);
    } finally {
      await checker.close();
      expect(await restarted.stop()).toBe(0);
    }
    nextSeq = highest + 1;
  }
  console.log(`daemon-crash: ${ROUNDS} kills, ${totalAcked} acknowledged, ${committed.size} committed, all verified`);
  expect(totalAcked).toBeGreaterThan(ROUNDS);
}, 600_000);
