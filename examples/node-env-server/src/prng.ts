/**
 * A small seeded PRNG: SplitMix64 over BigInt, so every int64 seed (negative ones too) gives its own
 * stream, identical on every platform and Node version. Episodes draw a handful of numbers, so BigInt
 * speed does not matter here.
 */

const MASK64 = (1n << 64n) - 1n;

export class SplitMix64 {
  private state: bigint;

  /** `seed` is any int64 (as a bigint, a decimal string or a safe integer); it is taken modulo 2^64. */
  constructor(seed: bigint | string | number) {
    this.state = BigInt.asUintN(64, BigInt(seed));
  }

  /** The next 64-bit value, as a bigint in [0, 2^64). */
  nextU64(): bigint {
    this.state = (this.state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = this.state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  }

  /** A float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    return Number(this.nextU64() >> 11n) / 2 ** 53;
  }

  /** An integer in [lo, hi] (inclusive), without modulo bias. */
  intBetween(lo: number, hi: number): number {
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || hi < lo) {
      throw new RangeError(`intBetween needs safe integers lo <= hi, got ${lo}, ${hi}`);
    }
    const span = BigInt(hi - lo + 1);
    const limit = (1n << 64n) - ((1n << 64n) % span); // reject the biased tail
    for (;;) {
      const x = this.nextU64();
      if (x < limit) return lo + Number(x % span);
    }
  }

  /** `k` distinct items of `items`, in a random order (partial Fisher-Yates). */
  sample<T>(items: readonly T[], k: number): T[] {
    const pool = items.slice();
    for (let i = 0; i < k; i++) {
      const j = this.intBetween(i, pool.length - 1);
      [pool[i], pool[j]] = [pool[j], pool[i]];
    }
    return pool.slice(0, k);
  }
}
