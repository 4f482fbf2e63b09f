/**
 * `tessera up` as a user runs it: the all-in-one cluster on a fresh data
 * directory (map service + one daemon process per disk), the owner-only
 * client file, `tessera status`; an object written to the replicated pool;
 * SIGINT stops everything; a second `up` on the same directory resumes the
 * cluster and the object reads back.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { systemIo } from '../src/io/system.js';
import { TesseraClient } from '../src/client/client.js';
import { connectMapService } from '../cluster/map-daemon.js';
import { makeTempDir } from './helpers/tmp.js';
import { tesseraBin } from './helpers/daemon-process.js';

let dir: Awaited<ReturnType<typeof makeTempDir>>;
const started: ChildProcess[] = [];
const basePort = 20_000 + (process.pid % 1000) * 16;

beforeAll(async () => {
  dir = await makeTempDir('up');
});
afterAll(async () => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await dir.remove();
});

function up(): Promise<{ child: ChildProcess; output: string[] }> {
  return new Promise((resolve, reject) => {
    const args = [tesseraBin, 'up', '--data', dir.path, '--hosts', '3', '--disks-per-host', '2', '--base-port', String(basePort), '--map-port', String(basePort + 15), '--pgs', '16'];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(child);
    const output: string[] = [];
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line);
      if (line.startsWith('Ctrl-C')) resolve({ child, output });
    });
    child.on('exit', (code) => reject(new Error(`tessera up exited ${code}: ${output.join('\n')}`)));
  });
}

function run(args: string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [tesseraBin, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout }));
  });
}

const stop = (child: ChildProcess): Promise<number | null> =>
  new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill('SIGINT');
  });

async function withClient<T>(map: string, fn: (c: TesseraClient) => Promise<T>): Promise<T> {
  const io = systemIo();
  const conn = connectMapService(io, map);
  const client = await TesseraClient.connect({ io, mapService: conn.service, timeoutMs: 60_000 });
  try {
    return await fn(client);
  } finally {
    await client.close();
    await conn.close();
  }
}

it('runs, reports, stops and resumes the all-in-one cluster with its data', async () => {
  const first = await up();
  const clientFile = JSON.parse(await readFile(`${dir.path}/client.json`, 'utf8')) as { clusterId: string; map: string; pools: Array<{ name: string }> };
  expect(clientFile.pools.map((p) => p.name)).toEqual(['rep', 'ec']);
  expect((await stat(`${dir.path}/client.json`)).mode & 0o077).toBe(0);
  const status = await run(['status', '--data', dir.path]);
  expect(status.code).toBe(0);
  expect(status.stdout.match(/: up,/g)).toHaveLength(6);
  await withClient(clientFile.map, (c) => c.put('rep', 'hello', Buffer.from('world')));
  expect(await stop(first.child)).toBe(0);
  const down = await run(['status', '--data', dir.path]);
  expect(down.code).toBe(1);
  const second = await up();
  expect(second.output[0]).toContain(clientFile.clusterId);
  expect((await withClient(clientFile.map, (c) => c.read('rep', 'hello'))).toString()).toBe('world');
  expect(await stop(second.child)).toBe(0);
}, 120_000);
