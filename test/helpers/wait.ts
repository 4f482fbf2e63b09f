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

/** Runs attempt until it resolves; after timeoutMs its last error is thrown. */
export async function retryFor<T>(timeoutMs: number, attempt: () => Promise<T>, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(intervalMs);
    }
  }
}

/**
 * Lists every object of the pools: each pg's primary answers its part, so this resolves only when
 * every pg of them is active (else the client's error, once its retries are spent).
 */
export async function listEveryPg(client: { list(pool: string, o: { limit: number; cursor?: string }): Promise<{ cursor?: string | undefined }> }, pools: readonly string[]): Promise<void> {
  for (const pool of pools) {
    let cursor: string | undefined;
    do {
      const page = await client.list(pool, { limit: 10_000, ...(cursor ? { cursor } : {}) });
      cursor = page.cursor;
    } while (cursor);
  }
}
