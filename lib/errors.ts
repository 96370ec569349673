/**
 * The few error classes that RTCP adds to the built-in ones.
 *
 * Caller mistakes are `TypeError` / `RangeError`; a lost link is
 * `Deno.errors.ConnectionReset`; a deadline is `Deno.errors.TimedOut`.
 * @module
 */

import { BadResource } from "./_platform.ts";

/** A peer sent a message that is malformed or does not fit the protocol state. */
export class ProtocolError extends Error {
  /** Creates a protocol error whose message says what was wrong. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
  }
}

/** The far end speaks an incompatible protocol version (it answered Aloha with AbortVersion). */
export class VersionMismatchError extends ProtocolError {
  /** Creates a version error whose message names both versions where known. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "VersionMismatchError";
  }
}

/** A session was refused: an Ack with `X = -1`, from the discover point or the indirect server. */
export class SessionRefusedError extends Error {
  /** The refusal reason exactly as the refusing end sent it. */
  readonly reason: string;
  /** Creates a refusal error for `name` carrying the peer's `reason`. */
  constructor(name: string, reason: string, options?: ErrorOptions) {
    super(`Cannot open session to "${name}": ${reason || "refused without a reason"}`, options);
    this.name = "SessionRefusedError";
    this.reason = reason;
  }
}

/**
 * A session can no longer do what was asked of it: it was closed (by this
 * end, by the peer or by the discover point), or its write side was. The
 * message says which, with the reason the peer or the discover point gave.
 *
 * It is a `Deno.errors.BadResource`, the class a `Deno.Conn` throws when used
 * after `close()`. (Where a `Deno.Conn` throws `BrokenPipe` instead — a write
 * after `closeWrite()` or after the peer closed — a session throws this too.)
 */
export class SessionClosedError extends BadResource {
  /** Creates an error saying which use came too late. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SessionClosedError";
  }
}

/** The discover point could not be reached over TCP; `cause` holds the underlying error. */
export class DiscoverPointUnreachableError extends Error {
  /** Creates an error naming the discover point address that failed. */
  constructor(address: string, options?: ErrorOptions) {
    const detail = options?.cause instanceof Error ? `: ${options.cause.message}` : "";
    super(`Cannot reach discover point "${address}"${detail}`, options);
    this.name = "DiscoverPointUnreachableError";
  }
}
