/**
 * The embedded map store's files. One file per epoch, `epoch-<16 digits>.map`,
 * written once, atomically and durably (io.fs.writeFileAtomic: temp file,
 * fsync, rename, fsync of the directory). Its content:
 *
 *   tessera-map 1 <epoch> <bodyBytes> <crc32c of body, 8 hex digits>\n
 *   <body: the map's canonical JSON (cluster/map-codec.ts)>
 *
 * The header line makes the files readable with `head`; the checksum and the
 * length catch torn or bit-rotted files, which read as Corrupt, never as an
 * older or partial map.
 */
import { crc32c } from '../native/index.js';
import { TesseraError, corrupt } from '../src/lib/errors.js';
import { limits } from '../src/lib/limits.js';
import { decodeMap, encodeMap } from './map-codec.js';
import type { ClusterMap } from './map.js';

const magic = 'tessera-map';
const formatVersion = 1;
const headerBytesMax = 128;
const namePattern = /^epoch-([0-9]{16})\.map$/;

export function mapFileName(epoch: number): string {
  return `epoch-${String(epoch).padStart(16, '0')}.map`;
}

/** The epoch a map file name stands for; null for any other name. */
export function epochOfFileName(name: string): number | null {
  const match = namePattern.exec(name);
  if (match === null) return null;
  const epoch = Number(match[1]);
  return Number.isSafeInteger(epoch) && epoch >= 1 ? epoch : null;
}

/** Leftovers of an interrupted writeFileAtomic (".<name>.tmp"). */
export const isLeftoverFileName = (name: string): boolean => name.startsWith('.') && name.endsWith('.tmp');

export function encodeMapFile(map: ClusterMap): Buffer {
  const body = encodeMap(map);
  const crc = crc32c(body).toString(16).padStart(8, '0');
  return Buffer.concat([Buffer.from(`${magic} ${formatVersion} ${map.epoch} ${body.length} ${crc}\n`), body]);
}

/** Decodes and checks a map file read back from disk: Corrupt unless it is whole and of the expected epoch. */
export function decodeMapFile(bytes: Buffer, expectedEpoch: number, path: string): ClusterMap {
  if (bytes.length > limits.mapBytesMax + headerBytesMax) throw corrupt(`${path}: ${bytes.length} bytes, larger than any map`);
  const newline = bytes.subarray(0, headerBytesMax).indexOf(0x0a);
  if (newline < 0) throw corrupt(`${path}: no header line`);
  const fields = bytes.subarray(0, newline).toString('latin1').split(' ');
  if (fields.length !== 5 || fields[0] !== magic) throw corrupt(`${path}: not a tessera map file`);
  if (fields[1] !== String(formatVersion)) throw new TesseraError('UnsupportedFormat', `${path}: map file format ${fields[1]}, this version reads ${formatVersion}`);
  const body = bytes.subarray(newline + 1);
  if (fields[2] !== String(expectedEpoch)) throw corrupt(`${path}: header says epoch ${fields[2]}, file name ${expectedEpoch}`);
  if (fields[3] !== String(body.length)) throw corrupt(`${path}: body is ${body.length} bytes, header says ${fields[3]} (torn write?)`);
  const crc = crc32c(body).toString(16).padStart(8, '0');
  if (fields[4] !== crc) throw corrupt(`${path}: checksum ${crc}, header says ${fields[4]}`);
  const map = decodeMap(body, { errorCode: 'Corrupt' });
  if (map.epoch !== expectedEpoch) throw corrupt(`${path}: holds epoch ${map.epoch}, file name says ${expectedEpoch}`);
  return map;
}
