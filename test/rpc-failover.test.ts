/**
 * FailoverRpcClient (src/rpc/failover.ts) over real TCP servers on loopback:
 * calls go to the first server while it answers; once it is closed, an
 * idempotent call is sent again to the next server within the same call and
 * the client stays there (onSwitch told once); a call that is not idempotent
 * fails (it may have reached the server) but the next call goes to the next
 * server; an error answered by a server is returned as it is, without
 * failover; with every server gone a call fails Unavailable after one round.
 */
import { afterEach, expect, it } from 'vitest';
import { systemIo } from '../src/io/system.js';
import { TesseraError, isTesseraError } from '../src/lib/errors.js';
import { FailoverRpcClient, createTcpClient, createTcpServer } from '../src/rpc/index.js';
import type { RpcServer } from '../src/rpc/types.js';

const io = systemIo();
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** A server that answers op 1 with its own name and op 2 with NotFound. */
async function server(name: string): Promise<RpcServer> {
  const s = await createTcpServer({
    io,
    host: '127.0.0.1',
    port: 0,
    handler: async (request) => {
      if (request.op === 2) throw new TesseraError('NotFound', `${name}: no such thing`);
      return { header: Buffer.from(name) };
    },
  });
  return s;
}

async function setup(count: number): Promise<{ servers: RpcServer[]; client: FailoverRpcClient; switches: string[] }> {
  const servers: RpcServer[] = [];
  for (let i = 0; i < count; i++) servers.push(await server(`s${i}`));
  const switches: string[] = [];
  const client = new FailoverRpcClient({
    clock: io.clock,
    clients: servers.map((s) => createTcpClient({ io, host: '127.0.0.1', port: s.port })),
    names: servers.map((_, i) => `s${i}`),
    onSwitch: (from, to, cause) => switches.push(`${from}->${to}:${cause.code}`),
  });
  cleanups.push(() => client.close(), ...servers.map((s) => () => s.close({ drainTimeoutMs: 100 })));
  return { servers, client, switches };
}

const ask = async (client: FailoverRpcClient, idempotent: boolean): Promise<string> =>
  (await client.call(1, Buffer.alloc(0), [], { idempotent, timeoutMs: 5_000 })).header.toString();

it('moves on from a closed server, resending idempotent calls at once, and stays there', async () => {
  const { servers, client, switches } = await setup(3);
  expect(await ask(client, true)).toBe('s0');
  await servers[0]!.close({ drainTimeoutMs: 100 });
  expect(await ask(client, true)).toBe('s1');
  expect(await ask(client, false)).toBe('s1');
  expect(switches).toEqual([expect.stringMatching(/^s0->s1:(Unavailable|Closed)$/)]);
  expect(client.currentName).toBe('s1');
});

it('fails a call that is not idempotent, then sends the next one to the next server', async () => {
  const { servers, client } = await setup(2);
  expect(await ask(client, false)).toBe('s0');
  await servers[0]!.close({ drainTimeoutMs: 100 });
  const failed = await ask(client, false).catch((err: unknown) => err);
  expect(isTesseraError(failed, 'Unavailable') || isTesseraError(failed, 'Closed')).toBe(true);
  expect(await ask(client, false)).toBe('s1');
});

it("returns a server's own error without failover", async () => {
  const { client, switches } = await setup(2);
  await expect(client.call(2, Buffer.alloc(0), [], { idempotent: true })).rejects.toMatchObject({ code: 'NotFound', message: expect.stringContaining('s0') });
  expect(switches).toEqual([]);
});

it('fails Unavailable after one round when every server is gone', async () => {
  const { servers, client, switches } = await setup(2);
  expect(await ask(client, true)).toBe('s0');
  for (const s of servers) await s.close({ drainTimeoutMs: 100 });
  const failed = await ask(client, true).catch((err: unknown) => err);
  expect(isTesseraError(failed, 'Unavailable') || isTesseraError(failed, 'Closed')).toBe(true);
  expect(switches.length).toBe(2);
});
