/**
 * Waiting in tests: sleep, and polling until a probe has a value. A timeout
 * only bounds a hang (its message names what was awaited and, given a
 * function, the last state seen); no test asserts how long anything took.
 */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls probe every intervalMs until it returns something other than undefined, and resolves with it. */
export async function waitFor<T>(
  what: string | (() => string),
  timeoutMs: number,
  probe: () => Promise<T | undefined> | T | undefined,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(intervalMs);
  }
}
