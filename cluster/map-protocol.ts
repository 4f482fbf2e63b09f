/**
 * The map service on the wire (src/rpc frames): opcodes 100-119 (the store
 * uses 1-9) and the encoding of each request and reply header. Maps travel
 * as the frame payload in their canonical JSON form (cluster/map-codec.ts).
 *
 *   100 current  request: (empty)                        reply: epoch; payload: map
 *   101 update   request: expectedEpoch; payload: map    reply: epoch stored
 *   102 watch    request: sinceEpoch, waitMs             reply: epoch; payload: map if epoch > sinceEpoch, else empty
 *
 * Numbers are unsigned varints. `watch` is a long-poll: the server answers as
 * soon as it has a map newer than sinceEpoch, or after waitMs (at most
 * limits.mapWatchWaitMsMax) with an empty payload. Every decoder treats its
 * input as untrusted: ProtocolError on malformed headers.
 */
import { Reader, Writer } from '../src/lib/codec.js';
import { limits } from '../src/lib/limits.js';

export const MapOpcode = {
  current: 100,
  update: 101,
  watch: 102,
} as const;

export const mapOpcodeMin = 100;
export const mapOpcodeMax = 119;

const reader = (header: Buffer, what: string): Reader => new Reader(header, 'ProtocolError', what);

function oneNumber(header: Buffer, what: string): number {
  const r = reader(header, what);
  const value = r.varint();
  r.end();
  return value;
}

export const encodeEpoch = (epoch: number): Buffer => new Writer(10).varint(epoch).finish();
/** Reply headers of current, update and watch; the update request header (expectedEpoch). */
export const decodeEpoch = (header: Buffer, what: string): number => oneNumber(header, what);

export interface WatchRequest {
  sinceEpoch: number;
  waitMs: number;
}

export const encodeWatchRequest = (w: WatchRequest): Buffer => new Writer(20).varint(w.sinceEpoch).varint(w.waitMs).finish();

export function decodeWatchRequest(header: Buffer): WatchRequest {
  const r = reader(header, 'map watch request');
  const request = { sinceEpoch: r.varint(), waitMs: r.varint(limits.mapWatchWaitMsMax) };
  r.end();
  return request;
}
