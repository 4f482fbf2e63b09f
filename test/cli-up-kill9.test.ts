/**
 * `tessera up` killed with kill -9 (or crashing) leaves no process behind:
 * every child it started (storage daemons, S3 gateway; with --etcd the map
 * daemons, started the same way) has as stdin a pipe only up holds, and stops
 * as on SIGTERM once that pipe closes (src/bin/tessera.ts). Before, they kept
 * running, holding their ports and disks, and the next `up` could not start.
 *
 * How: up with 1 host and 1 disk on free ports; its children read from
 * /proc once it printed its summary; kill -9 of up; each child must be gone
 * (or a zombie waiting for init) within 60 s. Children still running at the
 * end are killed by PID.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { tesseraBin } from './helpers/daemon-process.js';
import { makeTempDir } from './helpers/tmp.js';
import { sleep } from './helpers/wait.js';

let dir: Awaited<ReturnType<typeof makeTempDir>>;
let upChild: ChildProcess | null = null;
let childPids: number[] = [];
const basePort = 10_000 + (process.pid % 500) * 16;

/** Whether a process runs (a zombie, exited and waiting to be reaped, does not). */
async function running(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  return stat !== null && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
}

beforeAll(async () => {
  dir = await makeTempDir('up-kill9');
});
afterAll(async () => {
  if (upChild && upChild.exitCode === null && upChild.signalCode === null) upChild.kill('SIGKILL');
  for (const pid of childPids) if (await running(pid)) process.kill(pid, 'SIGKILL');
  await dir.remove();
});

it('kill -9 of tessera up: every process it started stops', async () => {
  const args = [tesseraBin, 'up', '--data', dir.path, '--hosts', '1', '--disks-per-host', '1', '--base-port', String(basePort), '--map-port', String(basePort + 6), '--s3-port', '0', '--pgs', '4'];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  upChild = child;
  const output: string[] = [];
  child.stderr!.on('data', (b: Buffer) => output.push(b.toString()));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line);
      if (line.startsWith('Ctrl-C')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`tessera up exited ${code}: ${output.join('\n')}`)));
  });
  childPids = (await readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8')).trim().split(/\s+/).map(Number);
  // The storage daemon and the S3 gateway.
  expect(childPids.length, output.join('\n')).toBeGreaterThanOrEqual(2);
  child.kill('SIGKILL');
  const deadlineMs = Date.now() + 60_000;
  let left = childPids;
  while (Date.now() < deadlineMs) {
    left = (await Promise.all(childPids.map(async (pid) => ((await running(pid)) ? pid : null)))).filter((p): p is number => p !== null);
    if (left.length === 0) break;
    await sleep(200);
  }
  expect(left, `children of the killed up still running (of ${childPids.join(',')})`).toEqual([]);
}, 180_000);
