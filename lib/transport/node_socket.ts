/**
 * A {@linkcode Transport} over a `node:net` socket, for the links a discover
 * point accepts over TLS. Deno's own `Deno.listenTls` gives connections on
 * which TCP_NODELAY cannot be set, and Nagle's algorithm then holds every
 * small message behind the peer's delayed ACK (40 ms a time: a 1-byte round
 * trip of two small writes took 44 ms instead of 30 µs). `node:tls` servers
 * let it be set before the handshake, so the discover point accepts TLS there.
 * @module
 */

import type { Socket } from "node:net";
import { recycle } from "../wire/_frame_pool.ts";
import { ProtocolError } from "../errors.ts";
import type { Transport } from "./tcp.ts";

/** Options of {@linkcode NodeSocketTransport}. */
export interface NodeSocketTransportOptions {
  /** Queued bytes above which `write()` asks the caller to wait. @default {1048576} */
  highWaterMark?: number;
  /** Queued bytes above which the peer is taken to be not reading, and the socket dropped. @default {Infinity} */
  maxQueuedBytes?: number;
  /**
   * Bytes received and not yet read above which the socket is dropped. A
   * `node:tls` socket in Deno does not stop reading when paused (and a paused
   * one can miss its end), so this, not pausing, bounds what a peer that
   * sends without credit can make us hold.
   * @default {16777216}
   */
  maxUnreadBytes?: number;
}

function addressOf(hostname: string | undefined, port: number | undefined): Deno.NetAddr {
  return { transport: "tcp", hostname: hostname ?? "", port: port ?? 0 };
}

/** A {@linkcode Transport} over a connected `node:net` (or `node:tls`) socket. */
export class NodeSocketTransport implements Transport {
  /** The local end's address. */
  readonly localAddr: Deno.NetAddr;
  /** The far end's address. */
  readonly remoteAddr: Deno.NetAddr;
  readonly #socket: Socket;
  readonly #highWaterMark: number;
  readonly #maxQueuedBytes: number;
  readonly #chunks: Uint8Array[] = [];
  #buffered = 0;
  #maxUnreadBytes: number;
  /** The peer ended its direction (or the socket closed). */
  #ended = false;
  /** The socket has closed, whoever closed it. */
  #closed = false;
  /** We closed it (so an error it reports after that is no news). */
  #closedHere = false;
  #error: Error | undefined;
  #writeError: Error | undefined;
  #readable: PromiseWithResolvers<void> | undefined;
  #drained: PromiseWithResolvers<void> | undefined;
  readonly #gone = Promise.withResolvers<void>();
  /** Writes handed to the socket and not yet written, and who waits for them all. */
  #unwritten = 0;
  /** Writes of this turn are being gathered (`socket.cork()`). */
  #corked = false;
  #flushWaiters: (() => void)[] = [];
  #finishTimer: ReturnType<typeof setTimeout> | undefined;

  /** Wraps `socket`; the transport now owns it. */
  constructor(socket: Socket, options: NodeSocketTransportOptions = {}) {
    this.#socket = socket;
    this.#highWaterMark = options.highWaterMark ?? 1024 * 1024;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? Infinity;
    this.#maxUnreadBytes = options.maxUnreadBytes ?? 16 * 1024 * 1024;
    this.localAddr = addressOf(socket.localAddress, socket.localPort);
    this.remoteAddr = addressOf(socket.remoteAddress, socket.remotePort);
    socket.on("data", (chunk: Uint8Array) => {
      if (this.#closedHere) return;
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered > this.#maxUnreadBytes) {
        this.#writeError ??= new ProtocolError(
          `Cannot hold more from this link: ${this.#buffered} bytes unread (limit ${this.#maxUnreadBytes})`,
        );
        this.abort();
        return;
      }
      this.#wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
      if (this.#finishTimer !== undefined) this.abort();
    });
    socket.on("error", (error: Error) => {
      this.#error ??= error;
      this.#wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#closed = true;
      clearTimeout(this.#finishTimer);
      this.#wake();
      this.#release();
      this.#wakeFlushWaiters();
      this.#gone.resolve();
    });
    socket.on("drain", () => {
      if (socket.writableLength <= this.#highWaterMark) this.#release();
    });
  }

  /** See {@linkcode Transport.limitUnread}. */
  limitUnread(bytes: number): void {
    this.#maxUnreadBytes = bytes;
  }

  /** Bytes queued for writing. */
  get queuedBytes(): number {
    return this.#closed ? 0 : this.#socket.writableLength;
  }

  #wake(): void {
    const readable = this.#readable;
    this.#readable = undefined;
    readable?.resolve();
  }

  #release(): void {
    const drained = this.#drained;
    this.#drained = undefined;
    drained?.resolve();
  }

  /** Waits until a chunk, the end, or an error is there. */
  async #ready(): Promise<void> {
    while (this.#chunks.length === 0 && !this.#ended && this.#error === undefined) {
      this.#readable ??= Promise.withResolvers<void>();
      await this.#readable.promise;
    }
  }

  #take(chunk: Uint8Array): void {
    this.#buffered -= chunk.length;
  }

  /** At the end of input: `null`, or the error that ended it (unless we closed it ourselves). */
  #end(): null {
    if (this.#writeError !== undefined) throw this.#writeError;
    if (this.#error !== undefined && !this.#closedHere) throw this.#error;
    return null;
  }

  /** Reads the next chunk; see {@linkcode Transport.read}. */
  async read(): Promise<Uint8Array | null> {
    await this.#ready();
    const chunk = this.#chunks.shift();
    if (chunk === undefined) return this.#end();
    this.#take(chunk);
    return chunk;
  }

  /** Reads into `p`, keeping what does not fit for the next read (as `TcpTransport.readInto`). */
  async readInto(p: Uint8Array): Promise<number | null> {
    await this.#ready();
    const chunk = this.#chunks[0];
    if (chunk === undefined) return this.#end();
    const count = Math.min(p.length, chunk.length);
    p.set(chunk.subarray(0, count));
    if (count === chunk.length) this.#chunks.shift();
    else this.#chunks[0] = chunk.subarray(count);
    this.#take(chunk.subarray(0, count));
    return count;
  }

  /** Queues bytes; see {@linkcode Transport.write}. */
  write(bytes: Uint8Array): Promise<void> | undefined {
    if (this.#writeError !== undefined) throw this.#writeError;
    if (this.#closed || this.#closedHere) {
      throw new Deno.errors.BadResource("Cannot write: the connection is closed");
    }
    if (bytes.length === 0) return undefined;
    // Messages sent in one turn of the event loop leave in one TLS record and one system call.
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      queueMicrotask(() => {
        this.#corked = false;
        this.#socket.uncork();
      });
    }
    // The socket holds the bytes until they are written; then their memory is free again.
    this.#unwritten++;
    this.#socket.write(bytes, (error?: Error | null) => {
      if (!error) recycle(bytes);
      if (--this.#unwritten === 0) this.#wakeFlushWaiters();
    });
    if (this.#socket.writableLength > this.#maxQueuedBytes) {
      const error = new Deno.errors.WriteZero(
        `Cannot write: the peer does not read what is sent (more than ${this.#maxQueuedBytes} bytes queued, limit maxLinkQueueBytes)`,
      );
      this.#writeError = error;
      this.abort();
      throw error;
    }
    return this.backpressure();
  }

  /** See {@linkcode Transport.backpressure}. */
  backpressure(): Promise<void> | undefined {
    if (this.#closed || this.#socket.writableLength <= this.#highWaterMark) return undefined;
    this.#drained ??= Promise.withResolvers<void>();
    return this.#drained.promise;
  }

  #wakeFlushWaiters(): void {
    for (const wake of this.#flushWaiters.splice(0)) wake();
  }

  /** Waits until what is queued is written, or the socket is gone. */
  #flushed(): Promise<void> {
    if (this.#closed || this.#unwritten === 0) return Promise.resolve();
    return Promise.race([
      new Promise<void>((resolve) => this.#flushWaiters.push(resolve)),
      this.#gone.promise,
    ]);
  }

  /** Writes what is queued, then shuts down the write side. */
  async closeWrite(): Promise<void> {
    await this.#flushed();
    if (!this.#closed) this.#socket.end();
  }

  /** See {@linkcode Transport.finish}. */
  async finish(grace: number): Promise<void> {
    await this.#flushed();
    if (this.#closed || this.#finishTimer !== undefined) return;
    if (this.#ended) {
      this.abort();
      return;
    }
    this.#finishTimer = setTimeout(() => this.abort(), grace);
    this.#socket.end();
  }

  /** Writes what is queued, then closes (with TLS's close_notify, so the peer sees a clean end). */
  async close(): Promise<void> {
    await this.#flushed();
    if (this.#closed || this.#closedHere) return;
    await new Promise<void>((resolve) => {
      this.#socket.end(() => resolve());
      void this.#gone.promise.then(() => resolve());
    });
    this.abort();
  }

  /** Closes at once. */
  abort(): void {
    clearTimeout(this.#finishTimer);
    if (this.#closedHere) return;
    this.#closedHere = true;
    this.#socket.destroy();
    this.#ended = true;
    this.#wake();
    this.#release();
  }

  /** See {@linkcode Transport.ref}. */
  ref(): void {
    this.#socket.ref();
  }

  /** See {@linkcode Transport.unref}. */
  unref(): void {
    this.#socket.unref();
  }
}
