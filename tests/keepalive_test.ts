/**
 * The `keepalive` extension on real sockets: a link that goes silent without
 * closing (a blackholing proxy) is detected and replaced, a quiet but healthy
 * link is kept, and a peer that never announced keepalive never gets a Ping.
 * Time is a {@linkcode FakeClock} shared by the discover point and the ends:
 * intervals pass when a test advances it, never on their own, so the tests
 * hold however loaded the machine is.
 */

import assert from "node:assert/strict";
import { connect, type IndirectConn, type IndirectListener, listen } from "../mod.ts";
import {
  assertEchoes,
  assertNothingArrives,
  RawPeer,
  settlesWithin,
  startDiscoverPoint,
} from "./_helpers.ts";
import { TcpProxy } from "./_proxy.ts";
import { FakeClock } from "./_clock.ts";

/** Keepalive timing on a clock of its own, for one test. */
function keepaliveOn(clock: FakeClock) {
  return { interval: 100, timeout: 200, clock };
}
const PING = "7\n{}\n";
const PONG = "8\n{}\n";

/** Whether a transcript holds the discover point's whole Aloha (type line and body line). */
const hasAloha = (transcript: string) => transcript.split("\n").length > 2;

/** Echoes every accepted session until the listener closes; resolves once all sessions ended. */
async function serveEcho(listener: IndirectListener): Promise<void> {
  const sessions: Promise<void>[] = [];
  try {
    for await (const conn of listener) {
      sessions.push(
        conn.readable.pipeTo(conn.writable).catch(() => {
          // A dead link errors the session under the pipe: that is what these tests do.
        }).finally(() => conn.close()),
      );
    }
  } finally {
    await Promise.all(sessions);
  }
}

/** Whether `error`, or an error in its `cause` chain, is one of the given classes. */
function isOrCausedBy(error: unknown, ...classes: (new (...args: never[]) => Error)[]): boolean {
  for (let e = error; e instanceof Error; e = e.cause) {
    if (classes.some((c) => e instanceof c)) return true;
  }
  return false;
}

Deno.test("keepalive: a silently dead link fails its session and the listener registers again", async (t) => {
  const clock = new FakeClock();
  const KEEPALIVE = keepaliveOn(clock);
  await using dp = await startDiscoverPoint({ keepalive: KEEPALIVE });
  await using proxy = new TcpProxy(dp.address, { record: true });
  const listener = listen({
    dp: proxy.address,
    name: "heartbeat",
    keepalive: KEEPALIVE,
    backoff: { initial: 50, max: 200 },
  });
  const serving = serveEcho(listener);
  const clients: IndirectConn[] = [];
  try {
    const serverRoute = await proxy.nextRoute();
    await serverRoute.waitFor("down", hasAloha);
    const client = await connect({ dp: proxy.address, name: "heartbeat", keepalive: KEEPALIVE });
    clients.push(client);
    const clientRoute = await proxy.nextRoute();
    await assertEchoes(client, "before the silence");

    proxy.blackhole(); // Both links now lose every byte, and neither socket closes.
    // An interval of silence: every end sends a Ping, which is lost; a timeout more: all are dead.
    clock.advance(KEEPALIVE.interval);
    clock.advance(KEEPALIVE.timeout);

    await t.step("the client's session fails with TimedOut or ConnectionReset", async () => {
      const error = await settlesWithin(
        client.readable.getReader().read().then(() => undefined, (error) => error as Error),
        "the dead link to be detected",
      );
      assert.ok(
        isOrCausedBy(error, Deno.errors.TimedOut, Deno.errors.ConnectionReset),
        `expected TimedOut or ConnectionReset, got ${Deno.inspect(error)}`,
      );
      assert.ok(
        isOrCausedBy(error, Deno.errors.TimedOut),
        `the cause is not the keepalive: ${error}`,
      );
      await client.closed;
    });
    await t.step("the discover point drops both silent links too", async () => {
      // A route ends once both of its sockets are closed: the library's side and the DP's side.
      await settlesWithin(serverRoute.done, "the DP to drop the server's silent link");
      await settlesWithin(clientRoute.done, "the DP to drop the client's silent link");
    });
    await t.step("the listener dials again, and a new session echoes", async () => {
      const route = await settlesWithin(proxy.nextRoute(), "the listener to dial again");
      await route.waitFor("down", hasAloha);
      const fresh = await connect({ dp: proxy.address, name: "heartbeat", keepalive: KEEPALIVE });
      clients.push(fresh);
      await assertEchoes(fresh, "after the silence");
    });
  } finally {
    listener.close();
    for (const client of clients) client.close();
    await Promise.all(clients.map((client) => client.closed));
    await serving;
  }
});

Deno.test("keepalive: an idle, healthy link answers Pings and is kept across many intervals", async () => {
  const clock = new FakeClock();
  const KEEPALIVE = keepaliveOn(clock);
  await using dp = await startDiscoverPoint({ keepalive: KEEPALIVE });
  await using proxy = new TcpProxy(dp.address, { record: true });
  const listener = listen({ dp: proxy.address, name: "idle", keepalive: KEEPALIVE });
  const serving = serveEcho(listener);
  const clients: IndirectConn[] = [];
  try {
    const serverRoute = await proxy.nextRoute();
    await serverRoute.waitFor("down", hasAloha);
    const client = await connect({ dp: proxy.address, name: "idle", keepalive: KEEPALIVE });
    clients.push(client);
    const clientRoute = await proxy.nextRoute();
    await assertEchoes(client, "hello");
    // Idle now. Each round is a Ping one way and a Pong the other; five rounds span five intervals.
    const rounds = (transcript: string) =>
      Math.min(transcript.split(PING).length, transcript.split(PONG).length) - 1;
    // Each advance by a timeout lets both ends of every link go silent for an interval: each
    // sends one Ping, and before the next advance both Pongs must be back, or the link is dead.
    for (let round = 1; round <= 5; round++) {
      clock.advance(KEEPALIVE.timeout);
      await settlesWithin(
        Promise.all([
          clientRoute.waitFor("either", (transcript) => rounds(transcript) >= 2 * round),
          serverRoute.waitFor("either", (transcript) => rounds(transcript) >= 2 * round),
        ]),
        `keepalive round ${round} on each link`,
      );
    }
    assert.ok(!clientRoute.blackholed);
    assert.ok(rounds(clientRoute.transcript("either")) >= 5, "the client's route was cut");
    assert.ok(rounds(serverRoute.transcript("either")) >= 5, "the server's route was cut");
    await assertEchoes(client, "still here");
    // No link was replaced on the way.
    assert.equal(proxy.routes.length, 2);
  } finally {
    listener.close();
    for (const client of clients) client.close();
    await Promise.all(clients.map((client) => client.closed));
    await serving;
  }
});

Deno.test("keepalive: a peer that did not announce it never receives a Ping", async (t) => {
  const clock = new FakeClock();
  await using dp = await startDiscoverPoint({ keepalive: { interval: 30, timeout: 60, clock } });
  // A raw indirect server without F, registered and idle.
  using server = await RawPeer.connect(dp.address);
  await server.send('0\n{"V":10000,"R":2,"N":"plain"}\n');
  const serverAloha = await server.expect();
  assert.equal(serverAloha.body.R, 4);
  assert.equal(serverAloha.body.F, undefined);
  // The server end speaks every extension but keepalive, so no link here expects a Pong.
  using listener = listen({
    dp: dp.address,
    name: "echo",
    features: ["half-close", "flow-control", "binary"],
  });
  const serving = serveEcho(listener);
  using client = await RawPeer.connect(dp.address);
  try {
    await client.send('0\n{"V":10000,"R":3,"N":"plain-client"}\n');
    const clientAloha = await client.expect();
    assert.equal(clientAloha.body.F, undefined);
    await client.send('1\n{"N":"echo"}\n');
    const ack = await client.expect();
    assert.equal(ack.type, 2);
    assert.ok(ack.body.X >= 0);

    const serverNext = server.next();
    const clientNext = client.next();
    await t.step("nothing arrives on either link across ten intervals", async () => {
      clock.advance(10 * 30);
      await Promise.all([
        assertNothingArrives(serverNext, 300),
        assertNothingArrives(clientNext, 300),
      ]);
    });
    await t.step("the client's session still carries data", async () => {
      await client.send(`3\n{"X":${ack.body.X},"C":"aGk="}\n`);
      assert.deepEqual(await clientNext, { type: 3, body: { X: ack.body.X, C: "aGk=" } });
    });
    server.close();
    assert.equal(await serverNext, null);
  } finally {
    client.close();
    listener.close();
    await serving;
  }
});

Deno.test("keepalive: the discover point drops a link that announced keepalive and never answers", async () => {
  const clock = new FakeClock();
  await using dp = await startDiscoverPoint({ keepalive: { interval: 30, timeout: 60, clock } });
  using server = await RawPeer.connect(dp.address);
  await server.send('0\n{"V":10000,"R":2,"N":"mute","F":["keepalive"]}\n');
  const aloha = await server.expect();
  assert.deepEqual(aloha.body.F, ["keepalive"]);
  // It gets a Ping, stays mute, and the DP ends the link.
  const ended = server.untilEnd();
  clock.advance(30);
  clock.advance(60);
  const seen = await settlesWithin(ended, "the DP to drop the mute link");
  assert.deepEqual(seen, [{ type: 7, body: {} }]);
  assert.deepEqual([...dp.dp.servers], []);
});
