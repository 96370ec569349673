/**
 * Tests of the forwarding fast paths: `IndirectConn.writeTo` (the peer's bytes
 * straight to a sink, with flow control and backpressure), `IndirectConn.readFrom`
 * and the `FrameReader` under it (a source read into frame-ready buffers), and
 * `TcpTransport.readInto`. Sessions run over a fake carrier that records what
 * they send; sinks and sources are scripted by hand or real TCP sockets.
 * @module
 */

import assert from "node:assert/strict";
import { FrameReader } from "../lib/transport/_frame_reader.ts";
import { DATA_HEADROOM, MAX_BINARY_DATA_BYTES } from "../lib/wire/binary_codec.ts";
import { INITIAL_WINDOW } from "../lib/link/flow.ts";
import { type DataMessage, type Message, MessageType } from "../lib/wire/message.ts";
import {
  IndirectConn,
  READ_HIGH_WATER_MARK,
  type SessionCarrier,
} from "../lib/indirect/session.ts";
import { TcpTransport } from "../lib/transport/tcp.ts";
import { assertNothingArrives, concatBytes, randomBytes } from "./_helpers.ts";

const KiB = 1024;
const SESSION_ID = 7;

// ---- fakes ------------------------------------------------------------------

/** Options of {@linkcode FakeCarrier}. */
interface FakeCarrierOptions {
  flowControl?: boolean;
  maxDataBytes?: number;
  maxWindow?: number;
}

/** A carrier that records every message a session sends and never holds it back. */
class FakeCarrier implements SessionCarrier {
  readonly halfClose = true;
  readonly flowControl: boolean;
  readonly maxDataBytes: number;
  readonly maxWindow: number | undefined;
  readonly sent: Message[] = [];
  readonly released: number[] = [];
  /** Sum of the Data contents sent. */
  dataBytes = 0;
  /** Sum of the Credit messages sent. */
  creditBytes = 0;
  /** Called on every message, after it is recorded (for invariants checked as it happens). */
  onSend: ((message: Message) => void) | undefined;
  #waiters: { done(): boolean; resolve(): void }[] = [];

  constructor(options: FakeCarrierOptions = {}) {
    this.flowControl = options.flowControl ?? false;
    this.maxDataBytes = options.maxDataBytes ?? MAX_BINARY_DATA_BYTES;
    this.maxWindow = options.maxWindow;
  }

  send(message: Message): undefined {
    this.sent.push(message);
    if (message.type === MessageType.Data) this.dataBytes += message.content.length;
    if (message.type === MessageType.Credit) this.creditBytes += message.bytes;
    this.onSend?.(message);
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!waiter.done()) return true;
      waiter.resolve();
      return false;
    });
    return undefined;
  }

  /** The Data messages sent so far. */
  get data(): DataMessage[] {
    return this.sent.filter((message): message is DataMessage => message.type === MessageType.Data);
  }

  /** The Credit amounts sent so far. */
  get credits(): number[] {
    return this.sent.flatMap((message) =>
      message.type === MessageType.Credit ? [message.bytes] : []
    );
  }

  /** Resolves once `done()` holds after some send (or already holds). */
  #until(done: () => boolean): Promise<void> {
    if (done()) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ done, resolve });
    return promise;
  }

  /** Resolves once Credit totalling more than `bytes` has been sent. */
  creditBeyond(bytes: number): Promise<void> {
    return this.#until(() => this.creditBytes > bytes);
  }

  /** Resolves once at least `bytes` of Data have been sent. */
  dataReached(bytes: number): Promise<void> {
    return this.#until(() => this.dataBytes >= bytes);
  }

  release(sessionId: number): void {
    this.released.push(sessionId);
  }

  ref(): void {}

  unref(): void {}
}

const ADDR: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 1 };

function newConn(carrier: SessionCarrier): IndirectConn {
  return new IndirectConn(carrier, SESSION_ID, { localAddr: ADDR, remoteAddr: ADDR });
}

/**
 * A sink whose writes stay pending until the test lets them go: one at a time
 * with {@linkcode resolveNext}, or all from now on with {@linkcode releaseAll}.
 * It copies what it is given (the caller may reuse the memory once a write resolves).
 */
class HeldSink {
  readonly received: Uint8Array[] = [];
  /** Bytes of writes that have resolved. */
  resolvedBytes = 0;
  #pending: { bytes: number; resolve(n: number): void }[] = [];
  #released = false;
  #calls = 0;
  #callWaiters = new Map<number, PromiseWithResolvers<void>>();

  write(p: Uint8Array): Promise<number> {
    this.received.push(p.slice());
    const index = this.#calls++;
    this.#callWaiters.get(index)?.resolve();
    this.#callWaiters.delete(index);
    if (this.#released) {
      this.resolvedBytes += p.length;
      return Promise.resolve(p.length);
    }
    const { promise, resolve } = Promise.withResolvers<number>();
    this.#pending.push({ bytes: p.length, resolve });
    return promise;
  }

  /** Writes called so far. */
  get calls(): number {
    return this.#calls;
  }

  /** Writes still pending. */
  get pending(): number {
    return this.#pending.length;
  }

  /** Resolves once write number `index` (from 0) has been called. */
  called(index: number): Promise<void> {
    if (index < this.#calls) return Promise.resolve();
    let waiter = this.#callWaiters.get(index);
    if (!waiter) {
      waiter = Promise.withResolvers<void>();
      this.#callWaiters.set(index, waiter);
    }
    return waiter.promise;
  }

  /** Lets the oldest pending write resolve with its whole length. */
  resolveNext(): void {
    const write = this.#pending.shift();
    assert.ok(write, "Expected a pending sink write");
    this.resolvedBytes += write.bytes;
    write.resolve(write.bytes);
  }

  /** Lets every pending write and every later one resolve at once. */
  releaseAll(): void {
    this.#released = true;
    while (this.#pending.length > 0) this.resolveNext();
  }
}

/** A source that reads `data` in pieces of at most `piece` bytes, then `null`. */
class BytesSource {
  readonly #data: Uint8Array;
  readonly #piece: number;
  #offset = 0;
  /** The length of every `p` it was asked to fill. */
  readonly requests: number[] = [];

  constructor(data: Uint8Array, piece = Infinity) {
    this.#data = data;
    this.#piece = piece;
  }

  /** Bytes handed out so far. */
  get offset(): number {
    return this.#offset;
  }

  read(p: Uint8Array): Promise<number | null> {
    this.requests.push(p.length);
    if (this.#offset >= this.#data.length) return Promise.resolve(null);
    const count = Math.min(p.length, this.#piece, this.#data.length - this.#offset);
    p.set(this.#data.subarray(this.#offset, this.#offset + count));
    this.#offset += count;
    return Promise.resolve(count);
  }
}

/** A source scripted read by read: each entry is how many bytes to return (`null`: end). */
class ScriptedSource {
  readonly #script: (number | null)[];
  /** Every `p` it was asked to fill. */
  readonly requests: Uint8Array[] = [];
  /** A copy of what each read wrote. */
  readonly written: Uint8Array[] = [];

  constructor(script: (number | null)[]) {
    this.#script = script;
  }

  read(p: Uint8Array): Promise<number | null> {
    this.requests.push(p);
    assert.ok(this.#script.length > 0, "Expected no more reads");
    const count = this.#script.shift()!;
    if (count === null) return Promise.resolve(null);
    const fill = Math.min(count, p.length);
    p.set(randomBytes(fill));
    this.written.push(p.slice(0, fill));
    return Promise.resolve(fill);
  }
}

/** Splits `data` into fresh chunks (of their own buffers) of the given sizes, cycling them. */
function chunksOf(data: Uint8Array, sizes: readonly number[]): Uint8Array<ArrayBuffer>[] {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  for (let offset = 0, i = 0; offset < data.length; i++) {
    const size = sizes[i % sizes.length]!;
    chunks.push(data.slice(offset, offset + size));
    offset += size;
  }
  return chunks;
}

function sum(values: readonly number[]): number {
  return values.reduce((total, value) => total + value, 0);
}

/** Reads a TCP connection to its end in the background; `received(n)` waits for `n` bytes. */
class TcpCollector {
  readonly done: Promise<Uint8Array>;
  readonly #chunks: Uint8Array[] = [];
  #length = 0;
  #waiters: { bytes: number; resolve(): void }[] = [];

  constructor(conn: Deno.Conn) {
    this.done = this.#run(conn);
  }

  async #run(conn: Deno.Conn): Promise<Uint8Array> {
    const buffer = new Uint8Array(64 * KiB);
    for (let count = await conn.read(buffer); count !== null; count = await conn.read(buffer)) {
      this.#chunks.push(buffer.slice(0, count));
      this.#length += count;
      this.#waiters = this.#waiters.filter((waiter) => {
        if (this.#length < waiter.bytes) return true;
        waiter.resolve();
        return false;
      });
    }
    return concatBytes(this.#chunks);
  }

  received(bytes: number): Promise<void> {
    if (this.#length >= bytes) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ bytes, resolve });
    return promise;
  }
}

/** A connected TCP pair on 127.0.0.1; dispose closes all three resources. */
async function tcpPair(): Promise<
  { client: Deno.TcpConn; server: Deno.TcpConn } & Disposable
> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const [client, server] = await Promise.all([
      Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
      listener.accept(),
    ]);
    return {
      client,
      server,
      [Symbol.dispose]() {
        client[Symbol.dispose]();
        server[Symbol.dispose]();
      },
    };
  } finally {
    listener.close();
  }
}

/** Reads `conn` with `read()` until `length` bytes have arrived. */
async function readBytes(conn: IndirectConn, length: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(100 * KiB);
  for (let have = 0; have < length;) {
    const count = await conn.read(buffer);
    assert.notEqual(count, null, `Expected ${length - have} more bytes, got the end`);
    chunks.push(buffer.slice(0, count!));
    have += count!;
  }
  return concatBytes(chunks);
}

// ---- writeTo ----------------------------------------------------------------

Deno.test("writeTo forwards bytes delivered before and after it starts to a TCP socket in order, and the peer's Close ends it", async () => {
  using pair = await tcpPair();
  const collector = new TcpCollector(pair.server);
  const carrier = new FakeCarrier();
  const conn = newConn(carrier);
  const data = randomBytes(1024 * KiB + 12_345);
  const chunks = chunksOf(data, [1, 4096, 50_000, 16 * KiB, 100_003, 7]);
  const early = chunks.slice(0, 3);
  const earlyBytes = sum(early.map((chunk) => chunk.length));
  try {
    for (const chunk of early) assert.equal(conn.deliver(chunk), undefined);
    const progress: number[] = [];
    const forwarding = conn.writeTo(pair.client, (bytes) => progress.push(bytes));
    // Once the socket's peer has the early bytes, writeTo waits for the peer's next ones.
    await collector.received(earlyBytes);
    for (const chunk of chunks.slice(3)) {
      const full = conn.deliver(chunk);
      if (full) await full;
    }
    conn.closedByPeer("");
    const total = await forwarding;
    assert.equal(total, data.length);
    assert.equal(sum(progress), data.length);
    pair.client.close(); // EOF for the collector.
    assert.deepEqual(await collector.done, data);
    assert.deepEqual(carrier.released, [SESSION_ID]);
  } finally {
    pair[Symbol.dispose]();
    await collector.done.catch(() => {});
  }
});

Deno.test("closeWrite() after the peer's End sends one Close without a reason, no End; before it, an End", async () => {
  const carrier = new FakeCarrier();
  const conn = newConn(carrier);
  conn.endedByPeer();
  await conn.closeWrite();
  assert.deepEqual(carrier.sent.map((message) => message.type), [MessageType.Close]);
  assert.deepEqual(carrier.sent[0], { type: MessageType.Close, sessionId: SESSION_ID, reason: "" });

  const other = new FakeCarrier();
  const first = newConn(other);
  await first.closeWrite();
  first.endedByPeer();
  assert.deepEqual(other.sent.map((message) => message.type), [MessageType.End, MessageType.Close]);
});

Deno.test("writeTo returns after the peer's End once everything delivered before it is written", async () => {
  const carrier = new FakeCarrier();
  const conn = newConn(carrier);
  const sink = new HeldSink();
  sink.releaseAll();
  const data = randomBytes(300 * KiB);
  const forwarding = conn.writeTo(sink);
  for (const chunk of chunksOf(data, [64 * KiB])) {
    const full = conn.deliver(chunk);
    if (full) await full;
  }
  conn.endedByPeer();
  assert.equal(await forwarding, data.length);
  assert.deepEqual(concatBytes(sink.received), data);
  conn.close();
});

Deno.test("writeTo with flow control sends no Credit while the sink's write is pending, and Credit once it resolves", async () => {
  // A window that cannot grow: then credit is only ever consumption handed back.
  const carrier = new FakeCarrier({ flowControl: true, maxWindow: INITIAL_WINDOW });
  const conn = newConn(carrier);
  const sink = new HeldSink();
  carrier.onSend = (message) => {
    if (message.type !== MessageType.Credit) return;
    assert.ok(
      carrier.creditBytes <= sink.resolvedBytes,
      `Credit ${carrier.creditBytes} exceeds the ${sink.resolvedBytes} bytes the sink has taken`,
    );
  };
  const quarter = INITIAL_WINDOW / 4;
  const first = randomBytes(quarter);
  const rest = randomBytes(7 * 40 * KiB);
  const chunks = [first.slice(), ...chunksOf(rest, [40 * KiB])];
  let delivered = 0;
  const deliver = (chunk: Uint8Array<ArrayBuffer>) => {
    assert.ok(delivered + chunk.length <= INITIAL_WINDOW + carrier.creditBytes, "test over credit");
    delivered += chunk.length;
    assert.equal(conn.deliver(chunk), undefined, "with flow control deliver never holds the link");
  };
  const progress: number[] = [];
  const forwarding = conn.writeTo(sink, (bytes) => progress.push(bytes));

  // A quarter window: its credit is due as soon as the sink has taken it, and not before.
  deliver(chunks[0]!);
  await sink.called(0);
  await assertNothingArrives(carrier.creditBeyond(0));
  assert.deepEqual(carrier.credits, []);
  sink.resolveNext();
  await carrier.creditBeyond(0);
  assert.deepEqual(carrier.credits, [quarter]);

  // Then one chunk in the sink at a time: the next write starts only after the previous
  // chunk was accounted for, so each write call is a point to look at the credit.
  deliver(chunks[1]!);
  await sink.called(1);
  for (let i = 2; i < chunks.length; i++) {
    deliver(chunks[i]!);
    assert.ok(carrier.creditBytes <= sink.resolvedBytes);
    sink.resolveNext();
    await sink.called(i);
    // Credit is batched, but never more than a quarter window is left unreported.
    assert.ok(carrier.creditBytes <= sink.resolvedBytes);
    assert.ok(
      sink.resolvedBytes - carrier.creditBytes < quarter,
      `${sink.resolvedBytes} consumed but only ${carrier.creditBytes} credited`,
    );
  }
  sink.resolveNext();
  conn.closedByPeer("");
  assert.equal(await forwarding, delivered);
  assert.equal(sum(progress), delivered);
  assert.ok(carrier.creditBytes <= delivered);
  assert.deepEqual(concatBytes(sink.received), concatBytes(chunks));
});

Deno.test({
  name:
    "writeTo with flow control credits bytes queued before it started only once the sink has written them",
  fn: async () => {
    const carrier = new FakeCarrier({ flowControl: true, maxWindow: INITIAL_WINDOW });
    const conn = newConn(carrier);
    const sink = new HeldSink();
    const chunk = randomBytes(INITIAL_WINDOW / 4);
    assert.equal(conn.deliver(chunk.slice()), undefined);
    assert.deepEqual(carrier.credits, [], "nobody has read the queued bytes yet");
    const forwarding = conn.writeTo(sink);
    await sink.called(0);
    await assertNothingArrives(carrier.creditBeyond(0));
    assert.deepEqual(carrier.credits, [], "the sink has not taken the bytes yet");
    sink.releaseAll();
    await carrier.creditBeyond(0);
    assert.deepEqual(carrier.credits, [INITIAL_WINDOW / 4]);
    conn.closedByPeer("");
    assert.equal(await forwarding, chunk.length);
  },
});

Deno.test("writeTo without flow control: deliver() beyond READ_HIGH_WATER_MARK returns a promise that settles only once the sink takes the bytes", async () => {
  assert.equal(READ_HIGH_WATER_MARK, 256 * KiB);
  const carrier = new FakeCarrier();
  const conn = newConn(carrier);
  const sink = new HeldSink();
  const data = randomBytes(READ_HIGH_WATER_MARK + 64 * KiB);
  const chunks = chunksOf(data, [64 * KiB]);
  const forwarding = conn.writeTo(sink);
  assert.equal(conn.deliver(chunks[0]!), undefined);
  await sink.called(0);
  // The sink holds the first chunk; up to READ_HIGH_WATER_MARK in all may wait.
  for (const chunk of chunks.slice(1, -1)) assert.equal(conn.deliver(chunk), undefined);
  const full = conn.deliver(chunks.at(-1)!);
  assert.ok(full instanceof Promise, "deliver() beyond the high-water mark must hold the link");
  await assertNothingArrives(full);
  assert.equal(sink.calls, 1, "the sink is still on its first write");
  sink.releaseAll();
  await full;
  conn.closedByPeer("");
  assert.equal(await forwarding, data.length);
  assert.deepEqual(concatBytes(sink.received), data);
});

Deno.test("writeTo rejects with the link's error when abort() comes while it waits for bytes", async () => {
  const conn = newConn(new FakeCarrier());
  const sink = new HeldSink();
  const forwarding = conn.writeTo(sink);
  const error = new Deno.errors.ConnectionReset("link lost");
  conn.abort(error);
  await assert.rejects(forwarding, (thrown) => thrown === error);
  assert.equal(sink.calls, 0);
});

Deno.test("writeTo rejects with the link's error when abort() comes while the sink's write is pending", async () => {
  const conn = newConn(new FakeCarrier());
  const sink = new HeldSink();
  const forwarding = conn.writeTo(sink);
  conn.deliver(randomBytes(1000).slice());
  conn.deliver(randomBytes(1000).slice());
  await sink.called(0);
  const error = new Deno.errors.ConnectionReset("link lost");
  conn.abort(error);
  sink.releaseAll();
  await assert.rejects(forwarding, (thrown) => thrown === error);
});

Deno.test("writeTo rejects with the link's error when abort() came before it started", async () => {
  const conn = newConn(new FakeCarrier());
  conn.deliver(randomBytes(1000).slice());
  const error = new Deno.errors.ConnectionReset("link lost");
  conn.abort(error);
  await assert.rejects(conn.writeTo(new HeldSink()), (thrown) => thrown === error);
});

/** A sink that takes `accept` writes, then throws `error`. */
function failingSink(accept: number, error: Error) {
  const received: Uint8Array[] = [];
  return {
    received,
    write(p: Uint8Array): Promise<number> {
      if (received.length >= accept) return Promise.reject(error);
      received.push(p.slice());
      return Promise.resolve(p.length);
    },
  };
}

Deno.test("writeTo rejects when the sink throws, and the chunks it had not written stay readable in order via read()", async () => {
  const conn = newConn(new FakeCarrier());
  const error = new Error("sink broke");
  const sink = failingSink(1, error);
  const chunks = chunksOf(randomBytes(200 * KiB), [50 * KiB]);
  const forwarding = conn.writeTo(sink);
  for (const chunk of chunks) assert.equal(conn.deliver(chunk), undefined);
  const expected = concatBytes(chunks.slice(2));
  await assert.rejects(forwarding, (thrown) => thrown === error);
  assert.equal(sink.received.length, 1);
  assert.equal(sink.received[0]!.length, 50 * KiB);
  // What arrives later follows them.
  const later = randomBytes(1000);
  conn.deliver(later.slice());
  assert.deepEqual(
    await readBytes(conn, expected.length + later.length),
    concatBytes([expected, later]),
  );
  conn.closedByPeer("");
  assert.equal(await conn.read(new Uint8Array(10)), null);
});

Deno.test({
  name:
    "writeTo rejects when the sink throws, and the chunks it had not written stay readable via conn.readable",
  fn: async () => {
    const conn = newConn(new FakeCarrier());
    const error = new Error("sink broke");
    const chunks = chunksOf(randomBytes(200 * KiB), [50 * KiB]);
    // Copied now: the readable takes over (detaches) the chunks it is given.
    const expected = concatBytes(chunks.slice(2));
    const forwarding = conn.writeTo(failingSink(1, error));
    for (const chunk of chunks) conn.deliver(chunk);
    await assert.rejects(forwarding, (thrown) => thrown === error);
    const reader = conn.readable.getReader();
    conn.closedByPeer("");
    const got: Uint8Array[] = [];
    for (let r = await reader.read(); !r.done; r = await reader.read()) got.push(r.value);
    assert.deepEqual(concatBytes(got), expected);
  },
});

Deno.test({
  name:
    "writeTo with flow control: after the sink throws, the chunk it dropped still counts as consumed",
  fn: async () => {
    const carrier = new FakeCarrier({ flowControl: true, maxWindow: INITIAL_WINDOW });
    const conn = newConn(carrier);
    const error = new Error("sink broke");
    const quarter = INITIAL_WINDOW / 4;
    const chunks = chunksOf(randomBytes(INITIAL_WINDOW), [quarter]);
    const forwarding = conn.writeTo(failingSink(1, error));
    for (const chunk of chunks) conn.deliver(chunk);
    await assert.rejects(forwarding, (thrown) => thrown === error);
    await readBytes(conn, 2 * quarter);
    // Written, dropped by the failing sink, or read: all of the window is consumed.
    assert.equal(carrier.creditBytes, INITIAL_WINDOW);
    conn.close();
  },
});

// ---- FrameReader ------------------------------------------------------------

/** The first read size these tests give a FrameReader. */
const FIRST_PIECE = 16 * KiB;

/**
 * Asserts that `piece` sits after DATA_HEADROOM free bytes in a small buffer of its own. A
 * small piece is copied out of the read buffer, so that queued small pieces never pin read
 * buffers; its buffer is the smallest of the frame pool's small size classes (64, 256, 1024
 * and 4096 bytes after the headroom) that fits, so at most four times the piece (or 64 bytes).
 */
function assertOwnSmallBuffer(piece: Uint8Array): void {
  assert.equal(piece.byteOffset, DATA_HEADROOM);
  const size = piece.buffer.byteLength;
  assert.ok(size >= DATA_HEADROOM + piece.length);
  assert.ok(
    size <= DATA_HEADROOM + Math.max(4 * piece.length, 64),
    `a ${piece.length}-byte piece pins a ${size}-byte buffer`,
  );
}

Deno.test("FrameReader copies a small read into a small buffer of its own with DATA_HEADROOM free before it", async () => {
  assert.equal(DATA_HEADROOM, 9);
  const source = new ScriptedSource([100, 1, 4095, null]);
  const reader = new FrameReader(source, MAX_BINARY_DATA_BYTES, FIRST_PIECE);
  const pieces: Uint8Array[] = [];
  for (let piece = await reader.read(); piece !== null; piece = await reader.read()) {
    pieces.push(piece);
  }
  assert.deepEqual(pieces.map((piece) => piece.length), [100, 1, 4095]);
  for (const [i, piece] of pieces.entries()) {
    assertOwnSmallBuffer(piece);
    // The bytes are the ones the source wrote, in a buffer other than the read buffer.
    assert.deepEqual(piece, source.written[i]);
    assert.notEqual(piece.buffer, source.requests[i]!.buffer);
  }
  assert.equal(new Set(pieces.map((piece) => piece.buffer)).size, pieces.length);
  // Every read went into the same 16 KiB buffer, after the headroom.
  for (const request of source.requests) {
    assert.equal(request.byteOffset, DATA_HEADROOM);
    assert.equal(request.length, 16 * KiB);
    assert.equal(request.buffer, source.requests[0]!.buffer);
  }
  reader.release();
});

Deno.test("FrameReader hands a large read's buffer over and reads the next piece into a new buffer", async () => {
  const source = new ScriptedSource([8 * KiB, 4 * KiB, 16 * KiB, null]);
  const reader = new FrameReader(source, MAX_BINARY_DATA_BYTES, FIRST_PIECE);
  const first = await reader.read();
  const second = await reader.read();
  const third = await reader.read();
  assert.ok(first && second && third);
  assert.deepEqual([first.length, second.length, third.length], [8 * KiB, 4 * KiB, 16 * KiB]);
  const requests = source.requests;
  for (const [i, piece] of [first, second, third].entries()) {
    assert.equal(piece.byteOffset, DATA_HEADROOM);
    assert.equal(piece.buffer, requests[i]!.buffer, "a large piece is the read buffer itself");
    assert.equal(requests[i]!.byteOffset, DATA_HEADROOM);
  }
  assert.equal(new Set(requests.map((request) => request.buffer)).size, requests.length);
  assert.equal(await reader.read(), null);
  // The full 16 KiB read doubled the read size.
  assert.deepEqual(requests.map((request) => request.length), [
    16 * KiB,
    16 * KiB,
    16 * KiB,
    32 * KiB,
  ]);
  reader.release();
});

Deno.test("FrameReader doubles its read size while reads fill it, up to maxPiece and never beyond", async () => {
  for (const maxPiece of [MAX_BINARY_DATA_BYTES, 100_000, 10_000]) {
    const source = new BytesSource(randomBytes(2 * 1024 * KiB));
    const reader = new FrameReader(source, maxPiece, FIRST_PIECE);
    const sizes: number[] = [];
    for (let piece = await reader.read(); piece !== null; piece = await reader.read()) {
      assert.equal(piece.byteOffset, DATA_HEADROOM);
      sizes.push(piece.length);
    }
    assert.equal(sum(sizes), 2 * 1024 * KiB);
    assert.ok(Math.max(...source.requests) <= maxPiece, `maxPiece ${maxPiece}`);
    const expected = maxPiece === MAX_BINARY_DATA_BYTES
      ? [16 * KiB, 32 * KiB, 64 * KiB, 128 * KiB, 256 * KiB, 256 * KiB]
      : maxPiece === 100_000
      ? [16 * KiB, 32 * KiB, 64 * KiB, 100_000, 100_000]
      : [10_000, 10_000, 10_000];
    assert.deepEqual(source.requests.slice(0, expected.length), expected, `maxPiece ${maxPiece}`);
    reader.release();
  }
});

Deno.test("FrameReader halves its read size when reads use under an eighth of it, not below 16 KiB", async () => {
  // Two full reads grow it to 64 KiB; then tiny reads shrink it back step by step.
  const source = new ScriptedSource([16 * KiB, 32 * KiB, 10, 10, 10, 10, null]);
  const reader = new FrameReader(source, MAX_BINARY_DATA_BYTES, FIRST_PIECE);
  for (let piece = await reader.read(); piece !== null; piece = await reader.read()) {
    assert.equal(piece.byteOffset, DATA_HEADROOM);
  }
  assert.deepEqual(source.requests.map((request) => request.length), [
    16 * KiB,
    32 * KiB,
    64 * KiB,
    32 * KiB,
    16 * KiB,
    16 * KiB,
    16 * KiB,
  ]);
  reader.release();
});

Deno.test("FrameReader never reads more than the limit it is given", async () => {
  const source = new BytesSource(randomBytes(100 * KiB));
  const reader = new FrameReader(source, MAX_BINARY_DATA_BYTES, FIRST_PIECE);
  const small = await reader.read(1000);
  assert.ok(small);
  assert.equal(small.length, 1000);
  assertOwnSmallBuffer(small);
  const exact = await reader.read(16 * KiB);
  assert.equal(exact?.length, 16 * KiB);
  const big = await reader.read(1024 * KiB);
  assert.equal(big?.length, 32 * KiB, "a limit above the read size does not raise it");
  assert.deepEqual(source.requests, [1000, 16 * KiB, 32 * KiB]);
  reader.release();
});

Deno.test("FrameReader starts with 256-byte reads by default, so idle sessions hold little", async () => {
  const source = new ScriptedSource([10, null]);
  const reader = new FrameReader(source, MAX_BINARY_DATA_BYTES);
  assert.equal((await reader.read())?.length, 10);
  assert.equal(source.requests[0]!.length, 256);
  assert.equal(await reader.read(), null);
  reader.release();
});

Deno.test("FrameReader without a source is read by its caller: view() to read into, piece() for what came", () => {
  const reader = new FrameReader(undefined, MAX_BINARY_DATA_BYTES);
  const view = reader.view(100);
  assert.equal(view.length, 100);
  assert.equal(view.byteOffset, DATA_HEADROOM);
  view.set([1, 2, 3]);
  assert.deepEqual([...reader.piece(3, 100)!], [1, 2, 3]);
  reader.view();
  assert.equal(reader.piece(null), null);
  reader.release();
});

Deno.test("FrameReader returns null at the end of the source", async () => {
  const reader = new FrameReader(new ScriptedSource([null]), MAX_BINARY_DATA_BYTES);
  assert.equal(await reader.read(), null);
  reader.release();
  const empty = new FrameReader(new BytesSource(new Uint8Array(0)), MAX_BINARY_DATA_BYTES);
  assert.equal(await empty.read(), null);
  empty.release();
});

// ---- readFrom ---------------------------------------------------------------

Deno.test("readFrom sends each 1-byte piece in a buffer of its own with DATA_HEADROOM free before it", async () => {
  const carrier = new FakeCarrier({ flowControl: true });
  const conn = newConn(carrier);
  const data = randomBytes(300);
  const progress: number[] = [];
  const total = await conn.readFrom(new BytesSource(data, 1), (bytes) => progress.push(bytes));
  assert.equal(total, data.length);
  assert.equal(sum(progress), data.length);
  const sent = carrier.data;
  assert.equal(sent.length, data.length);
  for (const message of sent) {
    assert.equal(message.sessionId, SESSION_ID);
    assert.equal(message.owned, true);
    assert.equal(message.content.length, 1);
    assertOwnSmallBuffer(message.content);
  }
  assert.equal(new Set(sent.map((message) => message.content.buffer)).size, sent.length);
  assert.deepEqual(concatBytes(sent.map((message) => message.content)), data);
  conn.close();
});

Deno.test("readFrom with flow control stops at the initial 256 KiB window until credited()", async () => {
  const carrier = new FakeCarrier({ flowControl: true });
  const conn = newConn(carrier);
  let granted = INITIAL_WINDOW;
  carrier.onSend = (message) => {
    if (message.type !== MessageType.Data) return;
    assert.ok(carrier.dataBytes <= granted, `sent ${carrier.dataBytes} with ${granted} of credit`);
    assert.equal(message.content.byteOffset, DATA_HEADROOM);
    assert.ok(message.content.length <= carrier.maxDataBytes);
  };
  const data = randomBytes(1024 * KiB);
  const source = new BytesSource(data);
  const reading = conn.readFrom(source);

  await carrier.dataReached(INITIAL_WINDOW);
  await assertNothingArrives(Promise.race([reading, carrier.dataReached(INITIAL_WINDOW + 1)]));
  assert.equal(carrier.dataBytes, INITIAL_WINDOW);
  assert.equal(source.offset, INITIAL_WINDOW, "nothing beyond the credit was read from the source");

  // Credit in uneven steps; each is used up exactly before readFrom waits again.
  for (const step of [1, 100 * KiB, 300 * KiB]) {
    granted += step;
    conn.credited(step);
    await carrier.dataReached(granted);
    await assertNothingArrives(Promise.race([reading, carrier.dataReached(granted + 1)]));
    assert.equal(carrier.dataBytes, granted);
  }
  granted += data.length;
  conn.credited(data.length);
  assert.equal(await reading, data.length);
  assert.deepEqual(concatBytes(carrier.data.map((message) => message.content)), data);
  conn.close();
});

Deno.test("readFrom without flow control sends pieces of at most maxDataBytes, all with headroom", async () => {
  const carrier = new FakeCarrier({ maxDataBytes: 50_000 });
  const conn = newConn(carrier);
  const data = randomBytes(700 * KiB);
  assert.equal(await conn.readFrom(new BytesSource(data)), data.length);
  for (const message of carrier.data) {
    assert.ok(message.content.length <= 50_000);
    assert.equal(message.content.byteOffset, DATA_HEADROOM);
    assert.equal(message.owned, true);
  }
  assert.deepEqual(concatBytes(carrier.data.map((message) => message.content)), data);
  conn.close();
});

// ---- TcpTransport.readInto --------------------------------------------------

Deno.test("TcpTransport.readInto fills the caller's buffer with counts and returns null at EOF", async () => {
  using pair = await tcpPair();
  const transport = new TcpTransport(pair.server);
  try {
    const data = randomBytes(200 * KiB);
    const writing = (async () => {
      for (let written = 0; written < data.length;) {
        written += await pair.client.write(data.subarray(written));
      }
      pair.client.close();
    })();
    const chunks: Uint8Array[] = [];
    const p = new Uint8Array(32 * KiB);
    for (let count = await transport.readInto(p); count !== null;) {
      assert.ok(count > 0 && count <= p.length, `count ${count}`);
      chunks.push(p.slice(0, count));
      count = await transport.readInto(p);
    }
    await writing;
    assert.deepEqual(concatBytes(chunks), data);
    assert.equal(await transport.readInto(p), null, "EOF stays EOF");
  } finally {
    transport.abort();
  }
});

Deno.test("TcpTransport.readInto returns null after abort(), also for a read already pending", async () => {
  using pair = await tcpPair();
  const transport = new TcpTransport(pair.server);
  const p = new Uint8Array(1024);
  const pending = transport.readInto(p);
  transport.abort();
  assert.equal(await pending, null);
  assert.equal(await transport.readInto(p), null);
});
