/**
 * Body bytes each request brought and each response took, for the gateway's
 * metrics (gateway.ts reports them per request). Counted where Node hands
 * them over, so whichever operation reads the body (piped through the body
 * verifier, read whole, or a form) and whichever path writes the answer
 * (whole, streamed by fastify, or lent chunks), every byte is seen once.
 *
 * How: a 'request' listener on the gateway's HTTP server (ahead of fastify's) wraps the request's
 * push (what Node's parser feeds it the body through) and the response's
 * write and end. Node emits 'request' synchronously when the parser has the
 * headers, before it goes on to the body bytes that came with them, so no
 * byte passes before the wrappers are in place. (Not subclasses given to
 * createServer: the gateway does not import node:http, test/tidy.test.ts.)
 *
 * Received: the bytes pushed into the request (the body as sent: aws-chunked
 * framing included); a body the gateway leaves unread is discarded by Node,
 * not counted. Sent: the bytes given to write() and end() (what the
 * connection was handed; a response cut short may not have delivered them
 * all); none for HEAD, 204 and 304, which Node sends without a body.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface Traffic {
  receivedBytes: number;
  sentBytes: number;
}

interface RequestEmitter {
  prependListener(event: 'request', listener: (req: IncomingMessage, res: ServerResponse) => void): unknown;
}

/** Counts every request's and response's body bytes from now on; `of(request)` reads them (zeros for one not seen). */
export function countTraffic(server: RequestEmitter): { of(req: IncomingMessage): Traffic } {
  const counts = new WeakMap<IncomingMessage, Traffic>();
  // Before fastify's own listener, which starts the route handler synchronously.
  server.prependListener('request', (req, res) => {
    const traffic: Traffic = { receivedBytes: 0, sentBytes: 0 };
    counts.set(req, traffic);
    const push = req.push.bind(req);
    req.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
      traffic.receivedBytes += byteLengthOf(chunk, encoding);
      return push(chunk, encoding);
    };
    const sent = (chunk: unknown, encoding: unknown): void => {
      if (req.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304) return;
      traffic.sentBytes += byteLengthOf(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : undefined);
    };
    const write = res.write.bind(res) as (...args: unknown[]) => boolean;
    res.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
      sent(chunk, rest[0]);
      return write(chunk, ...rest);
    }) as ServerResponse['write'];
    const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
    res.end = ((...args: unknown[]): ServerResponse => {
      if (typeof args[0] !== 'function') sent(args[0], args[1]);
      return end(...args);
    }) as ServerResponse['end'];
  });
  return { of: (req) => counts.get(req) ?? { receivedBytes: 0, sentBytes: 0 } };
}

function byteLengthOf(chunk: unknown, encoding: BufferEncoding | undefined): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, encoding);
  if (chunk instanceof Uint8Array) return chunk.byteLength;
  return 0;
}
