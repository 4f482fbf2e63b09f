/**
 * Writes frames to a socket: the head (prefix + header, one small buffer),
 * then each payload buffer as it is; payloads are never copied or joined.
 *
 * Frames written in the same turn of the event loop are coalesced: the first
 * write corks the socket and a microtask uncorks it once the current
 * synchronous work and the promise continuations queued before it have run,
 * so node hands all of them to the kernel in one writev. With 64 calls in
 * flight this turns 64 syscalls into one; a lone call still goes out within
 * the same turn (no timer, no added latency). Invariant: every cork() has
 * exactly one uncork() (flush), queued when the writer corks.
 */
import type { Duplex } from 'node:stream';
import { encodeFrameHead, type OutgoingFrame } from './frame.js';

export class FrameWriter {
  private corked = false;
  private readonly flush = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  constructor(private readonly socket: Duplex) {}

  /** Returns write()'s verdict: false means the socket's buffer is full; wait for 'drain' before writing more. */
  write(frame: OutgoingFrame): boolean {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      queueMicrotask(this.flush);
    }
    let ok = this.socket.write(encodeFrameHead(frame));
    if (frame.payloadBytes > 0) {
      for (const p of frame.payloads) if (p.byteLength > 0) ok = this.socket.write(p);
    }
    return ok;
  }
}
