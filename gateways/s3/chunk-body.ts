/**
 * A response body of chunks that lend their memory (StripedChunk: GetObject's
 * bytes, read by the striper into its reused buffers), and the writer that
 * sends it on Node's ServerResponse and gives each chunk back.
 *
 * Invariant: a chunk is released as reusable only from the socket write
 * callback that reported its bytes written without error, or when it was
 * never handed to the response at all. A response that ends first releases
 * what it still has in flight as not reusable: the budget is freed, the
 * buffers are dropped to the collector, since a queued or in-flight write
 * may still read them. So a buffer is never filled by another read while its
 * bytes may still be sent (test/s3-get-buffers.test.ts). A response ends
 * first when:
 * - it closes (the client went away mid-body, or a read failed and the
 *   response was cut);
 * - its connection closes. Not the same: with HTTP pipelining (several
 *   requests in one write on a keep-alive connection) Node answers them in
 *   order, and a response behind another is not attached to the socket
 *   until the one ahead finishes. Until then its writes are buffered in the
 *   response and their callbacks never run; if the connection closes, Node
 *   emits 'close' on the response ahead and on the requests, but never on
 *   that response. Its chunks stay buffered in it (not reusable), and
 *   without this its budget and the striper's read-ahead were held forever
 *   (about 16 MiB per such GET; 16 connections took the whole 256 MiB);
 * - its connection makes no progress for `stallMs` (limits.s3ResponseStallMsMax,
 *   120 s by default; the gateway's responseStallMs): the socket has writes
 *   pending (this response's, or the one's ahead of it), and none completed,
 *   no 'drain' here, nothing new written. The connection is destroyed, so a
 *   client that stops reading (and a response stuck behind one that does)
 *   holds its memory for between one and two times `stallMs`, not forever.
 *   Waiting for the cluster does not count. A write is a whole chunk
 *   (a piece, 4 MiB by default), so a client must take each chunk within
 *   `stallMs`: at 120 s, about 35 KB/s.
 *
 * When the writer stops (every chunk written, or any of these ends) it calls
 * the body's end() once: GetObject's slot among its client's GETs in flight
 * (client-gets.ts) goes back then.
 *
 * Backpressure: after each chunk the writer waits for 'drain' (or the end)
 * before it asks for the next, so a slow client holds at most the chunk
 * being written plus the striper's read-ahead, all inside the striper's byte
 * budget.
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { StripedChunk } from '../../src/client/striper.js';
import type { Clock, TimerHandle } from '../../src/io/io.js';
import { isTesseraError } from '../../src/lib/errors.js';

export class ChunkBody {
  private ended = false;

  constructor(
    /** Already read (GetObject reads the first chunk before it answers, to retry a replaced object). */
    readonly first: StripedChunk,
    readonly rest: AsyncGenerator<StripedChunk>,
    /** Called once when the response is over, however it ended (GetObject's slot in client-gets.ts). */
    private readonly onEnd: () => void = () => {},
  ) {}

  /** The response is over (written, cut or failed): runs onEnd, once. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd();
  }

  /** Gives everything back unwritten (the response never sent a byte of it). */
  async discard(): Promise<void> {
    this.first.release(true);
    this.end();
    await this.rest.return(undefined).catch(() => undefined);
  }
}

export interface WriteChunksOptions {
  /** The gateway's clock (the stall check's timer). */
  clock: Clock;
  /** A response waiting for its client this long without progress is cut (limits.s3ResponseStallMsMax by default in the gateway). */
  stallMs: number;
  /** The gateway's watch of its connections' closes. */
  connections: ConnectionCloses;
}

/**
 * Writes the body after the response's head was written; resolves when it is all handed to the response, or cut.
 * Chunks still in flight then are released by their write callbacks, or by the end (close, connection close, stall).
 */
export async function writeChunks(out: ServerResponse, body: ChunkBody, o: WriteChunksOptions): Promise<void> {
  const { clock, stallMs } = o;
  if (!Number.isSafeInteger(stallMs) || stallMs < 1) throw new Error(`writeChunks: stallMs ${stallMs} is not a positive integer`);
  // The connection: a pipelined response not yet attached has no out.socket, its request has.
  const socket: Socket | null = out.req?.socket ?? out.socket ?? null;
  // Chunks handed to the response whose write callback has not run yet.
  const inFlight = new Set<StripedChunk>();
  let closed = out.destroyed || socket === null || socket.destroyed;
  let ended = false; // out.end() called: nothing more will be written
  let wake: (() => void) | null = null; // the writer waiting for 'drain'
  let progress = 0; // write callbacks and drains so far
  let stopped = false;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    if (stallTimer !== null) clock.clearTimeout(stallTimer);
    stallTimer = null;
    unsubscribe();
    body.end();
  };
  const onEnd = (): void => {
    closed = true;
    // Their bytes may still sit in the response's or the socket's queue: free the budget, never reuse the buffers.
    for (const chunk of inFlight) chunk.release(false);
    inFlight.clear();
    const w = wake;
    wake = null;
    w?.();
    stop();
  };
  out.once('close', onEnd);
  const unsubscribe = socket && !closed ? o.connections.onClose(socket, onEnd) : (): void => {};
  // The stall check: each tick, if the connection has bytes it cannot get rid of (its socket's writes pending: this
  // response's, or those of the response ahead of a pipelined one) and nothing moved since the last tick (no write
  // callback or drain here, no byte written or taken on the connection), the connection is destroyed. Waiting for
  // the cluster (the socket's writes all done) is not the client's stall.
  let seen: string | null = null;
  const tick = (): void => {
    stallTimer = null;
    if (closed || stopped || socket === null) return;
    const now = socket.writableLength > 0 ? `${progress} ${socket.bytesWritten} ${socket.writableLength}` : null;
    if (now === null || now !== seen) {
      seen = now;
      stallTimer = clock.setTimeout(tick, stallMs);
      return;
    }
    socket.destroy();
    out.destroy();
    onEnd();
  };
  let stallTimer: TimerHandle | null = clock.setTimeout(tick, stallMs);
  if (closed) onEnd();
  const send = (chunk: StripedChunk): boolean => {
    inFlight.add(chunk);
    return out.write(chunk.data, (err) => {
      progress++;
      if (inFlight.delete(chunk)) chunk.release(!err);
      if (ended && inFlight.size === 0) stop();
    });
  };
  const onDrain = (): void => {
    progress++;
    const w = wake;
    wake = null;
    w?.();
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
      if (!flowing && !closed) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          out.once('drain', onDrain);
        });
        out.off('drain', onDrain);
      }
      if (closed) break;
      const n = await body.rest.next();
      next = n.done ? null : n.value;
    }
    if (!closed) {
      ended = true;
      out.end();
      if (inFlight.size === 0) stop();
    }
  } catch (err) {
    // A read failed after the head was sent (the object replaced and its data removed, a cluster error): cut the
    // response (the client sees fewer bytes than its Content-Length), as S3 does. What it has in flight is released
    // now: a response not yet attached to its connection emits no 'close'.
    if (!isTesseraError(err, 'Conflict')) console.error(`s3: response body: ${(err as Error)?.stack ?? err}`);
    out.destroy();
    onEnd();
  } finally {
    await body.rest.return(undefined).catch(() => undefined);
  }
}

/**
 * The closes of a gateway's connections: one 'close' listener per socket, however many responses wait on it (a
 * pipelined burst is answered by many writers at once; a listener each would pile up on the socket).
 */
export class ConnectionCloses {
  private readonly waiters = new WeakMap<Socket, Set<() => void>>();

  /** Calls `fn` once when the connection closes; returns the unsubscribe. */
  onClose(socket: Socket, fn: () => void): () => void {
    let waiters = this.waiters.get(socket);
    if (!waiters) {
      const set = new Set<() => void>();
      waiters = set;
      this.waiters.set(socket, set);
      socket.once('close', () => {
        this.waiters.delete(socket);
        for (const f of [...set]) f();
        set.clear();
      });
    }
    const w = waiters;
    w.add(fn);
    return () => {
      w.delete(fn);
    };
  }
}
