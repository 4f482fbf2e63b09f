/**
 * `tessera object put|get|ls|stat|rm`: objects of a pool by name, like
 * `rados`: whole objects up to limits.objectSizeBytesMax (128 MiB) each,
 * through the client library (src/client/client.ts), with no striping
 * (objects S3 wrote are striped: their pieces show up here as they are).
 *
 * put reads a file, or standard input for `-`; get writes a file
 * (atomically: a temporary file renamed over it), or standard output for
 * `-` or no file. ls walks every pg of the pool in pages; with --limit it
 * prints one page and the cursor of the next (on stderr, or in --json).
 */
import type { Io } from '../io/io.js';
import { isTesseraError } from '../lib/errors.js';
import { limits } from '../lib/limits.js';
import { CliError, withCluster, type TargetOptions } from './target.js';

type Out = (text: string) => void;
const LIST_PAGE_MAX = 1000;

/** NotFound of an object, in the user's terms (the daemon names its internal namespace). */
async function named<T>(pool: string, name: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (isTesseraError(err, 'NotFound') && !/pool/.test(err.message)) throw new CliError(`no object ${name} in pool ${pool}`);
    throw err;
  }
}

async function readInput(io: Io, file: string): Promise<Buffer> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of process.stdin) {
      total += (chunk as Buffer).length;
      if (total > limits.objectSizeBytesMax) throw new CliError(`standard input is larger than an object may be (${limits.objectSizeBytesMax} bytes)`);
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }
  const st = await io.fs.stat(file);
  if (!st) throw new CliError(`no file ${file}`);
  if (st.sizeBytes > limits.objectSizeBytesMax) throw new CliError(`${file} is ${st.sizeBytes} bytes, larger than an object may be (${limits.objectSizeBytesMax} bytes)`);
  return io.fs.readFile(file);
}

export async function objectPut(t: TargetOptions, o: { pool: string; name: string; file: string }, out: Out): Promise<void> {
  const data = await readInput(t.io, o.file);
  await withCluster(t, async (c) => {
    const v = await (await c.client()).put(o.pool, o.name, data);
    out(`put ${o.pool}/${o.name}: ${data.length} bytes (version ${v.epoch}.${v.version})\n`);
  });
}

export async function objectGet(t: TargetOptions, o: { pool: string; name: string; file?: string }): Promise<void> {
  await withCluster(t, async (c) => {
    const client = await c.client();
    const data = await named(o.pool, o.name, () => client.read(o.pool, o.name));
    if (o.file === undefined || o.file === '-') {
      await new Promise<void>((resolve, reject) => process.stdout.write(data, (err) => (err ? reject(err) : resolve())));
    } else {
      await t.io.fs.writeFileAtomic(o.file, data);
    }
  });
}

export async function objectRemove(t: TargetOptions, o: { pool: string; name: string }, out: Out): Promise<void> {
  await withCluster(t, async (c) => {
    const client = await c.client();
    await named(o.pool, o.name, () => client.stat(o.pool, o.name)); // NotFound for a missing object (removing one would succeed silently)
    await client.remove(o.pool, o.name);
    out(`removed ${o.pool}/${o.name}\n`);
  });
}

export async function objectStat(t: TargetOptions, o: { pool: string; name: string; json: boolean }, out: Out): Promise<void> {
  await withCluster(t, async (c) => {
    const client = await c.client();
    const s = await named(o.pool, o.name, () => client.stat(o.pool, o.name));
    const doc = { pool: o.pool, name: o.name, sizeBytes: s.sizeBytes, mtime: new Date(s.mtimeMs).toISOString(), xattrs: s.xattrCount, version: `${s.version.epoch}.${s.version.version}` };
    out(o.json ? `${JSON.stringify(doc)}\n` : `${o.pool}/${o.name} size ${s.sizeBytes} mtime ${doc.mtime} version ${doc.version} xattrs ${s.xattrCount}\n`);
  });
}

export async function objectList(t: TargetOptions, o: { pool: string; json: boolean; limit?: number; cursor?: string }, out: Out, err: Out): Promise<void> {
  if (o.limit !== undefined && (o.limit < 1 || o.limit > LIST_PAGE_MAX)) throw new CliError(`--limit wants 1..${LIST_PAGE_MAX}`);
  await withCluster(t, async (c) => {
    const client = await c.client();
    client.pool(o.pool); // NotFound before anything is printed
    if (o.limit !== undefined) {
      const page = await client.list(o.pool, { limit: o.limit, ...(o.cursor !== undefined ? { cursor: o.cursor } : {}) });
      if (o.json) return out(`${JSON.stringify({ objects: page.names, ...(page.cursor !== undefined ? { cursor: page.cursor } : {}) })}\n`);
      if (page.names.length > 0) out(`${page.names.join('\n')}\n`);
      if (page.cursor !== undefined) err(`more: --cursor ${page.cursor}\n`);
      return;
    }
    const all: string[] = [];
    let cursor = o.cursor;
    do {
      const page = await client.list(o.pool, { limit: LIST_PAGE_MAX, ...(cursor !== undefined ? { cursor } : {}) });
      if (o.json) all.push(...page.names);
      else if (page.names.length > 0) out(`${page.names.join('\n')}\n`);
      cursor = page.cursor;
    } while (cursor !== undefined);
    if (o.json) out(`${JSON.stringify({ objects: all })}\n`);
  });
}
