/**
 * AbortSignal.any without Node 20's lost timeouts.
 *
 * Node 20 holds a composite signal's sources only weakly, and an
 * AbortSignal.timeout() source holds itself only weakly too: once nothing
 * else references the timeout signal, a garbage collection drops it and the
 * composite never aborts (nodejs/node#57736). A caller's
 * `{ signal: AbortSignal.timeout(ms) }` then stops being a deadline: a test
 * on CI saw a 3 s budget run for 24 s. `anySignal` keeps every source
 * reachable for as long as the composite is.
 */

const sourcesOf = new WeakMap<AbortSignal, readonly AbortSignal[]>();

/** Aborts when any of `signals` does, with its reason; the sources live as long as the result. */
export function anySignal(signals: readonly AbortSignal[]): AbortSignal {
  const composite = AbortSignal.any(signals as AbortSignal[]);
  if (!composite.aborted) sourcesOf.set(composite, [...signals]);
  return composite;
}
