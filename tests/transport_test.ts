/**
 * One conformance suite for every `Transport`, run against each pair that can
 * be built in-process: TCP (`TcpTransport` on both ends), TLS (a
 * `TcpTransport` over `Deno.connectTls` against a `NodeSocketTransport` from a
 * `node:tls` server, as the discover point accepts TLS links) and WebSocket
 * (`WebSocketTransport` over `new WebSocket(url)` against one over
 * `Deno.upgradeWebSocket`). Then `dialTransport` for each scheme, and what is
 * particular to WebSocket (text messages, the unread-bytes bound).
 * @module
 */

import assert from "node:assert/strict";
import tls from "node:tls";
import type { TLSSocket } from "node:tls";
import { ProtocolError, TcpTransport, type Transport, WebSocketTransport } from "../mod.ts";
import { NodeSocketTransport } from "../lib/transport/node_socket.ts";
import { dialTransport } from "../lib/transport/dial.ts";
import { Link } from "../lib/link/link.ts";
import { assertNothingArrives, randomBytes, settlesWithin } from "./_helpers.ts";
import { certAndKey, fixture, sha256Hex } from "./_tls.ts";

const KIB = 1024;
const MIB = 1024 * KIB;

const CA = await fixture("ca.crt");
const DP_CERT = await certAndKey("dp");

/** Options applied to both ends of a pair. */
interface PairOptions {
  highWaterMark?: number;
  /** WebSocket only: where waiting writers go on. */
  lowWaterMark?: number;
  maxQueuedBytes?: number;
  /** WebSocket and node:tls only: the bound on bytes received and not yet read. */
  maxUnreadBytes?: number;
}

/** Two connected transports (`[client, server]`) and what disposes of both. */
type Pair = [Transport, Transport] & AsyncDisposable;

interface TransportKind {
  name: string;
  /**
   * Whether the receiving end takes in messages whether or not anybody reads
   * (a WebSocket cannot be paused; `maxUnreadBytes` bounds it instead), so a
   * writer is never held back by a peer that merely does not read.
   */
  readsAhead: boolean;
  pair(options?: PairOptions): Promise<Pair>;
}

function makePair(
  client: Transport,
  server: Transport,
  dispose: () => Promise<void>,
): Pair {
  return Object.assign([client, server] as [Transport, Transport], {
    async [Symbol.asyncDispose]() {
      client.abort();
      server.abort();
      await dispose();
    },
  });
}

function tcpOptions(
  { lowWaterMark: _, maxUnreadBytes: __, ...options }: PairOptions,
): PairOptions {
  return options;
}

/** Resolves once `ws` has closed. */
function wsClosed(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => ws.addEventListener("close", () => resolve(), { once: true }));
}

/** An HTTP server on 127.0.0.1 that upgrades its first request; `upgraded` is the server's socket. */
function webSocketServer(): {
  server: Deno.HttpServer<Deno.NetAddr>;
  upgraded: PromiseWithResolvers<WebSocket>;
} {
  const upgraded = Promise.withResolvers<WebSocket>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    upgraded.resolve(socket);
    return response;
  });
  return { server, upgraded };
}

const KINDS: TransportKind[] = [
  {
    name: "TCP",
    readsAhead: false,
    async pair(options = {}) {
      using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const [client, server] = await Promise.all([
        Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
        listener.accept(),
      ]);
      return makePair(
        new TcpTransport(client, tcpOptions(options)),
        new TcpTransport(server, tcpOptions(options)),
        async () => {},
      );
    },
  },
  {
    name: "TLS",
    readsAhead: false,
    async pair(options = {}) {
      const server = tls.createServer({ cert: DP_CERT.cert, key: DP_CERT.key });
      const accepted = Promise.withResolvers<TLSSocket>();
      server.once("secureConnection", (socket: TLSSocket) => accepted.resolve(socket));
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
      const port = (server.address() as { port: number }).port;
      const [tlsConn, socket] = await Promise.all([
        Deno.connectTls({ hostname: "localhost", port, caCerts: [CA] }),
        accepted.promise,
      ]);
      await tlsConn.handshake();
      const socketClosed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      return makePair(
        new TcpTransport(tlsConn, tcpOptions(options)),
        new NodeSocketTransport(socket, tcpOptions(options)),
        async () => {
          await socketClosed;
          await new Promise<void>((resolve) => server.close(() => resolve()));
        },
      );
    },
  },
  {
    name: "WebSocket",
    readsAhead: true,
    async pair(options = {}) {
      const { server, upgraded } = webSocketServer();
      const ws = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
      const client = new WebSocketTransport(ws, options);
      const serverWs = await upgraded.promise;
      const serverSide = new WebSocketTransport(serverWs, options);
      await new Promise<void>((resolve, reject) => {
        if (ws.readyState === WebSocket.OPEN) return resolve();
        ws.addEventListener("open", () => resolve(), { once: true });
        ws.addEventListener("close", () => reject(new Error("the WebSocket closed")), {
          once: true,
        });
      });
      return makePair(client, serverSide, async () => {
        await settlesWithin(Promise.all([wsClosed(ws), wsClosed(serverWs)]), "sockets closed");
        await server.shutdown();
      });
    },
  },
];

// ---- reading helpers ----------------------------------------------------------------

/** Reads until `length` bytes have come (copying each chunk); fewer only at the end. */
async function readBytes(transport: Transport, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let have = 0;
  while (have < length) {
    const chunk = await transport.read();
    if (chunk === null) break;
    assert.ok(chunk.length > 0, "read() returned an empty chunk");
    assert.ok(have + chunk.length <= length, "read more than was written");
    out.set(chunk, have);
    have += chunk.length;
  }
  return out.subarray(0, have);
}

/** Reads to the end of input; returns how many bytes came and their chunks joined. */
async function readToEnd(transport: Transport): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (let chunk = await transport.read(); chunk !== null; chunk = await transport.read()) {
    assert.ok(chunk.length > 0, "read() returned an empty chunk");
    chunks.push(chunk.slice());
    total += chunk.length;
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Reads to the end and counts the bytes (for bulk that need not be kept). */
async function countToEnd(transport: Transport): Promise<number> {
  let total = 0;
  for (let chunk = await transport.read(); chunk !== null; chunk = await transport.read()) {
    total += chunk.length;
  }
  return total;
}

/** The end as the far side of a closed or aborted transport may see it: `null` or a reset. */
async function endOrReset(reading: Promise<unknown>): Promise<void> {
  try {
    const result = await settlesWithin(reading, "the end of input");
    if (result instanceof Uint8Array) assert.fail(`expected the end, got ${result.length} bytes`);
  } catch (error) {
    assert.ok(
      error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
        error instanceof Deno.errors.UnexpectedEof,
      `expected null or ConnectionReset, got ${error}`,
    );
  }
}

/** Writes `bytes` (a copy: the transport owns what it is given) and waits if asked to. */
async function writeCopy(transport: Transport, bytes: Uint8Array): Promise<void> {
  await transport.write(bytes.slice());
}

/** Which end writes in the tests that have a direction. */
const DIRECTIONS = ["client to server", "server to client"] as const;
type Direction = (typeof DIRECTIONS)[number];

/**
 * Known bugs, by kind, direction and test: those cases are ignored (the
 * comment says what goes wrong) until the transport is fixed.
 */
const BUGS: Record<string, string> = {
  // LIMITATION, not a bug: under Deno's node:tls a socket keeps reading from TCP even
  // when paused (64 MiB went into a paused node:tls socket without a stall; and a paused
  // one could miss its end). So the DP's TLS links cannot hold a writer back by not
  // reading: NodeSocketTransport bounds what it holds with maxUnreadBytes (16 MiB) and
  // drops a link past it instead. Flow-controlled peers never get near it.
  "TLS/client to server/backpressure": "node:tls cannot stop reading; bounded by maxUnreadBytes",
};

function bug(kind: TransportKind, direction: Direction, test: string): boolean {
  return `${kind.name}/${direction}/${test}` in BUGS;
}

// ---- the conformance suite --------------------------------------------------------------

for (const kind of KINDS) {
  Deno.test(`transport ${kind.name}: 1,000 small writes arrive in order`, async () => {
    await using pair = await kind.pair();
    const [a, b] = pair;
    const encoder = new TextEncoder();
    const pieces = Array.from({ length: 1000 }, (_, i) => encoder.encode(`message ${i};`));
    const expected = new TextDecoder().decode(
      encoder.encode(pieces.map((piece) => new TextDecoder().decode(piece)).join("")),
    );
    const reading = readBytes(b, encoder.encode(expected).length);
    for (const piece of pieces) await a.write(piece);
    const got = await settlesWithin(reading, "1,000 writes");
    assert.equal(new TextDecoder().decode(got), expected);
  });

  Deno.test(`transport ${kind.name}: a 4 MiB write arrives intact`, async () => {
    await using pair = await kind.pair();
    const [a, b] = pair;
    const data = randomBytes(4 * MIB);
    const reading = readBytes(b, data.length);
    await settlesWithin(writeCopy(a, data), "the 4 MiB write to drain", 30_000);
    const got = await settlesWithin(reading, "4 MiB", 30_000);
    assert.equal(got.length, data.length);
    assert.equal(await sha256Hex(got), await sha256Hex(data));
  });

  Deno.test(`transport ${kind.name}: empty writes send nothing; 1-byte writes arrive in order`, async () => {
    await using pair = await kind.pair();
    const [a, b] = pair;
    assert.equal(a.write(new Uint8Array(0)), undefined);
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const reading = readBytes(b, bytes.length);
    for (const byte of bytes) {
      await a.write(Uint8Array.of(byte));
      assert.equal(a.write(new Uint8Array(0)), undefined);
    }
    assert.deepEqual(Uint8Array.from(await settlesWithin(reading, "256 single bytes")), bytes);
    // Nothing was sent for the empty writes: the next read gets the next real byte.
    const next = b.read();
    await a.write(Uint8Array.of(42));
    const one = await settlesWithin(next, "one byte");
    assert.deepEqual(one === null ? null : Uint8Array.from(one), Uint8Array.of(42));
  });

  Deno.test(`transport ${kind.name}: readInto() fills a small buffer from a larger chunk without losing bytes`, async () => {
    await using pair = await kind.pair();
    const [a, b] = pair;
    const data = randomBytes(10_000);
    await writeCopy(a, data);
    const out = new Uint8Array(data.length);
    let have = 0;
    while (have < data.length) {
      // Not part of Transport (only public-port sockets need it), but every transport has it.
      const reader = b as Transport & { readInto(p: Uint8Array): Promise<number | null> };
      const n = await settlesWithin(reader.readInto(out.subarray(have, have + 777)), "readInto");
      assert.ok(n !== null && n > 0 && n <= 777);
      have += n;
    }
    assert.deepEqual(out, data);
  });

  Deno.test(`transport ${kind.name}: abort() ends the local pending read with null, and the peer sees the end`, async () => {
    await using pair = await kind.pair();
    const [a, b] = pair;
    const localRead = a.read();
    const peerRead = b.read();
    a.abort();
    assert.equal(await settlesWithin(localRead, "the local read to end"), null);
    assert.equal(await a.read(), null);
    assert.throws(() => a.write(Uint8Array.of(1)));
    await endOrReset(peerRead);
    a.abort(); // Idempotent.
  });

  Deno.test(`transport ${kind.name}: a peer that vanishes with unread input ends the other's pending read`, async () => {
    await using pair = await kind.pair();
    const [a, b] = pair;
    // a has bytes it never reads: a TCP close then resets rather than ends cleanly.
    await b.write(randomBytes(64 * KIB));
    const pending = b.read();
    a.abort();
    await endOrReset(pending);
    await endOrReset(b.read());
  });
}

for (const kind of KINDS) {
  for (const direction of DIRECTIONS) {
    Deno.test({
      name:
        `transport ${kind.name}, ${direction}: write() asks to wait above the high-water mark, and goes on once the peer reads`,
      ignore: bug(kind, direction, "backpressure"),
      async fn() {
        await using pair = await kind.pair({ highWaterMark: MIB, lowWaterMark: 256 * KIB });
        const [a, b] = direction === "client to server" ? pair : [pair[1], pair[0]];
        // Far more than the kernel buffers hold (loopback: a few MiB), unless the peer reads ahead.
        const total = kind.readsAhead ? 8 * MIB : 32 * MIB;
        const piece = new Uint8Array(256 * KIB).fill(7);
        let waiting: Promise<void> | undefined;
        for (let sent = 0; sent < total; sent += piece.length) {
          waiting = a.write(piece.slice()) ?? waiting;
        }
        assert.ok(
          waiting !== undefined,
          `write() never asked to wait (${a.queuedBytes} bytes queued)`,
        );
        assert.ok(a.queuedBytes > MIB, `only ${a.queuedBytes} bytes queued`);
        let drained = false;
        const draining = waiting.then(() => drained = true);
        if (!kind.readsAhead) {
          // The peer does not read: the queue cannot drain below the mark.
          await assertNothingArrives(draining);
          assert.equal(drained, false);
        }
        const reading = readBytes(b, total);
        await settlesWithin(draining, "the write to be let go on", 30_000);
        assert.equal((await settlesWithin(reading, "everything written", 30_000)).length, total);
      },
    });

    Deno.test({
      name:
        `transport ${kind.name}, ${direction}: close() delivers what was queued, then the peer reads the end`,
      ignore: bug(kind, direction, "close"),
      async fn() {
        await using pair = await kind.pair();
        const [a, b] = direction === "client to server" ? pair : [pair[1], pair[0]];
        const data = randomBytes(3 * MIB);
        const reading = readToEnd(b);
        for (let offset = 0; offset < data.length; offset += 100_000) {
          void a.write(data.slice(offset, offset + 100_000));
        }
        await settlesWithin(a.close(), "close()", 30_000);
        const got = await settlesWithin(reading, "the data and the end", 30_000);
        assert.equal(got.length, data.length);
        assert.equal(await sha256Hex(got), await sha256Hex(data));
        assert.throws(() => a.write(Uint8Array.of(1)));
      },
    });

    Deno.test({
      name:
        `transport ${kind.name}, ${direction}: finish() lets the peer read everything, then both ends close`,
      ignore: bug(kind, direction, "finish"),
      async fn() {
        await using pair = await kind.pair();
        const [a, b] = direction === "client to server" ? pair : [pair[1], pair[0]];
        const data = randomBytes(2 * MIB);
        const aReading = readToEnd(a);
        for (let offset = 0; offset < data.length; offset += 100_000) {
          void a.write(data.slice(offset, offset + 100_000));
        }
        await settlesWithin(a.finish(30_000), "finish()", 30_000);
        const got = await settlesWithin(readToEnd(b), "the data and the end", 30_000);
        assert.equal(await sha256Hex(got), await sha256Hex(data));
        // The peer ends its side; the finishing end closes at once (long before its grace).
        await b.close();
        assert.equal((await settlesWithin(aReading, "the finishing end to close")).length, 0);
        assert.throws(() => a.write(Uint8Array.of(1)));
        assert.equal(a.queuedBytes, 0);
      },
    });

    Deno.test({
      name:
        `transport ${kind.name}, ${direction}: maxQueuedBytes makes a write throw and aborts the transport`,
      ignore: bug(kind, direction, "maxQueuedBytes"),
      async fn() {
        await using pair = await kind.pair({ maxQueuedBytes: 2 * MIB });
        const [a, b] = direction === "client to server" ? pair : [pair[1], pair[0]];
        const peerEnd = countToEnd(b).catch((error) => error);
        const piece = new Uint8Array(256 * KIB);
        let thrown: unknown;
        for (let i = 0; i < 64 && thrown === undefined; i++) {
          try {
            void a.write(piece.slice());
          } catch (error) {
            thrown = error;
          }
        }
        assert.ok(thrown instanceof Deno.errors.WriteZero, `expected WriteZero, got ${thrown}`);
        assert.match((thrown as Error).message, /maxLinkQueueBytes/);
        assert.throws(() => a.write(Uint8Array.of(1)));
        // The local read ends: with the write error, or null.
        const local = await settlesWithin(a.read().catch((error) => error), "the local read");
        assert.ok(local === null || local instanceof Deno.errors.WriteZero, `got ${local}`);
        const seen = await settlesWithin(peerEnd, "the peer to see the end");
        assert.ok(
          typeof seen === "number" || seen instanceof Deno.errors.ConnectionReset ||
            seen instanceof Deno.errors.UnexpectedEof ||
            seen instanceof ProtocolError,
          `the peer saw ${seen}`,
        );
      },
    });
  }
}

// ---- dialTransport, for each scheme ------------------------------------------------------

Deno.test("dialTransport: tcp://, tls:// and ws:// each give a transport that carries bytes both ways", async () => {
  // TCP
  {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepting = listener.accept();
    const a = await dialTransport(`tcp://127.0.0.1:${listener.addr.port}`);
    const b = new TcpTransport(await accepting);
    try {
      await roundTrip(a, b);
    } finally {
      a.abort();
      b.abort();
    }
  }
  // TLS
  {
    using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...DP_CERT });
    const accepting = listener.accept();
    const a = await dialTransport(`tls://localhost:${listener.addr.port}`, { caCerts: [CA] });
    const b = new TcpTransport(await accepting);
    try {
      await roundTrip(a, b);
    } finally {
      a.abort();
      b.abort();
    }
  }
  // WebSocket
  {
    const { server, upgraded } = webSocketServer();
    const a = await dialTransport(`ws://127.0.0.1:${server.addr.port}/any`);
    const serverWs = await upgraded.promise;
    const b = new WebSocketTransport(serverWs);
    try {
      await roundTrip(a, b);
    } finally {
      a.abort();
      b.abort();
      await settlesWithin(wsClosed(serverWs), "the server socket to close");
      await server.shutdown();
    }
  }
});

async function roundTrip(a: Transport, b: Transport): Promise<void> {
  const there = randomBytes(5000);
  const back = randomBytes(7000);
  await writeCopy(a, there);
  assert.deepEqual(await settlesWithin(readBytes(b, there.length), "a to b"), there);
  await writeCopy(b, back);
  assert.deepEqual(await settlesWithin(readBytes(a, back.length), "b to a"), back);
}

Deno.test("dialTransport: a ws:// URL where nothing listens fails with DiscoverPointUnreachableError", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  await assert.rejects(
    dialTransport(`ws://127.0.0.1:${port}/rtcp`),
    (error: Error) => error.name === "DiscoverPointUnreachableError",
  );
});

// ---- what is particular to WebSocket ----------------------------------------------------

Deno.test("WebSocketTransport: a text message ends the link with a ProtocolError the reader gets", async () => {
  const { server, upgraded } = webSocketServer();
  const ws = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
  const closed = new Promise<CloseEvent>((resolve) => ws.addEventListener("close", resolve));
  try {
    const transport = new WebSocketTransport(await upgraded.promise);
    await new Promise((resolve) => ws.addEventListener("open", resolve, { once: true }));
    ws.send(new Uint8Array([1, 2, 3]));
    ws.send("hello");
    // What came before the text message may or may not be read; the text message ends it.
    const error = await settlesWithin(
      (async () => {
        for (;;) {
          try {
            if (await transport.read() === null) return null;
          } catch (error) {
            return error;
          }
        }
      })(),
      "the read to fail",
    );
    assert.ok(error instanceof ProtocolError, `expected a ProtocolError, got ${error}`);
    assert.match(error.message, /binary messages only/);
    assert.equal((await settlesWithin(closed, "the close")).code, 4003);
    assert.throws(() => transport.write(Uint8Array.of(1)), ProtocolError);
  } finally {
    ws.close();
    await closed;
    await server.shutdown();
  }
});

Deno.test("WebSocketTransport: a peer that sends more than maxUnreadBytes to a reader that does not read is cut off with 4009", async () => {
  const { server, upgraded } = webSocketServer();
  const ws = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
  const closed = new Promise<CloseEvent>((resolve) => ws.addEventListener("close", resolve));
  const sender = new WebSocketTransport(ws);
  try {
    const receiver = new WebSocketTransport(await upgraded.promise, { maxUnreadBytes: MIB });
    const senderEnd = countToEnd(sender).catch((error) => error);
    for (let i = 0; i < 8; i++) void sender.write(new Uint8Array(512 * KIB));
    const code = (await settlesWithin(closed, "the receiver to close the socket")).code;
    // 4009 reaches the sender, or (data still arriving as the server closes) a reset.
    assert.ok([4009, 1006, 0].includes(code), `close code ${code}`);
    await assert.rejects(receiver.read(), (error: Error) => {
      assert.ok(error instanceof ProtocolError, `${error}`);
      assert.match(error.message, /maxUnreadBytes|limit 1048576/);
      return true;
    });
    await settlesWithin(senderEnd, "the sender's read to end");
  } finally {
    sender.abort();
    await closed;
    await server.shutdown();
  }
});

Deno.test("WebSocketTransport: writes of one turn leave as one binary message, up to maxMessageBytes", async () => {
  const { server, upgraded } = webSocketServer();
  const ws = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
  ws.binaryType = "arraybuffer";
  const closed = new Promise<CloseEvent>((resolve) => ws.addEventListener("close", resolve));
  const sizes: number[] = [];
  const got = Promise.withResolvers<void>();
  ws.addEventListener("message", (event) => {
    assert.ok(event.data instanceof ArrayBuffer, "a text message");
    sizes.push(event.data.byteLength);
    if (sizes.reduce((sum, size) => sum + size, 0) === 100 + 3000 * KIB) got.resolve();
  });
  const sender = new WebSocketTransport(await upgraded.promise, { maxMessageBytes: MIB });
  try {
    await new Promise((resolve) => ws.addEventListener("open", resolve, { once: true }));
    for (let i = 0; i < 100; i++) void sender.write(Uint8Array.of(i));
    await Promise.resolve();
    for (let i = 0; i < 3000; i++) void sender.write(new Uint8Array(KIB));
    await settlesWithin(got.promise, "every byte");
    assert.deepEqual(sizes, [100, MIB, MIB, 952 * KIB]);
  } finally {
    sender.abort();
    await closed;
    await server.shutdown();
  }
});

Deno.test({
  name:
    "WebSocketTransport: a dialed (client) transport that gets a text message closes its socket, and the server sees 4003",
  // Regression: #fail() closed with 1003, which a client WebSocket refuses (only 1000 or
  // 3000-4999), so the socket stayed open. It now closes with 4003 (4009 for sizes).
  async fn() {
    const { server, upgraded } = webSocketServer();
    const client = await dialTransport(`ws://127.0.0.1:${server.addr.port}/`);
    const serverWs = await upgraded.promise;
    const closed = new Promise<CloseEvent>((resolve) =>
      serverWs.addEventListener("close", resolve)
    );
    try {
      serverWs.send("text");
      await assert.rejects(settlesWithin(client.read(), "the read to fail"), ProtocolError);
      assert.equal((await settlesWithin(closed, "the client to close")).code, 4003);
    } finally {
      client.abort();
      serverWs.close();
      await closed;
      await server.shutdown();
    }
  },
});

// ---- a link with flow control lifts the unread bound ---------------------------------

Deno.test("transport WebSocket: a link that agreed on flow-control is not dropped for bytes it has not read yet", async () => {
  // Credit bounds what the peer may send (a window per session, many sessions on one link),
  // so the transport's own bound would drop honest links: the link lifts it.
  const kind = KINDS.find((candidate) => candidate.name === "WebSocket")!;
  await using pair = await kind.pair({ maxUnreadBytes: 1024 });
  const [a, b] = pair;
  new Link(b).useFeatures(["flow-control"]);
  const data = randomBytes(64 * 1024);
  await a.write(data);
  assert.deepEqual(await settlesWithin(readBytes(b, data.length), "the 64 KiB"), data);
});
