/**
 * A growable byte queue: bytes are appended at the end and consumed from the
 * front without copying what remains until space is needed.
 * @module
 */

const MIN_CAPACITY = 4096;
/** Buffers larger than this are dropped once empty, so an idle link holds little memory. */
const KEEP_CAPACITY = 128 * 1024;

/** Bytes received but not yet decoded. */
export class ByteQueue {
  #buffer = new Uint8Array(0);
  #start = 0;
  #end = 0;

  /** Number of bytes queued. */
  get length(): number {
    return this.#end - this.#start;
  }

  /** Appends a copy of `chunk`. */
  push(chunk: Uint8Array): void {
    const needed = this.length + chunk.length;
    if (this.#end + chunk.length > this.#buffer.length) {
      if (needed <= this.#buffer.length) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
      } else {
        const grown = new Uint8Array(Math.max(MIN_CAPACITY, needed, this.#buffer.length * 2));
        grown.set(this.#buffer.subarray(this.#start, this.#end));
        this.#buffer = grown;
      }
      this.#end = this.length;
      this.#start = 0;
    }
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** The queued bytes; valid until the next `push` or `consume`. */
  view(): Uint8Array {
    return this.#buffer.subarray(this.#start, this.#end);
  }

  /** Drops `count` bytes from the front. */
  consume(count: number): void {
    this.#start += count;
    if (this.#start < this.#end) return;
    this.#start = this.#end = 0;
    if (this.#buffer.length > KEEP_CAPACITY) this.#buffer = new Uint8Array(0);
  }
}
