/**
 * An indirect client's link that agreed on `multiplex` (PROTOCOL.md Part 3):
 * many sessions to one name, each known on the link by the number the client
 * gave it in its Connect. The discover point translates between that number
 * and the server's.
 * @module
 */

import { RecentSet } from "../_recent_set.ts";
import { ProtocolError } from "../errors.ts";
import type { Link } from "../link/link.ts";
import {
  clipReason,
  type ConnectMessage,
  isSessionMessage,
  MessageType,
  messageTypeName,
} from "../wire/message.ts";
import { routeFromEnd } from "./pipe.ts";
import type { ClientEnd, DiscoverPointSession, PendingConnect } from "./session.ts";

/** How many numbers the discover point closed a link remembers, to ignore messages that crossed its Close. */
const RECENTLY_CLOSED = 4096;

/** What a multiplexed link asks of its discover point. */
export interface MultiplexedClientOptions {
  /** The name the link's sessions go to: its first Connect's (what a proof covered). */
  readonly name: string;
  /** The client's Aloha name, else its address. */
  readonly label: string;
  /** The key the client proved, if any. */
  readonly key: string | undefined;
  /** Most sessions open or waiting on the link at once. */
  readonly maxSessions: number;
  /** Why the policy refuses this client a session now, if it does. */
  readonly policy: () => string | undefined;
  /** Refuses a session the link cannot have (`session.refused`), counting it as `kind`. */
  readonly refuse: (session: MultiplexedSession, reason: string, kind: "policy" | "limit") => void;
  /**
   * Counts one more connection from the link's source (as the discover
   * point's link limits count links), or says why it cannot: each session
   * beyond the link's first does, so one link holds no more than as many links would.
   */
  readonly enter: () => string | undefined;
  /** Counts one connection less, for a session {@linkcode enter} counted. */
  readonly leave: () => void;
  /** Routes a session's Connect to a server of the name (it answers through the session). */
  readonly route: (session: MultiplexedSession) => void;
}

/** `waiting`: Connect sent on, no Ack yet; `open`: session open; `done`: over. */
type SessionState = "waiting" | "open" | "done";

/** One session of a multiplexed link: its client end at the discover point. */
export class MultiplexedSession implements ClientEnd {
  /** The client's number for the session on its link. */
  readonly number: number;
  /** Set by the router: the Connect waiting for its Ack. */
  pending: PendingConnect | undefined;
  /** The open session, once the server accepted. */
  session: DiscoverPointSession | undefined;
  /** Where the session stands. */
  state: SessionState = "waiting";
  /** Whether it counts as a connection of its own at the discover point's gate. */
  counted = false;
  readonly #client: MultiplexedClient;

  /** Creates session `number` of `client`. */
  constructor(client: MultiplexedClient, number: number) {
    this.#client = client;
    this.number = number;
  }

  /** The client's Aloha name, else its address. */
  get label(): string {
    return this.#client.options.label;
  }

  /** The client's address as the discover point saw it. */
  get address(): string {
    return this.#client.link.peer;
  }

  /** The key the client proved, if any. */
  get key(): string | undefined {
    return this.#client.options.key;
  }

  /** Whether the client agreed on `flow-control`. */
  get flowControl(): boolean {
    return this.#client.link.flowControl;
  }

  /** Largest Data content for the link's codec. */
  get maxDataBytes(): number {
    return this.#client.link.maxDataBytes;
  }

  /** Sends the Ack, with the client's number. */
  accepted(session: DiscoverPointSession): void {
    if (this.state !== "waiting") {
      session.clientClosed("The client went away");
      return;
    }
    this.state = "open";
    this.session = session;
    this.#client.link.trySend({ type: MessageType.Ack, sessionId: this.number, reason: "" });
  }

  /** Sends the refusal: a Close for the number, which the client may then give again. */
  refused(reason: string): void {
    if (this.state !== "waiting") return;
    this.#client.closedHere(this, reason);
  }

  /** Forwards server bytes. */
  send(bytes: Uint8Array): Promise<void> | undefined {
    if (this.state !== "open") return undefined;
    return this.#client.link.trySend({
      type: MessageType.Data,
      sessionId: this.number,
      content: bytes,
      owned: true,
    });
  }

  /** A promise while the link's transport is full (`PipeSink.backpressure`). */
  backpressure(): Promise<void> | undefined {
    return this.#client.link.transport.backpressure();
  }

  /** Returns credit for client bytes that moved on. */
  grant(bytes: number): void {
    if (this.state === "open") {
      this.#client.link.trySend({ type: MessageType.Credit, sessionId: this.number, bytes });
    }
  }

  /** Forwards End where the link agreed on half-close. */
  end(): void {
    if (this.state === "open" && this.#client.link.halfClose) {
      this.#client.link.trySend({ type: MessageType.End, sessionId: this.number });
    }
  }

  /** Forwards the server's Close; the link carries on. */
  close(reason: string): void {
    if (this.state !== "open") return;
    this.#client.closedHere(this, reason);
  }
}

/** The discover point's side of a multiplexed indirect client link. */
export class MultiplexedClient {
  /** The link. */
  readonly link: Link;
  /** What the link is for, and how its sessions are admitted and routed. */
  readonly options: MultiplexedClientOptions;
  /** Sessions open or waiting for their Ack, by the client's number. */
  readonly #sessions = new Map<number, MultiplexedSession>();
  readonly #recentlyClosed = new RecentSet(RECENTLY_CLOSED);

  /** Creates the state of a link whose first Connect carried a number. */
  constructor(link: Link, options: MultiplexedClientOptions) {
    this.link = link;
    this.options = options;
  }

  /** The discover point ends `session` (refused, or closed by its server): Close, number freed. */
  closedHere(session: MultiplexedSession, reason: string): void {
    session.state = "done";
    this.#remove(session);
    this.#recentlyClosed.add(session.number);
    this.link.trySend({ type: MessageType.Close, sessionId: session.number, reason });
  }

  /**
   * Serves the link: `first` (its first Connect), then every message until
   * the link ends; then its sessions end too.
   * @throws {ProtocolError} On a message that is malformed or out of place.
   */
  async run(first: ConnectMessage): Promise<void> {
    let failure = "The indirect client's link closed";
    try {
      this.#connect(first);
      for (
        let message = await this.link.next();
        message !== null;
        message = await this.link.next()
      ) {
        if (message.type === MessageType.Connect) {
          this.#connect(message);
          continue;
        }
        if (!isSessionMessage(message)) {
          throw new ProtocolError(
            `Cannot accept ${
              messageTypeName(message.type)
            } from an indirect client after its Aloha`,
          );
        }
        const session = this.#sessions.get(message.sessionId);
        if (message.type === MessageType.Close) {
          // A Close for a number not in use crossed ours: it needs no answer.
          if (session !== undefined) this.#closedByClient(session, clipReason(message.reason));
          continue;
        }
        if (session === undefined) {
          // Messages that crossed our Close are ignored; Data for a number never opened is not.
          if (message.type !== MessageType.Data || this.#recentlyClosed.has(message.sessionId)) {
            continue;
          }
          throw new ProtocolError(
            `Cannot forward Data for session ${message.sessionId}: it is not open on this link`,
          );
        }
        if (session.state !== "open") {
          throw new ProtocolError(
            `Cannot accept ${
              messageTypeName(message.type)
            } for session ${message.sessionId} before it is acknowledged`,
          );
        }
        const full = routeFromEnd(message, session.session!.toServer, session.session!.toClient);
        if (full) await full;
      }
    } catch (error) {
      failure = `The indirect client's link failed: ${(error as Error).message}`;
      throw error;
    } finally {
      for (const session of this.#sessions.values()) {
        this.#remove(session);
        this.#gone(session, failure);
      }
    }
  }

  /** A Connect: a new session, refused with a Close if it cannot be had. */
  #connect(connect: ConnectMessage): void {
    const number = connect.sessionId;
    if (number === undefined) {
      throw new ProtocolError(
        "Cannot accept Connect without X: this link's sessions are numbered (extension multiplex)",
      );
    }
    if (this.#sessions.has(number)) {
      throw new ProtocolError(
        `Cannot accept Connect for session ${number}: it is in use on this link`,
      );
    }
    const session = new MultiplexedSession(this, number);
    this.#sessions.set(number, session);
    this.#recentlyClosed.delete(number);
    const { name, maxSessions, refuse } = this.options;
    if (connect.name !== name) {
      const reason =
        `Cannot connect to "${connect.name}" on this link: it carries sessions to "${name}" only; open another link`;
      return refuse(session, reason, "policy");
    }
    if (this.#sessions.size > maxSessions) {
      const reason =
        `Too many sessions on this link (limit maxSessionsPerClientLink = ${maxSessions}); open another link`;
      return refuse(session, reason, "limit");
    }
    if (this.#sessions.size > 1) {
      const refusal = this.options.enter();
      if (refusal !== undefined) {
        return refuse(session, `${refusal}: each session on a shared link counts as one`, "limit");
      }
      session.counted = true;
    }
    const refusal = this.options.policy();
    if (refusal !== undefined) return refuse(session, refusal, "policy");
    this.options.route(session);
  }

  /** Forgets `session`'s number on the link, and its count at the gate. */
  #remove(session: MultiplexedSession): void {
    this.#sessions.delete(session.number);
    if (session.counted) {
      session.counted = false;
      this.options.leave();
    }
  }

  /** The client closed `session` (or withdrew its Connect): answered with a Close. */
  #closedByClient(session: MultiplexedSession, reason: string): void {
    this.#remove(session);
    this.#gone(session, reason);
    this.link.trySend({ type: MessageType.Close, sessionId: session.number, reason });
  }

  /** `session` is over on the client's side: its Connect is abandoned, or its session closed. */
  #gone(session: MultiplexedSession, reason: string): void {
    const state = session.state;
    session.state = "done";
    if (state === "waiting" && session.pending) session.pending.abandoned = true;
    if (state === "open") session.session!.clientClosed(reason);
  }
}
