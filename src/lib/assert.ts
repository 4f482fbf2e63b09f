/**
 * Assertions are for bugs: a broken invariant crashes the process rather than
 * limp on with corrupt state (TigerBeetle's habit). Expected operating
 * conditions (not found, no space, corrupt data on disk, ...) are typed errors
 * from ./errors.ts, never assertions.
 */
export class AssertionError extends Error {
  override name = 'AssertionError';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(`assertion failed: ${message}`);
}

export function unreachable(value: never, message = 'unreachable'): never {
  throw new AssertionError(`${message}: ${String(value)}`);
}
