/**
 * A light but real S3 client for the benchmarks: SigV4 header signatures
 * from the AWS SDK's own signer (@smithy/signature-v4, with SHA-256 and
 * HMAC from node:crypto, derived signing keys cached by the signer) over
 * node:http with keep-alive sockets. PUT bodies are sent as one buffer with
 * Content-Length and UNSIGNED-PAYLOAD (as the SDK client of the benchmarks
 * sends them); GET bodies are read whole. What it leaves out of the SDK's
 * path: the middleware stack, endpoint resolution, XML (de)serializers of
 * the SDK's models, stream wrappers. It exists so that on a machine where
 * client and gateway share the CPUs, the benchmark measures the gateway
 * rather than the client; bench/s3.ts reports both clients.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { Agent, request } from 'node:http';
import { SignatureV4 } from '@smithy/signature-v4';

type SourceData = string | ArrayBuffer | ArrayBufferView;
const bytesOf = (d: SourceData): Buffer =>
  typeof d === 'string' ? Buffer.from(d, 'utf8') : ArrayBuffer.isView(d) ? Buffer.from(d.buffer, d.byteOffset, d.byteLength) : Buffer.from(d);

/** SHA-256 (or HMAC-SHA-256 with a secret) in the shape the signer takes. */
class NodeSha256 {
  private hash: Hash | Hmac;
  constructor(private readonly secret?: SourceData) {
    this.hash = this.fresh();
  }
  private fresh(): Hash | Hmac {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', bytesOf(this.secret));
  }
  update(data: SourceData): void {
    this.hash.update(bytesOf(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(this.hash.digest());
  }
  reset(): void {
    this.hash = this.fresh();
  }
}

export interface LightS3Options {
  endpoint: string;
  region?: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Keep-alive sockets at most. */
  socketsMax?: number;
}

export class LightS3Error extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`HTTP ${status}: ${body.slice(0, 200)}`);
  }
}

const encodeKey = (key: string): string => key.split('/').map(encodeURIComponent).join('/');

export class LightS3 {
  private readonly url: URL;
  private readonly agent: Agent;
  private readonly signer: SignatureV4;

  constructor(o: LightS3Options) {
    this.url = new URL(o.endpoint);
    this.agent = new Agent({ keepAlive: true, maxSockets: o.socketsMax ?? 256 });
    this.signer = new SignatureV4({
      service: 's3',
      region: o.region ?? 'us-east-1',
      credentials: { accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey },
      sha256: NodeSha256,
      uriEscapePath: false, // S3 signs the path as sent (the SDK's S3 setting)
      applyChecksum: false,
    });
  }

  /** One signed request; resolves with the status and the whole body, rejects on a status >= 300. */
  async send(method: string, bucket: string, key: string | null, body?: Buffer, extraHeaders: Record<string, string> = {}): Promise<{ status: number; body: Buffer }> {
    const path = key === null ? `/${bucket}` : `/${bucket}/${encodeKey(key)}`;
    const signed = await this.signer.sign({
      method,
      protocol: this.url.protocol,
      hostname: this.url.hostname,
      ...(this.url.port ? { port: Number(this.url.port) } : {}),
      path,
      query: {},
      headers: {
        host: this.url.host,
        'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
        ...(body ? { 'content-length': String(body.length) } : {}),
        ...extraHeaders,
      },
    });
    return new Promise((resolve, reject) => {
      const req = request({ agent: this.agent, method, host: this.url.hostname, port: this.url.port, path, headers: signed.headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
          const status = res.statusCode ?? 0;
          if (status >= 300) reject(new LightS3Error(status, all.toString('utf8')));
          else resolve({ status, body: all });
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  put(bucket: string, key: string, body: Buffer): Promise<unknown> {
    return this.send('PUT', bucket, key, body);
  }

  async get(bucket: string, key: string): Promise<Buffer> {
    return (await this.send('GET', bucket, key)).body;
  }

  destroy(): void {
    this.agent.destroy();
  }
}
