/**
 * Fast, reproducible test data: a seeded 1 MiB pseudo-random block, repeated with the block's
 * index stamped into its first 8 bytes so no two blocks of a stream are equal.
 * @module
 */

/** Size of one generated block. */
const BLOCK_BYTES = 1 << 20;

/** Fills `BLOCK_BYTES` with xorshift32 output seeded by `seed`. */
function baseBlock(seed: number): Uint8Array {
  const words = new Uint32Array(BLOCK_BYTES / 4);
  let x = (seed >>> 0) || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return new Uint8Array(words.buffer);
}

/**
 * Yields `totalBytes` of data derived from `seed`, in fresh blocks of at most `BLOCK_BYTES`
 * (fresh, so a block handed to a writer may be kept by it).
 */
export function* generate(totalBytes: number, seed: number): Generator<Uint8Array> {
  const base = baseBlock(seed);
  for (let index = 0, left = totalBytes; left > 0; index++) {
    const block = base.slice(0, Math.min(left, BLOCK_BYTES));
    const stamp = new Uint8Array(8);
    new DataView(stamp.buffer).setBigUint64(0, BigInt(index));
    block.set(stamp.subarray(0, Math.min(8, block.length)));
    left -= block.length;
    yield block;
  }
}

/** `n` random bytes (any length; `crypto.getRandomValues` alone stops at 64 KiB). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) crypto.getRandomValues(out.subarray(off, off + 65536));
  return out;
}
