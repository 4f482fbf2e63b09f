/** crc32c for the layers above the client (gateways), from native/ (ISA-L or the portable fallback). */
export { crc32c } from '../../native/index.js';
