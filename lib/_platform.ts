/**
 * The little the client path needs from the runtime, so that it also runs in a
 * web page (`browser.ts`): the error classes of a lost link or a deadline, and
 * timers that do not keep the process alive. Under Deno these are
 * `Deno.errors.*` and `Deno.unrefTimer`/`Deno.refTimer` themselves, so
 * `instanceof Deno.errors.TimedOut` holds; elsewhere, classes with the same
 * names, and timers that cannot be unref'd (a page has no process to keep alive).
 * Nothing here reads `Deno` unless it exists.
 * @module
 */

const deno = (globalThis as { Deno?: typeof Deno }).Deno;

/** A class of `name`, like `Deno.errors.*`, for places without Deno. */
function standIn<T>(name: string): T {
  return class extends Error {
    constructor(message?: string, options?: ErrorOptions) {
      super(message, options);
      this.name = name;
    }
  } as T;
}

/** `Deno.errors.TimedOut`, or a stand-in of that name outside Deno: a deadline passed. */
export const TimedOut: typeof Deno.errors.TimedOut = deno?.errors?.TimedOut ??
  standIn("TimedOut");

/** `Deno.errors.ConnectionReset`, or a stand-in of that name outside Deno: a link was lost. */
export const ConnectionReset: typeof Deno.errors.ConnectionReset = deno?.errors?.ConnectionReset ??
  standIn("ConnectionReset");

/** `Deno.errors.BadResource`, or a stand-in of that name outside Deno: a use after close. */
export const BadResource: typeof Deno.errors.BadResource = deno?.errors?.BadResource ??
  standIn("BadResource");

/** `Deno.errors.Interrupted`, or a stand-in of that name outside Deno: a pending read or write cut short by `close()`. */
export const Interrupted: typeof Deno.errors.Interrupted = deno?.errors?.Interrupted ??
  standIn("Interrupted");

/** `Deno.errors.WriteZero`, or a stand-in of that name outside Deno: the peer does not read. */
export const WriteZero: typeof Deno.errors.WriteZero = deno?.errors?.WriteZero ??
  standIn("WriteZero");

/** `Deno.errors.InvalidData`, or a stand-in of that name outside Deno: bad data, e.g. a certificate. */
export const InvalidData: typeof Deno.errors.InvalidData = deno?.errors?.InvalidData ??
  standIn("InvalidData");

/** `Deno.unrefTimer`: the timer no longer keeps the process alive. Outside Deno, nothing. */
export function unrefTimer(timer: ReturnType<typeof setTimeout>): void {
  deno?.unrefTimer(timer as unknown as number);
}

/** `Deno.refTimer`: the timer keeps the process alive again. Outside Deno, nothing. */
export function refTimer(timer: ReturnType<typeof setTimeout>): void {
  deno?.refTimer(timer as unknown as number);
}
