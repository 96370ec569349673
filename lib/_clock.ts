/**
 * Time, behind a small interface: the system's timers by default, or a
 * clock a test drives by hand, so that timing logic (keepalive, backoff)
 * is tested without waiting on the wall clock.
 * @module
 */

import { refTimer, unrefTimer } from "./_platform.ts";

/** A timer handle from {@linkcode Clock.setTimeout}. */
export type TimerHandle = number | { [Symbol.toPrimitive](): number } | object;

/** Where time comes from. */
export interface Clock {
  /**
   * Milliseconds since some fixed point. Only differences are used, so the
   * system clock's is monotonic (`performance.now()`): setting the time of
   * day moves no deadline.
   */
  now(): number;
  /** Calls `callback` once, `ms` milliseconds from now. */
  setTimeout(callback: () => void, ms: number): TimerHandle;
  /** Cancels a timer; `undefined` and fired timers are ignored. */
  clearTimeout(timer: TimerHandle | undefined): void;
  /** Lets a timer not keep the process alive (a no-op where that means nothing). */
  unrefTimer?(timer: TimerHandle): void;
  /** Lets a timer keep the process alive again. */
  refTimer?(timer: TimerHandle): void;
}

/** The system clock: `performance.now()` and the global timers. */
export const SYSTEM_CLOCK: Clock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (timer) => clearTimeout(timer as number | undefined),
  unrefTimer: (timer) => unrefTimer(timer as ReturnType<typeof setTimeout>),
  refTimer: (timer) => refTimer(timer as ReturnType<typeof setTimeout>),
};
