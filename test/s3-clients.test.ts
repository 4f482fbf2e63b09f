/**
 * Real S3 client programs against the gateway on a real cluster
 * (startS3Env: six daemon processes, the gateway in this process): the aws
 * CLI (every installation found: Debian's awscli and any other on PATH, since
 * newer botocore sends CRC trailers by default) with `s3 mb/cp/ls/sync/rm`
 * and `s3api put-object/get-object/head-object/list-objects-v2/delete-object`;
 * rclone and s3cmd syncing a directory tree of thousands of small files up
 * and back down, then changes and deletions both ways, compared byte-exact
 * (sha256 of every file) and against the bucket listing. Each tool runs with
 * its configuration in temporary files and talks to 127.0.0.1 only. A tool
 * that is not installed skips its tests with a loud warning.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DeleteObjectsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';
import { makeTempDir } from './helpers/tmp.js';
import { seededRng, testSeed } from './helpers/random.js';
import { awsCli, cleanEnv, findAwsClis, findTool, runTool, sha256, sortedEntries, treeDigest, warnSkipped, writeFileIn, writeTree } from './helpers/s3-tools.js';

const aws = findAwsClis();
const rclone = findTool(['rclone'], ['version']);
const s3cmd = findTool(['s3cmd'], ['--version']);
if (aws.tools.length === 0) warnSkipped('aws CLI tests (test/s3-clients.test.ts)', `no aws CLI found (${aws.why})`);
if (!rclone.tool) warnSkipped('rclone sync tests (test/s3-clients.test.ts)', `rclone not found (${rclone.why})`);
if (!s3cmd.tool) warnSkipped('s3cmd sync tests (test/s3-clients.test.ts)', `s3cmd not found (${s3cmd.why})`);

const seed = testSeed();
let env: S3TestEnv;
let s3: S3Client;
let dir: Awaited<ReturnType<typeof makeTempDir>>;

beforeAll(async () => {
  dir = await makeTempDir('s3-clients');
  env = await startS3Env();
  s3 = env.s3();
}, 120_000);
afterAll(async () => {
  await env?.stop();
  await dir?.remove();
});

/** key -> size of every object in a bucket (ListObjectsV2, all pages). */
async function listing(bucket: string, prefix = ''): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
    for (const c of page.Contents ?? []) out.set(c.Key!, c.Size!);
    token = page.NextContinuationToken;
  } while (token);
  return out;
}

/** Whether the gateway has DeleteObjects yet (it answers 501 NotImplemented until then). */
async function deleteObjectsImplemented(bucket: string): Promise<boolean> {
  try {
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key: 'no-such-key-probe' }] } }));
    return true;
  } catch (err) {
    if ((err as { name?: string }).name === 'NotImplemented') return false;
    throw err;
  }
}

async function expectSameTree(a: string, b: string): Promise<void> {
  expect(sortedEntries(await treeDigest(b))).toEqual(sortedEntries(await treeDigest(a)));
}

if (aws.tools.length === 0) it.skip('the aws CLI: not installed (see the warning above)', () => undefined);

describe.each(aws.tools.map((t) => [t.version, t] as const))('the aws CLI: %s', (_version, tool) => {
  const slug = sha256(Buffer.from(tool.version)).slice(0, 8);
  const bucket = `aws-${slug}`;

  it(`s3 mb/cp/ls/rm and s3api put-object/get-object/head-object/list-objects-v2/delete-object (seed ${seed})`, async () => {
    const rng = seededRng(seed);
    const work = join(dir.path, `aws-${slug}`);
    const run = await awsCli(tool, env, join(work, 'conf'));
    await mkdir(work, { recursive: true });
    await run(['s3', 'mb', `s3://${bucket}`]);
    expect((await run(['s3', 'ls'])).stdout).toContain(bucket);

    const files = new Map<string, Buffer>([
      ['small.txt', Buffer.from('hello from the aws CLI\n')],
      ['empty', Buffer.alloc(0)],
      ['mid.bin', rng.bytes(300_000)],
      ['big.bin', rng.bytes(12 * 1024 * 1024 + 3)],
    ]);
    for (const [name, data] of files) {
      await writeFile(join(work, name), data);
      await run(['s3', 'cp', join(work, name), `s3://${bucket}/cp/${name} ü`]);
    }
    await run(['s3', 'cp', '-', `s3://${bucket}/cp/stdin`], { input: files.get('mid.bin')! });
    const listed = (await run(['s3', 'ls', `s3://${bucket}/cp/`])).stdout;
    for (const name of files.keys()) expect(listed).toContain(`${name} ü`);
    for (const [name, data] of files) {
      await run(['s3', 'cp', `s3://${bucket}/cp/${name} ü`, join(work, `${name}.back`)]);
      expect((await readFile(join(work, `${name}.back`))).equals(data), name).toBe(true);
    }
    await run(['s3', 'cp', `s3://${bucket}/cp/stdin`, join(work, 'stdin.back')]);
    expect((await readFile(join(work, 'stdin.back'))).equals(files.get('mid.bin')!)).toBe(true);
    expect((await run(['s3', 'cp', `s3://${bucket}/cp/small.txt ü`, '-'])).stdout).toBe(files.get('small.txt')!.toString());

    // s3api: put-object with metadata and content type, head, get, list with prefix and delimiter, pages.
    const put = JSON.parse((await run(['s3api', 'put-object', '--bucket', bucket, '--key', 'api/one', '--body', join(work, 'mid.bin'), '--content-type', 'application/x-one', '--metadata', 'color=blue'])).stdout) as { ETag: string };
    expect(put.ETag).toBe(`"${createHash('md5').update(files.get('mid.bin')!).digest('hex')}"`);
    const head = JSON.parse((await run(['s3api', 'head-object', '--bucket', bucket, '--key', 'api/one'])).stdout) as { ContentLength: number; ContentType: string; Metadata: Record<string, string> };
    expect(head).toMatchObject({ ContentLength: 300_000, ContentType: 'application/x-one', Metadata: { color: 'blue' } });
    await run(['s3api', 'get-object', '--bucket', bucket, '--key', 'api/one', join(work, 'one.back')]);
    expect((await readFile(join(work, 'one.back'))).equals(files.get('mid.bin')!)).toBe(true);
    await run(['s3api', 'get-object', '--bucket', bucket, '--key', 'api/one', '--range', 'bytes=1000-1999', join(work, 'one.range')]);
    expect((await readFile(join(work, 'one.range'))).equals(files.get('mid.bin')!.subarray(1000, 2000))).toBe(true);
    for (let i = 0; i < 7; i++) await run(['s3api', 'put-object', '--bucket', bucket, '--key', `api/many/${i}`, '--body', join(work, 'small.txt')]);
    const top = JSON.parse((await run(['s3api', 'list-objects-v2', '--bucket', bucket, '--prefix', 'api/', '--delimiter', '/'])).stdout) as { Contents: Array<{ Key: string }>; CommonPrefixes: Array<{ Prefix: string }> };
    expect(top.Contents.map((c) => c.Key)).toEqual(['api/one']);
    expect(top.CommonPrefixes.map((p) => p.Prefix)).toEqual(['api/many/']);
    // --page-size 3: the CLI follows continuation tokens itself.
    const paged = JSON.parse((await run(['s3api', 'list-objects-v2', '--bucket', bucket, '--prefix', 'api/many/', '--page-size', '3'])).stdout) as { Contents: Array<{ Key: string }> };
    expect(paged.Contents.map((c) => c.Key)).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => `api/many/${i}`));
    await run(['s3api', 'delete-object', '--bucket', bucket, '--key', 'api/one']);
    const missing = await run(['s3api', 'head-object', '--bucket', bucket, '--key', 'api/one'], { allowFailure: true });
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/404|Not Found/);

    await run(['s3', 'rm', `s3://${bucket}/cp/small.txt ü`]);
    expect([...(await listing(bucket, 'cp/')).keys()]).not.toContain('cp/small.txt ü');
    await run(['s3', 'rm', `s3://${bucket}`, '--recursive']);
    expect((await listing(bucket)).size).toBe(0);
    await run(['s3', 'rb', `s3://${bucket}`]);
    expect((await run(['s3', 'ls'])).stdout).not.toContain(bucket);
  }, 300_000);

  it(`s3 sync of a tree of 800 files up, down, and again after changes and deletions (seed ${seed})`, async () => {
    const rng = seededRng(seed + 1);
    const work = join(dir.path, `aws-sync-${slug}`);
    const run = await awsCli(tool, env, join(work, 'conf'));
    const up = join(work, 'up');
    const down = join(work, 'down');
    const tree = await writeTree(up, rng, { files: 800, bigFiles: 4 });
    await run(['s3', 'mb', `s3://${bucket}-sync`]);
    await run(['s3', 'sync', up, `s3://${bucket}-sync/tree`]);
    const keys = await listing(`${bucket}-sync`, 'tree/');
    expect([...keys.keys()].sort()).toEqual([...tree.keys()].map((p) => `tree/${p}`).sort());
    await run(['s3', 'sync', `s3://${bucket}-sync/tree`, down]);
    await expectSameTree(up, down);

    // Change some files (to sizes no file had), add some, delete some; sync with --delete both ways.
    const paths = [...tree.keys()];
    for (let i = 0; i < 20; i++) await writeFileIn(up, paths[i * 7]!, rng.bytes(9000 + rng.int(1000)), tree);
    for (let i = 0; i < 10; i++) {
      await unlink(join(up, paths[i * 11 + 3]!));
      tree.delete(paths[i * 11 + 3]!);
    }
    for (let i = 0; i < 10; i++) await writeFileIn(up, `new/n${i}.bin`, rng.bytes(rng.int(3000)), tree);
    await run(['s3', 'sync', up, `s3://${bucket}-sync/tree`, '--delete']);
    expect([...(await listing(`${bucket}-sync`, 'tree/')).keys()].sort()).toEqual([...tree.keys()].map((p) => `tree/${p}`).sort());
    await run(['s3', 'sync', `s3://${bucket}-sync/tree`, down, '--delete', '--exact-timestamps']);
    await expectSameTree(up, down);
  }, 600_000);
});

describe.skipIf(!rclone.tool)('rclone', () => {
  it(`syncs a tree of 3000 files both ways, byte-exact (seed ${seed})`, async () => {
    const rng = seededRng(seed + 2);
    const work = join(dir.path, 'rclone');
    const up = join(work, 'up');
    const down = join(work, 'down');
    await mkdir(work, { recursive: true });
    const config = join(work, 'rclone.conf');
    await writeFile(
      config,
      `[tess]\ntype = s3\nprovider = Other\nenv_auth = false\naccess_key_id = ${env.accessKeyId}\nsecret_access_key = ${env.secretAccessKey}\nendpoint = ${env.endpoint}\nregion = us-east-1\nforce_path_style = true\n`,
      { mode: 0o600 },
    );
    const run = (args: string[]) => runTool(rclone.tool!.path, ['--config', config, '--transfers', '16', '--checkers', '16', '--retries', '1', '--low-level-retries', '1', ...args], { env: cleanEnv({}), timeoutMs: 500_000 });
    const tree = await writeTree(up, rng, { files: 3000, bigFiles: 3 });
    await run(['mkdir', 'tess:rclone']);
    await run(['sync', up, 'tess:rclone/tree']);
    const keys = await listing('rclone', 'tree/');
    expect([...keys.keys()].sort()).toEqual([...tree.keys()].map((p) => `tree/${p}`).sort());
    await run(['check', up, 'tess:rclone/tree']);
    await run(['sync', 'tess:rclone/tree', down]);
    await expectSameTree(up, down);

    // The other way round: change and delete in the downloaded copy, sync it up, then down into the first tree.
    const paths = [...tree.keys()];
    for (let i = 0; i < 30; i++) await writeFileIn(down, paths[i * 13]!, rng.bytes(9000 + rng.int(1000)), tree);
    for (let i = 0; i < 30; i++) {
      await unlink(join(down, paths[i * 17 + 5]!));
      tree.delete(paths[i * 17 + 5]!);
    }
    await run(['sync', down, 'tess:rclone/tree']);
    await run(['sync', 'tess:rclone/tree', up]);
    await expectSameTree(down, up);
    expect(sortedEntries(await treeDigest(up))).toEqual(sortedEntries(tree));
    expect((await listing('rclone', 'tree/')).size).toBe(tree.size);
  }, 900_000);
});

describe.skipIf(!s3cmd.tool)('s3cmd', () => {
  it(`syncs a tree of 500 files both ways, byte-exact (seed ${seed})`, async () => {
    const rng = seededRng(seed + 3);
    const work = join(dir.path, 's3cmd');
    const up = join(work, 'up');
    const down = join(work, 'down');
    await mkdir(work, { recursive: true });
    const hostPort = new URL(env.endpoint).host;
    const config = join(work, 's3cfg');
    await writeFile(
      config,
      `[default]\naccess_key = ${env.accessKeyId}\nsecret_key = ${env.secretAccessKey}\nhost_base = ${hostPort}\nhost_bucket = ${hostPort}\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\nmultipart_chunk_size_mb = 64\nproxy_host =\n`,
      { mode: 0o600 },
    );
    const run = (args: string[]) => runTool(s3cmd.tool!.path, ['-c', config, '--no-progress', ...args], { env: cleanEnv({ HOME: work }), timeoutMs: 500_000 });
    const tree = await writeTree(up, rng, { files: 500, bigFiles: 2 });
    await run(['mb', 's3://s3cmd']);
    await run(['sync', `${up}/`, 's3://s3cmd/tree/']);
    expect([...(await listing('s3cmd', 'tree/')).keys()].sort()).toEqual([...tree.keys()].map((p) => `tree/${p}`).sort());
    await mkdir(down, { recursive: true });
    await run(['sync', 's3://s3cmd/tree/', `${down}/`]);
    await expectSameTree(up, down);

    const paths = [...tree.keys()];
    for (let i = 0; i < 15; i++) await writeFileIn(up, paths[i * 9]!, rng.bytes(9000 + rng.int(1000)), tree);
    // s3cmd deletes through DeleteObjects (POST ?delete): exercised once the gateway has it, loudly left out until then.
    const batchDelete = await deleteObjectsImplemented('s3cmd');
    if (batchDelete) {
      for (let i = 0; i < 15; i++) {
        await unlink(join(up, paths[i * 9 + 4]!));
        tree.delete(paths[i * 9 + 4]!);
      }
    } else {
      warnSkipped('s3cmd sync --delete-removed (test/s3-clients.test.ts)', 'the gateway answers DeleteObjects with NotImplemented', 'deletions are synced once it is built');
    }
    await run(['sync', ...(batchDelete ? ['--delete-removed'] : []), `${up}/`, 's3://s3cmd/tree/']);
    expect([...(await listing('s3cmd', 'tree/')).keys()].sort()).toEqual([...tree.keys()].map((p) => `tree/${p}`).sort());
    await rm(down, { recursive: true });
    await mkdir(down, { recursive: true });
    await run(['sync', 's3://s3cmd/tree/', `${down}/`]);
    await expectSameTree(up, down);
  }, 600_000);
});
