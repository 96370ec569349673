/**
 * The `binary` extension's codec: Data and Credit travel as length-prefixed
 * binary frames with raw bytes; every other message keeps the text form. The
 * decoder tells the two apart by the first byte (a text message starts with a
 * digit, a frame with `0xB0 | type`), so it can take over a link between any
 * two messages.
 * @module
 */

import type { ByteQueue } from "./_bytes.ts";
import { takeBuffer } from "./_frame_pool.ts";
import { type Codec, MAX_LINE_BYTES, TextCodec, type TextCodecOptions } from "./codec.ts";
import { ProtocolError } from "../errors.ts";
import { type Message, MessageType } from "./message.ts";

/** Most raw bytes one binary Data frame carries; writers split larger writes. */
export const MAX_BINARY_DATA_BYTES = 256 * 1024;

/** Largest length field of a Data frame: the session number and the most content. */
const MAX_FRAME_DATA_LENGTH = 4 + MAX_BINARY_DATA_BYTES;

/** High nibble of a frame's first byte; the low nibble is the message type. */
const FRAME_MARK = 0xb0;
/** Type byte, then the length of what follows as a big-endian u32. */
const HEADER_BYTES = 5;
/** Frames at least this large that arrive in pieces are assembled in place rather than queued. */
const ASSEMBLE_BYTES = 16 * 1024;
/** Largest session number a frame can carry (u32); larger ones fall back to text. */
const MAX_FRAME_SESSION_ID = 0xffff_ffff;

/** A copy of the first `size` bytes, at the start of a (pooled) buffer of its own. */
function copyFrame(bytes: Uint8Array, size: number): Uint8Array<ArrayBuffer> {
  const frame = takeBuffer(size);
  frame.set(bytes.subarray(0, size));
  return frame;
}

/** Bytes before a Data frame's payload: type, length, session number. */
export const DATA_HEADROOM = HEADER_BYTES + 4;

/**
 * The frame around owned `content` that has {@linkcode DATA_HEADROOM} bytes free before it in
 * its buffer (as decoded frames and `IndirectConn.readFrom` buffers have), with the header
 * written; `undefined` when there is no such room.
 */
function framing(content: Uint8Array, sessionId: number): Uint8Array | undefined {
  if (content.byteOffset !== DATA_HEADROOM || !(content.buffer instanceof ArrayBuffer)) {
    return undefined;
  }
  const frame = new Uint8Array(content.buffer, 0, DATA_HEADROOM + content.length);
  frame[0] = FRAME_MARK | MessageType.Data;
  putUint32(frame, 1, 4 + content.length);
  putUint32(frame, HEADER_BYTES, sessionId);
  return frame;
}

/** Writes `value` big-endian at `offset` (no DataView to allocate on the per-frame path). */
function putUint32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value >>> 24;
  bytes[offset + 1] = value >>> 16;
  bytes[offset + 2] = value >>> 8;
  bytes[offset + 3] = value;
}

/** Reads a big-endian u32 at `offset`. */
function getUint32(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! * 0x100_0000) +
    ((bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!);
}

/** Binary frames for Data and Credit, text for the rest. */
export class BinaryCodec implements Codec {
  /** Always `"binary"`. */
  readonly name: string = "binary";
  readonly #text: TextCodec;
  readonly #maxFrameBytes: number;

  /** Creates the codec; `maxLineBytes` also caps a frame's length. */
  constructor(options: TextCodecOptions = {}) {
    this.#text = new TextCodec(options);
    this.#maxFrameBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
  }

  /** Encodes Data and Credit as frames, anything else as text. */
  encode(message: Message): Uint8Array {
    if (message.type === MessageType.Data && message.sessionId <= MAX_FRAME_SESSION_ID) {
      const { content } = message;
      const owned = message.owned ? framing(content, message.sessionId) : undefined;
      if (owned) return owned;
      const copy = takeBuffer(DATA_HEADROOM + content.length);
      copy.set(content, DATA_HEADROOM);
      return framing(copy.subarray(DATA_HEADROOM), message.sessionId)!;
    }
    if (message.type === MessageType.Credit && message.sessionId <= MAX_FRAME_SESSION_ID) {
      const frame = new Uint8Array(HEADER_BYTES + 8);
      frame[0] = FRAME_MARK | MessageType.Credit;
      putUint32(frame, 1, 8);
      putUint32(frame, 5, message.sessionId);
      putUint32(frame, 9, Math.min(message.bytes, 0xffff_ffff));
      return frame;
    }
    return this.#text.encode(message);
  }

  /** The size of a Data frame begun at the front of `queue`, if large enough to assemble in place. */
  pendingSize(queue: ByteQueue): number | undefined {
    const bytes = queue.view();
    if (bytes.length < HEADER_BYTES || bytes[0] !== (FRAME_MARK | MessageType.Data)) {
      return undefined;
    }
    // The length is checked before anything is allocated for the frame.
    const size = HEADER_BYTES + this.#frameLength(MessageType.Data, getUint32(bytes, 1));
    return size >= ASSEMBLE_BYTES && size > bytes.length ? size : undefined;
  }

  /**
   * Checks a frame's length field against what its type allows, before any
   * buffer is sized by it.
   * @throws {ProtocolError} For a length the type cannot have, or over the limits.
   */
  #frameLength(type: number, length: number): number {
    if (length > this.#maxFrameBytes) {
      throw new ProtocolError(
        `Cannot decode frame: ${length} bytes is over the limit of ${this.#maxFrameBytes} (limit maxLineBytes)`,
      );
    }
    if (type === MessageType.Data && length > MAX_FRAME_DATA_LENGTH) {
      throw new ProtocolError(
        `Cannot decode frame: a Data frame carries at most ${MAX_BINARY_DATA_BYTES} bytes, this one ${
          length - 4
        }`,
      );
    }
    if (type === MessageType.Data ? length < 4 : length !== 8) {
      throw new ProtocolError(`Cannot decode frame: type ${type} cannot be ${length} bytes long`);
    }
    return length;
  }

  /** Decodes a whole Data frame held in a buffer of exactly its size; the content stays in it. */
  decodeWhole(frame: Uint8Array<ArrayBuffer>): Message {
    const sessionId = getUint32(frame, HEADER_BYTES);
    return { type: MessageType.Data, sessionId, content: frame.subarray(DATA_HEADROOM) };
  }

  /** Decodes one text message or binary frame from the front of `queue`. */
  decode(queue: ByteQueue): Message | undefined {
    const bytes = queue.view();
    const first = bytes[0]!;
    if ((first & 0xf0) !== FRAME_MARK) return this.#text.decode(queue);
    const type = first & 0x0f;
    if (type !== MessageType.Data && type !== MessageType.Credit) {
      throw new ProtocolError(`Cannot decode frame: type ${type} has no binary form`);
    }
    if (bytes.length < HEADER_BYTES) return undefined;
    const length = this.#frameLength(type, getUint32(bytes, 1));
    if (bytes.length < HEADER_BYTES + length) return undefined;
    const sessionId = getUint32(bytes, HEADER_BYTES);
    const message: Message = type === MessageType.Data
      // A copy of the whole frame (the queue reuses its buffer); the content is its payload, so a
      // discover point can send the frame on unchanged.
      ? {
        type,
        sessionId,
        content: copyFrame(bytes, HEADER_BYTES + length).subarray(HEADER_BYTES + 4),
      }
      : { type, sessionId, bytes: getUint32(bytes, HEADER_BYTES + 4) };
    queue.consume(HEADER_BYTES + length);
    return message;
  }
}
