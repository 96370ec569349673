/**
 * The discover point's view of sessions: one session joins a client end (an
 * indirect client's link, or a plain TCP connection on a public port) to one
 * indirect server link, where it is known by the server's session number.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { RecentSet } from "./_recent_set.ts";
import { ProtocolError } from "./errors.ts";
import { Feature, type Link } from "./link.ts";
import { type AckMessage, MessageType, messageTypeName } from "./message.ts";

const logger = getLogger(["rtcp", "dp"]);

/** How many closed session numbers a server link remembers, to ignore late messages for them. */
const RECENTLY_CLOSED = 4096;

/** The client side of a session at the discover point. */
export interface ClientEnd {
  /** Who is connecting, as sent to the indirect server in Connect `N`. */
  readonly label: string;
  /** The indirect server accepted: the session is open. */
  accepted(session: DiscoverPointSession): void;
  /** The session cannot open; `reason` says why. */
  refused(reason: string): void;
  /**
   * Bytes from the indirect server (owned by the callee from now on).
   * @returns A promise to await before forwarding more, when the client is slow.
   */
  data(bytes: Uint8Array): Promise<void> | undefined;
  /** The indirect server finished its direction (half-close). */
  ended(): void;
  /** The session is over; `reason` is empty for a normal close. */
  closed(reason: string): void;
}

/** A Connect sent to an indirect server and not yet answered. */
export interface PendingConnect {
  /** Who asked. */
  readonly client: ClientEnd;
  /** Set once the client gave up or the Ack deadline passed; a late Ack is then closed. */
  abandoned: boolean;
  /** The Ack deadline timer. */
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** One open session at the discover point. */
export class DiscoverPointSession {
  /** The indirect server's session number (`X`), used on both links. */
  readonly id: number;
  /** The server link carrying it. */
  readonly server: ServerLink;
  /** The client end. */
  readonly client: ClientEnd;

  /** Joins `client` to `server` as session `id`. */
  constructor(id: number, server: ServerLink, client: ClientEnd) {
    this.id = id;
    this.server = server;
    this.client = client;
  }

  /** Forwards client bytes to the server; see {@linkcode Link.send}. */
  fromClient(bytes: Uint8Array): Promise<void> | undefined {
    if (!this.server.sessions.has(this.id)) return undefined;
    return this.server.trySend({ type: MessageType.Data, sessionId: this.id, content: bytes });
  }

  /** The client finished its direction: End where the server link agreed on half-close, else Close. */
  clientEnded(): void {
    if (!this.server.sessions.has(this.id)) return;
    if (this.server.link.features.has(Feature.HalfClose)) {
      this.server.trySend({ type: MessageType.End, sessionId: this.id });
    } else {
      // An original-protocol server cannot be told about a half-close; ending the session is
      // the only way it learns that the client is done.
      this.clientClosed("");
      this.client.closed("");
    }
  }

  /** The client closed the session (or its connection was lost): tell the server. */
  clientClosed(reason: string): void {
    if (!this.server.forget(this.id)) return;
    this.server.trySend({ type: MessageType.Close, sessionId: this.id, reason });
  }
}

/** The discover point's side of one indirect server link. */
export class ServerLink {
  /** The registered ISName. */
  readonly name: string;
  /** The link. */
  readonly link: Link;
  /** Open sessions by number. */
  readonly sessions: Map<number, DiscoverPointSession> = new Map();
  /** Connects in the order they were sent, waiting for their Acks. */
  readonly pending: PendingConnect[] = [];
  /** Numbers closed by the client side, whose late Data or Close from the server are ignored. */
  readonly #recentlyClosed = new RecentSet(RECENTLY_CLOSED);
  readonly #isInUse: (sessionId: number) => boolean;

  /**
   * Creates the state of a newly registered server link.
   * @param isInUse Whether a number is open anywhere in this server's pool.
   */
  constructor(name: string, link: Link, isInUse: (sessionId: number) => boolean) {
    this.name = name;
    this.link = link;
    this.#isInUse = isInUse;
  }

  /** Sessions open or being opened: the pool picks the link with the fewest. */
  get load(): number {
    return this.sessions.size + this.pending.length;
  }

  /** Sends, ignoring a broken link: its read loop reports the failure and cleans up. */
  trySend(message: Parameters<Link["send"]>[0]): Promise<void> | undefined {
    try {
      return this.link.send(message);
    } catch {
      return undefined;
    }
  }

  /** Removes session `id`, remembering its number; returns whether it was open. */
  forget(id: number): boolean {
    if (!this.sessions.delete(id)) return false;
    this.#recentlyClosed.add(id);
    return true;
  }

  /**
   * Routes the server's messages until its link ends.
   * @throws {ProtocolError} When the server sends something malformed or out of place.
   */
  async run(): Promise<void> {
    for (let message = await this.link.next(); message !== null; message = await this.link.next()) {
      switch (message.type) {
        case MessageType.Ack:
          this.#acknowledge(message);
          break;
        case MessageType.Data: {
          const session = this.sessions.get(message.sessionId);
          if (session === undefined) {
            if (this.#recentlyClosed.has(message.sessionId)) break;
            throw new ProtocolError(
              `Cannot forward Data for session ${message.sessionId}: it is not open on this link`,
            );
          }
          // Without flow control, a slow client stalls this link: bounded memory, head-of-line blocking.
          const full = session.client.data(message.content);
          if (full) await full;
          break;
        }
        case MessageType.End:
          this.sessions.get(message.sessionId)?.client.ended();
          break;
        case MessageType.Close: {
          const session = this.sessions.get(message.sessionId);
          // A Close for a number the client side already closed crossed ours: nothing to do.
          if (session === undefined) break;
          this.sessions.delete(message.sessionId);
          session.client.closed(message.reason);
          this.trySend({
            type: MessageType.Close,
            sessionId: message.sessionId,
            reason: message.reason,
          });
          break;
        }
        default:
          throw new ProtocolError(
            `Cannot accept ${
              messageTypeName(message.type)
            } from indirect server "${this.name}" after its Aloha`,
          );
      }
    }
  }

  #acknowledge(ack: AckMessage): void {
    const head = this.pending.shift();
    if (head === undefined) {
      throw new ProtocolError(
        `Cannot accept Ack for session ${ack.sessionId}: no Connect is waiting for one`,
      );
    }
    clearTimeout(head.timer);
    if (ack.sessionId === -1) {
      if (!head.abandoned) {
        head.client.refused(ack.reason || `Indirect server "${this.name}" refused the session`);
      }
      return;
    }
    if (this.#isInUse(ack.sessionId)) {
      if (!head.abandoned) head.client.refused(`Indirect server "${this.name}" sent a bad Ack`);
      throw new ProtocolError(
        `Cannot accept Ack for session ${ack.sessionId}: that number is already open on "${this.name}"`,
      );
    }
    this.#recentlyClosed.delete(ack.sessionId);
    if (head.abandoned) {
      this.#recentlyClosed.add(ack.sessionId);
      this.trySend({
        type: MessageType.Close,
        sessionId: ack.sessionId,
        reason: "The client went away",
      });
      return;
    }
    const session = new DiscoverPointSession(ack.sessionId, this, head.client);
    this.sessions.set(ack.sessionId, session);
    logger.debug("Session {id} of {name} opened for {client}", {
      id: ack.sessionId,
      name: this.name,
      client: head.client.label,
    });
    head.client.accepted(session);
  }

  /** The link ended: every session and pending Connect ends with `reason`. */
  end(reason: string): void {
    for (const pending of this.pending.splice(0)) {
      clearTimeout(pending.timer);
      if (!pending.abandoned) pending.client.refused(reason);
    }
    for (const session of this.sessions.values()) session.client.closed(reason);
    this.sessions.clear();
  }
}
