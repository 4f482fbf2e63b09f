#!/usr/bin/env node
// Measures the RocksDB bindings that the per-disk object store could use, on
// this machine, in one run. Decision and recorded figures: docs/rocksdb-binding.md.
//
//   node bench/kv-bindings.mjs [--modules DIR] [--bindings a,b,c] [--threadpools 4,8]
//                              [--seconds S] [--crash-rounds N] [--dir DIR] [--quick]
//
// --modules (or env KV_BENCH_MODULES): a node_modules directory holding the
//   bindings (default: this project's node_modules, which has only `rocksdb`).
//   The alternatives are installed in a scratch directory, never in the project:
//     mkdir /tmp/kvbench && cd /tmp/kvbench && npm init -y &&
//     npm install rocksdb rocksdb-native @nxtedition/rocksdb
// Output: one JSON object per line: a `host` line, a `meta` line per binding,
// then one line per case. Each threadpool size runs every binding in a fresh
// child process (UV_THREADPOOL_SIZE is read when libuv's pool starts).
//
// Plain ESM JavaScript on purpose: it loads packages from a directory that is
// not a dependency of this project.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

const SELF = fileURLToPath(import.meta.url);
const ALL_BINDINGS = ['rocksdb', 'rocksdb-native', '@nxtedition/rocksdb'];
const BATCH = 16; // puts per write batch
const VALUE_BYTES = 100;
const READ_KEYS = 100_000;

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const key = a.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) out[key] = true;
    else { out[key] = next; i++; }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const quick = Boolean(args.quick);
const modulesDir = path.resolve(
  args.modules ?? process.env.KV_BENCH_MODULES ?? path.join(path.dirname(SELF), '..', 'node_modules'),
);
const seconds = Number(args.seconds ?? (quick ? 1 : 3));
const crashRounds = Number(args['crash-rounds'] ?? (quick ? 2 : 5));

function emit(obj) {
  fs.writeSync(1, JSON.stringify(obj) + '\n');
}

// ---------------------------------------------------------------- adapters
// Each adapter exposes the same small promise API over one binding:
//   open(dir), close(), batch(entries, mode) with mode 'sync'|'nosync'|'flush',
//   get(key), getMany(keys) (null if absent), scan(range, opts) -> count,
//   iterator(range, {snapshot}) -> {next() -> [k, v] | undefined, close()},
//   caps: what the binding offers.

function loadModule(name) {
  const dir = path.join(modulesDir, name);
  const req = createRequire(path.join(modulesDir, '_kv_bench_.cjs'));
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  return { mod: req(dir), version: pkg.version, dir };
}

function cbp(fn) {
  return new Promise((resolve, reject) => fn((err, val) => (err ? reject(err) : resolve(val))));
}

function levelAdapter() {
  const { mod: RocksDB, version } = loadModule('rocksdb');
  let db = null;
  return {
    binding: 'rocksdb',
    version,
    caps: {
      syncedWrite: 'db.batch(ops, { sync: true }, cb)',
      snapshot: 'implicit: an iterator reads the snapshot taken when db.iterator() is called; getMany() reads one snapshot',
      reverse: true,
      getMany: true,
      writeRunsOn: 'libuv threadpool (napi async work)',
    },
    async open(dir, opts = {}) {
      db = RocksDB(dir);
      await cbp((cb) => db.open({ createIfMissing: true, cacheSize: 64 << 20, ...opts }, cb));
    },
    async close() {
      await cbp((cb) => db.close(cb));
    },
    raw() { return db; },
    batch(entries, mode) {
      const ops = entries.map(([key, value]) => ({ type: 'put', key, value }));
      return cbp((cb) => db.batch(ops, { sync: mode === 'sync' }, cb));
    },
    get(key) { return cbp((cb) => db.get(key, cb)); },
    getMany(keys) { return cbp((cb) => db.getMany(keys, cb)); },
    scan(range, opts = {}) {
      const it = db.iterator({ ...range, ...(opts.highWaterMark ? { highWaterMark: opts.highWaterMark } : {}) });
      return new Promise((resolve, reject) => {
        let n = 0;
        const step = () => it.next((err, key) => {
          if (err) return it.end(() => reject(err));
          if (key === undefined) return it.end((e) => (e ? reject(e) : resolve(n)));
          n++;
          step();
        });
        step();
      });
    },
    iterator(range) {
      const it = db.iterator(range);
      return {
        next: () => new Promise((resolve, reject) => it.next((err, k, v) => (err ? reject(err) : resolve(k === undefined ? undefined : [k, v])))),
        close: () => cbp((cb) => it.end(cb)),
      };
    },
  };
}

function nxtAdapter() {
  const { mod, version } = loadModule('@nxtedition/rocksdb');
  const { RocksLevel } = mod;
  let db = null;
  return {
    binding: '@nxtedition/rocksdb',
    version,
    caps: {
      syncedWrite: 'db.batch(ops, { sync: true })',
      snapshot: 'implicit: an iterator reads the snapshot taken when db.iterator() is called',
      reverse: true,
      getMany: true,
      writeRunsOn: 'main thread (batch_write is a synchronous napi call)',
    },
    async open(dir, opts = {}) {
      db = new RocksLevel(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      await db.open({ createIfMissing: true, cacheSize: 64 << 20, ...opts });
    },
    async close() { await db.close(); },
    raw() { return db; },
    batch(entries, mode) {
      const ops = entries.map(([key, value]) => ({ type: 'put', key, value }));
      return db.batch(ops, { sync: mode === 'sync' });
    },
    get(key) { return db.get(key); },
    getMany(keys) { return db.getMany(keys); },
    async scan(range) {
      const it = db.iterator(range);
      let n = 0;
      try {
        for (;;) {
          const rows = await it.nextv(1000);
          if (rows.length === 0) break;
          n += rows.length;
        }
      } finally {
        await it.close();
      }
      return n;
    },
    iterator(range) {
      const it = db.iterator(range);
      return {
        next: () => new Promise((resolve, reject) => it.next((err, k, v) => (err ? reject(err) : resolve(k === undefined ? undefined : [k, v])))),
        close: () => it.close(),
      };
    },
  };
}

function nativeAdapter() {
  const { mod: RocksDB, version } = loadModule('rocksdb-native');
  let db = null;
  return {
    binding: 'rocksdb-native',
    version,
    caps: {
      syncedWrite: null, // no WriteOptions.sync, no FlushWAL(sync); only db.flush() (memtable -> SST)
      snapshot: 'explicit: db.snapshot() session; a plain iterator opens (and pins its view) lazily on first read',
      reverse: true,
      getMany: 'db.read() batch of get()s',
      writeRunsOn: 'libuv threadpool (uv_queue_work in librocksdb)',
    },
    async open(dir) {
      db = new RocksDB(dir);
      await db.ready();
    },
    async close() { await db.close(); },
    raw() { return db; },
    async batch(entries, mode) {
      const w = db.write({ capacity: entries.length });
      for (const [k, v] of entries) w.tryPut(k, v);
      try {
        await w.flush();
      } finally {
        w.destroy();
      }
      if (mode === 'flush') await db.flush();
    },
    get(key) { return db.get(key); },
    async getMany(keys) {
      const r = db.read({ capacity: keys.length });
      const ps = keys.map((k) => r.get(k));
      r.tryFlush();
      try {
        return await Promise.all(ps);
      } finally {
        r.destroy();
      }
    },
    async scan(range) {
      let n = 0;
      for await (const _ of db.iterator(range, { capacity: 1000 })) n++;
      return n;
    },
    iterator(range, { snapshot = false } = {}) {
      const session = snapshot ? db.snapshot() : null;
      const it = (session ?? db).iterator(range);
      const ai = it[Symbol.asyncIterator]();
      return {
        next: async () => {
          const r = await ai.next();
          return r.done ? undefined : [r.value.key, r.value.value];
        },
        close: async () => {
          await ai.return?.();
          if (session) await session.close();
        },
      };
    },
  };
}

const ADAPTERS = { rocksdb: levelAdapter, '@nxtedition/rocksdb': nxtAdapter, 'rocksdb-native': nativeAdapter };

function makeAdapter(name) {
  const f = ADAPTERS[name];
  if (!f) throw new Error(`unknown binding ${name}`);
  return f();
}

// ---------------------------------------------------------------- measuring

function mainThreadCpuNs() {
  // First field of schedstat: on-CPU time of the main thread (tid == pid), in ns.
  try {
    return Number(fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return NaN;
  }
}

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const r3 = (x) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null);

// Runs `op(i)` from `concurrency` workers for `secs` seconds (or maxOps ops).
// Each worker yields to the event loop (setImmediate) after each op, as a
// server does between requests, so loop-delay figures show per-op blocking.
async function drive({ concurrency, secs, maxOps = Infinity, op }) {
  const lat = [];
  const blk = [];
  let issued = 0;
  const h = monitorEventLoopDelay({ resolution: 1 });
  const immediate = () => new Promise((r) => setImmediate(r));
  await immediate();
  h.enable();
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const main0 = mainThreadCpuNs();
  const t0 = performance.now();
  const deadline = t0 + secs * 1000;
  async function worker() {
    while (issued < maxOps && performance.now() < deadline) {
      const i = issued++;
      const s = performance.now();
      const p = op(i);
      blk.push(performance.now() - s); // time the call itself held the main thread
      await p;
      lat.push(performance.now() - s);
      await immediate();
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const t1 = performance.now();
  const main1 = mainThreadCpuNs();
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);
  h.disable();
  lat.sort((a, b) => a - b);
  blk.sort((a, b) => a - b);
  const ops = lat.length;
  return {
    ops,
    seconds: r3((t1 - t0) / 1000),
    opsPerSec: Math.round(ops / ((t1 - t0) / 1000)),
    p50Ms: r3(pct(lat, 50)),
    p99Ms: r3(pct(lat, 99)),
    maxMs: r3(lat[lat.length - 1]),
    mainThreadMsPerOp: r3(elu.active / ops), // event-loop busy time per op
    mainThreadCpuMsPerOp: r3((main1 - main0) / 1e6 / ops), // main thread on-CPU time per op
    processCpuMsPerOp: r3((cpu.user + cpu.system) / 1000 / ops), // all threads
    loopUtilization: r3(elu.utilization),
    loopStallMaxMs: r3(h.max / 1e6), // includes the 1 ms sampling interval
    loopDelayP99Ms: r3(h.percentile(99) / 1e6),
    callBlockMaxMs: r3(blk[blk.length - 1]),
    callBlockP99Ms: r3(pct(blk, 99)),
  };
}

const VALUES = Array.from({ length: 64 }, () => randomBytes(VALUE_BYTES));

function batchEntries(prefix, n) {
  const base = `${prefix}/${String(n).padStart(10, '0')}/`;
  const out = new Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    out[i] = [Buffer.from(base + String(i).padStart(2, '0')), VALUES[(n + i) & 63]];
  }
  return out;
}

function readKey(i) {
  return Buffer.from(`r/${String(i).padStart(8, '0')}`);
}

function rocksdbVersionFromOptions(dir) {
  try {
    const f = fs.readdirSync(dir).filter((x) => x.startsWith('OPTIONS-')).sort().pop();
    if (!f) return null;
    const m = /rocksdb_version=([0-9.]+)/.exec(fs.readFileSync(path.join(dir, f), 'utf8'));
    return m ? m[1] : null;
  } catch {
    return null;
  }
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms); }),
  ]);
}

function errMsg(e) {
  return e ? `${e.code ? `[${e.code}] ` : ''}${e.message}${e.cause ? ` (cause: ${e.cause.message ?? e.cause})` : ''}` : null;
}

// ---------------------------------------------------------------- child processes

function runChild(childArgs, { env = {}, onLine, timeoutMs = 600_000 } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SELF, ...childArgs], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buf = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        onLine?.(line, child);
      }
    });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (buf) onLine?.(buf, child);
      resolve({ code, signal, stderr });
    });
  });
}

// ---------------------------------------------------------------- roles

async function roleCrashWriter() {
  const a = makeAdapter(args.binding);
  await a.open(args.dir);
  let n = Number(args.start);
  const mode = args.mode;
  const conc = Number(args.concurrency ?? 4);
  const end = args.count ? n + Number(args.count) : Infinity; // --count: stop (for strace checks)
  async function worker() {
    while (n < end) {
      const mine = n++;
      await a.batch(batchEntries('c', mine), mode);
      fs.writeSync(1, `${mine}\n`); // synchronous: printed means acknowledged
    }
  }
  await Promise.all(Array.from({ length: conc }, worker));
  await a.close();
}

async function roleTryOpen() {
  const a = makeAdapter(args.binding);
  try {
    await withTimeout(a.open(args.dir), 10_000, 'open');
    emit({ ok: true });
    await a.close();
  } catch (e) {
    emit({ ok: false, message: errMsg(e) });
  }
}

async function roleUseAfterClose() {
  const a = makeAdapter(args.binding);
  await a.open(args.dir);
  await a.batch(batchEntries('u', 1), 'nosync');
  await a.close();
  try {
    let res;
    if (args.what === 'batch') res = await withTimeout(a.batch(batchEntries('u', 2), 'sync'), 5000, 'batch');
    else if (args.what === 'get') res = await withTimeout(a.get(batchEntries('u', 1)[0][0]), 5000, 'get');
    else if (args.what === 'iterator') {
      const it = a.iterator({});
      res = await withTimeout(it.next(), 5000, 'iterator.next');
    }
    emit({ ok: true, result: res === undefined ? 'undefined' : String(res).slice(0, 40) });
  } catch (e) {
    emit({ ok: false, message: errMsg(e) });
  }
}

async function crashCheck(binding, base, mode, rounds) {
  const dir = path.join(base, `crash-${mode}`);
  fs.rmSync(dir, { recursive: true, force: true });
  let acked = 0;
  let missing = 0;
  let partial = 0;
  const kills = [];
  for (let round = 0; round < rounds; round++) {
    const start = round * 10_000_000;
    const ack = [];
    const killAfterMs = 300 + Math.floor(Math.random() * 1200);
    let timer = null;
    const res = await runChild(
      ['--role', 'crash-writer', '--binding', binding, '--dir', dir, '--mode', mode, '--start', String(start), '--modules', modulesDir],
      {
        timeoutMs: 60_000,
        onLine: (line, child) => {
          if (!/^\d+$/.test(line)) return;
          ack.push(Number(line));
          if (!timer) timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
        },
      },
    );
    clearTimeout(timer);
    kills.push({ killAfterMs, acked: ack.length, signal: res.signal, stderr: res.stderr.slice(0, 300) || undefined });
    acked += ack.length;
    // Reopen and check: every acknowledged batch whole; no batch half-present.
    const a = makeAdapter(binding);
    await a.open(dir);
    for (const n of ack) {
      const keys = batchEntries('c', n).map(([k]) => k);
      let vals;
      if (a.getMany) vals = await a.getMany(keys);
      else vals = await Promise.all(keys.map((k) => a.get(k).catch(() => undefined)));
      const present = vals.filter((v) => v != null).length;
      if (present !== BATCH) missing++;
    }
    const counts = new Map();
    const it = a.iterator({ gte: Buffer.from('c/'), lt: Buffer.from('c0') });
    for (;;) {
      const e = await it.next();
      if (!e) break;
      const b = e[0].toString().split('/')[1];
      counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    await it.close();
    for (const c of counts.values()) if (c !== BATCH) partial++;
    await a.close();
  }
  return { acked, missingAcked: missing, partialBatches: partial, rounds, kills };
}

async function roleCases() {
  const binding = args.binding;
  const tp = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  const base = fs.mkdtempSync(path.join(args.dir ?? os.tmpdir(), `kvbench-${binding.replace(/\W/g, '_')}-`));
  const tag = { binding, threadpool: tp };
  const a = makeAdapter(binding);
  const hasSync = Boolean(a.caps.syncedWrite);
  const probes = args.probes === 'true';

  try {
    // ---- writes
    const wdir = path.join(base, 'write');
    await a.open(wdir);
    emit({ name: 'meta', ...tag, version: a.version, rocksdbVersion: rocksdbVersionFromOptions(wdir), caps: a.caps });
    let seq = 0;
    const writeCases = [];
    if (hasSync) writeCases.push(['sync', 1], ['sync', 8]);
    else writeCases.push(['flush', 1], ['flush', 8]);
    writeCases.push(['nosync', 1], ['nosync', 8]);
    for (const [mode, conc] of writeCases) {
      const prefix = `w${seq++}`;
      const r = await drive({
        concurrency: conc,
        secs: seconds,
        maxOps: mode === 'nosync' ? 30_000 : Infinity,
        op: (i) => a.batch(batchEntries(prefix, i), mode),
      });
      const name = { sync: 'write-synced', nosync: 'write-unsynced', flush: 'write-then-flush' }[mode];
      emit({ name: `${name}-c${conc}`, ...tag, batchSize: BATCH, valueBytes: VALUE_BYTES, concurrency: conc, ...r });
    }
    await a.close();

    // ---- reads
    const rdir = path.join(base, 'read');
    await a.open(rdir);
    for (let i = 0; i < READ_KEYS; i += 1000) {
      const entries = [];
      for (let j = i; j < i + 1000; j++) entries.push([readKey(j), VALUES[j & 63]]);
      await a.batch(entries, 'nosync');
    }
    await a.scan({}); // warm
    for (let i = 0; i < READ_KEYS; i += 1000) {
      await Promise.all(Array.from({ length: 1000 }, (_, j) => a.get(readKey(i + j))));
    }
    const rnd = (i) => readKey((i * 2654435761) % READ_KEYS);
    {
      const r = await drive({ concurrency: 8, secs: seconds, op: (i) => a.get(rnd(i)) });
      emit({ name: 'get-c8', ...tag, concurrency: 8, ...r });
    }
    if (a.getMany) {
      const r = await drive({
        concurrency: 8,
        secs: seconds,
        op: (i) => a.getMany(Array.from({ length: 16 }, (_, j) => rnd(i * 16 + j))),
      });
      emit({ name: 'getMany16-c8', ...tag, concurrency: 8, keysPerCall: 16, keysPerSec: r.opsPerSec * 16, ...r });
    }
    const scanCases = [['iterate-forward', { reverse: false }, {}], ['iterate-reverse', { reverse: true }, {}]];
    if (binding === 'rocksdb') {
      scanCases.push(['iterate-forward-hwm1MiB', { reverse: false }, { highWaterMark: 1 << 20 }]);
    }
    for (const [name, range, opts] of scanCases) {
      let count = 0;
      const r = await drive({
        concurrency: 1,
        secs: Infinity,
        maxOps: 1,
        op: async () => { count = await a.scan({ gte: Buffer.from('r/'), lt: Buffer.from('r0'), ...range }, opts); },
      });
      const secs = r.p50Ms / 1000;
      emit({
        name, ...tag, keys: count, opsPerSec: Math.round(count / secs), keysPerSec: Math.round(count / secs),
        p50Ms: null, p99Ms: null, mainThreadMsPerOp: r3(r.mainThreadMsPerOp / count), mainThreadCpuMsPerOp: r3(r.mainThreadCpuMsPerOp / count),
        loopStallMaxMs: r.loopStallMaxMs, loopDelayP99Ms: r.loopDelayP99Ms, totalMs: r.p50Ms, ...opts,
      });
    }

    // ---- fixed view: an iterator created before a write must not see it
    {
      const range = { gte: Buffer.from('s/'), lt: Buffer.from('s0') };
      await a.batch([[Buffer.from('s/1'), VALUES[0]], [Buffer.from('s/2'), VALUES[1]]], 'nosync');
      const variants = [['snapshot-iterator', {}]];
      if (binding === 'rocksdb-native') variants.push(['snapshot-explicit', { snapshot: true }]);
      for (const [name, o] of variants) {
        const key = Buffer.from(`s/later-${name}`);
        const it = a.iterator(range, o);
        await a.batch([[key, VALUES[2]]], 'nosync');
        const seen = [];
        for (;;) {
          const e = await it.next();
          if (!e) break;
          seen.push(e[0].toString());
        }
        await it.close();
        const sawLaterWrite = seen.includes(key.toString());
        emit({ name, ...tag, ok: !sawLaterWrite, sawLaterWrite, seen });
      }
    }
    await a.close();

    if (probes) {
      // ---- crash checks (kill -9 mid-run, reopen, every acknowledged batch whole)
      const modes = hasSync ? ['sync', 'nosync'] : ['flush', 'nosync'];
      for (const mode of modes) {
        const rounds = mode === 'nosync' ? Math.min(3, crashRounds) : crashRounds;
        const r = await crashCheck(binding, base, mode, rounds);
        emit({
          name: mode === 'nosync' ? 'crash-kill9-unsynced-control' : `crash-kill9-${mode}`,
          ...tag, ok: r.missingAcked === 0 && r.partialBatches === 0, ...r,
        });
      }

      // ---- API probes
      const pdir = path.join(base, 'probe');
      await a.open(pdir);
      const b = makeAdapter(binding);
      let sameProcess;
      try {
        await withTimeout(b.open(pdir), 10_000, 'second open');
        sameProcess = { ok: true };
        await b.close();
      } catch (e) {
        sameProcess = { ok: false, message: errMsg(e) };
      }
      emit({ name: 'probe-lock-same-process', ...tag, ...sameProcess });
      let other = null;
      await runChild(['--role', 'try-open', '--binding', binding, '--dir', pdir, '--modules', modulesDir], {
        timeoutMs: 30_000,
        onLine: (l) => { try { other = JSON.parse(l); } catch { /* not ours */ } },
      });
      emit({ name: 'probe-lock-other-process', ...tag, ...(other ?? { ok: null }) });

      // close() while an iterator is open and part-read
      for (let i = 0; i < 10; i++) await a.batch(batchEntries('p', i), 'nosync');
      const it = a.iterator({ gte: Buffer.from('p/'), lt: Buffer.from('p0') });
      const first = await it.next();
      let closeResult;
      const t0 = performance.now();
      try {
        await withTimeout(a.close(), 5000, 'close with open iterator');
        closeResult = { closed: true, closeMs: r3(performance.now() - t0) };
      } catch (e) {
        closeResult = { closed: false, message: errMsg(e) };
      }
      let afterClose;
      try {
        const e = await withTimeout(it.next(), 5000, 'iterator.next after close');
        afterClose = { ok: true, result: e === undefined ? 'end' : 'entry' };
      } catch (e) {
        afterClose = { ok: false, message: errMsg(e) };
      }
      emit({ name: 'probe-close-with-open-iterator', ...tag, readFirst: Boolean(first), ...closeResult, iteratorNextAfterClose: afterClose });
      if (!closeResult.closed) {
        await it.close().catch(() => {});
        await a.close().catch(() => {});
      }

      // use after close, each in its own process (a binding may crash)
      for (const what of ['batch', 'get', 'iterator']) {
        let out = null;
        const udir = path.join(base, `uac-${what}`);
        const res = await runChild(['--role', 'use-after-close', '--what', what, '--binding', binding, '--dir', udir, '--modules', modulesDir], {
          timeoutMs: 30_000,
          onLine: (l) => { try { out = JSON.parse(l); } catch { /* not ours */ } },
        });
        emit({ name: `probe-${what}-after-close`, ...tag, exitCode: res.code, signal: res.signal, ...(out ?? {}), stderr: out ? undefined : res.stderr.slice(-300) });
      }
    }
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
}

function fdatasyncRate(dir, secs) {
  const f = path.join(dir, `kvbench-fsync-${process.pid}`);
  const fd = fs.openSync(f, 'w');
  const buf = Buffer.alloc(4096, 1);
  const t0 = performance.now();
  let n = 0;
  try {
    while (performance.now() - t0 < secs * 1000) {
      fs.writeSync(fd, buf);
      fs.fdatasyncSync(fd);
      n++;
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(f, { force: true });
  }
  return Math.round(n / ((performance.now() - t0) / 1000));
}

async function roleMain() {
  const bindings = (args.bindings ? String(args.bindings).split(',') : ALL_BINDINGS).filter((b) => {
    const ok = fs.existsSync(path.join(modulesDir, b, 'package.json'));
    if (!ok) emit({ name: 'skipped', binding: b, reason: `not installed in ${modulesDir}` });
    return ok;
  });
  const threadpools = String(args.threadpools ?? '4,8').split(',').map(Number);
  const dataDir = args.dir ?? os.tmpdir();
  emit({
    name: 'host',
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    kernel: os.release(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    dataDir,
    fdatasync4kPerSec: fdatasyncRate(dataDir, quick ? 1 : 2),
    modulesDir,
    bindings,
    threadpools,
    secondsPerCase: seconds,
    crashRounds,
  });
  for (const tp of threadpools) {
    for (const b of bindings) {
      const childArgs = ['--role', 'cases', '--binding', b, '--modules', modulesDir, '--seconds', String(seconds),
        '--crash-rounds', String(crashRounds), '--probes', String(tp === threadpools[0])];
      if (args.dir) childArgs.push('--dir', args.dir);
      const res = await runChild(childArgs, {
        env: { UV_THREADPOOL_SIZE: String(tp) },
        onLine: (line) => { if (line.trim()) fs.writeSync(1, line + '\n'); },
      });
      if (res.code !== 0) emit({ name: 'child-failed', binding: b, threadpool: tp, code: res.code, signal: res.signal, stderr: res.stderr.slice(-2000) });
    }
  }
}

const roles = { main: roleMain, cases: roleCases, 'crash-writer': roleCrashWriter, 'try-open': roleTryOpen, 'use-after-close': roleUseAfterClose };
const role = roles[args.role ?? 'main'];
if (!role) throw new Error(`unknown role ${args.role}`);
await role();
if (args.role) process.exit(0);
