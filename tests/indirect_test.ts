import assert from "node:assert/strict";
import {
  connect,
  DiscoverPointUnreachableError,
  listen,
  ProtocolError,
  SessionClosedError,
  SessionRefusedError,
  type SessionRequest,
  VersionMismatchError,
} from "../mod.ts";
import {
  FakeDiscoverPoint,
  randomBytes,
  RawListener,
  type RawMessage,
  type RawPeer,
  readAll,
  readExactly,
  settlesWithin,
  spawnDiscoverPoint,
  startDiscoverPoint,
  unusedAddress,
} from "./_helpers.ts";

/** The fields of a NetAddr as a plain object (Deno's have a null prototype). */
function netAddr(addr: Deno.NetAddr): Deno.NetAddr {
  return { transport: addr.transport, hostname: addr.hostname, port: addr.port };
}

/** Echoes every accepted session until the listener closes; resolves once all sessions ended. */
async function serveEcho(listener: Deno.Listener<Deno.Conn>): Promise<void> {
  const sessions: Promise<void>[] = [];
  try {
    for await (const conn of listener) {
      sessions.push(
        conn.readable.pipeTo(conn.writable).catch(() => {
          // The client may close the session while an echo is in flight; that is its right.
        }).finally(() => {
          try {
            conn.close();
          } catch {
            // Already closed by the pipe.
          }
        }),
      );
    }
  } finally {
    await Promise.all(sessions);
  }
}

/** Writes `data` and reads back the same number of bytes, concurrently. */
async function echoRoundTrip(conn: Deno.Conn, data: Uint8Array): Promise<Uint8Array> {
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  try {
    const [, echoed] = await Promise.all([
      (async () => {
        for (let offset = 0; offset < data.length; offset += 50_000) {
          await writer.write(data.slice(offset, offset + 50_000));
        }
      })(),
      readExactly(reader, data.length),
    ]);
    return echoed;
  } finally {
    writer.releaseLock();
    reader.releaseLock();
  }
}

Deno.test("connect() echoes 1 MiB of random binary through the discover point", async () => {
  await using dp = await startDiscoverPoint();
  const listener = listen({ dp: dp.address, name: "echo" });
  await listener.ready;
  const serving = serveEcho(listener);
  try {
    using client = await connect({ dp: dp.address, name: "echo" });
    const data = randomBytes(1024 * 1024);
    const [, echoed] = await Promise.all([
      (async () => {
        const writer = client.writable.getWriter();
        for (let offset = 0; offset < data.length; offset += 100_000) {
          await writer.write(data.slice(offset, offset + 100_000));
        }
        await writer.close();
      })(),
      readAll(client.readable),
    ]);
    assert.equal(echoed.length, data.length);
    assert.deepEqual(echoed, data);
    await client.closed;
  } finally {
    listener.close();
    await serving;
  }
});

Deno.test("listen() carries 100 concurrent sessions over one link", async () => {
  await using dp = await startDiscoverPoint();
  const listener = listen({ dp: dp.address, name: "many", pool: 1 });
  await listener.ready;
  const serving = serveEcho(listener);
  try {
    await Promise.all(Array.from({ length: 100 }, async (_, i) => {
      using client = await connect({ dp: dp.address, name: "many", clientName: `c${i}` });
      const data = randomBytes(4096 + i * 97);
      data[0] = i;
      assert.deepEqual(await echoRoundTrip(client, data), data, `session ${i}`);
    }));
  } finally {
    listener.close();
    await serving;
  }
});

Deno.test("listen() with pool 4 spreads sessions over its links", async () => {
  await using dp = await startDiscoverPoint();
  const listener = listen({ dp: dp.address, name: "pool", pool: 4 });
  await listener.ready;
  const accepted: Deno.Conn[] = [];
  const clients: Deno.Conn[] = [];
  try {
    // Each session stays open, so the DP (fewest open sessions first) puts the next one on another
    // registered link. Links register in the background; keep going until all four have carried one.
    const links = new Set<number>();
    for (let i = 0; i < 64 && links.size < 4; i++) {
      const next = listener.accept();
      clients.push(await connect({ dp: dp.address, name: "pool" }));
      const server = await next;
      accepted.push(server);
      links.add(server.localAddr.port);
    }
    assert.equal(links.size, 4);
    await Promise.all(clients.map(async (client, i) => {
      const data = randomBytes(10_000);
      data[0] = i;
      const server = accepted[i]!;
      const writer = client.writable.getWriter();
      const reader = server.readable.getReader();
      const [, received] = await Promise.all([
        writer.write(data),
        readExactly(reader, data.length),
      ]);
      writer.releaseLock();
      reader.releaseLock();
      assert.deepEqual(received, data);
    }));
  } finally {
    for (const conn of [...clients, ...accepted]) conn.close();
    listener.close();
  }
});

Deno.test("IndirectConn.close() on the client ends the server's readable", async () => {
  await using dp = await startDiscoverPoint();
  using listener = listen({ dp: dp.address, name: "s" });
  const accepted = listener.accept();
  const client = await connect({ dp: dp.address, name: "s" });
  using server = await accepted;
  await client.write(new TextEncoder().encode("last words"));
  client.close();
  assert.equal(new TextDecoder().decode(await readAll(server.readable)), "last words");
  await server.closed;
  await client.closed;
  await assert.rejects(client.write(new Uint8Array(1)), SessionClosedError);
});

Deno.test("IndirectConn.close() on the server ends the client's readable and read() returns null", async () => {
  await using dp = await startDiscoverPoint();
  using listener = listen({ dp: dp.address, name: "s" });
  const accepted = listener.accept();
  using client = await connect({ dp: dp.address, name: "s" });
  const server = await accepted;
  await server.write(new TextEncoder().encode("bye"));
  server.close();
  const buffer = new Uint8Array(16);
  assert.equal(await client.read(buffer), 3);
  assert.equal(new TextDecoder().decode(buffer.subarray(0, 3)), "bye");
  assert.equal(await client.read(buffer), null);
  await client.closed;
  await server.closed;
  await assert.rejects(server.write(new Uint8Array(1)), SessionClosedError);
});

Deno.test("IndirectConn.closeWrite() half-closes: the peer reads EOF and can still answer", async (t) => {
  await using dp = await startDiscoverPoint();
  using listener = listen({ dp: dp.address, name: "s" });
  const accepted = listener.accept();
  using client = await connect({ dp: dp.address, name: "s" });
  using server = await accepted;
  await t.step("client closeWrite() ends the server's readable", async () => {
    await client.write(new TextEncoder().encode("question"));
    await client.closeWrite();
    assert.equal(new TextDecoder().decode(await readAll(server.readable)), "question");
  });
  await t.step("the server still writes; its closeWrite() ends the client's readable", async () => {
    await server.write(new TextEncoder().encode("answer"));
    await server.closeWrite();
    assert.equal(new TextDecoder().decode(await readAll(client.readable)), "answer");
  });
  await t.step("both directions done: the session ends on both sides", async () => {
    await Promise.all([client.closed, server.closed]);
  });
});

Deno.test("IndirectConn readable ends or errors when the indirect server process vanishes", async () => {
  await using dp = await startDiscoverPoint();
  const modUrl = new URL("../mod.ts", import.meta.url).href;
  const code = `
    import { listen } from ${JSON.stringify(modUrl)};
    const listener = listen({ dp: ${JSON.stringify(dp.address)}, name: "doomed" });
    await listener.ready;
    console.log("ready");
    for await (const conn of listener) void conn.readable.pipeTo(conn.writable).catch(() => {});
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    const { value } = await stdout.read();
    assert.equal(value?.trim(), "ready");
    using client = await connect({ dp: dp.address, name: "doomed" });
    const hello = new TextEncoder().encode("hello");
    assert.deepEqual(await echoRoundTrip(client, hello), hello);
    child.kill("SIGKILL");
    const reader = client.readable.getReader();
    // Either EOF (the DP's Close) or an error is fine; hanging is not.
    const outcome = await reader.read().then((result) => result.done, (error) => error);
    assert.ok(outcome === true || outcome instanceof Error, Deno.inspect(outcome));
    reader.releaseLock();
    await client.closed;
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already killed above.
    }
    await child.status;
    while (!(await stdout.read()).done) { /* drain */ }
  }
});

Deno.test("IndirectConn readable ends when the indirect server closes its listener", async () => {
  await using dp = await startDiscoverPoint();
  const listener = listen({ dp: dp.address, name: "gone" });
  const accepted = listener.accept();
  using client = await connect({ dp: dp.address, name: "gone" });
  const server = await accepted;
  listener.close();
  server.close();
  const outcome = await readAll(client.readable).then((bytes) => bytes.length, (error) => error);
  assert.ok(outcome === 0 || outcome instanceof Error, Deno.inspect(outcome));
  await client.closed;
});

Deno.test("connect() to an unknown name rejects with SessionRefusedError naming it", async () => {
  await using dp = await startDiscoverPoint();
  try {
    await connect({ dp: dp.address, name: "nobody-here" });
    assert.fail("connect() resolved");
  } catch (error) {
    assert.ok(error instanceof SessionRefusedError);
    assert.match(error.reason, /nobody-here/);
    assert.match(error.message, /nobody-here/);
  }
});

Deno.test("listen() admit option refuses a session with its reason", async () => {
  await using dp = await startDiscoverPoint();
  const requests: { client: string; sessionId: number; remoteAddr: Deno.NetAddr }[] = [];
  using listener = listen({
    dp: dp.address,
    name: "guarded",
    admit(request) {
      requests.push({
        client: request.client,
        sessionId: request.sessionId,
        remoteAddr: request.remoteAddr,
      });
      if (request.client !== "friend") throw new Error("Strangers are not welcome");
    },
  });
  await listener.ready;
  await assert.rejects(
    connect({ dp: dp.address, name: "guarded", clientName: "stranger" }),
    (error: unknown) => {
      assert.ok(error instanceof SessionRefusedError);
      assert.equal(error.reason, "Strangers are not welcome");
      return true;
    },
  );
  const accepted = listener.accept();
  using friend = await connect({ dp: dp.address, name: "guarded", clientName: "friend" });
  using server = await accepted;
  assert.deepEqual(requests.map((request) => request.client), ["stranger", "friend"]);
  assert.equal(requests[1]!.sessionId, server.sessionId);
  assert.equal(friend.sessionId, server.sessionId);
  // A named client's address is not on the wire: Connect N carries the name instead.
  assert.deepEqual(netAddr(requests[1]!.remoteAddr), {
    transport: "tcp",
    hostname: "friend",
    port: 0,
  });
  assert.deepEqual(netAddr(server.remoteAddr), netAddr(requests[1]!.remoteAddr));
});

Deno.test("listen() admit option sees an anonymous client's address", async () => {
  await using dp = await startDiscoverPoint();
  const seen = Promise.withResolvers<SessionRequest>();
  using listener = listen({
    dp: dp.address,
    name: "door",
    admit: (request) => seen.resolve(request),
  });
  const accepted = listener.accept();
  using client = await connect({ dp: dp.address, name: "door" });
  using server = await accepted;
  const request = await seen.promise;
  const address = `${client.localAddr.hostname}:${client.localAddr.port}`;
  assert.equal(request.client, address);
  assert.deepEqual(netAddr(request.remoteAddr), netAddr(client.localAddr));
  assert.equal(request.sessionId, server.sessionId);
});

Deno.test("listen() admit option may refuse asynchronously", async () => {
  await using dp = await startDiscoverPoint();
  using listener = listen({
    dp: dp.address,
    name: "slow-guard",
    async admit() {
      await Promise.resolve();
      throw new Error("Not now");
    },
  });
  await listener.ready;
  await assert.rejects(connect({ dp: dp.address, name: "slow-guard" }), (error: unknown) => {
    assert.ok(error instanceof SessionRefusedError);
    assert.equal(error.reason, "Not now");
    return true;
  });
});

Deno.test("connect() to an unreachable discover point rejects with DiscoverPointUnreachableError", async () => {
  const address = unusedAddress();
  await assert.rejects(connect({ dp: address, name: "x" }), (error: unknown) => {
    assert.ok(error instanceof DiscoverPointUnreachableError);
    assert.ok(error.cause instanceof Deno.errors.ConnectionRefused, Deno.inspect(error.cause));
    assert.match(error.message, new RegExp(address));
    return true;
  });
});

Deno.test("listen() against an unreachable discover point: accept() rejects with DiscoverPointUnreachableError", async () => {
  using listener = listen({ dp: unusedAddress(), name: "x", reconnect: false });
  await assert.rejects(listener.ready, DiscoverPointUnreachableError);
  await assert.rejects(listener.accept(), DiscoverPointUnreachableError);
});

Deno.test("listen() against an unreachable discover point with default options: accept() rejects", async () => {
  using listener = listen({ dp: unusedAddress(), name: "x" });
  await assert.rejects(listener.accept(), DiscoverPointUnreachableError);
  await assert.rejects(listener.ready, DiscoverPointUnreachableError);
});

Deno.test("connect() rejects with VersionMismatchError when the DP answers Aloha R=5", async () => {
  await using fake = new FakeDiscoverPoint('0\n{"V":20000,"R":5,"N":""}\n');
  await assert.rejects(connect({ dp: fake.address, name: "x" }), VersionMismatchError);
  // The client spoke first, with an Aloha of our version and the indirect client role.
  const [typeLine, body] = fake.received[0]!;
  assert.equal(typeLine, "0");
  assert.equal(JSON.parse(body!).V, 10000);
  assert.equal(JSON.parse(body!).R, 3);
});

Deno.test("listen() accept() rejects with VersionMismatchError when the DP answers Aloha R=5", async () => {
  await using fake = new FakeDiscoverPoint('0\n{"V":20000,"R":5,"N":""}\n');
  using listener = listen({ dp: fake.address, name: "x" });
  await assert.rejects(listener.accept(), VersionMismatchError);
  await assert.rejects(listener.ready, VersionMismatchError);
  const [typeLine, body] = fake.received[0]!;
  assert.equal(typeLine, "0");
  assert.deepEqual(JSON.parse(body!).R, 2);
  assert.deepEqual(JSON.parse(body!).N, "x");
});

Deno.test("IndirectConn.remoteAddr on the server is the client's address as the DP saw it", async () => {
  await using dp = await startDiscoverPoint();
  using listener = listen({ dp: dp.address, name: "addr" });
  const accepted = listener.accept();
  using client = await connect({ dp: dp.address, name: "addr" });
  using server = await accepted;
  assert.deepEqual(netAddr(server.remoteAddr), netAddr(client.localAddr));
  assert.equal(server.remoteAddr.transport, "tcp");
  assert.equal(server.remoteAddr.hostname, "127.0.0.1");
  assert.equal(listener.addr.port, dp.port);
  assert.equal(server.sessionId, client.sessionId);
});

Deno.test("IndirectConn [Symbol.dispose] closes the session (using)", async () => {
  await using dp = await startDiscoverPoint();
  using listener = listen({ dp: dp.address, name: "using" });
  const accepted = listener.accept();
  let closed: Promise<void>;
  {
    using client = await connect({ dp: dp.address, name: "using" });
    closed = client.closed;
  }
  using server = await accepted;
  assert.deepEqual(await readAll(server.readable), new Uint8Array(0));
  await closed;
  await server.closed;
});

Deno.test("IndirectListener [Symbol.dispose] and [Symbol.asyncIterator] work like Deno.Listener", async () => {
  await using dp = await startDiscoverPoint();
  let iterated: Promise<number>;
  {
    using listener = listen({ dp: dp.address, name: "iter" });
    await listener.ready;
    iterated = (async () => {
      let count = 0;
      for await (const conn of listener) {
        count++;
        conn.close();
      }
      return count;
    })();
    using client = await connect({ dp: dp.address, name: "iter" });
    assert.equal(await client.read(new Uint8Array(1)), null);
  }
  assert.equal(await iterated, 1);
});

Deno.test("IndirectConn read(p) and write(p) work like readable and writable", async () => {
  await using dp = await startDiscoverPoint();
  using listener = listen({ dp: dp.address, name: "rw" });
  const accepted = listener.accept();
  using client = await connect({ dp: dp.address, name: "rw" });
  using server = await accepted;
  const data = randomBytes(200_000);
  // write(p) on one end, read(p) with a small buffer on the other.
  const writing = client.write(data);
  const received = new Uint8Array(data.length);
  let have = 0;
  const buffer = new Uint8Array(1000);
  while (have < data.length) {
    const count = await server.read(buffer);
    assert.ok(count !== null && count > 0);
    received.set(buffer.subarray(0, count), have);
    have += count;
  }
  assert.equal(await writing, data.length);
  assert.deepEqual(received, data);
  // And back, mixing write(p) with the readable.
  const back = randomBytes(3000);
  const [written, echoed] = await Promise.all([
    server.write(back),
    readExactly(client.readable.getReader(), back.length),
  ]);
  assert.equal(written, back.length);
  assert.deepEqual(echoed, back);
});

Deno.test("connect() times out with TimedOut when no Ack comes", async () => {
  await using fake = new FakeDiscoverPoint('0\n{"V":10000,"R":4,"N":"fake"}\n', { hold: true });
  await assert.rejects(connect({ dp: fake.address, name: "x", timeout: 50 }), Deno.errors.TimedOut);
});

Deno.test("connect() rejects with the signal's reason when aborted during connect", async () => {
  await using fake = new FakeDiscoverPoint('0\n{"V":10000,"R":4,"N":"fake"}\n', { hold: true });
  const controller = new AbortController();
  const connecting = connect({ dp: fake.address, name: "x", signal: controller.signal });
  await fake.connected;
  const reason = new Error("changed my mind");
  controller.abort(reason);
  await assert.rejects(connecting, (error: unknown) => error === reason);
});

/** Completes the DP side of a handshake on `peer`: reads its Aloha, answers with `answer`. */
async function answerHandshake(
  peer: RawPeer,
  answer = '0\n{"V":10000,"R":4,"N":"scripted"}\n',
): Promise<RawMessage> {
  const aloha = await peer.expect();
  assert.equal(aloha.type, 0);
  await peer.send(answer);
  return aloha;
}

Deno.test("connect() delivers Data that arrives in the same segment as the Ack", async () => {
  using dp = new RawListener();
  const connecting = connect({ dp: dp.address, name: "s", clientName: "me" });
  using link = await dp.accept();
  const aloha = await answerHandshake(link);
  assert.equal(aloha.body.R, 3);
  assert.equal(aloha.body.N, "me");
  assert.deepEqual(await link.next(), { type: 1, body: { N: "s" } });
  await link.send('2\n{"X":5,"R":""}\n3\n{"X":5,"C":"aGk="}\n4\n{"X":5,"R":"done"}\n');
  using client = await connecting;
  assert.equal(client.sessionId, 5);
  assert.equal(new TextDecoder().decode(await readAll(client.readable)), "hi");
  await client.closed;
  await assert.rejects(client.write(new Uint8Array(1)), SessionClosedError);
});

Deno.test("close-once: a server's Close is final, and Data that crossed it is ignored", async () => {
  using dp = new RawListener();
  using listener = listen({ dp: dp.address, name: "s", pool: 1 });
  using link = await dp.accept();
  const aloha = await answerHandshake(
    link,
    '0\n{"V":10000,"R":4,"N":"scripted","F":["close-once"]}\n',
  );
  assert.ok((aloha.body.F as string[]).includes("close-once"));
  await link.send('1\n{"N":"first"}\n');
  assert.deepEqual(await link.expect(), { type: 2, body: { X: 1, R: "" } });
  const first = await listener.accept();
  first.close();
  assert.deepEqual(await link.expect(), { type: 4, body: { X: 1, R: "" } });
  // No answer comes, and none is needed: the session has ended.
  await settlesWithin(first.closed, "the session after its final Close");
  // Data the discover point sent before it read that Close is dropped; the link carries on.
  await link.send('3\n{"X":1,"C":"aGk="}\n1\n{"N":"second"}\n');
  assert.deepEqual(await link.expect(), { type: 2, body: { X: 2, R: "" } });
  using second = await listener.accept();
  await link.send('3\n{"X":2,"C":"aGk="}\n4\n{"X":2,"R":""}\n');
  assert.equal(new TextDecoder().decode(await readAll(second.readable)), "hi");
});

Deno.test("connect() to a discover point without extensions sends only Part 1 messages", async () => {
  using dp = new RawListener();
  const connecting = connect({ dp: dp.address, name: "s" });
  using link = await dp.accept();
  await answerHandshake(link); // no F: the original protocol
  assert.equal((await link.expect()).type, 1);
  await link.send('2\n{"X":1,"R":""}\n');
  using client = await connecting;
  await client.write(new TextEncoder().encode("x"));
  await client.closeWrite(); // cannot be told to an original peer: nothing is sent
  client.close();
  const sent = await (async () => {
    const messages: RawMessage[] = [];
    for (let m = await link.next(); m !== null && m.type !== 4; m = await link.next()) {
      messages.push(m);
    }
    return messages;
  })();
  assert.deepEqual(sent, [{ type: 3, body: { X: 1, C: "eA==" } }]);
  await link.send('4\n{"X":1,"R":""}\n');
  await client.closed;
});

Deno.test("connect() session errors with ConnectionReset when the DP sends Data for another session", async () => {
  using dp = new RawListener();
  const connecting = connect({ dp: dp.address, name: "s" });
  using link = await dp.accept();
  await answerHandshake(link);
  assert.equal((await link.expect()).type, 1);
  await link.send('2\n{"X":1,"R":""}\n3\n{"X":2,"C":"AQ=="}\n');
  using client = await connecting;
  await assert.rejects(readAll(client.readable), Deno.errors.ConnectionReset);
  await client.closed;
  assert.deepEqual(await link.untilEnd(), []);
});

Deno.test("connect() session errors with ConnectionReset when the DP sends End without half-close", async () => {
  using dp = new RawListener();
  const connecting = connect({ dp: dp.address, name: "s" });
  using link = await dp.accept();
  await answerHandshake(link);
  assert.equal((await link.expect()).type, 1);
  await link.send('2\n{"X":1,"R":""}\n5\n{"X":1}\n');
  using client = await connecting;
  await assert.rejects(readAll(client.readable), Deno.errors.ConnectionReset);
  await client.closed;
});

Deno.test("connect() rejects with ProtocolError when the DP answers Connect with something else", async () => {
  using dp = new RawListener();
  const connecting = connect({ dp: dp.address, name: "s" });
  using link = await dp.accept();
  await answerHandshake(link);
  assert.equal((await link.expect()).type, 1);
  await link.send('3\n{"X":1,"C":""}\n');
  await assert.rejects(connecting, ProtocolError);
  assert.deepEqual(await link.untilEnd(), []);
});

Deno.test("connect() rejects with ProtocolError when the DP's Aloha has another role", async () => {
  using dp = new RawListener();
  const connecting = connect({ dp: dp.address, name: "s" });
  using link = await dp.accept();
  await answerHandshake(link, '0\n{"V":10000,"R":2,"N":"impostor"}\n');
  await assert.rejects(connecting, (error: unknown) => {
    assert.ok(error instanceof ProtocolError);
    assert.ok(!(error instanceof VersionMismatchError));
    return true;
  });
});

Deno.test("listen() answers Connects in arrival order even when admit decides out of order", async () => {
  using dp = new RawListener();
  const decisions = new Map<string, PromiseWithResolvers<void>>();
  const asked = new Map<string, SessionRequest>();
  const bothAsked = Promise.withResolvers<void>();
  using listener = listen({
    dp: dp.address,
    name: "ordered",
    admit(request) {
      asked.set(request.client, request);
      const decision = Promise.withResolvers<void>();
      decisions.set(request.client, decision);
      if (asked.size === 2) bothAsked.resolve();
      return decision.promise;
    },
  });
  using link = await dp.accept();
  const aloha = await answerHandshake(link);
  assert.deepEqual(aloha.body.R, 2);
  assert.deepEqual(aloha.body.N, "ordered");
  await listener.ready;
  await link.send('1\n{"N":"10.0.0.1:1000"}\n1\n{"N":"10.0.0.2:2000"}\n');
  await bothAsked.promise;
  decisions.get("10.0.0.2:2000")!.reject(new Error("second says no"));
  decisions.get("10.0.0.1:1000")!.resolve();
  const first = await link.expect();
  const second = await link.expect();
  assert.deepEqual(first, { type: 2, body: { X: asked.get("10.0.0.1:1000")!.sessionId, R: "" } });
  assert.deepEqual(second, { type: 2, body: { X: -1, R: "second says no" } });
  using server = await listener.accept();
  assert.deepEqual(netAddr(server.remoteAddr), {
    transport: "tcp",
    hostname: "10.0.0.1",
    port: 1000,
  });
  await link.send(`3\n{"X":${server.sessionId},"C":"aGk="}\n4\n{"X":${server.sessionId},"R":""}\n`);
  assert.equal(new TextDecoder().decode(await readAll(server.readable)), "hi");
  await server.closed;
});

Deno.test("listen() replaces a lost link, and sessions on it fail with ConnectionReset", async () => {
  using dp = new RawListener();
  using listener = listen({ dp: dp.address, name: "phoenix", backoff: { initial: 1, max: 10 } });
  const first = await dp.accept();
  await answerHandshake(first);
  await first.send('1\n{"N":"c1"}\n');
  const ack = await first.expect();
  assert.equal(ack.type, 2);
  using lost = await listener.accept();
  assert.equal(lost.sessionId, ack.body.X);
  first.close();
  await assert.rejects(readAll(lost.readable), Deno.errors.ConnectionReset);
  await assert.rejects(lost.write(new Uint8Array(1)), Deno.errors.ConnectionReset);
  // The listener dials again and registers the same name.
  using second = await dp.accept();
  const aloha = await answerHandshake(second);
  assert.equal(aloha.body.N, "phoenix");
  await second.send('1\n{"N":"c2"}\n');
  const ack2 = await second.expect();
  assert.equal(ack2.type, 2);
  assert.ok(ack2.body.X >= 0);
  using fresh = await listener.accept();
  await second.send(`3\n{"X":${fresh.sessionId},"C":"b2s="}\n`);
  const buffer = new Uint8Array(8);
  assert.equal(await fresh.read(buffer), 2);
  fresh.close();
  const close = await second.expect();
  assert.deepEqual(close, { type: 4, body: { X: fresh.sessionId, R: "" } });
  await second.send(`4\n{"X":${fresh.sessionId},"R":""}\n`);
  await fresh.closed;
  listener.close();
  // With no session left, closing the listener ends its link.
  assert.deepEqual(await second.untilEnd(), []);
});

Deno.test("IndirectConn readable errors with ConnectionReset when the discover point process dies", async () => {
  await using dp = await spawnDiscoverPoint();
  const listener = listen({ dp: dp.address, name: "fragile", reconnect: false });
  const accepted = listener.accept();
  using client = await connect({ dp: dp.address, name: "fragile" });
  using server = await accepted;
  const hello = new TextEncoder().encode("hello");
  await client.write(hello);
  assert.deepEqual(await readExactly(server.readable.getReader(), hello.length), hello);
  dp.child.kill("SIGKILL");
  await dp.stop();
  await assert.rejects(readAll(client.readable), Deno.errors.ConnectionReset);
  await assert.rejects(client.write(hello), Deno.errors.ConnectionReset);
  await Promise.all([client.closed, server.closed]);
  // Without reconnect, the lost link fails the listener.
  await assert.rejects(listener.accept(), Deno.errors.ConnectionReset);
  listener.close();
});
