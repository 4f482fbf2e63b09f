/**
 * The closed list of operating errors. Each has a stable numeric code (it
 * crosses the wire in the rpc protocol) and a stable string name. Gateways map
 * these once, at their edge, to S3 error codes, SCSI sense data or errno.
 *
 * Add a code only at the end; never renumber.
 */
export const ErrorCode = {
  Internal: 1,
  InvalidArgument: 2,
  NotFound: 3,
  AlreadyExists: 4,
  LimitExceeded: 5,
  NoSpace: 6,
  Corrupt: 7,
  Timeout: 8,
  Unavailable: 9,
  Closed: 10,
  StaleEpoch: 11,
  NoQuorum: 12,
  Busy: 13,
  Aborted: 14,
  ProtocolError: 15,
  WrongCluster: 16,
  UnsupportedFormat: 17,
  Locked: 18,
  Conflict: 19,
  NotSupported: 20,
  /** A disk of the placement group is over its full ratio: writes are refused cluster-wide (deletes still work). */
  Full: 21,
  /**
   * The map daemons refuse this disk a primary lease: disks of other hosts report it unreachable (cluster/peer-reports.ts).
   * Its heartbeats are refused until the reports lapse; it is marked down once its last lease has ended.
   */
  Fenced: 22,
} as const;

export type ErrorCodeName = keyof typeof ErrorCode;
const codeNames = new Map<number, ErrorCodeName>(
  (Object.entries(ErrorCode) as [ErrorCodeName, number][]).map(([name, code]) => [code, name]),
);

export class TesseraError extends Error {
  override name = 'TesseraError';
  readonly code: ErrorCodeName;
  constructor(code: ErrorCodeName, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
  get numericCode(): number {
    return ErrorCode[this.code];
  }
  /** Rebuilds an error that crossed the wire; unknown codes become Internal. */
  static fromWire(numericCode: number, message: string): TesseraError {
    return new TesseraError(codeNames.get(numericCode) ?? 'Internal', message);
  }
}

export function isTesseraError(err: unknown, code?: ErrorCodeName): err is TesseraError {
  return err instanceof TesseraError && (code === undefined || err.code === code);
}

/** Wraps anything thrown into a TesseraError; unknown failures become Internal with the cause kept. */
export function toTesseraError(err: unknown): TesseraError {
  if (err instanceof TesseraError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new TesseraError('Internal', message, { cause: err });
}

// Constructors that read well at the throw site.
export const invalid = (message: string): TesseraError => new TesseraError('InvalidArgument', message);
export const notFound = (message: string): TesseraError => new TesseraError('NotFound', message);
export const limitExceeded = (message: string): TesseraError => new TesseraError('LimitExceeded', message);
export const corrupt = (message: string, cause?: unknown): TesseraError =>
  new TesseraError('Corrupt', message, cause === undefined ? undefined : { cause });
