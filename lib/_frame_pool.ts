/**
 * A small free list of full-size Data frame buffers. Bulk transfers move
 * thousands of 256 KiB frames a second; reusing their memory once a transport
 * has written them saves an allocation (and its page faults) per frame.
 *
 * The rule that makes this safe: a transport is the only holder of a chunk it
 * writes, so once written, the chunk's memory is free.
 * @module
 */

/** Size of a pooled buffer: a frame header, a session number and 256 KiB of data. */
export const POOLED_BYTES = 5 + 4 + 256 * 1024;
const MAX_FREE = 16;
const free: ArrayBuffer[] = [];

/** A buffer of `size` bytes; pooled memory when the size matches. Its contents are undefined. */
export function takeBuffer(size: number): Uint8Array<ArrayBuffer> {
  const pooled = size === POOLED_BYTES ? free.pop() : undefined;
  return pooled ? new Uint8Array(pooled) : new Uint8Array(size);
}

/** Returns the memory under `chunk` to the pool, if it is a pooled size and nobody holds it any more. */
export function recycle(chunk: Uint8Array): void {
  const buffer = chunk.buffer;
  if (
    buffer.byteLength === POOLED_BYTES && buffer instanceof ArrayBuffer && free.length < MAX_FREE &&
    !free.includes(buffer)
  ) {
    free.push(buffer);
  }
}
