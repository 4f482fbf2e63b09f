/**
 * Helpers for the access-control tests: a second (third...) user with its own
 * SDK client, the error an SDK call ends with, and plain HTTP requests with
 * any headers (an Origin, no signature at all) as a browser or curl sends them.
 */
import { request } from 'node:http';
import type { S3Client } from '@aws-sdk/client-s3';
import type { S3TestEnv } from './s3.js';

export interface TestUser {
  userId: string;
  email: string;
  s3: S3Client;
  accessKeyId: string;
  secretAccessKey: string;
}

export async function addUser(env: S3TestEnv, displayName: string, email: string): Promise<TestUser> {
  const user = await env.gateway.services.users.create({ displayName, email });
  const key = await env.gateway.services.users.addKey(user.userId);
  return { userId: user.userId, email, s3: env.s3({ accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey }), accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey };
}

export async function errorOf(p: Promise<unknown>): Promise<{ name: string; status: number | undefined; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode, message: e.message };
  }
  throw new Error('expected an error');
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One HTTP request, unsigned, exactly as given (node:http lets us set Origin and send OPTIONS). */
export function rawRequest(endpoint: string, o: { method: string; path: string; headers?: Record<string, string>; body?: Buffer | string }): Promise<RawResponse> {
  const url = new URL(o.path, endpoint);
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method, headers: o.headers ?? {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/** The <Code> of an S3 XML error body. */
export const codeOf = (body: Buffer | string): string | undefined => /<Code>([^<]*)<\/Code>/.exec(body.toString())?.[1];
