/**
 * The bounds the rpc layer works within: the subset of src/lib/limits.ts it
 * reads, with per-instance overrides (tests shrink them). Resolved once when a
 * transport is created; an override that breaks a relationship between limits
 * is refused there (InvalidArgument), never discovered on the hot path.
 */
import { invalid } from '../lib/errors.js';
import { limits } from '../lib/limits.js';

export interface RpcLimits {
  /** Header + payload bytes of one frame (the fixed prefix not counted). */
  frameBytesMax: number;
  frameHeaderBytesMax: number;
  /** Requests in flight on one connection (server: handlers running; client: sent, unanswered). */
  connectionInflightMax: number;
  /** Requests, and request bytes, being served by one server across its connections. */
  daemonInflightMax: number;
  daemonInflightBytesMax: number;
  connectionsPerDaemonMax: number;
  rpcTimeoutMsDefault: number;
  /** Calls a client holds waiting beyond its connectionInflightMax in flight; beyond both a call fails Busy. */
  rpcQueueMax: number;
  /** Connection attempts plus sends of one call before it fails Unavailable. */
  rpcAttemptsMax: number;
  rpcReconnectBackoffMsMin: number;
  rpcReconnectBackoffMsMax: number;
  rpcDrainTimeoutMsDefault: number;
  rpcErrorMessageBytesMax: number;
}

/** Frame lengths travel as u32 on the wire. */
const u32Max = 0xffff_ffff;

export function resolveRpcLimits(overrides?: Partial<RpcLimits>): RpcLimits {
  const resolved: RpcLimits = {
    frameBytesMax: limits.frameBytesMax,
    frameHeaderBytesMax: limits.frameHeaderBytesMax,
    connectionInflightMax: limits.connectionInflightMax,
    daemonInflightMax: limits.daemonInflightMax,
    daemonInflightBytesMax: limits.daemonInflightBytesMax,
    connectionsPerDaemonMax: limits.connectionsPerDaemonMax,
    rpcTimeoutMsDefault: limits.rpcTimeoutMsDefault,
    rpcQueueMax: limits.rpcQueueMax,
    rpcAttemptsMax: limits.rpcAttemptsMax,
    rpcReconnectBackoffMsMin: limits.rpcReconnectBackoffMsMin,
    rpcReconnectBackoffMsMax: limits.rpcReconnectBackoffMsMax,
    rpcDrainTimeoutMsDefault: limits.rpcDrainTimeoutMsDefault,
    rpcErrorMessageBytesMax: limits.rpcErrorMessageBytesMax,
    ...overrides,
  };
  for (const [name, value] of Object.entries(resolved)) {
    if (!Number.isSafeInteger(value) || value < 0) throw invalid(`rpc limit ${name} must be a non-negative integer, is ${value}`);
  }
  check(resolved.frameBytesMax <= u32Max, 'frameBytesMax fits in a u32');
  check(resolved.frameHeaderBytesMax <= resolved.frameBytesMax, 'frameHeaderBytesMax <= frameBytesMax');
  check(resolved.rpcErrorMessageBytesMax + 4 <= resolved.frameHeaderBytesMax, 'an error reply fits in a frame header');
  check(resolved.connectionInflightMax >= 1 && resolved.daemonInflightMax >= 1, 'in-flight limits are at least 1');
  check(resolved.rpcAttemptsMax >= 1, 'rpcAttemptsMax >= 1');
  check(resolved.rpcReconnectBackoffMsMin <= resolved.rpcReconnectBackoffMsMax, 'backoff min <= max');
  return resolved;
}

function check(condition: boolean, what: string): void {
  if (!condition) throw invalid(`rpc limits: expected ${what}`);
}
