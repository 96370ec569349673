/**
 * Two connections piped into each other, both ways, until both directions
 * are done: what the forwarders do with every session. A splice is built to
 * be cheap while idle, since a forwarder may hold thousands of quiet
 * sessions: each direction waits in one read, and nothing else (no timer,
 * no listener on a shared signal) is held per session.
 * @module
 */

import { IndirectSession, type PumpListener } from "../lib/indirect/session.ts";

/** Smallest buffer a direction between two sockets reads into: what an idle one holds. */
const MIN_PIPE_BUFFER_BYTES = 2 * 1024;

/** Size of the buffer each direction of {@linkcode pipeBoth} reads into. */
export const PIPE_BUFFER_BYTES = 256 * 1024;

/** Bytes that {@linkcode pipeBoth} moved each way, and what stopped it early. */
export interface PipeResult {
  /** Bytes read from `a` and written to `b`. */
  aToB: number;
  /** Bytes read from `b` and written to `a`. */
  bToA: number;
  /** The first error that ended the piping (then both connections were closed); none after two clean EOFs. */
  error?: Error;
}

/** Options of {@linkcode pipeBoth}. */
export interface PipeOptions {
  /** Closes both connections when aborted; the result's `error` is then the abort reason. */
  signal?: AbortSignal;
  /** Bytes each direction reads at a time. @default {262144} */
  bufferSize?: number;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function isSession(conn: Deno.Conn): conn is IndirectSession {
  return conn instanceof IndirectSession;
}

/** The direction numbers a splice gives its pumps. */
const A_TO_B = 0;
const B_TO_A = 1;

/**
 * Pipes `a` and `b` into each other. When one side's input ends, the other
 * side's output is half-closed (`closeWrite()`) and the other direction keeps
 * flowing; once both have ended, or on the first error or {@linkcode stop},
 * both are closed and `finished` is called.
 *
 * A direction to or from a session is that session's pump, which reports to
 * the splice itself (it is their {@linkcode PumpListener}): an idle session
 * holds no promise or callback per direction here.
 */
export class Splice implements PumpListener {
  readonly #a: Deno.Conn;
  readonly #b: Deno.Conn;
  readonly #result: PipeResult = { aToB: 0, bToA: 0 };
  #finished: ((result: PipeResult) => void) | undefined;
  #closed = false;
  /** Directions still running (two at first). */
  #running = 2;
  /** A session side that has fully ended (closed, not half-closed) once its bytes are out. */
  #sessionEnded = false;
  #sessionDrained = false;

  /**
   * Starts piping; `bufferSize` is what a direction between two sockets reads
   * at a time. `finished` is called once, with the byte counts and the error
   * that ended the piping early, if any (a callback rather than a promise:
   * an idle session holds less), and never before the constructor returns.
   */
  constructor(
    a: Deno.Conn,
    b: Deno.Conn,
    finished: (result: PipeResult) => void,
    bufferSize: number = PIPE_BUFFER_BYTES,
  ) {
    this.#a = a;
    this.#b = b;
    this.#finished = finished;
    this.#direction(a, b, A_TO_B, bufferSize);
    this.#direction(b, a, B_TO_A, bufferSize);
  }

  /** Ends both directions at once: both connections close, and `reason` is the result's error. */
  stop(reason: unknown): void {
    this.#fail(reason);
  }

  /** Moves `from`'s bytes to `to`: a session's pump when either is one, else a copy. */
  #direction(from: Deno.Conn, to: Deno.Conn, direction: number, bufferSize: number): void {
    if (isSession(to)) to.pumpFrom(from, this, direction);
    else if (isSession(from)) {
      // A session that has fully ended (the peer closed it, rather than half-closing) cannot
      // take bytes any more: once what it delivered is forwarded, end both rather than wait
      // for the other side to send something that would fail.
      void from.closed.then(this.#onSessionEnded);
      from.pumpTo(to, this, direction);
    } else {
      void copy(from, to, bufferSize, (bytes) => this.pumped(direction, bytes)).then(
        () => this.pumpEnded(direction),
        this.#fail,
      );
    }
  }

  /** From a pump: `bytes` more went through in `direction`. */
  pumped(direction: number, bytes: number): void {
    if (direction === A_TO_B) this.#result.aToB += bytes;
    else this.#result.bToA += bytes;
  }

  /** From a pump: `direction`'s input ended and all of it went through; half-close its output. */
  pumpEnded(direction: number): void {
    const [from, to] = direction === A_TO_B ? [this.#a, this.#b] : [this.#b, this.#a];
    if (isSession(from) && !isSession(to)) {
      this.#sessionDrained = true;
      if (this.#sessionEnded) this.#closeBoth();
    }
    if (this.#closed) return this.#directionDone();
    to.closeWrite().then(() => this.#directionDone(), this.#fail);
  }

  /** From a pump: `direction` stopped on `error`, which ends the splice. */
  pumpFailed(_direction: number, error: unknown): void {
    this.#fail(error);
  }

  readonly #onSessionEnded = (): void => {
    this.#sessionEnded = true;
    if (this.#sessionDrained) this.#closeBoth();
  };

  #directionDone(): void {
    if (--this.#running === 0) this.#settle();
  }

  readonly #fail = (error: unknown): void => {
    // Once both are closed, errors are echoes of that (a pending read interrupted), not causes.
    if (!this.#closed) this.#result.error ??= asError(error);
    this.#closeBoth();
    this.#settle();
  };

  #closeBoth(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const conn of [this.#a, this.#b]) {
      try {
        conn.close();
      } catch {
        // Already closed: by the peer's error, or by the other direction.
      }
    }
  }

  #settle(): void {
    this.#closeBoth();
    const finished = this.#finished;
    this.#finished = undefined;
    finished?.(this.#result);
  }
}

/** Copies between two plain connections, the read buffer sized to the traffic. */
async function copy(
  from: Deno.Conn,
  to: Deno.Conn,
  bufferSize: number,
  count: (bytes: number) => void,
): Promise<void> {
  // Starts small so thousands of idle sessions cost little; doubles while reads fill it, and
  // halves again when they come back far from full (the session went quiet).
  let buffer = new Uint8Array(Math.min(bufferSize, MIN_PIPE_BUFFER_BYTES));
  for (let n = await from.read(buffer); n !== null; n = await from.read(buffer)) {
    for (let written = 0; written < n;) {
      written += await to.write(buffer.subarray(written, n));
    }
    count(n);
    if (n === buffer.length && buffer.length < bufferSize) {
      buffer = new Uint8Array(Math.min(bufferSize, buffer.length * 2));
    } else if (n < buffer.length / 8 && buffer.length > MIN_PIPE_BUFFER_BYTES) {
      buffer = new Uint8Array(buffer.length / 2);
    }
  }
}

/**
 * Pipes two connections into each other until both directions are done,
 * counting bytes. Binary-safe. When one side's input ends, the other side's
 * output is half-closed (`closeWrite()`) and the other direction keeps
 * flowing; once both have ended, or on the first error, both are closed.
 * @param a One connection, e.g. an accepted TCP connection.
 * @param b The other, e.g. an RTCP session.
 * @param options A signal to stop early, and the read buffer size.
 * @returns The byte counts, and the error that ended the piping early, if any.
 * @example Forward a TCP connection to another port
 * ```ts ignore
 * const { aToB, bToA } = await pipeBoth(accepted, await Deno.connect({ port: 5432 }));
 * ```
 */
export async function pipeBoth(
  a: Deno.Conn,
  b: Deno.Conn,
  options: PipeOptions = {},
): Promise<PipeResult> {
  const { signal, bufferSize = PIPE_BUFFER_BYTES } = options;
  const done = Promise.withResolvers<PipeResult>();
  const splice = new Splice(a, b, done.resolve, bufferSize);
  const onAbort = () => splice.stop(signal!.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) onAbort();
  try {
    return await done.promise;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}
