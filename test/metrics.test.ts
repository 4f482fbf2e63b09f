/**
 * Prometheus metrics of a running cluster, scraped over HTTP as Prometheus
 * would: `tessera up` (3 hosts x 1 disk, the replicated pool) serves each
 * daemon's metrics on its port + the offset and the map service's on the map
 * port + the offset (ports in cluster.json). The text format is parsed; after
 * writes and reads through the client library the daemons' op counters,
 * byte counters and latency histograms have moved by at least what was done,
 * the pg gauge counts every pg active once, disk gauges are sane, and a map
 * change moves the map service's epoch and change counter. The S3 gateway's
 * metrics are at the URL `up` prints (its port + the offset, in cluster.json
 * as s3MetricsPort), and count a PutObject and a NoSuchKey GetObject made
 * with the admin keys of the client file (test/s3-metrics.test.ts checks the
 * gateway's series in detail).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GetObjectCommand, PutObjectCommand, CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { systemIo } from '../src/io/system.js';
import { TesseraClient } from '../src/client/client.js';
import { connectMapService, type MapConnection } from '../cluster/map-daemon.js';
import { setDiskWeight } from '../cluster/map-edit.js';
import { makeTempDir } from './helpers/tmp.js';
import { tesseraBin } from './helpers/daemon-process.js';
import { scrape, sum, type Sample } from './helpers/prometheus.js';

let dir: Awaited<ReturnType<typeof makeTempDir>>;
let upChild: ChildProcess | null = null;
const pids: number[] = [];
let conn: MapConnection | null = null;
let client: TesseraClient | null = null;
// Ports below Linux's ephemeral range, apart from test/cli-up.test.ts (20000+) and test/cli-admin.test.ts (10000+).
const basePort = 15_000 + (process.pid % 150) * 32;

interface Layout {
  mapPort: number;
  mapMetricsPort: number;
  s3MetricsPort: number;
  disks: Array<{ diskId: number; port: number; metricsPort: number }>;
}
let layout: Layout;
/** What `tessera up` printed. */
const output: string[] = [];

beforeAll(async () => {
  dir = await makeTempDir('metrics');
  const data = join(dir.path, 'data');
  upChild = await new Promise<ChildProcess>((resolve, reject) => {
    const args = [tesseraBin, 'up', '--data', data, '--hosts', '3', '--disks-per-host', '1', '--base-port', String(basePort), '--map-port', String(basePort + 14), '--s3-port', String(basePort + 15), '--pgs', '8', '--metrics-port-offset', '16'];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    if (child.pid) pids.push(child.pid);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line);
      for (const m of line.matchAll(/pid (\d+)/g)) pids.push(Number(m[1]));
      if (line.startsWith('Ctrl-C')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`tessera up exited ${code}: ${output.join('\n')}`)));
  });
  layout = JSON.parse(await readFile(join(data, 'cluster.json'), 'utf8')) as Layout;
  const io = systemIo();
  conn = connectMapService(io, `127.0.0.1:${layout.mapPort}`);
  client = await TesseraClient.connect({ io, mapService: conn.service, timeoutMs: 60_000 });
}, 90_000);

afterAll(async () => {
  await client?.close();
  await conn?.close();
  const child = upChild;
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGINT');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 30_000))]);
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await dir?.remove();
}, 60_000);

const scrapeDaemons = async (): Promise<Sample[]> => (await Promise.all(layout.disks.map((d) => scrape(d.metricsPort)))).flat();

it('daemons count client ops, bytes and latency; report pgs by state, disk space and the map epoch', async () => {
  // Every pg active once, on its primary (peering may still run just after start).
  await expect.poll(async () => sum(await scrapeDaemons(), 'tessera_osd_pgs', { state: 'active' }), { timeout: 30_000, interval: 500 }).toBe(8);
  const before = await scrapeDaemons();
  for (const d of layout.disks) {
    const own = before.filter((s) => s.labels.disk === String(d.diskId));
    expect(own.length).toBeGreaterThan(0);
    expect(sum(own, 'tessera_disk_free_bytes')).toBeGreaterThan(0);
    expect(sum(own, 'tessera_disk_used_bytes')).toBeGreaterThanOrEqual(0);
    expect(sum(own, 'tessera_osd_pg_members')).toBe(8); // 3 copies on 3 disks: every disk holds every pg
    expect(sum(own, 'tessera_osd_lease_held'), 'the primary lease holds (heartbeats answered)').toBe(1);
    expect(own.some((s) => s.name === 'tessera_osd_lease_refusals_total')).toBe(true);
    expect(sum(own, 'tessera_osd_peers_reported'), 'no peer reported unreachable').toBe(0);
  }
  // Every disk shares pgs with the other two: it pings them (from its first ping round, an interval after start).
  await expect.poll(async () => sum(await scrapeDaemons(), 'tessera_osd_peers_pinged'), { timeout: 30_000, interval: 500 }).toBe(6);
  const epoch = (await conn!.service.current()).epoch;
  for (const s of before.filter((x) => x.name === 'tessera_map_epoch')) expect(s.value).toBe(epoch);

  const objects = 20;
  const data = Buffer.alloc(10_000, 7);
  for (let i = 0; i < objects; i++) await client!.put('rep', `m${i}`, data);
  for (let i = 0; i < objects; i++) expect((await client!.read('rep', `m${i}`)).equals(data)).toBe(true);
  await client!.list('rep');
  await expect(client!.read('rep', 'missing')).rejects.toMatchObject({ code: 'NotFound' });

  const after = await scrapeDaemons();
  const moved = (name: string, labels: Record<string, string>): number => sum(after, name, labels) - sum(before, name, labels);
  expect(moved('tessera_osd_ops_total', { op: 'write', result: 'ok' })).toBeGreaterThanOrEqual(objects);
  expect(moved('tessera_osd_ops_total', { op: 'read', result: 'ok' })).toBeGreaterThanOrEqual(objects);
  expect(moved('tessera_osd_ops_total', { op: 'read', result: 'error' })).toBeGreaterThanOrEqual(1);
  expect(moved('tessera_osd_ops_total', { op: 'list', result: 'ok' })).toBeGreaterThanOrEqual(8); // one call per pg at least
  expect(moved('tessera_osd_op_bytes_total', { op: 'write' })).toBeGreaterThanOrEqual(objects * data.length);
  expect(moved('tessera_osd_op_bytes_total', { op: 'read' })).toBeGreaterThanOrEqual(objects * data.length);
  expect(moved('tessera_osd_op_duration_seconds_count', { op: 'write' })).toBeGreaterThanOrEqual(objects);
  expect(moved('tessera_osd_op_duration_seconds_sum', { op: 'write' })).toBeGreaterThan(0);
  expect(moved('tessera_osd_op_duration_seconds_bucket', { op: 'write', le: '+Inf' })).toBeGreaterThanOrEqual(objects);
  // The objects landed on the disks (3 copies each; pg logs add their own).
  expect(moved('tessera_disk_objects', {})).toBeGreaterThanOrEqual(objects * 3);
  // Each write is one store transaction on each of its 3 disks, made durable by some group commit.
  const txns = moved('tessera_store_commit_transactions_total', {});
  expect(txns).toBeGreaterThanOrEqual(objects * 3);
  expect(moved('tessera_store_commit_groups_total', {})).toBeGreaterThanOrEqual(1);
  expect(moved('tessera_store_commit_groups_total', {})).toBeLessThanOrEqual(txns);
  expect(moved('tessera_store_commit_data_sync_seconds_total', {})).toBeGreaterThan(0);
}, 60_000);

it('the map service reports its epoch, changes, disks and pools', async () => {
  const before = await scrape(layout.mapMetricsPort);
  expect(sum(before, 'tessera_map_pools')).toBe(1);
  expect(sum(before, 'tessera_map_disks', { up: 'true', in: 'true' })).toBe(3);
  const epoch = sum(before, 'tessera_map_epoch');
  expect(epoch).toBe((await conn!.service.current()).epoch);
  await conn!.service.change((m) => setDiskWeight(m, 0, 2));
  await conn!.service.change((m) => setDiskWeight(m, 0, 1));
  const after = await scrape(layout.mapMetricsPort);
  expect(sum(after, 'tessera_map_epoch')).toBeGreaterThanOrEqual(epoch + 2);
  expect(sum(after, 'tessera_map_changes_total') - sum(before, 'tessera_map_changes_total')).toBeGreaterThanOrEqual(2);
  // The daemons follow.
  await expect.poll(async () => Math.min(...(await scrapeDaemons()).filter((s) => s.name === 'tessera_map_epoch').map((s) => s.value)), { timeout: 10_000, interval: 200 }).toBeGreaterThanOrEqual(epoch + 2);
  expect((await fetch(`http://127.0.0.1:${layout.mapMetricsPort}/other`)).status).toBe(404);
}, 60_000);

it('the S3 gateway serves its metrics at the URL up prints, and counts requests by operation', async () => {
  const printed = output.find((l) => l.includes('S3 gateway metrics:'));
  expect(printed, output.join('\n')).toBe(`  S3 gateway metrics: http://127.0.0.1:${layout.s3MetricsPort}/metrics`);
  expect(layout.s3MetricsPort).toBe(basePort + 15 + 16);
  const file = JSON.parse(await readFile(join(dir.path, 'data', 'client.json'), 'utf8')) as { s3: { endpoint: string; admin: { accessKeyId: string; secretAccessKey: string } } };
  const s3 = new S3Client({ endpoint: file.s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: file.s3.admin, maxAttempts: 1 });
  try {
    await s3.send(new CreateBucketCommand({ Bucket: 'metered' }));
    await s3.send(new PutObjectCommand({ Bucket: 'metered', Key: 'k', Body: Buffer.alloc(5000, 1) }));
    await expect(s3.send(new GetObjectCommand({ Bucket: 'metered', Key: 'missing' }))).rejects.toMatchObject({ name: 'NoSuchKey' });
  } finally {
    s3.destroy();
  }
  await expect.poll(async () => sum(await scrape(layout.s3MetricsPort), 'tessera_s3_errors_total', { op: 'GetObject', code: 'NoSuchKey' }), { timeout: 10_000, interval: 200 }).toBe(1);
  const after = await scrape(layout.s3MetricsPort);
  expect(sum(after, 'tessera_s3_ops_total', { op: 'PutObject', result: 'ok' })).toBe(1);
  expect(sum(after, 'tessera_s3_received_bytes_total', { op: 'PutObject' })).toBeGreaterThanOrEqual(5000);
  expect(sum(after, 'tessera_s3_get_slots_inflight')).toBe(0);
}, 60_000);
