/** A seeded PRNG for tests (mulberry32): print the seed, replay it exactly. */
export interface Rng {
  seed: number;
  float(): number;
  int(bound: number): number;
  bytes(length: number): Buffer;
  pick<T>(items: readonly T[]): T;
}

export function seededRng(seed: number): Rng {
  let state = seed >>> 0;
  const float = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (bound: number): number => Math.floor(float() * bound);
  return {
    seed,
    float,
    int,
    bytes(length) {
      const out = Buffer.allocUnsafe(length);
      for (let i = 0; i < length; i += 4) {
        const v = (float() * 4294967296) >>> 0;
        out[i] = v & 0xff;
        if (i + 1 < length) out[i + 1] = (v >>> 8) & 0xff;
        if (i + 2 < length) out[i + 2] = (v >>> 16) & 0xff;
        if (i + 3 < length) out[i + 3] = v >>> 24;
      }
      return out;
    },
    pick: (items) => items[int(items.length)]!,
  };
}

export function testSeed(): number {
  const fromEnv = process.env.TESSERA_SEED;
  return fromEnv ? Number(fromEnv) : (Date.now() ^ (process.pid << 8)) >>> 0;
}

/** Seeded bytes, 4 at a time (xorshift32): Rng.bytes draws a float per 4 bytes, too slow for MiBs of test data. */
export function fastBytes(seed: number, lengthBytes: number): Buffer {
  const words = new Uint32Array(Math.ceil(lengthBytes / 4));
  let x = seed | 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  return Buffer.from(words.buffer, 0, lengthBytes);
}
