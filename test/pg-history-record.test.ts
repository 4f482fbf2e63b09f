/**
 * The pg history record's neverWritable flag (peering.ts intervalRecord):
 * kept by the embedded registry across a reopen, carried over rpc (a record
 * without it is the format before it), refused when malformed. And a put
 * the embedded registry cannot write fails and is not seen by readers.
 */
import { expect, it } from 'vitest';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { systemIo } from '../src/io/system.js';
import { createInProcessTransport } from '../src/rpc/inprocess.js';
import { EmbeddedPgHistory, PgHistoryClient, pgHistoryHandler } from '../cluster/pg-history.js';
import { makeTempDir } from './helpers/tmp.js';

const io = systemIo();

it('keeps neverWritable across a reopen and over rpc, and only when true', async () => {
  const dir = await makeTempDir('pg-history');
  try {
    const embedded = await EmbeddedPgHistory.open(io, dir.path);
    const client = new PgHistoryClient(createInProcessTransport(pgHistoryHandler(embedded), { io }));
    await client.put(1, 0, null, { epoch: 3, acting: [2], neverWritable: true });
    await client.put(1, 1, null, { epoch: 3, acting: [2, 0, 1] });
    expect(await client.get(1, 0)).toEqual({ epoch: 3, acting: [2], neverWritable: true });
    expect(await client.get(1, 1)).toEqual({ epoch: 3, acting: [2, 0, 1] });
    await client.put(1, 0, 3, { epoch: 5, acting: [2, 0, 1] });
    expect(await client.get(1, 0)).toEqual({ epoch: 5, acting: [2, 0, 1] });
    await client.put(1, 2, null, { epoch: 4, acting: [1, -1], neverWritable: true });
    await embedded.close();

    const reopened = await EmbeddedPgHistory.open(io, dir.path);
    expect(await reopened.get(1, 2)).toEqual({ epoch: 4, acting: [1, -1], neverWritable: true });
    expect(await reopened.get(1, 0)).toEqual({ epoch: 5, acting: [2, 0, 1] });
    await reopened.close();

    // A flag that is not true is a corrupt file, not a record that binds nothing.
    await writeFile(join(dir.path, 'pg-history.json'), JSON.stringify({ '1.0': { epoch: 5, acting: [2], neverWritable: false } }));
    await expect(EmbeddedPgHistory.open(io, dir.path)).rejects.toMatchObject({ code: 'Corrupt' });
  } finally {
    await dir.remove();
  }
});

it('a put whose file write fails is not seen by readers, and the next put writes', async () => {
  const dir = await makeTempDir('pg-history');
  try {
    const history = await EmbeddedPgHistory.open(io, dir.path);
    await history.put(1, 0, null, { epoch: 3, acting: [0, 1, 2] });
    // The file's place taken by a directory: the atomic rename onto it fails.
    const file = join(dir.path, 'pg-history.json');
    await rm(file);
    await mkdir(file);
    await writeFile(join(file, 'x'), 'x');
    await expect(history.put(1, 0, 3, { epoch: 5, acting: [0, 1] })).rejects.toThrow();
    await expect(history.put(1, 1, null, { epoch: 5, acting: [2] })).rejects.toThrow();
    expect(await history.get(1, 0)).toEqual({ epoch: 3, acting: [0, 1, 2] });
    expect(await history.get(1, 1)).toBeNull();
    await rm(file, { recursive: true });
    await history.put(1, 0, 3, { epoch: 6, acting: [0, 1] });
    await history.close();
    const reopened = await EmbeddedPgHistory.open(io, dir.path);
    expect(await reopened.get(1, 0)).toEqual({ epoch: 6, acting: [0, 1] });
    expect(await reopened.get(1, 1)).toBeNull();
    await reopened.close();
  } finally {
    await dir.remove();
  }
});
