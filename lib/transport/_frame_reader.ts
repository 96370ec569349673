/**
 * Reads a byte source (a socket) into buffers laid out for binary Data
 * frames: every piece has {@linkcode DATA_HEADROOM} free bytes before it, so
 * the codec writes the frame header in place and the bytes are never copied
 * between the socket and the link. Pieces are handed over: the caller owns each.
 * @module
 */

import { recycle, SMALL_BYTES, takeBuffer } from "../wire/_frame_pool.ts";
import { DATA_HEADROOM } from "../wire/binary_codec.ts";

/** Where the bytes come from, e.g. a `Deno.TcpConn`. */
export interface ByteSource {
  /** Reads into `p`; resolves to the count, or `null` at the end. */
  read(p: Uint8Array): Promise<number | null>;
}

/**
 * Default first read size: small, because an idle session's pending read holds
 * its buffer (a pooled size: this plus the headroom); it doubles as reads fill it.
 */
const INITIAL_CAPACITY = 256;

/** Reads a source piece by piece into frame-ready buffers, sized to the traffic. */
export class FrameReader {
  readonly #source: ByteSource | undefined;
  readonly #maxPiece: number;
  readonly #minPiece: number;
  #capacity: number;
  #buffer: Uint8Array<ArrayBuffer> | undefined;

  /**
   * Reads `source` in pieces of at most `maxPiece` bytes, starting with reads
   * of `firstPiece` bytes (and never shrinking below that). Without a
   * source, the caller reads into {@linkcode view} itself.
   */
  constructor(
    source: ByteSource | undefined,
    maxPiece: number,
    firstPiece: number = INITIAL_CAPACITY,
  ) {
    this.#source = source;
    this.#maxPiece = maxPiece;
    this.#capacity = this.#minPiece = Math.min(firstPiece, maxPiece);
  }

  /**
   * Reads the next piece, of at most `limit` bytes: {@linkcode view}, the
   * source's read, then {@linkcode piece}.
   * @returns The piece, with {@linkcode DATA_HEADROOM} bytes before it in a
   * buffer nobody else holds; `null` at the end of the source.
   */
  async read(limit: number = Infinity): Promise<Uint8Array<ArrayBuffer> | null> {
    if (this.#source === undefined) throw new TypeError("Cannot read: this reader has no source");
    return this.piece(await this.#source.read(this.view(limit)), limit);
  }

  /**
   * Where the next read goes: at most `limit` bytes. A caller that reads the
   * source itself (one async step less per piece, and nothing more held
   * while it waits) passes the count to {@linkcode piece}.
   */
  view(limit: number = Infinity): Uint8Array<ArrayBuffer> {
    const buffer = this.#buffer ??= takeBuffer(DATA_HEADROOM + this.#capacity);
    return buffer.subarray(DATA_HEADROOM, DATA_HEADROOM + Math.min(limit, this.#capacity));
  }

  /**
   * Takes the `count` bytes a read put into {@linkcode view} (asked with the
   * same `limit`). The read size doubles while reads fill it and halves when
   * reads offered all of it use little.
   * @returns The piece, with {@linkcode DATA_HEADROOM} bytes before it in a
   * buffer nobody else holds; `null` when `count` is (the end of the source).
   */
  piece(count: number | null, limit: number = Infinity): Uint8Array<ArrayBuffer> | null {
    const capacity = this.#capacity;
    const buffer = this.#buffer!;
    if (count === null) {
      this.#buffer = undefined;
      recycle(buffer);
      return null;
    }
    if (count <= SMALL_BYTES && count < capacity / 4) {
      // A small piece gets a small (pooled) buffer of its own: a queue of small pieces (a
      // stalled reader's, say) must not pin a whole read buffer each. Larger pieces are handed
      // over without a copy; the read size then shrinks to what the traffic needs.
      const piece = takeBuffer(DATA_HEADROOM + count);
      piece.set(buffer.subarray(DATA_HEADROOM, DATA_HEADROOM + count), DATA_HEADROOM);
      // Shrink only when the whole buffer was offered: a read cut short by `limit` (credit
      // running low in a bulk transfer) says nothing about the traffic.
      if (count < capacity / 8 && limit >= capacity && capacity > this.#minPiece) {
        this.#capacity = capacity / 2;
        this.#buffer = undefined;
        recycle(buffer);
      }
      return piece.subarray(DATA_HEADROOM);
    }
    this.#buffer = undefined;
    if (count === capacity && capacity < this.#maxPiece) {
      this.#capacity = Math.min(capacity * 2, this.#maxPiece);
    }
    return buffer.subarray(DATA_HEADROOM, DATA_HEADROOM + count);
  }

  /** Returns the read buffer to the pool (after the last read). */
  release(): void {
    if (this.#buffer) recycle(this.#buffer);
    this.#buffer = undefined;
  }
}
