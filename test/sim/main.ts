/**
 * `npm run test:sim -- [--seeds N] [--seed S] [--no-ec] [--run-ms MS] [--think-ms MS] [--workers N] [--max-faults N] [--jobs N] [--kinds kill,powerloss,...] [--check-determinism] [--verbose]`:
 * runs N seeded simulations (seeds S, S+1, ...; S defaults to one drawn from the time, printed),
 * prints one line per seed and, for a failing seed, its violations and the daemons' last log lines.
 * Exit status 1 when any seed failed. TESSERA_SIM_SEED=<seed> --seeds 1 replays one.
 * --jobs N runs the seeds in N child processes (seed i in child i mod N; one core each).
 */
import { fork } from 'node:child_process';
import { FAULT_KINDS, runSimulation, type FaultKind, type SimResult } from './simulation.js';

function parse(argv: string[]): { seeds: number; first: number; noEc: boolean; runMs: number | undefined; thinkMs: number | undefined; kinds: FaultKind[] | undefined; workers: number | undefined; maxFaults: number | undefined; jobs: number; stride: number; index: number; determinism: boolean; verbose: boolean } {
  const out = { seeds: 10, first: Number(process.env.TESSERA_SIM_SEED ?? ((Date.now() ^ (process.pid << 8)) >>> 0)), noEc: false, runMs: undefined as number | undefined, thinkMs: undefined as number | undefined, kinds: undefined as FaultKind[] | undefined, workers: undefined as number | undefined, maxFaults: undefined as number | undefined, jobs: 1, stride: 1, index: 0, determinism: false, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v)) throw new Error(`test:sim: ${a} needs a number`);
      return v;
    };
    if (a === '--seeds') out.seeds = value();
    else if (a === '--seed') out.first = value();
    else if (a === '--run-ms') out.runMs = value();
    else if (a === '--think-ms') out.thinkMs = value();
    else if (a === '--workers') out.workers = value();
    else if (a === '--max-faults') out.maxFaults = value();
    else if (a === '--jobs') out.jobs = value();
    else if (a === '--stride') out.stride = value();
    else if (a === '--index') out.index = value();
    else if (a === '--kinds') {
      out.kinds = (argv[++i] ?? '').split(',') as FaultKind[];
      const bad = out.kinds.filter((k) => !FAULT_KINDS.includes(k));
      if (bad.length || out.kinds.length === 0) throw new Error(`test:sim: --kinds takes some of ${FAULT_KINDS.join(',')}`);
    } else if (a === '--no-ec') out.noEc = true;
    else if (a === '--check-determinism') out.determinism = true;
    else if (a === '--verbose') out.verbose = true;
    else throw new Error(`test:sim: unknown option ${a} (--seeds N, --seed S, --run-ms MS, --think-ms MS, --workers N, --max-faults N, --jobs N, --kinds K1,K2, --no-ec, --check-determinism, --verbose)`);
  }
  return out;
}

function line(r: SimResult): string {
  return `seed ${r.seed}: ${r.ok ? 'ok' : 'FAILED'} faults=${r.faults} acked=${r.writesAcked} failedWrites=${r.writesFailed} reads=${r.readsVerified} keys=${r.keysVerified} replicas=${r.replicasChecked} ecObjects=${r.shardsChecked} virtual=${(r.virtualMs / 1000).toFixed(1)}s events=${r.events} wall=${(r.wallMs / 1000).toFixed(2)}s trace=${r.traceHash}`;
}

/** --jobs N: the same seeds, split over N child processes; resolves with the worst exit status. */
async function runJobs(o: ReturnType<typeof parse>, argv: string[]): Promise<number> {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--jobs') i++;
    else args.push(argv[i]!);
  }
  const started = performance.now();
  const codes = await Promise.all(
    Array.from({ length: o.jobs }, (_, j) => {
      const child = fork(process.argv[1]!, [...args, '--seed', String(o.first), '--stride', String(o.jobs), '--index', String(j)], { execArgv: process.execArgv });
      return new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 2)));
    }),
  );
  const minutes = (performance.now() - started) / 60_000;
  console.log(`test:sim: ${o.seeds} seeds from ${o.first} in ${o.jobs} processes: ${(minutes * 60).toFixed(1)} s wall, ${(o.seeds * (o.determinism ? 2 : 1) / minutes).toFixed(0)} runs per wall minute; ${codes.every((c) => c === 0) ? 'none failed' : 'SOME FAILED (see above)'}`);
  return Math.max(...codes);
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const o = parse(argv);
  if (o.jobs > 1) return runJobs(o, argv);
  console.log(`test:sim: ${o.seeds} seeds from ${o.first}${o.noEc ? ' (no EC pool)' : ''}`);
  const started = performance.now();
  const cpuStarted = process.cpuUsage();
  const failed: number[] = [];
  for (let i = o.index; i < o.seeds; i += o.stride) {
    const seed = (o.first + i) >>> 0;
    const opts = { seed, noEc: o.noEc, ...(o.runMs !== undefined ? { runMs: o.runMs } : {}), ...(o.thinkMs !== undefined ? { thinkMsMax: o.thinkMs } : {}), ...(o.kinds ? { faultKinds: o.kinds } : {}), ...(o.workers !== undefined ? { workersPerPool: o.workers } : {}), ...(o.maxFaults !== undefined ? { maxConcurrentFaults: o.maxFaults } : {}) };
    const r = await runSimulation(opts);
    // With node --expose-gc: the heap left after each run (a run must leave nothing behind).
    const gc = (globalThis as { gc?: () => void }).gc;
    if (gc) gc();
    console.log(`${line(r)}${gc ? ` heapAfter=${(process.memoryUsage().heapUsed / 1048576).toFixed(0)}MiB` : ''}`);
    if (o.determinism) {
      const again = await runSimulation(opts);
      if (again.traceHash !== r.traceHash) {
        const at = r.trace.findIndex((l, j) => again.trace[j] !== l);
        console.log(`seed ${seed}: NOT DETERMINISTIC: trace ${r.traceHash} then ${again.traceHash}; first difference at line ${at}:\n  ${r.trace[at]}\n  ${again.trace[at]}`);
        failed.push(seed);
      }
    }
    if (!r.ok) {
      failed.push(seed);
      for (const v of r.violations) console.log(`  ${v}`);
      console.log('  --- last trace lines ---');
      for (const t of r.trace.slice(-40)) console.log(`  ${t}`);
      console.log('  --- last log lines ---');
      for (const t of r.log.slice(o.verbose ? 0 : -40)) console.log(`  ${t}`);
    } else if (o.verbose) for (const t of r.trace) console.log(`  ${t}`);
  }
  const minutes = (performance.now() - started) / 60_000;
  const cpu = process.cpuUsage(cpuStarted);
  const cpuMinutes = (cpu.user + cpu.system) / 60e6;
  const runs = Math.ceil((o.seeds - o.index) / o.stride) * (o.determinism ? 2 : 1);
  console.log(
    `test:sim: ${runs} runs of ${o.seeds} seeds in ${(minutes * 60).toFixed(1)} s wall, ${(cpuMinutes * 60).toFixed(1)} s CPU: ${(runs / minutes).toFixed(0)} runs per wall minute, ${(runs / cpuMinutes).toFixed(0)} per CPU minute; failed: ${failed.length ? [...new Set(failed)].join(' ') : 'none'}`,
  );
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(2);
  },
);
