/**
 * A response body of chunks that lend their memory (StripedChunk: GetObject's
 * bytes, read by the striper into its reused buffers), and the writer that
 * sends it on Node's ServerResponse and gives each chunk back.
 *
 * Invariant: a chunk is released as reusable only from the socket write
 * callback that reported its bytes written without error, or when it was
 * never handed to the response at all. A response that closes first (the
 * client went away mid-body, or a read failed and the response was cut)
 * releases what it still has in flight as not reusable: the budget is freed,
 * the buffers are dropped to the collector, since a queued or in-flight
 * write may still read them. So a buffer is never filled by another read
 * while its bytes may still be sent (test/s3-get-buffers.test.ts).
 *
 * Backpressure: after each chunk the writer waits for 'drain' (or 'close')
 * before it asks for the next, so a slow client holds at most the chunk
 * being written plus the striper's read-ahead, all inside the striper's byte
 * budget.
 */
import type { ServerResponse } from 'node:http';
import type { StripedChunk } from '../../src/client/striper.js';
import { isTesseraError } from '../../src/lib/errors.js';

export class ChunkBody {
  constructor(
    /** Already read (GetObject reads the first chunk before it answers, to retry a replaced object). */
    readonly first: StripedChunk,
    readonly rest: AsyncGenerator<StripedChunk>,
  ) {}

  /** Gives everything back unwritten (the response never sent a byte of it). */
  async discard(): Promise<void> {
    this.first.release(true);
    await this.rest.return(undefined).catch(() => undefined);
  }
}

/** Writes the body after the response's head was written; resolves when it is all handed to the socket, or cut. */
export async function writeChunks(out: ServerResponse, body: ChunkBody): Promise<void> {
  // Chunks handed to the response whose write callback has not run yet.
  const inFlight = new Set<StripedChunk>();
  let closed = out.destroyed;
  const onClose = (): void => {
    closed = true;
    // Their bytes may still sit in the response's or the socket's queue: free the budget, never reuse the buffers.
    for (const chunk of inFlight) chunk.release(false);
    inFlight.clear();
  };
  out.once('close', onClose);
  const send = (chunk: StripedChunk): boolean => {
    inFlight.add(chunk);
    return out.write(chunk.data, (err) => {
      if (inFlight.delete(chunk)) chunk.release(!err);
    });
  };
  let next: StripedChunk | null = body.first;
  try {
    while (next) {
      if (closed) {
        next.release(true); // never handed to the response
        break;
      }
      const flowing = send(next);
      next = null;
      if (!flowing && !closed) await drainOrClose(out);
      if (closed) break;
      const n = await body.rest.next();
      next = n.done ? null : n.value;
    }
    if (!closed) out.end();
  } catch (err) {
    // A read failed after the head was sent (the object replaced and its data removed, a cluster error): cut the
    // response (the client sees fewer bytes than its Content-Length), as S3 does.
    if (!isTesseraError(err, 'Conflict')) console.error(`s3: response body: ${(err as Error)?.stack ?? err}`);
    out.destroy();
  } finally {
    await body.rest.return(undefined).catch(() => undefined);
  }
}

function drainOrClose(out: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      out.off('drain', done);
      out.off('close', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
  });
}
