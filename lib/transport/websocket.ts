/**
 * A {@linkcode Transport} over a WebSocket, for places that let only HTTP in
 * (Deno Deploy, proxies, CDNs). Binary messages only: a text message is a
 * protocol error. Writes made in one turn of the event loop leave as one
 * message, up to a size cap; a WebSocket has no drain event, so backpressure
 * watches `bufferedAmount` between a high and a low mark. It uses web APIs
 * only, so a client socket (`new WebSocket(url)`) and a server's
 * (`Deno.upgradeWebSocket`) are handled alike.
 * @module
 */

import { BadResource, ConnectionReset, WriteZero } from "../_platform.ts";
import { ProtocolError } from "../errors.ts";
import type { Transport } from "./tcp.ts";

/** Options of {@linkcode WebSocketTransport}. */
export interface WebSocketTransportOptions {
  /**
   * Bytes queued (ours and the socket's) above which writers are asked to wait. Higher than
   * a TCP transport's: with no drain event, waits are polled, and a deep queue keeps the socket
   * busy between polls (measured: 1 MiB made a single stream wait 75% of the time).
   * @default {8388608}
   */
  highWaterMark?: number;
  /** Queued bytes below which waiting writers go on. @default {4194304} */
  lowWaterMark?: number;
  /** Largest message sent: writes are gathered into messages up to this size. @default {1048576} */
  maxMessageBytes?: number;
  /** Queued bytes above which the peer is taken to be not reading, and the socket closed. @default {Infinity} */
  maxQueuedBytes?: number;
  /**
   * Bytes received and not yet read above which the link is closed: a
   * WebSocket cannot be paused, so this bounds what a peer that sends
   * without credit can make us hold.
   * @default {16777216}
   */
  maxUnreadBytes?: number;
  /** The far end's address, for logs and limits per source. @default {the URL's host} */
  remoteAddr?: Deno.NetAddr;
  /** The local end's address. @default {port 0} */
  localAddr?: Deno.NetAddr;
}

/** How often waiting writers look at `bufferedAmount` again, in milliseconds. */
const DRAIN_POLL_MS = 2;

/** WebSocket close codes used here. */
const NORMAL_CLOSURE = 1000;
// 1003 and 1009 say the same, but a client socket may only close with 1000 or 3000–4999.
const UNSUPPORTED_DATA = 4003;
const MESSAGE_TOO_BIG = 4009;

function addressOfUrl(url: string): Deno.NetAddr {
  try {
    const parsed = new URL(url);
    const port = Number(parsed.port) || (parsed.protocol === "wss:" ? 443 : 80);
    return { transport: "tcp", hostname: parsed.hostname, port };
  } catch {
    return { transport: "tcp", hostname: "", port: 0 };
  }
}

/** A {@linkcode Transport} over one WebSocket. */
export class WebSocketTransport implements Transport {
  /** The local end's address. */
  readonly localAddr: Deno.NetAddr;
  /** The far end's address. */
  readonly remoteAddr: Deno.NetAddr;
  /** Always: a WebSocket gives no way to set TCP_NODELAY on its socket. */
  readonly delaysSmallWrites = true;
  readonly #ws: WebSocket;
  readonly #highWaterMark: number;
  readonly #lowWaterMark: number;
  readonly #maxMessageBytes: number;
  readonly #maxQueuedBytes: number;
  #maxUnreadBytes: number;
  readonly #received: Uint8Array[] = [];
  #unread = 0;
  #outgoing: Uint8Array[] = [];
  #outgoingBytes = 0;
  #flushScheduled = false;
  #ended = false;
  #closedHere = false;
  /** What went wrong underneath (reported unless we closed it first). */
  #error: Error | undefined;
  /** Why we ended the link ourselves (always reported). */
  #failure: Error | undefined;
  #readable: PromiseWithResolvers<void> | undefined;
  #drained: PromiseWithResolvers<void> | undefined;
  #drainTimer: ReturnType<typeof setTimeout> | undefined;
  #finishTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #closed = Promise.withResolvers<void>();

  /** Wraps `ws` (open or still connecting); the transport now owns it. */
  constructor(ws: WebSocket, options: WebSocketTransportOptions = {}) {
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    this.#highWaterMark = options.highWaterMark ?? 8 * 1024 * 1024;
    this.#lowWaterMark = options.lowWaterMark ?? 4 * 1024 * 1024;
    this.#maxMessageBytes = options.maxMessageBytes ?? 1024 * 1024;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? Infinity;
    this.#maxUnreadBytes = options.maxUnreadBytes ?? 16 * 1024 * 1024;
    this.remoteAddr = options.remoteAddr ?? addressOfUrl(ws.url);
    this.localAddr = options.localAddr ?? { transport: "tcp", hostname: "", port: 0 };
    ws.addEventListener("open", () => this.#flush());
    ws.addEventListener("message", (event) => this.#receive(event.data));
    ws.addEventListener("error", (event) => {
      const message = (event as ErrorEvent).message;
      this.#error ??= new ConnectionReset(
        `The WebSocket failed${message ? `: ${message}` : ""}`,
      );
      this.#wake();
    });
    ws.addEventListener("close", (event) => {
      if (!event.wasClean && !this.#closedHere) {
        this.#error ??= new ConnectionReset(
          `The WebSocket closed without a closing handshake (code ${event.code})`,
        );
      }
      this.#ended = true;
      clearTimeout(this.#finishTimer);
      this.#outgoing = [];
      this.#outgoingBytes = 0;
      this.#wake();
      this.#release();
      this.#closed.resolve();
    });
  }

  #receive(data: unknown): void {
    if (this.#ended) return;
    if (!(data instanceof ArrayBuffer)) {
      this.#fail(
        new ProtocolError("Cannot accept a text message on an RTCP link: binary messages only"),
        UNSUPPORTED_DATA,
      );
      return;
    }
    if (data.byteLength === 0) return;
    this.#received.push(new Uint8Array(data));
    this.#unread += data.byteLength;
    if (this.#unread > this.#maxUnreadBytes) {
      this.#fail(
        new ProtocolError(
          `Cannot hold more from this WebSocket: ${this.#unread} bytes unread (limit ${this.#maxUnreadBytes})`,
        ),
        MESSAGE_TOO_BIG,
      );
      return;
    }
    this.#wake();
  }

  /** Ends the link for `error`, which the reader gets. */
  #fail(error: Error, code: number): void {
    this.#failure ??= error;
    this.#closedHere = true;
    this.#received.length = 0;
    this.#unread = 0;
    try {
      this.#ws.close(code, error.message.slice(0, 120));
    } catch {
      // Closing already.
    }
    this.#ended = true;
    this.#wake();
    this.#release();
  }

  /** See {@linkcode Transport.limitUnread}. */
  limitUnread(bytes: number): void {
    this.#maxUnreadBytes = bytes;
  }

  /** Bytes queued for writing: ours, and the socket's `bufferedAmount`. */
  get queuedBytes(): number {
    return this.#outgoingBytes + (this.#ended ? 0 : this.#ws.bufferedAmount);
  }

  #wake(): void {
    const readable = this.#readable;
    this.#readable = undefined;
    readable?.resolve();
  }

  async #ready(): Promise<void> {
    while (
      this.#received.length === 0 && !this.#ended && this.#error === undefined &&
      this.#failure === undefined
    ) {
      this.#readable ??= Promise.withResolvers<void>();
      await this.#readable.promise;
    }
  }

  #end(): null {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#error !== undefined && !this.#closedHere) throw this.#error;
    return null;
  }

  /** Reads the next message's bytes; see {@linkcode Transport.read}. */
  async read(): Promise<Uint8Array | null> {
    await this.#ready();
    const chunk = this.#received.shift();
    if (chunk === undefined) return this.#end();
    this.#unread -= chunk.length;
    return chunk;
  }

  /** Reads into `p`, keeping what does not fit for the next read (as `TcpTransport.readInto`). */
  async readInto(p: Uint8Array): Promise<number | null> {
    await this.#ready();
    const chunk = this.#received[0];
    if (chunk === undefined) return this.#end();
    const count = Math.min(p.length, chunk.length);
    p.set(chunk.subarray(0, count));
    if (count === chunk.length) this.#received.shift();
    else this.#received[0] = chunk.subarray(count);
    this.#unread -= count;
    return count;
  }

  /** Queues bytes; they leave in a message at the end of this turn. See {@linkcode Transport.write}. */
  write(bytes: Uint8Array): Promise<void> | undefined {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#ended || this.#closedHere) {
      throw new BadResource("Cannot write: the WebSocket is closed");
    }
    if (bytes.length === 0) return undefined;
    this.#outgoing.push(bytes);
    this.#outgoingBytes += bytes.length;
    if (this.queuedBytes > this.#maxQueuedBytes) {
      const error = new WriteZero(
        `Cannot write: the peer does not read what is sent (more than ${this.#maxQueuedBytes} bytes queued, limit maxLinkQueueBytes)`,
      );
      this.#fail(error, MESSAGE_TOO_BIG);
      throw error;
    }
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => {
        this.#flushScheduled = false;
        this.#flush();
      });
    }
    return this.backpressure();
  }

  /** Sends what is queued as messages of at most `maxMessageBytes`. */
  #flush(): void {
    if (this.#ws.readyState !== WebSocket.OPEN) return; // "open" flushes again.
    while (this.#outgoing.length > 0) {
      let size = 0;
      let count = 0;
      for (const chunk of this.#outgoing) {
        if (count > 0 && size + chunk.length > this.#maxMessageBytes) break;
        size += chunk.length;
        count++;
      }
      const chunks = this.#outgoing.splice(0, count);
      this.#outgoingBytes -= size;
      let message = chunks[0]!;
      if (count > 1) {
        message = new Uint8Array(size);
        let offset = 0;
        for (const chunk of chunks) {
          message.set(chunk, offset);
          offset += chunk.length;
        }
      }
      this.#ws.send(message);
    }
  }

  /** See {@linkcode Transport.backpressure}: polls `bufferedAmount`, there being no drain event. */
  backpressure(): Promise<void> | undefined {
    if (this.#ended || this.queuedBytes <= this.#highWaterMark) return undefined;
    if (this.#drained === undefined) {
      this.#drained = Promise.withResolvers<void>();
      this.#watchDrain();
    }
    return this.#drained.promise;
  }

  #watchDrain(): void {
    this.#drainTimer = setTimeout(() => {
      if (this.#ended || this.queuedBytes <= this.#lowWaterMark) this.#release();
      else this.#watchDrain();
    }, DRAIN_POLL_MS);
  }

  #release(): void {
    clearTimeout(this.#drainTimer);
    const drained = this.#drained;
    this.#drained = undefined;
    drained?.resolve();
  }

  /** A WebSocket cannot end one direction: this finishes it (see {@linkcode finish}). */
  closeWrite(): Promise<void> {
    return this.finish(5000);
  }

  /** Starts the closing handshake after what is queued; drops the socket after `grace` ms. */
  finish(grace: number): Promise<void> {
    if (this.#ended || this.#finishTimer !== undefined) return Promise.resolve();
    this.#flush();
    this.#finishTimer = setTimeout(() => this.abort(), grace);
    try {
      this.#ws.close(NORMAL_CLOSURE);
    } catch {
      // Closing already.
    }
    return Promise.resolve();
  }

  /** Sends what is queued, then closes. */
  close(): Promise<void> {
    this.#flush();
    this.abort();
    return Promise.resolve();
  }

  /** Closes now: reads end, writes fail. The closing handshake goes on underneath. */
  abort(): void {
    clearTimeout(this.#finishTimer);
    if (this.#closedHere && this.#ended) return;
    this.#closedHere = true;
    try {
      this.#ws.close(NORMAL_CLOSURE);
    } catch {
      // Closing already.
    }
    this.#ended = true;
    this.#received.length = 0;
    this.#unread = 0;
    this.#wake();
    this.#release();
  }

  /** A WebSocket cannot be unref'd: a no-op. */
  ref(): void {}

  /** A WebSocket cannot be unref'd: a no-op. */
  unref(): void {}
}
