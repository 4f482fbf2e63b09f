/**
 * What every S3 operation gets: the parsed request, who sent it, the
 * gateway's stores, and helpers to read a verified body and to check access.
 */
import type { Readable } from 'node:stream';
import type { Io } from '../../src/io/io.js';
import type { TesseraClient } from '../../src/client/client.js';
import type { Striper } from '../../src/client/striper.js';
import type { AuthResult } from './auth/index.js';
import type { BucketStore, BucketRecord } from './meta/buckets.js';
import type { UserStore } from './meta/users.js';
import type { S3Request } from './request.js';

export interface S3Response {
  status: number;
  headers?: Record<string, string | number>;
  body?: string | Buffer | Readable | null;
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
  region: string;
}

export interface S3Context {
  req: S3Request;
  auth: AuthResult;
  /** The signed-in user's id, or null for anonymous requests. */
  userId: string | null;
  services: GatewayServices;
}

/** The bucket if the caller owns it (or, later, an ACL allows the access); AccessDenied otherwise. */
export async function ownedBucket(ctx: S3Context, name: string): Promise<BucketRecord> {
  const b = await ctx.services.buckets.require(name);
  if (ctx.userId !== b.owner) {
    const { s3Error } = await import('./errors.js');
    throw s3Error('AccessDenied', 'Access Denied');
  }
  return b;
}
