/**
 * A byte queue for decoding: bytes are appended at the end and consumed from
 * the front. When the queue is empty, a pushed chunk is borrowed rather than
 * copied; `own()` copies what is left of it before its owner reuses it.
 * @module
 */

const MIN_CAPACITY = 4096;
/** Owned buffers larger than this are dropped once empty, so an idle link holds little memory. */
const KEEP_CAPACITY = 16 * 1024;
const EMPTY: Uint8Array = new Uint8Array(0);

/** Bytes received but not yet decoded. */
export class ByteQueue {
  #buffer: Uint8Array = EMPTY;
  #start = 0;
  #end = 0;
  /** Whether `#buffer` is a caller's chunk that is only valid until its next read. */
  #borrowed = false;

  /** Number of bytes queued. */
  get length(): number {
    return this.#end - this.#start;
  }

  /**
   * Appends `chunk`. An empty queue borrows it: call {@linkcode own} before
   * the chunk's memory is reused.
   */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.length === 0) {
      this.#buffer = chunk;
      this.#start = 0;
      this.#end = chunk.length;
      this.#borrowed = true;
      return;
    }
    if (this.#borrowed) this.own(chunk.length);
    if (this.#end + chunk.length > this.#buffer.length) this.#reserve(chunk.length);
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** Makes room for `extra` more bytes at the end, compacting or growing. */
  #reserve(extra: number): void {
    const needed = this.length + extra;
    if (needed <= this.#buffer.length) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
    } else {
      const grown = new Uint8Array(
        Math.max(MIN_CAPACITY, needed, this.#buffer.length * 2),
      );
      grown.set(this.#buffer.subarray(this.#start, this.#end));
      this.#buffer = grown;
    }
    this.#end = this.length;
    this.#start = 0;
  }

  /** Copies borrowed bytes into memory the queue owns (with room for `extra` more). */
  own(extra = 0): void {
    if (!this.#borrowed) return;
    const owned = new Uint8Array(Math.max(MIN_CAPACITY, this.length + extra));
    owned.set(this.#buffer.subarray(this.#start, this.#end));
    this.#buffer = owned;
    this.#end = this.length;
    this.#start = 0;
    this.#borrowed = false;
  }

  /** The queued bytes; valid until the next `push`, `own` or `consume`. */
  view(): Uint8Array {
    return this.#buffer.subarray(this.#start, this.#end);
  }

  /** Drops `count` bytes from the front. */
  consume(count: number): void {
    this.#start += count;
    if (this.#start < this.#end) return;
    this.#start = this.#end = 0;
    if (this.#borrowed || this.#buffer.length > KEEP_CAPACITY) {
      this.#buffer = EMPTY;
      this.#borrowed = false;
    }
  }
}
