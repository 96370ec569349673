/**
 * Exponential backoff with jitter, and a sleep that an abort signal cuts short.
 * @module
 */

/** Bounds of {@linkcode Backoff}. */
export interface BackoffOptions {
  /** First delay, in milliseconds. @default {250} */
  initial?: number;
  /** Largest delay, in milliseconds. @default {30000} */
  max?: number;
}

/** Delays that double from `initial` up to `max`, each drawn uniformly from its upper half. */
export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  #attempt = 0;

  /** Creates a backoff with the given bounds. */
  constructor(options: BackoffOptions = {}) {
    this.#initial = options.initial ?? 250;
    this.#max = options.max ?? 30_000;
  }

  /** The next delay in milliseconds. */
  next(): number {
    const ceiling = Math.min(this.#max, this.#initial * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** Starts again from the first delay (after a success). */
  reset(): void {
    this.#attempt = 0;
  }
}

/**
 * Waits `ms` milliseconds, or until `signal` aborts (then resolves early).
 * @param unref Whether the timer should not keep the process alive.
 */
export function sleep(ms: number, signal: AbortSignal, unref = false): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  const { promise, resolve } = Promise.withResolvers<void>();
  const done = () => {
    clearTimeout(timer);
    signal.removeEventListener("abort", done);
    resolve();
  };
  const timer = setTimeout(done, ms);
  if (unref) Deno.unrefTimer(timer as unknown as number);
  signal.addEventListener("abort", done, { once: true });
  return promise;
}
