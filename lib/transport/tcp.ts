/**
 * The byte transport under a link: today TCP, later WebSocket. A transport
 * reads chunks and queues writes with a bounded buffer, coalescing small
 * writes into one system call.
 * @module
 */

import { recycle } from "../wire/_frame_pool.ts";
import { BadResource, WriteZero } from "../_platform.ts";

/** The small interface every link transport implements. */
export interface Transport {
  /** The local end's address. */
  readonly localAddr: Deno.NetAddr;
  /** The far end's address. */
  readonly remoteAddr: Deno.NetAddr;
  /** Bytes queued for writing and not yet handed to the operating system. */
  readonly queuedBytes: number;
  /**
   * Whether a small write may wait for the peer's acknowledgement of the one
   * before (Nagle's algorithm, which a WebSocket's socket cannot turn off).
   * Such a link keeps the messages that make the peer answer at once: see
   * extension `close-once`.
   */
  readonly delaysSmallWrites?: boolean;
  /**
   * Reads the next chunk. The returned view is valid only until the next call.
   * @returns The chunk, or `null` at end of input (or after {@linkcode abort}).
   */
  read(): Promise<Uint8Array | null>;
  /**
   * Queues `bytes` for writing; the caller must not change them afterwards.
   * @returns `undefined` while the queue is below its high-water mark, else a
   * promise that resolves once it has drained below it.
   * @throws The write error, once a write has failed.
   */
  write(bytes: Uint8Array): Promise<void> | undefined;
  /**
   * For writers that share the transport and can hold their bytes back (the
   * discover point's session pipes): `undefined` while the queue is below its
   * high-water mark, else the promise {@linkcode write} would return.
   */
  backpressure(): Promise<void> | undefined;
  /**
   * For transports that cannot stop reading (WebSocket, `node:tls`): how many
   * bytes received and not yet read it may hold before it drops the link. A
   * link that agreed on `flow-control` lifts it (credit bounds what the peer
   * may send, and such a link is read without pause); one that did not keeps it.
   */
  limitUnread?(bytes: number): void;
  /**
   * Ends the connection without losing what the peer has not read yet:
   * writes what is queued, shuts down the write side, and closes once the
   * peer has ended its own (a read returns `null`), or after `grace` ms.
   * Closing a connection whose input is not all read would make the kernel
   * reset it, and the peer would lose bytes it had received but not read.
   */
  finish(grace: number): Promise<void>;
  /** Writes what is queued, then closes. */
  close(): Promise<void>;
  /** Closes at once, dropping what is queued. */
  abort(): void;
  /** Makes pending reads keep the process alive (the default). */
  ref(): void;
  /** Makes pending reads not keep the process alive. */
  unref(): void;
}

/** Options of {@linkcode TcpTransport}. */
export interface TcpTransportOptions {
  /** Queued bytes above which `write()` asks the caller to wait. @default {1048576} */
  highWaterMark?: number;
  /**
   * Queued bytes above which the peer is taken to be not reading: the
   * transport is aborted and the write fails. Writers that wait when asked
   * stay far below it; it bounds what a peer can make us queue by sending
   * messages that are answered (Ping, Close) while never reading.
   * @default {Infinity}
   */
  maxQueuedBytes?: number;
}

/**
 * First and smallest read buffer of a link: what an idle link's pending read
 * holds. A link per session (an indirect client's) makes it a cost per session.
 */
const MIN_READ_BYTES = 512;
/** Small reads in a row after which the read buffer halves. */
const SMALL_READS_TO_SHRINK = 16;
const MAX_READ_BYTES = 1024 * 1024;
const COALESCE_BYTES = 256 * 1024;

/**
 * A {@linkcode Transport} over one `Deno.Conn`: TCP, or TLS over TCP. TCP
 * options (no delay, keepalive) are set where the connection has them; a TLS
 * connection should be made over a TCP connection that has them set.
 */
export class TcpTransport implements Transport {
  /** The local end's address. */
  readonly localAddr: Deno.NetAddr;
  /** The far end's address. */
  readonly remoteAddr: Deno.NetAddr;
  readonly #conn: Deno.Conn<Deno.NetAddr>;
  readonly #highWaterMark: number;
  readonly #maxQueuedBytes: number;
  /** Made on the first read(): a socket read into its caller's buffers (a public port's) never needs it. */
  #readBuffer: Uint8Array | undefined;
  /** Reads in a row that used less than an eighth of the read buffer. */
  #smallReads = 0;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #flushing: Promise<void> | undefined;
  #drained: PromiseWithResolvers<void> | undefined;
  #writeError: unknown;
  #closed = false;
  /** A read returned the end of input. */
  #readEnded = false;
  /** Set by finish(): close at the end of input, or when this timer fires. */
  #finishTimer: ReturnType<typeof setTimeout> | undefined;

  /** Wraps `conn`; the transport now owns it. */
  constructor(conn: Deno.Conn<Deno.NetAddr>, options: TcpTransportOptions = {}) {
    this.#conn = conn;
    this.#highWaterMark = options.highWaterMark ?? 1024 * 1024;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? Infinity;
    this.localAddr = conn.localAddr;
    this.remoteAddr = conn.remoteAddr;
    try {
      // A Deno.TlsConn has neither; its TCP connection was set up before TLS started.
      const tcp = conn as Partial<Pick<Deno.TcpConn, "setNoDelay" | "setKeepAlive">>;
      tcp.setNoDelay?.(true);
      tcp.setKeepAlive?.(true);
    } catch {
      // A connection reset before we got here: the first read reports it.
    }
  }

  /** Bytes queued for writing. */
  get queuedBytes(): number {
    return this.#queued;
  }

  /** Reads the next chunk into a buffer that adapts to the traffic. */
  async read(): Promise<Uint8Array | null> {
    const buffer = this.#readBuffer ??= new Uint8Array(MIN_READ_BYTES);
    // Not through readInto(): one async step less per chunk on the links' hot path.
    let count: number | null;
    try {
      count = this.afterRead(await this.readRaw(buffer));
    } catch (error) {
      return this.afterReadFailed(error);
    }
    if (count === null) return null;
    // Grow for bulk transfers, shrink for idle links so thousands of them stay cheap. Shrink only
    // after many small reads in a row: a bulk transfer's reads vary in size, and a buffer that
    // flips between two sizes costs a fresh (zeroed) megabyte every other read.
    if (count === buffer.length && buffer.length < MAX_READ_BYTES) {
      this.#readBuffer = new Uint8Array(buffer.length * 2);
      this.#smallReads = 0;
    } else if (count >= buffer.length / 8) this.#smallReads = 0;
    else if (++this.#smallReads >= SMALL_READS_TO_SHRINK && buffer.length > MIN_READ_BYTES) {
      this.#readBuffer = new Uint8Array(buffer.length / 2);
      this.#smallReads = 0;
    }
    return buffer.subarray(0, count);
  }

  /**
   * Reads into `p`, for a caller that keeps what it reads (no copy from the
   * transport's buffer). The discover point's public-port clients, which sit
   * idle by the thousand, take its three steps themselves: {@linkcode readRaw},
   * then {@linkcode afterRead} or {@linkcode afterReadFailed}.
   * @returns The number of bytes read, or `null` at end of input (or after {@linkcode abort}).
   */
  async readInto(p: Uint8Array): Promise<number | null> {
    try {
      return this.afterRead(await this.readRaw(p));
    } catch (error) {
      return this.afterReadFailed(error);
    }
  }

  /**
   * The socket's own read into `p`, for a caller that holds many idle ones
   * and reads through callbacks: it passes what the read gives to
   * {@linkcode afterRead}, or its error to {@linkcode afterReadFailed}, which is
   * {@linkcode readInto} without an async function around each read.
   */
  readRaw(p: Uint8Array): Promise<number | null> {
    return this.#closed ? Promise.resolve(null) : this.#conn.read(p);
  }

  /** What a {@linkcode readRaw} resolved to: the count, or `null` at the end of input. */
  afterRead(count: number | null): number | null {
    if (count !== null) return count;
    return this.#closed ? this.#endOfInput() : this.#peerEnded();
  }

  /**
   * What a {@linkcode readRaw} rejected with: `null` (the end of input) if this
   * transport was closed meanwhile, else the error again.
   */
  afterReadFailed(error: unknown): null {
    if (this.#closed) return this.#endOfInput();
    throw error;
  }

  /** The peer ended its direction; after finish(), that is the moment to close. */
  #peerEnded(): null {
    this.#readEnded = true;
    if (this.#finishTimer !== undefined) this.abort();
    return null;
  }

  /** After a local close: end of input, unless a failed write closed us (then that error). */
  #endOfInput(): null {
    if (this.#writeError !== undefined) throw this.#writeError;
    return null;
  }

  /** Queues bytes; see {@linkcode Transport.write}. */
  write(bytes: Uint8Array): Promise<void> | undefined {
    if (this.#writeError !== undefined) throw this.#writeError;
    if (this.#closed) throw new BadResource("Cannot write: the connection is closed");
    if (bytes.length === 0) return undefined;
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    if (this.#queued > this.#maxQueuedBytes) {
      const error = new WriteZero(
        `Cannot write: the peer does not read what is sent (more than ${this.#maxQueuedBytes} bytes queued, limit maxLinkQueueBytes)`,
      );
      this.#writeError = error;
      this.abort();
      throw error;
    }
    this.#flushing ??= this.#flush();
    return this.backpressure();
  }

  /** See {@linkcode Transport.backpressure}. */
  backpressure(): Promise<void> | undefined {
    if (this.#queued <= this.#highWaterMark || this.#closed) return undefined;
    this.#drained ??= Promise.withResolvers<void>();
    return this.#drained.promise;
  }

  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const chunk = this.#take();
        let written = 0;
        while (written < chunk.length) {
          written += await this.#conn.write(chunk.subarray(written));
        }
        recycle(chunk);
        this.#queued -= chunk.length;
        if (this.#queued <= this.#highWaterMark) this.#release();
      }
    } catch (error) {
      // The peer is gone or reset. Reading goes on: what it sent before (a Close, say) is still
      // there to be read, and the read side reports the end.
      this.#writeError = error;
      this.#queue = [];
      this.#queued = 0;
      this.#release();
    } finally {
      this.#flushing = undefined;
    }
  }

  /** Takes the next chunk to write, joining small queued chunks into one. */
  #take(): Uint8Array {
    const first = this.#queue[0]!;
    if (this.#queue.length === 1 || first.length >= COALESCE_BYTES) {
      this.#queue.shift();
      return first;
    }
    let count = 0;
    let size = 0;
    for (const chunk of this.#queue) {
      if (count > 0 && size + chunk.length > COALESCE_BYTES) break;
      size += chunk.length;
      count++;
    }
    if (count === 1) return this.#queue.shift()!;
    const joined = new Uint8Array(size);
    let offset = 0;
    for (const chunk of this.#queue.splice(0, count)) {
      joined.set(chunk, offset);
      offset += chunk.length;
      recycle(chunk);
    }
    return joined;
  }

  #release(): void {
    const drained = this.#drained;
    this.#drained = undefined;
    drained?.resolve();
  }

  async #drain(): Promise<void> {
    while (this.#flushing) await this.#flushing;
  }

  /** Writes what is queued, then shuts down the write side. */
  async closeWrite(): Promise<void> {
    await this.#drain();
    if (this.#closed || this.#writeError !== undefined) return;
    try {
      await this.#conn.closeWrite();
    } catch {
      // The peer is already gone; the read side reports it.
    }
  }

  /** See {@linkcode Transport.finish}. */
  async finish(grace: number): Promise<void> {
    await this.#drain();
    if (this.#closed || this.#finishTimer !== undefined) return;
    if (this.#readEnded || this.#writeError !== undefined) {
      this.abort();
      return;
    }
    this.#finishTimer = setTimeout(() => this.abort(), grace);
    try {
      await this.#conn.closeWrite();
    } catch {
      this.abort();
    }
  }

  /** Writes what is queued, then closes. */
  async close(): Promise<void> {
    await this.#drain();
    this.abort();
  }

  /** Closes at once. */
  abort(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#finishTimer);
    // What is queued will never be written: let it go now, not when the transport is collected.
    this.#queue = [];
    if (this.#flushing === undefined) this.#queued = 0;
    this.#release();
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime after an error.
    }
  }

  /** See {@linkcode Transport.ref}. */
  ref(): void {
    this.#conn.ref();
  }

  /** See {@linkcode Transport.unref}. */
  unref(): void {
    this.#conn.unref();
  }
}

/**
 * Parses `"host:port"` (or `"[v6]:port"`) into connect options.
 * @throws {TypeError} If the address has no port or a bad one.
 */
export function parseAddress(address: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(address.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new TypeError(`Cannot parse address "${address}": expected "host:port"`);
  }
  return { hostname: match[1] ?? (match[2] || "127.0.0.1"), port };
}

/** Formats a network address as `"host:port"` (IPv6 in brackets). */
export function formatAddress(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":")
    ? `[${addr.hostname}]:${addr.port}`
    : `${addr.hostname}:${addr.port}`;
}
