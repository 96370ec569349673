/**
 * The discover point as a black box on the wire: hand-written protocol lines
 * exactly as PROTOCOL.md gives them, no library code on the client side.
 */

import assert from "node:assert/strict";
import {
  concatBytes,
  IC_ALOHA,
  IS_ALOHA,
  randomBytes,
  type RawMessage,
  RawPeer,
  type RunningDiscoverPoint,
  settlesWithin,
  spawnDiscoverPoint,
  startDiscoverPoint,
} from "./_helpers.ts";

function assertDpAloha(message: RawMessage | null): void {
  assert.ok(message !== null, "expected the DP's Aloha, the link ended");
  assert.equal(message.type, 0);
  assert.equal(message.body.R, 4);
  assert.equal(Math.floor(message.body.V / 10000), 1);
  assert.equal(typeof message.body.N, "string");
  // We announced no extensions, so the DP must speak Parts 1 and 2 only.
  assert.equal(message.body.F, undefined);
}

function assertRefusal(message: RawMessage | null): void {
  assert.ok(message !== null, "expected Aloha R=5, the link ended");
  assert.equal(message.type, 0);
  assert.equal(message.body.R, 5);
}

/** Opens an indirect server link and completes its handshake. */
async function registerServer(dp: RunningDiscoverPoint, name: string): Promise<RawPeer> {
  const server = await RawPeer.connect(dp.address);
  await server.send(IS_ALOHA(name));
  assertDpAloha(await server.next());
  return server;
}

/** Opens an indirect client link, completes its handshake and sends Connect. */
async function requestSession(
  dp: RunningDiscoverPoint,
  clientName: string,
  serverName: string,
): Promise<RawPeer> {
  const client = await RawPeer.connect(dp.address);
  await client.send(IC_ALOHA(clientName));
  assertDpAloha(await client.next());
  await client.send(`1\n{"N":${JSON.stringify(serverName)}}\n`);
  return client;
}

/** A full session: Connect reaches the server, which acks with `sessionId`. */
async function openSession(
  dp: RunningDiscoverPoint,
  server: RawPeer,
  clientName: string,
  serverName: string,
  sessionId: number,
): Promise<RawPeer> {
  const client = await requestSession(dp, clientName, serverName);
  assert.deepEqual(await server.next(), { type: 1, body: { N: clientName } });
  await server.send(`2\n{"X":${sessionId},"R":""}\n`);
  assert.deepEqual(await client.next(), { type: 2, body: { X: sessionId, R: "" } });
  return client;
}

/** Data both ways on an open session. */
async function assertDataFlows(server: RawPeer, client: RawPeer, sessionId: number): Promise<void> {
  await client.send(`3\n{"X":${sessionId},"C":"aGk="}\n`);
  assert.deepEqual(await server.next(), { type: 3, body: { X: sessionId, C: "aGk=" } });
  await server.send(`3\n{"X":${sessionId},"C":"AP8KDQ=="}\n`);
  assert.deepEqual(await client.next(), { type: 3, body: { X: sessionId, C: "AP8KDQ==" } });
}

const KINDS = [
  ["in-process", () => startDiscoverPoint()],
  ["dp.ts subprocess", () => spawnDiscoverPoint()],
] as const;

for (const [kind, start] of KINDS) {
  Deno.test(`DiscoverPoint (${kind}) relays a session exactly as PROTOCOL.md describes`, async (t) => {
    await using dp = await start();
    using server = await RawPeer.connect(dp.address);

    await t.step("an indirect server's Aloha is answered with the DP's Aloha (R=4)", async () => {
      await server.send('0\n{"V":10000,"R":2,"N":"wire"}\n');
      assertDpAloha(await server.next());
    });

    using client = await RawPeer.connect(dp.address);
    await t.step("an indirect client's Aloha is answered with the DP's Aloha (R=4)", async () => {
      await client.send('0\n{"V":10000,"R":3,"N":"ic"}\n');
      assertDpAloha(await client.next());
    });

    await t.step("Connect reaches the server with the client's name, Ack comes back", async () => {
      await client.send('1\n{"N":"wire"}\n');
      assert.deepEqual(await server.next(), { type: 1, body: { N: "ic" } });
      await server.send('2\n{"X":7,"R":""}\n');
      assert.deepEqual(await client.next(), { type: 2, body: { X: 7, R: "" } });
    });

    await t.step("Data with base64 content flows both ways", async () => {
      await assertDataFlows(server, client, 7);
      await client.send('3\n{"X":7,"C":""}\n3\n{"X":7,"C":"AQID"}\n');
      // An empty Data may be forwarded or dropped; the bytes after it arrive intact.
      let message = await server.expect();
      if (message.body.C === "") message = await server.expect();
      assert.deepEqual(message, { type: 3, body: { X: 7, C: "AQID" } });
    });

    await t.step("\\r\\n line ends are accepted", async () => {
      await client.send('3\r\n{"X":7,"C":"Zm9v"}\r\n');
      assert.deepEqual(await server.next(), { type: 3, body: { X: 7, C: "Zm9v" } });
    });

    await t.step(
      "the client's Close reaches the server and is answered; the client link ends",
      async () => {
        await client.send('4\n{"X":7,"R":"done"}\n');
        const forwarded = await server.expect();
        assert.equal(forwarded.type, 4);
        assert.equal(forwarded.body.X, 7);
        const answered = await client.untilEnd();
        assert.equal(answered.length, 1, Deno.inspect(answered));
        assert.equal(answered[0]!.type, 4);
        assert.equal(answered[0]!.body.X, 7);
      },
    );

    await t.step(
      "the number may be reused, and the server's Close reaches the client",
      async () => {
        using second = await openSession(dp, server, "ic2", "wire", 7);
        await assertDataFlows(server, second, 7);
        await server.send('4\n{"X":7,"R":"bye"}\n');
        const forwarded = await second.untilEnd();
        assert.equal(forwarded.length, 1, Deno.inspect(forwarded));
        assert.deepEqual(forwarded[0]!.type, 4);
        assert.deepEqual(forwarded[0]!.body.X, 7);
        const answer = await server.expect();
        assert.equal(answer.type, 4);
        assert.equal(answer.body.X, 7);
      },
    );

    await t.step("the server link still carries new sessions", async () => {
      using third = await openSession(dp, server, "ic3", "wire", 8);
      await assertDataFlows(server, third, 8);
    });
  });
}

Deno.test("DiscoverPoint names an anonymous client by its address in Connect", async () => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "anon");
  using client = await requestSession(dp, "", "anon");
  const connect = await server.expect();
  assert.equal(connect.type, 1);
  assert.equal(connect.body.N, `127.0.0.1:${client.conn.localAddr.port}`);
  await server.send('2\n{"X":1,"R":""}\n');
  assert.deepEqual(await client.next(), { type: 2, body: { X: 1, R: "" } });
});

Deno.test("DiscoverPoint answers Connect to an unknown name with Ack X=-1 and a reason", async () => {
  await using dp = await startDiscoverPoint();
  using client = await requestSession(dp, "ic", "nobody");
  const ack = await client.expect();
  assert.equal(ack.type, 2);
  assert.equal(ack.body.X, -1);
  assert.equal(typeof ack.body.R, "string");
  assert.match(ack.body.R, /nobody/);
});

Deno.test("DiscoverPoint passes an indirect server's refusal (Ack X=-1) to the client", async () => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "picky");
  using client = await requestSession(dp, "ic", "picky");
  assert.equal((await server.expect()).type, 1);
  await server.send('2\n{"X":-1,"R":"not today"}\n');
  assert.deepEqual(await client.next(), { type: 2, body: { X: -1, R: "not today" } });
  await t_serverStillWorks(dp, server, "picky");
});

async function t_serverStillWorks(dp: RunningDiscoverPoint, server: RawPeer, name: string) {
  using client = await openSession(dp, server, "check", name, 99);
  await assertDataFlows(server, client, 99);
}

Deno.test("DiscoverPoint spreads sessions over an indirect server's pool", async () => {
  await using dp = await startDiscoverPoint();
  using a = await registerServer(dp, "pool");
  using b = await registerServer(dp, "pool");
  const peers = { a, b };
  type Name = keyof typeof peers;
  const reads: Record<Name, Promise<RawMessage>> = { a: a.expect(), b: b.expect() };
  const nextOn = async (): Promise<[Name, RawMessage]> => {
    const [name, message] = await Promise.race(
      (["a", "b"] as const).map((name) => reads[name].then((m) => [name, m] as [Name, RawMessage])),
    );
    reads[name] = peers[name].expect();
    return [name, message];
  };
  using first = await requestSession(dp, "c1", "pool");
  const [firstLink, connect1] = await nextOn();
  assert.equal(connect1.type, 1);
  await peers[firstLink].send('2\n{"X":1,"R":""}\n');
  assert.deepEqual(await first.next(), { type: 2, body: { X: 1, R: "" } });

  using second = await requestSession(dp, "c2", "pool");
  const [secondLink, connect2] = await nextOn();
  assert.equal(connect2.type, 1);
  assert.notEqual(secondLink, firstLink, "the second session went to the busier link");
  await peers[secondLink].send('2\n{"X":2,"R":""}\n');
  assert.deepEqual(await second.next(), { type: 2, body: { X: 2, R: "" } });

  // Data of each session arrives on its own link.
  await first.send('3\n{"X":1,"C":"AQ=="}\n');
  assert.deepEqual(await nextOn(), [firstLink, { type: 3, body: { X: 1, C: "AQ==" } }]);
  await second.send('3\n{"X":2,"C":"Ag=="}\n');
  assert.deepEqual(await nextOn(), [secondLink, { type: 3, body: { X: 2, C: "Ag==" } }]);

  // Closing the links ends the pending reads.
  a.close();
  b.close();
  await Promise.allSettled(Object.values(reads));
});

Deno.test("DiscoverPoint refuses a bad first message with Aloha R=5 and ends only that link", async (t) => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "steady");
  using client = await openSession(dp, server, "ic", "steady", 1);
  const cases: [string, string][] = [
    ["garbage", "hello there\n\n"],
    ["bad JSON", '0\n{"V":10000,"R":2,\n'],
    ["Data before Aloha", '3\n{"X":1,"C":"AQ=="}\n'],
    ["Connect before Aloha", '1\n{"N":"steady"}\n'],
    ["wrong major version", '0\n{"V":20000,"R":2,"N":"steady"}\n'],
    ["older major version", '0\n{"V":9999,"R":3,"N":"c"}\n'],
    ["direct server role", '0\n{"V":10000,"R":0,"N":"x"}\n'],
    ["direct client role", '0\n{"V":10000,"R":1,"N":"x"}\n'],
    ["discover point role", '0\n{"V":10000,"R":4,"N":"x"}\n'],
  ];
  for (const [label, input] of cases) {
    await t.step(label, async () => {
      using bad = await RawPeer.connect(dp.address);
      await bad.send(input);
      const seen = await bad.untilEnd();
      assert.ok(seen.length <= 1, Deno.inspect(seen));
      if (label.includes("version")) {
        assert.equal(seen.length, 1, "a version refusal is Aloha R=5");
      }
      if (seen.length === 1) assertRefusal(seen[0]!);
      await assertDataFlows(server, client, 1);
    });
  }
});

Deno.test("DiscoverPoint accepts a compatible minor version", async () => {
  await using dp = await startDiscoverPoint();
  using peer = await RawPeer.connect(dp.address);
  await peer.send('0\n{"V":19999,"R":2,"N":"minor"}\n');
  assertDpAloha(await peer.next());
});

Deno.test("DiscoverPoint ends an established link that sends malformed input, and only that link", async (t) => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "steady");
  using client = await openSession(dp, server, "ic", "steady", 1);
  const cases: [string, string][] = [
    ["garbage", "what\n"],
    ["bad JSON", '3\n{"X":5,"C":\n'],
    ["unknown type", '9\n{"X":5}\n'],
    ["bad base64", '3\n{"X":5,"C":"!!"}\n'],
    ["Connect", '1\n{"N":"steady"}\n'],
    ["a second Aloha", IS_ALOHA("other")],
    ["Ack without Connect", '2\n{"X":5,"R":""}\n'],
    ["End without half-close", '5\n{"X":5}\n'],
  ];
  for (const [label, input] of cases) {
    await t.step(`from another indirect server: ${label}`, async () => {
      using other = await registerServer(dp, `other-${label}`);
      using otherClient = await openSession(dp, other, "oc", `other-${label}`, 5);
      await other.send(input);
      // The other server's link ends; its session's client gets a Close with a reason.
      await other.untilEnd();
      const closes = await otherClient.untilEnd();
      assert.equal(closes.length, 1, Deno.inspect(closes));
      assert.equal(closes[0]!.type, 4);
      assert.equal(closes[0]!.body.X, 5);
      assert.notEqual(closes[0]!.body.R, "", "the Close says what happened");
      await assertDataFlows(server, client, 1);
    });
  }
  const clientCases: [string, string][] = [
    ...cases.slice(0, 5),
    ["Data for another session", '3\n{"X":1,"C":"AQ=="}\n'],
    ["Ack", '2\n{"X":2,"R":""}\n'],
  ];
  for (const [label, input] of clientCases) {
    await t.step(`from another indirect client: ${label}`, async () => {
      using otherClient = await openSession(dp, server, "oc", "steady", 2);
      await otherClient.send(input);
      await otherClient.untilEnd();
      // The server is told the session ended.
      const close = await server.expect();
      assert.equal(close.type, 4);
      assert.equal(close.body.X, 2);
      assert.notEqual(close.body.R, "");
      await assertDataFlows(server, client, 1);
    });
  }
});

Deno.test("DiscoverPoint tells the server with a Close when a client link vanishes", async () => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "s");
  const client = await openSession(dp, server, "ic", "s", 3);
  client.close();
  const close = await server.expect();
  assert.equal(close.type, 4);
  assert.equal(close.body.X, 3);
  assert.notEqual(close.body.R, "");
  await t_serverStillWorks(dp, server, "s");
});

Deno.test("DiscoverPoint tells every client with a Close when the server link vanishes", async () => {
  await using dp = await startDiscoverPoint();
  const server = await registerServer(dp, "s");
  using c1 = await openSession(dp, server, "c1", "s", 1);
  using c2 = await openSession(dp, server, "c2", "s", 2);
  server.close();
  for (const [client, sessionId] of [[c1, 1], [c2, 2]] as const) {
    const seen = await client.untilEnd();
    assert.equal(seen.length, 1, Deno.inspect(seen));
    assert.equal(seen[0]!.type, 4);
    assert.equal(seen[0]!.body.X, sessionId);
    assert.notEqual(seen[0]!.body.R, "");
  }
  // The name is free again: a client is refused.
  using late = await requestSession(dp, "late", "s");
  const ack = await late.expect();
  assert.equal(ack.body.X, -1);
});

Deno.test("DiscoverPoint tolerates Data that crosses a Close", async () => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "s");
  using client = await openSession(dp, server, "c", "s", 4);
  await client.send('4\n{"X":4,"R":""}\n');
  assert.equal((await server.expect()).type, 4);
  // The server wrote this before it saw the Close: it must not cost the link.
  await server.send('3\n{"X":4,"C":"AQ=="}\n');
  await t_serverStillWorks(dp, server, "s");
});

Deno.test("DiscoverPoint forwards Data split across TCP segments at every byte", async () => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "s");
  using client = await openSession(dp, server, "c", "s", 6);
  const line = '3\n{"X":6,"C":"aGVsbG8="}\n';
  for (const char of line) await client.send(char);
  assert.deepEqual(await server.next(), { type: 3, body: { X: 6, C: "aGVsbG8=" } });
});

Deno.test("DiscoverPoint matches Acks to Connects in arrival order", async () => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "s");
  using first = await requestSession(dp, "first", "s");
  assert.deepEqual(await server.next(), { type: 1, body: { N: "first" } });
  using second = await requestSession(dp, "second", "s");
  assert.deepEqual(await server.next(), { type: 1, body: { N: "second" } });
  await server.send('2\n{"X":-1,"R":"no firsts"}\n2\n{"X":11,"R":""}\n');
  assert.deepEqual(await first.next(), { type: 2, body: { X: -1, R: "no firsts" } });
  assert.deepEqual(await second.next(), { type: 2, body: { X: 11, R: "" } });
  await assertDataFlows(server, second, 11);
});

Deno.test("DiscoverPoint closes a late-acknowledged session whose client gave up", async () => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "s");
  const client = await requestSession(dp, "impatient", "s");
  assert.equal((await server.expect()).type, 1);
  client.close();
  await server.send('2\n{"X":3,"R":""}\n');
  const close = await settlesWithin(server.expect(), "the DP's Close for the abandoned session");
  assert.equal(close.type, 4);
  assert.equal(close.body.X, 3);
  // Late Data for that number is ignored, and the link keeps working.
  await server.send('3\n{"X":3,"C":"AQ=="}\n');
  await t_serverStillWorks(dp, server, "s");
});

Deno.test("DiscoverPoint refuses a client whose server does not answer within ackTimeout", async () => {
  await using dp = await startDiscoverPoint({ ackTimeout: 50 });
  using server = await registerServer(dp, "mute");
  using client = await requestSession(dp, "ic", "mute");
  assert.equal((await server.expect()).type, 1);
  const seen = await client.untilEnd();
  assert.equal(seen.length, 1, Deno.inspect(seen));
  assert.equal(seen[0]!.type, 2);
  assert.equal(seen[0]!.body.X, -1);
  assert.match(seen[0]!.body.R, /mute/);
  // The late Ack gets a Close, and the link still works.
  await server.send('2\n{"X":1,"R":""}\n');
  const close = await server.expect();
  assert.equal(close.type, 4);
  assert.equal(close.body.X, 1);
  await t_serverStillWorks(dp, server, "mute");
});

Deno.test("DiscoverPoint answers the waiting client when a server acks a number already open", async () => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "dup");
  using first = await openSession(dp, server, "c1", "dup", 1);
  using second = await requestSession(dp, "c2", "dup");
  assert.equal((await server.expect()).type, 1);
  // Part 2 item 7: X must be unique among the server's open sessions. This breaks it.
  await server.send('2\n{"X":1,"R":""}\n');
  await server.untilEnd();
  // The first session's client is told its session ended...
  const closes = await settlesWithin(first.untilEnd(), "the first client's Close");
  assert.equal(closes.length, 1, Deno.inspect(closes));
  assert.equal(closes[0]!.type, 4);
  // ...and the client whose Connect got the bad Ack must not wait forever.
  const answer = await settlesWithin(second.untilEnd(), "an answer to the second client's Connect");
  assert.ok(answer.length <= 1, Deno.inspect(answer));
  if (answer.length === 1) {
    assert.equal(answer[0]!.type, 2);
    assert.equal(answer[0]!.body.X, -1);
  }
});

Deno.test("DiscoverPoint forwards End between ends that agreed on half-close", async () => {
  await using dp = await startDiscoverPoint();
  using server = await RawPeer.connect(dp.address);
  await server.send('0\n{"V":10000,"R":2,"N":"hc","F":["half-close"]}\n');
  const serverAloha = await server.expect();
  assert.equal(serverAloha.body.R, 4);
  assert.deepEqual(serverAloha.body.F, ["half-close"]);
  using client = await RawPeer.connect(dp.address);
  await client.send('0\n{"V":10000,"R":3,"N":"ic","F":["half-close","unknown-ext"]}\n');
  const clientAloha = await client.expect();
  assert.deepEqual(clientAloha.body.F, ["half-close"]);
  await client.send('1\n{"N":"hc"}\n');
  assert.equal((await server.expect()).type, 1);
  await server.send('2\n{"X":2,"R":""}\n');
  assert.deepEqual(await client.next(), { type: 2, body: { X: 2, R: "" } });
  await client.send('3\n{"X":2,"C":"cQ=="}\n5\n{"X":2}\n');
  assert.deepEqual(await server.next(), { type: 3, body: { X: 2, C: "cQ==" } });
  assert.deepEqual(await server.next(), { type: 5, body: { X: 2 } });
  // The server still answers after the client's End.
  await server.send('3\n{"X":2,"C":"YQ=="}\n5\n{"X":2}\n');
  assert.deepEqual(await client.next(), { type: 3, body: { X: 2, C: "YQ==" } });
  assert.deepEqual(await client.next(), { type: 5, body: { X: 2 } });
  await client.send('4\n{"X":2,"R":""}\n');
  assert.equal((await server.expect()).type, 4);
  const rest = await client.untilEnd();
  assert.deepEqual(rest.map((message) => message.type), [4]);
});

Deno.test("DiscoverPoint ends the session on both sides when a client's End meets an original server", async () => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "plain"); // no F: Parts 1 and 2 only
  using client = await RawPeer.connect(dp.address);
  await client.send('0\n{"V":10000,"R":3,"N":"ic","F":["half-close"]}\n');
  assert.deepEqual((await client.expect()).body.F, ["half-close"]);
  await client.send('1\n{"N":"plain"}\n');
  assert.equal((await server.expect()).type, 1);
  await server.send('2\n{"X":4,"R":""}\n');
  assert.deepEqual(await client.next(), { type: 2, body: { X: 4, R: "" } });
  await client.send('5\n{"X":4}\n');
  // The original server cannot be told of a half-close, so the DP closes the session...
  const close = await server.expect();
  assert.equal(close.type, 4);
  assert.equal(close.body.X, 4);
  // ...and must then tell the client too, or it waits for the server's bytes forever.
  const seen = await settlesWithin(client.untilEnd(), "a Close for the client after its End");
  assert.deepEqual(seen.map((message) => [message.type, message.body.X]), [[4, 4]]);
});

Deno.test("DiscoverPoint public port: a TCP client's half-close meeting an original server ends with EOF", async () => {
  await using dp = await startDiscoverPoint({ expose: { plain: 0 } });
  const publicPort = dp.dp.publicAddrs.get("plain")!.port;
  using server = await registerServer(dp, "plain");
  using tcp = await Deno.connect({ hostname: "127.0.0.1", port: publicPort });
  const connect = await server.expect();
  assert.equal(connect.type, 1);
  assert.equal(connect.body.N, `127.0.0.1:${tcp.localAddr.port}`);
  await server.send('2\n{"X":1,"R":""}\n');
  await tcp.write(new TextEncoder().encode("hi"));
  assert.deepEqual(await server.next(), { type: 3, body: { X: 1, C: "aGk=" } });
  await tcp.closeWrite();
  const close = await server.expect();
  assert.equal(close.type, 4);
  const buffer = new Uint8Array(16);
  assert.equal(await settlesWithin(tcp.read(buffer), "EOF on the public-port client"), null);
});

Deno.test("DiscoverPoint public port: what a TCP client sends and its half-close before the Ack follow the Ack in order", async () => {
  await using dp = await startDiscoverPoint({ expose: { plain: 0 } });
  const publicPort = dp.dp.publicAddrs.get("plain")!.port;
  using server = await registerServer(dp, "plain");
  using tcp = await Deno.connect({ hostname: "127.0.0.1", port: publicPort });
  assert.equal((await server.expect()).type, 1);
  // More than the DP reads ahead (64 KiB): the rest waits in the socket until the Ack.
  const sent = randomBytes(200 * 1024);
  for (let offset = 0; offset < sent.length;) offset += await tcp.write(sent.subarray(offset));
  await tcp.closeWrite();
  await server.send('2\n{"X":1,"R":""}\n');
  const received: Uint8Array[] = [];
  for (let got = 0; got < sent.length;) {
    const message = await server.expect();
    assert.equal(message.type, 3, Deno.inspect(message));
    const piece = Uint8Array.fromBase64(message.body.C);
    received.push(piece);
    got += piece.length;
  }
  assert.deepEqual(concatBytes(received), sent);
  // The original server cannot be told of the half-close: the DP closes the session after the bytes.
  assert.equal((await server.expect()).type, 4);
});

Deno.test("DiscoverPoint forwards a Data line near the 1 MiB limit and ends a link over it", async () => {
  await using dp = await startDiscoverPoint();
  using server = await registerServer(dp, "big");
  using client = await openSession(dp, server, "ic", "big", 1);
  // A Part 1 peer may send far more than 64 KiB in one Data.
  const content = new Uint8Array(700 * 1024).fill(7).toBase64();
  await client.send(`3\n{"X":1,"C":"${content}"}\n`);
  // The DP writes it on in pieces of at most 64 KiB, as Part 2 item 2 asks of writers.
  let received = 0;
  while (received < 700 * 1024) {
    const forwarded = await server.expect();
    assert.equal(forwarded.type, 3);
    const piece = Uint8Array.fromBase64(forwarded.body.C);
    assert.ok(piece.length <= 64 * 1024);
    assert.ok(piece.every((byte: number) => byte === 7));
    received += piece.length;
  }
  assert.equal(received, 700 * 1024);
  const over = "A".repeat(1024 * 1024 + 4);
  await client.send(`3\n{"X":1,"C":"${over}"}\n`).catch(() => {
    // The DP may close the link before it has read all of the line.
  });
  const close = await server.expect();
  assert.equal(close.type, 4);
  assert.equal(close.body.X, 1);
  assert.notEqual(close.body.R, "");
});

Deno.test("DiscoverPoint refuses an indirect server with an empty name, not with a welcome", async () => {
  await using dp = await startDiscoverPoint();
  using server = await RawPeer.connect(dp.address);
  await server.send(IS_ALOHA(""));
  // Answering R=4 and then closing tells the server it was registered when it was not.
  const seen = await server.untilEnd();
  assert.ok(seen.length <= 1, Deno.inspect(seen));
  if (seen.length === 1) assertRefusal(seen[0]!);
});

Deno.test("DiscoverPoint refuses a pool link over maxLinksPerServer, not with a welcome", async () => {
  await using dp = await startDiscoverPoint({ maxLinksPerServer: 1 });
  using first = await registerServer(dp, "solo");
  using second = await RawPeer.connect(dp.address);
  await second.send(IS_ALOHA("solo"));
  const seen = await second.untilEnd();
  assert.ok(seen.length <= 1, Deno.inspect(seen));
  if (seen.length === 1) assertRefusal(seen[0]!);
  await t_serverStillWorks(dp, first, "solo");
});

Deno.test("DiscoverPoint ends links that stay silent past handshakeTimeout", async (t) => {
  await using dp = await startDiscoverPoint({ handshakeTimeout: 50 });
  // Registered before the silent links below connect, so its deadline (if it had one) would
  // pass before theirs: their ending proves enough time went by, without a sleep.
  using server = await registerServer(dp, "patient");
  await t.step("no Aloha", async () => {
    using peer = await RawPeer.connect(dp.address);
    const seen = await peer.untilEnd();
    assert.ok(seen.length <= 1, Deno.inspect(seen));
  });
  await t.step("a client's Aloha but no Connect", async () => {
    using peer = await RawPeer.connect(dp.address);
    await peer.send(IC_ALOHA("idle"));
    assertDpAloha(await peer.next());
    assert.deepEqual(await peer.untilEnd(), []);
  });
  await t.step("a registered server is not subject to it", async () => {
    await t_serverStillWorks(dp, server, "patient");
  });
});

Deno.test("dp.ts closes its sessions and exits with status 0 on SIGTERM", async () => {
  await using dp = await spawnDiscoverPoint();
  using server = await registerServer(dp, "s");
  using client = await openSession(dp, server, "c", "s", 1);
  const status = await dp.stop();
  assert.equal(status.code, 0, await dp.stderr);
  // Both ends hear about it (a Close with a reason) or simply see the link end; neither hangs.
  for (const peer of [server, client]) {
    for (const message of await peer.untilEnd()) {
      assert.equal(message.type, 4);
      assert.equal(message.body.X, 1);
    }
  }
});
