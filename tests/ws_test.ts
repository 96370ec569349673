/**
 * WebSocket links end to end: `listen()`/`connect()` over `ws://` through a
 * discover point served by `Deno.serve(dp.httpHandler())`, mixed with TCP
 * links and public ports, the extensions over WebSocket, bad input that ends
 * only its own link, owned names, `dp.ts --http`, and `deploy.ts` under
 * `deno serve`.
 * @module
 */

import assert from "node:assert/strict";
import { connect, generateIdentity, type IndirectConn, listen, ProtocolError } from "../mod.ts";
import { assertEchoes, IS_ALOHA, randomBytes, readAll, settlesWithin } from "./_helpers.ts";
import {
  CLI_PATH,
  DP_PATH,
  EchoServer,
  Program,
  readExactlyFrom,
  writeAllTo,
} from "./_programs.ts";
import { sha256Hex } from "./_tls.ts";
import { ownedNames } from "./_auth_peer.ts";
import {
  DeployProgram,
  echoOf,
  rawHttpRequest,
  RawWebSocket,
  serveEcho,
  startHttpDiscoverPoint,
} from "./_ws.ts";

const KIB = 1024;
const MIB = 1024 * KIB;

/** Echoes `size` random bytes through `conn` (then closes it) and checks them. */
async function assertBulkEcho(conn: IndirectConn, size: number): Promise<void> {
  const data = randomBytes(size);
  const echoed = await settlesWithin(echoOf(conn, data), `the ${size}-byte echo`, 30_000);
  assert.equal(echoed.length, data.length);
  assert.equal(await sha256Hex(echoed), await sha256Hex(data));
}

// ---- 1. listen() and connect() over ws:// ----------------------------------------------

Deno.test("ws: listen() and connect() over ws:// through a DP with no TCP port echo 1 MiB intact", async () => {
  await using dp = await startHttpDiscoverPoint();
  assert.throws(() => dp.dp.addr, /no port/);
  const listener = listen({ dp: dp.url, name: "echo" });
  const served = serveEcho(listener);
  try {
    await settlesWithin(listener.ready, "the registration over ws://");
    assert.equal(dp.dp.servers.get("echo"), 1);
    const client = await connect({ dp: dp.url, name: "echo" });
    await assertBulkEcho(client, MIB);
    await settlesWithin(client.closed, "the session to end");
  } finally {
    listener.close();
    await settlesWithin(served, "the echo server to finish");
  }
});

// ---- 2. WebSocket and TCP links on one DP ------------------------------------------------

for (
  const [label, serverSide, clientSide] of [
    ["IS over WebSocket, client over TCP", "ws", "tcp"],
    ["IS over TCP, client over WebSocket", "tcp", "ws"],
  ] as const
) {
  Deno.test(`ws: mixed links: ${label} echo 256 KiB intact`, async () => {
    await using dp = await startHttpDiscoverPoint({ tcp: true });
    const address = { ws: dp.url, tcp: dp.tcp! };
    const listener = listen({ dp: address[serverSide], name: "mixed" });
    const served = serveEcho(listener);
    try {
      await settlesWithin(listener.ready, "the registration");
      const client = await connect({ dp: address[clientSide], name: "mixed" });
      await assertBulkEcho(client, 256 * KIB);
    } finally {
      listener.close();
      await settlesWithin(served, "the echo server to finish");
    }
  });
}

Deno.test("ws: mixed links: a public port reaches an IS registered over WebSocket, 256 KiB intact", async () => {
  await using dp = await startHttpDiscoverPoint({ tcp: true, expose: { pub: 0 } });
  const publicAddr = dp.dp.publicAddrs.get("pub");
  assert.ok(publicAddr);
  const listener = listen({ dp: dp.url, name: "pub" });
  const served = serveEcho(listener);
  try {
    await settlesWithin(listener.ready, "the registration over ws://");
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: publicAddr.port });
    const data = randomBytes(256 * KIB);
    const [, echoed] = await settlesWithin(
      Promise.all([writeAllTo(conn, data), readExactlyFrom(conn, data.length)]),
      "the public-port echo",
      30_000,
    );
    assert.equal(await sha256Hex(echoed), await sha256Hex(data));
  } finally {
    listener.close();
    await settlesWithin(served, "the echo server to finish");
  }
});

// ---- 3. extensions over WebSocket ------------------------------------------------------

Deno.test("ws: the DP agrees binary, flow-control, half-close and keepalive with an IS over WebSocket, not close-once", async () => {
  await using dp = await startHttpDiscoverPoint();
  await using raw = await RawWebSocket.open(dp.url);
  const offered = ["half-close", "keepalive", "flow-control", "binary"];
  // close-once would take away the Close answer that acknowledges the server's Close at once:
  // over a WebSocket, whose socket delays small writes, its next message would wait ~40 ms.
  raw.sendBinaryText(
    `0\n${JSON.stringify({ V: 10000, R: 2, N: "ext", F: [...offered, "close-once"] })}\n`,
  );
  const answer = await settlesWithin(raw.next(), "the DP's Aloha");
  assert.ok(answer);
  assert.equal(answer.type, 0);
  assert.equal(answer.body.R, 4);
  assert.deepEqual(new Set(answer.body.F as string[]), new Set(offered));
});

Deno.test("ws: half-close over WebSocket: the client closeWrite()s, the server reads EOF, then answers", async () => {
  await using dp = await startHttpDiscoverPoint();
  using listener = listen({ dp: dp.url, name: "rpc" });
  const accepted = listener.accept();
  using client = await connect({ dp: dp.url, name: "rpc" });
  using server = await settlesWithin(accepted, "the session");
  const request = randomBytes(300 * KIB);
  const response = randomBytes(200 * KIB);
  const asking = (async () => {
    const writer = client.writable.getWriter();
    await writer.write(request.slice());
    writer.releaseLock();
    await client.closeWrite();
    return await readAll(client.readable);
  })();
  const heard = await settlesWithin(readAll(server.readable), "EOF after the request");
  assert.equal(await sha256Hex(heard), await sha256Hex(request));
  const writer = server.writable.getWriter();
  await writer.write(response.slice());
  await writer.close();
  const answer = await settlesWithin(asking, "the answer and EOF");
  assert.equal(await sha256Hex(answer), await sha256Hex(response));
});

// ---- 4. bad input ends only its own link -----------------------------------------------

/** A DP over HTTP with an echoing IS over ws and an open client session, echoing before and after `bad`. */
async function onlyItsOwnLink(bad: (url: string, httpPort: number) => Promise<void>) {
  await using dp = await startHttpDiscoverPoint();
  const listener = listen({ dp: dp.url, name: "steady" });
  const served = serveEcho(listener);
  try {
    await settlesWithin(listener.ready, "the registration");
    using client = await connect({ dp: dp.url, name: "steady" });
    await assertEchoes(client, "before");
    await bad(dp.url, dp.httpPort);
    await assertEchoes(client, "after");
    assert.equal(dp.dp.servers.get("steady"), 1);
  } finally {
    listener.close();
    await settlesWithin(served, "the echo server to finish");
  }
}

Deno.test("ws: a text message ends only its own link (close 4003)", async () => {
  await onlyItsOwnLink(async (url) => {
    await using raw = await RawWebSocket.open(url);
    raw.send(IS_ALOHA("texter"));
    const closed = await settlesWithin(raw.closed, "the DP to close the link");
    assert.equal(closed.code, 4003);
    assert.match(closed.reason, /binary messages only/);
  });
});

Deno.test("ws: a WebSocket upgrade at another path gets 404", async () => {
  await onlyItsOwnLink(async (_url, port) => {
    const head = await rawHttpRequest(
      port,
      `GET /elsewhere HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
        `Sec-WebSocket-Version: 13\r\n\r\n`,
    );
    assert.match(head, /^HTTP\/1\.1 404/);
    await using raw = new RawWebSocket(`ws://127.0.0.1:${port}/elsewhere`);
    await assert.rejects(settlesWithin(raw.opened, "the failed upgrade"));
  });
});

Deno.test("ws: a plain GET /rtcp gets 426 with Upgrade: websocket", async () => {
  await onlyItsOwnLink(async (_url, port) => {
    const response = await fetch(`http://127.0.0.1:${port}/rtcp`);
    assert.equal(response.status, 426);
    assert.equal(response.headers.get("upgrade"), "websocket");
    assert.match(await response.text(), /WebSocket upgrades of \/rtcp/);
  });
});

Deno.test("ws: a 2 MiB message (longer than maxLineBytes) after a valid IS Aloha ends that link", async () => {
  await onlyItsOwnLink(async (url) => {
    await using raw = await RawWebSocket.open(url);
    raw.sendBinaryText(IS_ALOHA("big"));
    const answer = await settlesWithin(raw.next(), "the DP's Aloha");
    assert.equal(answer?.body.R, 4);
    raw.send(new Uint8Array(2 * MIB).fill(0x31)); // "1111…": a type line that never ends
    await settlesWithin(raw.closed, "the DP to end the link");
  });
});

Deno.test("ws: an owned name over WebSocket: a keyless IS is refused, the owner registers and serves", async () => {
  const { identity: owner } = await generateIdentity();
  await using dp = await startHttpDiscoverPoint({ names: ownedNames({ db: { owners: [owner] } }) });
  using intruder = listen({ dp: dp.url, name: "db", reconnect: false });
  await assert.rejects(settlesWithin(intruder.ready, "the refusal"), (error: Error) => {
    assert.ok(error instanceof ProtocolError, `${error}`);
    assert.match(error.message, /the name is owned/);
    return true;
  });
  assert.equal(dp.dp.servers.has("db"), false);
  const listener = listen({ dp: dp.url, name: "db", key: owner, reconnect: false });
  const served = serveEcho(listener);
  try {
    await settlesWithin(listener.ready, "the owner's registration");
    assert.equal(dp.dp.servers.get("db"), 1);
    using client = await connect({ dp: dp.url, name: "db" });
    await assertEchoes(client, "the owner serves over ws");
  } finally {
    listener.close();
    await settlesWithin(served, "the echo server to finish");
  }
});

// ---- 5. dp.ts --http with cli.ts over ws:// ---------------------------------------------

Deno.test("ws: dp.ts --http 0 with cli.ts expose and connect over ws:// carries bytes to an echo server", async () => {
  await using echo = new EchoServer();
  await using dp = new Program(DP_PATH, ["--hostname", "127.0.0.1", "--port", "0", "--http", "0"]);
  const [, wsAddress] = await dp.printed(/^WebSocket links on (ws:\/\/127\.0\.0\.1:\d+\/rtcp)$/);
  await dp.printed(/^Listening on 127\.0\.0\.1:\d+$/);
  const url = wsAddress!;
  await using expose = new Program(CLI_PATH, [
    "expose",
    "--dp",
    url,
    "--name",
    "svc",
    "--to",
    echo.address,
  ]);
  await expose.printed(/^Exposing "svc"/);
  await using front = new Program(CLI_PATH, [
    "connect",
    "--dp",
    url,
    "--name",
    "svc",
    "--listen",
    "127.0.0.1:0",
  ]);
  const [, port] = await front.printed(/^Listening on 127\.0\.0\.1:(\d+)$/);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
  const data = randomBytes(200 * KIB);
  const [, echoed] = await settlesWithin(
    Promise.all([writeAllTo(conn, data), readExactlyFrom(conn, data.length)]),
    "the echo through dp.ts --http",
    30_000,
  );
  assert.equal(await sha256Hex(echoed), await sha256Hex(data));
});

// ---- 6. deploy.ts under deno serve -------------------------------------------------------

Deno.test("ws: deploy.ts under deno serve with RTCP_NAMES: the owner registers, a keyless IS is refused, a client echoes", async () => {
  const { identity: owner } = await generateIdentity();
  const names = JSON.stringify({ db: { owners: [owner.publicKey] } });
  await using deploy = new DeployProgram({ RTCP_NAMES: names });
  const port = await deploy.port();
  const url = `ws://127.0.0.1:${port}/rtcp`;
  using intruder = listen({ dp: url, name: "db", reconnect: false });
  await assert.rejects(settlesWithin(intruder.ready, "the refusal"), /the name is owned/);
  const listener = listen({ dp: url, name: "db", key: owner, reconnect: false });
  const served = serveEcho(listener);
  try {
    await settlesWithin(listener.ready, "the owner's registration");
    const client = await connect({ dp: url, name: "db" });
    await assertBulkEcho(client, 256 * KIB);
    const response = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(response.status, 404);
    await response.body?.cancel();
  } finally {
    listener.close();
    await settlesWithin(served, "the echo server to finish");
  }
});

Deno.test("ws: deploy.ts with RTCP_MAX_LINKS=abc fails at start, naming RTCP_MAX_LINKS", async () => {
  await using deploy = new DeployProgram({ RTCP_MAX_LINKS: "abc" });
  const status = await deploy.exited();
  assert.notEqual(status.code, 0);
  assert.match(deploy.stderr.text, /RTCP_MAX_LINKS "abc": expected a whole number/);
});
