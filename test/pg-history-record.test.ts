/**
 * The pg history record's neverWritable flag (peering.ts intervalRecord):
 * kept by the embedded registry across a reopen, carried over rpc (a record
 * without it is the format before it), refused when malformed.
 */
import { expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
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
