/**
 * The storage daemon as a process: bad input on the wire (garbage, truncated
 * and oversized frames from raw sockets; well-formed frames with malformed
 * headers) closes or fails only that connection or request, never the daemon;
 * SIGTERM drains what is in flight and exits cleanly; a second daemon on the
 * same disk, or a daemon told the wrong cluster, fails with a clear message.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { systemIo } from '../src/io/system.js';
import { StoreClient } from '../src/protocol/store-client.js';
import { StoreOpcode } from '../src/protocol/store-messages.js';
import { createTcpClient } from '../src/rpc/index.js';
import { isTesseraError } from '../src/lib/errors.js';
import { makeTempDir } from './helpers/tmp.js';
import { killAllDaemons, startDaemonProcess, tesseraBin, type DaemonProcess } from './helpers/daemon-process.js';

const io = systemIo();
let dir: Awaited<ReturnType<typeof makeTempDir>>;
let daemon: DaemonProcess;
let client: StoreClient;

beforeAll(async () => {
  dir = await makeTempDir('dlife');
  daemon = await startDaemonProcess({ diskPath: `${dir.path}/disk`, clusterId: 'life', diskId: 3 });
  client = new StoreClient(createTcpClient({ io, host: '127.0.0.1', port: daemon.port }));
});
afterAll(async () => {
  await client?.close();
  await killAllDaemons();
  await dir?.remove();
});

/** Sends bytes on a fresh raw connection; resolves true if the daemon closed it within 5 s. */
function sendRaw(chunks: Buffer[], endAfter = false): Promise<boolean> {
  return new Promise((resolve) => {
    const socket: Socket = connect({ host: '127.0.0.1', port: daemon.port }, () => {
      for (const c of chunks) socket.write(c);
      if (endAfter) socket.end();
    });
    socket.on('error', () => undefined);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(false);
    }, 5000);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

function prefix(fields: { magic?: number; headerBytes: number; payloadBytes: number }): Buffer {
  const p = Buffer.alloc(32);
  p.writeUInt32LE(fields.magic ?? 0x41525354, 0);
  p[4] = 1;
  p[5] = 1;
  p.writeUInt16LE(StoreOpcode.transact, 6);
  p.writeUInt32LE(1, 8);
  p.writeUInt32LE(fields.headerBytes, 16);
  p.writeUInt32LE(fields.payloadBytes, 20);
  return p;
}

it('survives garbage, truncated and oversized frames, and keeps serving others', async () => {
  const value = randomBytes(100_000);
  await client.transact([{ type: 'writeFull', id: { ns: 1, name: 'keep' }, data: value }]);
  const attacks: Array<Promise<boolean>> = [];
  for (let i = 0; i < 20; i++) attacks.push(sendRaw([randomBytes(32 + Math.floor(Math.random() * 4096))])); // a full prefix's worth at least
  attacks.push(sendRaw([prefix({ headerBytes: 10, payloadBytes: 4000 }).subarray(0, 20)], true)); // truncated prefix
  attacks.push(sendRaw([prefix({ headerBytes: 10, payloadBytes: 4000 }), randomBytes(100)], true)); // truncated body
  attacks.push(sendRaw([prefix({ headerBytes: 10, payloadBytes: 0xffff_fff0 })])); // absurd size: never allocated
  attacks.push(sendRaw([prefix({ headerBytes: 0x7fff_ffff, payloadBytes: 0 })]));
  attacks.push(sendRaw([prefix({ magic: 0xdeadbeef, headerBytes: 0, payloadBytes: 0 })]));
  // while under attack, a well-behaved client keeps reading and writing
  for (let i = 0; i < 20; i++) {
    await client.transact([{ type: 'writeFull', id: { ns: 1, name: `during-${i}` }, data: randomBytes(5000) }]);
    expect((await client.read({ ns: 1, name: 'keep' })).equals(value)).toBe(true);
  }
  const closed = await Promise.all(attacks);
  expect(closed.every(Boolean)).toBe(true);
  expect(daemon.child.exitCode).toBe(null);
  expect((await client.ping()).diskId).toBe(3);
});

it('answers well-formed frames with malformed headers with an error and changes nothing', async () => {
  const rpc = createTcpClient({ io, host: '127.0.0.1', port: daemon.port });
  const before = await client.statfs();
  let errors = 0;
  for (const op of Object.values(StoreOpcode)) {
    if (op === StoreOpcode.ping || op === StoreOpcode.statfs) continue;
    for (let i = 0; i < 30; i++) {
      try {
        await rpc.call(op, randomBytes(Math.floor(Math.random() * 200)), [randomBytes(Math.floor(Math.random() * 100))]);
      } catch (err) {
        expect(isTesseraError(err)).toBe(true);
        errors++;
      }
    }
  }
  await expect(rpc.call(999, Buffer.alloc(0), [])).rejects.toMatchObject({ code: 'NotSupported' });
  await rpc.close();
  expect(errors).toBeGreaterThan(150);
  const after = await client.statfs();
  expect(after.objects).toBe(before.objects);
  expect(after.logicalBytes).toBe(before.logicalBytes);
});

it('refuses a second daemon on the same disk, and a daemon told another cluster', async () => {
  const run = (args: string[]): Promise<{ code: number | null; stderr: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [tesseraBin, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (code) => resolve({ code, stderr }));
    });
  const second = await run(['daemon', '--disk', `${dir.path}/disk`, '--listen', '127.0.0.1:0']);
  expect(second.code).toBe(1);
  expect(second.stderr).toMatch(/in use by another process/);
  expect((await client.ping()).diskId).toBe(3);
  const other = await startDaemonProcess({ diskPath: `${dir.path}/other`, clusterId: 'x', diskId: 0 });
  await other.stop();
  const wrong = await run(['daemon', '--disk', `${dir.path}/other`, '--listen', '127.0.0.1:0', '--cluster-id', 'y', '--disk-id', '0']);
  expect(wrong.code).toBe(1);
  expect(wrong.stderr).toMatch(/WrongCluster: .* belongs to cluster x, not y/);
});

it('drains writes in flight on SIGTERM and exits cleanly; they are all there after restart', async () => {
  const results = await (async () => {
    const writes = Array.from({ length: 64 }, (_, i) =>
      client.transact([{ type: 'writeFull', id: { ns: 2, name: `drain-${i}` }, data: Buffer.alloc(64 * 1024, i) }]).then(
        () => 'ok' as const,
        (err: unknown) => (isTesseraError(err) ? err.code : 'other'),
      ),
    );
    await new Promise((r) => setTimeout(r, 5));
    const code = await daemon.stop();
    expect(code).toBe(0);
    return Promise.all(writes);
  })();
  for (const r of results) expect(['ok', 'Closed', 'Unavailable']).toContain(r);
  await client.close();
  daemon = await startDaemonProcess({ diskPath: `${dir.path}/disk` });
  client = new StoreClient(createTcpClient({ io, host: '127.0.0.1', port: daemon.port }));
  for (let i = 0; i < 64; i++) {
    if (results[i] !== 'ok') continue;
    expect((await client.read({ ns: 2, name: `drain-${i}` })).equals(Buffer.alloc(64 * 1024, i))).toBe(true);
  }
  expect(results.filter((r) => r === 'ok').length).toBeGreaterThan(0);
});
