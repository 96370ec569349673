/**
 * The extensions of PROTOCOL.md Part 3 working together and apart: a stalled
 * reader isolated by flow control, half-close exchanges, every mix of
 * extensions across server, client and discover point, binary frames and
 * credit enforcement on the wire, and the receive window's auto-tuning. The
 * library-level suites (a stalled reader, half-close, every mix of extensions)
 * run over TCP and over TLS links alike.
 */

import assert from "node:assert/strict";
import {
  connect,
  type IndirectConn,
  type IndirectListener,
  listen,
  ProtocolError,
  SessionClosedError,
} from "../mod.ts";
import { INITIAL_WINDOW, ReceiveWindow } from "../lib/link/flow.ts";
import { FakeClock } from "./_clock.ts";
import { ALL_FEATURES } from "../lib/link/link.ts";
import {
  assertEchoes,
  assertNothingArrives,
  concatBytes,
  cutShort,
  type InProcessDiscoverPoint,
  randomBytes,
  readAll,
  readExactly,
  readUntilEnd,
  settlesWithin,
  startDiscoverPoint,
  writeAll,
} from "./_helpers.ts";
import {
  asText,
  dataOf,
  describe,
  FramePeer,
  isConnectionGone,
  sha256,
  type TextMessage,
  type WireMessage,
} from "./_extensions.ts";
import { LINK_KINDS, startDiscoverPointOver } from "./_tls.ts";

const KIB = 1024;
const MIB = 1024 * 1024;

// ---- shared helpers --------------------------------------------------------

/** Reads to EOF through a reader that is already locked. */
async function readToEnd(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for (let result = await reader.read(); !result.done; result = await reader.read()) {
    chunks.push(result.value);
  }
  return concatBytes(chunks);
}

/** Echoes one session until its readable ends, then ends its write side; returns the bytes echoed. */
async function echoSession(conn: IndirectConn): Promise<number> {
  const reader = conn.readable.getReader();
  const writer = conn.writable.getWriter();
  let echoed = 0;
  try {
    for (let result = await reader.read(); !result.done; result = await reader.read()) {
      await writer.write(result.value);
      echoed += result.value.length;
    }
    await writer.close();
  } finally {
    reader.releaseLock();
    writer.releaseLock();
    conn.close();
  }
  return echoed;
}

/** Echoes every session of `listener` until it closes; settles once every session ended. */
async function serveEcho(listener: IndirectListener): Promise<void> {
  const sessions: Promise<unknown>[] = [];
  try {
    for await (const conn of listener) {
      sessions.push(
        echoSession(conn).catch(() => {
          // A bystander's echo may be cut when the test closes it mid-way; only its data is checked.
        }),
      );
    }
  } finally {
    await Promise.all(sessions);
  }
}

/** A library indirect server `name` that echoes, with one client session already echoing through it. */
async function startBystander(
  dp: InProcessDiscoverPoint,
  name: string,
): Promise<{ client: IndirectConn; listener: IndirectListener; serving: Promise<void> }> {
  const listener = listen({ dp: dp.address, name });
  await listener.ready;
  const serving = serveEcho(listener);
  const client = await connect({ dp: dp.address, name, clientName: "bystander" });
  await assertEchoes(client, "before");
  return { client, listener, serving };
}

/** Sends an Aloha from a raw peer and returns the discover point's answer. */
async function rawAloha(
  peer: FramePeer,
  role: 2 | 3,
  name: string,
  features?: string[],
): Promise<TextMessage> {
  await peer.sendMessage(0, { V: 10000, R: role, N: name, ...(features ? { F: features } : {}) });
  const aloha = await peer.expectText();
  assert.equal(aloha.type, 0);
  assert.equal(aloha.body.R, 4);
  return aloha;
}

/** Sends `data` as text Data messages of 64 KiB; a link the DP dropped meanwhile is fine. */
async function sendTextData(peer: FramePeer, sessionId: number, data: Uint8Array): Promise<void> {
  try {
    for (let offset = 0; offset < data.length; offset += 64 * KIB) {
      const content = data.subarray(offset, offset + 64 * KIB).toBase64();
      await peer.send(`3\n{"X":${sessionId},"C":"${content}"}\n`);
    }
  } catch (error) {
    if (!isConnectionGone(error)) throw error;
  }
}

/** Reads Data for `sessionId` until `length` bytes arrived; every message must pass `check`. */
async function receiveData(
  peer: FramePeer,
  sessionId: number,
  length: number,
  check: (message: WireMessage) => void,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let have = 0;
  while (have < length) {
    const message = await peer.expect();
    check(message);
    const content = dataOf(message);
    if (content === undefined) continue;
    const id = message.kind === "frame" ? message.sessionId : message.body.X;
    assert.equal(id, sessionId, describe(message));
    chunks.push(content);
    have += content.length;
  }
  return concatBytes(chunks);
}

/** Whether `error` is a SessionClosedError whose message matches `pattern`. */
function closedWith(pattern: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof SessionClosedError, `expected SessionClosedError, got ${error}`);
    assert.match(error.message, pattern);
    return true;
  };
}

// ---- 1. a stalled reader is isolated ---------------------------------------

for (
  const [link, stalled] of LINK_KINDS.flatMap((link) =>
    [[link, "server"], [link, "client"]] as const
  )
) {
  const writer = stalled === "server" ? "client" : "server";
  Deno.test(`flow-control over ${link}: a ${stalled} that stops reading holds only its own session, and the DP buffers at most one window for it`, async () => {
    await using dp = await startDiscoverPointOver(link, { maxWindow: MIB });
    const listener = listen({ dp: dp.dialed, ...dp.trust, name: "iso", pool: 1, maxWindow: MIB });
    const stalledServer = Promise.withResolvers<IndirectConn>();
    const echoes: Promise<unknown>[] = [];
    let stalledClient: IndirectConn | undefined;
    const accepting = (async () => {
      for (let i = 0; i < 51; i++) {
        const conn = await listener.accept();
        if (conn.remoteAddr.hostname === "stalled") stalledServer.resolve(conn);
        else echoes.push(echoSession(conn));
      }
    })();
    accepting.catch(stalledServer.reject);
    try {
      await listener.ready;
      stalledClient = await connect({
        dp: dp.dialed,
        ...dp.trust,
        name: "iso",
        clientName: "stalled",
        maxWindow: MIB,
      });
      const stalledServerConn = await stalledServer.promise;
      const [sending, reading] = stalled === "server"
        ? [stalledClient, stalledServerConn]
        : [stalledServerConn, stalledClient];
      // 8 MiB cannot all be in flight: credit stops the writer once both windows are full.
      const stalledData = randomBytes(8 * MIB);
      let stalledWriteDone = false;
      const stalledWrite = writeAll(sending.writable, stalledData, 64 * KIB);
      stalledWrite.then(() => stalledWriteDone = true, () => {});

      let largestSample = 0;
      const sample = () => {
        largestSample = Math.max(largestSample, dp.dp.stats().maxSessionBufferedBytes);
      };
      await settlesWithin(
        Promise.all(Array.from({ length: 50 }, async (_, i) => {
          using client = await connect({
            dp: dp.dialed,
            ...dp.trust,
            name: "iso",
            clientName: `c${i}`,
            maxWindow: MIB,
          });
          const data = randomBytes(MIB);
          const [, echoed] = await Promise.all([
            writeAll(client.writable, data, 64 * KIB),
            readAll(client.readable),
          ]);
          assert.equal(echoed.length, data.length, `session c${i}`);
          assert.equal(await sha256(echoed), await sha256(data), `session c${i}`);
          await client.closed;
          sample();
        })),
        "the 50 other sessions to finish beside the stalled one",
        120_000,
      );
      assert.deepEqual(await Promise.all(echoes), Array(50).fill(MIB));

      // The stalled session is still held, and the discover point holds at most one window of it.
      assert.equal(stalledWriteDone, false, `the stalled ${writer}'s 8 MiB write already finished`);
      sample();
      const stats = dp.dp.stats();
      assert.equal(stats.sessions, 1, Deno.inspect(stats));
      assert.ok(
        largestSample <= MIB,
        `a session buffered ${largestSample} bytes at the DP, over the 1 MiB window`,
      );

      // Resuming the reader delivers everything, intact.
      const received = await settlesWithin(
        readAll(reading.readable),
        "the stalled session's 8 MiB",
        60_000,
      );
      await stalledWrite;
      assert.equal(received.length, stalledData.length);
      assert.equal(await sha256(received), await sha256(stalledData));
      await reading.closeWrite();
      await settlesWithin(Promise.all([stalledClient.closed, stalledServerConn.closed]), "closed");
    } finally {
      stalledClient?.close();
      stalledServer.promise.then((conn) => conn.close(), () => {});
      listener.close();
      await accepting.catch(() => {});
      await Promise.allSettled(echoes);
    }
  });
}

// ---- 2. half-close: request, EOF, response ----------------------------------

for (const link of LINK_KINDS) {
  for (const first of ["client", "server"] as const) {
    for (const finish of ["close", "closeWrite"] as const) {
      const other = first === "client" ? "server" : "client";
      Deno.test(`half-close over ${link}: the ${first} sends a request and closeWrite(), the ${other} reads it to EOF, answers and ${finish}()s`, async () => {
        await using dp = await startDiscoverPointOver(link);
        using listener = listen({ dp: dp.dialed, ...dp.trust, name: "rpc" });
        const accepted = listener.accept();
        using client = await connect({ dp: dp.dialed, ...dp.trust, name: "rpc" });
        using server = await accepted;
        const [asker, answerer] = first === "client" ? [client, server] : [server, client];
        const request = randomBytes(600 * KIB);
        const response = randomBytes(700 * KIB);

        const asking = (async () => {
          const writer = asker.writable.getWriter();
          for (let offset = 0; offset < request.length; offset += 64 * KIB) {
            await writer.write(request.slice(offset, offset + 64 * KIB));
          }
          writer.releaseLock();
          await asker.closeWrite();
          await assert.rejects(asker.write(new Uint8Array(1)), SessionClosedError);
          // The asker's read side stays open for the whole answer, then ends.
          return await readAll(asker.readable);
        })();

        const heard = await settlesWithin(readAll(answerer.readable), "EOF after the request");
        assert.equal(heard.length, request.length);
        assert.deepEqual(heard, request);
        await writeAll(answerer.writable, response, 64 * KIB).catch((error) => {
          throw new Error("Cannot answer after the peer's closeWrite()", { cause: error });
        });
        if (finish === "close") answerer.close();
        else await answerer.closeWrite();

        const answer = await settlesWithin(asking, "the response and EOF");
        assert.equal(answer.length, response.length);
        assert.deepEqual(answer, response);
        await settlesWithin(Promise.all([client.closed, server.closed]), "both ends closed");
      });
    }
  }
}

// ---- 3. every mix of extensions ----------------------------------------------

const FEATURE_SETS: Record<string, typeof ALL_FEATURES> = {
  all: ALL_FEATURES,
  none: [],
  binary: ["binary"],
  "flow-control": ["flow-control"],
  "half-close": ["half-close"],
  "flow-control+binary": ["flow-control", "binary"],
};

for (const link of LINK_KINDS) {
  for (const [dpLabel, dpFeatures] of [["all", ALL_FEATURES], ["none", []]] as const) {
    for (const [isLabel, isFeatures] of Object.entries(FEATURE_SETS)) {
      for (const [icLabel, icFeatures] of Object.entries(FEATURE_SETS)) {
        Deno.test(`extension mix over ${link}: IS ${isLabel} × IC ${icLabel} × DP ${dpLabel} echoes 300 KiB and closes`, async () => {
          await using dp = await startDiscoverPointOver(link, { features: dpFeatures });
          const listener = listen({
            dp: dp.dialed,
            ...dp.trust,
            name: "mix",
            features: isFeatures,
          });
          const served = listener.accept().then(echoSession);
          try {
            await listener.ready;
            using client = await connect({
              dp: dp.dialed,
              ...dp.trust,
              name: "mix",
              features: icFeatures,
            });
            // closeWrite() reaches the server only when every link agreed on half-close.
            const halfClose = [dpFeatures, isFeatures, icFeatures].every((features) =>
              features.includes("half-close")
            );
            const data = randomBytes(300 * KIB);
            const writer = client.writable.getWriter();
            const reader = client.readable.getReader();
            const [, echoed] = await settlesWithin(
              Promise.all([
                (async () => {
                  for (let offset = 0; offset < data.length; offset += 50_000) {
                    await writer.write(data.slice(offset, offset + 50_000));
                  }
                  if (halfClose) await writer.close();
                })(),
                halfClose ? readToEnd(reader) : readExactly(reader, data.length),
              ]),
              "the echo",
              30_000,
            );
            assert.equal(echoed.length, data.length);
            assert.deepEqual(echoed, data);
            if (!halfClose) client.close();
            await settlesWithin(client.closed, "the client's session to end");
            assert.equal(await settlesWithin(served, "the server's session to end"), data.length);
          } finally {
            listener.close();
            await served.catch(() => {});
          }
        });
      }
    }
  }
}

/** Asserts that an original peer only ever saw Part 1 messages of the given types, as text. */
function assertPartOne(messages: readonly WireMessage[], types: readonly number[]): void {
  for (const message of messages) {
    assert.equal(message.kind, "text", `an original peer got ${describe(message)}`);
    assert.ok(types.includes(message.type), `an original peer got ${describe(message)}`);
    if (message.type === 3) assert.deepEqual(Object.keys(message.body).sort(), ["C", "X"]);
  }
}

Deno.test("extension mix: an original client (no F) and a server with every extension see only Part 1", async () => {
  // A short keepalive interval: the server's link is pinged, the original client's never.
  await using dp = await startDiscoverPoint({ keepalive: { interval: 50, timeout: 5000 } });
  const listener = listen({ dp: dp.address, name: "modern" });
  const accepted = listener.accept();
  try {
    await listener.ready;
    using raw = await FramePeer.connect(dp.address);
    const seen: WireMessage[] = [];
    const record = (message: WireMessage) => void seen.push(message);
    const aloha = await rawAloha(raw, 3, "original");
    seen.push(aloha);
    assert.equal(aloha.body.F, undefined, "the DP announced extensions to a peer that sent no F");
    await raw.sendMessage(1, { N: "modern" });
    const ack = await raw.expectText();
    seen.push(ack);
    assert.equal(ack.type, 2);
    const id: number = ack.body.X;
    using server = await accepted;

    // Idle: no Ping (or anything else) reaches the original client.
    const firstAfterAck = raw.expect();
    await assertNothingArrives(firstAfterAck, 200);

    // 600 KiB each way: more than a window, so the server's link carries Credits.
    const data = randomBytes(600 * KIB);
    const serving = (async () => {
      const reader = server.readable.getReader();
      const writer = server.writable.getWriter();
      const request = await readExactly(reader, data.length);
      await writer.write(request);
      writer.releaseLock();
      reader.releaseLock();
      // An End the original client cannot understand, then a Close.
      await server.closeWrite();
      server.close();
    })();
    const [, echoed] = await Promise.all([
      sendTextData(raw, id, data),
      (async () => {
        const first = await firstAfterAck;
        record(first);
        const content = dataOf(first);
        assert.ok(content !== undefined, describe(first));
        const rest = await receiveData(raw, id, data.length - content.length, record);
        return concatBytes([content, rest]);
      })(),
    ]);
    assert.deepEqual(echoed, data);
    await serving;
    const tail = await settlesWithin(raw.untilEnd(), "the Close and the end of the link");
    seen.push(...tail);
    assert.deepEqual(tail.map((message) => [message.type, asText(message).body.X]), [[4, id]]);
    assertPartOne(seen, [0, 2, 3, 4]);
    await server.closed;
  } finally {
    listener.close();
    await accepted.then((conn) => conn.close(), () => {});
  }
});

Deno.test("extension mix: an original server (no F) and a client with every extension see only Part 1", async () => {
  await using dp = await startDiscoverPoint();
  using raw = await FramePeer.connect(dp.address);
  const aloha = await rawAloha(raw, 2, "vintage");
  assert.equal(aloha.body.F, undefined, "the DP announced extensions to a peer that sent no F");
  const seen: WireMessage[] = [aloha];
  const record = (message: WireMessage) => void seen.push(message);
  const connecting = connect({ dp: dp.address, name: "vintage", clientName: "modern" });
  const connectMessage = await raw.expectText();
  seen.push(connectMessage);
  assert.equal(connectMessage.type, 1);
  assert.equal(connectMessage.body.N, "modern");
  await raw.sendMessage(2, { X: 5, R: "" });
  using client = await connecting;

  // The original server sends more than a window without any Credit: that is its right.
  const down = randomBytes(300 * KIB);
  const reader = client.readable.getReader();
  const [, downReceived] = await Promise.all([
    sendTextData(raw, 5, down),
    readExactly(reader, down.length),
  ]);
  assert.deepEqual(downReceived, down);

  // The client's bytes reach it as text Data; its closeWrite() becomes a Close after them.
  const up = randomBytes(600 * KIB);
  const [, upReceived] = await Promise.all([
    writeAll(client.writable, up, 100_000),
    receiveData(raw, 5, up.length, record),
  ]);
  assert.deepEqual(upReceived, up);
  const close = await settlesWithin(raw.expectText(), "the Close after the client's bytes");
  seen.push(close);
  assert.deepEqual([close.type, close.body.X], [4, 5]);
  // Nothing follows on the server's link (no End, no Credit); it stays registered.
  const after = raw.next();
  await assertNothingArrives(after, 100);
  assertPartOne(seen, [0, 1, 3, 4]);
  assert.equal(dp.dp.servers.get("vintage"), 1);
  raw.close();
  assert.equal(await after, null);
  assert.equal((await reader.read()).done, true);
  await client.closed;
});

// ---- 4. binary frames on the wire -------------------------------------------

Deno.test("binary: a raw server that announced binary gets Data as frames and may send frames", async () => {
  await using dp = await startDiscoverPoint();
  using raw = await FramePeer.connect(dp.address);
  const aloha = await rawAloha(raw, 2, "framed", ["binary"]);
  assert.deepEqual(aloha.body.F, ["binary"]);
  const connecting = connect({ dp: dp.address, name: "framed", clientName: "lib" });
  const connectMessage = await raw.expectText();
  assert.deepEqual([connectMessage.type, connectMessage.body.N], [1, "lib"]);
  await raw.sendMessage(2, { X: 9, R: "" });
  using client = await connecting;

  // One write: one frame, byte for byte.
  const hello = new TextEncoder().encode("hello, frames");
  await client.write(hello);
  const first = await raw.expect();
  assert.equal(first.kind, "frame", describe(first));
  assert.deepEqual(
    first.raw,
    Uint8Array.of(0xb3, 0, 0, 0, 4 + hello.length, 0, 0, 0, 9, ...hello),
  );

  // Frames and text Data from the raw server both reach the client, in order.
  const reader = client.readable.getReader();
  const reply = randomBytes(100_000);
  await raw.sendFrame(3, 9, reply);
  await raw.sendMessage(3, { X: 9, C: "dGV4dA==" });
  const back = await readExactly(reader, reply.length + 4);
  assert.deepEqual(back, concatBytes([reply, new TextEncoder().encode("text")]));

  // Bulk: frames of at most 256 KiB, no text Data, and no Credit (flow-control was not agreed).
  const bulk = randomBytes(600 * KIB);
  const [, received] = await Promise.all([
    client.write(bulk),
    receiveData(raw, 9, bulk.length, (message) => {
      assert.ok(message.kind === "frame" && message.type === 3, describe(message));
      assert.ok(message.payload.length <= 256 * KIB, describe(message));
    }),
  ]);
  assert.deepEqual(received, bulk);

  client.close();
  const close = await raw.expectText();
  assert.deepEqual([close.type, close.body.X], [4, 9]);
  reader.releaseLock();
});

for (const closeOnce of [true, false]) {
  const label = closeOnce
    ? "with close-once the DP does not answer"
    : "without close-once the DP answers";
  Deno.test(`close-once: ${label} a raw server's Close`, async () => {
    await using dp = await startDiscoverPoint();
    using raw = await FramePeer.connect(dp.address);
    const aloha = await rawAloha(raw, 2, "once", closeOnce ? ["close-once"] : ["half-close"]);
    assert.equal((aloha.body.F as string[]).includes("close-once"), closeOnce);
    for (const [id, client] of [[7, "first"], [8, "second"]] as const) {
      const connecting = connect({ dp: dp.address, name: "once", clientName: client });
      const connectMessage = await raw.expectText();
      if (id === 8 && !closeOnce) {
        // The answer to the first session's Close came before the second Connect.
        assert.deepEqual([connectMessage.type, connectMessage.body], [4, { X: 7, R: "" }]);
        assert.equal((await raw.expectText()).type, 1);
      } else assert.deepEqual([connectMessage.type, connectMessage.body.N], [1, client]);
      await raw.sendMessage(2, { X: id, R: "" });
      using conn = await connecting;
      await raw.sendMessage(4, { X: id, R: "" });
      assert.deepEqual(await readAll(conn.readable), new Uint8Array());
    }
  });
}

const BAD_FRAMES: readonly [string, Uint8Array, RegExp][] = [
  [
    "a frame of a type without binary form",
    Uint8Array.of(0xb4, 0, 0, 0, 4, 0, 0, 0, 1),
    /Cannot decode frame: type 4 has no binary form/,
  ],
  [
    "a frame over the length limit",
    Uint8Array.of(0xb3, 0x00, 0x10, 0x00, 0x01), // 1 MiB + 1
    /Cannot decode frame: 1048577 bytes is over the limit of 1048576/,
  ],
  [
    "a Credit frame without flow-control",
    Uint8Array.of(0xb6, 0, 0, 0, 8, 0, 0, 0, 1, 0, 1, 0, 0),
    /extension "flow-control" was not agreed/,
  ],
];

for (const [label, bad, reason] of BAD_FRAMES) {
  Deno.test(`binary: ${label} from a server ends only that server's link`, async () => {
    await using dp = await startDiscoverPoint();
    const bystander = await startBystander(dp, "bystander");
    try {
      using raw = await FramePeer.connect(dp.address);
      await rawAloha(raw, 2, "victim", ["binary"]);
      const connecting = connect({ dp: dp.address, name: "victim" });
      assert.equal((await raw.expectText()).type, 1);
      await raw.sendMessage(2, { X: 1, R: "" });
      using client = await connecting;
      const reader = client.readable.getReader();
      await raw.sendFrame(3, 1, new TextEncoder().encode("ok"));
      assert.deepEqual(await readExactly(reader, 2), new TextEncoder().encode("ok"));

      await raw.send(bad);
      const rest = await settlesWithin(raw.untilEnd(), "the DP to end the server's link");
      assert.deepEqual(rest.map(describe), []);
      // Its session ends with a Close whose reason says what the server did wrong.
      await assert.rejects(
        settlesWithin(reader.read(), "its client's read to fail"),
        cutShort(reason),
      );
      await client.closed;
      await assert.rejects(client.write(new Uint8Array(1)), closedWith(reason));
      reader.releaseLock();

      // Everything else carries on.
      await assertEchoes(bystander.client, "after");
      using another = await connect({ dp: dp.address, name: "bystander" });
      await assertEchoes(another, "a new session");
      assert.deepEqual([...dp.dp.servers], [["bystander", 1]]);
    } finally {
      bystander.client.close();
      bystander.listener.close();
      await bystander.serving;
    }
  });

  Deno.test(`binary: ${label} from a client ends only that client's link`, async () => {
    await using dp = await startDiscoverPoint();
    const listener = listen({ dp: dp.address, name: "svc", pool: 1 });
    const sessions: IndirectConn[] = [];
    try {
      await listener.ready;
      // A bystander on the same server link, echoing.
      const bystanderAccepted = listener.accept();
      using bystander = await connect({ dp: dp.address, name: "svc" });
      const bystanderServer = await bystanderAccepted;
      sessions.push(bystanderServer);
      const echoing = echoSession(bystanderServer).catch(() => 0);
      await assertEchoes(bystander, "before");

      using raw = await FramePeer.connect(dp.address);
      assert.deepEqual((await rawAloha(raw, 3, "victim", ["binary"])).body.F, ["binary"]);
      const accepted = listener.accept();
      await raw.sendMessage(1, { N: "svc" });
      const server = await accepted;
      sessions.push(server);
      const ack = await raw.expectText();
      assert.deepEqual([ack.type, ack.body.X], [2, server.sessionId]);
      await raw.sendFrame(3, server.sessionId, new TextEncoder().encode("ok"));
      const reader = server.readable.getReader();
      assert.deepEqual(await readExactly(reader, 2), new TextEncoder().encode("ok"));

      await raw.send(bad);
      const rest = await settlesWithin(raw.untilEnd(), "the DP to end the client's link");
      assert.deepEqual(rest.map(describe), []);
      await assert.rejects(
        settlesWithin(reader.read(), "its server's read to fail"),
        cutShort(reason),
      );
      await server.closed;
      await assert.rejects(server.write(new Uint8Array(1)), closedWith(reason));
      reader.releaseLock();

      await assertEchoes(bystander, "after");
      assert.deepEqual([...dp.dp.servers], [["svc", 1]]);
      bystander.close();
      await echoing;
    } finally {
      for (const session of sessions) session.close();
      listener.close();
    }
  });
}

// ---- 5. flow-control is enforced --------------------------------------------

Deno.test("flow-control: a client that sends past its credit has its link ended, with a reason, and only that", async () => {
  // A window that cannot grow, and a server that never reads: the credit the DP can ever
  // grant is one window it forwards to the server plus one window it holds.
  await using dp = await startDiscoverPoint({ maxWindow: INITIAL_WINDOW });
  const listener = listen({ dp: dp.address, name: "fc", pool: 1 });
  const sessions: IndirectConn[] = [];
  try {
    await listener.ready;
    const bystanderAccepted = listener.accept();
    using bystander = await connect({ dp: dp.address, name: "fc" });
    const bystanderServer = await bystanderAccepted;
    sessions.push(bystanderServer);
    const echoing = echoSession(bystanderServer).catch(() => 0);
    await assertEchoes(bystander, "before");

    using raw = await FramePeer.connect(dp.address);
    assert.deepEqual((await rawAloha(raw, 3, "greedy", ["flow-control"])).body.F, [
      "flow-control",
    ]);
    const accepted = listener.accept();
    await raw.sendMessage(1, { N: "fc" });
    const server = await accepted;
    sessions.push(server);
    const id = server.sessionId;
    assert.deepEqual((await raw.expectText()).body.X, id);

    const data = randomBytes(MIB);
    await sendTextData(raw, id, data); // ignoring every Credit
    const rest = await settlesWithin(raw.untilEnd(), "the DP to end the greedy client's link");
    for (const message of rest) {
      assert.ok(message.kind === "text" && message.type === 6, describe(message));
    }

    // The server gets what the DP accepted (a prefix, within the credit), then a Close saying why.
    const { bytes: delivered, error } = await settlesWithin(
      readUntilEnd(server.readable),
      "the end for the server",
    );
    cutShort(/exceeded its flow-control credit/)(error);
    assert.ok(delivered.length <= 2 * INITIAL_WINDOW, `${delivered.length} bytes delivered`);
    assert.deepEqual(delivered, data.subarray(0, delivered.length));
    await server.closed;
    await assert.rejects(
      server.write(new Uint8Array(1)),
      closedWith(/exceeded its flow-control credit/),
    );

    // The server's link and its other session carry on.
    await assertEchoes(bystander, "after");
    assert.deepEqual([...dp.dp.servers], [["fc", 1]]);
    bystander.close();
    await echoing;
  } finally {
    for (const session of sessions) session.close();
    listener.close();
  }
});

Deno.test("flow-control: a server that sends past its credit has its link ended, with a reason, and only that", async () => {
  await using dp = await startDiscoverPoint({ maxWindow: INITIAL_WINDOW });
  const bystander = await startBystander(dp, "bystander");
  try {
    using raw = await FramePeer.connect(dp.address);
    assert.deepEqual((await rawAloha(raw, 2, "greedy", ["flow-control"])).body.F, [
      "flow-control",
    ]);
    const connecting = connect({ dp: dp.address, name: "greedy" });
    assert.equal((await raw.expectText()).type, 1);
    await raw.sendMessage(2, { X: 3, R: "" });
    using client = await connecting; // and it does not read, for now

    const data = randomBytes(MIB);
    await sendTextData(raw, 3, data);
    const rest = await settlesWithin(raw.untilEnd(), "the DP to end the greedy server's link");
    for (const message of rest) {
      assert.ok(message.kind === "text" && message.type === 6, describe(message));
    }

    const { bytes: delivered, error } = await settlesWithin(
      readUntilEnd(client.readable),
      "the end for the client",
    );
    cutShort(/greedy.*exceeded its flow-control credit/)(error);
    assert.ok(delivered.length <= 2 * INITIAL_WINDOW, `${delivered.length} bytes delivered`);
    assert.deepEqual(delivered, data.subarray(0, delivered.length));
    await client.closed;
    await assert.rejects(
      client.write(new Uint8Array(1)),
      closedWith(/greedy.*exceeded its flow-control credit/),
    );

    await assertEchoes(bystander.client, "after");
    assert.deepEqual([...dp.dp.servers], [["bystander", 1]]);
  } finally {
    bystander.client.close();
    bystander.listener.close();
    await bystander.serving;
  }
});

// ---- 6. the receive window's auto-tuning -------------------------------------

Deno.test("ReceiveWindow doubles up to maxWindow while the reader drains each burst and the sender runs dry", () => {
  // Each round takes 10 ms of the window's clock: well within the 100 ms that makes it grow.
  const clock = new FakeClock();
  const window = new ReceiveWindow(4 * MIB, () => clock.now());
  let credit = INITIAL_WINDOW;
  const windows = [window.window];
  for (let round = 0; round < 8; round++) {
    clock.advance(10);
    window.received(credit); // the sender spends all it may: it is about to stall
    credit = window.consumed(credit); // the reader keeps up: everything is consumed at once
    assert.equal(window.buffered, 0);
    assert.equal(credit, window.window, "the credit returned refills a whole window");
    windows.push(window.window);
  }
  assert.deepEqual(windows.map((bytes) => bytes / KIB), [
    256,
    512,
    1024,
    2048,
    4096,
    4096,
    4096,
    4096,
    4096,
  ]);
});

Deno.test("ReceiveWindow does not grow for a slow reader, however fast its clock says it reads", () => {
  const clock = new FakeClock();
  const window = new ReceiveWindow(4 * MIB, () => clock.now());
  window.received(INITIAL_WINDOW);
  let credited = 0;
  for (let step = 0; step < 1000; step++) {
    // The reader takes 16 KiB at a time; the sender refills at once with whatever comes back.
    const credit = window.consumed(16 * KIB);
    if (credit > 0) window.received(credit);
    credited += credit;
    assert.equal(window.window, INITIAL_WINDOW, `step ${step}`);
    assert.ok(window.buffered <= INITIAL_WINDOW, `step ${step}: ${window.buffered} buffered`);
  }
  assert.equal(credited, 1000 * 16 * KIB, "credit still flows back as the reader consumes");
});

Deno.test("ReceiveWindow.received() beyond the granted credit throws ProtocolError", () => {
  const fresh = new ReceiveWindow();
  fresh.received(INITIAL_WINDOW);
  assert.throws(
    () => fresh.received(1),
    (error: unknown) =>
      error instanceof ProtocolError &&
      /exceeded its flow-control credit by 1 bytes/.test(error.message),
  );

  const credited = new ReceiveWindow();
  credited.received(INITIAL_WINDOW);
  const credit = credited.consumed(INITIAL_WINDOW);
  assert.ok(credit > 0);
  credited.received(credit); // exactly what was granted is fine
  assert.throws(() => credited.received(1), ProtocolError);

  assert.throws(() => new ReceiveWindow().received(INITIAL_WINDOW + 1), ProtocolError);
});

Deno.test("ReceiveWindow never goes below the initial window, whatever maxWindow says", () => {
  const window = new ReceiveWindow(1024);
  assert.equal(window.window, INITIAL_WINDOW);
  window.received(INITIAL_WINDOW);
  assert.equal(window.consumed(INITIAL_WINDOW), INITIAL_WINDOW);
  assert.equal(window.window, INITIAL_WINDOW);
});

// The way the library feeds a window: one consumed() per Data message (the DP's pipe per
// forwarded chunk, an IndirectConn per chunk read), with the reader keeping up and the sender
// spending all its credit every round trip. PROTOCOL.md Part 3 says the window then doubles up
// to maxWindow.
for (const [codec, messageBytes] of [["text", 64 * KIB], ["binary", 256 * KIB]] as const) {
  Deno.test(`ReceiveWindow grows to maxWindow when a keeping-up reader consumes ${codec} Data message by message`, () => {
    const maxWindow = 4 * MIB;
    // A round trip of 1 ms on the window's clock, however long the machine takes.
    const clock = new FakeClock();
    const window = new ReceiveWindow(maxWindow, () => clock.now());
    let credit = INITIAL_WINDOW;
    let stalls = 0;
    for (let round = 0; round < 64 && window.window < maxWindow; round++) {
      clock.advance(1);
      // One round trip: the sender sends all its credit in messages, then waits (stalls).
      const messages: number[] = [];
      for (; credit > 0; credit -= Math.min(messageBytes, credit)) {
        messages.push(Math.min(messageBytes, credit));
      }
      stalls++;
      // The reader keeps up: each message is consumed as it arrives; credit returns a round trip later.
      for (const bytes of messages) {
        window.received(bytes);
        credit += window.consumed(bytes);
        assert.equal(window.buffered, 0);
      }
    }
    assert.equal(
      window.window,
      maxWindow,
      `after ${stalls} round trips in which the sender ran dry, the window is ${
        window.window / KIB
      } KiB`,
    );
  });
}
