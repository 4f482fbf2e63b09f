/**
 * Crash durability of the store: a child process runs transactions with many
 * in flight and reports each acknowledged one; we kill -9 it at a random
 * moment, reopen the store and check that every acknowledged transaction is
 * present and whole, and that transactions in flight are all-or-nothing.
 * 20+ rounds on the same directory, with background compaction running.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { systemIo } from '../src/io/system.js';
import { ObjectStore } from '../src/store/index.js';
import { isTesseraError } from '../src/lib/errors.js';
import { makeTempDir } from './helpers/tmp.js';
import { seededRng, testSeed } from './helpers/random.js';
import { dataFor, indexId, objectFor, removedBy } from './fixtures/crash-workload.js';

const writer = fileURLToPath(new URL('../dist/test/fixtures/crash-writer.js', import.meta.url));
const ROUNDS = Number(process.env.TESSERA_CRASH_ROUNDS ?? 24);
const seed = testSeed();
const rng = seededRng(seed);
let dir: Awaited<ReturnType<typeof makeTempDir>>;

beforeAll(async () => {
  console.log(`store-crash seed: ${seed} (TESSERA_SEED=${seed} to replay the schedule)`);
  if (!existsSync(writer)) throw new Error(`${writer} is missing: run npm run build first`);
  dir = await makeTempDir('crash');
});
afterAll(async () => {
  await dir.remove();
});

/** Runs the writer until killed after killAfterMs; returns the acknowledged sequence numbers. */
function runAndKill(startSeq: number, killAfterMs: number): Promise<{ acked: number[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [writer, dir.path, String(seed), String(startSeq)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const acked: number[] = [];
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      if (line === 'ready') setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      else if (line.startsWith('ack ')) acked.push(Number(line.slice(4)));
    });
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`writer exited with ${code}/${signal}: ${stderr}`));
      else resolve({ acked });
    });
  });
}

async function exists(p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return true;
  } catch (err) {
    if (isTesseraError(err, 'NotFound')) return false;
    throw err;
  }
}

it(`every acknowledged transaction survives kill -9 (${ROUNDS} rounds)`, async () => {
  const committed = new Set<number>();
  let nextSeq = 0;
  let totalAcked = 0;
  const open = (): Promise<ObjectStore> => ObjectStore.open({ io: systemIo(), path: dir.path, maintenance: { enabled: false } });
  const indexed = async (store: ObjectStore, s: number): Promise<boolean> => {
    const key = Buffer.from(`k${String(s).padStart(8, '0')}`);
    let value: Buffer | undefined;
    try {
      [value] = await store.omapGet(indexId, [key]);
    } catch (err) {
      // Killed before its first commit (a loaded machine): the index object was never created, nothing committed.
      if (isTesseraError(err, 'NotFound') && committed.size === 0) return false;
      throw err;
    }
    if (value !== undefined) expect(value.toString()).toBe(String(s));
    return value !== undefined;
  };
  const checkObject = async (store: ObjectStore, s: number): Promise<void> => {
    const killer = s + 5;
    const removed = removedBy(killer) === s && committed.has(killer);
    const present = await exists(store.stat(objectFor(s)));
    expect(present, `object of txn ${s} (committed ${committed.has(s)}, removed ${removed})`).toBe(committed.has(s) && !removed);
    if (!present) return;
    expect((await store.read(objectFor(s))).equals(dataFor(seed, s)), `bytes of txn ${s}`).toBe(true);
    expect((await store.getXattr(objectFor(s), 'seq')).toString()).toBe(String(s));
  };
  for (let round = 0; round < ROUNDS; round++) {
    const { acked } = await runAndKill(nextSeq, 30 + rng.int(400));
    totalAcked += acked.length;
    const highest = Math.max(nextSeq + 15, ...acked.map((a) => a + 16));
    const store = await open();
    try {
      for (let s = nextSeq; s <= highest; s++) if (await indexed(store, s)) committed.add(s);
      for (const a of acked) expect(committed.has(a), `acknowledged txn ${a} is committed`).toBe(true);
      // In-flight transactions are all or nothing: object, xattr and index entry together.
      for (let s = nextSeq; s <= highest; s++) await checkObject(store, s);
    } finally {
      await store.close();
    }
    nextSeq = highest + 1;
  }
  const store = await open();
  try {
    for (let s = 0; s < nextSeq; s++) await checkObject(store, s);
  } finally {
    await store.close();
  }
  console.log(`store-crash: ${ROUNDS} kills, ${totalAcked} transactions acknowledged, ${committed.size} committed, all verified`);
  expect(totalAcked).toBeGreaterThan(ROUNDS);
}, 600_000);
