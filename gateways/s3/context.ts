/**
 * What every S3 operation gets: the parsed request, who sent it, the
 * gateway's stores, and helpers to read a verified body and to check access.
 */
import type { Readable } from 'node:stream';
import type { ChunkBody } from './chunk-body.js';
import type { ClientGets } from './client-gets.js';
import type { Io } from '../../src/io/io.js';
import type { TesseraClient } from '../../src/client/client.js';
import type { Striper } from '../../src/client/striper.js';
import { authorizeBucket } from './access.js';
import type { AuthResult, SigV4Verifier } from './auth/index.js';
import type { BucketStore, BucketRecord } from './meta/buckets.js';
import type { UserStore } from './meta/users.js';
import type { S3Request } from './request.js';
import type { MultipartLimits } from './ops/multipart-limits.js';

export interface S3Response {
  status: number;
  headers?: Record<string, string | number>;
  /** A ChunkBody lends its memory: the gateway gives each chunk back once the socket has written it (chunk-body.ts). */
  body?: string | Buffer | Readable | ChunkBody | null;
}

export interface GatewayServices {
  io: Io;
  client: TesseraClient;
  striper: Striper;
  users: UserStore;
  buckets: BucketStore;
  /** Replicated pool for users, buckets, bucket indexes and striped-object manifests. */
  metaPool: string;
  /** Default data pool of new buckets. */
  defaultDataPool: string;
  /** Index shard count of new buckets (kept in each bucket's record; existing buckets keep theirs). */
  indexShards: number;
  region: string;
  /** The request verifier, also for what is signed inside a body (POST policy documents). */
  verifier: SigV4Verifier;
  /** Multipart bounds lowered from S3's (ops/multipart-limits.ts); tests use it. */
  multipart?: Partial<MultipartLimits>;
  /**
   * Called at named points of a write ('after-data': data stored, entry not
   * committed; 'after-swap': entry committed, replaced data not removed) so
   * crash tests can kill the process there (`tessera s3` wires
   * TESSERA_S3_FAULT to SIGKILL). Absent in production.
   */
  faultPoint?: (name: 'after-data' | 'after-swap') => void;
  /** Journal records younger than this are writes in flight (meta/journal.ts). */
  journalGraceMs: number;
  /** GET responses in flight per client (client-gets.ts): GetObject takes a slot before it reads data. */
  clientGets: ClientGets;
}

export interface S3Context {
  req: S3Request;
  auth: AuthResult;
  /** The signed-in user's id, or null for anonymous requests. */
  userId: string | null;
  services: GatewayServices;
}

/**
 * The bucket if the caller owns it; AccessDenied otherwise (NoSuchBucket if
 * absent). For owner-only operations; access.ts decides every access
 * (authorizeBucket / authorizeObject name the action, and the ACLs decide).
 */
export function ownedBucket(ctx: S3Context, name: string): Promise<BucketRecord> {
  return authorizeBucket(ctx, 'BucketOwnerOnly', name);
}
