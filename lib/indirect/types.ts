/**
 * What users of `listen()` and `connect()` get: the connection and listener
 * interfaces of the indirect ends. The classes behind them stay internal.
 * @module
 */

/**
 * A connection tunnelled through a discover point: a `Deno.Conn` (and it
 * behaves like Deno's, see the README's API section for the few differences),
 * plus what only a session has.
 *
 * `read()`/`write()` and `readable`/`writable` work together as on a
 * `Deno.TcpConn`: neither locks the other, and a `read()` takes the next bytes
 * even while the user holds a reader. The peer's Close ends `readable` (EOF);
 * a lost link errors it with `Deno.errors.ConnectionReset`. Without the
 * `half-close` extension (a peer that speaks the original protocol),
 * `closeWrite()` only ends the local write side: the original protocol cannot
 * tell the peer.
 */
export interface IndirectConn extends Deno.Conn<Deno.NetAddr> {
  /** The session number (`X`) the indirect server assigned. */
  readonly sessionId: number;
  /** Local end of the link that carries the session. */
  readonly localAddr: Deno.NetAddr;
  /**
   * The far end. On an indirect server: the client's address as the discover
   * point saw it (when the server proves a key), else as the discover point
   * named it. On a client: the discover point.
   */
  readonly remoteAddr: Deno.NetAddr;
  /**
   * On an indirect server: the key (`ed25519:…`) the client proved to the
   * discover point (extension `auth`), or `undefined`. Always `undefined` on a client.
   */
  readonly clientKey: string | undefined;
  /**
   * Bytes from the peer. Cancelling it closes the session, as on a
   * `Deno.Conn`; reaching its end does not (on a `Deno.Conn` it closes the
   * connection), so after the peer's `closeWrite()` this end can still answer.
   */
  readonly readable: ReadableStream<Uint8Array<ArrayBuffer>>;
  /** Bytes to the peer. Closing it is `closeWrite()`; aborting it closes the session. */
  readonly writable: WritableStream<Uint8Array>;
  /** Resolves once the session has ended, whichever way. */
  readonly closed: Promise<void>;

  /**
   * Reads into `p`.
   * @returns The number of bytes read, or `null` at the end of the stream.
   * @throws {SessionClosedError} After `close()` (a `Deno.errors.BadResource`).
   * @throws {Deno.errors.Interrupted} When `close()` comes while it waits.
   * @throws {Deno.errors.ConnectionReset} When the link to the discover point is lost.
   */
  read(p: Uint8Array): Promise<number | null>;

  /**
   * Writes all of `p`. Writes go out in the order they were called, whole.
   * @returns `p.length`.
   * @throws {SessionClosedError} After `close()` or `closeWrite()`, or once the peer closed (a `Deno.errors.BadResource`).
   * @throws {Deno.errors.ConnectionReset} When the link to the discover point is lost.
   */
  write(p: Uint8Array): Promise<number>;

  /**
   * Ends the write direction. With the `half-close` extension the peer reads
   * EOF while it can still send; without it the peer is not told.
   * @throws {Deno.errors.BadResource} After `close()`.
   */
  closeWrite(): Promise<void>;

  /**
   * Closes the session: sends Close; pending reads and writes fail with
   * `Deno.errors.Interrupted`, later ones with `Deno.errors.BadResource`.
   * Closing it again does nothing (unlike `Deno.Conn.close()`, which throws
   * `BadResource`).
   * @param reason Why, for the peer: a session closed with a reason reads as
   * cut short there (with `half-close`, its reads fail with the reason once
   * what arrived is read). Empty, the default, is a normal close.
   */
  close(reason?: string): void;

  /** Makes the carrying link keep the process alive (the default). */
  ref(): void;

  /** Makes the carrying link not keep the process alive. */
  unref(): void;

  /** Same as `close()`. */
  [Symbol.dispose](): void;

  /**
   * Sends what `source` yields until its end (`read()` resolving `null`),
   * reading straight into the buffers that go on the wire: no copy in between
   * (small pieces are copied into small buffers of their own). For forwarders;
   * like Go's `io.ReaderFrom`. It does not end the write direction: call
   * `closeWrite()` after it.
   * @param source Where the bytes come from, e.g. a `Deno.TcpConn`.
   * @param progress Called with the size of each piece sent.
   * @returns The number of bytes sent.
   * @throws {SessionClosedError} When the session ends first.
   */
  readFrom(
    source: { read(p: Uint8Array): Promise<number | null> },
    progress?: (bytes: number) => void,
  ): Promise<number>;

  /**
   * Writes everything the peer sends to `sink` until the end of the stream,
   * without copying it first. For forwarders; like Go's `io.WriterTo`. The
   * sink must be done with the bytes once its `write()` resolves, as a
   * `Deno.Conn` is. If the sink fails, the chunks after the one it failed on
   * stay readable. One `writeTo()` at a time.
   * @param sink Where the bytes go, e.g. a `Deno.TcpConn`.
   * @param progress Called with the size of each piece written.
   * @returns The number of bytes written.
   * @throws {TypeError} While another `writeTo()` is under way.
   */
  writeTo(
    sink: { write(p: Uint8Array): Promise<number> },
    progress?: (bytes: number) => void,
  ): Promise<number>;
}

/**
 * An indirect server's listener: a `Deno.Listener` whose connections are the
 * sessions that clients open to its name through the discover point.
 *
 * Registration runs in the background: a first registration that fails (the
 * discover point unreachable, the version refused) rejects `accept()` and
 * `ready` with that error. After that, lost links are replaced with backoff
 * (unless `reconnect: false`), and `accept()` keeps working. Sessions on a
 * lost link fail with `Deno.errors.ConnectionReset`; others continue.
 * `close()` refuses new sessions and leaves accepted ones open, as TCP does.
 * As with `Deno.Listener`, leaving a `for await` loop over it (`break`,
 * `return`, `throw`) closes it.
 */
export interface IndirectListener extends Deno.Listener<IndirectConn, Deno.NetAddr> {
  /** The (first) discover point's address. */
  readonly addr: Deno.NetAddr;
  /** Resolves once the name is registered on a first link; rejects if that fails. */
  readonly ready: Promise<void>;

  /**
   * Waits for the next session.
   * @throws The registration error (e.g. `DiscoverPointUnreachableError`, `VersionMismatchError`).
   * @throws {Deno.errors.BadResource} Once the listener is closed.
   */
  accept(): Promise<IndirectConn>;

  /**
   * Stops accepting: pending `accept()` calls reject with
   * `Deno.errors.BadResource`, sessions not yet accepted are closed, new
   * Connects are refused, and each link closes once the sessions already
   * accepted on it have ended. Closing it again does nothing.
   */
  close(): void;

  /** Makes the listener's links keep the process alive (the default). */
  ref(): void;

  /** Makes the listener's links not keep the process alive. */
  unref(): void;

  /**
   * The listener itself, as on `Deno.Listener`: `next()` accepts (done once
   * the listener is closed; the registration error rejects it), and
   * `return()` closes the listener.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<IndirectConn>;

  /** Same as `close()`. */
  [Symbol.dispose](): void;
}
