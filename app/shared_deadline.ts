/**
 * Deadlines that many operations share: one `AbortSignal` (and one timer) per
 * slice of time rather than one per operation, so that a burst of sessions
 * does not leave thousands of timers and signals alive for their whole
 * timeout.
 * @module
 */

/** How far apart the deadlines of operations sharing one signal may be. */
const SLICE_MS = 250;

/** Signals that abort `ms` (to at most {@linkcode SLICE_MS} later) after they are asked for. */
export class SharedDeadline {
  readonly #ms: number;
  readonly #also: AbortSignal | undefined;
  #signal: AbortSignal | undefined;
  #until = 0;

  /**
   * @param ms The timeout each operation gets at least.
   * @param also A signal every deadline signal also follows (a shutdown).
   */
  constructor(ms: number, also?: AbortSignal) {
    this.#ms = ms;
    this.#also = also;
  }

  /** The signal for an operation starting now; see {@linkcode timedOut} for why it aborted. */
  signal(): AbortSignal {
    const now = Date.now();
    if (this.#signal === undefined || now >= this.#until) {
      this.#until = now + SLICE_MS;
      const timeout = AbortSignal.timeout(this.#ms + SLICE_MS);
      this.#signal = this.#also === undefined ? timeout : AbortSignal.any([this.#also, timeout]);
    }
    return this.#signal;
  }

  /** Whether `signal` (one this gave out) aborted because its time ran out. */
  timedOut(signal: AbortSignal): boolean {
    return signal.aborted && !(this.#also?.aborted ?? false);
  }
}
