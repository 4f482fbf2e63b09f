/**
 * The metadata key layout in the KvStore. One byte of prefix per record kind:
 *
 *   S <name>                         singletons: identity, counters
 *   O <ns u32> <sortKey u32> <name>  object record (onode), ordered for listing
 *   M <nid u64> <omap key>           omap entry of the object with that nid
 *   G <segmentId u32>                segment record (size, live bytes)
 *   P <nid u64>                      omap of a removed object, to purge
 *
 * Integers are big-endian so byte order is numeric order. An object's omap is
 * keyed by a number (nid) allocated once and never reused, so removing an
 * object or clearing its omap is O(1): the old nid is queued for purging.
 */
import { objectSortKey } from '../lib/hash.js';
import type { ObjectId } from './types.js';

export const Prefix = {
  singleton: 0x53, // S
  object: 0x4f, // O
  omap: 0x4d, // M
  segment: 0x47, // G
  purge: 0x50, // P
} as const;

export const singletonKey = (name: string): Buffer => Buffer.concat([Buffer.from([Prefix.singleton]), Buffer.from(name, 'utf8')]);

export function objectKey(id: ObjectId, sortKey = objectSortKey(id.name)): Buffer {
  const name = Buffer.from(id.name, 'utf8');
  const key = Buffer.allocUnsafe(9 + name.length);
  key[0] = Prefix.object;
  key.writeUInt32BE(id.ns >>> 0, 1);
  key.writeUInt32BE(sortKey >>> 0, 5);
  name.copy(key, 9);
  return key;
}

/** Lower bound of objects in ns with sortKey >= sortKey (sortKey may be 2^32: the end of ns). */
export function objectKeyBound(ns: number, sortKey: number): Buffer {
  const key = Buffer.alloc(9);
  key[0] = Prefix.object;
  if (sortKey >= 0x1_0000_0000) {
    key.writeUInt32BE((ns + 1) >>> 0, 1);
    if (ns >= 0xffff_ffff) return Buffer.from([Prefix.object + 1]);
    return key;
  }
  key.writeUInt32BE(ns >>> 0, 1);
  key.writeUInt32BE(sortKey >>> 0, 5);
  return key;
}

export function parseObjectKey(key: Buffer): { id: ObjectId; sortKey: number } {
  return {
    id: { ns: key.readUInt32BE(1), name: key.toString('utf8', 9) },
    sortKey: key.readUInt32BE(5),
  };
}

function u64(prefix: number, value: number, extraBytes = 0): Buffer {
  const key = Buffer.allocUnsafe(9 + extraBytes);
  key[0] = prefix;
  key.writeUInt32BE(Math.floor(value / 0x1_0000_0000), 1);
  key.writeUInt32BE(value >>> 0, 5);
  return key;
}

export function omapKey(nid: number, key: Buffer): Buffer {
  const k = u64(Prefix.omap, nid, key.length);
  key.copy(k, 9);
  return k;
}

/** The omap prefix of nid; keys of nid are in [omapPrefix(nid), omapPrefix(nid + 1)). */
export const omapPrefix = (nid: number): Buffer => u64(Prefix.omap, nid);

export const omapUserKey = (kvKey: Buffer): Buffer => kvKey.subarray(9);

export const purgeKey = (nid: number): Buffer => u64(Prefix.purge, nid);
export const parsePurgeKey = (key: Buffer): number => key.readUInt32BE(1) * 0x1_0000_0000 + key.readUInt32BE(5);

export function segmentKey(segmentId: number): Buffer {
  const key = Buffer.allocUnsafe(5);
  key[0] = Prefix.segment;
  key.writeUInt32BE(segmentId, 1);
  return key;
}

export const parseSegmentKey = (key: Buffer): number => key.readUInt32BE(1);


export const prefixEnd = (prefix: number): Buffer => Buffer.from([prefix + 1]);
