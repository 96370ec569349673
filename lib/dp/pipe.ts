/**
 * One direction of one session inside the discover point: bytes received
 * from one end wait here until the other end can take them.
 *
 * The buffer is bounded either way. When the sending end speaks
 * `flow-control`, it never has more in flight than the window this pipe
 * grants, and credit is returned only as bytes move on, so the buffer never
 * exceeds one window. When it does not, `push()` asks the caller to stop
 * reading that end (which, on a shared link, stalls its other sessions: the
 * original protocol's head-of-line blocking). Small pieces that have to wait
 * are joined into shared buffers, so the memory a window of tiny messages
 * takes stays close to its bytes.
 * @module
 */

import { recycle, SMALL_BYTES, takeBuffer } from "../wire/_frame_pool.ts";
import { DATA_HEADROOM } from "../wire/binary_codec.ts";
import { INITIAL_WINDOW, ReceiveWindow, SendCredit } from "../link/flow.ts";
import {
  type CreditMessage,
  type DataMessage,
  type EndMessage,
  MessageType,
} from "../wire/message.ts";

/** Where a pipe delivers: the receiving end of this direction. */
export interface PipeSink {
  /** Whether this end grants credit (`flow-control`), so the pipe must wait for it. */
  readonly flowControl: boolean;
  /** Largest Data content this end takes in one message. */
  readonly maxDataBytes: number;
  /**
   * Sends bytes, which the pipe hands over (nobody else holds them); returns a
   * promise when the end's transport is full.
   */
  send(bytes: Uint8Array): Promise<void> | undefined;
  /**
   * A promise while the end's transport is full, else `undefined`. The pipe
   * checks it before each send, so the sessions sharing one link add at
   * most a piece each to its queue, whatever their number.
   */
  backpressure?(): Promise<void> | undefined;
  /** The direction is finished (half-close). */
  end(): void;
  /** The session is over for this end; `reason` is empty for a normal close. */
  close(reason: string): void;
}

/** Where a pipe's bytes come from: the sending end, which is given credit back. */
export interface PipeSource {
  /** Whether this end respects credit (`flow-control`). */
  readonly flowControl: boolean;
  /** Sends a Credit for `bytes` more. */
  grant(bytes: number): void;
}

/** The bytes waiting in all the pipes of one discover point, against its budget. */
export class BufferBudget {
  /** Bytes waiting now. */
  bytes = 0;
}

/** A running count of the bytes pipes delivered: one name's, in one direction. */
export class ByteMeter {
  /** Bytes delivered so far. */
  bytes = 0;
}

/** Bytes a pipe buffers from a source without flow control before asking it to wait. */
const STALL_BYTES = INITIAL_WINDOW;

/** Pieces at most this large that have to wait are joined into shared buffers. */
const JOIN_PIECE_BYTES = 1024;

/** Size of the buffers waiting small pieces are joined into (a pooled size). */
const JOIN_BUFFER_BYTES = SMALL_BYTES;

/**
 * `open`; `ending`: End waits behind the data; `ended`: End sent; `closing`:
 * Close waits behind the data; `done`: Close sent, or the sink is gone.
 */
type PipeState = "open" | "ending" | "ended" | "closing" | "done";

/** One direction of one session at the discover point. */
export class Pipe {
  readonly #source: PipeSource;
  readonly #sink: PipeSink;
  readonly #window: ReceiveWindow | undefined;
  readonly #credit: SendCredit | undefined;
  #queue: Uint8Array[] = [];
  #head = 0;
  #queued = 0;
  #state: PipeState = "open";
  #closeReason = "";
  #pumping = false;
  #discarding = false;
  #stall: PromiseWithResolvers<void> | undefined;
  /** The buffer waiting small pieces are joined into; the queue's last chunk is its filled part. */
  #join: Uint8Array<ArrayBuffer> | undefined;
  #joined = 0;
  readonly #budget: BufferBudget;
  readonly #meter: ByteMeter | undefined;
  #delivered = 0;
  /** Set when bytes arrive; the discover point's idle sweep reads and clears it. */
  touched = false;

  /**
   * Joins `source` to `sink`; `maxWindow` bounds the window granted to the
   * source; `budget` counts the bytes waiting here with all other pipes';
   * `meter` counts the bytes delivered with those of the same name and direction.
   */
  constructor(
    source: PipeSource,
    sink: PipeSink,
    maxWindow?: number,
    budget?: BufferBudget,
    meter?: ByteMeter,
  ) {
    this.#source = source;
    this.#sink = sink;
    this.#budget = budget ?? new BufferBudget();
    this.#meter = meter;
    this.#window = source.flowControl ? new ReceiveWindow(maxWindow) : undefined;
    this.#credit = sink.flowControl ? new SendCredit() : undefined;
  }

  /** Largest piece the sink takes in one message. */
  get maxPiece(): number {
    return this.#sink.maxDataBytes;
  }

  /** Bytes waiting in this pipe. */
  get buffered(): number {
    return this.#queued;
  }

  /** Bytes handed to the sink so far. */
  get delivered(): number {
    return this.#delivered;
  }

  /**
   * Takes bytes from the source (the pipe owns them from now on).
   * @returns A promise to await before reading more from a source without flow control.
   * @throws {ProtocolError} When a flow-controlled source exceeds its credit.
   */
  push(bytes: Uint8Array): Promise<void> | undefined {
    this.#window?.received(bytes.length);
    this.touched = true;
    if (this.#discarding || this.#state !== "open") {
      this.#consumed(bytes.length);
      return undefined;
    }
    this.#queued += bytes.length;
    this.#budget.bytes += bytes.length;
    const mustWait = this.#pumping || this.#head < this.#queue.length;
    if (bytes.length <= JOIN_PIECE_BYTES && mustWait) this.#joinSmall(bytes);
    else {
      this.#queue.push(bytes);
      this.#join = undefined;
    }
    this.#pump();
    if (this.#window || this.#queued <= STALL_BYTES) return undefined;
    this.#stall ??= Promise.withResolvers<void>();
    return this.#stall.promise;
  }

  /**
   * Queues a small piece behind others by copying it into a shared buffer, so
   * that a flood of tiny messages for a session that cannot drain costs about
   * their bytes, not an object and a buffer each.
   */
  #joinSmall(bytes: Uint8Array): void {
    let join = this.#join;
    if (join === undefined || this.#joined + bytes.length > JOIN_BUFFER_BYTES) {
      join = this.#join = takeBuffer(DATA_HEADROOM + JOIN_BUFFER_BYTES);
      this.#joined = 0;
      this.#queue.push(join);
    }
    join.set(bytes, DATA_HEADROOM + this.#joined);
    this.#joined += bytes.length;
    // Headroom first, as for any piece: the sink's codec frames the joined bytes in place.
    this.#queue[this.#queue.length - 1] = join.subarray(
      DATA_HEADROOM,
      DATA_HEADROOM + this.#joined,
    );
    recycle(bytes);
  }

  /** The sink granted `bytes` more credit. */
  credit(bytes: number): void {
    this.#credit?.add(bytes);
    this.#pump();
  }

  /** The source finished its direction: End follows the queued bytes. */
  end(): void {
    if (this.#state !== "open") return;
    this.#state = "ending";
    this.#pump();
  }

  /** The source closed the session: Close follows the queued bytes. */
  close(reason: string): void {
    if (this.#state === "closing" || this.#state === "done") return;
    this.#state = "closing";
    this.#closeReason = reason;
    this.#pump();
  }

  /** Drops what is queued and ignores what comes (the sink is gone); credit still flows back. */
  discard(): void {
    this.#discarding = true;
    this.#state = "done";
    this.#join = undefined;
    const dropped = this.#queued;
    this.#queue = [];
    this.#head = 0;
    this.#queued = 0;
    this.#budget.bytes -= dropped;
    this.#consumed(dropped);
    this.#credit?.cancel();
  }

  #consumed(bytes: number): void {
    if (this.#window) {
      const credit = this.#window.consumed(bytes);
      if (credit > 0) this.#source.grant(credit);
    } else if (this.#queued <= STALL_BYTES && this.#stall) {
      const stall = this.#stall;
      this.#stall = undefined;
      stall.resolve();
    }
  }

  #pump(): void {
    if (this.#pumping || this.#discarding) return;
    this.#pumping = true;
    const full = this.#drain();
    if (full === undefined) {
      this.#pumping = false;
      return;
    }
    void full.then(() => {
      this.#pumping = false;
      this.#pump();
    });
  }

  /**
   * Moves queued bytes to the sink while it has credit, synchronously.
   * @returns The sink's promise when its transport is full (the pump resumes after it).
   */
  #drain(): Promise<void> | undefined {
    while (this.#head < this.#queue.length && !this.#discarding) {
      const credit = this.#credit?.available ?? Infinity;
      if (credit <= 0) return undefined; // credit() restarts the pump.
      const busy = this.#sink.backpressure?.();
      if (busy) return busy;
      // The last chunk leaves (whole or in part): nothing more is joined into it.
      if (this.#head === this.#queue.length - 1) this.#join = undefined;
      let chunk = this.#queue[this.#head]!;
      const size = Math.min(chunk.length, this.#sink.maxDataBytes, credit);
      if (size === chunk.length) {
        this.#queue[this.#head++] = undefined!;
        if (this.#head === this.#queue.length) {
          this.#queue = [];
          this.#head = 0;
        }
      } else {
        // The sink takes over what it is given; the rest of the chunk stays here, so it gets a copy.
        this.#queue[this.#head] = chunk.subarray(size);
        chunk = chunk.slice(0, size);
      }
      const full = this.#sink.send(chunk);
      this.#credit?.spend(size);
      this.#queued -= size;
      this.#budget.bytes -= size;
      this.#delivered += size;
      if (this.#meter) this.#meter.bytes += size;
      this.#consumed(size);
      if (full) return full;
    }
    if (this.#discarding || this.#queued > 0) return undefined;
    if (this.#state === "ending") {
      this.#state = "ended";
      this.#sink.end();
    } else if (this.#state === "closing") {
      this.#state = "done";
      this.#sink.close(this.#closeReason);
    }
    return undefined;
  }
}

/**
 * Routes a session's Data, End or Credit from one end: Data and End travel on
 * in `onward` (the pipe away from that end); Credit is for the bytes coming
 * back to it, so it feeds `back`.
 * @returns A promise to await before reading more from that end (see {@linkcode Pipe.push}).
 */
export function routeFromEnd(
  message: DataMessage | EndMessage | CreditMessage,
  onward: Pipe,
  back: Pipe,
): Promise<void> | undefined {
  switch (message.type) {
    case MessageType.Data:
      return onward.push(message.content);
    case MessageType.End:
      onward.end();
      return undefined;
    case MessageType.Credit:
      back.credit(message.bytes);
      return undefined;
  }
}
