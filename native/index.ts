/**
 * native/: checksums and erasure coding at hardware speed.
 * (Placeholder until the ISA-L addon lands: crc32c comes from @node-rs/crc32.)
 *
 * crc32c(data, previous) continues a running value: crc32c(b, crc32c(a)) equals
 * crc32c(a followed by b). The result is an unsigned 32-bit integer.
 */
import { crc32c as nodeRsCrc32c } from '@node-rs/crc32';

export function crc32c(data: Uint8Array, previous = 0): number {
  return nodeRsCrc32c(data as Buffer, previous) >>> 0;
}

export const checksumImplementation = '@node-rs/crc32';
