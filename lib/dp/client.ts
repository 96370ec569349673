/**
 * The two kinds of client end at a discover point: an indirect client's link
 * (RTCP messages), and a plain TCP connection on a public port (raw bytes).
 * @module
 */

import { FrameReader } from "../transport/_frame_reader.ts";
import { recycle } from "../wire/_frame_pool.ts";
import { MAX_BINARY_DATA_BYTES } from "../wire/binary_codec.ts";
import { ProtocolError } from "../errors.ts";
import type { Link } from "../link/link.ts";
import { clipReason, isSessionMessage, MessageType, messageTypeName } from "../wire/message.ts";
import type { ClientEnd, DiscoverPointSession, PendingConnect } from "./session.ts";
import { routeFromEnd } from "./pipe.ts";
import type { TcpTransport } from "../transport/tcp.ts";

/** Most bytes a public-port client's socket is read ahead of its session's Ack. */
const EARLY_BYTES = 64 * 1024;

/** `waiting`: Connect sent on, no Ack yet; `open`: session open; `done`: over. */
type ClientState = "waiting" | "open" | "done";

/** An indirect client's link: one session, then the link ends (Part 2 item 9). */
export class LinkClient implements ClientEnd {
  /** The client's Aloha name, else its address. */
  readonly label: string;
  /** The link's address as the discover point saw it. */
  readonly address: string;
  /** The key the client proved, if any. */
  readonly key: string | undefined;
  readonly #link: Link;
  #state: ClientState = "waiting";
  #session: DiscoverPointSession | undefined;
  /** Set by the router: the Connect waiting for its Ack. */
  pending: PendingConnect | undefined;

  /**
   * Creates the client end for `link`, with the key it proved.
   * @param address The client's address, when another discover point relayed it; else the link's.
   */
  constructor(link: Link, label: string, key?: string, address?: string) {
    this.#link = link;
    this.label = label;
    this.address = address ?? link.peer;
    this.key = key;
  }

  /** Whether the client agreed on `flow-control`. */
  get flowControl(): boolean {
    return this.#link.flowControl;
  }

  /** Largest Data content for this link's codec. */
  get maxDataBytes(): number {
    return this.#link.maxDataBytes;
  }

  /** Sends the Ack and opens the session. */
  accepted(session: DiscoverPointSession): void {
    if (this.#state !== "waiting") {
      session.clientClosed("The client went away");
      return;
    }
    this.#state = "open";
    this.#session = session;
    this.#link.trySend({ type: MessageType.Ack, sessionId: session.id, reason: "" });
  }

  /** Sends the refusal and ends the link. */
  refused(reason: string): void {
    if (this.#state !== "waiting") return;
    this.#state = "done";
    this.#link.trySend({ type: MessageType.Ack, sessionId: -1, reason });
    // The client may still be sending: finish, so the refusal is not lost to a reset.
    void this.#link.finish();
  }

  /** Forwards server bytes. */
  send(bytes: Uint8Array): Promise<void> | undefined {
    if (this.#state !== "open") return undefined;
    return this.#link.trySend({
      type: MessageType.Data,
      sessionId: this.#session!.id,
      content: bytes,
      owned: true,
    });
  }

  /** A promise while the transport is full (`PipeSink.backpressure`). */
  backpressure(): Promise<void> | undefined {
    return this.#link.transport.backpressure();
  }

  /** Returns credit for client bytes that moved on. */
  grant(bytes: number): void {
    if (this.#state === "open") {
      this.#link.trySend({ type: MessageType.Credit, sessionId: this.#session!.id, bytes });
    }
  }

  /** Forwards End where this link agreed on half-close; an original client cannot be told. */
  end(): void {
    if (this.#state !== "open" || !this.#link.halfClose) return;
    this.#link.trySend({ type: MessageType.End, sessionId: this.#session!.id });
  }

  /** Forwards the server's Close and ends the link. */
  close(reason: string): void {
    if (this.#state !== "open") return;
    this.#state = "done";
    this.#link.trySend({ type: MessageType.Close, sessionId: this.#session!.id, reason });
    // The client may still be sending (Credit, Data crossing our Close): finish, so the bytes
    // it has received and not read yet are not lost to a reset. run() reads on to its end.
    void this.#link.finish();
  }

  /**
   * Reads the client's messages until the session and link end.
   * @throws {ProtocolError} On a message that is malformed or out of place.
   */
  async run(): Promise<void> {
    let failure = "The indirect client's link closed without a Close";
    try {
      for (
        let message = await this.#link.next();
        message !== null;
        message = await this.#link.next()
      ) {
        if (this.#state === "done") continue;
        if (message.type === MessageType.Close && this.#state === "waiting") {
          this.#abandon();
          return;
        }
        if (!isSessionMessage(message)) {
          throw new ProtocolError(
            `Cannot accept ${
              messageTypeName(message.type)
            } from an indirect client after its Connect`,
          );
        }
        const session = this.#expectSession(message.type, message.sessionId);
        if (message.type !== MessageType.Close) {
          const full = routeFromEnd(message, session.toServer, session.toClient);
          if (full) await full;
          continue;
        }
        this.#state = "done";
        const reason = clipReason(message.reason);
        session.clientClosed(reason);
        this.#link.trySend({ type: MessageType.Close, sessionId: message.sessionId, reason });
        await this.#link.close();
        return;
      }
    } catch (error) {
      failure = `The indirect client's link failed: ${(error as Error).message}`;
      throw error;
    } finally {
      this.#finish(failure);
    }
  }

  #expectSession(type: number, sessionId: number): DiscoverPointSession {
    if (this.#state !== "open") {
      throw new ProtocolError(
        `Cannot accept ${messageTypeName(type)} before the session is acknowledged`,
      );
    }
    const session = this.#session!;
    if (sessionId !== session.id) {
      throw new ProtocolError(
        `Cannot accept ${
          messageTypeName(type)
        } for session ${sessionId}: this link carries session ${session.id}`,
      );
    }
    return session;
  }

  #abandon(): void {
    this.#state = "done";
    if (this.pending) this.pending.abandoned = true;
  }

  #finish(reason: string): void {
    if (this.#state === "waiting") this.#abandon();
    if (this.#state === "open") {
      this.#state = "done";
      this.#session!.clientClosed(reason);
    }
  }
}

/** A plain TCP connection on a public port: its bytes are the session's data. */
export class SocketClient implements ClientEnd {
  /** The connection's remote address. */
  readonly label: string;
  /** The same: the address the discover point saw. */
  readonly address: string;
  /** A socket speaks no flow control: the pipe stops reading it instead. */
  readonly flowControl = false;
  /** Bytes go straight to the socket: no message size applies. */
  readonly maxDataBytes = Infinity;
  readonly #transport: TcpTransport;
  readonly #grace: number;
  #state: ClientState = "waiting";
  /** Called once when the client is done: refused, or its connection ended. */
  readonly #onDone: () => void;
  #session: DiscoverPointSession | undefined;
  readonly #reader = new FrameReader(undefined, MAX_BINARY_DATA_BYTES);
  /** A read of the socket is under way. */
  #reading = false;
  /** What the client sent before the Ack, and how it ended if it did (`""`: a clean end). */
  #early: Uint8Array[] | undefined;
  #earlyBytes = 0;
  #earlyEnd: string | undefined;
  /** Set by the router: the Connect waiting for its Ack. */
  pending: PendingConnect | undefined;

  /**
   * Creates the client end for `transport`.
   * @param grace Milliseconds the client has to close its side once the session is over.
   * @param onDone Called once when the client is done: refused, or its connection ended (a
   * callback rather than a promise: an idle session holds less).
   */
  constructor(transport: TcpTransport, label: string, grace: number, onDone: () => void) {
    this.#transport = transport;
    this.#grace = grace;
    this.#onDone = onDone;
    this.label = label;
    this.address = label;
  }

  /** Starts pumping the connection's bytes into the session. */
  accepted(session: DiscoverPointSession): void {
    if (this.#state !== "waiting") {
      session.clientClosed("The client went away");
      return;
    }
    this.#state = "open";
    this.#session = session;
    // What came while the Connect was out goes on in this same turn, right behind the Ack.
    for (const piece of this.#early ?? []) void session.toServer.push(piece);
    this.#early = undefined;
    this.#earlyBytes = 0;
    if (this.#earlyEnd !== undefined) this.#inputEnded(this.#earlyEnd);
    else if (!this.#reading) this.#readNext();
  }

  /**
   * Starts reading while the Connect is out, so that what the client sends
   * first (a request, a protocol greeting) is there to go on with the Ack.
   * At most {@linkcode EARLY_BYTES} are read ahead.
   */
  readAhead(): void {
    if (this.#state === "waiting" && !this.#reading) this.#readNext();
  }

  /** Closes the connection: the session could not open. */
  refused(_reason: string): void {
    if (this.#state !== "waiting") return;
    this.#state = "done";
    this.#transport.abort();
    for (const piece of this.#early ?? []) recycle(piece);
    this.#early = undefined;
    // A read under way ends now (the socket is closed) and finishes the client; else finish here.
    if (!this.#reading) this.#finish();
  }

  /** Writes server bytes to the connection. */
  send(bytes: Uint8Array): Promise<void> | undefined {
    if (this.#state !== "open") return undefined;
    try {
      return this.#transport.write(bytes);
    } catch {
      // The client is gone (it may have shut down its side long ago): end the session for good.
      this.#state = "done";
      this.#transport.abort();
      this.#session?.clientClosed("The client connection failed");
      return undefined;
    }
  }

  /** A promise while the transport is full (`PipeSink.backpressure`). */
  backpressure(): Promise<void> | undefined {
    return this.#transport.backpressure();
  }

  /** Never called: a socket gets no credit. */
  grant(_bytes: number): void {}

  /** The server finished sending: shut down our write side after the queued bytes. */
  end(): void {
    if (this.#state === "open") void this.#transport.closeWrite();
  }

  /** The session is over: end after the queued bytes; run() reads on until the client closes. */
  close(_reason: string): void {
    if (this.#state === "done") return;
    this.#state = "done";
    void this.#transport.finish(this.#grace);
  }

  /**
   * Reads the next piece. Not a loop in an async function: an idle session
   * waits in the socket's read alone. Bytes go into buffers the server
   * link's codec can frame in place, in pieces it takes whole.
   */
  #readNext(): void {
    this.#reading = true;
    this.#transport.readRaw(this.#reader.view()).then(this.#onRead, this.#onReadFailed);
  }

  readonly #onRead = (read: number | null): void => {
    this.#reading = false;
    let count: number | null;
    try {
      count = this.#transport.afterRead(read);
    } catch (error) {
      return this.#readFailed(error);
    }
    const piece = this.#reader.piece(count);
    if (piece === null) return this.#inputEnded("");
    if (this.#state === "waiting") {
      (this.#early ??= []).push(piece);
      this.#earlyBytes += piece.length;
      // Enough read ahead: the rest waits in the socket until the Ack.
      if (this.#earlyBytes < EARLY_BYTES) this.#readNext();
      return;
    }
    if (this.#session === undefined) {
      // Refused while this read was under way: the socket is closed.
      recycle(piece);
      return this.#inputEnded("");
    }
    const full = this.#session.toServer.push(piece);
    if (full) full.then(() => this.#readNext());
    else this.#readNext();
  };

  readonly #onReadFailed = (error: unknown): void => {
    this.#reading = false;
    this.#readFailed(error);
  };

  #readFailed(error: unknown): void {
    try {
      this.#transport.afterReadFailed(error);
    } catch (failure) {
      return this.#inputEnded(`The client connection failed: ${(failure as Error).message}`);
    }
    this.#inputEnded("");
  }

  /** The connection's input ended (`reason` empty) or failed. */
  #inputEnded(reason: string): void {
    if (this.#state === "waiting") {
      // Ended before the Ack: the session learns it once open (as if read then).
      this.#earlyEnd = reason;
      return;
    }
    if (this.#state === "open") {
      if (reason) this.#session!.clientClosed(reason);
      else this.#session!.toServer.end();
    }
    this.#finish();
  }

  #finish(): void {
    this.#reader.release();
    this.#onDone();
  }

  /** Gives up before the Ack (the discover point is shutting down). */
  abandon(): void {
    if (this.#state !== "waiting") return;
    if (this.pending) this.pending.abandoned = true;
    this.refused("");
  }
}
