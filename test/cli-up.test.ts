/**
 * `tessera up` as a user runs it: the all-in-one cluster on a fresh data
 * directory (map service, one daemon process per disk, the S3 gateway
 * process), the owner-only client file with the S3 endpoint and the admin
 * keys it printed, `tessera status`; S3 with the printed keys (the AWS SDK,
 * and the aws CLI as the README shows it, where installed); `tessera user`
 * create / ls / key add / key rm / rm against the running cluster, with
 * other users' buckets out of reach and secrets shown once; a gateway killed
 * with kill -9 is restarted on its port; SIGINT stops everything; a second
 * `up` on the same directory resumes the cluster with the same keys (not
 * printed again) and the data reads back; `--domain` reaches the gateway
 * (virtual-host-style requests under it).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Agent } from 'node:http';
import type { LookupFunction } from 'node:net';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, GetObjectCommand, ListBucketsCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { systemIo } from '../src/io/system.js';
import { TesseraClient } from '../src/client/client.js';
import { connectMapService } from '../cluster/map-daemon.js';
import { makeTempDir } from './helpers/tmp.js';
import { tesseraBin } from './helpers/daemon-process.js';
import { awsCli, findAwsClis, warnSkipped } from './helpers/s3-tools.js';

let dir: Awaited<ReturnType<typeof makeTempDir>>;
const started: ChildProcess[] = [];
const clients: S3Client[] = [];
const basePort = 20_000 + (process.pid % 1000) * 16;
const s3Port = basePort + 14;
const endpoint = `http://127.0.0.1:${s3Port}`;
const aws = findAwsClis().tools[0];
if (!aws) warnSkipped('the aws CLI part of test/cli-up.test.ts', 'no aws CLI found');

beforeAll(async () => {
  dir = await makeTempDir('up');
});
afterAll(async () => {
  for (const c of clients) c.destroy();
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await dir.remove();
});

interface ClientFile {
  clusterId: string;
  map: string;
  pools: Array<{ name: string }>;
  s3: { endpoint: string; region: string; admin: { userId: string; accessKeyId: string; secretAccessKey: string } };
}

function up(): Promise<{ child: ChildProcess; output: string[] }> {
  return new Promise((resolve, reject) => {
    const args = [tesseraBin, 'up', '--data', dir.path, '--hosts', '3', '--disks-per-host', '2', '--base-port', String(basePort), '--map-port', String(basePort + 15), '--s3-port', String(s3Port), '--pgs', '16', '--recovery-bytes-per-sec', '300000000', '--domain', 'up.test'];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(child);
    const output: string[] = [];
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line);
      if (line.startsWith('Ctrl-C')) resolve({ child, output });
    });
    child.on('exit', (code) => reject(new Error(`tessera up exited ${code}: ${output.join('\n')}`)));
  });
}

function run(args: string[], input?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [tesseraBin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(input);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const stop = (child: ChildProcess): Promise<number | null> =>
  new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill('SIGINT');
  });

async function withClient<T>(map: string, fn: (c: TesseraClient) => Promise<T>): Promise<T> {
  const io = systemIo();
  const conn = connectMapService(io, map);
  const client = await TesseraClient.connect({ io, mapService: conn.service, timeoutMs: 60_000 });
  try {
    return await fn(client);
  } finally {
    await client.close();
    await conn.close();
  }
}

function s3With(accessKeyId: string, secretAccessKey: string): S3Client {
  const c = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId, secretAccessKey }, maxAttempts: 1 });
  clients.push(c);
  return c;
}

async function errorName(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).name;
  }
  return 'no error';
}

/** An object's content, or the error's name. */
async function textOf(client: S3Client, bucket: string, key: string): Promise<string> {
  try {
    return (await (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body?.transformToString()) ?? '';
  } catch (err) {
    return (err as Error).name;
  }
}

/** The access and secret key `tessera user create` / `key add` printed. */
function printedKey(stdout: string): { accessKeyId: string; secretAccessKey: string } {
  return { accessKeyId: /access key: (\S+)/.exec(stdout)![1]!, secretAccessKey: /secret key: (\S+)/.exec(stdout)![1]! };
}

it('runs, reports, serves S3, manages users, stops and resumes the all-in-one cluster with its data and keys', async () => {
  const first = await up();
  const text = first.output.join('\n');
  const clientFile = JSON.parse(await readFile(`${dir.path}/client.json`, 'utf8')) as ClientFile;
  expect(clientFile.pools.map((p) => p.name)).toEqual(['rep', 'ec']);
  expect((await stat(`${dir.path}/client.json`)).mode & 0o077).toBe(0);
  const { admin } = clientFile.s3;
  expect(clientFile.s3.endpoint).toBe(endpoint);
  expect(text).toContain(`S3 endpoint: ${endpoint}`);
  expect(text).toContain(`AWS_ACCESS_KEY_ID=${admin.accessKeyId}`);
  expect(text).toContain(`AWS_SECRET_ACCESS_KEY=${admin.secretAccessKey}`);
  const status = await run(['status', '--data', dir.path]);
  expect(status.code).toBe(0);
  expect(status.stdout.match(/: up,/g)).toHaveLength(6);
  // Daemon flags given to `up` reach every daemon it runs.
  const children = (await readFile(`/proc/${first.child.pid}/task/${first.child.pid}/children`, 'utf8')).trim().split(/\s+/);
  const commands = await Promise.all(children.map(async (pid) => (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0')));
  const daemonCommands = commands.filter((argv) => argv.includes('daemon'));
  expect(daemonCommands).toHaveLength(6);
  for (const argv of daemonCommands) expect(argv.slice(argv.indexOf('--recovery-bytes-per-sec'), argv.indexOf('--recovery-bytes-per-sec') + 2)).toEqual(['--recovery-bytes-per-sec', '300000000']);
  await withClient(clientFile.map, (c) => c.put('rep', 'hello', Buffer.from('world')));

  // S3 with the printed keys.
  const adminS3 = s3With(admin.accessKeyId, admin.secretAccessKey);
  await adminS3.send(new CreateBucketCommand({ Bucket: 'photos' }));
  await adminS3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'cat.jpg', Body: 'meow' }));
  // `up --domain up.test` reaches the gateway: photos.up.test addresses the bucket (host names resolved to 127.0.0.1 here).
  expect(text).toContain('virtual-host-style under up.test');
  const lookup = ((_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) => {
    if (opts?.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
    else cb(null, '127.0.0.1', 4);
  }) as unknown as LookupFunction;
  const vhost = new S3Client({ endpoint: `http://up.test:${s3Port}`, region: 'us-east-1', forcePathStyle: false, credentials: { accessKeyId: admin.accessKeyId, secretAccessKey: admin.secretAccessKey }, maxAttempts: 1, requestHandler: new NodeHttpHandler({ httpAgent: new Agent({ lookup }) }) });
  clients.push(vhost);
  expect(await textOf(vhost, 'photos', 'cat.jpg')).toBe('meow');
  if (aws) {
    // As the README says: the printed keys in the environment, the endpoint on the command line.
    const cli = await awsCli(aws, { endpoint, accessKeyId: admin.accessKeyId, secretAccessKey: admin.secretAccessKey }, join(dir.path, 'aws'));
    await writeFile(join(dir.path, 'note.txt'), 'from the aws CLI\n');
    await cli(['s3', 'cp', join(dir.path, 'note.txt'), 's3://photos/note.txt']);
    expect((await cli(['s3', 'ls', 's3://photos'])).stdout).toMatch(/cat\.jpg[\s\S]*note\.txt/);
  }

  // Users: create (secret shown once), their own buckets, keys added and removed, removal.
  const created = await run(['user', 'create', '--name', 'alice', '--email', 'alice@example.com', '--data', dir.path]);
  expect(created.code, created.stderr).toBe(0);
  const aliceId = /^user ([0-9a-f]{64})$/m.exec(created.stdout)![1]!;
  const aliceKey = printedKey(created.stdout);
  const alice = s3With(aliceKey.accessKeyId, aliceKey.secretAccessKey);
  await alice.send(new CreateBucketCommand({ Bucket: 'alices' }));
  await alice.send(new PutObjectCommand({ Bucket: 'alices', Key: 'diary', Body: 'dear diary' }));
  expect(await errorName(adminS3.send(new GetObjectCommand({ Bucket: 'alices', Key: 'diary' })))).toBe('AccessDenied');
  expect(await errorName(alice.send(new GetObjectCommand({ Bucket: 'photos', Key: 'cat.jpg' })))).toBe('AccessDenied');
  const listed = await alice.send(new ListBucketsCommand({}));
  expect(listed.Buckets?.map((b) => b.Name)).toEqual(['alices']);
  expect(listed.Owner?.ID).toBe(aliceId);

  const migrated = { accessKeyId: 'MIGRATEDACCESSKEY001', secretAccessKey: 'migrated/Secret+Key0123456789abcdefghij' };
  const added = await run(['user', 'key', 'add', 'alice', '--access-key', migrated.accessKeyId, '--secret-key', '-', '--map', clientFile.map], migrated.secretAccessKey);
  expect(added.code, added.stderr).toBe(0);
  expect(added.stdout).not.toContain(migrated.secretAccessKey);
  const aliceMigrated = s3With(migrated.accessKeyId, migrated.secretAccessKey);
  expect((await aliceMigrated.send(new ListBucketsCommand({}))).Owner?.ID).toBe(aliceId);
  const ls = await run(['user', 'ls', '--data', dir.path]);
  expect(ls.code).toBe(0);
  expect(ls.stdout).toMatch(new RegExp(`${aliceId}\\s+alice\\s+alice@example.com\\s+${aliceKey.accessKeyId},${migrated.accessKeyId}`));
  expect(ls.stdout).toContain(admin.accessKeyId);
  for (const secret of [admin.secretAccessKey, aliceKey.secretAccessKey, migrated.secretAccessKey]) expect(ls.stdout + ls.stderr).not.toContain(secret);

  expect((await run(['user', 'key', 'rm', aliceKey.accessKeyId, '--data', dir.path])).code).toBe(0);
  // The gateway caches keys for up to 5 s.
  await expect.poll(() => errorName(alice.send(new ListBucketsCommand({}))), { timeout: 15_000, interval: 500 }).toBe('InvalidAccessKeyId');
  const refused = await run(['user', 'rm', 'alice', '--data', dir.path]);
  expect(refused.code).toBe(1);
  expect(refused.stderr).toContain('owns 1 bucket(s) (alices)');
  await aliceMigrated.send(new DeleteObjectCommand({ Bucket: 'alices', Key: 'diary' }));
  await aliceMigrated.send(new DeleteBucketCommand({ Bucket: 'alices' }));
  expect((await run(['user', 'rm', aliceId, '--data', dir.path])).code).toBe(0);
  await expect.poll(() => errorName(aliceMigrated.send(new ListBucketsCommand({}))), { timeout: 15_000, interval: 500 }).toBe('InvalidAccessKeyId');
  expect((await run(['user', 'rm', 'alice', '--data', dir.path])).code).toBe(1);
  expect((await run(['user', 'create', '--name', 'bob', '--access-key', 'ONLYTHEACCESSKEY01', '--data', dir.path])).code).toBe(1);

  // A gateway killed with kill -9 comes back on its port.
  const gatewayPid = Number(/gateway pid (\d+)/.exec(text)![1]);
  process.kill(gatewayPid, 'SIGKILL');
  await expect.poll(() => textOf(adminS3, 'photos', 'cat.jpg'), { timeout: 30_000, interval: 500 }).toBe('meow');

  expect(await stop(first.child)).toBe(0);
  const down = await run(['status', '--data', dir.path]);
  expect(down.code).toBe(1);

  const second = await up();
  expect(second.output[0]).toContain(clientFile.clusterId);
  const resumed = second.output.join('\n');
  expect(resumed).toContain(`access key ${admin.accessKeyId}`);
  expect(resumed).not.toContain(admin.secretAccessKey);
  expect((JSON.parse(await readFile(`${dir.path}/client.json`, 'utf8')) as ClientFile).s3.admin).toEqual(admin);
  expect((await withClient(clientFile.map, (c) => c.read('rep', 'hello'))).toString()).toBe('world');
  const again = s3With(admin.accessKeyId, admin.secretAccessKey);
  expect(await textOf(again, 'photos', 'cat.jpg')).toBe('meow');
  expect(await stop(second.child)).toBe(0);
}, 240_000);
