/**
 * One tunnelled session at an end (indirect server or client): its state,
 * the peer's bytes waiting to be read, and the `Deno.Conn` surface over them.
 * @module
 */

import { recycle } from "../wire/_frame_pool.ts";
import { FrameReader } from "../transport/_frame_reader.ts";
import { ConnectionReset, Interrupted } from "../_platform.ts";
import { SessionClosedError } from "../errors.ts";
import { ReceiveWindow, SendCredit } from "../link/flow.ts";
import { type Message, MessageType } from "../wire/message.ts";
import type { IndirectConn } from "./types.ts";

/**
 * Bytes of the peer's that a session holds unread before the link stops
 * reading for it (without the `flow-control` extension; with it, the window
 * bounds them).
 */
export const READ_HIGH_WATER_MARK = 256 * 1024;

/** What a session needs from the link that carries it. */
export interface SessionCarrier {
  /** Sends a message on the link; see `Link.send`. */
  send(message: Message): Promise<void> | undefined;
  /** Whether both ends agreed on the `half-close` extension. */
  readonly halfClose: boolean;
  /** Whether both ends agreed on the `flow-control` extension. */
  readonly flowControl: boolean;
  /**
   * Whether a Close this end sends is final (a server's link that agreed on
   * `close-once`): the session ends as it is sent, with no answer to wait for.
   */
  readonly closeOnce?: boolean;
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
 * Told how a pump started by {@linkcode IndirectSession.pumpFrom} or
 * {@linkcode IndirectSession.pumpTo} goes; the `direction` number its caller
 * gave tells two pumps apart. One listener can serve both directions of a
 * forwarded session, so an idle session holds no promise and no callback per
 * direction. It is never called before `pumpFrom` or `pumpTo` returns.
 */
export interface PumpListener {
  /** `bytes` more went through. */
  pumped(direction: number, bytes: number): void;
  /** The pump is over: its source ended (`pumpFrom`), or the peer's stream did (`pumpTo`). */
  pumpEnded(direction: number, total: number): void;
  /** The pump stopped on `error`; see `readFrom` and `writeTo` for which. */
  pumpFailed(direction: number, error: unknown): void;
}

/**
 * `open`: both directions may flow; `closing`: we sent Close and wait for the
 * discover point's answer (none comes with `close-once`: the session goes
 * straight to `closed`); `closed`: done, the number is free.
 */
type SessionState = "open" | "closing" | "closed";

const NEXT: Record<SessionState, readonly SessionState[]> = {
  open: ["closing", "closed"],
  closing: ["closed"],
  closed: [],
};

/** Addresses of an {@linkcode IndirectSession}. */
export interface IndirectConnAddresses {
  /** Local end of the link that carries the session. */
  localAddr: Deno.NetAddr;
  /** The far end: the client as the discover point saw it, or the discover point. */
  remoteAddr: Deno.NetAddr;
  /** On a server: the key the client proved to the discover point, if any. */
  clientKey?: string | undefined;
}

/**
 * The session behind an {@linkcode IndirectConn}: the link's mux feeds it
 * (`deliver`, `endedByPeer`, `closedByPeer`, `credited`, `abort`), the
 * application uses the `IndirectConn` surface.
 *
 * The peer's bytes wait in one queue, the inbox, that every way of reading
 * takes from in turn: `read()`, the `readable` stream (created on first use,
 * it holds nothing itself), and `writeTo()`. So, as on a `Deno.TcpConn`, none
 * of them locks out the others. Writes go out one after another, whole,
 * whether they come from `write()` or from the `writable` stream.
 */
export class IndirectSession implements IndirectConn {
  /** The session number (`X`) the indirect server assigned. */
  readonly sessionId: number;
  /** Local end of the link that carries the session. */
  readonly localAddr: Deno.NetAddr;
  /** The far end: the client as the discover point saw it, or the discover point. */
  readonly remoteAddr: Deno.NetAddr;
  /** On an indirect server: the key the client proved, or `undefined`. */
  readonly clientKey: string | undefined;
  /** Resolves once the session has ended, whichever way. */
  readonly closed: Promise<void>;

  readonly #carrier: SessionCarrier;
  readonly #ended = Promise.withResolvers<void>();
  #state: SessionState = "open";
  /** Whether `close()` (or dispose) was called: reads and writes fail with BadResource. */
  #closedByUser = false;
  /**
   * What a write fails with once the session is no longer open: the error, or
   * the message of a SessionClosedError made only if a write does fail (an
   * error costs a stack trace, and most sessions end without one).
   */
  #failure: Error | string | undefined;
  #writeEnded = false;
  #sentEnd = false;
  /** With `flow-control`: what we may receive, and what we may send. */
  readonly #window: ReceiveWindow | undefined;
  readonly #credit: SendCredit | undefined;

  // The read side.
  /** The peer's bytes not yet read, in order; the first may be partly read. */
  readonly #inbox: Uint8Array<ArrayBuffer>[] = [];
  #inboxBytes = 0;
  /** No more bytes will arrive: the peer ended its direction, or the session ended. */
  #readEnded = false;
  /** Why reading fails, once it does: the link broke, or this end closed the session. */
  #readError: Error | undefined;
  /** This end closed the session: reads fail with a SessionClosedError, made when one does. */
  #readClosed = false;
  /** Closed with a reason before the peer's End: reading fails with this once the inbox is read. */
  #cut: Error | undefined;
  /** Whether this end closed the session while reads may have waited: they fail with Interrupted. */
  #stopped = false;
  /** Wakes `read()` and `writeTo()` calls that wait for bytes or the end. */
  readonly #takers: (() => void)[] = [];
  /** Bytes in the sink's write that {@linkcode writeTo} is waiting for. */
  #sinkBytes = 0;
  /** The writeTo() under way, if any. */
  #forward: Forward | undefined;
  /** Bytes delivered so far, and how many of those were reported consumed (flow control). */
  #delivered = 0;
  #reported = 0;
  /** Without flow control: settles once the reader has caught up, to let the link read on. */
  #hold: PromiseWithResolvers<void> | undefined;
  #readable: ReadableStream<Uint8Array<ArrayBuffer>> | undefined;
  #controller: ReadableByteStreamController | undefined;
  /** The readable asked for bytes that were not there yet. */
  #streamWants = false;
  /** The readable is closed, errored or cancelled. */
  #streamDone = false;

  // The write side.
  #writable: WritableStream<Uint8Array> | undefined;
  /** Writes queued or in progress, and the settling of the last one (the next one starts after it). */
  #writesPending = 0;
  #lastWrite: Promise<void> | undefined;

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
  }

  /**
   * Bytes from the peer, as a byte stream that takes from the same queue as
   * `read()`. Cancelling it closes the session; its end does not.
   */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    return this.#readable ??= new ReadableStream({
      type: "bytes",
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => this.#pull(),
      cancel: () => {
        this.#streamDone = true;
        this.#closeWith("");
      },
    }, { highWaterMark: 0 });
  }

  /** Bytes to the peer, in turn with `write()`. Closing it is `closeWrite()`; aborting it closes the session. */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= new WritableStream<Uint8Array>({
      write: (chunk) => this.#queueWrite(chunk),
      close: () => this.#endWrite(),
      // As Deno closes its connection (the peer reads EOF): the abort's reason stays here.
      abort: () => this.#closeWith(""),
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
      this.#release();
      this.#credit?.cancel();
      this.#carrier.release(this.sessionId);
      this.#ended.resolve();
    }
  }

  // ---- messages from the link -------------------------------------------

  /**
   * Delivers the peer's bytes (which the session now owns).
   * @returns A promise to await before delivering more when the reader is behind.
   */
  deliver(bytes: Uint8Array<ArrayBuffer>): Promise<void> | undefined {
    this.#window?.received(bytes.length);
    this.#delivered += bytes.length;
    if (bytes.length === 0) return undefined;
    if (this.#state !== "open" || this.#readEnded) {
      this.#consumed(); // Nobody will read these: consumed at once.
      return undefined;
    }
    this.#inbox.push(bytes);
    this.#inboxBytes += bytes.length;
    if (this.#streamWants) this.#feedStream();
    this.#wakeTakers();
    // With flow control the window bounds the inbox: never hold the link.
    if (this.#window || this.#inboxBytes + this.#sinkBytes <= READ_HIGH_WATER_MARK) {
      return undefined;
    }
    this.#hold ??= Promise.withResolvers<void>();
    return this.#hold.promise;
  }

  /** The peer granted `bytes` more credit. */
  credited(bytes: number): void {
    this.#credit?.add(bytes);
  }

  /** The peer sent End: its direction is finished. */
  endedByPeer(): void {
    if (this.#state !== "open") return;
    this.#endInput();
    if (this.#sentEnd) this.#sendClose("");
  }

  /** The peer sent Close, or the discover point answered ours. */
  closedByPeer(reason: string): void {
    if (this.#state === "closed") return;
    this.#failure ??= `Cannot write to session ${this.sessionId}: the peer closed it${
      reason ? `: ${reason}` : ""
    }`;
    if (reason === "" || this.#readEnded || !this.#carrier.halfClose) this.#endInput();
    else {
      // Cut short (a lost server link, a limit): what arrived stays readable, and then reading
      // fails with the reason instead of ending, so a cut stream never passes for a whole one.
      // Only where half-close is agreed: there a whole stream ends with End, and a reason means
      // trouble; a peer of Parts 1 and 2 may give a reason to any Close.
      this.#cut = new ConnectionReset(`Session ${this.sessionId} was cut short: ${reason}`);
      if (this.#inboxBytes === 0) this.#failInput(this.#cut);
      else this.#wakeTakers();
    }
    this.#moveTo("closed");
  }

  /** The inbox is read and the session was cut: reading fails from now on. */
  #failIfCut(): void {
    if (this.#cut !== undefined && this.#inboxBytes === 0) this.#failInput(this.#cut);
  }

  /**
   * The link broke: writes fail with `error`, and so do reads (unread bytes
   * are dropped) unless the peer had ended its direction already.
   */
  abort(error: Error): void {
    if (this.#state === "closed") return;
    this.#failure ??= error;
    if (!this.#readEnded) this.#failInput(error);
    this.#moveTo("closed");
  }

  // ---- the read side ------------------------------------------------------

  /** Bytes left the inbox (read, forwarded or dropped): credit may go back, the link may read on. */
  #consumed(): void {
    if (this.#window) this.#returnCredit();
    else if (this.#inboxBytes + this.#sinkBytes <= READ_HIGH_WATER_MARK) this.#release();
  }

  /** Lets a held link read on. */
  #release(): void {
    const hold = this.#hold;
    this.#hold = undefined;
    hold?.resolve();
  }

  /** Reports consumption to the flow-control window and sends the credit it returns. */
  #returnCredit(): void {
    if (this.#window === undefined || this.#state !== "open") return;
    const total = this.#delivered - this.#inboxBytes - this.#sinkBytes;
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

  #wakeTakers(): void {
    this.#forwardNext();
    const takers = this.#takers;
    // A woken call goes on in a later microtask, so the list cannot change under this loop.
    for (let i = 0; i < takers.length; i++) takers[i]!();
    takers.length = 0;
  }

  /** Resolves when bytes arrive or reading ends. */
  #input(): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#takers.push(resolve);
    return promise;
  }

  /** Takes `count` bytes off the front of the inbox's first chunk. */
  #take(count: number): void {
    const head = this.#inbox[0]!;
    this.#inboxBytes -= count;
    if (count === head.length) this.#inbox.shift();
    else this.#inbox[0] = head.subarray(count);
  }

  /** No more bytes will come; those in the inbox stay readable, then the end. */
  #endInput(): void {
    if (this.#readEnded) return;
    this.#readEnded = true;
    if (this.#streamWants && this.#inboxBytes === 0) this.#closeStream();
    this.#wakeTakers();
  }

  /** Reading fails with `error` from now on: unread bytes are dropped. */
  #failInput(error: Error, streamError: Error = error): void {
    if (this.#readError || this.#readClosed) return;
    this.#readEnded = true;
    this.#readError = error;
    this.#inbox.length = 0;
    this.#inboxBytes = 0;
    this.#consumed();
    if (this.#controller && !this.#streamDone) {
      this.#streamDone = true;
      this.#streamWants = false;
      this.#controller.error(streamError);
    }
    this.#wakeTakers();
  }

  /**
   * This end closed the session: reads from now on fail with BadResource,
   * and those waiting now with Interrupted, as on a `Deno.Conn`.
   */
  #stopInput(): void {
    if (this.#readError || this.#readClosed) return;
    this.#stopped = true;
    if (this.#controller && !this.#streamDone) {
      const closed = this.#closedForReading();
      this.#failInput(closed, this.#streamWants ? this.#interrupted("reading") : closed);
      return;
    }
    // No stream to error: the error is made only if a read comes (an error costs a stack trace).
    this.#readClosed = true;
    this.#readEnded = true;
    this.#inbox.length = 0;
    this.#inboxBytes = 0;
    this.#consumed();
    this.#wakeTakers();
  }

  #closedForReading(): Error {
    return new SessionClosedError(`Cannot read from session ${this.sessionId}: it was closed`);
  }

  #interrupted(what: string): Error {
    return new Interrupted(`Stopped ${what} session ${this.sessionId}: it was closed`);
  }

  /** The readable wants bytes. */
  #pull(): void {
    if (this.#inboxBytes > 0) this.#feedStream();
    else if (this.#cut !== undefined && this.#readError === undefined) this.#failInput(this.#cut);
    else if (this.#readError || this.#readClosed) {
      this.#streamDone = true;
      this.#controller!.error(this.#readError ?? this.#closedForReading());
    } else if (this.#readEnded) this.#closeStream();
    else this.#streamWants = true;
  }

  /** Hands the readable's pending read the inbox's first chunk (or what its buffer holds of it). */
  #feedStream(): void {
    const controller = this.#controller!;
    const head = this.#inbox[0]!;
    this.#streamWants = false;
    const request = controller.byobRequest;
    if (request?.view) {
      const view = request.view;
      const count = Math.min(view.byteLength, head.length);
      new Uint8Array(view.buffer, view.byteOffset, count).set(head.subarray(0, count));
      this.#take(count);
      request.respond(count);
    } else {
      this.#take(head.length);
      controller.enqueue(head); // Handed over whole: no copy.
    }
    this.#consumed();
  }

  #closeStream(): void {
    this.#streamWants = false;
    this.#streamDone = true;
    const controller = this.#controller!;
    controller.close();
    // A BYOB reader may be parked on a request that close() cannot answer.
    controller.byobRequest?.respond(0);
  }

  /**
   * Reads into `p`.
   * @returns The number of bytes read, or `null` at end of stream.
   */
  async read(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return 0;
    for (;;) {
      if (this.#closedByUser) {
        throw new SessionClosedError(`Cannot read from session ${this.sessionId}: it was closed`);
      }
      const head = this.#inbox[0];
      if (head !== undefined) {
        const count = Math.min(p.length, head.length);
        p.set(count === head.length ? head : head.subarray(0, count));
        this.#take(count);
        // The chunk was ours alone and is copied out: its memory serves again.
        if (count === head.length) recycle(head);
        this.#consumed();
        return count;
      }
      this.#failIfCut();
      if (this.#readError) throw this.#readError;
      if (this.#readClosed) throw this.#closedForReading();
      if (this.#readEnded) return null;
      await this.#input();
      if (this.#stopped) throw this.#interrupted("reading");
    }
  }

  /**
   * Writes everything the peer sends to `sink` until the end of the stream,
   * without copying it first. For forwarders; like Go's `io.WriterTo`. The
   * sink must be done with the bytes once its `write()` resolves, as a
   * `Deno.Conn` is. If the sink fails, the chunks after the one it failed on
   * stay readable. One `writeTo()` at a time.
   *
   * Not a loop that waits for bytes: the bytes the link delivers go to the
   * sink at once, in the same turn, and an idle session holds no pending
   * promise here.
   * @param sink Where the bytes go, e.g. a `Deno.TcpConn`.
   * @param progress Called with the size of each piece written.
   * @returns The number of bytes written.
   * @throws {TypeError} While another `writeTo()` is under way.
   */
  writeTo(
    sink: { write(p: Uint8Array): Promise<number> },
    progress?: (bytes: number) => void,
  ): Promise<number> {
    const outcome = new PumpOutcome(progress);
    this.pumpTo(sink, outcome, 0);
    return outcome.promise;
  }

  /**
   * {@linkcode writeTo}, reporting to `listener` rather than through a promise
   * and a callback: for forwarders that hold many idle sessions.
   * @param sink Where the bytes go, e.g. a `Deno.TcpConn`.
   * @param listener Told of each piece written, and of the end.
   * @param direction Passed back to `listener` with every call.
   */
  pumpTo(
    sink: { write(p: Uint8Array): Promise<number> },
    listener: PumpListener,
    direction: number,
  ): void {
    let refusal: Error | undefined;
    if (this.#closedByUser) refusal = this.#closedForReading();
    else if (this.#forward !== undefined) {
      refusal = new TypeError(`Session ${this.sessionId} is already being written out`);
    }
    if (refusal !== undefined) {
      queueMicrotask(() => listener.pumpFailed(direction, refusal));
      return;
    }
    this.#forward = new Forward(
      sink,
      listener,
      direction,
      (count) => this.#sinkWrote(count),
      (error) => this.#sinkFailed(error),
    );
    // Later, so that the listener hears nothing before this returns.
    queueMicrotask(() => this.#forwardNext());
  }

  /** Hands the sink the next chunk, or settles writeTo() at the end; nothing while a write is under way. */
  #forwardNext(): void {
    const forward = this.#forward;
    if (forward === undefined || forward.writing !== undefined) return;
    const chunk = this.#inbox.shift();
    if (chunk === undefined) {
      this.#failIfCut(); // Which may settle this forward already, through #wakeTakers().
      if (this.#forward !== forward) return;
      let error: Error | undefined;
      if (this.#closedByUser && !this.#stopped) error = this.#closedForReading();
      else if (this.#stopped) error = this.#interrupted("reading");
      else if (this.#readError) error = this.#readError;
      else if (this.#readClosed) error = this.#closedForReading();
      else if (!this.#readEnded) return; // Waits: deliver() and the end come back here.
      this.#forward = undefined;
      if (error) forward.listener.pumpFailed(forward.direction, error);
      else forward.listener.pumpEnded(forward.direction, forward.total);
      return;
    }
    // Bytes count as consumed once the sink has them.
    this.#inboxBytes -= chunk.length;
    this.#sinkBytes += chunk.length;
    forward.writing = chunk;
    forward.written = 0;
    forward.sink.write(chunk).then(forward.onWrote, forward.onFailed);
  }

  #sinkWrote(count: number): void {
    const forward = this.#forward!;
    const chunk = forward.writing!;
    forward.written += count;
    if (forward.written < chunk.length) {
      forward.sink.write(chunk.subarray(forward.written)).then(forward.onWrote, forward.onFailed);
      return;
    }
    forward.writing = undefined;
    this.#sinkBytes -= chunk.length;
    forward.total += chunk.length;
    forward.listener.pumped(forward.direction, chunk.length);
    this.#consumed();
    // The chunk was ours alone (deliver hands its buffer over): its memory serves again.
    recycle(chunk);
    this.#forwardNext();
  }

  #sinkFailed(error: unknown): void {
    const forward = this.#forward!;
    const chunk = forward.writing!;
    forward.writing = undefined;
    // The chunk the sink failed on is dropped (it counts as consumed); those after it stay readable.
    this.#sinkBytes -= chunk.length;
    this.#forward = undefined;
    forward.listener.pumpFailed(forward.direction, error);
  }

  // ---- the write side -----------------------------------------------------

  /** Sends `chunk` after the writes before it. */
  #queueWrite(chunk: Uint8Array): Promise<void> {
    const write = this.#writesPending === 0
      ? this.#write(chunk)
      : this.#lastWrite!.then(() => this.#write(chunk));
    this.#writesPending++;
    const settle = () => {
      // Nothing left to wait for: an idle session holds no settled promise.
      if (--this.#writesPending === 0) this.#lastWrite = undefined;
    };
    this.#lastWrite = write.then(settle, settle);
    return write;
  }

  async #write(chunk: Uint8Array): Promise<void> {
    this.#checkWritable();
    let offset = 0;
    while (offset < chunk.length) {
      let size = Math.min(chunk.length - offset, this.#carrier.maxDataBytes);
      const credit = this.#credit;
      if (credit) {
        if (credit.available <= 0) {
          await credit.wait();
          this.#checkStillWritable();
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
      if (full) {
        await full;
        if (offset < chunk.length) this.#checkStillWritable();
      }
    }
  }

  /** Throws what a write fails with now, if it does. */
  #checkWritable(): void {
    if (this.#closedByUser) {
      throw new SessionClosedError(`Cannot write to session ${this.sessionId}: it was closed`);
    }
    if (this.#state !== "open") {
      const failure = this.#failure ?? `Cannot write to session ${this.sessionId}: it is closed`;
      throw typeof failure === "string" ? new SessionClosedError(failure) : failure;
    }
    if (this.#writeEnded) {
      throw new SessionClosedError(
        `Cannot write to session ${this.sessionId}: its write side was closed`,
      );
    }
  }

  /** Like {@linkcode checkWritable}, for a write that was under way when `close()` came. */
  #checkStillWritable(): void {
    if (this.#closedByUser) throw this.#interrupted("writing to");
    this.#checkWritable();
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
  readFrom(
    source: { read(p: Uint8Array): Promise<number | null> },
    progress?: (bytes: number) => void,
  ): Promise<number> {
    const outcome = new PumpOutcome(progress);
    this.pumpFrom(source, outcome, 0);
    return outcome.promise;
  }

  /**
   * {@linkcode readFrom}, reporting to `listener` rather than through a
   * promise and a callback: for forwarders that hold many idle sessions. An
   * idle session waits in the source's read alone.
   * @param source Where the bytes come from, e.g. a `Deno.TcpConn`.
   * @param listener Told of each piece sent, and of the end.
   * @param direction Passed back to `listener` with every call.
   */
  pumpFrom(
    source: { read(p: Uint8Array): Promise<number | null> },
    listener: PumpListener,
    direction: number,
  ): void {
    const pull: Pull = new Pull(
      source,
      listener,
      direction,
      new FrameReader(undefined, this.#carrier.maxDataBytes),
      (count) => this.#sourceRead(pull, count),
      (error) => this.#pullEnded(pull, { error }),
      () => this.#pullNext(pull),
    );
    // Later, so that the listener hears nothing before this returns.
    queueMicrotask(pull.next);
  }

  /** Reads the source again, once credit allows. */
  #pullNext(pull: Pull): void {
    try {
      this.#checkWritable();
    } catch (error) {
      return this.#pullEnded(pull, { error });
    }
    const credit = this.#credit;
    if (credit && credit.available <= 0) {
      credit.wait().then(pull.next);
      return;
    }
    pull.limit = credit?.available;
    pull.source.read(pull.reader.view(pull.limit)).then(pull.onRead, pull.onFailed);
  }

  /** The source gave `count` bytes (`null`: its end): send them on, then read again. */
  #sourceRead(pull: Pull, count: number | null): void {
    const content = pull.reader.piece(count, pull.limit);
    if (content === null) return this.#pullEnded(pull);
    try {
      this.#checkWritable();
    } catch (error) {
      return this.#pullEnded(pull, { error });
    }
    this.#credit?.spend(content.length);
    let full: Promise<void> | undefined;
    try {
      // The codec frames the bytes where they lie: the buffer is handed over.
      full = this.#carrier.send({
        type: MessageType.Data,
        sessionId: this.sessionId,
        content,
        owned: true,
      });
    } catch (error) {
      return this.#pullEnded(pull, { error });
    }
    pull.total += content.length;
    pull.listener.pumped(pull.direction, content.length);
    if (full) full.then(pull.next, pull.next);
    else this.#pullNext(pull);
  }

  /** readFrom() is over: at the source's end, or failed with `error`. */
  #pullEnded(pull: Pull, failure?: { error: unknown }): void {
    pull.reader.release();
    if (failure === undefined) pull.listener.pumpEnded(pull.direction, pull.total);
    else pull.listener.pumpFailed(pull.direction, failure.error);
  }

  /**
   * Writes all of `p`, after the writes called before it.
   * @returns `p.length`.
   */
  async write(p: Uint8Array): Promise<number> {
    if (p.length === 0) {
      if (this.#closedByUser) this.#checkWritable();
      return 0;
    }
    await this.#queueWrite(p);
    return p.length;
  }

  /** Ends the write direction (sends End with `half-close`); nothing if it already ended. */
  #endWrite(): void {
    if (this.#state !== "open" || this.#writeEnded) return;
    this.#writeEnded = true;
    if (!this.#carrier.halfClose) return;
    this.#sentEnd = true;
    // The peer has ended its direction too: a Close without a reason says all an End would, in
    // one message less.
    if (this.#readEnded) return this.#sendClose("");
    try {
      this.#carrier.send({ type: MessageType.End, sessionId: this.sessionId });
    } catch {
      // The link is gone; its end closes this session for good.
    }
  }

  /**
   * Ends the write direction. With the `half-close` extension the peer reads
   * EOF while it can still send; without it the peer is not told.
   */
  closeWrite(): Promise<void> {
    if (this.#closedByUser) {
      return Promise.reject(
        new SessionClosedError(`Cannot close session ${this.sessionId} for writing: it was closed`),
      );
    }
    this.#endWrite();
    return Promise.resolve();
  }

  /** Sends Close (the session is then `closing`) unless it already ended. */
  #sendClose(reason: string): void {
    if (this.#state !== "open") return;
    this.#writeEnded = true;
    this.#moveTo("closing");
    this.#credit?.cancel();
    try {
      this.#carrier.send({ type: MessageType.Close, sessionId: this.sessionId, reason });
    } catch {
      // The link is gone; its end closes this session for good.
      return;
    }
    if (this.#carrier.closeOnce) {
      this.#endInput();
      this.#moveTo("closed");
    }
  }

  /** This end closes the session, with `reason` for the peer: reading and writing stop. */
  #closeWith(reason: string): void {
    if (this.#state !== "open") return;
    this.#failure ??= `Cannot use session ${this.sessionId}: it was closed`;
    this.#stopInput();
    this.#sendClose(reason);
  }

  /**
   * Closes the session: sends Close, with `reason` for the peer; reads and
   * writes under way fail with Interrupted, later ones with BadResource.
   * Closing it again does nothing.
   */
  close(reason: string = ""): void {
    if (this.#closedByUser) return;
    this.#closedByUser = true;
    // Reads waiting now are interrupted, also when the session had ended already.
    this.#stopInput();
    this.#closeWith(reason);
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

/** A pump's outcome as a promise, for {@linkcode IndirectSession.readFrom} and `writeTo`. */
class PumpOutcome implements PumpListener {
  readonly #done = Promise.withResolvers<number>();
  readonly #progress: ((bytes: number) => void) | undefined;

  constructor(progress: ((bytes: number) => void) | undefined) {
    this.#progress = progress;
  }

  /** Resolves to the bytes moved in all, or rejects with what stopped the pump. */
  get promise(): Promise<number> {
    return this.#done.promise;
  }

  pumped(_direction: number, bytes: number): void {
    this.#progress?.(bytes);
  }

  pumpEnded(_direction: number, total: number): void {
    this.#done.resolve(total);
  }

  pumpFailed(_direction: number, error: unknown): void {
    this.#done.reject(error);
  }
}

/** A {@linkcode IndirectSession.pumpTo} under way: where the bytes go, and how far it got. */
class Forward {
  /** The chunk being written, and how much of it the sink took. */
  writing: Uint8Array<ArrayBuffer> | undefined;
  written = 0;
  /** Bytes written in all. */
  total = 0;

  constructor(
    readonly sink: { write(p: Uint8Array): Promise<number> },
    readonly listener: PumpListener,
    readonly direction: number,
    readonly onWrote: (count: number) => void,
    readonly onFailed: (error: unknown) => void,
  ) {}
}

/** A {@linkcode IndirectSession.pumpFrom} under way: where the bytes come from, and how far it got. */
class Pull {
  /** The limit of the read under way. */
  limit: number | undefined;
  /** Bytes sent in all. */
  total = 0;

  constructor(
    readonly source: { read(p: Uint8Array): Promise<number | null> },
    readonly listener: PumpListener,
    readonly direction: number,
    readonly reader: FrameReader,
    readonly onRead: (count: number | null) => void,
    readonly onFailed: (error: unknown) => void,
    readonly next: () => void,
  ) {}
}

/** The implementation under its interface's name, for tests that drive a session directly. */
export { IndirectSession as IndirectConn };
