/**
 * The gateway's memory stays bounded whatever the object size: one large
 * object streamed up (PutObject with the SDK's defaults: aws-chunked body
 * with a CRC32 trailer) and down (GetObject) through `tessera s3` running as
 * a process of its own, on a real test cluster (startS3Env's six daemons),
 * while /proc/<pid>/status of the gateway is sampled every 100 ms (VmRSS,
 * and VmHWM: the kernel's own peak). The body is generated as it is sent
 * and the GET is hashed as it arrives, so neither side holds the object.
 *
 * Size: 1 GiB by default (part of the suite); TESSERA_S3_MEMORY_GIB=5 runs
 * the 5 GiB single PUT (by hand: it writes 15 GiB to disk with
 * three copies and takes minutes). The bound asserted is the issue's:
 * the gateway's RSS stays under 300 MiB. One JSON line reports the figures.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startS3Env, type S3TestEnv } from './helpers/s3.js';
import { tesseraBin } from './helpers/daemon-process.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const sizeGiB = Number(process.env.TESSERA_S3_MEMORY_GIB ?? 1);
const SIZE_BYTES = Math.min(Math.round(sizeGiB * GiB), 5 * GiB);
const RSS_BYTES_MAX = 300 * MiB;
const timeoutMs = 120_000 + sizeGiB * 600_000;

let env: S3TestEnv;
let gateway: { child: ChildProcess; port: number } | null = null;
let remote: S3Client | null = null;

beforeAll(async () => {
  env = await startS3Env();
}, 120_000);
afterAll(async () => {
  remote?.destroy();
  if (gateway) await stop(gateway.child);
  await env?.stop();
}, 60_000);

async function startGatewayProcess(): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [tesseraBin, 's3', '--map', `127.0.0.1:${env.cluster.mapd.port}`, '--listen', '127.0.0.1:0', '--meta-pool', 'rep', '--data-pool', 'rep'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"listening"')) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`tessera s3 exited ${code}: ${stderr}`)));
  });
  return { child, port };
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** VmRSS and VmHWM of a process, bytes. */
async function memoryOf(pid: number): Promise<{ rssBytes: number; hwmBytes: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rssBytes: kib('VmRSS'), hwmBytes: kib('VmHWM') };
}

/** Samples a process's RSS every 100 ms until stopped; returns the largest sample. */
function sampleRss(pid: number): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      peak = Math.max(peak, (await memoryOf(pid)).rssBytes);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return Math.max(peak, (await memoryOf(pid)).rssBytes);
    },
  };
}

/** SIZE_BYTES of deterministic data (1 MiB blocks of a random pattern, each stamped with its index), hashed as it is produced. */
function generated(md5: ReturnType<typeof createHash>): Readable {
  const pattern = randomBytes(MiB);
  let sent = 0;
  return new Readable({
    highWaterMark: MiB,
    read() {
      if (sent >= SIZE_BYTES) return void this.push(null);
      const block = Buffer.from(pattern.subarray(0, Math.min(MiB, SIZE_BYTES - sent)));
      block.writeUInt32BE(sent / MiB, 0);
      sent += block.length;
      md5.update(block);
      this.push(block);
    },
  });
}

it(`streams a ${sizeGiB} GiB object up and down through the gateway process under 300 MiB RSS`, async () => {
  gateway = await startGatewayProcess();
  const pid = gateway.child.pid!;
  remote = new S3Client({
    endpoint: `http://127.0.0.1:${gateway.port}`,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
    maxAttempts: 1,
    requestHandler: { requestTimeout: timeoutMs },
  });
  await remote.send(new CreateBucketCommand({ Bucket: 'big' }));
  const idle = await memoryOf(pid);

  const sentMd5 = createHash('md5');
  const putSampler = sampleRss(pid);
  const putStart = performance.now();
  await remote.send(new PutObjectCommand({ Bucket: 'big', Key: 'object', Body: generated(sentMd5), ContentLength: SIZE_BYTES }));
  const putSeconds = (performance.now() - putStart) / 1000;
  const putPeakBytes = await putSampler.stop();
  expect((await remote.send(new HeadObjectCommand({ Bucket: 'big', Key: 'object' }))).ContentLength).toBe(SIZE_BYTES);

  const gotMd5 = createHash('md5');
  const getSampler = sampleRss(pid);
  const getStart = performance.now();
  const res = await remote.send(new GetObjectCommand({ Bucket: 'big', Key: 'object' }));
  let received = 0;
  for await (const chunk of res.Body as AsyncIterable<Uint8Array>) {
    received += chunk.length;
    gotMd5.update(chunk);
  }
  const getSeconds = (performance.now() - getStart) / 1000;
  const getPeakBytes = await getSampler.stop();
  const end = await memoryOf(pid);
  await remote.send(new DeleteObjectCommand({ Bucket: 'big', Key: 'object' }));

  expect(received).toBe(SIZE_BYTES);
  expect(gotMd5.digest('hex')).toBe(sentMd5.digest('hex'));
  const mib = (b: number): number => Math.round((b / MiB) * 10) / 10;
  console.log(
    JSON.stringify({
      name: 's3 gateway memory',
      sizeBytes: SIZE_BYTES,
      idleRssMiB: mib(idle.rssBytes),
      putPeakRssMiB: mib(putPeakBytes),
      getPeakRssMiB: mib(getPeakBytes),
      hwmMiB: mib(end.hwmBytes),
      putMBps: Math.round(SIZE_BYTES / putSeconds / 1e5) / 10,
      getMBps: Math.round(SIZE_BYTES / getSeconds / 1e5) / 10,
    }),
  );
  expect(end.hwmBytes).toBeLessThan(RSS_BYTES_MAX);
}, timeoutMs);
