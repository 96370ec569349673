/**
 * Extension `multiplex` (PROTOCOL.md Part 3): many sessions on one indirect
 * client link, numbered by the client. `IndirectDialer` end to end, the
 * fallback to a link per session, and hand-written links that misbehave.
 * @module
 */

import assert from "node:assert/strict";
import { IndirectDialer, listen, SessionRefusedError } from "../mod.ts";
import {
  assertEchoes,
  eventually,
  type InProcessDiscoverPoint,
  IS_ALOHA,
  type RawMessage,
  RawPeer,
  startDiscoverPoint,
} from "./_helpers.ts";

const MULTIPLEX_ALOHA = `0\n${JSON.stringify({ V: 10000, R: 3, N: "raw", F: ["multiplex"] })}\n`;

/** Echoes every session of `listener` until it closes; resolves once all ended. */
async function serveEcho(listener: Deno.Listener<Deno.Conn>): Promise<void> {
  const sessions: Promise<void>[] = [];
  for await (const conn of listener) {
    sessions.push(
      conn.readable.pipeTo(conn.writable).catch(() => {
        // The client may close its session while an echo is in flight.
      }),
    );
  }
  await Promise.all(sessions);
}

/** A discover point with an echo server registered as "echo"; disposing stops both. */
async function echoAt(
  options: Parameters<typeof startDiscoverPoint>[0] = {},
): Promise<{ dp: InProcessDiscoverPoint } & AsyncDisposable> {
  const dp = await startDiscoverPoint(options);
  const listener = listen({ dp: dp.address, name: "echo", pool: 1 });
  const serving = serveEcho(listener);
  await listener.ready;
  return {
    dp,
    async [Symbol.asyncDispose]() {
      listener.close();
      await serving;
      await dp[Symbol.asyncDispose]();
    },
  };
}

/** Sends a text message on a raw link. */
function send(peer: RawPeer, type: number, body: unknown): Promise<void> {
  return peer.sendMessage(type, body);
}

/** Reads the next message, which must be of `type`; returns its body. */
async function expectType(peer: RawPeer, type: number): Promise<RawMessage["body"]> {
  const message = await peer.expect();
  assert.equal(message.type, type, `expected type ${type}, got ${JSON.stringify(message)}`);
  return message.body;
}

/** Sends Connect `X` to "echo" on a raw multiplexed link; asserts that it is acknowledged. */
async function opens(peer: RawPeer, number: number): Promise<void> {
  await send(peer, 1, { N: "echo", X: number });
  assert.deepEqual(await expectType(peer, 2), { X: number, R: "" });
}

/** Sends Connect `X` to `name`; asserts that a Close refuses it with a reason matching `reason`. */
async function refused(
  peer: RawPeer,
  number: number,
  reason: RegExp,
  name = "echo",
): Promise<void> {
  await send(peer, 1, { N: name, X: number });
  const refusal = await expectType(peer, 4);
  assert.equal(refusal.X, number);
  assert.match(refusal.R, reason);
}

/** Opens a raw client link that agreed on multiplex. */
async function multiplexedPeer(address: string): Promise<RawPeer> {
  const peer = await RawPeer.connect(address);
  await peer.send(MULTIPLEX_ALOHA);
  const aloha = await expectType(peer, 0);
  assert.ok(aloha.F.includes("multiplex"), `the DP did not agree: ${JSON.stringify(aloha)}`);
  return peer;
}

Deno.test("IndirectDialer carries concurrent sessions over one link", async () => {
  await using echo = await echoAt();
  const { dp } = echo;
  await using dialer = new IndirectDialer({ dp: dp.address, name: "echo" });
  using first = await dialer.connect();
  const linksWithOne = dp.dp.stats().links;
  const others = await Promise.all([1, 2, 3, 4].map(() => dialer.connect()));
  try {
    assert.equal(dp.dp.stats().links, linksWithOne, "the sessions share the first one's link");
    assert.equal(dp.dp.stats().sessions, 5);
    assert.equal(new Set([first, ...others].map((conn) => conn.sessionId)).size, 5);
    await Promise.all([first, ...others].map((conn, i) => assertEchoes(conn, `session ${i}`)));
  } finally {
    for (const conn of others) conn.close();
  }
  await assertEchoes(first, "still open");
});

Deno.test("IndirectDialer: a refused session leaves the link for the next", async () => {
  await using dp = await startDiscoverPoint();
  await using dialer = new IndirectDialer({ dp: dp.address, name: "later" });
  await assert.rejects(dialer.connect(), (error) => {
    assert.ok(error instanceof SessionRefusedError, String(error));
    assert.match(error.message, /No indirect server is registered as "later"/);
    return true;
  });
  const links = dp.dp.stats().links;
  const listener = listen({ dp: dp.address, name: "later" });
  const serving = serveEcho(listener);
  try {
    await listener.ready;
    using conn = await dialer.connect();
    await assertEchoes(conn, "after a refusal");
    // One more link: the server's. The client's is the one the refusal came on.
    assert.equal(dp.dp.stats().links, links + 1);
  } finally {
    listener.close();
    await serving;
  }
});

Deno.test("IndirectDialer opens a link per session where the DP does not multiplex", async () => {
  await using echo = await echoAt({
    features: ["half-close", "keepalive", "flow-control", "binary"],
  });
  const { dp } = echo;
  const servers = dp.dp.stats().links;
  await using dialer = new IndirectDialer({ dp: dp.address, name: "echo" });
  using a = await dialer.connect();
  using b = await dialer.connect();
  assert.equal(dp.dp.stats().links, servers + 2);
  await Promise.all([assertEchoes(a, "first"), assertEchoes(b, "second")]);
});

Deno.test("IndirectDialer: when its link's DP goes, the next session dials the next DP", async () => {
  await using first = await startDiscoverPoint();
  await using second = await startDiscoverPoint();
  const listener = listen({ dp: [first.address, second.address], name: "echo" });
  const serving = serveEcho(listener);
  try {
    await eventually(
      () => first.dp.stats().servers === 1 && second.dp.stats().servers === 1,
      "the server at both discover points",
    );
    await using dialer = new IndirectDialer({ dp: [first.address, second.address], name: "echo" });
    using before = await dialer.connect();
    await assertEchoes(before, "through the first");
    assert.equal(second.dp.stats().sessions, 0);
    await first.dp.close();
    await assert.rejects(before.read(new Uint8Array(8)), Deno.errors.ConnectionReset);
    using after = await dialer.connect();
    await assertEchoes(after, "through the second");
    assert.equal(second.dp.stats().sessions, 1);
  } finally {
    listener.close();
    await serving;
  }
});

Deno.test("IndirectDialer: a session the server ends frees its number, the link goes on", async () => {
  await using dp = await startDiscoverPoint();
  const listener = listen({ dp: dp.address, name: "once" });
  const served = (async () => {
    for await (const conn of listener) {
      await conn.write(new TextEncoder().encode("bye"));
      conn.close();
    }
  })();
  try {
    await using dialer = new IndirectDialer({ dp: dp.address, name: "once" });
    for (let i = 0; i < 3; i++) {
      using conn = await dialer.connect();
      const reader = conn.readable.getReader();
      const chunks: number[] = [];
      for (let next = await reader.read(); !next.done; next = await reader.read()) {
        chunks.push(...next.value);
      }
      assert.equal(new TextDecoder().decode(new Uint8Array(chunks)), "bye", `session ${i}`);
    }
  } finally {
    listener.close();
    await served;
  }
});

Deno.test("multiplex on the wire: numbers are the client's, the DP translates", async () => {
  await using echo = await echoAt();
  const { dp } = echo;
  using peer = await multiplexedPeer(dp.address);
  await opens(peer, 7);
  await opens(peer, 9);
  await send(peer, 3, { X: 9, C: btoa("nine") });
  assert.deepEqual(await expectType(peer, 3), { X: 9, C: btoa("nine") });
  await send(peer, 4, { X: 7, R: "done" });
  assert.deepEqual(await expectType(peer, 4), { X: 7, R: "done" });
  // Another name on this link: that session is refused, the link goes on.
  await refused(peer, 11, /carries sessions to "echo" only/, "other");
  // Number 7 was closed: the client may give it again.
  await opens(peer, 7);
  await send(peer, 3, { X: 7, C: btoa("seven") });
  assert.deepEqual(await expectType(peer, 3), { X: 7, C: btoa("seven") });
});

Deno.test("multiplex on the wire: a number in use, or X without the extension, ends only that link", async () => {
  await using echo = await echoAt();
  const { dp } = echo;
  await using dialer = new IndirectDialer({ dp: dp.address, name: "echo" });
  using bystander = await dialer.connect();

  using twice = await multiplexedPeer(dp.address);
  await opens(twice, 1);
  await send(twice, 1, { N: "echo", X: 1 });
  assert.deepEqual(await twice.untilEnd(), []);

  using unagreed = await RawPeer.connect(dp.address);
  await unagreed.send(`0\n${JSON.stringify({ V: 10000, R: 3, N: "raw" })}\n`);
  await expectType(unagreed, 0);
  await send(unagreed, 1, { N: "echo", X: 1 });
  assert.deepEqual(await unagreed.untilEnd(), []);

  using stray = await multiplexedPeer(dp.address);
  await opens(stray, 1);
  await send(stray, 3, { X: 2, C: btoa("nobody") });
  assert.deepEqual(await stray.untilEnd(), []);

  await assertEchoes(bystander, "nobody else noticed");
});

Deno.test("multiplex on the wire: sessions beyond maxSessionsPerClientLink are refused", async () => {
  await using echo = await echoAt({ maxSessionsPerClientLink: 1 });
  const { dp } = echo;
  using peer = await multiplexedPeer(dp.address);
  await opens(peer, 1);
  await refused(peer, 2, /limit maxSessionsPerClientLink = 1/);
  await send(peer, 4, { X: 1, R: "" });
  assert.deepEqual(await expectType(peer, 4), { X: 1, R: "" });
  await opens(peer, 2);
});

Deno.test("multiplex on the wire: each session past a link's first counts against maxLinksPerSource", async () => {
  await using echo = await echoAt({ maxLinksPerSource: 3 });
  const { dp } = echo;
  // From 127.0.0.1: the server's link, this link with its first session, and one more session.
  using peer = await multiplexedPeer(dp.address);
  await opens(peer, 1);
  await opens(peer, 2);
  await refused(peer, 3, /limit maxLinksPerSource = 3\): each session on a shared link counts/);
  await send(peer, 4, { X: 2, R: "" });
  assert.deepEqual(await expectType(peer, 4), { X: 2, R: "" });
  await opens(peer, 3);
});

Deno.test("multiplex on the wire: a Connect withdrawn before its Ack, and Data before it", async () => {
  await using dp = await startDiscoverPoint();
  // A server that answers only when told: the client's Close and Data can come first.
  using server = await RawPeer.connect(dp.address);
  await server.send(IS_ALOHA("slow"));
  await expectType(server, 0);

  using withdrawing = await multiplexedPeer(dp.address);
  await send(withdrawing, 1, { N: "slow", X: 5 });
  assert.equal((await expectType(server, 1)).N, "raw");
  await send(withdrawing, 4, { X: 5, R: "changed my mind" });
  assert.deepEqual(await expectType(withdrawing, 4), { X: 5, R: "changed my mind" });
  await send(server, 2, { X: 40, R: "" });
  // The session the server opened has no client any more: the DP closes it.
  const closed = await expectType(server, 4);
  assert.equal(closed.X, 40);
  await send(server, 4, { X: 40, R: "" });

  using hasty = await multiplexedPeer(dp.address);
  await send(hasty, 1, { N: "slow", X: 1 });
  await expectType(server, 1);
  await send(hasty, 3, { X: 1, C: btoa("too soon") });
  assert.deepEqual(await hasty.untilEnd(), []);
  // Its Connect was abandoned with the link: the late Ack gets a Close.
  await send(server, 2, { X: 41, R: "" });
  assert.equal((await expectType(server, 4)).X, 41);
});

Deno.test("IndirectDialer: a connect() given up before its Ack closes the session the Ack opens", async () => {
  await using dp = await startDiscoverPoint();
  using server = await RawPeer.connect(dp.address);
  await server.send(IS_ALOHA("slow"));
  await expectType(server, 0);
  await using dialer = new IndirectDialer({ dp: dp.address, name: "slow" });
  const controller = new AbortController();
  const opening = dialer.connect(controller.signal);
  await expectType(server, 1);
  controller.abort(new Error("gave up"));
  await assert.rejects(opening, /gave up/);
  await send(server, 2, { X: 3, R: "" });
  assert.equal((await expectType(server, 4)).X, 3);
  await send(server, 4, { X: 3, R: "" });
});

Deno.test("IndirectDialer.close() ends its sessions, and connect() after it fails", async () => {
  await using echo = await echoAt();
  const { dp } = echo;
  const dialer = new IndirectDialer({ dp: dp.address, name: "echo" });
  using conn = await dialer.connect();
  await assertEchoes(conn, "before");
  await dialer.close();
  await assert.rejects(conn.read(new Uint8Array(8)), Deno.errors.ConnectionReset);
  await assert.rejects(dialer.connect(), Deno.errors.BadResource);
});

Deno.test("IndirectDialer.connect() with a signal already aborted rejects with its reason", async () => {
  await using echo = await echoAt();
  await using dialer = new IndirectDialer({ dp: echo.dp.address, name: "echo" });
  using first = await dialer.connect();
  await assert.rejects(dialer.connect(AbortSignal.abort(new Error("not now"))), /not now/);
  await assertEchoes(first, "the link is fine");
});
