/**
 * Raw HTTP/1.1 on node:net sockets against an S3 gateway, for what an HTTP
 * client library hides: several GETs pipelined in one write, responses left
 * unread (the gateway's socket writes stay pending), a chosen local address
 * (another anonymous client: any 127.x.y.z reaches a gateway on 127.0.0.1).
 * Requests are presigned GETs (SigV4 in the query, via
 * @aws-sdk/s3-request-presigner) or plain unsigned ones.
 */
import { connect, type Socket } from 'node:net';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { expect } from 'vitest';

/** The request target (path and query) of a presigned GET of bucket/key on the gateway at endpoint. */
export async function presignedGet(o: { endpoint: string; accessKeyId: string; secretAccessKey: string; bucket: string; key: string }): Promise<string> {
  const signer = new S3Client({
    endpoint: o.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  try {
    const url = new URL(await getSignedUrl(signer, new GetObjectCommand({ Bucket: o.bucket, Key: o.key }), { expiresIn: 600 }));
    return `${url.pathname}${url.search}`;
  } finally {
    signer.destroy();
  }
}

/**
 * A raw connection that has sent `targets` as pipelined GETs in one write (the last with Connection: close when
 * asked). Unless `read`, the socket is paused: the client takes nothing.
 */
export async function pipelined(port: number, targets: string[], o: { lastCloses: boolean; read: boolean; localAddress?: string }): Promise<Socket> {
  const socket = connect({ port, host: '127.0.0.1', ...(o.localAddress !== undefined ? { localAddress: o.localAddress } : {}) });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => undefined);
  if (!o.read) socket.pause();
  const requests = targets.map((t, i) => `GET ${t} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${o.lastCloses && i === targets.length - 1 ? 'Connection: close\r\n' : ''}\r\n`);
  socket.write(requests.join(''));
  return socket;
}

export interface RawGetResponse {
  status: number;
  head: string;
  body: Buffer;
}

/** Splits what a connection received into responses (status, head, body by Content-Length). */
export function splitResponses(all: Buffer): RawGetResponse[] {
  const out: RawGetResponse[] = [];
  let at = 0;
  while (at < all.length) {
    const headEnd = all.indexOf('\r\n\r\n', at);
    expect(headEnd, 'a whole response head').toBeGreaterThan(at);
    const head = all.subarray(at, headEnd).toString('latin1');
    const status = Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1]);
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1]);
    expect(Number.isSafeInteger(length), head).toBe(true);
    out.push({ status, head, body: all.subarray(headEnd + 4, headEnd + 4 + length) });
    at = headEnd + 4 + length;
  }
  return out;
}

/** Everything the connection receives (from now) until the server closes it, split into responses. */
export async function responsesOf(socket: Socket, received: Buffer[] = []): Promise<RawGetResponse[]> {
  const parts = received;
  socket.on('data', (b: Buffer) => parts.push(b));
  await new Promise<void>((resolve, reject) => {
    socket.once('end', resolve);
    socket.once('close', resolve);
    socket.once('error', reject);
    socket.resume();
  });
  return splitResponses(Buffer.concat(parts));
}

/**
 * One GET (Connection: close) whose response the client stops reading once its head has arrived: the gateway is
 * then writing its body, and the socket's buffers fill (the object must be larger than they take in). What came is
 * in `received`; responsesOf(socket, received) reads the rest.
 */
export async function heldGet(port: number, target: string, o: { localAddress?: string } = {}): Promise<{ socket: Socket; received: Buffer[]; status: number }> {
  const socket = await pipelined(port, [target], { lastCloses: true, read: false, ...o });
  const received: Buffer[] = [];
  const status = await new Promise<number>((resolve, reject) => {
    const onData = (b: Buffer): void => {
      received.push(b);
      const all = Buffer.concat(received);
      if (all.indexOf('\r\n\r\n') < 0) return;
      socket.off('data', onData);
      socket.pause();
      resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(all.toString('latin1', 0, 32))?.[1]));
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error('the connection closed before a response head')));
    socket.resume();
  });
  return { socket, received, status };
}
