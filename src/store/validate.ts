/**
 * Checks a transaction against the store's limits before it is queued, so a
 * transaction that breaks one fails with LimitExceeded or InvalidArgument and
 * changes nothing.
 */
import { invalid, limitExceeded } from '../lib/errors.js';
import type { ObjectId, StoreOp } from './types.js';

export interface ValidationLimits {
  objectSizeBytesMax: number;
  objectNameBytesMax: number;
  xattrNameBytesMax: number;
  xattrValueBytesMax: number;
  omapKeyBytesMax: number;
  omapValueBytesMax: number;
  txnOpsMax: number;
  txnBytesMax: number;
  txnOmapKeysMax: number;
}

function checkId(id: ObjectId, l: ValidationLimits): void {
  if (!Number.isInteger(id.ns) || id.ns < 0 || id.ns > 0xffff_ffff) throw invalid(`namespace ${id.ns} is not a 32-bit unsigned integer`);
  if (typeof id.name !== 'string' || id.name.length === 0) throw invalid('object name is empty');
  const bytes = Buffer.byteLength(id.name, 'utf8');
  if (bytes > l.objectNameBytesMax) throw limitExceeded(`object name is ${bytes} bytes, limit ${l.objectNameBytesMax}`);
}

function checkRange(offsetBytes: number, lengthBytes: number, l: ValidationLimits): void {
  if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0) throw invalid(`offset ${offsetBytes} is not a non-negative integer`);
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes < 0) throw invalid(`length ${lengthBytes} is not a non-negative integer`);
  if (offsetBytes + lengthBytes > l.objectSizeBytesMax) {
    throw limitExceeded(`range ends at ${offsetBytes + lengthBytes} bytes, beyond the object size limit ${l.objectSizeBytesMax}`);
  }
}

function checkOmapKey(key: Buffer, l: ValidationLimits): void {
  if (!Buffer.isBuffer(key)) throw invalid('omap key is not a Buffer');
  if (key.length > l.omapKeyBytesMax) throw limitExceeded(`omap key is ${key.length} bytes, limit ${l.omapKeyBytesMax}`);
}

function checkXattrName(name: string, l: ValidationLimits): void {
  if (typeof name !== 'string' || name.length === 0) throw invalid('xattr name is empty');
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > l.xattrNameBytesMax) throw limitExceeded(`xattr name is ${bytes} bytes, limit ${l.xattrNameBytesMax}`);
}

/** Returns the payload bytes the transaction carries. */
export function validateTransaction(ops: readonly StoreOp[], l: ValidationLimits): number {
  if (!Array.isArray(ops) || ops.length === 0) throw invalid('a transaction needs at least one operation');
  if (ops.length > l.txnOpsMax) throw limitExceeded(`transaction has ${ops.length} operations, limit ${l.txnOpsMax}`);
  let bytes = 0;
  let omapKeys = 0;
  for (const op of ops) {
    checkId(op.id, l);
    switch (op.type) {
      case 'write':
        checkRange(op.offsetBytes, op.data.length, l);
        bytes += op.data.length;
        break;
      case 'writeFull':
      case 'append':
        checkRange(0, op.data.length, l);
        bytes += op.data.length;
        break;
      case 'truncate':
        checkRange(op.sizeBytes, 0, l);
        break;
      case 'zero':
        checkRange(op.offsetBytes, op.lengthBytes, l);
        break;
      case 'setXattr':
        checkXattrName(op.name, l);
        if (op.value.length > l.xattrValueBytesMax) throw limitExceeded(`xattr value is ${op.value.length} bytes, limit ${l.xattrValueBytesMax}`);
        bytes += op.value.length;
        break;
      case 'removeXattr':
      case 'assertXattr':
        checkXattrName(op.name, l);
        break;
      case 'omapSet':
        for (const [key, value] of op.entries) {
          checkOmapKey(key, l);
          if (value.length > l.omapValueBytesMax) throw limitExceeded(`omap value is ${value.length} bytes, limit ${l.omapValueBytesMax}`);
          bytes += key.length + value.length;
        }
        omapKeys += op.entries.length;
        break;
      case 'omapCompare':
        checkOmapKey(op.key, l);
        if (op.value && op.value.length > l.omapValueBytesMax) throw limitExceeded(`omap value is ${op.value.length} bytes, limit ${l.omapValueBytesMax}`);
        omapKeys++;
        break;
      case 'omapRemoveKeys':
        for (const key of op.keys) checkOmapKey(key, l);
        omapKeys += op.keys.length;
        break;
      case 'omapRemoveRange':
        checkOmapKey(op.startKey, l);
        checkOmapKey(op.endKey, l);
        break;
      case 'move':
        checkId(op.to, l);
        break;
      case 'moveRange':
        checkId(op.from, l);
        checkRange(op.offsetBytes, op.lengthBytes, l);
        checkRange(op.fromOffsetBytes, op.lengthBytes, l);
        if (op.from.ns === op.id.ns && op.from.name === op.id.name) throw invalid('moveRange needs two different objects');
        break;
      case 'create':
      case 'remove':
      case 'assertExists':
      case 'omapClear':
        break;
      default:
        throw invalid(`unknown operation ${(op as { type: unknown }).type}`);
    }
  }
  if (bytes > l.txnBytesMax) throw limitExceeded(`transaction carries ${bytes} bytes, limit ${l.txnBytesMax}`);
  if (omapKeys > l.txnOmapKeysMax) throw limitExceeded(`transaction touches ${omapKeys} omap keys, limit ${l.txnOmapKeysMax}`);
  return bytes;
}
