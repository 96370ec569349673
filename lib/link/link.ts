/**
 * A link: one transport carrying RTCP messages, with the codec in use and the
 * extensions both ends announced.
 * @module
 */

import { abortable } from "../_abortable.ts";
import { TimedOut } from "../_platform.ts";
import { type Clock, SYSTEM_CLOCK, type TimerHandle } from "../_clock.ts";
import { BinaryCodec, MAX_BINARY_DATA_BYTES } from "../wire/binary_codec.ts";
import {
  type Codec,
  MAX_DATA_BYTES,
  MAX_LINE_BYTES,
  MessageDecoder,
  TextCodec,
} from "../wire/codec.ts";
import { ProtocolError } from "../errors.ts";
import { type Message, MessageType, messageTypeName } from "../wire/message.ts";
import { formatAddress, type Transport } from "../transport/tcp.ts";

/** Extension names this implementation knows, as announced in Aloha `F`. */
export const Feature = {
  /** End message: one direction of a session finishes while the other flows. */
  HalfClose: "half-close",
  /** Ping and Pong messages: an idle link is probed, a silent one dropped. */
  Keepalive: "keepalive",
  /** Credit messages: per-session windows, so one slow reader never stalls the link. */
  FlowControl: "flow-control",
  /** Data and Credit as length-prefixed binary frames. */
  Binary: "binary",
  /** Auth and Accepted messages: a peer proves a key against the discover point's nonce. */
  Auth: "auth",
  /** More messages: the discover point asks an indirect server for one more link. */
  Pool: "pool",
  /** A discover point carries a client's session to another: the session goes no further. */
  Relay: "relay",
  /** Port messages: a server asks the discover point for a public port for its name. */
  PublicPort: "public-port",
  /** The discover point does not answer an indirect server's Close: one message less per session. */
  CloseOnce: "close-once",
  /** An indirect client's link carries many sessions, each numbered by the client in its Connect. */
  Multiplex: "multiplex",
} as const;

/** The name of an extension, as announced in Aloha `F`: a value of {@linkcode Feature}. */
export type FeatureName = (typeof Feature)[keyof typeof Feature];

/**
 * An extension that an indirect server or client may offer (`features` of
 * `listen()` and `connect()`): every {@linkcode FeatureName} but `relay`,
 * which only discover points speak, to one another.
 */
export type EndFeature = Exclude<FeatureName, typeof Feature.Relay>;

/** Every extension this implementation speaks, in the order it offers them. */
export const ALL_FEATURES: readonly EndFeature[] = [
  Feature.HalfClose,
  Feature.Keepalive,
  Feature.FlowControl,
  Feature.Binary,
  Feature.Auth,
  Feature.Pool,
  Feature.PublicPort,
  Feature.CloseOnce,
  Feature.Multiplex,
];

/**
 * What `listen()` and `connect()` offer unless told otherwise: every
 * extension but `multiplex`, which only an `IndirectDialer`'s link uses.
 */
export const DEFAULT_FEATURES: readonly EndFeature[] = ALL_FEATURES.filter((feature) =>
  feature !== Feature.Multiplex
);

/** What a discover point offers: every extension, and `relay` for links from other discover points. */
export const DP_FEATURES: readonly string[] = [...ALL_FEATURES, Feature.Relay];

/**
 * Longest line before the handshake is done. An Aloha or a Connect is at most a
 * few KiB (names are capped), so a peer that has not yet said who it is cannot
 * make the link buffer up to the full line limit.
 */
const HANDSHAKE_LINE_BYTES = 32 * 1024;

/** Which extension a message type needs, for the types outside Parts 1 and 2. */
const TYPE_FEATURE: Partial<Record<number, string>> = {
  [MessageType.End]: Feature.HalfClose,
  [MessageType.Credit]: Feature.FlowControl,
  [MessageType.Ping]: Feature.Keepalive,
  [MessageType.Pong]: Feature.Keepalive,
  [MessageType.Auth]: Feature.Auth,
  [MessageType.Accepted]: Feature.Auth,
  [MessageType.More]: Feature.Pool,
  [MessageType.Port]: Feature.PublicPort,
};

/** Options of {@linkcode Link}. */
export interface LinkOptions {
  /** Longest line accepted from the peer, in bytes. @default {1048576} */
  maxLineBytes?: number;
  /** Keepalive timing, used when both ends agree on `keepalive`. */
  keepalive?: KeepaliveOptions;
  /**
   * Milliseconds {@linkcode Link.close} waits for queued bytes to be written
   * before it drops them: a peer that never reads cannot keep a closing link.
   * @default {5000}
   */
  closeTimeout?: number;
}

/** Timing of the `keepalive` extension. */
export interface KeepaliveOptions {
  /** Milliseconds without input after which a Ping is sent. @default {15000} */
  interval?: number;
  /** Milliseconds to wait for any input after the Ping before the link is dropped. @default {10000} */
  timeout?: number;
  /** Where the time comes from: a test drives its own clock. @default {the system clock} */
  clock?: Clock;
}

/** A transport speaking RTCP messages. */
export class Link {
  /** The transport underneath. */
  readonly transport: Transport;
  readonly #decoder: MessageDecoder;
  readonly #maxLineBytes: number;
  #encoder: Codec;
  #features: ReadonlySet<string> = new Set();
  readonly #keepalive: Required<Omit<KeepaliveOptions, "clock">>;
  readonly #clock: Clock;
  #keepaliveTimer: TimerHandle | undefined;
  #lastInput = 0;
  #pinged = false;
  #deadError: Error | undefined;
  #unref = false;
  #reading = false;
  /** A Pong was queued; until the queue has drained, more Pings get no second one. */
  #pongQueued = false;
  readonly #closeTimeout: number;

  /** Wraps `transport`; the link now owns it. */
  constructor(transport: Transport, options: LinkOptions = {}) {
    this.transport = transport;
    this.#keepalive = {
      interval: options.keepalive?.interval ?? 15_000,
      timeout: options.keepalive?.timeout ?? 10_000,
    };
    this.#clock = options.keepalive?.clock ?? SYSTEM_CLOCK;
    this.#maxLineBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
    this.#closeTimeout = options.closeTimeout ?? 5_000;
    // Until the handshake is done only small messages are legal: a stranger gets a small buffer.
    const handshakeLimit = Math.min(this.#maxLineBytes, HANDSHAKE_LINE_BYTES);
    this.#encoder = new TextCodec({ maxLineBytes: handshakeLimit });
    this.#decoder = new MessageDecoder({ codec: this.#encoder });
  }

  /** The far end as `"host:port"`, for logs and errors. */
  get peer(): string {
    return formatAddress(this.transport.remoteAddr);
  }

  /** Extensions both ends announced. */
  get features(): ReadonlySet<string> {
    return this.#features;
  }

  /** Largest Data content to send in one message on this link. */
  get maxDataBytes(): number {
    return this.#features.has(Feature.Binary) ? MAX_BINARY_DATA_BYTES : MAX_DATA_BYTES;
  }

  /** Whether both ends agreed on `flow-control`. */
  get flowControl(): boolean {
    return this.#features.has(Feature.FlowControl);
  }

  /** Whether both ends agreed on `half-close`. */
  get halfClose(): boolean {
    return this.#features.has(Feature.HalfClose);
  }

  /** Whether both ends agreed on `close-once`: a server's Close gets no answer. */
  get closeOnce(): boolean {
    return this.#features.has(Feature.CloseOnce);
  }

  /** Records the extensions both ends announced (the handshake is done), switching to their codec. */
  useFeatures(features: Iterable<string>): void {
    this.#features = new Set(features);
    // With credit, the peer can have a window per session in flight, and it is read at once.
    if (this.#features.has(Feature.FlowControl)) this.transport.limitUnread?.(Infinity);
    const options = { maxLineBytes: this.#maxLineBytes };
    this.useCodec(
      this.#features.has(Feature.Binary) ? new BinaryCodec(options) : new TextCodec(options),
    );
    if (this.#features.has(Feature.Keepalive)) {
      this.#lastInput = this.#clock.now();
      this.#schedule(this.#keepalive.interval);
    }
  }

  #schedule(ms: number): void {
    this.#clock.clearTimeout(this.#keepaliveTimer);
    this.#keepaliveTimer = this.#clock.setTimeout(() => this.#probe(), ms);
    if (this.#unref) this.#clock.unrefTimer?.(this.#keepaliveTimer);
  }

  /** Sends a Ping after `interval` of silence; drops the link after `timeout` more. */
  #probe(): void {
    // A reader held back by a slow session is not a silent peer: restart the clock.
    if (!this.#reading) this.#lastInput = this.#clock.now();
    const silent = this.#clock.now() - this.#lastInput;
    if (silent < this.#keepalive.interval && !this.#pinged) {
      this.#schedule(this.#keepalive.interval - silent);
      return;
    }
    if (this.#pinged) {
      this.#deadError = new TimedOut(
        `The link is dead: no answer to a keepalive Ping within ${this.#keepalive.timeout} ms`,
      );
      this.abort();
      return;
    }
    try {
      this.send({ type: MessageType.Ping });
    } catch {
      return; // Broken already: the reader sees it.
    }
    this.#pinged = true;
    this.#schedule(this.#keepalive.timeout);
  }

  /** Makes the link's reads and timers not keep the process alive. */
  unref(): void {
    this.#unref = true;
    this.transport.unref();
    if (this.#keepaliveTimer !== undefined) {
      this.#clock.unrefTimer?.(this.#keepaliveTimer);
    }
  }

  /** Makes the link's reads and timers keep the process alive (the default). */
  ref(): void {
    this.#unref = false;
    this.transport.ref();
    if (this.#keepaliveTimer !== undefined) {
      this.#clock.refTimer?.(this.#keepaliveTimer);
    }
  }

  /** Replaces the codec for messages sent and received from now on. */
  useCodec(codec: Codec): void {
    this.#encoder = codec;
    this.#decoder.useCodec(codec);
  }

  /**
   * Receives the next message.
   * @returns The message, or `null` when the peer ended the link cleanly.
   * @throws {ProtocolError} On malformed input, or a message of an extension not agreed on.
   * @throws The transport's error when the link breaks.
   */
  async next(): Promise<Message | null> {
    for (;;) {
      const message = this.#decoder.next();
      if (message !== undefined) {
        this.#check(message);
        // Keepalive is the link's own business: answered here, invisible to the reader.
        if (message.type === MessageType.Ping) this.#pong();
        else if (message.type !== MessageType.Pong) return message;
        continue;
      }
      // The transport reuses its read buffer: keep what is left of the last chunk.
      this.#decoder.own();
      this.#reading = true;
      let chunk: Uint8Array | null;
      try {
        chunk = await this.transport.read();
      } finally {
        this.#reading = false;
      }
      if (chunk === null) {
        this.#stopKeepalive();
        if (this.#deadError) throw this.#deadError;
        this.#decoder.finish();
        return null;
      }
      this.#lastInput = this.#clock.now();
      this.#pinged = false;
      this.#decoder.push(chunk);
    }
  }

  /**
   * Answers a Ping, unless a Pong is still queued: one in the queue answers
   * every Ping before it, so a peer that floods Pings and never reads gets
   * one Pong, not one per Ping.
   */
  #pong(): void {
    if (this.#pongQueued && this.transport.queuedBytes > 0) return;
    this.#pongQueued = true;
    this.send({ type: MessageType.Pong });
  }

  #stopKeepalive(): void {
    this.#clock.clearTimeout(this.#keepaliveTimer);
    this.#keepaliveTimer = undefined;
  }

  /**
   * Like {@linkcode next}, but rejects with `signal.reason` once `signal` aborts.
   * The caller should then abort the link.
   */
  nextWithin(signal: AbortSignal): Promise<Message | null> {
    return abortable(this.next(), signal);
  }

  #check(message: Message): Message {
    const feature = TYPE_FEATURE[message.type];
    if (feature !== undefined && !this.#features.has(feature)) {
      throw new ProtocolError(
        `Cannot accept ${
          messageTypeName(message.type)
        } message: extension "${feature}" was not agreed on this link`,
      );
    }
    return message;
  }

  /**
   * Sends a message. It is encoded at once, so its content may be reused after the call.
   * @returns A promise to await before sending more when the write queue is full, else `undefined`.
   * @throws The transport's error once writing has failed.
   */
  send(message: Message): Promise<void> | undefined {
    return this.transport.write(this.#encoder.encode(message));
  }

  /**
   * {@linkcode send}, ignoring a broken link: for a sender that is not the
   * link's reader, which sees the failure and cleans up.
   */
  trySend(message: Message): Promise<void> | undefined {
    try {
      return this.send(message);
    } catch {
      return undefined;
    }
  }

  /** Sends what is queued, then closes the link; drops it after `closeTimeout` if not done. */
  async close(): Promise<void> {
    this.#stopKeepalive();
    const timer = setTimeout(() => this.transport.abort(), this.#closeTimeout);
    try {
      await this.transport.close();
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Sends what is queued and ends our direction, then closes once the peer
   * has closed too (the reader sees it) or after `closeTimeout`: unlike
   * {@linkcode close}, the peer loses nothing it has received but not read.
   */
  finish(): Promise<void> {
    this.#stopKeepalive();
    return this.transport.finish(this.#closeTimeout);
  }

  /**
   * Ends a link that nobody reads any more, after a refusal or an error:
   * sends what is queued (the reason), ends our direction, and reads and
   * drops what still comes until the peer closes or `closeTimeout` passes.
   * So the peer can read why, where a plain close would reset the connection
   * and lose it. Call it only when no read is pending.
   */
  async linger(): Promise<void> {
    const finished = this.finish();
    try {
      while ((await this.transport.read()) !== null) {
        // Dropped: the link is over, the peer just has not said so yet.
      }
    } catch {
      // Reset by the peer, or dropped by the timeout: either way it is over.
    }
    await finished;
    this.abort();
  }

  /** Closes the link at once. */
  abort(): void {
    this.#stopKeepalive();
    this.transport.abort();
  }
}
