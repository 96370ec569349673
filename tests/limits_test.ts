/**
 * The discover point's limits: each one refuses or ends exactly the link or
 * session that went over it, with a reason that says which limit, while the
 * other links carry on. Also the dp.ts flags that set them.
 */

import assert from "node:assert/strict";
import {
  connect,
  type IndirectConn,
  type IndirectListener,
  listen,
  SessionClosedError,
  SessionRefusedError,
} from "../mod.ts";
import {
  assertEchoes,
  cutShort,
  IS_ALOHA,
  RawPeer,
  readExactly,
  type RunningDiscoverPoint,
  settlesWithin,
  spawnDiscoverPoint,
  startDiscoverPoint,
} from "./_helpers.ts";

/** A listener that echoes every session, and the way to stop it. */
interface EchoServer extends AsyncDisposable {
  readonly listener: IndirectListener;
}

async function echoServer(dp: RunningDiscoverPoint, name: string): Promise<EchoServer> {
  const listener = listen({ dp: dp.address, name });
  await listener.ready;
  const sessions: Promise<void>[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      sessions.push(
        conn.readable.pipeTo(conn.writable).catch(() => {
          // Sessions cut by a limit end under the pipe.
        }).finally(() => conn.close()),
      );
    }
  })();
  return {
    listener,
    async [Symbol.asyncDispose]() {
      listener.close();
      await serving;
      await Promise.all(sessions);
    },
  };
}

/** Asserts that `promise` rejects with a SessionRefusedError whose reason matches `pattern`. */
async function assertRefused(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: Error) => {
    assert.ok(error instanceof SessionRefusedError, error);
    assert.match(error.reason, pattern);
    return true;
  });
}

/** Reads a raw link to its end and returns the refusal reason of its Aloha R=5. */
async function refusalOf(peer: RawPeer): Promise<string> {
  const seen = await settlesWithin(peer.untilEnd(), "the DP to end the link");
  assert.equal(seen.length, 1, `expected one Aloha R=5, got ${Deno.inspect(seen)}`);
  assert.equal(seen[0]!.type, 0);
  assert.equal(seen[0]!.body.R, 5);
  return seen[0]!.body.N;
}

/** Keeps connections to close at the end of a test. */
class Conns {
  readonly #all: IndirectConn[] = [];
  add<T extends IndirectConn>(conn: T): T {
    this.#all.push(conn);
    return conn;
  }
  async [Symbol.asyncDispose](): Promise<void> {
    for (const conn of this.#all) conn.close();
    await Promise.all(this.#all.map((conn) => conn.closed));
  }
}

Deno.test("DiscoverPoint maxLineBytes ends only the link that sends a longer line", async (t) => {
  await using dp = await startDiscoverPoint({ maxLineBytes: 1024 });
  await using _server = await echoServer(dp, "steady");
  await using conns = new Conns();
  const steady = conns.add(await connect({ dp: dp.address, name: "steady" }));
  await assertEchoes(steady, "small lines pass");

  await t.step("an oversized line before the Aloha is refused with the limit", async () => {
    using peer = await RawPeer.connect(dp.address);
    await peer.send(`0\n{"N":"${"x".repeat(2000)}`);
    assert.match(await refusalOf(peer), /longer than 1024 bytes/);
  });
  await t.step("an oversized Data from a client ends that client's link", async () => {
    const big = conns.add(await connect({ dp: dp.address, name: "steady" }));
    await assertEchoes(big, "first a small one");
    await big.write(new Uint8Array(4000)).catch(() => {
      // The write may fail or not, depending on when the DP cuts the link.
    });
    const outcome = await settlesWithin(
      big.readable.getReader().read().then(() => undefined, (error) => error as Error),
      "the client's session to fail",
    );
    assert.ok(outcome instanceof Deno.errors.ConnectionReset, String(outcome));
  });
  await t.step("the other session is unaffected", async () => {
    await assertEchoes(steady, "still here");
  });
});

Deno.test("DiscoverPoint maxLineBytes: the server of a session cut by the limit gets the reason", async () => {
  await using dp = await startDiscoverPoint({ maxLineBytes: 1024 });
  using listener = listen({ dp: dp.address, name: "told" });
  await listener.ready;
  const accepted = listener.accept();
  using client = await connect({ dp: dp.address, name: "told" });
  using server = await accepted;
  await client.write(new Uint8Array(4000)).catch(() => {
    // The DP may cut the link before the write is done.
  });
  const reader = server.readable.getReader();
  await assert.rejects(settlesWithin(reader.read(), "the server's read to fail"), cutShort(/1024/));
  await server.closed;
  await assert.rejects(server.write(new Uint8Array(1)), (error: Error) => {
    assert.ok(error instanceof SessionClosedError, error);
    assert.match(error.message, /1024/);
    return true;
  });
});

Deno.test("DiscoverPoint handshakeTimeout closes silent and slowloris links with the limit", async (t) => {
  await using dp = await startDiscoverPoint({ handshakeTimeout: 100 });
  await using _server = await echoServer(dp, "steady");
  await using conns = new Conns();
  const steady = conns.add(await connect({ dp: dp.address, name: "steady" }));
  await t.step("a link that never sends its Aloha", async () => {
    using peer = await RawPeer.connect(dp.address);
    assert.match(
      await refusalOf(peer),
      /no complete handshake within 100 ms \(limit handshakeTimeout\)/,
    );
  });
  await t.step("a link that sends half an Aloha and stalls", async () => {
    using peer = await RawPeer.connect(dp.address);
    await peer.send('0\n{"V":10000,"R":2,"N":"slo');
    assert.match(
      await refusalOf(peer),
      /no complete handshake within 100 ms \(limit handshakeTimeout\)/,
    );
  });
  await t.step("a registered server's session is unaffected", async () => {
    await assertEchoes(steady, "still here");
  });
});

Deno.test("DiscoverPoint ackTimeout refuses the client of a server that never answers", async (t) => {
  await using dp = await startDiscoverPoint({ ackTimeout: 100 });
  using server = await RawPeer.connect(dp.address);
  await server.send(IS_ALOHA("mute"));
  assert.equal((await server.expect()).body.R, 4);
  await t.step(
    "the client gets SessionRefusedError saying the server did not answer in time",
    async () => {
      await assertRefused(
        connect({ dp: dp.address, name: "mute" }),
        /"mute" did not answer within 100 ms/,
      );
    },
  );
  await t.step("a late Ack is answered with a Close", async () => {
    assert.equal((await server.expect()).type, 1);
    await server.send('2\n{"X":7,"R":""}\n');
    assert.deepEqual(await server.expect(), { type: 4, body: { X: 7, R: "The client went away" } });
  });
  await t.step("the server link stays registered and serves the next client", async () => {
    const client = connect({ dp: dp.address, name: "mute" });
    assert.equal((await server.expect()).type, 1);
    await server.send('2\n{"X":8,"R":""}\n');
    using conn = await client;
    assert.equal(conn.sessionId, 8);
  });
});

Deno.test("DiscoverPoint maxSessionsPerServer refuses one more session to that name only", async () => {
  await using dp = await startDiscoverPoint({ maxSessionsPerServer: 2 });
  await using _full = await echoServer(dp, "full");
  await using _other = await echoServer(dp, "other");
  await using conns = new Conns();
  const first = conns.add(await connect({ dp: dp.address, name: "full" }));
  conns.add(await connect({ dp: dp.address, name: "full" }));
  await assertRefused(
    connect({ dp: dp.address, name: "full" }),
    /limit maxSessionsPerServer = 2/,
  );
  await assertEchoes(conns.add(await connect({ dp: dp.address, name: "other" })), "other");
  await assertEchoes(first, "open ones still work");
  // Once the DP has answered a Close, the slot is free again.
  first.close();
  await first.closed;
  await assertEchoes(conns.add(await connect({ dp: dp.address, name: "full" })), "freed");
});

Deno.test("DiscoverPoint maxSessions refuses one more session to any name, until one ends", async () => {
  await using dp = await startDiscoverPoint({ maxSessions: 2 });
  await using _a = await echoServer(dp, "a");
  await using _b = await echoServer(dp, "b");
  await using conns = new Conns();
  const a = conns.add(await connect({ dp: dp.address, name: "a" }));
  const b = conns.add(await connect({ dp: dp.address, name: "b" }));
  for (const name of ["a", "b"]) {
    await assertRefused(connect({ dp: dp.address, name }), /limit maxSessions = 2/);
  }
  await assertEchoes(a, "a still works");
  await assertEchoes(b, "b still works");
  // The count goes down as sessions end.
  a.close();
  await a.closed;
  await assertEchoes(conns.add(await connect({ dp: dp.address, name: "a" })), "a again");
});

Deno.test("DiscoverPoint maxLinksPerServer refuses another registration: listen() accept() rejects with the limit", async () => {
  await using dp = await startDiscoverPoint({ maxLinksPerServer: 1 });
  await using _first = await echoServer(dp, "solo");
  using second = listen({ dp: dp.address, name: "solo" });
  await assert.rejects(second.accept(), (error: Error) => {
    assert.match(error.message, /limit maxLinksPerServer = 1/);
    return true;
  });
  await assert.rejects(second.ready, /maxLinksPerServer/);
  using client = await connect({ dp: dp.address, name: "solo" });
  await assertEchoes(client, "the first one still serves");
  assert.deepEqual([...dp.dp.servers], [["solo", 1]]);
});

Deno.test("DiscoverPoint maxPendingPerServer refuses a Connect while others wait for their Ack", async () => {
  await using dp = await startDiscoverPoint({ maxPendingPerServer: 1 });
  const asked = Promise.withResolvers<void>();
  const decision = Promise.withResolvers<void>();
  using listener = listen({
    dp: dp.address,
    name: "slow",
    admit: () => {
      asked.resolve();
      return decision.promise;
    },
  });
  await listener.ready;
  const waiting = connect({ dp: dp.address, name: "slow" });
  await asked.promise; // The first Connect is waiting for its Ack.
  try {
    await assertRefused(
      connect({ dp: dp.address, name: "slow" }),
      /limit maxPendingPerServer = 1/,
    );
  } finally {
    decision.resolve();
  }
  const accepted = listener.accept();
  using client = await waiting;
  using server = await accepted;
  await client.write(new TextEncoder().encode("ok"));
  assert.deepEqual(
    await readExactly(server.readable.getReader(), 2),
    new TextEncoder().encode("ok"),
  );
});

Deno.test("dp.ts --max-sessions-per-server and --ack-timeout set those limits", async (t) => {
  await using dp = await spawnDiscoverPoint([
    "--max-sessions-per-server",
    "1",
    "--ack-timeout",
    "100",
  ]);
  await t.step("--max-sessions-per-server 1 refuses a second session", async () => {
    await using _server = await echoServer(dp, "one");
    using first = await connect({ dp: dp.address, name: "one" });
    await assertRefused(connect({ dp: dp.address, name: "one" }), /maxSessionsPerServer = 1/);
    await assertEchoes(first, "the first still works");
  });
  await t.step("--ack-timeout 100 refuses the client of a mute server", async () => {
    using server = await RawPeer.connect(dp.address);
    await server.send(IS_ALOHA("mute"));
    assert.equal((await server.expect()).body.R, 4);
    await assertRefused(connect({ dp: dp.address, name: "mute" }), /within 100 ms/);
  });
});
