/**
 * The session table of one link at an indirect end: routes each message to
 * its session, and ends every session with the same error when the link breaks.
 * @module
 */

import { getLogger } from "../_log.ts";
import { RecentSet } from "../_recent_set.ts";
import { ConnectionReset } from "../_platform.ts";
import { ProtocolError } from "../errors.ts";
import type { Link } from "../link/link.ts";
import {
  type AckMessage,
  type CloseMessage,
  type ConnectMessage,
  MessageType,
  messageTypeName,
  type PortMessage,
} from "../wire/message.ts";
import { IndirectSession, type SessionCarrier } from "./session.ts";

const logger = getLogger(["rtcp", "mux"]);

/**
 * How many ended session numbers a server's link remembers with `close-once`,
 * to ignore the Data the discover point sent before our Close reached it.
 */
const RECENTLY_ENDED = 4096;

/** Options of {@linkcode SessionMux}. */
export interface SessionMuxOptions {
  /** Handles a Connect from the discover point; without it a Connect is a protocol error. */
  onConnect?: (message: ConnectMessage) => void;
  /** Called once per session when it has ended and its number may be reused. */
  onRelease?: (sessionId: number) => void;
  /** Handles a More from the discover point (extension `pool`); without it a More is ignored. */
  onMore?: () => void;
  /** Handles the discover point's answer to a request for a public port (extension `public-port`). */
  onPort?: (message: PortMessage) => void;
  /** Largest flow-control window per session direction. @default {4194304} */
  maxWindow?: number;
  /**
   * Handles an Ack on an established link (extension `multiplex`: the answer
   * to one of our Connects); without it an Ack is a protocol error.
   */
  onAck?: (message: AckMessage) => void;
  /**
   * Handles a Close for a number with no session (extension `multiplex`: the
   * refusal of one of our Connects); without it such a Close is ignored.
   */
  onStrayClose?: (message: CloseMessage) => void;
  /**
   * The link is shared by sessions that come and go (extension `multiplex`):
   * its owner holds it, and a session's `ref()` and `unref()` do nothing.
   */
  shared?: boolean;
}

/** The sessions carried by one link, keyed by session number. */
export class SessionMux implements SessionCarrier {
  /** The link underneath. */
  readonly link: Link;
  readonly #sessions = new Map<number, IndirectSession>();
  readonly #options: SessionMuxOptions;
  /** With `close-once`: numbers whose sessions ended, for Data that crossed our Close. */
  readonly #recentlyEnded: RecentSet | undefined;

  /** Creates the table for `link`; call {@linkcode run} to start routing. */
  constructor(link: Link, options: SessionMuxOptions = {}) {
    this.link = link;
    this.#options = options;
    if (this.closeOnce) this.#recentlyEnded = new RecentSet(RECENTLY_ENDED);
  }

  /** Number of sessions not yet fully ended. */
  get size(): number {
    return this.#sessions.size;
  }

  /** Whether both ends agreed on `half-close`. */
  get halfClose(): boolean {
    return this.link.halfClose;
  }

  /** Whether both ends agreed on `flow-control`. */
  get flowControl(): boolean {
    return this.link.flowControl;
  }

  /** A server's link (it takes Connects) that agreed on `close-once`: its Closes are final. */
  get closeOnce(): boolean {
    return this.#options.onConnect !== undefined && this.link.closeOnce;
  }

  /** Largest Data content for the link's codec. */
  get maxDataBytes(): number {
    return this.link.maxDataBytes;
  }

  /** Largest receive window a session grows to. */
  get maxWindow(): number | undefined {
    return this.#options.maxWindow;
  }

  /** Whether session `sessionId` is open (or still ending). */
  has(sessionId: number): boolean {
    return this.#sessions.has(sessionId);
  }

  /** Creates and registers session `sessionId`, before its Ack is sent. */
  open(sessionId: number, remoteAddr?: Deno.NetAddr, clientKey?: string): IndirectSession {
    const session = new IndirectSession(this, sessionId, {
      localAddr: this.link.transport.localAddr,
      remoteAddr: remoteAddr ?? this.link.transport.remoteAddr,
      clientKey,
    });
    this.#sessions.set(sessionId, session);
    this.#recentlyEnded?.delete(sessionId);
    return session;
  }

  /** See {@linkcode SessionCarrier.send}. */
  send: SessionCarrier["send"] = (message) => this.link.send(message);

  /** See {@linkcode SessionCarrier.release}. */
  release(sessionId: number): void {
    if (!this.#sessions.delete(sessionId)) return;
    this.#recentlyEnded?.add(sessionId);
    this.#options.onRelease?.(sessionId);
  }

  /** See {@linkcode SessionCarrier.ref}. */
  ref(): void {
    if (!this.#options.shared) this.link.ref();
  }

  /** See {@linkcode SessionCarrier.unref}. */
  unref(): void {
    if (!this.#options.shared) this.link.unref();
  }

  /**
   * Routes messages until the link ends. Then every open session is aborted
   * with `Deno.errors.ConnectionReset` (cause: what ended the link).
   * @returns When the peer closed the link cleanly.
   * @throws What broke the link: a {@linkcode ProtocolError} or the transport's error.
   */
  async run(): Promise<void> {
    let failure: unknown;
    try {
      for (
        let message = await this.link.next();
        message !== null;
        message = await this.link.next()
      ) {
        switch (message.type) {
          case MessageType.Data: {
            const session = this.#sessions.get(message.sessionId);
            if (session === undefined) {
              if (this.#recentlyEnded?.has(message.sessionId)) break;
              throw new ProtocolError(
                `Cannot accept Data for session ${message.sessionId}: no such session on this link`,
              );
            }
            const full = session.deliver(message.content as Uint8Array<ArrayBuffer>);
            // Without flow control, a slow reader stalls this link (documented).
            if (full) await full;
            break;
          }
          case MessageType.Close: {
            const session = this.#sessions.get(message.sessionId);
            if (session !== undefined) session.closedByPeer(message.reason);
            else if (this.#options.onStrayClose) this.#options.onStrayClose(message);
            else {
              logger.debug("Ignored Close for unknown session {sessionId}", {
                sessionId: message.sessionId,
              });
            }
            break;
          }
          case MessageType.End:
            this.#sessions.get(message.sessionId)?.endedByPeer();
            break;
          case MessageType.Credit:
            this.#sessions.get(message.sessionId)?.credited(message.bytes);
            break;
          case MessageType.More:
            this.#options.onMore?.();
            break;
          case MessageType.Port:
            if (this.#options.onPort === undefined) {
              throw new ProtocolError(
                "Cannot accept Port: no public port was asked for on this link",
              );
            }
            this.#options.onPort(message);
            break;
          case MessageType.Ack:
            if (this.#options.onAck === undefined) {
              throw new ProtocolError("Cannot accept Ack: no Connect of ours waits on this link");
            }
            this.#options.onAck(message);
            break;
          case MessageType.Connect:
            if (this.#options.onConnect === undefined) {
              throw new ProtocolError("Cannot accept Connect: this link is an indirect client's");
            }
            this.#options.onConnect(message);
            break;
          default:
            throw new ProtocolError(
              `Cannot accept ${messageTypeName(message.type)} message on an established link`,
            );
        }
      }
    } catch (error) {
      failure = error;
      throw error;
    } finally {
      this.link.abort();
      // An error costs a stack trace: made only for sessions still open (a client's link ends
      // after its one session, with none).
      if (this.#sessions.size > 0) {
        const reason = new ConnectionReset(
          `Session ended: the link to the discover point ${this.link.peer} ${
            failure === undefined ? "closed" : `failed: ${(failure as Error).message}`
          }`,
          { cause: failure },
        );
        for (const session of [...this.#sessions.values()]) session.abort(reason);
      }
    }
  }
}
