/**
 * anySignal (src/lib/signals.ts): a composite of a timeout signal still aborts
 * after a garbage collection. Node 20's AbortSignal.any lets the timeout
 * source be collected and then never aborts (nodejs/node#57736); the etcd map
 * store's calls and the CLI's map calls take a caller's AbortSignal.timeout
 * through such a composite.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { expect, test } from 'vitest';
import { anySignal } from '../src/lib/signals.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

test('a composite of AbortSignal.timeout aborts with the timeout reason after a garbage collection', async () => {
  const closing = new AbortController();
  const composite = anySignal([closing.signal, AbortSignal.timeout(200)]);
  const aborted = new Promise<unknown>((resolve) => composite.addEventListener('abort', () => resolve(composite.reason), { once: true }));
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const reason = await Promise.race([aborted, new Promise((resolve) => setTimeout(() => resolve('never aborted'), 3_000))]);
  expect(reason).toMatchObject({ name: 'TimeoutError' });
  expect(closing.signal.aborted).toBe(false);
});

test('it aborts with the first source that aborts, at once if one already has', () => {
  const a = new AbortController();
  const b = new AbortController();
  const composite = anySignal([a.signal, b.signal]);
  b.abort(new Error('b'));
  expect(composite.reason).toMatchObject({ message: 'b' });
  expect(anySignal([AbortSignal.abort(new Error('early'))]).reason).toMatchObject({ message: 'early' });
});
