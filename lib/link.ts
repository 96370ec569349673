/**
 * A link: one transport carrying RTCP messages, with the codec in use and the
 * extensions both ends announced.
 * @module
 */

import { abortable } from "./_abortable.ts";
import { type Codec, MessageDecoder, TextCodec } from "./codec.ts";
import { ProtocolError } from "./errors.ts";
import { type Message, MessageType, messageTypeName } from "./message.ts";
import { formatAddress, type Transport } from "./transport.ts";

/** Extension names this implementation knows, as announced in Aloha `F`. */
export const Feature = {
  /** End message: one direction of a session finishes while the other flows. */
  HalfClose: "half-close",
} as const;

/** Which extension a message type needs, for the types outside Parts 1 and 2. */
const TYPE_FEATURE: Partial<Record<number, string>> = {
  [MessageType.End]: Feature.HalfClose,
  [MessageType.Credit]: "flow-control",
  [MessageType.Ping]: "keepalive",
  [MessageType.Pong]: "keepalive",
};

/** Options of {@linkcode Link}. */
export interface LinkOptions {
  /** Longest line accepted from the peer, in bytes. @default {1048576} */
  maxLineBytes?: number;
}

/** A transport speaking RTCP messages. */
export class Link {
  /** The transport underneath. */
  readonly transport: Transport;
  readonly #decoder: MessageDecoder;
  #encoder: Codec;
  #features: ReadonlySet<string> = new Set();

  /** Wraps `transport`; the link now owns it. */
  constructor(transport: Transport, options: LinkOptions = {}) {
    this.transport = transport;
    this.#encoder = new TextCodec({ maxLineBytes: options.maxLineBytes });
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

  /** Records the extensions both ends announced. */
  useFeatures(features: Iterable<string>): void {
    this.#features = new Set(features);
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
      if (message !== undefined) return this.#check(message);
      const chunk = await this.transport.read();
      if (chunk === null) {
        this.#decoder.finish();
        return null;
      }
      this.#decoder.push(chunk);
    }
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

  /** Sends what is queued, then closes the link. */
  close(): Promise<void> {
    return this.transport.close();
  }

  /** Closes the link at once. */
  abort(): void {
    this.transport.abort();
  }
}
