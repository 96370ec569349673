/**
 * Flow-control accounting for one direction of one session (extension
 * `flow-control`): the receiver's window with auto-tuning, and the sender's
 * credit. Both start from {@linkcode INITIAL_WINDOW}, which the extension fixes.
 * @module
 */

import { ProtocolError } from "../errors.ts";

/** Credit each direction of a session starts with, on both ends: 256 KiB. */
export const INITIAL_WINDOW = 256 * 1024;

/** The clock a window reads unless given another: one function for every window. */
const performanceNow = (): number => performance.now();

/** Default largest window a receiver grows to: 4 MiB (what one session direction may buffer). */
export const MAX_WINDOW = 4 * 1024 * 1024;

/**
 * A window that is consumed whole within this time is too small for the rate
 * it carries: it doubles (so a window holds at least about this long of traffic).
 */
const GROW_WITHIN_MS = 100;

/**
 * The receiving side: counts bytes received against the credit granted,
 * and decides when (and how much) credit to return as the application
 * consumes. The window grows with the measured rate: whenever a whole window
 * is consumed within {@linkcode GROW_WITHIN_MS} while the reader keeps up, it
 * doubles, up to `maxWindow`. A slow reader consumes slowly, so its window
 * never grows.
 */
export class ReceiveWindow {
  readonly #maxWindow: number;
  #window = INITIAL_WINDOW;
  /** Credit granted in total (including the initial window). */
  #granted = INITIAL_WINDOW;
  #received = 0;
  #consumed = 0;
  readonly #now: () => number;
  /** When the current measuring epoch began, and what was consumed since. */
  #epochStart: number;
  #epochConsumed = 0;

  /**
   * Creates a window that may grow up to `maxWindow` bytes.
   * @param now Where the time comes from (milliseconds): a test passes its own clock's.
   */
  constructor(maxWindow: number = MAX_WINDOW, now: () => number = performanceNow) {
    this.#maxWindow = Math.max(INITIAL_WINDOW, maxWindow);
    this.#now = now;
    this.#epochStart = now();
  }

  /** The current window in bytes. */
  get window(): number {
    return this.#window;
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.#received - this.#consumed;
  }

  /**
   * Records `bytes` received.
   * @throws {ProtocolError} When the sender went beyond the credit it was given.
   */
  received(bytes: number): void {
    this.#received += bytes;
    if (this.#received > this.#granted) {
      throw new ProtocolError(
        `Cannot accept Data: the sender exceeded its flow-control credit by ${
          this.#received - this.#granted
        } bytes`,
      );
    }
  }

  /**
   * Records `bytes` consumed by the application (or forwarded on).
   * @returns Credit to send to the peer now, or 0 to wait for more.
   */
  consumed(bytes: number): number {
    this.#consumed += bytes;
    this.#epochConsumed += bytes;
    if (this.#epochConsumed >= this.#window) this.#measure();
    const unreported = this.#consumed + this.#window - this.#granted;
    // Batching: a Credit per quarter window keeps the sender busy without a message per Data.
    if (unreported < this.#window / 4) return 0;
    const credit = this.#consumed + this.#window - this.#granted;
    this.#granted += credit;
    return credit;
  }

  /** A whole window was consumed: grow it if that was quick and the reader keeps up. */
  #measure(): void {
    const now = this.#now();
    const quick = now - this.#epochStart < GROW_WITHIN_MS;
    if (quick && this.buffered < this.#window / 2 && this.#window < this.#maxWindow) {
      this.#window = Math.min(this.#window * 2, this.#maxWindow);
    }
    this.#epochStart = now;
    this.#epochConsumed = 0;
  }
}

/** The sending side: credit available, and a way to wait for more. */
export class SendCredit {
  #available = INITIAL_WINDOW;
  #waiter: PromiseWithResolvers<void> | undefined;

  /** Bytes that may be sent now. */
  get available(): number {
    return this.#available;
  }

  /** Spends `bytes` of credit (at most {@linkcode available}). */
  spend(bytes: number): void {
    this.#available -= bytes;
  }

  /** Adds credit from a Credit message, waking a waiting sender. */
  add(bytes: number): void {
    this.#available += bytes;
    this.#wake();
  }

  /** Resolves once credit is available (or {@linkcode cancel} is called). */
  wait(): Promise<void> {
    if (this.#available > 0) return Promise.resolve();
    this.#waiter ??= Promise.withResolvers<void>();
    return this.#waiter.promise;
  }

  /** Wakes a waiting sender without credit (the session ended). */
  cancel(): void {
    this.#wake();
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.resolve();
  }
}
