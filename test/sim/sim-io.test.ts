/**
 * The simulation's seams on their own (test/sim): the virtual clock runs
 * events in time order and jumps over idle time; the simulated disk loses
 * unsynced writes and unsynced directory entries on crash() and keeps
 * O_DSYNC writes and synced ones; the simulated network holds bytes across
 * a cut until it heals, and a killed process's peer sees its connection end.
 */
import { expect, it } from 'vitest';
import type { Duplex } from 'node:stream';
import { seededRng } from '../helpers/random.js';
import { simClock } from './clock.js';
import { SimDisk } from './fs.js';
import { SimNetwork } from './net.js';
import { Scheduler, SimProcess } from './scheduler.js';

it('runs timers in time order, jumping over idle time, and drops a dead process\'s timers', async () => {
  const sched = new Scheduler();
  const p = new SimProcess('p', 'h');
  const q = new SimProcess('q', 'h');
  const clock = simClock(sched, p);
  const seen: string[] = [];
  clock.setTimeout(() => seen.push(`b@${clock.monotonicMs()}`), 5000);
  clock.setTimeout(() => seen.push(`a@${clock.monotonicMs()}`), 10);
  const cancelled = clock.setTimeout(() => seen.push('cancelled'), 20);
  clock.clearTimeout(cancelled);
  simClock(sched, q).setTimeout(() => seen.push('dead'), 30);
  sched.kill(q);
  const abort = new AbortController();
  const aborted = clock.sleep(1_000_000, abort.signal).catch((err: Error) => err.name);
  clock.setTimeout(() => abort.abort(), 100);
  const done = (async () => {
    await clock.sleep(6000);
    return clock.monotonicMs();
  })();
  expect(await sched.runUntil(done, 'sleep')).toBe(6000);
  expect(await aborted).toBe('AbortError');
  expect(seen).toEqual(['a@10', 'b@5000']);
});

it('a paused process\'s timers wait for it to resume', async () => {
  const sched = new Scheduler();
  const p = new SimProcess('p', 'h');
  const clock = simClock(sched, p);
  const fired: number[] = [];
  clock.setTimeout(() => fired.push(clock.monotonicMs()), 10);
  p.paused = true;
  const harness = new SimProcess('harness', 'h');
  const resumeLater = new Promise<void>((resolve) =>
    sched.schedule(
      500,
      () => {
        sched.resume(p);
        resolve();
      },
      harness,
    ),
  );
  await sched.runUntil(resumeLater, 'resume');
  await sched.runUntil(new Promise((r) => sched.schedule(1, () => r(undefined), harness)), 'after');
  expect(fired).toEqual([500]);
});

it('the simulated disk loses unsynced writes and directory entries on crash, keeps synced ones', async () => {
  const sched = new Scheduler();
  const p = new SimProcess('p', 'h');
  // Keep nothing unsynced, so the outcome is exact.
  const disk = new SimDisk('d', sched, seededRng(1), { capacityBytes: 1 << 20, keepUnsyncedProbability: 0 });
  const fs = disk.view(p);
  const run = <T>(x: Promise<T>): Promise<T> => sched.runUntil(x, 'fs');
  await run(fs.mkdir('/a/seg'));
  const synced = await run(fs.open('/a/seg/1', 'create', { syncWrites: true }));
  await run(synced.writev([Buffer.from('durable')], 0));
  await run(fs.syncDir('/a/seg'));
  const plain = await run(fs.open('/a/seg/1', 'readWrite'));
  await run(plain.writev([Buffer.from('XX')], 0)); // unsynced, over synced bytes
  const later = await run(fs.open('/a/seg/2', 'create'));
  await run(later.writev([Buffer.from('never synced dir entry')], 0));
  await run(later.datasync()); // the data is durable, the entry in /a/seg is not
  await run(fs.writeFileAtomic('/a/super', Buffer.from('atomic')));
  expect((await run(fs.readFile('/a/seg/1'))).toString()).toBe('XXrable');
  disk.crash();
  const q = new SimProcess('q', 'h');
  const after = disk.view(q);
  expect((await sched.runUntil(after.readFile('/a/seg/1'), 'read'))).toEqual(Buffer.from('durable'));
  expect(await sched.runUntil(after.readdir('/a/seg'), 'readdir')).toEqual(['1']);
  expect((await sched.runUntil(after.readFile('/a/super'), 'read')).toString()).toBe('atomic');
  await expect(sched.runUntil(after.open('/a/seg/2', 'read'), 'open')).rejects.toMatchObject({ code: 'ENOENT' });
});

it('the simulated network holds bytes across a cut until it heals; a killed peer ends the connection', async () => {
  const sched = new Scheduler();
  const net = new SimNetwork(sched, seededRng(7));
  const server = new SimProcess('server', 'h1');
  const client = new SimProcess('client', 'h2');
  const harness = new SimProcess('harness', 'h3');
  const received: Buffer[] = [];
  let serverSide: Duplex | null = null;
  const listener = await sched.runUntil(
    net.view(server).listen({ host: 'h1', port: 0 }, (s) => {
      serverSide = s;
      s.on('data', (b: Buffer) => received.push(b));
    }),
    'listen',
  );
  const sock = await sched.runUntil(net.view(client).connect({ host: 'h1', port: listener.port }), 'connect');
  const wait = (ms: number): Promise<void> => sched.runUntil(new Promise((r) => sched.schedule(ms, () => r(), harness)), 'wait');
  net.cut('h1', 'h2');
  sock.write(Buffer.from('hello across a cut'));
  await wait(60_000);
  expect(Buffer.concat(received).length).toBe(0);
  net.heal('h1', 'h2');
  await wait(100);
  expect(Buffer.concat(received).toString()).toBe('hello across a cut');
  sock.resume(); // 'end' is emitted once the reader has consumed the stream, as with a real socket
  const ended = new Promise<string>((resolve) => {
    sock.on('end', () => resolve('end'));
    sock.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
  sched.kill(server);
  net.kill(server);
  expect(await sched.runUntil(ended, 'end')).toBe('end');
  expect(serverSide).not.toBeNull();
  await expect(sched.runUntil(net.view(client).connect({ host: 'h1', port: listener.port }), 'reconnect')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
});
