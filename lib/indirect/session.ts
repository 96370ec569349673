/**
 * One tunnelled session at an end (indirect server or client): its state,
 * its streams, and the `Deno.Conn` surface over them.
 * @module
 */

import { recycle } from "../wire/_frame_pool.ts";
import { FrameReader } from "../transport/_frame_reader.ts";
import { SessionClosedError } from "../errors.ts";
import { ReceiveWindow, SendCredit } from "../link/flow.ts";
import { type Message, MessageType } from "../wire/message.ts";

/** Bytes the readable side buffers before the link stops reading for it. */
export const READ_HIGH_WATER_MARK = 256 * 1024;

/** What a session needs from the link that carries it. */
export interface SessionCarrier {
  /** Sends a message on the link; see `Link.send`. */
  send(message: Message): Promise<void> | undefined;
  /** Whether both ends agreed on the `half-close` extension. */
  readonly halfClose: boolean;
  /** Whether both ends agreed on the `flow-control` extension. */
  readonly flowControl: boolean;
  /** Largest Data content to send in one message. */
  readonly maxDataBytes: number;
  /** Largest receive window to grow to, with `flow-control`. */
  readonly maxWindow?: number;
  /** Called once when the session has fully ended and its number may be reused. */
  release(sessionId: number): void;
  /** Makes the link keep the process alive. */
  ref(): void;
  /** Makes the link not keep the process alive. */
  unref(): void;
}

/**
 * `open`: both directions may flow; `closing`: we sent Close and wait for the
 * discover point's answer; `closed`: done, the number is free.
 */
type SessionState = "open" | "closing" | "closed";

const NEXT: Record<SessionState, readonly SessionState[]> = {
  open: ["closing", "closed"],
  closing: ["closed"],
  closed: [],
};

/** Addresses of an {@linkcode IndirectConn}. */
export interface IndirectConnAddresses {
  /** Local end of the link that carries the session. */
  localAddr: Deno.NetAddr;
  /** The far end: the client as the discover point saw it, or the discover point. */
  remoteAddr: Deno.NetAddr;
  /** On a server: the key the client proved to the discover point, if any. */
  clientKey?: string | undefined;
}

/**
 * A connection tunnelled through a discover point, shaped like `Deno.Conn`.
 *
 * The peer's Close ends `readable` (EOF); a lost link errors it with
 * `Deno.errors.ConnectionReset`. Without the `half-close` extension (a peer
 * that speaks the original protocol), `closeWrite()` only ends the local
 * writable: the original protocol cannot tell the peer.
 */
export class IndirectConn implements Deno.Conn<Deno.NetAddr> {
  /** The session number (`X`) the indirect server assigned. */
  readonly sessionId: number;
  /** Local end of the link that carries the session. */
  readonly localAddr: Deno.NetAddr;
  /** The far end: the client as the discover point saw it, or the discover point. */
  readonly remoteAddr: Deno.NetAddr;
  /**
   * On an indirect server: the key (`ed25519:…`) the client proved to the
   * discover point (extension `auth`), or `undefined`. Always `undefined` on a client.
   */
  readonly clientKey: string | undefined;
  /** Bytes from the peer. */
  readonly readable: ReadableStream<Uint8Array<ArrayBuffer>>;
  /** Bytes to the peer; closing it is `closeWrite()`. */
  readonly writable: WritableStream<Uint8Array>;
  /** Resolves once the session has ended, whichever way. */
  readonly closed: Promise<void>;

  readonly #carrier: SessionCarrier;
  readonly #ended = Promise.withResolvers<void>();
  #state: SessionState = "open";
  #controller!: ReadableByteStreamController;
  #readEnded = false;
  #writeEnded = false;
  #sentEnd = false;
  #pullWaiter: PromiseWithResolvers<void> | undefined;
  /** Why the readable failed (it is then errored), once it has. */
  #readError: Error | undefined;
  /**
   * While {@linkcode writeTo} runs: the peer's bytes waiting for it, which
   * bypass the readable (one promise per chunk instead of a stream's machinery).
   */
  #direct: Uint8Array<ArrayBuffer>[] | undefined;
  /** Bytes in `#direct`. */
  #directBytes = 0;
  /** Whether {@linkcode writeTo} runs: bytes count as consumed once its sink has them. */
  #forwarding = false;
  /** Bytes in the sink's write that {@linkcode writeTo} is waiting for. */
  #sinkBytes = 0;
  /** Wakes {@linkcode writeTo} when bytes or the end arrive. */
  #directWaiter: PromiseWithResolvers<void> | undefined;
  #failure: Error | undefined;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #leftover: Uint8Array | undefined;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  /** With `flow-control`: what we may receive, and what we may send. */
  readonly #window: ReceiveWindow | undefined;
  readonly #credit: SendCredit | undefined;
  /** Bytes handed to the readable, and how many of those were reported consumed. */
  #enqueued = 0;
  #reported = 0;

  /** Creates the session; its carrier routes messages for `sessionId` to it. */
  constructor(carrier: SessionCarrier, sessionId: number, addresses: IndirectConnAddresses) {
    this.#carrier = carrier;
    this.sessionId = sessionId;
    this.localAddr = addresses.localAddr;
    this.remoteAddr = addresses.remoteAddr;
    this.clientKey = addresses.clientKey;
    this.closed = this.#ended.promise;
    if (carrier.flowControl) {
      this.#window = new ReceiveWindow(carrier.maxWindow);
      this.#credit = new SendCredit();
    }
    this.readable = new ReadableStream({
      type: "bytes",
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => {
        this.#wake();
        if (!this.#forwarding) this.#returnCredit();
      },
      cancel: () => {
        this.#readEnded = true;
        this.#wake();
        this.#returnCredit(this.#enqueued);
      },
    }, { highWaterMark: READ_HIGH_WATER_MARK });
    this.writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.#write(chunk),
      close: () => this.closeWrite(),
      abort: (reason) =>
        this.#closeWith(reason instanceof Error ? reason.message : "writer aborted"),
    });
  }

  #moveTo(next: SessionState): void {
    if (!NEXT[this.#state].includes(next)) {
      throw new SessionClosedError(
        `Cannot move session ${this.sessionId} from "${this.#state}" to "${next}"`,
      );
    }
    this.#state = next;
    if (next === "closed") {
      this.#wake();
      this.#credit?.cancel();
      this.#carrier.release(this.sessionId);
      this.#ended.resolve();
    }
  }

  #wake(): void {
    const waiter = this.#pullWaiter;
    this.#pullWaiter = undefined;
    waiter?.resolve();
  }

  #wakeWriter(): void {
    const waiter = this.#directWaiter;
    this.#directWaiter = undefined;
    waiter?.resolve();
  }

  /** Bytes in the readable's queue. */
  get #readableQueued(): number {
    return READ_HIGH_WATER_MARK - (this.#controller.desiredSize ?? READ_HIGH_WATER_MARK);
  }

  // ---- messages from the link -------------------------------------------

  /**
   * Delivers the peer's bytes (which the session now owns).
   * @returns A promise to await before delivering more when the reader is behind.
   */
  deliver(bytes: Uint8Array<ArrayBuffer>): Promise<void> | undefined {
    this.#window?.received(bytes.length);
    this.#enqueued += bytes.length;
    if (this.#state !== "open" || this.#readEnded || bytes.length === 0) {
      this.#returnCredit(this.#enqueued); // Nobody will read these: consumed at once.
      return undefined;
    }
    if (this.#direct) {
      this.#direct.push(bytes);
      this.#directBytes += bytes.length;
      this.#wakeWriter();
      if (this.#window || this.#directBytes + this.#sinkBytes <= READ_HIGH_WATER_MARK) {
        return undefined;
      }
      this.#pullWaiter ??= Promise.withResolvers<void>();
      return this.#pullWaiter.promise;
    }
    this.#controller.enqueue(bytes);
    if (this.#window) {
      // The window bounds the buffer: never hold the link. A reader that was waiting took the
      // bytes straight away, which counts as consumed.
      this.#returnCredit();
      return undefined;
    }
    if ((this.#controller.desiredSize ?? 1) > 0) return undefined;
    this.#pullWaiter ??= Promise.withResolvers<void>();
    return this.#pullWaiter.promise;
  }

  /** The peer granted `bytes` more credit. */
  credited(bytes: number): void {
    this.#credit?.add(bytes);
  }

  /**
   * Reports consumption to the flow-control window and sends the credit it returns.
   * @param consumed Total bytes consumed so far; by default, what left the readable's queue.
   */
  #returnCredit(consumed?: number): void {
    if (this.#window === undefined || this.#state !== "open") return;
    const total = consumed ??
      this.#enqueued - this.#readableQueued - this.#directBytes - this.#sinkBytes;
    const delta = total - this.#reported;
    if (delta <= 0) return;
    this.#reported = total;
    const credit = this.#window.consumed(delta);
    if (credit === 0) return;
    try {
      this.#carrier.send({ type: MessageType.Credit, sessionId: this.sessionId, bytes: credit });
    } catch {
      // The link is gone; its end closes this session.
    }
  }

  /** The peer sent End: its direction is finished. */
  endedByPeer(): void {
    if (this.#state !== "open") return;
    this.#endReadable();
    if (this.#sentEnd) this.#closeWith("");
  }

  /** The peer sent Close, or the discover point answered ours. */
  closedByPeer(reason: string): void {
    if (this.#state === "closed") return;
    this.#failure ??= new SessionClosedError(
      `Cannot write to session ${this.sessionId}: the peer closed it${reason ? `: ${reason}` : ""}`,
    );
    this.#endReadable();
    this.#moveTo("closed");
  }

  /** The link broke: both streams fail with `error`. */
  abort(error: Error): void {
    if (this.#state === "closed") return;
    this.#failure ??= error;
    this.#failReadable(error);
    this.#moveTo("closed");
  }

  #endReadable(): void {
    if (this.#readEnded) return;
    this.#readEnded = true;
    this.#controller.close();
    // A BYOB reader may be parked on a request that close() cannot answer.
    this.#controller.byobRequest?.respond(0);
    this.#wakeWriter();
  }

  #failReadable(error: Error): void {
    if (this.#readEnded) return;
    this.#readEnded = true;
    this.#readError = error;
    this.#controller.error(error);
    this.#wakeWriter();
  }

  // ---- the application's side ---------------------------------------------

  async #write(chunk: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      this.#checkWritable();
      let size = Math.min(chunk.length - offset, this.#carrier.maxDataBytes);
      const credit = this.#credit;
      if (credit) {
        if (credit.available <= 0) {
          await credit.wait();
          continue;
        }
        size = Math.min(size, credit.available);
        credit.spend(size);
      }
      const content = chunk.subarray(offset, offset + size);
      offset += size;
      const full = this.#carrier.send({
        type: MessageType.Data,
        sessionId: this.sessionId,
        content,
      });
      if (full) await full;
    }
  }

  #checkWritable(): void {
    if (this.#state !== "open") {
      throw this.#failure ??
        new SessionClosedError(`Cannot write to session ${this.sessionId}: it is closed`);
    }
    if (this.#writeEnded) {
      throw new SessionClosedError(
        `Cannot write to session ${this.sessionId}: its write side was closed`,
      );
    }
  }

  /** Sends Close with `reason` unless the session already ended. */
  #closeWith(reason: string): void {
    if (this.#state !== "open") return;
    this.#failure ??= new SessionClosedError(`Cannot use session ${this.sessionId}: it was closed`);
    this.#writeEnded = true;
    this.#failReadable(this.#failure);
    this.#moveTo("closing");
    try {
      this.#carrier.send({ type: MessageType.Close, sessionId: this.sessionId, reason });
    } catch {
      // The link is gone; its end closes this session for good.
    }
  }

  /**
   * Reads into `p`.
   * @returns The number of bytes read, or `null` at end of stream.
   */
  async read(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return 0;
    let chunk = this.#leftover;
    this.#leftover = undefined;
    if (chunk === undefined) {
      this.#reader ??= this.readable.getReader();
      const result = await this.#reader.read();
      if (result.done) return null;
      chunk = result.value;
    }
    const count = Math.min(p.length, chunk.length);
    p.set(chunk.subarray(0, count));
    if (count < chunk.length) this.#leftover = chunk.subarray(count);
    return count;
  }

  /**
   * Sends what `source` yields until its end (`read()` resolving `null`),
   * reading straight into the buffers that go on the wire: no copy in between
   * (small pieces are copied into small buffers of their own). For forwarders;
   * like Go's `io.ReaderFrom`. It does not end the write direction: call
   * {@linkcode closeWrite} after it.
   * @param source Where the bytes come from, e.g. a `Deno.TcpConn`.
   * @param progress Called with the size of each piece sent.
   * @returns The number of bytes sent.
   * @throws {SessionClosedError} When the session ends first.
   */
  async readFrom(
    source: { read(p: Uint8Array): Promise<number | null> },
    progress?: (bytes: number) => void,
  ): Promise<number> {
    const reader = new FrameReader(source, this.#carrier.maxDataBytes);
    let total = 0;
    try {
      for (;;) {
        this.#checkWritable();
        const credit = this.#credit;
        if (credit && credit.available <= 0) {
          await credit.wait();
          continue;
        }
        const content = await reader.read(credit?.available);
        if (content === null) return total;
        this.#checkWritable();
        credit?.spend(content.length);
        // The codec frames the bytes where they lie: the buffer is handed over.
        const full = this.#carrier.send({
          type: MessageType.Data,
          sessionId: this.sessionId,
          content,
          owned: true,
        });
        total += content.length;
        progress?.(content.length);
        if (full) await full;
      }
    } finally {
      reader.release();
    }
  }

  /**
   * Writes everything the peer sends to `sink` until the end of the stream,
   * without copying it first. For forwarders; like Go's `io.WriterTo`. The
   * sink must be done with the bytes once its `write()` resolves, as a
   * `Deno.Conn` is.
   * @param sink Where the bytes go, e.g. a `Deno.TcpConn`.
   * @param progress Called with the size of each piece written.
   * @returns The number of bytes written.
   */
  async writeTo(
    sink: { write(p: Uint8Array): Promise<number> },
    progress?: (bytes: number) => void,
  ): Promise<number> {
    let total = 0;
    const leftover = this.#leftover;
    this.#leftover = undefined;
    if (leftover) total += await writeFully(sink, leftover, progress);
    const reader = this.#reader ??= this.readable.getReader();
    let direct: Uint8Array<ArrayBuffer>[] | undefined;
    this.#forwarding = true;
    try {
      for (;;) {
        let chunk: Uint8Array | undefined;
        if (direct === undefined && (this.#readEnded || this.#readableQueued > 0)) {
          // What the readable holds already, and an end it has seen, go through it.
          const result = await reader.read();
          if (result.done) return total;
          chunk = result.value;
        } else {
          direct = this.#direct ??= [];
          if (this.#readError) throw this.#readError;
          chunk = direct.shift();
          if (chunk === undefined) {
            if (this.#readEnded) return total;
            this.#directWaiter = Promise.withResolvers<void>();
            await this.#directWaiter.promise;
            continue;
          }
          this.#directBytes -= chunk.length;
        }
        this.#sinkBytes += chunk.length;
        try {
          // Inline rather than writeFully(): one promise less per chunk on the hot path.
          for (let written = 0; written < chunk.length;) {
            written += await sink.write(written === 0 ? chunk : chunk.subarray(written));
          }
        } finally {
          this.#sinkBytes -= chunk.length;
        }
        total += chunk.length;
        progress?.(chunk.length);
        this.#forwarded(chunk);
      }
    } finally {
      this.#forwarding = false;
      this.#direct = undefined;
      // The sink failed: what it did not take stays readable, in order.
      for (const chunk of direct ?? []) {
        this.#directBytes -= chunk.length;
        if (!this.#readEnded) this.#controller.enqueue(chunk);
      }
      reader.releaseLock();
      this.#reader = undefined;
    }
  }

  /**
   * After {@linkcode writeTo} wrote `chunk`: its bytes count as consumed
   * (credit may go back), and its memory serves again, as the chunk was ours
   * alone (the readable hands its buffers over).
   */
  #forwarded(chunk: Uint8Array): void {
    if (this.#window) this.#returnCredit();
    else if (this.#directBytes + this.#sinkBytes <= READ_HIGH_WATER_MARK) this.#wake();
    recycle(chunk);
  }

  /**
   * Writes all of `p`.
   * @returns `p.length`.
   */
  async write(p: Uint8Array): Promise<number> {
    this.#writer ??= this.writable.getWriter();
    await this.#writer.write(p);
    return p.length;
  }

  /**
   * Ends the write direction. With the `half-close` extension the peer reads
   * EOF while it can still send; without it the peer is not told.
   */
  closeWrite(): Promise<void> {
    if (this.#state !== "open" || this.#writeEnded) return Promise.resolve();
    this.#writeEnded = true;
    if (!this.#carrier.halfClose) return Promise.resolve();
    this.#sentEnd = true;
    try {
      this.#carrier.send({ type: MessageType.End, sessionId: this.sessionId });
    } catch {
      // The link is gone; its end closes this session for good.
    }
    if (this.#readEnded) this.#closeWith("");
    return Promise.resolve();
  }

  /** Closes the session: sends Close, and pending reads and writes fail. */
  close(): void {
    this.#closeWith("");
  }

  /** Makes the carrying link keep the process alive. */
  ref(): void {
    this.#carrier.ref();
  }

  /** Makes the carrying link not keep the process alive. */
  unref(): void {
    this.#carrier.unref();
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Writes all of `chunk` to `sink`, then reports its size to `progress`; returns the size. */
async function writeFully(
  sink: { write(p: Uint8Array): Promise<number> },
  chunk: Uint8Array,
  progress: ((bytes: number) => void) | undefined,
): Promise<number> {
  for (let written = 0; written < chunk.length;) {
    written += await sink.write(written === 0 ? chunk : chunk.subarray(written));
  }
  progress?.(chunk.length);
  return chunk.length;
}
