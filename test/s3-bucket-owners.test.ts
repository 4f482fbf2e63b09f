/**
 * ListBuckets from the per-owner index of the bucket registry
 * (gateways/s3/meta/bucket-owners.ts), against real gateways on a real
 * cluster (startS3Env) through @aws-sdk/client-s3:
 * - many buckets of two users, names interleaved: each user lists exactly
 *   its own, page by page (max-buckets, continuation-token, prefix), and a
 *   ListBuckets reads only the caller's index entries (every omapList and
 *   omapGet of the registry object is counted, with the entries it
 *   returned);
 * - deletes and a name recreated by the other user move between the lists;
 * - a cluster written before the index (its entries and marker removed, one
 *   stale entry and one of the wrong owner added, as a gateway of the
 *   previous version could leave): listings are right before the index is
 *   built (a scan of the records) and after (only the caller's entries),
 *   and the build leaves exactly one entry per record, also while buckets
 *   are created and deleted concurrently with it;
 * - a `tessera s3` process killed (SIGKILL) in the middle of concurrent
 *   creates and deletes: the index equals the records, and every
 *   acknowledged create is listed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { CreateBucketCommand, DeleteBucketCommand, ListBucketsCommand, S3Client, paginateListBuckets } from '@aws-sdk/client-s3';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';
import { tesseraBin } from './helpers/daemon-process.js';
import { BucketStore, type BucketRecord } from '../gateways/s3/meta/buckets.js';
import { ownerKey } from '../gateways/s3/meta/bucket-owners.js';

let env: S3TestEnv;
let a: S3Client;
let b: S3Client;
let userB: string;
const children = new Set<ChildProcess>();
/** Registry reads while counting: [op, entries returned]. */
let registryReads: Array<[string, number]> | null = null;

beforeAll(async () => {
  env = await startS3Env();
  a = env.s3();
  const someone = await env.gateway.services.users.create({ displayName: 'b' });
  userB = someone.userId;
  b = env.s3(await env.gateway.services.users.addKey(someone.userId));
  const client = env.cluster.client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const omapList = client.omapList!.bind(client);
  client.omapList = async (...args: unknown[]) => {
    const page = (await omapList(...args)) as { entries: unknown[] };
    if (args[1] === 's3.buckets') registryReads?.push(['omapList', page.entries.length]);
    return page;
  };
  const omapGet = client.omapGet!.bind(client);
  client.omapGet = async (...args: unknown[]) => {
    const values = (await omapGet(...args)) as unknown[];
    if (args[1] === 's3.buckets') registryReads?.push(['omapGet', values.filter((v) => v !== undefined).length]);
    return values;
  };
}, 120_000);
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await env?.stop();
});

/** Every bucket name the client lists, through the SDK's paginator. */
async function listed(client: S3Client, pageSize: number): Promise<string[]> {
  const out: string[] = [];
  for await (const page of paginateListBuckets({ client, pageSize }, {})) out.push(...(page.Buckets ?? []).map((x) => x.Name!));
  return out;
}

/** Entries of the registry object read by run(). */
async function entriesRead(run: () => Promise<unknown>): Promise<number> {
  registryReads = [];
  try {
    await run();
    return registryReads.reduce((n, [, entries]) => n + entries, 0);
  } finally {
    registryReads = null;
  }
}

/** The registry as stored: every record, and every owner entry key. */
async function registry(): Promise<{ records: BucketRecord[]; entries: string[]; built: boolean }> {
  const records: BucketRecord[] = [];
  const entries: string[] = [];
  let built = false;
  let after: Buffer | undefined;
  for (;;) {
    const page = await env.cluster.client.omapList('rep', 's3.buckets', { limit: 1000, ...(after ? { afterKey: after } : {}) });
    for (const [k, v] of page.entries) {
      const key = k.toString('utf8');
      if (key === '~owner-index') built = true;
      else if (key.startsWith('~owner/')) entries.push(key);
      else records.push(JSON.parse(v.toString('utf8')) as BucketRecord);
    }
    if (!page.more || page.entries.length === 0) break;
    after = page.entries[page.entries.length - 1]![0];
  }
  return { records, entries, built };
}

/** The index holds exactly one entry per record, under its owner. */
async function expectIndexMatchesRecords(): Promise<BucketRecord[]> {
  const { records, entries, built } = await registry();
  expect(built).toBe(true);
  expect([...entries].sort()).toEqual(records.map((r) => ownerKey(r.owner, r.name)).sort());
  return records;
}

const namesOf = (records: BucketRecord[], owner: string): string[] => records.filter((r) => r.owner === owner).map((r) => r.name).sort();

describe('ListBuckets from the owner index', () => {
  const mine: string[] = [];
  const theirs: string[] = [];

  it('lists each of two users exactly its own buckets, paged, reading only its entries', async () => {
    for (let i = 0; i < 60; i++) {
      const name = `own-${String(i).padStart(2, '0')}`;
      const toB = i % 3 === 0;
      await (toB ? b : a).send(new CreateBucketCommand({ Bucket: name }));
      (toB ? theirs : mine).push(name);
    }
    const aAll = await listed(a, 7);
    expect(aAll).toEqual([...mine].sort());
    expect(await listed(b, 3)).toEqual([...theirs].sort());
    const page = await a.send(new ListBucketsCommand({ MaxBuckets: 5, Prefix: 'own-1' }));
    expect(page.Buckets?.map((x) => x.Name)).toEqual(['own-10', 'own-11', 'own-13', 'own-14', 'own-16']);
    const next = await a.send(new ListBucketsCommand({ MaxBuckets: 5, Prefix: 'own-1', ContinuationToken: page.ContinuationToken }));
    expect(next.Buckets?.map((x) => x.Name)).toEqual(['own-17', 'own-19']);
    expect(next.ContinuationToken).toBeUndefined();
    expect(next.Buckets?.every((x) => x.CreationDate instanceof Date && x.BucketRegion === 'us-east-1')).toBe(true);

    // B has 20 buckets among 60: its listing reads its 20 entries (and the marker), not the 60 records.
    expect(await entriesRead(() => b.send(new ListBucketsCommand({})))).toBeLessThanOrEqual(theirs.length + 1);
    expect(await entriesRead(() => b.send(new ListBucketsCommand({ MaxBuckets: 4 })))).toBeLessThanOrEqual(4 + 1 + 1);
    await expectIndexMatchesRecords();
  });

  it('moves deleted and recreated buckets between the lists', async () => {
    for (const name of ['own-01', 'own-02', 'own-04']) await a.send(new DeleteBucketCommand({ Bucket: name }));
    await b.send(new CreateBucketCommand({ Bucket: 'own-02' }));
    await b.send(new DeleteBucketCommand({ Bucket: 'own-00' }));
    expect(await listed(a, 100)).toEqual(mine.filter((n) => !['own-01', 'own-02', 'own-04'].includes(n)).sort());
    expect(await listed(b, 100)).toEqual([...theirs.filter((n) => n !== 'own-00'), 'own-02'].sort());
    await expectIndexMatchesRecords();
  });

  it('lists a cluster written before the index, builds it (stale entries removed), also against concurrent creates and deletes', async () => {
    const before = await registry();
    // As an older version left the registry: no entries, no marker; then what its deletes and creates racing an index could leave.
    await env.cluster.client.transact('rep', 's3.buckets', [{ type: 'omapRemoveRange', startKey: Buffer.from('~'), endKey: Buffer.from([0x7f]) }]);
    const stale = ownerKey(env.userId, 'gone-bucket');
    const wrongOwner = ownerKey(userB, 'own-03'); // own-03 is A's
    await env.cluster.client.transact('rep', 's3.buckets', [
      { type: 'omapSet', entries: [[Buffer.from(stale), Buffer.from('{"id":"x","createdMs":1}')], [Buffer.from(wrongOwner), Buffer.from('{"id":"y","createdMs":1}')]] },
    ]);
    const legacy = new BucketStore(env.cluster.io, env.cluster.client, 'rep');
    expect(await legacy.isOwnerIndexBuilt()).toBe(false);
    const viaLegacy: string[] = [];
    for await (const x of legacy.listOwned(env.userId)) viaLegacy.push(x.name);
    expect(viaLegacy).toEqual(namesOf(before.records, env.userId));

    // A gateway started now builds the index; meanwhile buckets come and go through it and the first.
    const other = await env.gatewayWith();
    try {
      const churn = (async () => {
        for (let i = 0; i < 10; i++) {
          await a.send(new CreateBucketCommand({ Bucket: `churn-${i}` }));
          if (i % 2 === 0) await a.send(new DeleteBucketCommand({ Bucket: `churn-${i}` }));
        }
      })();
      const [stats] = await Promise.all([other.services.buckets.buildOwnerIndex(), churn, legacy.buildOwnerIndex()]);
      expect(stats.records).toBeGreaterThan(0);
      const records = await expectIndexMatchesRecords();
      expect(namesOf(records, env.userId)).toEqual([...namesOf(before.records, env.userId), 'churn-1', 'churn-3', 'churn-5', 'churn-7', 'churn-9'].sort());
      const viaOther = new S3Client({ endpoint: `http://127.0.0.1:${other.port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }, maxAttempts: 1 });
      try {
        expect(await listed(viaOther, 9)).toEqual(namesOf(records, env.userId));
        expect(await listed(b, 9)).toEqual(namesOf(records, userB));
        expect(await entriesRead(() => b.send(new ListBucketsCommand({})))).toBeLessThanOrEqual(namesOf(records, userB).length + 1);
      } finally {
        viaOther.destroy();
      }
    } finally {
      await other.close();
    }
  });
});

describe('a gateway killed among creates and deletes', () => {
  it('leaves the index equal to the records, every acknowledged create listed', async () => {
    const child = spawn(process.execPath, [tesseraBin, 's3', '--map', `127.0.0.1:${env.cluster.mapd.port}`, '--listen', '127.0.0.1:0', '--meta-pool', 'rep', '--data-pool', 'rep'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (!line.startsWith('{')) return;
        const e = JSON.parse(line) as { event?: string; port?: number };
        if (e.event === 'listening') resolve(e.port!);
      });
      void exited.then(() => reject(new Error('tessera s3 exited before listening')));
    });
    const viaChild = new S3Client({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }, maxAttempts: 1 });
    const acknowledged = new Set<string>();
    const deleted = new Set<string>();
    let done = 0;
    let killed = false;
    // Four writers; the process is killed when the 40th request is answered, with others in flight.
    const writer = async (w: number): Promise<void> => {
      for (let i = 0; !killed; i++) {
        const name = `kill-${w}-${i}`;
        try {
          await viaChild.send(new CreateBucketCommand({ Bucket: name }));
          acknowledged.add(name);
          if (i % 3 === 1) {
            await viaChild.send(new DeleteBucketCommand({ Bucket: name }));
            deleted.add(name);
          }
        } catch {
          return; // the process is gone
        }
        if (++done === 40) {
          killed = true;
          child.kill('SIGKILL');
        }
      }
    };
    try {
      await Promise.all([0, 1, 2, 3].map(writer));
      await exited;
    } finally {
      viaChild.destroy();
    }
    const records = await expectIndexMatchesRecords();
    const listedNow = (await listed(a, 50)).filter((n) => n.startsWith('kill-'));
    expect(listedNow).toEqual(namesOf(records, env.userId).filter((n) => n.startsWith('kill-')));
    for (const name of acknowledged) if (!deleted.has(name)) expect(listedNow).toContain(name);
    for (const name of deleted) expect(listedNow).not.toContain(name);
  });
});
