/**
 * Helpers for the extension tests: a raw protocol peer that reads both text
 * messages and `binary` frames (so a test sees exactly what a discover point
 * puts on the wire), frame builders, and byte checks.
 * @module
 */

import { PeerBase, splitAddress } from "./_helpers.ts";

/** High nibble of a binary frame's first byte; the low nibble is the message type. */
export const FRAME_MARK = 0xb0;

/** One message as a {@linkcode FramePeer} read it. */
export type WireMessage =
  | {
    kind: "text";
    type: number;
    // deno-lint-ignore no-explicit-any -- wire tests look at arbitrary, possibly wrong, bodies
    body: any;
  }
  | {
    kind: "frame";
    type: number;
    sessionId: number;
    /** What follows the session number: the Data bytes, or a Credit's u32. */
    payload: Uint8Array;
    /** The whole frame exactly as it arrived. */
    raw: Uint8Array;
  };

/** A text message as a {@linkcode FramePeer} read it. */
export type TextMessage = Extract<WireMessage, { kind: "text" }>;

/** `message` if it is a text message; throws otherwise. */
export function asText(message: WireMessage): TextMessage {
  if (message.kind !== "text") throw new Error(`Expected a text message, got ${describe(message)}`);
  return message;
}

/**
 * A binary frame: `0xB0 | type`, the length of what follows as a big-endian
 * u32, the session number as a u32, then `payload`.
 */
export function frame(type: number, sessionId: number, payload: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(9 + payload.length);
  const view = new DataView(bytes.buffer);
  bytes[0] = FRAME_MARK | type;
  view.setUint32(1, 4 + payload.length);
  view.setUint32(5, sessionId);
  bytes.set(payload, 9);
  return bytes;
}

/** Whether `error` is how a write or read fails once the far end has dropped the connection. */
export function isConnectionGone(error: unknown): boolean {
  return error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted;
}

/**
 * A hand-driven protocol peer that reads text messages (type line, JSON line)
 * and binary frames (told apart by the first byte) without any library code.
 */
export class FramePeer extends PeerBase<WireMessage> {
  readonly #readBuffer = new Uint8Array(256 * 1024);
  #buffer = new Uint8Array(1024 * 1024);
  #start = 0;
  #end = 0;
  #eof = false;

  private constructor(conn: Deno.TcpConn) {
    super(conn);
  }

  /** Connects to `address` (`"host:port"`). */
  static async connect(address: string): Promise<FramePeer> {
    return new FramePeer(await Deno.connect(splitAddress(address)));
  }

  /** Sends one binary frame. */
  sendFrame(type: number, sessionId: number, payload: Uint8Array): Promise<void> {
    return this.send(frame(type, sessionId, payload));
  }

  /** Reads more input; false at EOF (a reset counts as EOF). */
  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    let count: number | null;
    try {
      count = await this.conn.read(this.#readBuffer);
    } catch (error) {
      // A reset is how a discover point drops a link; after our own close(), a pending read fails.
      if (!isConnectionGone(error) && !this.closed) throw error;
      count = null;
    }
    if (count === null) {
      this.#eof = true;
      return false;
    }
    if (this.#end + count > this.#buffer.length) {
      const kept = this.#end - this.#start;
      const bigger = new Uint8Array(Math.max(this.#buffer.length, 2 * (kept + count)));
      bigger.set(this.#buffer.subarray(this.#start, this.#end));
      this.#buffer = bigger;
      this.#start = 0;
      this.#end = kept;
    }
    this.#buffer.set(this.#readBuffer.subarray(0, count), this.#end);
    this.#end += count;
    return true;
  }

  #take(): WireMessage | undefined {
    const bytes = this.#buffer.subarray(this.#start, this.#end);
    if (bytes.length === 0) return undefined;
    if ((bytes[0]! & 0xf0) === FRAME_MARK) {
      if (bytes.length < 5) return undefined;
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
      const length = view.getUint32(1);
      if (bytes.length < 5 + length) return undefined;
      const raw = bytes.slice(0, 5 + length);
      this.#start += 5 + length;
      return {
        kind: "frame",
        type: raw[0]! & 0x0f,
        sessionId: length >= 4 ? new DataView(raw.buffer).getUint32(5) : -1,
        payload: raw.subarray(9),
        raw,
      };
    }
    const typeEnd = bytes.indexOf(0x0a);
    if (typeEnd < 0) return undefined;
    const bodyEnd = bytes.indexOf(0x0a, typeEnd + 1);
    if (bodyEnd < 0) return undefined;
    const decoder = new TextDecoder("utf-8", { fatal: true });
    const typeLine = decoder.decode(bytes.subarray(0, typeEnd));
    if (!/^\d+$/.test(typeLine)) {
      throw new Error(`Expected a type line or a frame, got ${JSON.stringify(typeLine)}`);
    }
    const body = JSON.parse(decoder.decode(bytes.subarray(typeEnd + 1, bodyEnd)));
    this.#start += bodyEnd + 1;
    return { kind: "text", type: Number(typeLine), body };
  }

  /** The next message or frame, or `null` at EOF. Throws if EOF cuts one in half. */
  override async next(): Promise<WireMessage | null> {
    for (;;) {
      const message = this.#take();
      if (message !== undefined) return message;
      if (!(await this.#fill())) {
        if (this.#end > this.#start) {
          throw new Error(`Link ended inside a message (${this.#end - this.#start} bytes left)`);
        }
        return null;
      }
    }
  }

  /** The next message, which must be a text message; throws at EOF. */
  async expectText(): Promise<TextMessage> {
    return asText(await this.expect());
  }
}

/** The content of a Data message or frame, or `undefined` for anything else. */
export function dataOf(message: WireMessage): Uint8Array | undefined {
  if (message.type !== 3) return undefined;
  return message.kind === "frame" ? message.payload : Uint8Array.fromBase64(message.body.C);
}

/** A short description of a message for assertion output. */
export function describe(message: WireMessage): string {
  return message.kind === "frame"
    ? `frame type ${message.type} X=${message.sessionId} (${message.payload.length} bytes)`
    : `text type ${message.type} ${JSON.stringify(message.body).slice(0, 80)}`;
}

/** SHA-256 of `bytes` in hex: compact to compare and to print. */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return new Uint8Array(digest).toHex();
}
