/**
 * Deadlines that all wait the same time, behind one system timer.
 *
 * Each deadline joins the back of a queue; the timer is armed for the oldest
 * one still waiting. Cancelling marks an entry and costs no timer call, so a
 * discover point that arms an Ack deadline for every session, and sees nearly
 * every one answered, makes one timer call per expiry period instead of two
 * per session.
 * @module
 */

import { type Clock, SYSTEM_CLOCK, type TimerHandle } from "./_clock.ts";

/** Below this many spent entries at the front, the queue does not bother to compact. */
const COMPACT_AT = 1024;

/** One deadline in a {@linkcode DeadlineQueue}. */
export class QueuedDeadline<T> {
  /** When it expires, on the queue's clock. */
  readonly at: number;
  /** What expires; dropped on cancel, so that a cancelled entry holds nothing alive. */
  item: T | undefined;

  /** Made by {@linkcode DeadlineQueue.add}. */
  constructor(at: number, item: T) {
    this.at = at;
    this.item = item;
  }

  /** The deadline will not expire; calling it again, or after expiry, does nothing. */
  cancel(): void {
    this.item = undefined;
  }
}

/** Deadlines of one fixed length, expiring in the order they were added. */
export class DeadlineQueue<T> {
  readonly #ms: number;
  readonly #onExpired: (item: T) => void;
  readonly #clock: Clock;
  #entries: QueuedDeadline<T>[] = [];
  #head = 0;
  #timer: TimerHandle | undefined;
  /** Set while expired items are being handed out: the timer is re-armed once, after. */
  #expiring = false;
  #closed = false;

  /**
   * Makes an empty queue; its timer runs only while a deadline waits.
   * @param ms How long every deadline waits.
   * @param onExpired Called with the item of each deadline that expires uncancelled.
   * @param clock Where time comes from (tests drive their own).
   */
  constructor(ms: number, onExpired: (item: T) => void, clock: Clock = SYSTEM_CLOCK) {
    this.#ms = ms;
    this.#onExpired = onExpired;
    this.#clock = clock;
  }

  /** Entries held: those that wait, and cancelled ones not yet dropped. */
  get size(): number {
    return this.#entries.length - this.#head;
  }

  /** Starts a deadline for `item`, `ms` from now. After {@linkcode close}, it never expires. */
  add(item: T): QueuedDeadline<T> {
    const entry = new QueuedDeadline(this.#clock.now() + this.#ms, item);
    if (this.#closed) {
      entry.cancel();
      return entry;
    }
    // Most deadlines are cancelled soon, and about in order: drop those at the front now, so
    // that the queue holds about as many entries as wait, not as many as the period saw.
    while (this.#head < this.#entries.length && this.#entries[this.#head]!.item === undefined) {
      this.#head++;
    }
    this.#compact();
    this.#entries.push(entry);
    if (!this.#expiring) this.#timer ??= this.#clock.setTimeout(() => this.#expire(), this.#ms);
    return entry;
  }

  /** Stops the timer; no deadline expires from now on. */
  close(): void {
    this.#closed = true;
    this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#entries = [];
    this.#head = 0;
  }

  #expire(): void {
    this.#timer = undefined;
    const now = this.#clock.now();
    this.#expiring = true;
    try {
      while (this.#head < this.#entries.length) {
        const entry = this.#entries[this.#head]!;
        if (entry.item !== undefined && entry.at > now) break;
        this.#head++;
        const item = entry.item;
        if (item === undefined) continue;
        entry.cancel();
        this.#onExpired(item);
        if (this.#closed) return;
      }
    } finally {
      this.#expiring = false;
    }
    this.#compact();
    const next = this.#entries[this.#head];
    if (next !== undefined) {
      this.#timer = this.#clock.setTimeout(() => this.#expire(), Math.max(0, next.at - now));
    }
  }

  #compact(): void {
    if (this.#head === this.#entries.length) {
      // Emptied in place: in the common case (each deadline cancelled before the next comes)
      // this runs for every new one.
      this.#entries.length = 0;
      this.#head = 0;
    } else if (this.#head >= COMPACT_AT && this.#head * 2 >= this.#entries.length) {
      this.#entries = this.#entries.slice(this.#head);
      this.#head = 0;
    }
  }
}
