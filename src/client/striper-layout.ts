/**
 * The striper's layout in the cluster (docs/striper.md): names and encodings
 * only, no I/O.
 *
 * - The manifest is the object `name` in the manifest pool. Its xattrs say
 *   what the object is: str.v (format), str.gen (generation: 32 hex digits,
 *   fresh and random on every put), str.size, str.piece (piece size; 0 when
 *   the data is inline), str.pool (the pieces' pool), str.attrs (the
 *   caller's attributes, encoded). Its
 *   data is the object's bytes when inline, then the generation as a 32-byte
 *   trailer (a striped object's manifest holds only the trailer): one read
 *   returns data and generation together, so a reader can tell whether the
 *   bytes belong to the metadata it read.
 * - Piece i of generation g is the object `base\0g\0i` in the piece pool,
 *   where base is the name, or "sha256-" + its hash when the name is too long
 *   to leave room for the suffix. Pieces are immutable once written.
 * - Pending-registry shards: `\0str\0pending\0k` in the manifest pool (see
 *   striper-registry.ts). Names containing "\0" are the striper's own: user
 *   names may not contain it.
 */
import { createHash } from 'node:crypto';
import type { Random } from '../io/io.js';
import { Reader, Writer } from '../lib/codec.js';
import { TesseraError, corrupt, invalid, limitExceeded } from '../lib/errors.js';
import { murmur3 } from '../lib/hash.js';
import { limits } from '../lib/limits.js';
import type { ObjectOp } from './client.js';

/** Where striped objects live: one pool for both, or manifests (replicated: xattrs, omap) apart from pieces (e.g. erasure-coded). */
export type StripedPool = string | { manifests: string; pieces: string };

export interface PoolPair {
  manifests: string;
  pieces: string;
}

export const poolPair = (pool: StripedPool): PoolPair => (typeof pool === 'string' ? { manifests: pool, pieces: pool } : pool);

/** What a manifest says about a striped object. */
export interface Manifest {
  generation: string;
  sizeBytes: number;
  /** 0 when the data is inline in the manifest. */
  pieceBytes: number;
  /** The pool holding the pieces (null when inline): readers and cleaners follow the manifest, not the caller's pool pair. */
  piecesPool: string | null;
  attrs: Map<string, Buffer>;
}

/**
 * One generation of a striped object, as its put returned it: enough to read
 * that generation's bytes without reading its manifest first (Striper.getAt).
 */
export interface StripedRef {
  generation: string;
  sizeBytes: number;
  /** 0 when the data is inline in the manifest. */
  pieceBytes: number;
  /** The pieces' pool (null when inline). */
  piecesPool: string | null;
}

export const GENERATION_CHARS = 32;
const FORMAT = '1';
export const X = { format: 'str.v', generation: 'str.gen', size: 'str.size', piece: 'str.piece', pool: 'str.pool', attrs: 'str.attrs' } as const;

const GENERATION_PATTERN = /^[0-9a-f]{32}$/;
const PIECE_PATTERN = /^([^\0]*)\0([0-9a-f]{32})\0(\d{1,16})$/;
/** Room the piece suffix ("\0" + generation + "\0" + index) needs in an object name. */
const PIECE_SUFFIX_BYTES_MAX = 2 + GENERATION_CHARS + 16;
const PIECE_BASE_BYTES_MAX = limits.objectNameBytesMax - PIECE_SUFFIX_BYTES_MAX;

export const newGeneration = (random: Random): string => random.bytes(GENERATION_CHARS / 2).toString('hex');

export const isGeneration = (s: string): boolean => GENERATION_PATTERN.test(s);

/** User names: non-empty UTF-8 within the object name limit, without "\0" (reserved for the striper's own objects). */
export function checkName(name: string): void {
  if (name.length === 0) throw invalid('a striped object needs a name');
  if (name.includes('\0')) throw invalid('striped object names may not contain "\\0"');
  if (Buffer.byteLength(name) > limits.objectNameBytesMax) throw limitExceeded(`object name is longer than ${limits.objectNameBytesMax} bytes`);
}

export function pieceName(name: string, generation: string, index: number): string {
  const base = Buffer.byteLength(name) <= PIECE_BASE_BYTES_MAX ? name : `sha256-${createHash('sha256').update(name).digest('hex')}`;
  return `${base}\0${generation}\0${index}`;
}

/** The generation and index of a piece's object name; null for any other name. */
export function parsePieceName(objectName: string): { generation: string; index: number } | null {
  const m = PIECE_PATTERN.exec(objectName);
  return m ? { generation: m[2]!, index: Number(m[3]) } : null;
}

export const registryShardName = (shard: number): string => `\0str\0pending\0${shard}`;

export const registryShardOf = (key: string): number => murmur3(Buffer.from(key)) % limits.striperRegistryShards;

export const pieceCount = (m: { sizeBytes: number; pieceBytes: number }): number => (m.pieceBytes === 0 ? 0 : Math.ceil(m.sizeBytes / m.pieceBytes));

export const trailer = (generation: string): Buffer => Buffer.from(generation, 'latin1');

export function encodeAttrs(attrs: ReadonlyMap<string, Buffer>): Buffer {
  if (attrs.size > limits.striperAttrCountMax) throw limitExceeded(`more than ${limits.striperAttrCountMax} attributes`);
  const w = new Writer(64).varint(attrs.size);
  for (const [name, value] of attrs) {
    if (name.length === 0 || Buffer.byteLength(name) > limits.xattrNameBytesMax) throw invalid(`attribute name must be 1 to ${limits.xattrNameBytesMax} bytes`);
    w.string(name).bytes(value);
  }
  const out = w.finish();
  if (out.length > limits.striperAttrsBytesMax) throw limitExceeded(`attributes take ${out.length} bytes encoded, more than ${limits.striperAttrsBytesMax}`);
  return out;
}

function decodeAttrs(data: Buffer): Map<string, Buffer> {
  const r = new Reader(data, 'Corrupt', 'striped object attributes');
  const count = r.varint(limits.striperAttrCountMax);
  const attrs = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) attrs.set(r.string(limits.xattrNameBytesMax), Buffer.from(r.bytes(limits.striperAttrsBytesMax)));
  r.end();
  return attrs;
}

/** The xattr writes that make an object the manifest m (every striper xattr is set: none is left from before). */
export function manifestXattrOps(m: Manifest, encodedAttrs: Buffer): ObjectOp[] {
  return [
    { type: 'setXattr', name: X.format, value: Buffer.from(FORMAT) },
    { type: 'setXattr', name: X.generation, value: Buffer.from(m.generation) },
    { type: 'setXattr', name: X.size, value: Buffer.from(String(m.sizeBytes)) },
    { type: 'setXattr', name: X.piece, value: Buffer.from(String(m.pieceBytes)) },
    { type: 'setXattr', name: X.pool, value: Buffer.from(m.piecesPool ?? '') },
    { type: 'setXattr', name: X.attrs, value: encodedAttrs },
  ];
}

/** The manifest an object's xattrs describe; null when the object is not a striped object (no generation). */
export function parseManifest(xattrs: Map<string, Buffer>, what: string): Manifest | null {
  const gen = xattrs.get(X.generation)?.toString('latin1');
  if (gen === undefined) return null;
  const bad = (why: string): TesseraError => corrupt(`striped object ${what}: ${why}`);
  if (xattrs.get(X.format)?.toString() !== FORMAT) throw bad('unknown manifest format');
  const sizeBytes = decimal(xattrs.get(X.size));
  const pieceBytes = decimal(xattrs.get(X.piece));
  if (sizeBytes === null) throw bad('bad size');
  if (pieceBytes === null) throw bad('bad piece size');
  const piecesPool = pieceBytes === 0 ? null : (xattrs.get(X.pool)?.toString() ?? '');
  const problem = layoutProblem({ generation: gen, sizeBytes, pieceBytes, piecesPool });
  if (problem) throw bad(problem);
  const attrs = xattrs.get(X.attrs);
  return { generation: gen, sizeBytes, pieceBytes, piecesPool, attrs: attrs ? decodeAttrs(attrs) : new Map() };
}

/** What makes a generation's layout impossible (a manifest's, or a StripedRef a caller kept); null when it is sound. */
export function layoutProblem(ref: StripedRef): string | null {
  const whole = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;
  if (!isGeneration(ref.generation)) return 'malformed generation';
  if (!whole(ref.sizeBytes) || ref.sizeBytes > limits.striperObjectSizeBytesMax) return 'bad size';
  const inline = ref.pieceBytes === 0;
  if (!whole(ref.pieceBytes) || (!inline && (ref.pieceBytes < limits.striperPieceBytesMin || ref.pieceBytes > limits.striperPieceBytesMax))) return 'bad piece size';
  if (inline && ref.sizeBytes > limits.striperPieceBytesMax) return 'inline data larger than a piece';
  if (!inline && !ref.piecesPool) return 'no pieces pool';
  return null;
}

function decimal(value: Buffer | undefined): number | null {
  const s = value?.toString('latin1');
  if (s === undefined || !/^\d{1,16}$/.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
}
