/**
 * The discover point's view of sessions: one session joins a client end (an
 * indirect client's link, or a plain TCP connection on a public port) to one
 * indirect server link, where it is known by the server's session number.
 * Each direction runs through a {@linkcode Pipe}, which bounds what the
 * discover point buffers and carries credit from end to end.
 * @module
 */

import { getLogger } from "../_log.ts";
import type { QueuedDeadline } from "../_deadline_queue.ts";
import { RecentSet } from "../_recent_set.ts";
import { BufferBudget, Pipe, type PipeSink, type PipeSource, routeFromEnd } from "./pipe.ts";
import type { Counters, NameTraffic, RefusalReason } from "./counters.ts";
import { ProtocolError } from "../errors.ts";
import type { Link } from "../link/link.ts";
import {
  type AckMessage,
  clipReason,
  isSessionMessage,
  MessageType,
  messageTypeName,
} from "../wire/message.ts";

const logger = getLogger(["rtcp", "dp"]);

/** How many closed session numbers a server link remembers, to ignore late messages for them. */
const RECENTLY_CLOSED = 4096;

/** The client side of a session at the discover point. */
export interface ClientEnd extends PipeSink, PipeSource {
  /** Who is connecting, as sent to the indirect server in Connect `N`. */
  readonly label: string;
  /** The client's address as the discover point saw it (Connect `P`). */
  readonly address: string;
  /** The key the client proved (Connect `K`), if any. */
  readonly key?: string | undefined;
  /**
   * Set by the router: the Connect waiting for its Ack, so that a client that
   * goes first can mark it abandoned. Cleared once the Ack is taken.
   */
  pending: PendingConnect | undefined;
  /** The indirect server accepted: the session is open. */
  accepted(session: DiscoverPointSession): void;
  /** The session cannot open; `reason` says why. */
  refused(reason: string): void;
}

/** A Connect sent to an indirect server and not yet answered. */
export interface PendingConnect {
  /** Who asked. */
  readonly client: ClientEnd;
  /** Set once the client gave up or the Ack deadline passed; a late Ack is then closed. */
  abandoned: boolean;
  /** The server link the Connect went to, once sent. */
  server: ServerLink | undefined;
  /** Set once the Ack deadline passed: a second one is then running, for the server's link. */
  overdue: boolean;
  /** The Ack deadline, while one runs (cancelled when the Ack comes). */
  deadline: QueuedDeadline<PendingConnect> | undefined;
}

/** The server side of one session, as a pipe end. */
class ServerEnd implements PipeSink, PipeSource {
  readonly #server: ServerLink;
  readonly #id: number;
  readonly #session: DiscoverPointSession;

  constructor(server: ServerLink, id: number, session: DiscoverPointSession) {
    this.#server = server;
    this.#id = id;
    this.#session = session;
  }

  get flowControl(): boolean {
    return this.#server.link.flowControl;
  }

  get maxDataBytes(): number {
    return this.#server.link.maxDataBytes;
  }

  send(bytes: Uint8Array): Promise<void> | undefined {
    return this.#server.link.trySend({
      type: MessageType.Data,
      sessionId: this.#id,
      content: bytes,
      owned: true,
    });
  }

  backpressure(): Promise<void> | undefined {
    return this.#server.link.transport.backpressure();
  }

  grant(bytes: number): void {
    this.#server.link.trySend({ type: MessageType.Credit, sessionId: this.#id, bytes });
  }

  end(): void {
    if (this.#server.link.halfClose) {
      this.#server.link.trySend({ type: MessageType.End, sessionId: this.#id });
      return;
    }
    // An original-protocol server cannot be told about a half-close; ending the session is
    // the only way it learns that the client is done. What it sent already still reaches the client.
    this.close("");
    this.#session.toClient.close("");
  }

  close(reason: string): void {
    if (this.#server.forget(this.#id)) {
      this.#server.link.trySend({ type: MessageType.Close, sessionId: this.#id, reason });
    }
  }
}

/** One open session at the discover point. */
export class DiscoverPointSession {
  /** The indirect server's session number (`X`), used on both links. */
  readonly id: number;
  /** The client end. */
  readonly client: ClientEnd;
  /** Client bytes on their way to the server. */
  readonly toServer: Pipe;
  /** Server bytes on their way to the client. */
  readonly toClient: Pipe;
  /** When the session opened (`Date.now()`). */
  readonly since: number = Date.now();
  /** When the idle sweep last saw bytes move (`Date.now()`). */
  idleSince: number = this.since;
  readonly #serverEnd: ServerEnd;

  /** Joins `client` to `server` as session `id`; its bytes count into the server's name. */
  constructor(id: number, server: ServerLink, client: ClientEnd, settings: SessionSettings) {
    this.id = id;
    this.client = client;
    const serverEnd = new ServerEnd(server, id, this);
    this.#serverEnd = serverEnd;
    const { maxWindow, budget } = settings;
    this.toServer = new Pipe(client, serverEnd, maxWindow, budget, server.traffic?.toServer);
    this.toClient = new Pipe(serverEnd, client, maxWindow, budget, server.traffic?.toClient);
  }

  /** Ends the session at once on both sides with `reason`, dropping queued bytes (shutdown). */
  abort(reason: string): void {
    this.toServer.discard();
    this.toClient.discard();
    this.#serverEnd.close(reason);
    this.client.close(reason);
  }

  /** The client closed the session, or its connection was lost: queued bytes go on, then Close. */
  clientClosed(reason: string): void {
    this.toServer.close(reason);
    this.toClient.discard();
  }

  /** The server closed the session, or its link was lost: queued bytes go on, then Close. */
  serverClosed(reason: string): void {
    this.toClient.close(reason);
    this.toServer.discard();
  }
}

/**
 * The discover point's load: sessions open or being opened, and Connects left
 * unanswered, on every server link together (what limit `maxSessions` counts).
 * Kept as links change, so that admitting a session never walks every link.
 */
export class LoadCount {
  /** The count. */
  value = 0;
}

/** What every session of a discover point shares. */
export interface SessionSettings {
  /** Largest flow-control window granted per session direction. */
  readonly maxWindow?: number | undefined;
  /** The discover point's count of bytes waiting in pipes. */
  readonly budget: BufferBudget;
  /** The discover point's load, which every server link adds to. */
  readonly load?: LoadCount | undefined;
  /** The discover point's counters (refusals), if it keeps them. */
  readonly counters?: Counters | undefined;
}

/** The discover point's side of one indirect server link. */
export class ServerLink {
  /** The registered ISName. */
  readonly name: string;
  /** The link. */
  readonly link: Link;
  /** Open sessions by number. */
  readonly sessions: Map<number, DiscoverPointSession> = new Map();
  /** Connects in the order they were sent, waiting for their Acks ({@linkcode expect} adds). */
  readonly pending: PendingConnect[] = [];
  /** The key the server proved for its name, if any. */
  readonly key: string | undefined;
  /** The name's counters, which this link's sessions add to, if the discover point keeps them. */
  readonly traffic: NameTraffic | undefined;
  /**
   * Called once when the link has no session and no Connect left: a link
   * that carries one session (to another discover point) ends then.
   */
  onIdle: (() => void) | undefined;
  /** Answers a server's request for a public port (extension `public-port`). */
  onPort: ((port: number) => void) | undefined;
  readonly #recentlyClosed = new RecentSet(RECENTLY_CLOSED);
  readonly #settings: SessionSettings;
  #failure: Error | undefined;

  /** Creates the state of a newly registered server link. */
  constructor(
    name: string,
    link: Link,
    settings: SessionSettings = { budget: new BufferBudget() },
    key?: string,
    traffic?: NameTraffic,
  ) {
    this.name = name;
    this.link = link;
    this.#settings = settings;
    this.key = key;
    this.traffic = traffic;
  }

  /**
   * Sessions open or being opened, and Connects left unanswered: the pool
   * picks the link with the fewest, so a link that does not answer gets no more.
   */
  get load(): number {
    return this.sessions.size + this.pending.length;
  }

  /** Connects still waiting for an Ack that a client waits for (timed-out ones do not count). */
  get waiting(): number {
    let count = 0;
    for (const pending of this.pending) if (!pending.abandoned) count++;
    return count;
  }

  /** Ends the link for failing its duty; {@linkcode run} throws `error`. */
  fail(error: Error): void {
    this.#failure ??= error;
    this.link.abort();
  }

  /** A Connect was sent (or is about to be) on this link: its Ack is the next one not yet taken. */
  expect(pending: PendingConnect): void {
    this.pending.push(pending);
    this.#addLoad(1);
  }

  #addLoad(delta: number): void {
    const load = this.#settings.load;
    if (load !== undefined) load.value += delta;
  }

  /** Removes session `id`, remembering its number; returns whether it was open. */
  forget(id: number): boolean {
    if (!this.sessions.delete(id)) return false;
    this.#addLoad(-1);
    this.#recentlyClosed.add(id);
    this.#checkIdle();
    return true;
  }

  #checkIdle(): void {
    if (this.onIdle === undefined || this.sessions.size > 0 || this.pending.length > 0) return;
    const onIdle = this.onIdle;
    this.onIdle = undefined;
    onIdle();
  }

  /**
   * Routes the server's messages until its link ends.
   * @throws {ProtocolError} When the server sends something malformed or out of place.
   */
  async run(): Promise<void> {
    try {
      await this.#route();
    } catch (error) {
      throw this.#failure ?? error;
    }
    if (this.#failure) throw this.#failure;
  }

  async #route(): Promise<void> {
    for (let message = await this.link.next(); message !== null; message = await this.link.next()) {
      if (message.type === MessageType.Ack) {
        this.acknowledge(message);
        this.#checkIdle();
        continue;
      }
      if (message.type === MessageType.Port && this.onPort !== undefined) {
        this.onPort(message.port);
        continue;
      }
      if (!isSessionMessage(message)) {
        throw new ProtocolError(
          `Cannot accept ${
            messageTypeName(message.type)
          } from indirect server "${this.name}" after its Aloha`,
        );
      }
      const session = this.sessions.get(message.sessionId);
      if (session === undefined) {
        // Late messages for a number the client side closed crossed our Close: ignore them.
        if (message.type !== MessageType.Data || this.#recentlyClosed.has(message.sessionId)) {
          continue;
        }
        throw new ProtocolError(
          `Cannot forward Data for session ${message.sessionId}: it is not open on this link`,
        );
      }
      if (message.type !== MessageType.Close) {
        // Only a server without flow control is ever asked to wait: head-of-line blocking.
        const full = routeFromEnd(message, session.toClient, session.toServer);
        if (full) await full;
        continue;
      }
      this.sessions.delete(message.sessionId);
      this.#addLoad(-1);
      const reason = clipReason(message.reason);
      // With close-once the server freed the number as it sent Close; else it waits for ours.
      if (!this.link.closeOnce) {
        this.link.trySend({ type: MessageType.Close, sessionId: message.sessionId, reason });
      }
      session.serverClosed(reason);
      this.#checkIdle();
    }
  }

  /**
   * Takes the Ack of the oldest pending Connect: opens its session, or passes
   * its refusal on.
   * @throws {ProtocolError} If no Connect waits, or the number is already open.
   */
  acknowledge(ack: AckMessage): void {
    const head = this.pending.shift();
    if (head === undefined) {
      throw new ProtocolError(
        `Cannot accept Ack for session ${ack.sessionId}: no Connect is waiting for one`,
      );
    }
    this.#addLoad(-1);
    head.deadline?.cancel();
    head.deadline = undefined;
    head.client.pending = undefined;
    if (ack.sessionId === -1) {
      if (!head.abandoned) {
        this.#settings.counters?.refused("server_refused");
        head.client.refused(
          clipReason(ack.reason) || `Indirect server "${this.name}" refused the session`,
        );
      }
      return;
    }
    // Numbers are this link's own: each client link carries one session, and the discover point
    // keeps a table per server link, so replicas of one name never collide.
    if (this.sessions.has(ack.sessionId)) {
      if (!head.abandoned) {
        this.#settings.counters?.refused("link_lost");
        head.client.refused(`Indirect server "${this.name}" sent a bad Ack`);
      }
      throw new ProtocolError(
        `Cannot accept Ack for session ${ack.sessionId}: that number is already open on this link`,
      );
    }
    this.#recentlyClosed.delete(ack.sessionId);
    if (head.abandoned) {
      this.#recentlyClosed.add(ack.sessionId);
      this.link.trySend({
        type: MessageType.Close,
        sessionId: ack.sessionId,
        reason: "The client went away",
      });
      return;
    }
    const session = new DiscoverPointSession(ack.sessionId, this, head.client, this.#settings);
    this.sessions.set(ack.sessionId, session);
    this.#addLoad(1);
    if (this.traffic) this.traffic.sessions++;
    if (logger.isEnabledFor("debug")) {
      logger.debug("Session {id} of {name} opened for {client}", {
        id: ack.sessionId,
        name: this.name,
        client: head.client.label,
      });
    }
    head.client.accepted(session);
  }

  /**
   * The link ended: every session and pending Connect ends with `reason`.
   * @param kind What the refusals of pending Connects count as.
   */
  end(reason: string, kind: RefusalReason = "link_lost"): void {
    this.#addLoad(-(this.pending.length + this.sessions.size));
    for (const pending of this.pending.splice(0)) {
      pending.deadline?.cancel();
      if (pending.abandoned) continue;
      this.#settings.counters?.refused(kind);
      pending.client.refused(reason);
    }
    for (const session of this.sessions.values()) session.serverClosed(reason);
    this.sessions.clear();
  }
}
