/**
 * The workload model of the fault suite: what each object holds at each of
 * its versions is a function of (seed, key, version), so the test keeps only
 * outcomes (which version was acknowledged), never the bytes. Version 1 is a
 * full write; later versions are a full write or a write at an offset, drawn
 * from the same function. A version can be forced to be a full write (the
 * suite does that to overwrite a copy it corrupted); the model remembers it.
 */
import type { ObjectOp } from '../../src/client/client.js';
import { seededRng } from './random.js';

const KiB = 1024;

export interface KeyState {
  key: string;
  /** Last acknowledged version (0: never written). */
  acked: number;
  /** A write of version acked+1 failed: the object holds acked or acked+1; the key is left alone until the end. */
  uncertain: boolean;
  /** An operation or a fault holds the key. */
  busy: boolean;
}

function mix(seed: number, key: string, version: number): number {
  let h = (seed ^ 0x811c9dc5) >>> 0;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  h = Math.imul(h ^ version, 0x9e3779b1) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export class ContentModel {
  private readonly forcedFull = new Set<string>();
  /** The last content computed per key (versions mostly go up: compute forward from it). */
  private readonly cache = new Map<string, { version: number; data: Buffer }>();

  constructor(readonly seed: number) {}

  forceFull(key: string, version: number): void {
    this.forcedFull.add(`${key}@${version}`);
  }

  /** The operation that makes version `version` of `key` out of `previous`. */
  opOf(key: string, version: number, previous: Buffer): ObjectOp {
    const r = seededRng(mix(this.seed, key, version));
    const full = version === 1 || this.forcedFull.has(`${key}@${version}`) || r.float() < 0.5;
    if (full) {
      const p = r.float();
      const sizeBytes = p < 0.6 ? 4 * KiB + r.int(28 * KiB) : p < 0.9 ? 32 * KiB + r.int(224 * KiB) : 256 * KiB + r.int(768 * KiB);
      return { type: 'writeFull', data: r.bytes(sizeBytes) };
    }
    const offsetBytes = r.int(previous.length + 1);
    return { type: 'write', offsetBytes, data: r.bytes(1 + r.int(16 * KiB)) };
  }

  contentAt(key: string, version: number): Buffer {
    let at = this.cache.get(key);
    if (!at || at.version > version) at = { version: 0, data: Buffer.alloc(0) };
    let data = at.data;
    for (let v = at.version + 1; v <= version; v++) data = applyOp(data, this.opOf(key, v, data));
    this.cache.set(key, { version, data });
    return data;
  }
}

export function applyOp(before: Buffer, op: ObjectOp): Buffer {
  if (op.type === 'writeFull') return op.data;
  if (op.type !== 'write') throw new Error(`model: unexpected op ${op.type}`);
  const end = op.offsetBytes + op.data.length;
  const next = Buffer.alloc(Math.max(end, before.length));
  before.copy(next);
  op.data.copy(next, op.offsetBytes);
  return next;
}
