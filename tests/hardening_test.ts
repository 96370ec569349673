/**
 * Regressions for the security review's denial-of-service and leak findings
 * (shared/SECURITY.md §1 F3, F5, F7, F8, F10, F11; §4 items 16–21): session
 * numbers per server link, Pong coalescing, the outbound queue cap, the close
 * deadline, pending Connects that expire, bounded binary frames, the global
 * and per-source limits, the idle timeout, and reasons that name no address.
 * Hostile peers are raw sockets on 127.0.0.1; every wait is for an event.
 * @module
 */

import assert from "node:assert/strict";
import { connect as tcpConnect, type Socket } from "node:net";
import {
  connect,
  type IndirectConn,
  type IndirectListener,
  listen,
  SessionClosedError,
  SessionRefusedError,
  TcpTransport,
  type Transport,
} from "../mod.ts";
import {
  assertEchoes,
  cutShort,
  IC_ALOHA,
  IS_ALOHA,
  RawPeer,
  readExactly,
  type RunningDiscoverPoint,
  settlesWithin,
  splitAddress,
  startDiscoverPoint,
} from "./_helpers.ts";
import { FRAME_MARK, FramePeer } from "./_extensions.ts";

const KIB = 1024;
const MIB = 1024 * KIB;

/** An IPv4 address anywhere in a text. */
const IPV4 = /\b\d{1,3}(?:\.\d{1,3}){3}\b/;

/** Asserts that a reason sent to a client names no address. */
function assertNoAddress(reason: string): void {
  assert.doesNotMatch(reason, IPV4, `the reason names an address: ${reason}`);
}

// ---- servers and clients --------------------------------------------------

/** A listener that runs `handle` on every session, and the way to stop it. */
interface Server extends AsyncDisposable {
  readonly listener: IndirectListener;
  /** Sessions accepted so far. */
  readonly accepted: number;
}

/** Registers `name` with listen() and runs `handle` on each session (then closes it). */
async function serve(
  dp: RunningDiscoverPoint,
  name: string,
  handle: (conn: IndirectConn) => Promise<unknown>,
): Promise<Server> {
  const listener = listen({ dp: dp.address, name });
  await listener.ready;
  const sessions: Promise<void>[] = [];
  let accepted = 0;
  const serving = (async () => {
    for await (const conn of listener) {
      accepted++;
      sessions.push(
        handle(conn).then(() => {}, () => {
          // Sessions cut by a limit or a lost link end under the handler: that is what these tests do.
        }).finally(() => conn.close()),
      );
    }
  })();
  return {
    listener,
    get accepted() {
      return accepted;
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await serving;
      await Promise.all(sessions);
    },
  };
}

/** A listener that echoes every session. */
function echoServer(dp: RunningDiscoverPoint, name: string): Promise<Server> {
  return serve(dp, name, (conn) => conn.readable.pipeTo(conn.writable));
}

/** Keeps library sessions to close at the end of a test. */
class Conns implements AsyncDisposable {
  readonly all: IndirectConn[] = [];
  add<T extends IndirectConn>(conn: T): T {
    this.all.push(conn);
    return conn;
  }
  async [Symbol.asyncDispose](): Promise<void> {
    for (const conn of this.all) conn.close();
    await Promise.all(this.all.map((conn) => conn.closed));
  }
}

/**
 * The refusal `promise` rejects with: a SessionRefusedError whose reason
 * matches `pattern`. A session that opens instead is closed, and fails the test.
 */
async function refusedWith(promise: Promise<IndirectConn>, pattern: RegExp): Promise<string> {
  const outcome = await promise.then((conn) => {
    conn.close();
    return undefined;
  }, (error: unknown) => error);
  assert.ok(
    outcome instanceof SessionRefusedError,
    `expected a refusal, got ${outcome ?? "a session"}`,
  );
  assert.match(outcome.reason, pattern);
  return outcome.reason;
}

/** Marks `promise` as handled, so a test that fails before awaiting it reports its own failure. */
function later<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {});
  return promise;
}

/** Waits for the discover point to close `conn`, and returns the reason it gave. */
async function closeReasonOf(conn: IndirectConn): Promise<string> {
  await settlesWithin(conn.closed, "the discover point to close the session");
  const error = await conn.write(new Uint8Array(1)).then(() => undefined, (error) => error);
  assert.ok(error instanceof SessionClosedError, `expected SessionClosedError, got ${error}`);
  return error.message;
}

/** Reads a raw link to its end and returns the reason in its one Aloha R=5. */
async function refusalOf(peer: RawPeer): Promise<string> {
  const seen = await settlesWithin(peer.untilEnd(), "the discover point to end the link");
  assert.equal(seen.length, 1, `expected one Aloha R=5, got ${Deno.inspect(seen)}`);
  assert.equal(seen[0]!.type, 0);
  assert.equal(seen[0]!.body.R, 5);
  return seen[0]!.body.N;
}

/** A raw indirect server registered as `name` (text protocol; `features` in its Aloha). */
async function rawServer(
  dp: RunningDiscoverPoint,
  name: string,
  features?: string[],
): Promise<RawPeer> {
  const peer = await RawPeer.connect(dp.address);
  const aloha = { V: 10000, R: 2, N: name, ...(features ? { F: features } : {}) };
  await peer.sendMessage(0, aloha);
  const answer = await settlesWithin(peer.expect(), "the discover point's Aloha");
  assert.equal(answer.body.R, 4, Deno.inspect(answer));
  return peer;
}

/** A raw indirect client's open session: its link and the session number. */
interface RawSession {
  readonly peer: RawPeer;
  readonly id: number;
}

/** Sends a raw client's Connect for `name` after its accepted Aloha, and reads the Ack. */
async function openSession(peer: RawPeer, name: string): Promise<RawSession> {
  await peer.sendMessage(1, { N: name });
  const ack = await settlesWithin(peer.expect(), "the Ack");
  assert.equal(ack.type, 2, Deno.inspect(ack));
  assert.ok(ack.body.X >= 0, Deno.inspect(ack));
  return { peer, id: ack.body.X };
}

/** A raw indirect client with a session open to `name`. */
async function rawClient(dp: RunningDiscoverPoint, name: string): Promise<RawSession> {
  const peer = await RawPeer.connect(dp.address);
  await peer.send(IC_ALOHA("raw-client"));
  assert.equal((await peer.expect()).body.R, 4);
  return await openSession(peer, name);
}

/**
 * A raw client's session to `name`, once the discover point takes links
 * again. It counts a link until it has seen it close, which the peer cannot
 * observe, so a try refused for `limit` is followed by another: each try is a
 * round trip, and nothing sleeps.
 */
function rawClientOnceTaken(
  dp: RunningDiscoverPoint,
  name: string,
  limit: RegExp,
): Promise<RawSession> {
  return settlesWithin(
    (async () => {
      for (;;) {
        const peer = await RawPeer.connect(dp.address);
        await peer.send(IC_ALOHA("raw-client"));
        const answer = await peer.expect();
        if (answer.body.R === 4) return await openSession(peer, name);
        assert.match(answer.body.N, limit);
        peer.close();
      }
    })(),
    "the discover point to take a link again",
  );
}

/** Closes a raw client's session and reads its link to the end the discover point gives it. */
async function closeRawClient(client: RawSession): Promise<void> {
  await client.peer.sendMessage(4, { X: client.id, R: "" });
  const seen = await settlesWithin(client.peer.untilEnd(), "the discover point to end the link");
  assert.deepEqual(seen.at(-1), { type: 4, body: { X: client.id, R: "" } });
  client.peer.close();
}

/** Reads a connection to its end (a reset counts as the end); returns the bytes read. */
async function drain(conn: Deno.Conn): Promise<number> {
  const buffer = new Uint8Array(256 * KIB);
  let total = 0;
  try {
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) total += n;
  } catch (error) {
    if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
  }
  return total;
}

/** A binary Data frame's header alone: the mark, the length `length`, session `id`. */
function dataHeader(length: number, id: number): Uint8Array {
  const header = new Uint8Array(9);
  const view = new DataView(header.buffer);
  header[0] = FRAME_MARK | 3;
  view.setUint32(1, length);
  view.setUint32(5, id);
  return header;
}

/**
 * A link from another source address (127.0.0.2): sends `text` and returns
 * the first message the discover point answers, as its two lines.
 */
async function firstAnswerFrom(
  localAddress: string,
  address: string,
  text: string,
): Promise<{ lines: string[]; socket: Socket }> {
  const { hostname, port } = splitAddress(address);
  const socket = tcpConnect({ host: hostname, port, localAddress });
  const answer = Promise.withResolvers<string[]>();
  let received = "";
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    received += chunk;
    const lines = received.split("\n");
    if (lines.length > 2) answer.resolve(lines.slice(0, 2));
  });
  socket.on("error", answer.reject);
  socket.on("close", () => answer.reject(new Error(`The link closed after ${received}`)));
  socket.write(text);
  try {
    return { lines: await settlesWithin(answer.promise, "an answer"), socket };
  } catch (error) {
    await closeSocket(socket);
    throw error;
  }
}

/** Destroys a node:net socket and waits until it is closed. */
async function closeSocket(socket: Socket): Promise<void> {
  if (socket.closed) return;
  const closed = new Promise((resolve) => socket.once("close", resolve));
  socket.destroy();
  await closed;
}

// ---- F3: session numbers are per server link ------------------------------

Deno.test("two listeners with one name both serve sessions, and neither link is closed", async () => {
  await using dp = await startDiscoverPoint();
  await using a = await echoServer(dp, "svc");
  await using b = await echoServer(dp, "svc");
  assert.equal(dp.dp.servers.get("svc"), 2);
  await using conns = new Conns();
  for (let i = 0; i < 6; i++) {
    // Each listener numbers its sessions 1, 2, 3…: the numbers repeat across the pool.
    const conn = conns.add(await connect({ dp: dp.address, name: "svc" }));
    await assertEchoes(conn, `session ${i}`);
  }
  assert.equal(a.accepted + b.accepted, 6);
  assert.ok(a.accepted > 0 && b.accepted > 0, `sessions: ${a.accepted} and ${b.accepted}`);
  assert.ok(new Set(conns.all.map((conn) => conn.sessionId)).size < 6, "no number was repeated");
  for (const [i, conn] of conns.all.entries()) await assertEchoes(conn, `again ${i}`);
  assert.equal(dp.dp.servers.get("svc"), 2);
});

Deno.test("a pool member acking another member's session numbers ends no link", async () => {
  await using dp = await startDiscoverPoint();
  await using real = await echoServer(dp, "secret");
  await using conns = new Conns();
  const first = conns.add(await connect({ dp: dp.address, name: "secret" }));
  await assertEchoes(first, "first");

  // The member joins the pool; with no session yet it is the least loaded, and takes the next
  // session, which it acks with the number the real server hands out next.
  using member = await rawServer(dp, "secret");
  const next = first.sessionId + 1;
  const second = later(connect({ dp: dp.address, name: "secret" }));
  assert.equal((await settlesWithin(member.expect(), "a Connect")).type, 1);
  await member.sendMessage(2, { X: next, R: "" });
  conns.add(await second);

  // A tie: the oldest link, the real server, takes the next session and acks that number too.
  const third = conns.add(await connect({ dp: dp.address, name: "secret" }));
  assert.equal(third.sessionId, next);
  assert.equal(real.accepted, 2);

  // The member, now the less loaded, acks the number of the real server's first session.
  const fourth = later(connect({ dp: dp.address, name: "secret" }));
  assert.equal((await settlesWithin(member.expect(), "a Connect")).type, 1);
  await member.sendMessage(2, { X: first.sessionId, R: "" });
  conns.add(await fourth);

  // Every session is alive, on both links.
  await assertEchoes(first, "the real server's first session");
  await assertEchoes(third, "the real server's second session");
  for (const [conn, id] of [[conns.all[1]!, next], [conns.all[3]!, first.sessionId]] as const) {
    assert.equal(conn.sessionId, id);
    const text = `member session ${id}`;
    await conn.write(new TextEncoder().encode(text));
    const data = await settlesWithin(member.expect(), "Data at the member");
    assert.deepEqual(data.body, { X: id, C: btoa(text) });
    await member.sendMessage(3, data.body);
    const reader = conn.readable.getReader();
    const echoed = await readExactly(reader, text.length);
    reader.releaseLock();
    assert.equal(new TextDecoder().decode(echoed), text);
  }
  assert.equal(dp.dp.servers.get("secret"), 2);
  member.close();
});

// ---- F5: a Ping flood gets coalesced Pongs --------------------------------

Deno.test("4 MB of Pings from a peer that never reads: the discover point's heap stays bounded", async () => {
  await using dp = await startDiscoverPoint();
  const arrived = Promise.withResolvers<void>();
  // An echo server that says when "done" has arrived.
  await using _server = await serve(dp, "svc", async (conn) => {
    for await (const chunk of conn.readable) {
      if (new TextDecoder().decode(chunk).includes("done")) arrived.resolve();
      await conn.write(chunk);
    }
  });
  using pinger = await RawPeer.connect(dp.address);
  await pinger.send('0\n{"V":10000,"R":3,"N":"pinger","F":["keepalive"]}\n');
  assert.deepEqual((await pinger.expect()).body.F, ["keepalive"]);
  await pinger.sendMessage(1, { N: "svc" });
  const ack = await pinger.expect();
  assert.equal(ack.type, 2);

  // From here on the pinger reads nothing.
  const before = Deno.memoryUsage().heapUsed;
  const pings = new TextEncoder().encode("7\n{}\n".repeat(200_000)); // 1 MB
  for (let i = 0; i < 4; i++) await pinger.send(pings);
  // Data behind the Pings: once the server has it, the discover point has read every Ping.
  await pinger.sendMessage(3, { X: ack.body.X, C: btoa("done") });
  await settlesWithin(arrived.promise, "the Data behind the Pings", 30_000);
  const growth = Deno.memoryUsage().heapUsed - before;
  assert.ok(growth < 32 * MIB, `the heap grew by ${(growth / MIB).toFixed(1)} MiB`);

  using probe = await connect({ dp: dp.address, name: "svc" });
  await assertEchoes(probe, "a session beside the flood");
  pinger.close();
});

// ---- F7: the outbound queue cap and the close deadline --------------------

Deno.test("TcpTransport maxQueuedBytes aborts the transport of a peer that does not read", async (t) => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await t.step("a writer that waits when asked stays under the cap", async () => {
    const dialing = Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    using peer = await listener.accept();
    const transport = new TcpTransport(await dialing, { maxQueuedBytes: 1000, highWaterMark: 100 });
    const chunk = new Uint8Array(500);
    const reading = drain(peer);
    for (let i = 0; i < 2048; i++) {
      await transport.write(chunk.slice());
      assert.ok(transport.queuedBytes <= 1000);
    }
    await transport.close();
    assert.equal(await reading, 2048 * 500);
  });
  await t.step("a writer that does not wait, to a peer that does not read, is cut", async () => {
    const dialing = Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    using peer = await listener.accept();
    const transport = new TcpTransport(await dialing, { maxQueuedBytes: 1000, highWaterMark: 100 });
    const chunk = new Uint8Array(500);
    let accepted = 0;
    let failure: unknown;
    try {
      // Far more than the kernel buffers take: the queue grows once they are full.
      for (; accepted < 64 * MIB; accepted += chunk.length) void transport.write(chunk.slice());
    } catch (error) {
      failure = error;
    }
    assert.ok(failure instanceof Deno.errors.WriteZero, String(failure));
    assert.match(failure.message, /the peer does not read .*limit maxLinkQueueBytes/);
    assert.ok(accepted <= 1000, `${accepted} bytes were queued`);
    // Aborted: later writes fail the same way, and the peer sees the end.
    assert.throws(() => transport.write(chunk.slice()), Deno.errors.WriteZero);
    assert.ok(await settlesWithin(drain(peer), "the peer to see the end") <= accepted);
  });
});

Deno.test("DiscoverPoint maxLinkQueueBytes drops the link whose queue passes it, and only that link", async () => {
  // Data waits at the transport's high-water mark (1 MiB), so only a cap below one burst of it
  // (here, below one 64 KiB piece in base64) lets Data alone pass it; Pongs and Close echoes,
  // which do not wait, are what the cap is for (the TcpTransport test above).
  await using dp = await startDiscoverPoint({ maxLinkQueueBytes: 64 * KIB });
  await using _steady = await echoServer(dp, "steady");
  await using conns = new Conns();
  const steady = conns.add(await connect({ dp: dp.address, name: "steady" }));
  await assertEchoes(steady, "before");

  using hog = await rawServer(dp, "hog");
  const opening = later(connect({ dp: dp.address, name: "hog" }));
  const request = await settlesWithin(hog.expect(), "the Connect");
  assert.equal(request.type, 1);
  await hog.sendMessage(2, { X: 1, R: "" });
  const client = conns.add(await opening);
  // The server reads nothing more; the client streams until its session is closed.
  const chunk = new Uint8Array(64 * KIB);
  const failure = await settlesWithin(
    (async () => {
      for (let sent = 0; sent < 64 * MIB; sent += chunk.length) await client.write(chunk);
    })().then(() => undefined, (error) => error),
    "the client's writes to fail",
    30_000,
  );
  assert.ok(failure instanceof SessionClosedError, String(failure));
  assert.match(failure.message, /Indirect server "hog" link failed: .*limit maxLinkQueueBytes/);
  assertNoAddress(failure.message);
  assert.equal(dp.dp.servers.has("hog"), false);
  await settlesWithin(drain(hog.conn), "the hog's link to end", 30_000);
  await assertEchoes(steady, "after");
});

/** A transport that says when its queue first asks writers to wait: bytes the peer has not read. */
class WatchedTransport implements Transport {
  readonly #inner: Transport;
  readonly #backedUp = Promise.withResolvers<void>();
  constructor(inner: Transport) {
    this.#inner = inner;
  }
  /** Resolves once the queue has passed its high-water mark. */
  get backedUp(): Promise<void> {
    return this.#backedUp.promise;
  }
  get localAddr() {
    return this.#inner.localAddr;
  }
  get remoteAddr() {
    return this.#inner.remoteAddr;
  }
  get queuedBytes() {
    return this.#inner.queuedBytes;
  }
  read() {
    return this.#inner.read();
  }
  write(bytes: Uint8Array) {
    return this.#watch(this.#inner.write(bytes));
  }
  backpressure() {
    return this.#watch(this.#inner.backpressure());
  }
  #watch(wait: Promise<void> | undefined): Promise<void> | undefined {
    if (wait) this.#backedUp.resolve();
    return wait;
  }
  finish(grace: number) {
    return this.#inner.finish(grace);
  }
  close() {
    return this.#inner.close();
  }
  abort() {
    this.#inner.abort();
  }
  ref() {
    this.#inner.ref();
  }
  unref() {
    this.#inner.unref();
  }
}

Deno.test("a client that never reads is dropped after its Close, within shutdownGrace", async () => {
  await using dp = await startDiscoverPoint({ shutdownGrace: 200 });
  // A server that sends until its session ends.
  await using _firehose = await serve(dp, "firehose", async (conn) => {
    const chunk = new Uint8Array(64 * KIB);
    for (;;) await conn.write(chunk);
  });
  // The link reaches the discover point through serveLink(), so the test sees its transport.
  using side = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using client = await RawPeer.connect(`127.0.0.1:${side.addr.port}`);
  const transport = new WatchedTransport(new TcpTransport(await side.accept()));
  const serving = dp.dp.serveLink(transport);
  await client.send(IC_ALOHA("never-reads"));
  assert.equal((await client.expect()).body.R, 4);
  await client.sendMessage(1, { N: "firehose" });
  const ack = await settlesWithin(client.expect(), "the Ack");
  assert.equal(ack.type, 2);
  // The client reads nothing more: once the kernel buffers are full, the discover point queues.
  await settlesWithin(transport.backedUp, "the discover point to queue bytes", 30_000);
  await client.sendMessage(4, { X: ack.body.X, R: "bye" });
  // Its Close echo cannot be flushed; the link goes anyway.
  await settlesWithin(serving, "the discover point to drop the link");
  assert.equal(dp.dp.stats().sessions, 0);
});

// ---- F8: pending Connects expire ------------------------------------------

Deno.test("a silent pool member's timed-out Connects stop blocking the name, and its link is dropped", async () => {
  await using dp = await startDiscoverPoint({ ackTimeout: 500, maxPendingPerServer: 3 });
  using mute = await rawServer(dp, "mute");
  const attempts = [0, 1, 2].map(() => later(connect({ dp: dp.address, name: "mute" })));
  for (let i = 0; i < 3; i++) {
    assert.equal((await settlesWithin(mute.expect(), "a Connect")).type, 1);
  }
  for (const attempt of attempts) {
    assertNoAddress(
      await refusedWith(attempt, /"mute" did not answer within 500 ms \(limit ackTimeout\)/),
    );
  }
  // The three timed out: they no longer count against maxPendingPerServer.
  const fourth = later(connect({ dp: dp.address, name: "mute" }));
  assert.equal((await settlesWithin(mute.expect(), "the fourth Connect")).type, 1);
  const reason = await refusedWith(fourth, /limit ackTimeout/);
  assert.doesNotMatch(reason, /maxPendingPerServer/);
  assertNoAddress(reason);
  // The link left its Connects unanswered for twice ackTimeout: the discover point drops it.
  assert.deepEqual(await settlesWithin(mute.untilEnd(), "the silent link to end"), []);
  // An honest server takes the name over.
  await using _server = await echoServer(dp, "mute");
  assert.deepEqual([...dp.dp.servers], [["mute", 1]]);
  using client = await connect({ dp: dp.address, name: "mute" });
  await assertEchoes(client, "served");
});

// ---- F11: binary Data frames are bounded from their header ----------------

Deno.test("a binary Data frame header over 256 KiB ends only the link that sent it", async (t) => {
  await using dp = await startDiscoverPoint();
  await using _steady = await echoServer(dp, "steady");
  using steady = await connect({ dp: dp.address, name: "steady" });
  for (
    const [length, pattern] of [
      [256 * KIB + 5, /Cannot decode frame: a Data frame carries at most 262144 bytes/],
      [0xffffffff, /Cannot decode frame: 4294967295 bytes is over the limit/],
    ] as const
  ) {
    await t.step(`L = ${length}`, async () => {
      using server = await FramePeer.connect(dp.address);
      await server.send('0\n{"V":10000,"R":2,"N":"big","F":["binary"]}\n');
      assert.deepEqual((await server.expectText()).body.F, ["binary"]);
      const opening = later(connect({ dp: dp.address, name: "big" }));
      assert.equal((await server.expectText()).type, 1);
      await server.sendMessage(2, { X: 1, R: "" });
      using client = await opening;
      // The header alone: the discover point decides before it allocates the frame.
      await server.send(dataHeader(length, 1));
      await settlesWithin(server.untilEnd(), "the discover point to end the link");
      const reason = await closeReasonOf(client);
      assert.match(reason, /Indirect server "big" link failed/);
      assert.match(reason, pattern);
      assert.equal(dp.dp.servers.has("big"), false);
      await assertEchoes(steady, `still here after ${length}`);
    });
  }
});

// ---- F7 and F6: global and per-source limits, idle sessions ---------------

Deno.test("DiscoverPoint maxLinks refuses one more link at once, and takes links again below it", async () => {
  await using dp = await startDiscoverPoint({ maxLinks: 3 });
  await using _steady = await echoServer(dp, "steady"); // link 1
  using steady = await connect({ dp: dp.address, name: "steady" }); // link 2
  const holder = await rawClient(dp, "steady"); // link 3
  using _holder = holder.peer;

  // The extra link is refused before it says anything.
  using extra = await RawPeer.connect(dp.address);
  const reason = await refusalOf(extra);
  assert.match(reason, /limit maxLinks = 3/);
  assertNoAddress(reason);
  using refused = listen({ dp: dp.address, name: "late" });
  await assert.rejects(refused.ready, /limit maxLinks = 3/);

  await assertEchoes(steady, "the open links carry on");
  await closeRawClient(holder);
  await closeRawClient(await rawClientOnceTaken(dp, "steady", /limit maxLinks = 3/));
});

Deno.test("DiscoverPoint maxNames refuses a new name only, and registers it once a name is gone", async () => {
  await using dp = await startDiscoverPoint({ maxNames: 1 });
  using first = await rawServer(dp, "first");
  using refused = listen({ dp: dp.address, name: "second" });
  await assert.rejects(refused.ready, /this discover point has 1 names \(limit maxNames = 1\)/);
  // A registered name still takes more links.
  using pooled = await rawServer(dp, "first");
  assert.deepEqual([...dp.dp.servers], [["first", 2]]);
  // Both links of "first" end (Data for a session they never opened is a protocol error).
  for (const peer of [first, pooled]) {
    await peer.sendMessage(3, { X: 9, C: "" });
    assert.deepEqual(await settlesWithin(peer.untilEnd(), "the link to end"), []);
  }
  assert.deepEqual([...dp.dp.servers], []);
  await using _second = await echoServer(dp, "second");
  using client = await connect({ dp: dp.address, name: "second" });
  await assertEchoes(client, "registered after all");
});

Deno.test("DiscoverPoint maxLinksPerSource refuses one more link from that address only", async () => {
  await using dp = await startDiscoverPoint({ maxLinksPerSource: 3, expose: { steady: 0 } });
  await using _steady = await echoServer(dp, "steady"); // 127.0.0.1: 1
  // A public-port connection counts too.
  const publicAddr = dp.dp.publicAddrs.get("steady")!;
  using plain = await Deno.connect({ hostname: "127.0.0.1", port: publicAddr.port }); // 2
  const echoed = new Uint8Array(4);
  await plain.write(new TextEncoder().encode("ping"));
  assert.equal(await plain.read(echoed), 4);
  const holder = await rawClient(dp, "steady"); // 3
  using _holder = holder.peer;

  using extra = await RawPeer.connect(dp.address);
  assert.match(await refusalOf(extra), /limit maxLinksPerSource = 3/);

  // Another address is not affected.
  const other = await firstAnswerFrom("127.0.0.2", dp.address, IS_ALOHA("elsewhere"));
  try {
    assert.equal(JSON.parse(other.lines[1]!).R, 4);
    assert.equal(dp.dp.servers.get("elsewhere"), 1);
  } finally {
    await closeSocket(other.socket);
  }

  // The open ones carry on; with one fewer, a link from 127.0.0.1 is taken again.
  await plain.write(new TextEncoder().encode("pong"));
  assert.equal(await plain.read(echoed), 4);
  await closeRawClient(holder);
  await closeRawClient(await rawClientOnceTaken(dp, "steady", /limit maxLinksPerSource = 3/));
});

Deno.test("DiscoverPoint maxHandshakesPerSource refuses one more link in its handshake, at once", async () => {
  // Links that say nothing stay in their handshake: its deadline is longer than any wait here.
  await using dp = await startDiscoverPoint({
    maxHandshakesPerSource: 2,
    handshakeTimeout: 60_000,
  });
  // Links past their handshake do not count.
  await using _steady = await echoServer(dp, "steady");
  using steady = await connect({ dp: dp.address, name: "steady" });
  // Two links that say nothing: both in their handshake.
  using quiet = await RawPeer.connect(dp.address);
  using late = await RawPeer.connect(dp.address);
  using extra = await RawPeer.connect(dp.address);
  assert.match(await refusalOf(extra), /limit maxHandshakesPerSource = 2/);
  await assertEchoes(steady, "registered links carry on");
  // One finishes its handshake; a new link may start one.
  await late.send(IS_ALOHA("late"));
  assert.equal((await late.expect()).body.R, 4);
  await closeRawClient(await rawClientOnceTaken(dp, "steady", /limit maxHandshakesPerSource/));
  quiet.close();
});

Deno.test("DiscoverPoint maxBufferedBytes refuses new sessions while exceeded, and only new ones", async () => {
  await using dp = await startDiscoverPoint({ maxBufferedBytes: 64 * KIB });
  const hogWritten = Promise.withResolvers<void>();
  await using _server = await serve(dp, "buf", async (conn) => {
    if (conn.remoteAddr.hostname !== "hog") return conn.readable.pipeTo(conn.writable);
    // The client's window takes 256 KiB; the rest waits at the discover point.
    await conn.write(new Uint8Array(384 * KIB));
    hogWritten.resolve();
    await conn.closed;
  });
  await using conns = new Conns();
  const probe = conns.add(await connect({ dp: dp.address, name: "buf", clientName: "probe" }));
  await assertEchoes(probe, "before");
  const hog = conns.add(await connect({ dp: dp.address, name: "buf", clientName: "hog" }));
  await settlesWithin(hogWritten.promise, "the server's write to the client that does not read");
  // This echo travels on the server's link behind the hog's bytes: they have arrived.
  await assertEchoes(probe, "marker");
  assert.ok(dp.dp.stats().bufferedBytes >= 64 * KIB, Deno.inspect(dp.dp.stats()));

  const reason = await refusedWith(
    connect({ dp: dp.address, name: "buf" }),
    /short of buffer space \(limit maxBufferedBytes = 65536\)/,
  );
  assertNoAddress(reason);
  await assertEchoes(probe, "open sessions carry on");

  hog.close();
  await hog.closed; // The discover point answered the Close: it dropped what it held.
  assert.ok(dp.dp.stats().bufferedBytes < 64 * KIB, Deno.inspect(dp.dp.stats()));
  await assertEchoes(conns.add(await connect({ dp: dp.address, name: "buf" })), "new again");
});

Deno.test("DiscoverPoint idleTimeout closes an idle session and keeps a busy one", async () => {
  await using dp = await startDiscoverPoint({ idleTimeout: 200 });
  await using _server = await echoServer(dp, "e");
  await using conns = new Conns();
  const idle = conns.add(await connect({ dp: dp.address, name: "e" }));
  await assertEchoes(idle, "then nothing");
  const busy = conns.add(await connect({ dp: dp.address, name: "e" }));
  let idleClosed = false;
  void idle.closed.then(() => idleClosed = true);
  let rounds = 0;
  await settlesWithin(
    (async () => {
      while (!idleClosed) {
        await assertEchoes(busy, `round ${rounds}`);
        rounds++;
      }
    })(),
    "the idle session to be closed",
  );
  const reason = await closeReasonOf(idle);
  assert.match(reason, /The session was idle for 200 ms \(limit idleTimeout\)/);
  // Cut short by the DP: reading says so, rather than passing for a whole stream.
  await assert.rejects(idle.readable.getReader().read(), cutShort(/idle for 200 ms/));
  assert.ok(rounds > 0);
  await assertEchoes(busy, "the busy session is still open");
});

// ---- F10: reasons name no address -----------------------------------------

Deno.test("a server link's keepalive death reaches its clients without the server's address", async () => {
  await using dp = await startDiscoverPoint({ keepalive: { interval: 100, timeout: 100 } });
  using hidden = await rawServer(dp, "hidden", ["keepalive"]);
  const opening = later(connect({ dp: dp.address, name: "hidden" }));
  assert.equal((await settlesWithin(hidden.expect(), "the Connect")).type, 1);
  await hidden.sendMessage(2, { X: 1, R: "" });
  using client = await opening;
  // The server now goes silent: it answers no Ping.
  const reason = await closeReasonOf(client);
  assert.match(reason, /Indirect server "hidden" link failed: .*keepalive/);
  assertNoAddress(reason);
  const seen = await settlesWithin(hidden.untilEnd(), "the discover point to drop the link");
  assert.deepEqual(seen, [{ type: 7, body: {} }]);
});

Deno.test("the discover point's refusals and closes name no address", async (t) => {
  await using dp = await startDiscoverPoint({
    ackTimeout: 200,
    maxSessionsPerServer: 2,
    maxPendingPerServer: 1,
  });
  const reasons: string[] = [];
  await t.step("no such name", async () => {
    reasons.push(await refusedWith(connect({ dp: dp.address, name: "nobody" }), /"nobody"/));
  });
  await t.step("maxSessionsPerServer", async () => {
    await using _server = await echoServer(dp, "full");
    using open = await connect({ dp: dp.address, name: "full" });
    using _second = await connect({ dp: dp.address, name: "full" });
    reasons.push(
      await refusedWith(connect({ dp: dp.address, name: "full" }), /maxSessionsPerServer/),
    );
    await assertEchoes(open, "open");
  });
  using mute = await rawServer(dp, "mute");
  await t.step("maxPendingPerServer and ackTimeout", async () => {
    const waiting = later(connect({ dp: dp.address, name: "mute" }));
    assert.equal((await settlesWithin(mute.expect(), "a Connect")).type, 1);
    reasons.push(
      await refusedWith(connect({ dp: dp.address, name: "mute" }), /maxPendingPerServer/),
    );
    reasons.push(await refusedWith(waiting, /limit ackTimeout/));
  });
  await t.step("a server link that breaks under a waiting client and an open session", async () => {
    using broken = await rawServer(dp, "broken");
    const open = later(connect({ dp: dp.address, name: "broken" }));
    assert.equal((await settlesWithin(broken.expect(), "a Connect")).type, 1);
    await broken.sendMessage(2, { X: 1, R: "" });
    using conn = await open;
    const waiting = later(connect({ dp: dp.address, name: "broken" }));
    assert.equal((await settlesWithin(broken.expect(), "a Connect")).type, 1);
    await broken.sendMessage(3, { X: 2, C: "" }); // Data for a session it never opened.
    reasons.push(await refusedWith(waiting, /"broken" link failed/));
    reasons.push(await closeReasonOf(conn));
  });
  await t.step("a server that closes its link", async () => {
    using gone = await rawServer(dp, "gone");
    const waiting = later(connect({ dp: dp.address, name: "gone" }));
    assert.equal((await settlesWithin(gone.expect(), "a Connect")).type, 1);
    gone.close();
    reasons.push(await refusedWith(waiting, /"gone" closed its link/));
  });
  assert.equal(reasons.length, 7);
  for (const reason of reasons) assertNoAddress(reason);
});
