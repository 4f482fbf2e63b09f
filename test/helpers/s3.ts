/**
 * An S3 gateway on a real test cluster, with a user and its keys, and an
 * @aws-sdk/client-s3 client for it (path-style, default settings: the SDK's
 * CRC32 trailers on aws-chunked bodies included).
 */
import { S3Client } from '@aws-sdk/client-s3';
import { S3Gateway, type S3GatewayOptions } from '../../gateways/s3/gateway.js';
import type { SweepStats } from '../../gateways/s3/meta/journal.js';
import { startTestCluster, type TestCluster } from './cluster.js';

export interface S3TestEnv {
  cluster: TestCluster;
  gateway: S3Gateway;
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  userId: string;
  /**
   * The gateway's start-up work (the bucket owner index check, then the first
   * journal sweep) finished: until then it makes cluster calls of its own.
   */
  startupSweep: Promise<SweepStats>;
  s3(credentials?: { accessKeyId: string; secretAccessKey: string }): S3Client;
  /** Another gateway on this env's cluster (127.0.0.1, any port, the rep pool for metadata and data) with these options; the caller closes it. */
  gatewayWith(options?: Partial<S3GatewayOptions>): Promise<S3Gateway>;
  stop(): Promise<void>;
}

export async function startS3Env(gatewayOptions: Partial<Pick<S3GatewayOptions, 'bucketCacheMs' | 'accessKeyCacheMs' | 'indexShards'>> = {}): Promise<S3TestEnv> {
  const cluster = await startTestCluster({
    hosts: 3,
    disksPerHost: 2,
    pools: [
      { name: 'rep', redundancy: { type: 'replicated', size: 3, minSize: 2 }, failureDomain: 'host', pgCount: 16 },
      { name: 'ec', redundancy: { type: 'erasure', dataShards: 4, parityShards: 2 }, failureDomain: 'disk', pgCount: 16 },
    ],
  });
  let swept!: (stats: SweepStats) => void;
  const startupSweep = new Promise<SweepStats>((resolve) => (swept = resolve));
  const gateway = await S3Gateway.start({ io: cluster.io, client: cluster.client, host: '127.0.0.1', port: 0, metaPool: 'rep', defaultDataPool: 'rep', ...gatewayOptions, onJournalSweep: (stats) => swept(stats) });
  const user = await gateway.services.users.create({ displayName: 'tester', email: 'tester@example.com' });
  const key = await gateway.services.users.addKey(user.userId);
  const endpoint = `http://127.0.0.1:${gateway.port}`;
  const clients: S3Client[] = [];
  return {
    cluster,
    gateway,
    endpoint,
    accessKeyId: key.accessKeyId,
    secretAccessKey: key.secretAccessKey,
    userId: user.userId,
    startupSweep,
    s3(credentials = { accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey }) {
      const c = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials, maxAttempts: 1 });
      clients.push(c);
      return c;
    },
    gatewayWith(options = {}) {
      return S3Gateway.start({ io: cluster.io, client: cluster.client, host: '127.0.0.1', port: 0, metaPool: 'rep', defaultDataPool: 'rep', ...options });
    },
    async stop() {
      for (const c of clients) c.destroy();
      await gateway.close();
      await cluster.stop();
    },
  };
}

/** The S3 error code and HTTP status a call fails with; throws if it succeeds. */
export async function errorOf(p: Promise<unknown>): Promise<{ name: string; status: number | undefined }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode };
  }
  throw new Error('expected an error');
}

/** An SDK response body, whole. */
export const bytes = async (body: unknown): Promise<Buffer> => Buffer.from(await (body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
