/**
 * A set that forgets its oldest entries beyond a fixed size.
 * @module
 */

/** Remembers at most `capacity` numbers; adding one more forgets the oldest. */
export class RecentSet {
  readonly #capacity: number;
  readonly #items = new Set<number>();

  /** Creates a set that holds at most `capacity` numbers. */
  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** Adds `value`, forgetting the oldest entry when full. */
  add(value: number): void {
    this.#items.delete(value);
    this.#items.add(value);
    if (this.#items.size > this.#capacity) {
      this.#items.delete(this.#items.values().next().value!);
    }
  }

  /** Whether `value` was added and not yet forgotten or deleted. */
  has(value: number): boolean {
    return this.#items.has(value);
  }

  /** Forgets `value`. */
  delete(value: number): void {
    this.#items.delete(value);
  }
}
