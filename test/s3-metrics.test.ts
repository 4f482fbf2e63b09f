/**
 * The S3 gateway's Prometheus metrics as an operator scrapes them: a gateway
 * on a real cluster (env.gatewayWith) reporting to the metrics endpoint of
 * `tessera s3 --metrics` (src/cli/s3-metrics.ts), served on a free port and
 * read with fetch. Through @aws-sdk/client-s3: CreateBucket, PutObject of a
 * 1000-byte (inline) and a 40 MiB (striped) object, GetObject and HeadObject
 * of the small one, ListObjectsV2; a GET of the big one through a raw
 * connection that reads the response head and then nothing (it holds its GET
 * slot: test/helpers/s3-raw.ts), then is read to the end; and three failing
 * requests: GetObject of a missing key (NoSuchKey), GetObject signed with a
 * wrong secret (SignatureDoesNotMatch: routed before authentication, still
 * GetObject), GetBucketTagging (NotImplemented, op "Unsupported").
 * Asserted: requests by operation and result, failures by S3 error code, the
 * duration histogram's counts, body bytes received (at least the objects,
 * at most their aws-chunked framing more) and sent (the objects read plus
 * the two error documents; none for HEAD), the GET slot gauge at 1 while the
 * GET is held and 0 after, a connection counted, nothing refused, the
 * striper budget; no bucket or key name in the scraped text.
 */
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, GetBucketTaggingCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { S3Gateway } from '../gateways/s3/gateway.js';
import type { MetricsServer } from '../src/metrics/http.js';
import { s3MetricsEndpoint } from '../src/cli/s3-metrics.js';
import { bytes, errorOf, startS3Env, type S3TestEnv } from './helpers/s3.js';
import { heldGet, presignedGet, responsesOf } from './helpers/s3-raw.js';
import { parsePrometheus, scrape, scrapeText, sum } from './helpers/prometheus.js';

const MiB = 1024 * 1024;
const BUCKET = 'metered-bucket-b7';
const SMALL_KEY = 'small-key-q3';
const BIG_KEY = 'big-key-z9';
const small = randomBytes(1000);
const big = randomBytes(40 * MiB);
let env: S3TestEnv;
let gateway: S3Gateway | undefined;
let server: MetricsServer | undefined;
let endpoint: string;
const clients: S3Client[] = [];

function s3With(secretAccessKey: string): S3Client {
  const c = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey }, maxAttempts: 1 });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  env = await startS3Env();
  const metrics = s3MetricsEndpoint();
  gateway = await env.gatewayWith({ observer: metrics.observer });
  server = await metrics.serve(gateway, { host: '127.0.0.1', port: 0 });
  endpoint = `http://127.0.0.1:${gateway.port}`;
}, 120_000);

afterAll(async () => {
  for (const c of clients) c.destroy();
  await server?.close();
  await gateway?.close();
  await env?.stop();
}, 60_000);

it('counts S3 requests by operation, result and error code, their bytes both ways, and reads the GET slots, connections and striper budget', async () => {
  const port = server!.port;
  const s3 = s3With(env.secretAccessKey);
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: SMALL_KEY, Body: small }));
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: BIG_KEY, Body: big }));
  expect((await bytes((await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: SMALL_KEY }))).Body)).equals(small)).toBe(true);
  expect((await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: SMALL_KEY }))).ContentLength).toBe(small.length);
  expect((await s3.send(new ListObjectsV2Command({ Bucket: BUCKET }))).KeyCount).toBe(2);

  // A GET whose client reads nothing after the head holds its slot, on a connection the gateway counts.
  const target = await presignedGet({ endpoint, accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey, bucket: BUCKET, key: BIG_KEY });
  const held = await heldGet(gateway!.port, target);
  expect(held.status).toBe(200);
  await expect.poll(async () => sum(await scrape(port), 'tessera_s3_get_slots_inflight'), { timeout: 30_000, interval: 200 }).toBe(1);
  const during = await scrape(port);
  expect(sum(during, 'tessera_s3_connections')).toBeGreaterThanOrEqual(1);
  expect(sum(during, 'tessera_s3_striper_reserved_bytes')).toBeGreaterThan(0);
  const [response] = await responsesOf(held.socket, held.received);
  expect(response!.body.equals(big)).toBe(true);

  expect((await errorOf(s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'missing-key-k1' })))).name).toBe('NoSuchKey');
  expect((await errorOf(s3With('not-the-secret').send(new GetObjectCommand({ Bucket: BUCKET, Key: SMALL_KEY })))).name).toBe('SignatureDoesNotMatch');
  expect((await errorOf(s3.send(new GetBucketTaggingCommand({ Bucket: BUCKET })))).status).toBe(501);

  // A request is reported once its response has ended: wait for the last GetObject.
  await expect.poll(async () => sum(await scrape(port), 'tessera_s3_ops_total', { op: 'GetObject' }), { timeout: 30_000, interval: 200 }).toBe(4);
  const text = await scrapeText(port);
  const after = parsePrometheus(text);
  const value = (name: string, labels: Record<string, string> = {}): number => sum(after, name, labels);
  expect(value('tessera_s3_ops_total', { op: 'CreateBucket', result: 'ok' })).toBe(1);
  expect(value('tessera_s3_ops_total', { op: 'PutObject', result: 'ok' })).toBe(2);
  expect(value('tessera_s3_ops_total', { op: 'GetObject', result: 'ok' })).toBe(2);
  expect(value('tessera_s3_ops_total', { op: 'GetObject', result: 'error' })).toBe(2);
  expect(value('tessera_s3_ops_total', { op: 'HeadObject', result: 'ok' })).toBe(1);
  expect(value('tessera_s3_ops_total', { op: 'ListObjectsV2', result: 'ok' })).toBe(1);
  expect(value('tessera_s3_ops_total', { op: 'Unsupported', result: 'error' })).toBe(1);
  expect(value('tessera_s3_ops_total')).toBe(10);
  expect(value('tessera_s3_errors_total', { op: 'GetObject', code: 'NoSuchKey' })).toBe(1);
  expect(value('tessera_s3_errors_total', { op: 'GetObject', code: 'SignatureDoesNotMatch' })).toBe(1);
  expect(value('tessera_s3_errors_total', { op: 'Unsupported', code: 'NotImplemented' })).toBe(1);
  expect(value('tessera_s3_errors_total')).toBe(3);
  expect(value('tessera_s3_op_duration_seconds_count', { op: 'PutObject' })).toBe(2);
  expect(value('tessera_s3_op_duration_seconds_bucket', { op: 'GetObject', le: '+Inf' })).toBe(4);
  expect(value('tessera_s3_op_duration_seconds_sum', { op: 'GetObject' })).toBeGreaterThan(0);

  // Bytes: PUT bodies as sent (the SDK's aws-chunked framing and checksum trailer on top of the data).
  const stored = small.length + big.length;
  expect(value('tessera_s3_received_bytes_total', { op: 'PutObject' })).toBeGreaterThanOrEqual(stored);
  expect(value('tessera_s3_received_bytes_total', { op: 'PutObject' })).toBeLessThanOrEqual(stored * 1.01 + 4096);
  // GET bodies: both objects whole, plus the two error documents.
  const sentGets = value('tessera_s3_sent_bytes_total', { op: 'GetObject' });
  expect(sentGets - stored).toBeGreaterThan(0);
  expect(sentGets - stored).toBeLessThan(4096);
  expect(value('tessera_s3_sent_bytes_total', { op: 'HeadObject' })).toBe(0);
  expect(value('tessera_s3_sent_bytes_total', { op: 'ListObjectsV2' })).toBeGreaterThan(0);
  expect(value('tessera_s3_op_bytes_total', { op: 'GetObject' })).toBe(sentGets + value('tessera_s3_received_bytes_total', { op: 'GetObject' }));

  // Gauges read at the scrape: the held GET gave its slot back; nothing was refused.
  expect(value('tessera_s3_get_slots_inflight')).toBe(0);
  expect(value('tessera_s3_get_slots_waiting')).toBe(0);
  expect(value('tessera_s3_get_refused_total')).toBe(0);
  expect(value('tessera_s3_striper_budget_bytes')).toBeGreaterThan(0);
  // Bounded labels: no bucket or key name anywhere.
  for (const name of [BUCKET, SMALL_KEY, BIG_KEY, 'missing-key-k1']) expect(text).not.toContain(name);
}, 180_000);
