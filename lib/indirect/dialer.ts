/**
 * `IndirectDialer`: many sessions to one named server over one link to the
 * discover point (extension `multiplex`), as `ssh -L` carries its channels
 * over one connection: one TCP (and TLS) handshake and one proof for all of
 * them, and a session opens in one round trip.
 * @module
 */

import { getLogger } from "../_log.ts";
import { BadResource, ConnectionReset, Interrupted } from "../_platform.ts";
import { ProtocolError, SessionRefusedError } from "../errors.ts";
import { dialDiscoverPoint } from "../link/handshake.ts";
import { ALL_FEATURES, Feature, type Link } from "../link/link.ts";
import { type AckMessage, type CloseMessage, MessageType } from "../wire/message.ts";
import {
  clientLinkOptions,
  connect,
  type IndirectConnectOptions,
  throughEach,
  withinTimeout,
} from "./connect.ts";
import { SessionMux } from "./mux.ts";
import type { IndirectConn } from "./types.ts";

const logger = getLogger(["rtcp", "connect"]);

/** The largest session number a client gives; then it starts again from 1. */
const MAX_NUMBER = 2 ** 31 - 1;

/** Options of an {@linkcode IndirectDialer}: those of `connect({ dp, name })`. */
export type IndirectDialerOptions = IndirectConnectOptions;

/**
 * Opens sessions to one indirect server through one link to the discover
 * point, kept open between sessions until {@linkcode close} (so it keeps
 * the process alive until then). The link is dialled on the first
 * {@linkcode connect}, and again after it breaks.
 * A discover point that does not agree on `multiplex` (or `features`
 * without it) gets a link per session, as `connect()` opens.
 * @example
 * ```ts ignore
 * await using dialer = new IndirectDialer({ dp: "dp.example.com:7000", name: "db" });
 * using first = await dialer.connect();
 * using second = await dialer.connect(); // same link, one round trip
 * ```
 */
export class IndirectDialer implements AsyncDisposable {
  readonly #options: IndirectConnectOptions;
  /** The shared link being dialled or in use; `undefined` before the first and after it ends. */
  #link: Promise<SharedLink | undefined> | undefined;
  /** The shared link last dialled, until it ends. */
  #current: SharedLink | undefined;
  /** Set once a discover point did not agree on `multiplex`: a link per session from then on. */
  #perSession = false;
  #closed = false;
  /** Aborted by {@linkcode close}: stops a dial under way. */
  readonly #stop = new AbortController();

  /** A dialer for the sessions `options` describe; nothing is dialled yet. */
  constructor(options: IndirectDialerOptions) {
    this.#options = {
      ...options,
      features: options.features ?? ALL_FEATURES,
      signal: options.signal === undefined
        ? this.#stop.signal
        : AbortSignal.any([options.signal, this.#stop.signal]),
    };
    this.#perSession = !this.#options.features!.includes(Feature.Multiplex);
  }

  /**
   * Opens a session, on the shared link (dialled first if there is none).
   * @param signal Cancels this attempt only.
   * @returns A connection shaped like `Deno.Conn`.
   * @throws {SessionRefusedError} If no server has the name, or it refused.
   * @throws {DiscoverPointUnreachableError} If no discover point can be reached.
   * @throws {Deno.errors.TimedOut} If the session did not open within `timeout`.
   */
  async connect(signal?: AbortSignal): Promise<IndirectConn> {
    if (this.#closed) throw new BadResource("Cannot connect: the dialer is closed");
    const options = signal === undefined
      ? this.#options
      : { ...this.#options, signal: AbortSignal.any([signal, this.#stop.signal]) };
    if (this.#perSession) return await connect(options);
    for (let attempt = 1;; attempt++) {
      const link = await this.#shared();
      if (link === undefined) return await connect(options);
      try {
        return await withinTimeout(link.dp, options, (signal) => link.open(signal));
      } catch (error) {
        // The link ended before the answer (the discover point went away): once more, anew.
        if (!(error instanceof LinkEnded) || attempt === 2) throw error;
      }
    }
  }

  /** Closes the shared link; sessions still open on it end. Nothing is dialled again. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stop.abort(new Interrupted("The dialer is closed"));
    const link = await this.#link?.catch(() => undefined);
    await link?.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** The shared link: the one in use, or one dialled now (all callers share the dial). */
  #shared(): Promise<SharedLink | undefined> {
    if (this.#link === undefined) {
      const dialing = this.#dial();
      this.#link = dialing;
      dialing.catch(() => {
        if (this.#link === dialing) this.#link = undefined;
      });
    }
    return this.#link;
  }

  /**
   * Dials the shared link: `undefined` when the discover point does not
   * multiplex (that link is closed, and each session gets its own).
   */
  async #dial(): Promise<SharedLink | undefined> {
    const options = this.#options;
    const shared = await throughEach(
      options.dp,
      (dp) =>
        withinTimeout(dp, options, async (signal) => {
          const link = await dialDiscoverPoint(dp, clientLinkOptions(options, signal));
          const shared: SharedLink = new SharedLink(dp, link, options, () => {
            if (this.#current !== shared) return;
            this.#current = undefined;
            this.#link = undefined;
          });
          this.#current = shared;
          return shared;
        }),
    );
    if (shared.multiplexed && !this.#closed) return shared;
    if (!shared.multiplexed) {
      logger.info("{dp} does not multiplex sessions: one link per session", { dp: shared.dp });
      this.#perSession = true;
    }
    await shared.close();
    return undefined;
  }
}

/** A Connect's link ended before its answer came. */
class LinkEnded extends ConnectionReset {}

/** A Connect sent on the shared link, waiting for its answer. */
interface Waiter extends PromiseWithResolvers<IndirectConn> {
  /** Its caller gave up: an Ack that still comes opens a session only to close it. */
  abandoned: boolean;
}

/** The link an {@linkcode IndirectDialer} shares between its sessions. */
class SharedLink {
  /** The discover point the link goes to. */
  readonly dp: string;
  readonly #link: Link;
  readonly #name: string;
  readonly #mux: SessionMux;
  readonly #waiting = new Map<number, Waiter>();
  /** Settles once the link has ended and its waiters were told. */
  readonly #routing: Promise<void>;
  #over = false;
  #lastNumber = 0;

  /** Starts routing `link`'s messages; `onEnd` is called once it ends. */
  constructor(dp: string, link: Link, options: IndirectConnectOptions, onEnd: () => void) {
    this.dp = dp;
    this.#link = link;
    this.#name = options.name;
    this.#mux = new SessionMux(link, {
      maxWindow: options.maxWindow,
      shared: true,
      onAck: (ack) => this.#acked(ack),
      onStrayClose: (close) => this.#refused(close),
    });
    this.#routing = this.#mux.run().catch((error) => {
      logger.debug("The link to {dp} ended: {message}", { dp, message: error.message });
    }).finally(() => {
      this.#over = true;
      onEnd();
      const reason = this.#ended();
      for (const waiter of this.#waiting.values()) waiter.reject(reason);
      this.#waiting.clear();
    });
  }

  /** Whether the link has ended. */
  get over(): boolean {
    return this.#over;
  }

  /** Whether the discover point agreed on `multiplex`. */
  get multiplexed(): boolean {
    return this.#link.features.has(Feature.Multiplex);
  }

  /** Sends a Connect with a number of ours; resolves with the session once acknowledged. */
  open(signal: AbortSignal): Promise<IndirectConn> {
    if (this.#over) return Promise.reject(this.#ended());
    const number = this.#nextNumber();
    try {
      this.#link.send({ type: MessageType.Connect, name: this.#name, sessionId: number });
    } catch {
      return Promise.reject(this.#ended());
    }
    const waiter: Waiter = { ...Promise.withResolvers<IndirectConn>(), abandoned: false };
    this.#waiting.set(number, waiter);
    const abandon = () => {
      waiter.abandoned = true;
      waiter.reject(signal.reason);
    };
    if (signal.aborted) abandon();
    else signal.addEventListener("abort", abandon, { once: true });
    return waiter.promise.finally(() => signal.removeEventListener("abort", abandon));
  }

  /** Closes the link: open sessions end, Connects waiting fail. */
  async close(): Promise<void> {
    await this.#link.close();
    await this.#routing;
  }

  /** The error of a Connect whose link ended first. */
  #ended(): LinkEnded {
    return new LinkEnded(
      `Cannot open session to "${this.#name}": the link to the discover point ${this.#link.peer} ended`,
    );
  }

  /** The next number not in use, counting up and starting again from 1. */
  #nextNumber(): number {
    do {
      this.#lastNumber = this.#lastNumber >= MAX_NUMBER ? 1 : this.#lastNumber + 1;
    } while (this.#waiting.has(this.#lastNumber) || this.#mux.has(this.#lastNumber));
    return this.#lastNumber;
  }

  #acked(ack: AckMessage): void {
    const waiter = this.#waiting.get(ack.sessionId);
    if (waiter === undefined) {
      throw new ProtocolError(
        `Cannot accept Ack for session ${ack.sessionId}: no Connect of ours waits for it`,
      );
    }
    this.#waiting.delete(ack.sessionId);
    const conn = this.#mux.open(ack.sessionId);
    if (waiter.abandoned) conn.close();
    else waiter.resolve(conn);
  }

  #refused(close: CloseMessage): void {
    const waiter = this.#waiting.get(close.sessionId);
    if (waiter === undefined) return;
    this.#waiting.delete(close.sessionId);
    waiter.reject(new SessionRefusedError(this.#name, close.reason));
  }
}
