/**
 * Writes frames to a socket: the head (prefix + header, one small buffer),
 * each payload buffer as it is (never copied or joined), then the payload's
 * checksum; or, for a streamed payload, its chunks as the stream yields them,
 * checksummed on the way, and the checksum behind the last one.
 *
 * Coalescing: frames written in the same turn of the event loop are corked
 * together; a microtask uncorks once the current synchronous work and the
 * promise continuations queued before it have run, so node hands all of them
 * to the kernel in one writev (64 calls in flight: one syscall, not 64; a lone
 * call goes out within the same turn). Every cork() has exactly one uncork().
 * The trailer of a frame waits for what comes next: it goes out in front of
 * the next frame's head, in the same small buffer, or alone when the turn's
 * writes are flushed (one socket write per small frame instead of two).
 *
 * Streams: a streamed frame holds the socket from its head to its trailer
 * (frames are never interleaved); frames written meanwhile wait behind it, in
 * order. The writer asks for the next chunk as soon as it has written one
 * (producing overlaps sending) and waits for 'drain' before writing another,
 * so a stream holds at most two chunks beyond what the kernel buffers. A
 * chunk whose crc32c its producer already knows (RpcPayloadPiece) is not read
 * again: its crc is combined into the trailer; a piece's release() runs when
 * the socket is done with its bytes (its write callback). A
 * stream that throws or yields more or fewer bytes than it announced cannot
 * be finished on the wire: the writer destroys the socket with that error.
 *
 * Backpressure for the owner: writable is false while the socket asks for
 * 'drain' or a stream is being sent; onWritable() is called when it turns
 * true again.
 */
import type { Duplex } from 'node:stream';
import { crc32c, crc32cCombine } from '../../native/index.js';
import { TesseraError, toTesseraError } from '../lib/errors.js';
import { encodeFrameHead, encodeTrailer, type OutgoingFrame } from './frame.js';
import { asPiece, payloadsCrc32c, streamOverrun, streamShort } from './payload.js';
import type { RpcPayloadPiece, RpcPayloadStream } from './types.js';

/** A streamed frame and the promise its sender waits on. */
class StreamJob {
  constructor(
    readonly frame: OutgoingFrame,
    readonly resolve: () => void,
    readonly reject: (err: TesseraError) => void,
  ) {}
}

function connectionClosed(): TesseraError {
  return new TesseraError('Unavailable', 'connection closed while a frame was being sent');
}

function ignore(): void {}

export class FrameWriter {
  private corked = false;
  /** crc32c of the last payload written, whose trailer is not written yet; -1: none. */
  private trailerCrc = -1;
  private needDrain = false;
  private closed = false;
  private streaming: StreamJob | null = null;
  /** Frames written while a stream is being sent, in order. */
  private readonly waiting: (OutgoingFrame | StreamJob)[] = [];
  /** Ends the stream's current wait (for its next chunk or for 'drain') when the socket closes. */
  private cancelWait: ((err: TesseraError) => void) | null = null;
  private drained: (() => void) | null = null;
  private readonly flush = (): void => {
    this.corked = false;
    const crc = this.takeTrailer();
    if (crc >= 0) this.send(encodeTrailer(crc));
    this.socket.uncork();
  };

  constructor(
    private readonly socket: Duplex,
    private readonly onWritable: () => void,
  ) {
    socket.on('drain', () => this.onDrain());
    socket.on('close', () => this.onClose());
  }

  get writable(): boolean {
    return !this.needDrain && this.streaming === null && !this.closed;
  }

  /** Is this frame's stream being sent right now? */
  isStreaming(frame: OutgoingFrame): boolean {
    return this.streaming?.frame === frame;
  }

  /** A frame with an in-memory payload; queued behind a stream if one is being sent. Returns writable. */
  write(frame: OutgoingFrame): boolean {
    if (this.closed) return false;
    if (this.streaming !== null) this.waiting.push(frame);
    else this.writeNow(frame);
    return this.writable;
  }

  /**
   * A frame with a streamed payload. Resolves once its last byte is handed to
   * the socket; rejects with the stream's failure (after destroying the
   * socket) or with Unavailable if the socket closes first.
   */
  writeStream(frame: OutgoingFrame): Promise<void> {
    return new Promise((resolve, reject) => {
      const job = new StreamJob(frame, resolve, reject);
      if (this.closed) reject(connectionClosed());
      else if (this.streaming !== null) this.waiting.push(job);
      else this.startStream(job);
    });
  }

  private writeNow(frame: OutgoingFrame): void {
    const payloads = frame.payload as readonly Uint8Array[];
    this.putHead(frame);
    if (frame.payloadBytes === 0) return;
    for (const p of payloads) if (p.byteLength > 0) this.send(p);
    this.trailerCrc = payloadsCrc32c(payloads);
  }

  /** The frame's head, with the previous frame's trailer in front if it is still waiting. */
  private putHead(frame: OutgoingFrame): void {
    this.cork();
    this.send(encodeFrameHead(frame, this.takeTrailer()));
  }

  private cork(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    queueMicrotask(this.flush);
  }

  private send(bytes: Uint8Array): void {
    if (!this.socket.write(bytes)) this.needDrain = true;
  }

  private takeTrailer(): number {
    const crc = this.trailerCrc;
    this.trailerCrc = -1;
    return crc;
  }

  private startStream(job: StreamJob): void {
    this.streaming = job;
    this.sendStream(job.frame).then(
      () => this.endStream(job, null),
      (err: unknown) => this.endStream(job, toTesseraError(err)),
    );
  }

  private async sendStream(frame: OutgoingFrame): Promise<void> {
    const { lengthBytes, chunks } = frame.payload as RpcPayloadStream;
    this.putHead(frame);
    let iterator: AsyncIterator<Uint8Array | RpcPayloadPiece> | null = null;
    let pending: Promise<IteratorResult<Uint8Array | RpcPayloadPiece>> | null = null;
    let crc = 0;
    let sentBytes = 0;
    try {
      iterator = chunks[Symbol.asyncIterator]();
      pending = iterator.next();
      for (;;) {
        const result = await this.nextChunk(pending);
        pending = null;
        if (result.done) break;
        const { bytes, crc32c: knownCrc, release } = asPiece(result.value);
        if (bytes.byteLength > lengthBytes - sentBytes) {
          release?.();
          throw streamOverrun(lengthBytes);
        }
        sentBytes += bytes.byteLength;
        if (bytes.byteLength > 0) {
          crc = knownCrc === undefined ? crc32c(bytes, crc) : crc32cCombine(crc, knownCrc, bytes.byteLength);
          // Nothing else is written during a stream: no trailer waits in front of its chunks.
          this.cork();
          if (release === undefined) this.send(bytes);
          else if (!this.socket.write(bytes, () => release())) this.needDrain = true;
        } else release?.();
        pending = iterator.next();
        if (this.needDrain) await this.drain();
      }
    } catch (err) {
      // Stop the stream; a chunk still being produced is dropped when it comes.
      pending?.catch(ignore);
      if (iterator?.return) Promise.resolve(iterator.return()).catch(ignore);
      throw err;
    }
    if (sentBytes < lengthBytes) throw streamShort(sentBytes, lengthBytes);
    if (lengthBytes > 0) {
      this.cork();
      this.trailerCrc = crc;
    }
  }

  private nextChunk(pending: Promise<IteratorResult<Uint8Array | RpcPayloadPiece>>): Promise<IteratorResult<Uint8Array | RpcPayloadPiece>> {
    if (this.closed) return Promise.reject(connectionClosed());
    return new Promise((resolve, reject) => {
      this.cancelWait = reject;
      pending.then(resolve, reject);
    });
  }

  private drain(): Promise<void> {
    if (this.closed) return Promise.reject(connectionClosed());
    return new Promise((resolve, reject) => {
      this.cancelWait = reject;
      this.drained = resolve;
    });
  }

  private endStream(job: StreamJob, err: TesseraError | null): void {
    this.streaming = null;
    this.cancelWait = null;
    this.drained = null;
    if (err !== null) {
      // The frame cannot be finished: nothing after it on this socket could be trusted.
      this.socket.destroy(err);
      job.reject(err);
      return;
    }
    job.resolve();
    while (this.waiting.length > 0 && this.streaming === null && !this.closed) {
      const next = this.waiting.shift()!;
      if (next instanceof StreamJob) this.startStream(next);
      else this.writeNow(next);
    }
    if (this.writable) this.onWritable();
  }

  private onDrain(): void {
    this.needDrain = false;
    const drained = this.drained;
    this.drained = null;
    if (drained !== null) drained();
    else if (this.writable) this.onWritable();
  }

  private onClose(): void {
    this.closed = true;
    this.cancelWait?.(connectionClosed());
    const err = connectionClosed();
    for (const queued of this.waiting.splice(0)) if (queued instanceof StreamJob) queued.reject(err);
  }
}
