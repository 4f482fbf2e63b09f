/**
 * Crash durability of the embedded map store: a child process
 * (test/fixtures/map-writer.ts, run from dist/) owns the map directory and
 * applies changes with several in flight, reporting each acknowledged epoch;
 * we kill -9 it at a random moment, reopen the directory here (which must
 * take over the dead owner's lock) and check that every acknowledged epoch is
 * there: the stored epoch is at least the last acknowledged one, and the
 * current map and every epoch file kept on disk hold exactly the content of
 * their epoch. Several rounds on the same directory; the seed is printed.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { EmbeddedMapStore } from '../cluster/map-store-embedded.js';
import { decodeMapFile, epochOfFileName } from '../cluster/map-store-files.js';
import type { ClusterMap } from '../cluster/map.js';
import { systemIo } from '../src/io/system.js';
import { seededRng, testSeed } from './helpers/random.js';
import { makeTempDir } from './helpers/tmp.js';
import { expectedWeights } from './fixtures/map-workload.js';

const writer = fileURLToPath(new URL('../dist/test/fixtures/map-writer.js', import.meta.url));
const ROUNDS = Number(process.env.TESSERA_MAP_CRASH_ROUNDS ?? 8);
const seed = testSeed();
const rng = seededRng(seed);
const io = systemIo();
let dir: Awaited<ReturnType<typeof makeTempDir>>;
const children = new Set<ReturnType<typeof spawn>>();

beforeAll(async () => {
  console.log(`map-crash seed: ${seed} (TESSERA_SEED=${seed} to replay the kill schedule)`);
  if (!existsSync(writer)) throw new Error(`${writer} is missing: run npm run build first`);
  dir = await makeTempDir('mapcrash');
});
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await dir?.remove();
});

/** Runs the writer until killed killAfterMs after it is ready; resolves with the epochs it acknowledged. */
function runAndKill(killAfterMs: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [writer, dir.path], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    const acked: number[] = [];
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.startsWith('ready ')) setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      else if (line.startsWith('ack ')) acked.push(Number(line.slice(4)));
    });
    child.on('exit', (code, signal) => {
      clearTimeout(guard);
      children.delete(child);
      if (signal !== 'SIGKILL') reject(new Error(`map writer exited with ${code}/${signal}: ${stderr}`));
      else resolve(acked);
    });
  });
}

function expectEpochContent(map: ClusterMap, epoch: number): void {
  expect(map.epoch).toBe(epoch);
  expect(map.disks.map((d) => d.weight), `weights at epoch ${epoch}`).toEqual(expectedWeights(epoch));
}

async function checkFilesOnDisk(): Promise<number> {
  const epochs = (await io.fs.readdir(dir.path)).map(epochOfFileName).filter((e): e is number => e !== null);
  for (const epoch of epochs) {
    const path = join(dir.path, `epoch-${String(epoch).padStart(16, '0')}.map`);
    expectEpochContent(decodeMapFile(await io.fs.readFile(path), epoch, path), epoch);
  }
  return epochs.length;
}

test(`every acknowledged epoch survives kill -9 (${ROUNDS} rounds)`, async () => {
  let lastAcked = 0;
  let totalAcked = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const acked = await runAndKill(20 + rng.int(250));
    expect([...acked].sort((a, b) => a - b), 'acks are distinct epochs').toEqual([...new Set(acked)].sort((a, b) => a - b));
    totalAcked += acked.length;
    lastAcked = Math.max(lastAcked, ...acked);
    const store = await EmbeddedMapStore.open({ io, path: dir.path });
    try {
      const map = await store.current();
      expect(map.epoch, `round ${round}: stored epoch vs last acknowledged`).toBeGreaterThanOrEqual(lastAcked);
      expectEpochContent(map, map.epoch);
      expect(await checkFilesOnDisk()).toBeGreaterThanOrEqual(1);
      lastAcked = map.epoch; // an epoch stored but not acknowledged is still never reused
    } finally {
      await store.close();
    }
  }
  console.log(`map-crash: ${ROUNDS} rounds, ${totalAcked} epochs acknowledged, final epoch ${lastAcked}`);
  expect(totalAcked).toBeGreaterThan(0);
});
