/**
 * The S3 gateway: a fastify server whose single catch-all route parses the
 * request (path- or virtual-host-style), authenticates it (SigV4, presigned,
 * or anonymous), picks the operation (router.ts) and renders its answer or
 * its error (errors.ts: one table) as S3 XML. Bodies are never parsed by
 * fastify: operations stream them from the raw request through the body
 * verifier (aws-chunked framing, signatures, checksums) into the striper.
 *
 * Lifecycle: start() listens, then sweeps the write journal (meta/journal.ts:
 * data a killed gateway left unreferenced) at once and every
 * journalSweepIntervalMs; close() stops the sweeps, stops accepting and waits
 * for requests in flight (fastify's own drain), then returns.
 *
 * Metrics: with an `observer` (src/metrics S3Metrics, wired by src/cli/s3-metrics.ts) each request is
 * reported once its response has ended or its connection closed: its operation (router.ts's S3 name,
 * picked before authentication), outcome and S3 error code, time from arrival, and its body bytes both
 * ways (traffic.ts). Requests Node's parser refuses (client-error.ts) never reach the route and are not counted.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { Readable } from 'node:stream';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { S3RequestObserver } from '../../src/metrics/metrics.js';
import type { Io } from '../../src/io/io.js';
import type { TesseraClient } from '../../src/client/client.js';
import { Striper } from '../../src/client/striper.js';
import { limits } from '../../src/lib/limits.js';
import { SigV4Verifier } from './auth/index.js';
import { ClientGets, type ClientGetsStats } from './client-gets.js';
import { ChunkBody, ConnectionCloses, writeChunks, type WriteChunksOptions } from './chunk-body.js';
import type { GatewayServices, S3Context, S3Response } from './context.js';
import { s3Error, toS3Error, type S3ErrorCode } from './errors.js';
import { BucketStore } from './meta/buckets.js';
import { isIndexShardCount } from './meta/bucket-index.js';
import { UserStore } from './meta/users.js';
import type { SweepStats } from './meta/journal.js';
import { sweepWrites } from './ops/bucket.js';
import { baseDomainsOf, parseS3Request } from './request.js';
import { routeOf, UNPARSED_OPERATION } from './router.js';
import { countTraffic, type Traffic } from './traffic.js';
import { corsHeadersFor } from './ops/cors.js';
import { clientErrorHandler } from './client-error.js';
import { xmlDocument } from './xml.js';
import type { MultipartLimits } from './ops/multipart-limits.js';

export interface S3GatewayOptions {
  io: Io;
  client: TesseraClient;
  host: string;
  port: number;
  metaPool: string;
  defaultDataPool: string;
  /**
   * Index shards of buckets this gateway creates (meta/bucket-index.ts; default
   * limits.s3IndexShardsDefault, 8; limits.s3IndexShardsMin..Max). Stored in
   * each bucket's record: a bucket keeps its count whatever gateway serves it later.
   */
  indexShards?: number;
  region?: string;
  /** How long a bucket record read for an object read is reused (meta/buckets.ts; default 1000 ms, 0: never). Another gateway's bucket changes show within this. */
  bucketCacheMs?: number;
  /** How long an access key lookup is reused (meta/users.ts; default 5000 ms, 0: never). A removed key keeps working this long on other gateways. */
  accessKeyCacheMs?: number;
  /** Host suffixes for virtual-host-style addressing (bucket.<suffix>); default ["localhost"]. */
  baseDomains?: string[];
  /** Largest request header section, bytes (fastify/Node). */
  headerBytesMax?: number;
  /** Multipart bounds lowered from S3's (ops/multipart-limits.ts). */
  multipart?: Partial<MultipartLimits>;
  /** Journal records younger than this are writes in flight, left alone by sweeps (default 1 h). */
  journalGraceMs?: number;
  /** Time between journal sweeps (default 10 min; the first runs at start; 0: only the first). */
  journalSweepIntervalMs?: number;
  /** Each sweep's figures (for logs and tests). */
  onJournalSweep?: (stats: SweepStats) => void;
  /** A GET response that waits for its client this long without progress is cut (chunk-body.ts; default limits.s3ResponseStallMsMax). */
  responseStallMs?: number;
  /** GET responses streaming from the cluster one client (access key, else remote address) may have in flight; more are refused SlowDown (client-gets.ts; default limits.s3GetsInflightPerClientMax). */
  getsInflightPerClientMax?: number;
  /** How long a GET over that limit waits for a slot before SlowDown (client-gets.ts; default limits.s3GetSlotWaitMsMax; 0: refused at once). */
  getSlotWaitMs?: number;
  /** Each request answered, for metrics (src/metrics S3Metrics; src/cli/s3-metrics.ts). */
  observer?: S3RequestObserver;
  /** Crash-test hook (context.ts GatewayServices.faultPoint). */
  faultPoint?: GatewayServices['faultPoint'];
}

export const JOURNAL_GRACE_MS_DEFAULT = 60 * 60 * 1000;
export const JOURNAL_SWEEP_INTERVAL_MS_DEFAULT = 10 * 60 * 1000;

export class S3Gateway {
  private readonly sweeps = new AbortController();
  private sweeping: Promise<void> = Promise.resolve();

  private constructor(
    private readonly app: FastifyInstance,
    readonly services: GatewayServices,
    readonly port: number,
  ) {}

  /** GET responses in flight per client, and the refusals (client-gets.ts). */
  clientGets(): ClientGetsStats {
    return this.services.clientGets.stats();
  }

  /** Connections open to the S3 port. */
  connections(): Promise<number> {
    return new Promise((resolve, reject) => this.app.server.getConnections((err, count) => (err ? reject(err) : resolve(count))));
  }

  /** The striper's piece memory budget (all PUTs and GETs of this gateway): reserved now, and its size. */
  striperMemory(): { reservedBytes: number; budgetBytes: number } {
    const { reservedBytes, budgetBytes } = this.services.striper.memory();
    return { reservedBytes, budgetBytes };
  }

  /** One journal sweep over every bucket (or one), with the gateway's grace period unless given. */
  sweepJournal(o: { graceMs?: number; bucketName?: string } = {}): Promise<SweepStats> {
    return sweepWrites(this.services, { ...o, signal: this.sweeps.signal });
  }

  private startSweeps(intervalMs: number, onSweep: ((stats: SweepStats) => void) | undefined): void {
    const loop = async (): Promise<void> => {
      for (;;) {
        try {
          const stats = await this.sweepJournal();
          if (!this.sweeps.signal.aborted) onSweep?.(stats);
        } catch (err) {
          if (!this.sweeps.signal.aborted) console.error(`s3: journal sweep failed: ${(err as Error)?.message ?? err}`);
        }
        if (intervalMs <= 0 || this.sweeps.signal.aborted) return;
        try {
          await this.services.io.clock.sleep(intervalMs, this.sweeps.signal);
        } catch {
          return; // aborted: closing
        }
      }
    };
    // First the bucket registry's owner index, checked against the records (built on a cluster an older version wrote: meta/bucket-owners.ts).
    this.sweeping = this.services.buckets
      .buildOwnerIndex(this.sweeps.signal)
      .catch((err) => {
        if (!this.sweeps.signal.aborted) console.error(`s3: bucket owner index: ${(err as Error)?.message ?? err}`);
      })
      .then(loop);
  }

  static async start(o: S3GatewayOptions): Promise<S3Gateway> {
    const indexShards = o.indexShards ?? limits.s3IndexShardsDefault;
    if (!isIndexShardCount(indexShards)) throw new Error(`S3Gateway: indexShards ${indexShards} is not an integer from ${limits.s3IndexShardsMin} to ${limits.s3IndexShardsMax}`);
    const connections = new ConnectionCloses();
    const services: GatewayServices = {
      io: o.io,
      client: o.client,
      striper: new Striper(o.client),
      users: new UserStore(o.io, o.client, o.metaPool, o.accessKeyCacheMs),
      buckets: new BucketStore(o.io, o.client, o.metaPool, o.bucketCacheMs),
      metaPool: o.metaPool,
      defaultDataPool: o.defaultDataPool,
      indexShards,
      region: o.region ?? 'us-east-1',
      verifier: new SigV4Verifier({ lookupKey: (ak) => services.users.lookupKey(ak), clock: o.io.clock }),
      ...(o.multipart ? { multipart: o.multipart } : {}),
      journalGraceMs: o.journalGraceMs ?? JOURNAL_GRACE_MS_DEFAULT,
      clientGets: new ClientGets({
        perClientMax: o.getsInflightPerClientMax ?? limits.s3GetsInflightPerClientMax,
        waitMs: o.getSlotWaitMs ?? limits.s3GetSlotWaitMsMax,
        waitersMax: limits.s3GetSlotWaitersPerClientMax,
        clock: o.io.clock,
        connections,
      }),
      ...(o.faultPoint ? { faultPoint: o.faultPoint } : {}),
    };
    const responseStallMs = o.responseStallMs ?? limits.s3ResponseStallMsMax;
    if (!Number.isSafeInteger(responseStallMs) || responseStallMs < 1) throw new Error(`S3Gateway: responseStallMs ${responseStallMs} is not a positive integer`);
    const verifier = services.verifier;
    const baseDomains = baseDomainsOf(o.baseDomains ?? ['localhost']);
    const app: FastifyInstance = Fastify({
      // No logger, so no request logging either (disableRequestLogging is deprecated in fastify 5).
      logger: false,
      http: { maxHeaderSize: o.headerBytesMax ?? 16 * 1024 },
      bodyLimit: 1024 * 1024,
      return503OnClosing: true,
      clientErrorHandler,
      routerOptions: { maxParamLength: 4096, ignoreDuplicateSlashes: false, ignoreTrailingSlash: false, caseSensitive: true },
    } as FastifyServerOptions);
    // Body bytes each way, for metrics (traffic.ts): counted from the server's first request on.
    const traffic = o.observer ? countTraffic(app.server) : null;
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));
    const handle = async (raw: IncomingMessage, seen: RequestSeen): Promise<S3Response> => {
      const req = parseS3Request(raw, baseDomains);
      const operation = routeOf(req, services);
      seen.op = operation.name;
      const auth = await verifier.verify(raw);
      const ctx: S3Context = { req, auth, userId: auth.kind === 'signed' ? auth.userId : null, services };
      return operation.run(ctx);
    };
    app.all('*', async (request, reply) => {
      const seen: RequestSeen = { op: UNPARSED_OPERATION, errorCode: null };
      if (o.observer && traffic) reportWhenDone(o.observer, o.io.clock, reply.raw, () => traffic.of(request.raw), seen);
      let res: S3Response;
      try {
        res = await handle(request.raw, seen);
      } catch (err) {
        const { error, internal } = toS3Error(err);
        seen.errorCode = error.code;
        if (internal) console.error(`s3: ${request.method} ${request.url}: ${(err as Error)?.stack ?? err}`);
        res = {
          status: error.status,
          // A request whose body we did not read: do not let the client hang sending it.
          headers: { 'content-type': 'application/xml', ...error.headers, ...(request.raw.readableEnded ? {} : { connection: 'close' }) },
          body:
            error.status === 304 || request.method === 'HEAD'
              ? null
              : xmlDocument('Error', { Code: error.code, Message: error.message, ...error.details, Resource: request.url, RequestId: '' }, { namespace: false }),
        };
      }
      // A browser's cross-origin request (errors included) gets the Access-Control-* headers its bucket's CORS rules allow.
      let cors: Record<string, string> | null;
      try {
        cors = request.raw.headers.origin !== undefined ? await corsHeadersFor(services, request.raw, baseDomains) : null;
      } catch (err) {
        // A body that lends memory (and holds its client's GET slot) is given back, never left for the collector.
        if (res.body instanceof ChunkBody) await res.body.discard();
        throw err;
      }
      if (res.body instanceof ChunkBody) {
        reply.hijack();
        await writeChunked(reply.raw, res, res.body, cors, { clock: o.io.clock, stallMs: responseStallMs, connections });
        return reply;
      }
      if (res.body instanceof Readable) {
        reply.code(res.status);
        if (res.headers) reply.headers(res.headers);
        if (cors) reply.headers(cors);
        return reply.send(res.body);
      }
      // Everything else (no body, a buffer, an XML document) is written here in one writeHead + end.
      reply.hijack();
      writeWhole(request.raw.method, reply.raw, res, cors);
      return reply;
    });
    const address = await app.listen({ host: o.host, port: o.port });
    const port = Number(new URL(address).port);
    const gateway = new S3Gateway(app, services, port);
    gateway.startSweeps(o.journalSweepIntervalMs ?? JOURNAL_SWEEP_INTERVAL_MS_DEFAULT, o.onJournalSweep);
    return gateway;
  }

  async close(): Promise<void> {
    this.sweeps.abort();
    await this.sweeping;
    await this.app.close();
  }
}

/** What the handler learned of a request, for its metrics sample. */
interface RequestSeen {
  op: string;
  /** The error it was answered with, if any. */
  errorCode: S3ErrorCode | null;
}

/**
 * Reports the request to `observer` once its response ended or its connection closed ('close' comes
 * either way): ok when answered below 400 and written to its end; a response cut before then is "Aborted"
 * unless an error answer was chosen.
 */
function reportWhenDone(observer: S3RequestObserver, clock: Io['clock'], out: ServerResponse, traffic: () => Traffic, seen: RequestSeen): void {
  const startedMs = clock.monotonicMs();
  out.once('close', () => {
    const finished = out.writableFinished;
    const ok = finished && out.statusCode < 400;
    const { receivedBytes, sentBytes } = traffic();
    observer.observe({
      op: seen.op,
      ok,
      seconds: (clock.monotonicMs() - startedMs) / 1000,
      receivedBytes,
      sentBytes,
      errorCode: ok ? null : (seen.errorCode ?? (finished ? null : 'Aborted')),
    });
  });
}

/**
 * Writes a response whose body is in memory (or absent) straight to Node's
 * ServerResponse, as fastify's reply.send would (content-length, and
 * content-type for a body without one; none on 204/304 or HEAD), without its
 * per-request work (its content-type parsing, onSend chain, header copies):
 * half of fastify's share of a 4 KiB GET's CPU samples (docs/s3-api.md,
 * "The gateway's CPU per small request"). A header Node still refuses (response-* overrides are
 * checked before: ops/object.ts) is answered InternalError (500, S3 XML) and
 * the connection closed, never a hung connection.
 */
function writeWhole(method: string | undefined, out: ServerResponse, res: S3Response, cors: Record<string, string> | null): void {
  const headers = headersOf(res, cors);
  let body = res.body as string | Buffer | null | undefined;
  if (body === undefined || body === null || res.status === 204 || res.status < 200) {
    if (res.status === 204 || res.status < 200) {
      delete headers['content-length'];
      delete headers['content-type'];
    } else if (res.status !== 304 && method !== 'HEAD') {
      headers['content-length'] = 0;
    }
    body = null;
  } else {
    headers['content-type'] ??= typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/octet-stream';
    const lengthBytes = Buffer.byteLength(body);
    const declared = headers['content-length'];
    if (declared === undefined || (method !== 'HEAD' && Number(declared) !== lengthBytes)) headers['content-length'] = lengthBytes;
  }
  if (!writeHead(method, out, res.status, headers)) return;
  if (body === null) out.end();
  else out.end(body);
}

/** A GetObject body of lent chunks (chunk-body.ts): the head (content-length set by the operation), then the chunks. */
async function writeChunked(out: ServerResponse, res: S3Response, body: ChunkBody, cors: Record<string, string> | null, o: WriteChunksOptions): Promise<void> {
  if (!writeHead('GET', out, res.status, headersOf(res, cors))) return body.discard();
  return writeChunks(out, body, o);
}

function headersOf(res: S3Response, cors: Record<string, string> | null): Record<string, string | number> {
  const headers: Record<string, string | number> = {};
  if (res.headers) for (const name in res.headers) headers[name.toLowerCase()] = res.headers[name]!;
  if (cors) for (const name in cors) headers[name.toLowerCase()] = cors[name]!;
  return headers;
}

/** writeHead, or (headers Node refuses) an InternalError answer with the connection closed: false then. */
function writeHead(method: string | undefined, out: ServerResponse, status: number, headers: Record<string, string | number>): boolean {
  try {
    out.writeHead(status, headers);
    return true;
  } catch (err) {
    console.error(`s3: response headers refused: ${(err as Error)?.stack ?? err}`);
    const xml = xmlDocument('Error', { Code: 'InternalError', Message: 'We encountered an internal error. Please try again.', RequestId: '' }, { namespace: false });
    out.writeHead(500, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml), connection: 'close' });
    out.end(method === 'HEAD' ? undefined : xml);
    return false;
  }
}

export { s3Error };
