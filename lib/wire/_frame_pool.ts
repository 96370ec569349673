/**
 * Free lists of frame-sized buffers. Bulk transfers move thousands of frames a
 * second, and forwarders read into a fresh buffer for every piece; reusing
 * that memory once a transport has written it saves an allocation, its
 * zeroing and its page faults per frame.
 *
 * Pooled sizes are a frame header plus a power of two from 4 KiB to 256 KiB.
 * The rule that makes this safe: a transport is the only holder of a chunk it
 * writes, so once written, the chunk's memory is free.
 * @module
 */

/** Bytes before a Data frame's payload: type, length, session number. */
const HEADROOM = 5 + 4;
const SMALLEST = 4 * 1024;
const LARGEST = 256 * 1024;
/**
 * Buffers for small frames (a keystroke, a short request), by the most they
 * hold: a size up to {@linkcode SMALL_BYTES} is served from the next class
 * up, so a round trip of small messages allocates nothing.
 */
const SMALL_CLASSES = [HEADROOM + 64, HEADROOM + 256, HEADROOM + 1024, HEADROOM + SMALLEST];
const MAX_FREE = 16;
const free = new Map<number, ArrayBuffer[]>();
for (const size of SMALL_CLASSES) free.set(size, []);
for (let size = SMALLEST; size <= LARGEST; size *= 2) free.set(HEADROOM + size, []);

/** Size of the largest pooled buffer: a frame header and 256 KiB of data. */
export const POOLED_BYTES: number = HEADROOM + LARGEST;

/** Most data bytes (after a frame header) that a small pooled buffer holds: 4 KiB. */
export const SMALL_BYTES: number = SMALLEST;

/**
 * `size` bytes at the start of a buffer of their own; pooled memory when the
 * size is small or a pooled one. Contents are undefined.
 */
export function takeBuffer(size: number): Uint8Array<ArrayBuffer> {
  if (size <= HEADROOM + SMALLEST) {
    const capacity = SMALL_CLASSES.find((limit) => size <= limit)!;
    return new Uint8Array(free.get(capacity)!.pop() ?? new ArrayBuffer(capacity), 0, size);
  }
  const pooled = free.get(size)?.pop();
  return pooled ? new Uint8Array(pooled) : new Uint8Array(size);
}

/** Returns the memory under `chunk` to its pool, if it is a pooled size and nobody holds it any more. */
export function recycle(chunk: Uint8Array): void {
  const buffer = chunk.buffer;
  const list = free.get(buffer.byteLength);
  if (
    list !== undefined && buffer instanceof ArrayBuffer && list.length < MAX_FREE &&
    !list.includes(buffer)
  ) {
    list.push(buffer);
  }
}
