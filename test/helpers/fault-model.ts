/**
 * The workload model of the fault suite: what each object holds at each of
 * its versions is a function of (seed, key, version), so the test keeps only
 * outcomes (which version was acknowledged), never the bytes. Version 1 is a
 * full write; later versions are a full write or a write at an offset, drawn
 * from the same function. A version can be forced to be a full write (the
 * suite does that to overwrite a copy it corrupted); the model remembers it.
 *
 * An object is (pool, key): contents depend on the key only (the same name in
 * two pools starts with the same bytes), but a forced full write belongs to
 * one pool's object. Finding 5 of docs/testing.md was these marks (and the
 * cache) shared by name: forcing ec/obj-3's version 7 changed what the model
 * said rep/obj-3's version 9 held (57303 B instead of the 217881 B the
 * cluster held and returned), a "read of bytes of no version".
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
  /** The last content computed per pool/key (versions mostly go up: compute forward from it). */
  private readonly cache = new Map<string, { version: number; data: Buffer }>();

  constructor(readonly seed: number) {}

  /** Version `version` of pool/key is a full write (drops cached contents at or past it: they change). */
  forceFull(pool: string, key: string, version: number): void {
    this.forcedFull.add(`${pool}/${key}@${version}`);
    const at = this.cache.get(`${pool}/${key}`);
    if (at && at.version >= version) this.cache.delete(`${pool}/${key}`);
  }

  /** The operation that makes version `version` of pool/key out of `previous`. */
  opOf(pool: string, key: string, version: number, previous: Buffer): ObjectOp {
    const r = seededRng(mix(this.seed, key, version));
    const full = version === 1 || this.forcedFull.has(`${pool}/${key}@${version}`) || r.float() < 0.5;
    if (full) {
      const p = r.float();
      const sizeBytes = p < 0.6 ? 4 * KiB + r.int(28 * KiB) : p < 0.9 ? 32 * KiB + r.int(224 * KiB) : 256 * KiB + r.int(768 * KiB);
      return { type: 'writeFull', data: r.bytes(sizeBytes) };
    }
    const offsetBytes = r.int(previous.length + 1);
    return { type: 'write', offsetBytes, data: r.bytes(1 + r.int(16 * KiB)) };
  }

  contentAt(pool: string, key: string, version: number): Buffer {
    const id = `${pool}/${key}`;
    let at = this.cache.get(id);
    if (!at || at.version > version) at = { version: 0, data: Buffer.alloc(0) };
    let data = at.data;
    for (let v = at.version + 1; v <= version; v++) data = applyOp(data, this.opOf(pool, key, v, data));
    this.cache.set(id, { version, data });
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
