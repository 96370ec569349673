/**
 * Message codecs and the Web Streams that use them.
 *
 * A {@linkcode Codec} turns messages into bytes and takes whole messages off
 * the front of a {@linkcode ByteQueue}. A {@linkcode MessageDecoder} owns the
 * queue and the codec in use, so a link can switch codecs between two messages
 * (an extension does that after the handshake) without losing buffered bytes.
 * @module
 */

import { ByteQueue } from "./_bytes.ts";
import { takeBuffer } from "./_frame_pool.ts";
import { decodeUtf8, encodeUtf8 } from "./_utf8.ts";
import { ProtocolError } from "../errors.ts";
import {
  bodyOf,
  MAX_NAME_LENGTH,
  type Message,
  messageFromBody,
  MessageType,
  messageTypeName,
} from "./message.ts";

/** Default longest line (type line or JSON body) a reader accepts: 1 MiB. */
export const MAX_LINE_BYTES = 1024 * 1024;

/** Most raw bytes one Data message carries; writers split larger writes. */
export const MAX_DATA_BYTES = 64 * 1024;

/** Longest type line: a message type needs at most a few digits. */
const MAX_TYPE_LINE_BYTES = 12;

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/** Turns messages into bytes and bytes back into messages. One instance serves one link. */
export interface Codec {
  /** Short name for logs, e.g. `"text"`. */
  readonly name: string;
  /** Encodes one whole message as one byte array. */
  encode(message: Message): Uint8Array;
  /**
   * Removes one whole message from the front of `queue` and returns it, or
   * returns `undefined` (consuming nothing) when more bytes are needed.
   * @throws {ProtocolError} When the queued bytes cannot be a valid message.
   */
  decode(queue: ByteQueue): Message | undefined;
  /**
   * After `decode` returned `undefined`: the full size of the message begun at
   * the front of `queue`, when it is known and large enough to be worth
   * assembling in a buffer of its own; else `undefined`.
   */
  pendingSize?(queue: ByteQueue): number | undefined;
  /** Decodes a whole message from a buffer of exactly its size, taking the buffer over. */
  decodeWhole?(bytes: Uint8Array<ArrayBuffer>): Message;
}

/** Options of the text codec. */
export interface TextCodecOptions {
  /** Longest line accepted, in bytes. @default {1048576} */
  maxLineBytes?: number;
}

function lineEnd(bytes: Uint8Array, newline: number, start: number): number {
  return newline > start && bytes[newline - 1] === CARRIAGE_RETURN ? newline - 1 : newline;
}

/**
 * The protocol's own framing (PROTOCOL.md Part 2 items 1–2): the type in ASCII
 * decimal, `\n`, the body as one line of JSON, `\n`; Data content in base64.
 */
export class TextCodec implements Codec {
  /** Always `"text"`. */
  readonly name: string = "text";
  readonly #maxLineBytes: number;
  /** Where the search for the body's newline resumes, so a long line is scanned once. */
  #scanned = 0;

  /** Creates a text codec with the given line limit. */
  constructor(options: TextCodecOptions = {}) {
    this.#maxLineBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
  }

  /** Encodes `message` as a type line and a JSON line. */
  encode(message: Message): Uint8Array {
    // The hot paths, byte for byte what JSON.stringify writes: no body object, no JSON.
    switch (message.type) {
      case MessageType.Data:
        return encodeUtf8(`3\n{"X":${message.sessionId},"C":"${message.content.toBase64()}"}\n`);
      case MessageType.End:
        return encodeControl(message.type, message.sessionId, END_TAIL) ?? this.#json(message);
      case MessageType.Ack:
      case MessageType.Close:
        if (message.reason !== "") break;
        return encodeControl(message.type, message.sessionId, EMPTY_REASON_TAIL) ??
          this.#json(message);
      case MessageType.Connect:
        if (
          message.key !== undefined || message.address !== undefined ||
          message.sessionId !== undefined
        ) break;
        return encodeConnect(message.name) ?? this.#json(message);
    }
    return this.#json(message);
  }

  #json(message: Message): Uint8Array {
    return encodeUtf8(`${message.type}\n${JSON.stringify(bodyOf(message))}\n`);
  }

  /** Decodes one message from the front of `queue`, if it is all there. */
  decode(queue: ByteQueue): Message | undefined {
    const bytes = queue.view();
    const typeEnd = bytes.subarray(0, MAX_TYPE_LINE_BYTES + 1).indexOf(NEWLINE);
    if (typeEnd < 0) {
      if (bytes.length > MAX_TYPE_LINE_BYTES) {
        throw new ProtocolError(
          `Cannot decode message: the type line is longer than ${MAX_TYPE_LINE_BYTES} bytes`,
        );
      }
      checkDigits(bytes, bytes.length, true);
      return undefined;
    }
    const type = parseType(bytes, lineEnd(bytes, typeEnd, 0));
    if (type > MAX_MESSAGE_TYPE) {
      throw new ProtocolError(`Cannot decode message: unknown message type ${type}`);
    }
    const bodyStart = typeEnd + 1;
    const from = Math.max(bodyStart, this.#scanned);
    const bodyNewline = bytes.indexOf(NEWLINE, from);
    const limit = bodyStart + this.#maxLineBytes;
    if (bodyNewline < 0 ? bytes.length > limit : bodyNewline > limit) {
      throw new ProtocolError(
        `Cannot decode ${
          typeLabel(type)
        }: the body line is longer than ${this.#maxLineBytes} bytes (limit maxLineBytes)`,
      );
    }
    if (bodyNewline < 0) {
      this.#scanned = bytes.length;
      return undefined;
    }
    this.#scanned = 0;
    const bodyEnd = lineEnd(bytes, bodyNewline, bodyStart);
    const control = decodeControl(type, bytes, bodyStart, bodyEnd);
    if (control !== undefined) {
      queue.consume(bodyNewline + 1);
      return control;
    }
    let body: unknown;
    try {
      body = JSON.parse(decodeUtf8(bytes.subarray(bodyStart, bodyEnd)));
    } catch (error) {
      throw new ProtocolError(
        `Cannot decode ${typeLabel(type)}: the body is not valid JSON: ${(error as Error).message}`,
        { cause: error },
      );
    }
    queue.consume(bodyNewline + 1);
    return messageFromBody(type, body);
  }
}

/** `{"X":` */
const X_KEY = [0x7b, 0x22, 0x58, 0x22, 0x3a];
/** `,"R":""}` */
const EMPTY_REASON = [0x2c, 0x22, 0x52, 0x22, 0x3a, 0x22, 0x22, 0x7d];
/** `{"N":"` */
const N_KEY = [0x7b, 0x22, 0x4e, 0x22, 0x3a, 0x22];
const CLOSE_BRACE = 0x7d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
/** Most digits of a session number read here; longer ones (up to 2^53) take the JSON path. */
const MAX_QUICK_DIGITS = 15;
/** `}` and the newline, after an End's number. */
const END_TAIL = [CLOSE_BRACE, NEWLINE];
/** `,"R":""}` and the newline, after an Ack's or a Close's number. */
const EMPTY_REASON_TAIL = [...EMPTY_REASON, NEWLINE];
/** `"}` and the newline, after a Connect's name. */
const NAME_TAIL = [QUOTE, CLOSE_BRACE, NEWLINE];

/**
 * The line of a control message `type` (one digit) for session `sessionId`:
 * `type`, newline, `{"X":`, the number, then `tail`, written byte by byte
 * rather than through a string; `undefined` for a number of another form.
 */
function encodeControl(
  type: number,
  sessionId: number,
  tail: readonly number[],
): Uint8Array | undefined {
  if (!Number.isInteger(sessionId) || sessionId < 0 || sessionId >= 10 ** MAX_QUICK_DIGITS) {
    return undefined;
  }
  let digits = 1;
  for (let rest = sessionId; rest >= 10; rest = Math.floor(rest / 10)) digits++;
  const bytes = new Uint8Array(2 + X_KEY.length + digits + tail.length);
  bytes[0] = 0x30 + type;
  bytes[1] = NEWLINE;
  bytes.set(X_KEY, 2);
  let at = 2 + X_KEY.length + digits;
  for (let rest = sessionId, i = 0; i < digits; i++, rest = Math.floor(rest / 10)) {
    bytes[--at] = 0x30 + (rest % 10);
  }
  bytes.set(tail, 2 + X_KEY.length + digits);
  return bytes;
}

/** A Connect's line for a name of printable ASCII that needs no escape; else `undefined`. */
function encodeConnect(name: string): Uint8Array | undefined {
  const bytes = new Uint8Array(2 + N_KEY.length + name.length + NAME_TAIL.length);
  bytes[0] = 0x30 + MessageType.Connect;
  bytes[1] = NEWLINE;
  bytes.set(N_KEY, 2);
  let at = 2 + N_KEY.length;
  for (let i = 0; i < name.length; i++) {
    const code = name.charCodeAt(i);
    if (code < 0x20 || code > 0x7e || code === QUOTE || code === BACKSLASH) return undefined;
    bytes[at++] = code;
  }
  bytes.set(NAME_TAIL, at);
  return bytes;
}

function startsWith(bytes: Uint8Array, at: number, expected: readonly number[]): boolean {
  for (let i = 0; i < expected.length; i++) if (bytes[at + i] !== expected[i]) return false;
  return true;
}

/**
 * The control messages every session sends, read without JSON when their body
 * is in the exact form this codec writes: `{"X":N}` (End), `{"X":N,"R":""}`
 * or `{"X":N}` (Ack, Close), `{"N":"ASCII"}` (Connect). `undefined` for
 * anything else, which the JSON path then reads (or rejects) as before, so
 * both paths accept the same bodies and give the same messages.
 */
function decodeControl(
  type: number,
  bytes: Uint8Array,
  start: number,
  end: number,
): Message | undefined {
  if (type === MessageType.Connect) return decodeConnect(bytes, start, end);
  if (type !== MessageType.End && type !== MessageType.Ack && type !== MessageType.Close) {
    return undefined;
  }
  if (!startsWith(bytes, start, X_KEY)) return undefined;
  const digits = start + X_KEY.length;
  let at = digits;
  let sessionId = 0;
  for (; at < end && isDigit(bytes[at]); at++) sessionId = sessionId * 10 + (bytes[at]! - 0x30);
  const count = at - digits;
  // JSON has no leading zeros; a number too long for this loop goes the long way.
  if (count === 0 || count > MAX_QUICK_DIGITS || (count > 1 && bytes[digits] === 0x30)) {
    return undefined;
  }
  if (at + 1 === end && bytes[at] === CLOSE_BRACE) {
    return type === MessageType.End ? { type, sessionId } : { type, sessionId, reason: "" };
  }
  if (type === MessageType.End || at + EMPTY_REASON.length !== end) return undefined;
  return startsWith(bytes, at, EMPTY_REASON) ? { type, sessionId, reason: "" } : undefined;
}

function decodeConnect(bytes: Uint8Array, start: number, end: number): Message | undefined {
  const first = start + N_KEY.length;
  // The name, then `"}`; printable ASCII with no escapes only.
  const length = end - first - 2;
  if (length < 0 || length > MAX_NAME_LENGTH || !startsWith(bytes, start, N_KEY)) return undefined;
  if (bytes[end - 1] !== CLOSE_BRACE || bytes[end - 2] !== QUOTE) return undefined;
  for (let i = first; i < end - 2; i++) {
    const byte = bytes[i]!;
    if (byte < 0x20 || byte > 0x7e || byte === QUOTE || byte === BACKSLASH) return undefined;
  }
  // Checked to be ASCII above: one character per byte, with no second pass.
  const name = String.fromCharCode.apply(
    null,
    bytes.subarray(first, end - 2) as unknown as number[],
  );
  return { type: MessageType.Connect, name };
}

function typeLabel(type: number): string {
  return `${messageTypeName(type)} message`;
}

const MAX_MESSAGE_TYPE = Math.max(...Object.values(MessageType));

function isDigit(byte: number | undefined): boolean {
  return byte !== undefined && byte >= 0x30 && byte <= 0x39;
}

/** Throws unless `bytes[0..end)` are digits; an incomplete line may also end in its `\r`. */
function checkDigits(bytes: Uint8Array, end: number, incomplete: boolean): void {
  for (let i = 0; i < end; i++) {
    if (!isDigit(bytes[i]) && !(incomplete && i === end - 1 && bytes[i] === CARRIAGE_RETURN)) {
      throw new ProtocolError(
        `Cannot decode message: the type line must be decimal digits, got byte 0x${
          (bytes[i] ?? 0).toString(16).padStart(2, "0")
        } at offset ${i}`,
      );
    }
  }
}

function parseType(bytes: Uint8Array, end: number): number {
  if (end === 0) throw new ProtocolError("Cannot decode message: the type line is empty");
  let type = 0;
  for (let i = 0; i < end; i++) {
    const byte = bytes[i];
    if (!isDigit(byte)) checkDigits(bytes, end, false);
    type = type * 10 + (byte! - 0x30);
  }
  return type;
}

/** Options of {@linkcode MessageDecoder} and {@linkcode MessageDecoderStream}. */
export interface MessageDecoderOptions {
  /** Longest line accepted, in bytes. @default {1048576} */
  maxLineBytes?: number;
  /** The codec to start with. @default {new TextCodec({ maxLineBytes })} */
  codec?: Codec;
}

/**
 * Pull decoder: push received chunks, then take messages one by one. The
 * codec may be replaced between two messages with {@linkcode useCodec}.
 */
export class MessageDecoder {
  readonly #queue = new ByteQueue();
  #codec: Codec;
  /** A large message being filled in place (see {@linkcode Codec.pendingSize}), and by whom. */
  #assembly: { bytes: Uint8Array<ArrayBuffer>; filled: number; codec: Codec } | undefined;
  /** The assembled message, due before anything in the queue. */
  #assembled: Message | undefined;

  /** Creates a decoder that starts with the text codec. */
  constructor(options: MessageDecoderOptions = {}) {
    this.#codec = options.codec ?? new TextCodec({ maxLineBytes: options.maxLineBytes });
  }

  /** Bytes received but not yet returned as messages. */
  get bufferedBytes(): number {
    return this.#queue.length + (this.#assembly?.filled ?? 0);
  }

  /** Replaces the codec for all messages not yet taken. */
  useCodec(codec: Codec): void {
    this.#codec = codec;
  }

  /**
   * Adds received bytes. They may be borrowed until {@linkcode own} is called:
   * call it before the chunk's memory is reused.
   */
  push(chunk: Uint8Array): void {
    const assembly = this.#assembly;
    if (assembly) {
      const take = Math.min(assembly.bytes.length - assembly.filled, chunk.length);
      assembly.bytes.set(chunk.subarray(0, take), assembly.filled);
      assembly.filled += take;
      if (assembly.filled === assembly.bytes.length) {
        this.#assembly = undefined;
        this.#assembled = assembly.codec.decodeWhole!(assembly.bytes);
      }
      chunk = chunk.subarray(take);
    }
    this.#queue.push(chunk);
  }

  /** Copies any borrowed bytes still buffered, so the pushed chunks may be reused. */
  own(): void {
    this.#queue.own();
  }

  /**
   * Takes the next whole message.
   * @returns The message, or `undefined` when more bytes are needed.
   * @throws {ProtocolError} When the input cannot be a valid message.
   */
  next(): Message | undefined {
    const assembled = this.#assembled;
    if (assembled) {
      this.#assembled = undefined;
      return assembled;
    }
    if (this.#assembly || this.#queue.length === 0) return undefined;
    const message = this.#codec.decode(this.#queue);
    if (message === undefined) this.#startAssembly();
    return message;
  }

  /**
   * Moves a large message that has only begun into a buffer of its exact size,
   * so the rest is copied once, straight into place, and the buffer is the message's.
   */
  #startAssembly(): void {
    const size = this.#codec.pendingSize?.(this.#queue);
    if (size === undefined) return;
    const head = this.#queue.view();
    const bytes = takeBuffer(size);
    bytes.set(head);
    this.#assembly = { bytes, filled: head.length, codec: this.#codec };
    this.#queue.consume(head.length);
  }

  /**
   * Declares the end of input.
   * @throws {ProtocolError} When a partial message remains.
   */
  finish(): void {
    if (this.bufferedBytes > 0) {
      throw new ProtocolError(
        `Cannot decode message: input ended inside a message (${this.bufferedBytes} bytes left)`,
      );
    }
  }
}

/**
 * Decodes a byte stream into messages. Accepts any chunking, caps each line
 * at `maxLineBytes`, and errors on a truncated tail.
 * @example
 * ```ts ignore
 * for await (const message of conn.readable.pipeThrough(new MessageDecoderStream())) console.log(message);
 * ```
 */
export class MessageDecoderStream extends TransformStream<Uint8Array, Message> {
  /** Creates a decoder stream. */
  constructor(options: MessageDecoderOptions = {}) {
    const decoder = new MessageDecoder(options);
    super({
      transform(chunk, controller) {
        decoder.push(chunk);
        for (let message = decoder.next(); message !== undefined; message = decoder.next()) {
          controller.enqueue(message);
        }
        decoder.own();
      },
      flush() {
        decoder.finish();
      },
    });
  }
}

/** Options of {@linkcode MessageEncoderStream}. */
export interface MessageEncoderStreamOptions {
  /** The codec to encode with. @default {new TextCodec()} */
  codec?: Codec;
}

/**
 * Encodes messages into bytes, one `Uint8Array` per whole message, so writers
 * sharing a socket never interleave half messages.
 */
export class MessageEncoderStream extends TransformStream<Message, Uint8Array> {
  /** Creates an encoder stream. */
  constructor(options: MessageEncoderStreamOptions = {}) {
    const codec = options.codec ?? new TextCodec();
    super({
      transform(message, controller) {
        controller.enqueue(codec.encode(message));
      },
    });
  }
}
