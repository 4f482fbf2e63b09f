/**
 * `tessera up --etcd` as a user runs it (issue 6 §1): the all-in-one cluster
 * with its map in etcd is served by three map daemon processes, and one of
 * them dying stops nothing.
 *
 * How: one etcd member (test/helpers/etcd.ts), `tessera up --etcd URL` (from
 * dist/: `npm run build` first) on a fresh directory, 3 hosts x 1 disk. It
 * proves: up prints three map daemons on consecutive ports with their PIDs;
 * the client file keeps `map` (the first, as before) and lists all three in
 * `maps`; cluster.json records the ports; every storage daemon is given all
 * three (`--map`, read from /proc). Then map daemon 0 (the one every daemon
 * and command tries first) is killed with kill -9, by the PID up printed,
 * and its port held by this test (a listener that resets every connection,
 * as a dead host's port does) so that up's restarts cannot take it back
 * meanwhile: every storage daemon logs that it moved on, `tessera object
 * put` and `get` work, and `tessera status` answers with every disk up. Once
 * the port is released up's restart of map daemon 0 serves again (it prints
 * the new PID). SIGINT stops up with exit code 0 and no map daemon it ran is
 * left (checked by PID, the restarted one too); a second `up --etcd` on the
 * same directory resumes the cluster (same id, the objects read back).
 *
 * Waits poll with a bound that only catches hangs; nothing asserts a
 * duration. Every process is ended by PID in afterAll, also on failure; the
 * held port is released, etcd stopped and the directory removed. Skips
 * loudly without /usr/bin/etcd.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { createInterface } from 'node:readline';
import { tesseraBin } from './helpers/daemon-process.js';
import { skipWithoutEtcd, startEtcdCluster, type EtcdCluster } from './helpers/etcd.js';
import { makeTempDir } from './helpers/tmp.js';
import { sleep, waitFor } from './helpers/wait.js';

const skip = skipWithoutEtcd('tessera up --etcd with several map daemons (test/cli-up-etcd.test.ts)');
/** Ports used: base + 0..2 disks, + 10..12 map daemons, + 15 S3, + 16..18 disk metrics, + 26 map metrics (offset 16). */
const PORT_WINDOW = 32;

let etcd: EtcdCluster | null = null;
let dir: Awaited<ReturnType<typeof makeTempDir>> | null = null;
let basePort = 0;
/** Every PID seen: up itself, and each process it printed (map daemons, storage daemons, gateway). */
const pids = new Set<number>();
const ups: ChildProcess[] = [];
let holder: Server | null = null;

/** A window of PORT_WINDOW loopback ports that are all free now (tried from a pid-derived start). */
async function freeWindow(): Promise<number> {
  for (let i = 0; i < 600; i++) {
    const base = 40_000 + ((process.pid + i) % 600) * PORT_WINDOW;
    const servers: Server[] = [];
    let free = true;
    for (let p = base; p < base + PORT_WINDOW && free; p++) {
      const server = createServer();
      free = await new Promise<boolean>((resolve) => {
        server.once('error', () => resolve(false));
        server.listen(p, '127.0.0.1', () => resolve(true));
      });
      if (free) servers.push(server);
    }
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    if (free) return base;
  }
  throw new Error('no free port window');
}

/** Alive and not a zombie (a zombie's port and memory are gone already). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

interface Up {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
}

function up(): Promise<Up> {
  return new Promise((resolve, reject) => {
    const args = [
      tesseraBin, 'up', '--data', dir!.path, '--etcd', etcd!.endpoints.join(','), '--hosts', '3', '--disks-per-host', '1',
      '--base-port', String(basePort), '--map-port', String(basePort + 10), '--s3-port', String(basePort + 15), '--pgs', '8', '--metrics-port-offset', '16',
    ];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    ups.push(child);
    if (child.pid) pids.add(child.pid);
    const u: Up = { child, stdout: [], stderr: [] };
    createInterface({ input: child.stdout! }).on('line', (line) => {
      u.stdout.push(line);
      for (const m of line.matchAll(/pid (\d+)/g)) pids.add(Number(m[1]));
      if (line.startsWith('Ctrl-C')) resolve(u);
    });
    createInterface({ input: child.stderr! }).on('line', (line) => u.stderr.push(line));
    child.on('exit', (code) => reject(new Error(`tessera up exited ${code}:\n${u.stdout.join('\n')}\n${u.stderr.slice(-30).join('\n')}`)));
  });
}

function run(args: string[], input?: Buffer): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [tesseraBin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(input);
    child.on('exit', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
  });
}

const stop = (child: ChildProcess): Promise<number | null> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
    child.once('exit', (code) => resolve(code));
    child.kill('SIGINT');
  });

/** "map daemon I on HOST:PORT, pid N" lines of up's summary. */
function mapDaemonsOf(u: Up): Array<{ address: string; port: number; pid: number }> {
  return [...u.stdout.join('\n').matchAll(/map daemon \d+ on (127\.0\.0\.1:(\d+)), pid (\d+)/g)].map((m) => ({ address: m[1]!, port: Number(m[2]), pid: Number(m[3]) }));
}

/**
 * Binds `port` once its map daemon is gone: a listener that resets every connection (what a client of a dead
 * map daemon sees). A restart up made before the bind (it waits 500 ms) is killed again, by the PID it printed.
 */
async function holdPort(u: Up, port: number): Promise<Server> {
  return waitFor(`port ${port} free to hold`, 30_000, async () => {
    for (const m of u.stdout.join('\n').matchAll(/map daemon 0 restarted, pid (\d+)/g)) if (alive(Number(m[1]))) process.kill(Number(m[1]), 'SIGKILL');
    const server = createServer((socket) => socket.resetAndDestroy());
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    return bound ? server : undefined;
  }, 20);
}

describe.skipIf(skip)('tessera up --etcd: several map daemons', () => {
  beforeAll(async () => {
    etcd = await startEtcdCluster({ size: 1 });
    dir = await makeTempDir('up-etcd');
    basePort = await freeWindow();
  }, 60_000);

  afterAll(async () => {
    for (const child of ups) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGINT');
      await Promise.race([exited, sleep(30_000)]);
    }
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await new Promise<void>((resolve) => (holder ? holder.close(() => resolve()) : resolve()));
    await etcd?.stop();
    await dir?.remove();
  }, 90_000);

  it('runs three map daemons; kill -9 of one stops neither I/O nor status; stops them all; resumes', async () => {
    const data = dir!.path;
    const first = await up();
    const mapds = mapDaemonsOf(first);
    expect(mapds.map((m) => m.port)).toEqual([basePort + 10, basePort + 11, basePort + 12]);
    const addresses = mapds.map((m) => m.address);
    expect(mapds.every((m) => alive(m.pid))).toBe(true);
    const clientFile = JSON.parse(await readFile(`${data}/client.json`, 'utf8')) as { clusterId: string; map: string; maps?: string[] };
    expect(clientFile.map).toBe(addresses[0]);
    expect(clientFile.maps).toEqual(addresses);
    expect((JSON.parse(await readFile(`${data}/cluster.json`, 'utf8')) as { mapPorts?: number[] }).mapPorts).toEqual(mapds.map((m) => m.port));
    // Every storage daemon is given every map daemon.
    const children = (await readFile(`/proc/${first.child.pid}/task/${first.child.pid}/children`, 'utf8')).trim().split(/\s+/);
    const commands = await Promise.all(children.map(async (pid) => (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0')));
    const daemonCommands = commands.filter((argv) => argv.includes('daemon'));
    expect(daemonCommands).toHaveLength(3);
    for (const argv of daemonCommands) expect(argv[argv.indexOf('--map') + 1]).toBe(addresses.join(','));
    expect(commands.filter((argv) => argv.includes('mapd'))).toHaveLength(3);

    const before = await run(['object', 'put', '--pool', 'rep', 'before', '-', '--data', data], Buffer.from('written with 3 map daemons'));
    expect(before.code, before.stderr).toBe(0);

    // kill -9 map daemon 0, and keep its port dead.
    process.kill(mapds[0]!.pid, 'SIGKILL');
    holder = await holdPort(first, mapds[0]!.port);
    expect(alive(mapds[0]!.pid)).toBe(false);
    // Each storage daemon notices at its next heartbeat (at most an interval, 5 s by default) and moves on.
    await waitFor(() => `every disk to leave ${addresses[0]}; up's stderr:\n${first.stderr.slice(-20).join('\n')}`, 60_000, () => {
      const moved = [0, 1, 2].filter((d) => first.stderr.some((l) => l.startsWith(`disk ${d}: map daemon ${addresses[0]} unreachable`)));
      return moved.length === 3 ? true : undefined;
    });
    const after = await run(['object', 'put', '--pool', 'rep', 'after', '-', '--data', data], Buffer.from('written with map daemon 0 dead'));
    expect(after.code, after.stderr).toBe(0);
    for (const [name, text] of [['before', 'written with 3 map daemons'], ['after', 'written with map daemon 0 dead']] as const) {
      const got = await run(['object', 'get', '--pool', 'rep', name, '-', '--data', data]);
      expect(got.code, got.stderr).toBe(0);
      expect(got.stdout.toString()).toBe(text);
    }
    const status = await run(['status', '--data', data]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout.toString().match(/^ {4}disk \d.*: up,/gm)).toHaveLength(3);
    // The dead map daemon is named, the cluster is served by the other two: a warning, not a failure.
    expect(status.stdout.toString()).toContain('2 of 3 map daemons answering');
    expect(status.stdout.toString()).toContain(`map daemon ${addresses[0]}: UNREACHABLE`);
    expect(status.stdout.toString()).toContain(`1 of 3 map daemons not answering: ${addresses[0]}`);
    for (const a of addresses.slice(1)) expect(status.stdout.toString()).toMatch(new RegExp(`map daemon ${a}: up, epoch \\d+`));

    // Released, the port is map daemon 0's again at up's next restart.
    await new Promise<void>((resolve) => holder!.close(() => resolve()));
    holder = null;
    const restarted = await waitFor(() => `map daemon 0 restarted; up's stderr:\n${first.stderr.slice(-20).join('\n')}`, 60_000, () => {
      const m = /map daemon 0 restarted, pid (\d+)/.exec(first.stdout.filter((l) => l.includes('map daemon 0 restarted')).at(-1) ?? '');
      return m && alive(Number(m[1])) ? Number(m[1]) : undefined;
    });
    const onlyFirst = await run(['status', '--map', addresses[0]!]);
    expect(onlyFirst.code, onlyFirst.stderr).toBe(0);
    const all = await run(['status', '--data', data, '--json']);
    expect(all.code, all.stderr).toBe(0);
    const mapDaemons = (JSON.parse(all.stdout.toString()) as { mapDaemons: Array<{ address: string; reachable: boolean }> }).mapDaemons;
    expect(mapDaemons.map((m) => [m.address, m.reachable])).toEqual(addresses.map((a) => [a, true]));

    // SIGINT stops every map daemon up ran (by PID), the restarted one too.
    expect(await stop(first.child)).toBe(0);
    for (const pid of [restarted, mapds[1]!.pid, mapds[2]!.pid]) expect(alive(pid), `map daemon pid ${pid}`).toBe(false);
    expect((await run(['status', '--data', data])).code).toBe(1);

    // Resumed on the same directory: same cluster, three map daemons again, the objects read back.
    const second = await up();
    expect(second.stdout[0]).toContain(clientFile.clusterId);
    expect(mapDaemonsOf(second).map((m) => m.port)).toEqual(mapds.map((m) => m.port));
    const resumed = await run(['object', 'get', '--pool', 'rep', 'after', '-', '--data', data]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout.toString()).toBe('written with map daemon 0 dead');
    expect(await stop(second.child)).toBe(0);
    for (const m of mapDaemonsOf(second)) expect(alive(m.pid), `map daemon pid ${m.pid}`).toBe(false);
  }, 300_000);
});
