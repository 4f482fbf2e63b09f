/**
 * `tessera up` as a user runs it: starts one daemon per disk on a fresh data
 * directory, writes the owner-only client file, `tessera status` reports every
 * daemon up; SIGINT stops them all; a second `up` on the same directory
 * resumes the same cluster with its data.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { systemIo } from '../src/io/system.js';
import { StoreClient } from '../src/protocol/store-client.js';
import { createTcpClient } from '../src/rpc/index.js';
import { makeTempDir } from './helpers/tmp.js';
import { tesseraBin } from './helpers/daemon-process.js';

let dir: Awaited<ReturnType<typeof makeTempDir>>;
const started: ChildProcess[] = [];
const basePort = 20_000 + (process.pid % 2000) * 8;

beforeAll(async () => {
  dir = await makeTempDir('up');
});
afterAll(async () => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await dir.remove();
});

function up(): Promise<{ child: ChildProcess; output: string[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [tesseraBin, 'up', '--data', dir.path, '--disks', '3', '--base-port', String(basePort)], { stdio: ['ignore', 'pipe', 'pipe'] });
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

it('starts, reports, stops and resumes an all-in-one set of daemons', async () => {
  const first = await up();
  const clientFile = JSON.parse(await readFile(`${dir.path}/client.json`, 'utf8')) as { clusterId: string; daemons: Array<{ address: string }> };
  expect(clientFile.daemons).toHaveLength(3);
  expect((await stat(`${dir.path}/client.json`)).mode & 0o077).toBe(0);
  const status = await run(['status', '--data', dir.path]);
  expect(status.code).toBe(0);
  expect(status.stdout.match(/: up,/g)).toHaveLength(3);
  const port = Number(clientFile.daemons[0]!.address.split(':')[1]);
  const client = new StoreClient(createTcpClient({ io: systemIo(), host: '127.0.0.1', port }));
  await client.transact([{ type: 'writeFull', id: { ns: 1, name: 'hello' }, data: Buffer.from('world') }]);
  await client.close();
  expect(await stop(first.child)).toBe(0);
  const down = await run(['status', '--data', dir.path]);
  expect(down.code).toBe(1);
  expect(down.stdout).toMatch(/DOWN/);
  const second = await up();
  expect(second.output[0]).toContain(clientFile.clusterId);
  const again = new StoreClient(createTcpClient({ io: systemIo(), host: '127.0.0.1', port }));
  expect((await again.read({ ns: 1, name: 'hello' })).toString()).toBe('world');
  await again.close();
  expect(await stop(second.child)).toBe(0);
});
