/**
 * A clock that moves only when a test says so, for timing logic (keepalive)
 * that must hold on a loaded machine: no timer fires on its own.
 * @module
 */

import type { Clock, TimerHandle } from "../lib/_clock.ts";

interface FakeTimer {
  readonly at: number;
  readonly callback: () => void;
}

/** A {@linkcode Clock} driven by {@linkcode FakeClock.advance}. */
export class FakeClock implements Clock {
  #now = 0;
  #nextId = 1;
  readonly #timers = new Map<number, FakeTimer>();

  /** The fake time, in milliseconds since the clock was made. */
  now(): number {
    return this.#now;
  }

  /** Schedules `callback` at `ms` from now, fake time. */
  setTimeout(callback: () => void, ms: number): TimerHandle {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), callback });
    return id;
  }

  /** Cancels a timer. */
  clearTimeout(timer: TimerHandle | undefined): void {
    if (typeof timer === "number") this.#timers.delete(timer);
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Moves time forward by `ms`, firing the timers that fall due, in order. */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      let dueId: number | undefined;
      let due: FakeTimer | undefined;
      for (const [id, timer] of this.#timers) {
        if (timer.at <= end && (due === undefined || timer.at < due.at)) [dueId, due] = [id, timer];
      }
      if (due === undefined) break;
      this.#timers.delete(dueId!);
      this.#now = due.at;
      due.callback();
    }
    this.#now = end;
  }
}
