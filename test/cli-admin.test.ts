/**
 * The admin commands as an operator runs them: `tessera up` on a fresh data
 * directory (real daemon processes), then the real CLI binary for each
 * command: pool create / ls / rm (rm refuses without its confirmation
 * flag; the removed pool's objects leave the disks; its id is not reused), object put / get / ls / stat / rm (byte-exact round trips from a
 * file and from standard input, to a file and to standard output; ls pages),
 * disk ls --json, disk out then in (status and the map reflect it; objects
 * overwritten while it was out read back new from it afterwards), host
 * add, disk add (`tessera up` starts a daemon for the new disk and it comes
 * up and in), disk add --address (a daemon the test starts from the printed
 * command, as on another machine; --wait marks it in), status --json (pgs by state), and errors: one line on stderr
 * and a non-zero exit code. The cluster is stopped with SIGINT at the end;
 * if that fails, every process it started is killed by PID.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { systemIo } from '../src/io/system.js';
import { connectMapService } from '../cluster/map-daemon.js';
import { objectToPg, pgMembers } from '../cluster/placement.js';
import { makeTempDir } from './helpers/tmp.js';
import { tesseraBin } from './helpers/daemon-process.js';

let dir: Awaited<ReturnType<typeof makeTempDir>>;
let upChild: ChildProcess | null = null;
const pids: number[] = [];
const output: string[] = [];
// Ports below Linux's ephemeral range, apart from test/cli-up.test.ts (20000+).
const basePort = 10_000 + (process.pid % 150) * 32;

beforeAll(async () => {
  dir = await makeTempDir('admin');
  upChild = await new Promise<ChildProcess>((resolve, reject) => {
    const args = [tesseraBin, 'up', '--data', join(dir.path, 'data'), '--hosts', '3', '--disks-per-host', '2', '--base-port', String(basePort), '--map-port', String(basePort + 14), '--s3-port', String(basePort + 15), '--pgs', '8', '--metrics-port-offset', '16'];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    if (child.pid) pids.push(child.pid);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line);
      for (const m of line.matchAll(/pid (\d+)/g)) pids.push(Number(m[1]));
      if (line.startsWith('Ctrl-C')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`tessera up exited ${code}: ${output.join('\n')}`)));
  });
}, 90_000);

afterAll(async () => {
  const child = upChild;
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGINT');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 30_000))]);
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await dir?.remove();
}, 60_000);

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function tessera(args: string[], input?: Buffer): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [tesseraBin, ...args, ...(args.includes('--map') || args.includes('--data') ? [] : ['--data', join(dir.path, 'data')])], { stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => stdout.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(input);
    // Without the ISA-L addon every process warns once about the portable fallback: not the command's output.
    child.on('exit', (code) => resolve({ code, stdout: Buffer.concat(stdout), stderr: stderr.replace(/^tessera: ISA-L addon not in use.*\n/m, '') }));
  });
}

async function ok(args: string[], input?: Buffer): Promise<string> {
  const r = await tessera(args, input);
  expect(r.stderr, `tessera ${args.join(' ')}`).toBe('');
  expect(r.code, `tessera ${args.join(' ')}`).toBe(0);
  return r.stdout.toString();
}

/** A failing command: non-zero exit, exactly one line on stderr, nothing on stdout. */
async function fails(args: string[], pattern: RegExp): Promise<void> {
  const r = await tessera(args);
  expect(r.code, `tessera ${args.join(' ')}`).not.toBe(0);
  expect(r.stderr.endsWith('\n') && r.stderr.split('\n').length === 2, `one line: ${JSON.stringify(r.stderr)}`).toBe(true);
  expect(r.stderr).toMatch(pattern);
  expect(r.stdout.length).toBe(0);
}

interface StatusDoc {
  health: string;
  reasons: string[];
  disks: { total: number; up: number; in: number; list: Array<{ id: number; up: boolean; in: boolean }> };
  pools: Array<{ name: string; pgCount: number; pgs: Record<string, number> }>;
  pgs: { total: number; byState: Record<string, number> };
}

const status = async (): Promise<StatusDoc> => JSON.parse((await tessera(['status', '--json'])).stdout.toString()) as StatusDoc;
/** The health, with its reasons unless OK (so a failed poll says why). */
const health = async (): Promise<string> => {
  const s = await status();
  const pools = s.pools.filter((p) => p.pgs.active !== p.pgCount).map((p) => `${p.name} ${JSON.stringify(p.pgs)}`);
  return s.health === 'HEALTH_OK' ? s.health : `${s.health}: ${s.reasons.join('; ')} (pgs ${pools.join(', ')})`;
};

it('pool create, ls, rm (rm only with its confirmation flag)', async () => {
  expect(await ok(['pool', 'create', 'photos', '--replicated', '3', '--pgs', '8'])).toMatch(/pool photos created \(id \d+, replicated size 3 min_size 2, 8 pgs/);
  expect(await ok(['pool', 'create', 'scratch', '--replicated', '2', '--min-size', '1', '--pgs', '4', '--failure-domain', 'disk'])).toContain('pool scratch created');
  const pools = JSON.parse(await ok(['pool', 'ls', '--json'])) as Array<{ id: number; name: string; pgCount: number; redundancy: { type: string; size?: number } }>;
  expect(pools.map((p) => p.name)).toEqual(['rep', 'ec', 'photos', 'scratch']);
  expect(pools.find((p) => p.name === 'scratch')).toMatchObject({ pgCount: 4, redundancy: { type: 'replicated', size: 2 } });
  expect(new Set(pools.map((p) => p.id)).size).toBe(4);
  expect(await ok(['pool', 'ls'])).toMatch(/photos\s+replicated size 3 min_size 2\s+8\s+host/);

  await fails(['pool', 'rm', 'scratch'], /--yes-i-really-mean-it/);
  const scratchId = pools.find((p) => p.name === 'scratch')!.id;
  // Its objects leave the disks once it is removed (each daemon purges what the pool left).
  await ok(['object', 'put', '--pool', 'scratch', 's1', '-'], randomBytes(5000));
  await ok(['object', 'put', '--pool', 'scratch', 's2', '-'], randomBytes(5000));
  const onDisks = async (): Promise<number> => (JSON.parse(await ok(['disk', 'ls', '--json'])) as Array<{ objects: number }>).reduce((n, d) => n + d.objects, 0);
  const withScratch = await onDisks();
  expect(await ok(['pool', 'rm', 'scratch', '--yes-i-really-mean-it'])).toContain('pool scratch removed');
  await expect.poll(onDisks, { timeout: 20_000, interval: 1000 }).toBeLessThanOrEqual(withScratch - 4); // 2 objects x 2 copies, and pg meta objects
  // A removed pool's id is never given again.
  await ok(['pool', 'create', 'again', '--replicated', '2', '--pgs', '4']);
  const after = JSON.parse(await ok(['pool', 'ls', '--json'])) as Array<{ id: number; name: string }>;
  expect(after.map((p) => p.name)).toEqual(['rep', 'ec', 'photos', 'again']);
  expect(after.find((p) => p.name === 'again')!.id).toBeGreaterThan(scratchId);

  await fails(['pool', 'create', 'photos'], /pool photos exists/);
  await fails(['pool', 'create', 'wide', '--erasure', '4+2'], /needs 6 hosts/);
  await fails(['pool', 'rm', 'nosuch', '--yes-i-really-mean-it'], /pool "nosuch" does not exist/);
}, 120_000); // about 14 s on a quiet machine, 45-53 s at load average 40

it('object put, get, ls, stat, rm: byte-exact round trips', async () => {
  const big = randomBytes(3 * 1024 * 1024 + 17);
  const file = join(dir.path, 'big.bin');
  await writeFile(file, big);
  expect(await ok(['object', 'put', '--pool', 'photos', 'big', file])).toContain(`put photos/big: ${big.length} bytes`);
  const small = randomBytes(1000);
  expect(await ok(['object', 'put', '--pool', 'photos', 'from-stdin', '-'], small)).toContain('1000 bytes');
  await ok(['object', 'put', '--pool', 'ec', 'striped', file]);

  const back = join(dir.path, 'back.bin');
  expect(await ok(['object', 'get', '--pool', 'photos', 'big', back])).toBe('');
  expect((await readFile(back)).equals(big)).toBe(true);
  const toStdout = await tessera(['object', 'get', '--pool', 'photos', 'from-stdin']);
  expect(toStdout.code).toBe(0);
  expect(toStdout.stdout.equals(small)).toBe(true);
  expect((await tessera(['object', 'get', '--pool', 'ec', 'striped', '-'])).stdout.equals(big)).toBe(true);

  const stat = JSON.parse(await ok(['object', 'stat', '--pool', 'photos', 'big', '--json'])) as { sizeBytes: number; name: string; version: string };
  expect(stat).toMatchObject({ name: 'big', sizeBytes: big.length });

  for (let i = 0; i < 3; i++) await ok(['object', 'put', '--pool', 'photos', `n${i}`, '-'], Buffer.from(`object ${i}`));
  const names = ['big', 'from-stdin', 'n0', 'n1', 'n2'];
  expect((JSON.parse(await ok(['object', 'ls', '--pool', 'photos', '--json'])) as { objects: string[] }).objects.sort()).toEqual(names);
  expect((await ok(['object', 'ls', '--pool', 'photos'])).trim().split('\n').sort()).toEqual(names);
  // Pages of 2, following the cursor.
  const paged: string[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 20; pages++) {
    const page = JSON.parse(await ok(['object', 'ls', '--pool', 'photos', '--limit', '2', '--json', ...(cursor ? ['--cursor', cursor] : [])])) as { objects: string[]; cursor?: string };
    expect(page.objects.length).toBeLessThanOrEqual(2);
    paged.push(...page.objects);
    cursor = page.cursor;
    if (!cursor) break;
  }
  expect(cursor).toBeUndefined();
  expect(paged.sort()).toEqual(names);

  expect(await ok(['object', 'rm', '--pool', 'photos', 'n0'])).toContain('removed photos/n0');
  await fails(['object', 'get', '--pool', 'photos', 'n0'], /no object n0 in pool photos/);
  await fails(['object', 'rm', '--pool', 'photos', 'n0'], /no object n0 in pool photos/);
  await fails(['object', 'stat', '--pool', 'nopool', 'x'], /pool nopool does not exist/);
  await fails(['object', 'put', '--pool', 'photos', 'x', join(dir.path, 'missing')], /no file/);
}, 90_000);

it('disk ls --json, disk out then in, status follows', async () => {
  const disks = JSON.parse(await ok(['disk', 'ls', '--json'])) as Array<{ id: number; host: string; up: boolean; in: boolean; objects: number; usedBytes: number; freeBytes: number }>;
  expect(disks.map((d) => d.id)).toEqual([0, 1, 2, 3, 4, 5]);
  for (const d of disks) expect(d).toMatchObject({ up: true, in: true, host: `host${Math.floor(d.id / 2)}` });
  expect(disks.every((d) => d.freeBytes > 0 && d.objects >= 0)).toBe(true);

  await expect.poll(health, { timeout: 30_000, interval: 1000 }).toBe('HEALTH_OK');
  const healthy = await status();
  expect(healthy.pgs.byState).toEqual({ active: healthy.pgs.total });

  // Objects whose pg has disk 5 as primary: overwritten while it is out, they must read back new once it is in
  // again (the pg starts a new interval and peers; it does not resume the one it had before).
  const client = JSON.parse(await readFile(join(dir.path, 'data', 'client.json'), 'utf8')) as { map: string };
  const conn = connectMapService(systemIo(), client.map);
  const map = await conn.service.current().finally(() => conn.close());
  const photos = map.pools.find((p) => p.name === 'photos')!;
  const onDisk5 = Array.from({ length: 400 }, (_, i) => `moved${i}`).filter((name) => pgMembers(map, photos, objectToPg(photos, name))[0] === 5).slice(0, 2);
  expect(onDisk5).toHaveLength(2);
  for (const name of onDisk5) await ok(['object', 'put', '--pool', 'photos', name, '-'], Buffer.from(`${name} before`));

  expect(await ok(['disk', 'out', '5'])).toContain('disk 5 marked out');
  for (const name of onDisk5) await ok(['object', 'put', '--pool', 'photos', name, '-'], Buffer.from(`${name} while out`));
  const out = await status();
  expect(out.health).toBe('HEALTH_WARN');
  expect(out.reasons).toContain('1 disks out: 5');
  expect(out.disks).toMatchObject({ total: 6, up: 6, in: 5 });
  expect(out.disks.list.find((d) => d.id === 5)).toMatchObject({ up: true, in: false });
  // 4+2 one per disk cannot be placed on 5 disks: the ec pool's pgs are degraded.
  expect(Object.keys(out.pools.find((p) => p.name === 'ec')!.pgs).every((s) => s.endsWith('+degraded'))).toBe(true);
  expect((await tessera(['status'])).stdout.toString()).toMatch(/disk 5 .*: up, out/);

  expect(await ok(['disk', 'in', '5'])).toContain('disk 5 marked in');
  await expect.poll(health, { timeout: 60_000, interval: 1000 }).toBe('HEALTH_OK');
  // The data written before is all there, and what was written while it was out.
  expect((await tessera(['object', 'get', '--pool', 'ec', 'striped'])).stdout.length).toBe(3 * 1024 * 1024 + 17);
  for (const name of onDisk5) expect(await ok(['object', 'get', '--pool', 'photos', name])).toBe(`${name} while out`);

  await fails(['disk', 'out', '99'], /disk 99 does not exist|no disk 99/);

}, 90_000);

it('host add, then disk add: up starts its daemon and the disk comes up and in', async () => {
  expect(await ok(['host', 'add', 'host3'])).toContain('host host3 added to rack rack0');
  await fails(['host', 'add', 'host3'], /exists/);
  const added = await ok(['disk', 'add', '--host', 'host3']);
  expect(added).toContain('disk 6 added on host host3');
  expect(added).toContain('disk 6 is up and in');
  const layout = JSON.parse(await readFile(join(dir.path, 'data', 'cluster.json'), 'utf8')) as { disks: Array<{ diskId: number; host: string; port: number; metricsPort: number }> };
  expect(layout.disks.find((d) => d.diskId === 6)).toMatchObject({ host: 'host3', port: basePort + 6, metricsPort: basePort + 22 });
  const disks = JSON.parse(await ok(['disk', 'ls', '--json'])) as Array<{ id: number; host: string; up: boolean; in: boolean; freeBytes?: number }>;
  expect(disks.find((d) => d.id === 6)).toMatchObject({ host: 'host3', up: true, in: true });
  expect(disks.find((d) => d.id === 6)!.freeBytes).toBeGreaterThan(0);
  await expect.poll(() => output.some((l) => /disk 6 \(host3\) added: storage daemon on .*, pid \d+/.test(l)), { timeout: 10_000 }).toBe(true);
  // The new disk takes part: the cluster settles with it and objects still read back.
  await expect.poll(health, { timeout: 60_000, interval: 1000 }).toBe('HEALTH_OK');
  expect((await status()).disks).toMatchObject({ total: 7, up: 7, in: 7 });
  expect((await tessera(['object', 'get', '--pool', 'photos', 'from-stdin'])).stdout.length).toBe(1000);
  await fails(['disk', 'add', '--host', 'nohost'], /no host nohost/);
}, 90_000);

it('disk add --address (a disk whose daemon runs elsewhere): added down and out, its printed daemon command brings it up, --wait marks it in', async () => {
  const mapArgs = ['--map', `127.0.0.1:${basePort + 14}`];
  const address = `127.0.0.1:${basePort + 9}`;
  // The command waits for the daemon it tells us to start: read its output as it comes.
  const add = spawn(process.execPath, [tesseraBin, 'disk', 'add', '--host', 'host3', '--address', address, '--wait', ...mapArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  let addOut = '';
  let addErr = '';
  add.stderr.on('data', (d: Buffer) => (addErr += d.toString()));
  const addExit = new Promise<number | null>((resolve) => add.on('exit', (code) => resolve(code)));
  const command = await new Promise<string>((resolve, reject) => {
    createInterface({ input: add.stdout }).on('line', (line) => {
      addOut += `${line}\n`;
      const m = /^on its machine run: tessera (daemon .*)$/.exec(line);
      if (m) resolve(m[1]!);
    });
    add.on('exit', () => reject(new Error(`disk add exited before printing the daemon command: ${addOut} ${addErr}`)));
  });
  expect(addOut).toMatch(new RegExp(`disk 7 added on host host3 at ${address}, down and out`));
  const listed = JSON.parse(await ok(['disk', 'ls', '--json', ...mapArgs])) as Array<{ id: number; address: string; up: boolean; in: boolean }>;
  expect(listed.find((d) => d.id === 7)).toMatchObject({ address, up: false, in: false });
  await fails(['disk', 'add', '--host', 'host3', '--address', address, ...mapArgs], /disk 7 already has address/);
  await fails(['disk', 'add', '--host', 'host3', ...mapArgs], /needs --address/);
  // Run the printed command as the operator would on the disk's machine.
  const args = command.split(' ').map((a) => (a === 'DIR' ? join(dir.path, 'remote-disk7') : a));
  const daemon = spawn(process.execPath, [tesseraBin, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (daemon.pid) pids.push(daemon.pid);
  expect(await addExit, addErr).toBe(0);
  expect(addOut).toContain('disk 7 is up and in');
  await expect.poll(health, { timeout: 60_000, interval: 1000 }).toBe('HEALTH_OK');
  expect((await status()).disks).toMatchObject({ total: 8, up: 8, in: 8 });
  const disks = JSON.parse(await ok(['disk', 'ls', '--json'])) as Array<{ id: number; objects?: number }>;
  expect(disks.find((d) => d.id === 7)!.objects, 'the new disk holds copies').toBeGreaterThan(0);
  expect((await tessera(['object', 'get', '--pool', 'photos', 'from-stdin'])).stdout.length).toBe(1000);
}, 120_000);

it('errors: one line on stderr, non-zero exit', async () => {
  await fails(['nonsense'], /unknown command nonsense/);
  await fails(['pool', 'frobnicate'], /usage: tessera pool/);
  await fails(['pool', 'ls', '--bogus'], /bogus/);
  await fails(['object', 'put', 'x', '-'], /--pool is required/);
  await fails(['status', '--data', join(dir.path, 'nowhere')], /no cluster in/);
  await fails(['pool', 'ls', '--map', '127.0.0.1:1'], /cannot reach the map service/);
  await fails(['disk', 'out', 'x'], /disk id/);
}, 60_000);
