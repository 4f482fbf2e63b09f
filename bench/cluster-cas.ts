/**
 * Conditional writes against plain writes on the replicated pool of an
 * all-in-one cluster (`tessera up` on a temporary directory: 3 hosts x 2
 * disks, one daemon process each), driven by the client library from this
 * process. Prints JSON lines; every conditional case carries its ratio to the
 * plain put of the same concurrency, measured in the same run:
 *
 * - put: writeFull of 4 KiB to a fresh object;
 * - cas: compare-and-set of an object of its own (assertXattr on the
 *   generation the worker last wrote, then the new generation and 4 KiB);
 * - cas-shared: the S3 index's pattern, many writers on few objects: each op
 *   sets a fresh key on one of 8 shared objects, conditional on the key
 *   being absent (omapCompare null + omapSet of 4 KiB).
 *
 * Usage: node dist/bench/cluster-cas.js [--seconds N] [--warmup-seconds N] [--concurrency 1,16] [--dir DIR]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { TesseraClient } from '../src/client/client.js';
import { closedLoop, emit, printHost, resultOf, withUpCluster, type BenchResult } from './lib.js';

const KiB = 1024;
const SHARDS = 8;
const { values: args } = parseArgs({ options: { seconds: { type: 'string' }, 'warmup-seconds': { type: 'string' }, concurrency: { type: 'string' }, dir: { type: 'string' } } });
const seconds = Number(args.seconds ?? 3);
const warmupSeconds = Number(args['warmup-seconds'] ?? 3);
const concurrencies = (args.concurrency ?? '1,16').split(',').map(Number);
const POOL = 'rep';


async function runCases(client: TesseraClient, run: string): Promise<void> {
  const data = randomBytes(4 * KiB);
  if (warmupSeconds > 0) await closedLoop({ workers: 16, ops: 1e9, maxSeconds: warmupSeconds, op: async (i) => void (await client.put(POOL, `warmup-${i % 256}`, data)) });
  for (const workers of concurrencies) {
    const put = await closedLoop({ workers, ops: 1e9, maxSeconds: seconds, op: async (i) => void (await client.put(POOL, `${run}-put-c${workers}-${i}`, data)) });
    const plain = resultOf(`cluster ${POOL} put 4KiB c=${workers}`, put, data.length);
    emit(plain);
    const ratio = (r: BenchResult): BenchResult => ({ ...r, baseline: plain.name, baselineValue: plain.opsPerSec, ratioToBaseline: r.opsPerSec / plain.opsPerSec, p50RatioToBaseline: r.p50Ms / plain.p50Ms });
    // As many objects as workers: an op takes a free one, advances its generation by compare-and-set, frees it.
    const generations = new Array<number>(workers).fill(0);
    const free = Array.from({ length: workers }, (_, w) => w);
    const cas = await closedLoop({
      workers,
      ops: 1e9,
      maxSeconds: seconds,
      op: async () => {
        const w = free.pop()!;
        const g = generations[w]!;
        await client.transact(POOL, `${run}-cas-c${workers}-${w}`, [
          { type: 'assertXattr', name: 'gen', value: g === 0 ? null : Buffer.from(String(g)) },
          { type: 'setXattr', name: 'gen', value: Buffer.from(String(g + 1)) },
          { type: 'writeFull', data },
        ]);
        generations[w] = g + 1;
        free.push(w);
      },
    });
    emit(ratio(resultOf(`cluster ${POOL} cas 4KiB c=${workers} (own object)`, cas, data.length)));
    const shared = await closedLoop({
      workers,
      ops: 1e9,
      maxSeconds: seconds,
      op: async (i) => {
        await client.transact(POOL, `${run}-shard-c${workers}-${i % SHARDS}`, [
          { type: 'omapCompare', key: Buffer.from(`k${i}`), value: null },
          { type: 'omapSet', entries: [[Buffer.from(`k${i}`), data]] },
        ]);
      },
    });
    emit(ratio(resultOf(`cluster ${POOL} cas-shared 4KiB c=${workers} (${SHARDS} objects)`, shared, data.length)));
  }
}

const base = args.dir ?? (await mkdtemp(join(tmpdir(), 'tessera-cas-bench-')));
printHost({ bench: 'cluster-cas', dir: base, seconds, warmupSeconds });
try {
  await withUpCluster(join(base, 'cluster'), 23_000, (client) => runCases(client, `r${process.pid}`));
} finally {
  if (!args.dir) await rm(base, { recursive: true, force: true });
}
