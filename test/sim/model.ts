/**
 * The simulation's workload model: what each object holds at each version
 * is a function of (seed, key, version), as in the fault suite's model
 * (test/helpers/fault-model.ts), with smaller objects so a run stays short:
 * mostly 64 B - 16 KiB (either side of the store's 512 B inline threshold),
 * sometimes up to 160 KiB (several stripes of an erasure-coded object).
 */
import type { ObjectOp } from '../../src/client/client.js';
import { applyOp } from '../helpers/fault-model.js';
import { fastBytes, seededRng } from '../helpers/random.js';

const KiB = 1024;

function mix(seed: number, key: string, version: number): number {
  let h = (seed ^ 0x811c9dc5) >>> 0;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  h = Math.imul(h ^ version, 0x9e3779b1) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export class SimContentModel {
  private readonly cache = new Map<string, { version: number; data: Buffer }>();

  constructor(readonly seed: number) {}

  opOf(key: string, version: number, previous: Buffer): ObjectOp {
    const r = seededRng(mix(this.seed, key, version));
    if (version === 1 || r.float() < 0.5) {
      const p = r.float();
      const sizeBytes = p < 0.3 ? 64 + r.int(448) : p < 0.9 ? 512 + r.int(16 * KiB) : 16 * KiB + r.int(144 * KiB);
      return { type: 'writeFull', data: fastBytes(r.int(0x7fffffff), sizeBytes) };
    }
    const offsetBytes = r.int(previous.length + 1);
    return { type: 'write', offsetBytes, data: fastBytes(r.int(0x7fffffff), 1 + r.int(8 * KiB)) };
  }

  contentAt(key: string, version: number): Buffer {
    let at = this.cache.get(key);
    if (!at || at.version > version) at = { version: 0, data: Buffer.alloc(0) };
    let data = at.data;
    for (let v = at.version + 1; v <= version; v++) data = applyOp(data, this.opOf(key, v, data));
    this.cache.set(key, { version, data });
    return data;
  }

  /** Which version (1..upTo) the bytes are, or -1. */
  whichVersion(key: string, upTo: number, got: Buffer): number {
    for (let v = upTo; v >= 1; v--) if (this.contentAt(key, v).equals(got)) return v;
    return -1;
  }
}
