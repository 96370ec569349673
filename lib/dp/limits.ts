/**
 * Bounds a discover point keeps per source address: links open and
 * handshakes in flight, and a throttle on failed proofs. Every table here is
 * bounded too, so a flood of addresses cannot grow it without end.
 * @module
 */

/** Counts per source address against one limit. */
export class SourceCounter {
  readonly #limit: number;
  readonly #counts = new Map<string, number>();

  /** A counter allowing `limit` per source; 0 means no limit. */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Counts one more for `source`, unless it is at its limit. @returns Whether it was counted. */
  add(source: string): boolean {
    const count = this.#counts.get(source) ?? 0;
    if (this.#limit > 0 && count >= this.#limit) return false;
    this.#counts.set(source, count + 1);
    return true;
  }

  /** Counts one less for `source`. */
  remove(source: string): void {
    const count = this.#counts.get(source) ?? 0;
    if (count <= 1) this.#counts.delete(source);
    else this.#counts.set(source, count - 1);
  }
}

/** Options of {@linkcode FailureThrottle}. */
export interface FailureThrottleOptions {
  /** Failures a source may have in a burst. @default {10} */
  burst?: number;
  /** Milliseconds after which a source may fail once more. @default {6000} */
  refillMs?: number;
  /** Most sources remembered; the longest-remembered are forgotten first. @default {65536} */
  maxSources?: number;
  /** The clock. @default {Date.now} */
  now?: () => number;
}

/**
 * A token bucket per source address for failed proofs: a source that spent
 * its burst is refused before its proof is even checked, until time refills
 * it. Others are not affected.
 */
export class FailureThrottle {
  readonly #burst: number;
  readonly #refillMs: number;
  readonly #maxSources: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  /** Creates the throttle. */
  constructor(options: FailureThrottleOptions = {}) {
    this.#burst = options.burst ?? 10;
    this.#refillMs = options.refillMs ?? 6000;
    this.#maxSources = options.maxSources ?? 65536;
    this.#now = options.now ?? Date.now;
  }

  #tokens(source: string): number {
    const bucket = this.#buckets.get(source);
    if (bucket === undefined) return this.#burst;
    const refilled = Math.floor((this.#now() - bucket.at) / this.#refillMs);
    return Math.min(this.#burst, bucket.tokens + refilled);
  }

  /** Whether `source` may try a proof now. */
  allows(source: string): boolean {
    return this.#tokens(source) > 0;
  }

  /** Records a failed proof from `source`. */
  failed(source: string): void {
    const now = this.#now();
    const bucket = this.#buckets.get(source);
    const tokens = Math.max(0, this.#tokens(source) - 1);
    // Keep the time already spent towards the next token: failing does not restart the clock.
    const at = bucket === undefined ? now : now - (now - bucket.at) % this.#refillMs;
    this.#buckets.delete(source);
    if (this.#buckets.size >= this.#maxSources) {
      this.#buckets.delete(this.#buckets.keys().next().value!);
    }
    this.#buckets.set(source, { tokens, at });
  }
}
