/**
 * The `auth` extension and the names policy (SECURITY.md §3.1–3.2, §4):
 * owned names can be registered only with an owner key, client-restricted
 * names reached only with a listed client key; proofs are bound to their
 * link, name, role and discover point; failed proofs are throttled per
 * address and logged without the signature; peers of the original protocol
 * keep working for open names and get a clear refusal for owned ones.
 *
 * Every test that fails proofs starts its own discover point: all of them
 * come from 127.0.0.1, which shares one throttle bucket per discover point.
 * @module
 */

import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "npm:@logtape/logtape@2.4.2";
import {
  connect,
  DiscoverPoint,
  formatPublicKey,
  generateIdentity,
  type Identity,
  importIdentity,
  type IndirectConn,
  IndirectDialer,
  listen,
  NamesFile,
  parsePublicKey,
  pkcs8ToPem,
  ProtocolError,
  SessionRefusedError,
} from "../mod.ts";
import {
  newNonce,
  signTranscript,
  transcript,
  type TranscriptFields,
  verifyTranscript,
} from "../lib/link/auth.ts";
import { FailureThrottle } from "../lib/dp/limits.ts";
import {
  assertEchoes,
  IC_ALOHA,
  type InProcessDiscoverPoint,
  IS_ALOHA,
  RawPeer,
  settlesWithin,
  startDiscoverPoint,
} from "./_helpers.ts";
import {
  alohaRefusalOf,
  AuthPeer,
  ownedNames,
  rawKey,
  refusedSessionOf,
  startEchoOwner,
  StrippingProxy,
} from "./_auth_peer.ts";

// ---- reasons and shared helpers --------------------------------------------

/** An IS that proved no key, for an owned name. */
const OWNED = (name: string) =>
  `Cannot register "${name}": the name is owned; prove an owner key (extension auth)`;
/** An IS that proved a key which is not among the name's owners. */
const NOT_OWNER = (name: string, key: string) =>
  `Cannot register "${name}": key ${key} is not an owner of the name`;
/** A signature that does not verify against this link's transcript. */
const BAD_PROOF = (name: string, key: string) =>
  `Cannot accept the proof of key ${key} for "${name}": the signature does not match this link's transcript`;
/** An IC without a key, for a client-restricted name. */
const LISTED_ONLY = (name: string) =>
  `Cannot reach "${name}": it admits only listed client keys; connect with a key (extension auth)`;
/** An IC with a key that is not among the name's clients. */
const NOT_CLIENT = (name: string, key: string) =>
  `Cannot reach "${name}": key ${key} is not one of its clients`;
/** A source address that spent its failed-proof burst. */
const THROTTLED = /too many failed proofs from this address; try again in a minute/;

/** A fresh Ed25519 identity. */
async function newKey(): Promise<Identity> {
  return (await generateIdentity()).identity;
}

/** A discover point where `"db"` is owned by `owner` (clients: `"any"` unless given). */
function ownedDp(
  owner: Identity,
  options: { clients?: Identity[]; name?: string } = {},
): Promise<InProcessDiscoverPoint> {
  return startDiscoverPoint({
    names: ownedNames({ db: { owners: [owner], clients: options.clients ?? "any" } }),
    ...(options.name === undefined ? {} : { name: options.name }),
  });
}

/** Asserts that `promise` rejects with a ProtocolError whose message contains or matches `reason`. */
async function assertProtocolRefusal(
  promise: Promise<unknown>,
  reason: string | RegExp,
): Promise<void> {
  await assert.rejects(settlesWithin(promise, "the refusal"), (error: Error) => {
    assert.ok(error instanceof ProtocolError, `expected a ProtocolError, got ${error}`);
    if (typeof reason === "string") assert.ok(error.message.includes(reason), error.message);
    else assert.match(error.message, reason);
    return true;
  });
}

/**
 * Asserts that `opening` rejects with a SessionRefusedError whose reason is or
 * matches `reason`. A session that opens after all is closed, so a failing
 * assertion does not leave the test hanging on it.
 */
async function assertSessionRefused(
  opening: Promise<IndirectConn>,
  reason: string | RegExp,
): Promise<void> {
  const closed = opening.then((conn) => {
    conn.close();
    return conn;
  });
  await assert.rejects(settlesWithin(closed, "the session refusal"), (error: Error) => {
    assert.ok(error instanceof SessionRefusedError, `expected a SessionRefusedError, got ${error}`);
    if (typeof reason === "string") assert.equal(error.reason, reason);
    else assert.match(error.reason, reason);
    return true;
  });
}

/** Base64 of `n` random bytes. */
function randomBase64(n: number): string {
  return crypto.getRandomValues(new Uint8Array(n)).toBase64();
}

/** Data "hi" on session `id` from a raw peer comes back from the echo server on the other side. */
async function assertRawEcho(peer: RawPeer, id: number): Promise<void> {
  await peer.send(`3\n{"X":${id},"C":"aGk="}\n`);
  assert.deepEqual(await settlesWithin(peer.expect(), "the echo"), {
    type: 3,
    body: { X: id, C: "aGk=" },
  });
}

// ---- ownership: who may register an owned name -------------------------------

Deno.test("auth: a second IS without the owner key is refused while the owner's open session keeps echoing", async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);
  await using server = await startEchoOwner(dp, "db", owner);
  using client = await connect({ dp: dp.address, name: "db" });
  await assertEchoes(client, "before the intruders");

  // The library without a key offers no auth, so the Aloha alone decides.
  using intruder = listen({ dp: dp.address, name: "db", reconnect: false });
  await assertProtocolRefusal(intruder.ready, OWNED("db"));

  // A peer of the original protocol gets Aloha R=5 with the reason in N.
  using raw = await RawPeer.connect(dp.address);
  await raw.send(IS_ALOHA("db"));
  assert.equal(await alohaRefusalOf(raw), OWNED("db"));

  // A peer that speaks auth but says it has no key is refused in Accepted.
  using keyless = await AuthPeer.open(dp.address, "IS", "db");
  await keyless.sendAuth({ M: "none" });
  assert.equal(await keyless.refusedRegistration(), OWNED("db"));

  assert.equal(dp.dp.servers.get("db"), 1);
  await assertEchoes(client, "after the intruders");
  assert.equal(server.accepted(), 1);
});

Deno.test("auth: 64 unauthenticated links for an owned name are refused at once, then the owner registers and serves", async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);

  const refusals = await Promise.all(Array.from({ length: 64 }, async (_, i) => {
    if (i % 2 === 0) {
      using raw = await RawPeer.connect(dp.address);
      await raw.send(IS_ALOHA("db"));
      return await alohaRefusalOf(raw);
    }
    using keyless = await AuthPeer.open(dp.address, "IS", "db");
    await keyless.sendAuth({ M: "none" });
    return await keyless.refusedRegistration();
  }));
  assert.deepEqual(new Set(refusals), new Set([OWNED("db")]));
  assert.equal(dp.dp.servers.has("db"), false);

  // Links that offer auth and then never prove anything hold no place in the pool either.
  using squatters = new DisposableStack();
  for (let i = 0; i < 64; i++) squatters.use(await AuthPeer.open(dp.address, "IS", "db"));

  await using _server = await startEchoOwner(dp, "db", owner);
  assert.equal(dp.dp.servers.get("db"), 1);
  using client = await connect({ dp: dp.address, name: "db" });
  await assertEchoes(client, "the owner serves");
});

Deno.test("auth: an IS proving a key that is not an owner's (valid signature) is refused", async () => {
  const [owner, stranger] = [await newKey(), await newKey()];
  await using dp = await ownedDp(owner);

  using peer = await AuthPeer.open(dp.address, "IS", "db");
  await peer.prove(stranger);
  assert.equal(await peer.refusedRegistration(), NOT_OWNER("db", stranger.publicKey));

  using listener = listen({ dp: dp.address, name: "db", key: stranger, reconnect: false });
  await assertProtocolRefusal(listener.ready, NOT_OWNER("db", stranger.publicKey));
  assert.equal(dp.dp.servers.has("db"), false);

  await using _server = await startEchoOwner(dp, "db", owner);
  assert.equal(dp.dp.servers.get("db"), 1);
});

Deno.test("auth: an IS with the owner's key but a garbage signature is refused", async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);
  using peer = await AuthPeer.open(dp.address, "IS", "db");
  await peer.sendAuth({ M: "ed25519", K: rawKey(owner), S: randomBase64(64) });
  assert.equal(await peer.refusedRegistration(), BAD_PROOF("db", owner.publicKey));
  assert.equal(dp.dp.servers.has("db"), false);
});

Deno.test("auth: malformed proofs (signature or key of the wrong length, not base64, oversized) are refused and the DP keeps serving", async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);
  const proof = `Cannot accept the proof of key ${owner.publicKey} for "db"`;
  const cases: [string, Record<string, unknown>, string | RegExp][] = [
    [
      "a 10-byte signature",
      { M: "ed25519", K: rawKey(owner), S: randomBase64(10) },
      `${proof}: an Ed25519 signature is 64 bytes, this one 10`,
    ],
    [
      "a 65-byte signature",
      { M: "ed25519", K: rawKey(owner), S: randomBase64(65) },
      `${proof}: an Ed25519 signature is 64 bytes, this one 65`,
    ],
    [
      "no signature",
      { M: "ed25519", K: rawKey(owner) },
      `${proof}: an Ed25519 signature is 64 bytes, this one 0`,
    ],
    [
      "a signature that is not base64",
      { M: "ed25519", K: rawKey(owner), S: "not*base64!" },
      `${proof}: the signature is not base64`,
    ],
    [
      "a 31-byte key",
      { M: "ed25519", K: randomBase64(31), S: randomBase64(64) },
      /^Cannot accept the proof of key ed25519:\S+ for "db": .*an Ed25519 public key is 32 bytes, this one 31$/,
    ],
  ];
  for (const [what, body, reason] of cases) {
    using peer = await AuthPeer.open(dp.address, "IS", "db");
    await peer.sendAuth(body);
    const refusal = await peer.refusedRegistration();
    if (typeof reason === "string") assert.equal(refusal, reason, what);
    else assert.match(refusal, reason, what);
  }

  // A signature longer than any Auth field allows ends that link as a protocol error.
  {
    using peer = await AuthPeer.open(dp.address, "IS", "db");
    await peer.sendAuth({ M: "ed25519", K: rawKey(owner), S: randomBase64(4096) });
    await settlesWithin(peer.peer.untilEnd(), "the DP to drop the link");
  }

  assert.equal(dp.dp.servers.has("db"), false);
  await using server = await startEchoOwner(dp, "db", owner);
  using client = await connect({ dp: dp.address, name: "db" });
  await assertEchoes(client, "still serving");
  assert.equal(server.accepted(), 1);
});

Deno.test('auth: an Auth with an unknown method ("hmac") is refused', async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);
  using peer = await AuthPeer.open(dp.address, "IS", "db");
  await peer.sendAuth({ M: "hmac", K: "wiki-2026", S: randomBase64(32) });
  assert.match(
    await peer.refusedRegistration(),
    /^Cannot accept the proof of key .* for "db": method "hmac" is not "ed25519" or "none"$/,
  );
  assert.equal(dp.dp.servers.has("db"), false);
});

Deno.test("auth: a listener with a key fails at a discover point that does not speak auth", async () => {
  const owner = await newKey();
  await using dp = await startDiscoverPoint({ features: [] });
  using listener = listen({ dp: dp.address, name: "db", key: owner, reconnect: false });
  await assertProtocolRefusal(listener.ready, /does not speak extension auth/);
  await assertProtocolRefusal(listener.accept(), /does not speak extension auth/);
  // (The DP, speaking Part 1 only, may have registered the link for the moment before the
  // listener dropped it: nothing was proven, and the listener serves nothing on it.)
});

Deno.test("auth: a failed proof is logged with the name and the key, never the signature", async () => {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { memory: (record: LogRecord) => void records.push(record) },
    loggers: [
      { category: ["rtcp", "dp"], lowestLevel: "warning", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "fatal", sinks: [] },
    ],
  });
  try {
    const [owner, stranger] = [await newKey(), await newKey()];
    await using dp = await ownedDp(owner);
    const signatures: string[] = [];
    {
      using peer = await AuthPeer.open(dp.address, "IS", "db");
      const garbage = randomBase64(64);
      signatures.push(garbage);
      await peer.sendAuth({ M: "ed25519", K: rawKey(owner), S: garbage });
      await peer.refusedRegistration();
    }
    {
      using peer = await AuthPeer.open(dp.address, "IS", "db");
      signatures.push((await peer.prove(stranger, { name: "elsewhere" })).S!);
      await peer.refusedRegistration();
    }
    const rendered = records.map((record) =>
      `${record.message.map(String).join("")} ${JSON.stringify(record.properties)}`
    );
    const failures = records.filter((record) =>
      String(record.message[0]).startsWith("Failed proof")
    );
    assert.equal(failures.length, 2, rendered.join("\n"));
    // The message's values (odd places) name the name and the key.
    for (const [record, key] of [[failures[0]!, owner], [failures[1]!, stranger]] as const) {
      assert.ok(record.message.includes("db"), Deno.inspect(record.message));
      assert.ok(record.message.includes(key.publicKey), Deno.inspect(record.message));
    }
    for (const signature of signatures) {
      for (const line of rendered) {
        assert.ok(!line.includes(signature), `the log shows a signature: ${line}`);
        // Not even a recognisable piece of it.
        assert.ok(!line.includes(signature.slice(0, 16)), `the log shows a signature: ${line}`);
      }
    }
  } finally {
    await reset();
  }
});

// ---- replay: a proof holds for one link, name, role and discover point -------

Deno.test("auth: an Auth captured on one link is refused on another (fresh nonce per link)", async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);

  using first = await AuthPeer.open(dp.address, "IS", "db");
  const captured = await first.prove(owner);
  assert.equal(await first.verdict(), "");
  assert.equal(dp.dp.servers.get("db"), 1);

  using second = await AuthPeer.open(dp.address, "IS", "db");
  assert.notEqual(second.nonce, first.nonce);
  await second.sendAuth(captured);
  assert.equal(await second.refusedRegistration(), BAD_PROOF("db", owner.publicKey));
  assert.equal(dp.dp.servers.get("db"), 1);

  // The first link is registered and serves: the DP's Connect carries the client's address (P).
  const connecting = connect({ dp: dp.address, name: "db", clientName: "probe" });
  // Awaited below; if an assertion fails first, its rejection must not end the whole module.
  connecting.catch(() => {});
  const request = await settlesWithin(first.peer.expect(), "the Connect");
  assert.equal(request.type, 1);
  assert.equal(request.body.N, "probe");
  assert.match(request.body.P, /^127\.0\.0\.1:\d+$/);
  assert.equal(request.body.K, undefined);
  await first.peer.send('2\n{"X":1,"R":""}\n');
  using conn = await settlesWithin(connecting, "the session to open");
  await first.peer.send('3\n{"X":1,"C":"aGk="}\n');
  const reader = conn.readable.getReader();
  try {
    const { value } = await settlesWithin(reader.read(), "the server's bytes");
    assert.equal(new TextDecoder().decode(value), "hi");
  } finally {
    reader.releaseLock();
  }
});

Deno.test("auth: an Auth made for name A does not register name B", async () => {
  const owner = await newKey();
  await using dp = await startDiscoverPoint({
    names: ownedNames({ a: { owners: [owner] }, b: { owners: [owner] } }),
  });
  using forged = await AuthPeer.open(dp.address, "IS", "b");
  await forged.prove(owner, { name: "a" });
  assert.equal(await forged.refusedRegistration(), BAD_PROOF("b", owner.publicKey));
  assert.equal(dp.dp.servers.size, 0);

  // The same key with a proof for B's own name registers B.
  using honest = await AuthPeer.open(dp.address, "IS", "b");
  await honest.prove(owner);
  assert.equal(await honest.verdict(), "");
  assert.deepEqual([...dp.dp.servers], [["b", 1]]);
});

Deno.test("auth: the role is bound: an IS signature does not authorize an IC, nor an IC signature an IS", async () => {
  const [owner, member] = [await newKey(), await newKey()];
  await using dp = await startDiscoverPoint({
    names: ownedNames({ db: { owners: [owner, member], clients: [member] } }),
  });
  await using server = await startEchoOwner(dp, "db", owner);

  using asServer = await AuthPeer.open(dp.address, "IC", "probe");
  await asServer.prove(member, { role: "IS", name: "db" });
  await asServer.connectTo("db");
  assert.equal(await asServer.refusedSession(), BAD_PROOF("db", member.publicKey));
  assert.equal(server.requests.length, 0);

  using asClient = await AuthPeer.open(dp.address, "IS", "db");
  await asClient.prove(member, { role: "IC" });
  assert.equal(await asClient.refusedRegistration(), BAD_PROOF("db", member.publicKey));
  assert.equal(dp.dp.servers.get("db"), 1);

  // The same key signing as the role it plays reaches the server.
  using client = await AuthPeer.open(dp.address, "IC", "probe");
  await client.prove(member, { name: "db" });
  await client.connectTo("db");
  const ack = await settlesWithin(client.peer.expect(), "the Ack");
  assert.equal(ack.type, 2);
  assert.ok(ack.body.X > 0, Deno.inspect(ack));
  await assertRawEcho(client.peer, ack.body.X);
  assert.equal(server.requests.length, 1);
  assert.equal(server.requests[0]!.clientKey, member.publicKey);
});

Deno.test("auth: an IC's proof for one name does not reach another name with the same client key", async () => {
  const [owner, member] = [await newKey(), await newKey()];
  await using dp = await startDiscoverPoint({
    names: ownedNames({
      db: { owners: [owner], clients: [member] },
      vault: { owners: [owner], clients: [member] },
    }),
  });
  await using vault = await startEchoOwner(dp, "vault", owner);
  using client = await AuthPeer.open(dp.address, "IC", "probe");
  await client.prove(member, { name: "db" });
  await client.connectTo("vault");
  assert.equal(await client.refusedSession(), BAD_PROOF("vault", member.publicKey));
  assert.equal(vault.requests.length, 0);
});

Deno.test("auth: an Auth made for another discover point's name is refused", async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner, { name: "dp-a" });
  using relayed = await AuthPeer.open(dp.address, "IS", "db");
  assert.equal(relayed.dpName, "dp-a");
  await relayed.prove(owner, { dpName: "dp-b" });
  assert.equal(await relayed.refusedRegistration(), BAD_PROOF("db", owner.publicKey));
  assert.equal(dp.dp.servers.has("db"), false);

  using honest = await AuthPeer.open(dp.address, "IS", "db");
  await honest.prove(owner);
  assert.equal(await honest.verdict(), "");
  assert.equal(dp.dp.servers.get("db"), 1);
});

// ---- pools ------------------------------------------------------------------

Deno.test("auth: two links with the owner key form one pool and sessions from several clients all echo", async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);
  await using first = await startEchoOwner(dp, "db", owner);
  await using second = await startEchoOwner(dp, "db", owner);
  assert.equal(dp.dp.servers.get("db"), 2);

  using clients = new DisposableStack();
  for (let i = 0; i < 6; i++) {
    const client = clients.use(await connect({ dp: dp.address, name: "db", clientName: `c${i}` }));
    await assertEchoes(client, `client ${i}`);
  }
  assert.equal(first.accepted() + second.accepted(), 6);
  assert.ok(first.accepted() > 0 && second.accepted() > 0, "sessions spread over both links");
  assert.equal(dp.dp.servers.get("db"), 2);
});

// ---- compatibility with the original protocol ---------------------------------

Deno.test("auth: a Part 1 peer (no F) registers and serves an open name exactly as before, next to an owned name", async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);

  using server = await RawPeer.connect(dp.address);
  await server.send(IS_ALOHA("open"));
  const serverAloha = await server.expect();
  assert.equal(serverAloha.type, 0);
  assert.deepEqual(Object.keys(serverAloha.body).sort(), ["N", "R", "V"]); // no F, no A
  assert.equal(serverAloha.body.R, 4);

  using client = await RawPeer.connect(dp.address);
  await client.send(IC_ALOHA("ic"));
  const clientAloha = await client.expect();
  assert.deepEqual(Object.keys(clientAloha.body).sort(), ["N", "R", "V"]);
  await client.send('1\n{"N":"open"}\n');
  // Exactly the original Connect: no K, no P on a link that did not agree on auth.
  assert.deepEqual(await server.next(), { type: 1, body: { N: "ic" } });
  await server.send('2\n{"X":7,"R":""}\n');
  assert.deepEqual(await client.next(), { type: 2, body: { X: 7, R: "" } });
  await client.send('3\n{"X":7,"C":"aGk="}\n');
  assert.deepEqual(await server.next(), { type: 3, body: { X: 7, C: "aGk=" } });
  await server.send('3\n{"X":7,"C":"AP8KDQ=="}\n');
  assert.deepEqual(await client.next(), { type: 3, body: { X: 7, C: "AP8KDQ==" } });

  using other = await RawPeer.connect(dp.address);
  await other.send(IS_ALOHA("db"));
  assert.equal(await alohaRefusalOf(other), OWNED("db"));
  assert.deepEqual([...dp.dp.servers], [["open", 1]]);
});

Deno.test("auth: a Part 1 IC gets Ack -1 with the reason for a client-restricted name", async () => {
  const [owner, member] = [await newKey(), await newKey()];
  await using dp = await ownedDp(owner, { clients: [member] });
  await using server = await startEchoOwner(dp, "db", owner);
  using client = await RawPeer.connect(dp.address);
  await client.send(IC_ALOHA("ic"));
  assert.equal((await client.expect()).body.R, 4);
  await client.send('1\n{"N":"db"}\n');
  assert.equal(await refusedSessionOf(client), LISTED_ONLY("db"));
  assert.equal(server.requests.length, 0);
});

Deno.test('auth: a Part 1 IC reaches an owned name whose clients are "any"', async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);
  await using server = await startEchoOwner(dp, "db", owner);
  using client = await RawPeer.connect(dp.address);
  await client.send(IC_ALOHA("ic"));
  assert.equal((await client.expect()).body.R, 4);
  await client.send('1\n{"N":"db"}\n');
  const ack = await settlesWithin(client.expect(), "the Ack");
  assert.equal(ack.type, 2);
  assert.ok(ack.body.X > 0, Deno.inspect(ack));
  await assertRawEcho(client, ack.body.X);

  assert.equal(server.requests.length, 1);
  const request = server.requests[0]!;
  assert.equal(request.clientKey, undefined);
  assert.equal(request.client, "ic");
  assert.equal(request.remoteAddr.hostname, "127.0.0.1");
  assert.equal(request.remoteAddr.port, client.conn.localAddr.port);
});

Deno.test('auth: an IC may pipeline Auth "none" and its Connect behind its Aloha for an open name', async () => {
  await using dp = await startDiscoverPoint();
  await using server = await startEchoOwner(dp, "open", undefined);
  using client = await RawPeer.connect(dp.address);
  await client.send(
    '0\n{"V":10000,"R":3,"N":"ic","F":["auth"]}\n9\n{"M":"none"}\n1\n{"N":"open"}\n',
  );
  const aloha = await client.expect();
  assert.equal(aloha.body.R, 4);
  assert.deepEqual(aloha.body.F, ["auth"]);
  const ack = await settlesWithin(client.expect(), "the Ack");
  assert.equal(ack.type, 2);
  assert.ok(ack.body.X > 0, Deno.inspect(ack));
  await assertRawEcho(client, ack.body.X);
  assert.equal(server.requests[0]!.clientKey, undefined);
});

Deno.test('auth: a public port reaches an owned name whose clients are "any", and a client-restricted name cannot be exposed', async () => {
  const [owner, member] = [await newKey(), await newKey()];
  await using dp = await startDiscoverPoint({
    names: ownedNames({ db: { owners: [owner] } }),
    expose: { db: 0 },
  });
  await using server = await startEchoOwner(dp, "db", owner);
  using tcp = await Deno.connect({
    hostname: "127.0.0.1",
    port: dp.dp.publicAddrs.get("db")!.port,
  });
  await tcp.write(new TextEncoder().encode("hi"));
  const buffer = new Uint8Array(2);
  let have = 0;
  while (have < 2) {
    const count = await settlesWithin(tcp.read(buffer.subarray(have)), "the echo");
    assert.ok(count !== null, "the public connection ended");
    have += count;
  }
  assert.equal(new TextDecoder().decode(buffer), "hi");
  // The keyed server sees the address the DP saw, and no key.
  const request = server.requests[0]!;
  assert.equal(request.clientKey, undefined);
  assert.equal(request.remoteAddr.hostname, "127.0.0.1");
  assert.equal(request.remoteAddr.port, tcp.localAddr.port);

  assert.throws(
    () =>
      new DiscoverPoint({
        hostname: "127.0.0.1",
        port: 0,
        names: ownedNames({ db: { owners: [owner], clients: [member] } }),
        expose: { db: 0 },
      }),
    (error: Error) => error instanceof TypeError && /Cannot expose "db"/.test(error.message),
  );
});

// ---- downgrade -----------------------------------------------------------------

Deno.test("auth: an owner's Aloha with F stripped (or auth removed from F) is refused, never registered", async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);

  // What a stripping proxy forwards: the Aloha of the original protocol.
  using stripped = await RawPeer.connect(dp.address);
  await stripped.send(IS_ALOHA("db"));
  assert.equal(await alohaRefusalOf(stripped), OWNED("db"));

  // Only auth removed, the other extensions kept.
  using partly = await RawPeer.connect(dp.address);
  await partly.sendMessage(0, {
    V: 10000,
    R: 2,
    N: "db",
    F: ["half-close", "keepalive", "flow-control", "binary"],
  });
  assert.equal(await alohaRefusalOf(partly), OWNED("db"));

  // The real owner through a proxy that strips F: refused, and the library says why.
  {
    await using proxy = new StrippingProxy(dp.address);
    using listener = listen({ dp: proxy.address, name: "db", key: owner, reconnect: false });
    await assertProtocolRefusal(listener.ready, OWNED("db"));
    assert.equal(proxy.forwarded.length, 1);
    assert.equal(proxy.forwarded[0]!.F, undefined);
  }
  assert.equal(dp.dp.servers.has("db"), false);

  // Without the proxy the same owner registers.
  await using _server = await startEchoOwner(dp, "db", owner);
  assert.equal(dp.dp.servers.get("db"), 1);
});

// ---- client keys -----------------------------------------------------------------

Deno.test("auth: a listed client key reaches the name; admit() sees the key and the observed address, not clientName", async () => {
  const [owner, member] = [await newKey(), await newKey()];
  await using dp = await ownedDp(owner, { clients: [member] });
  await using server = await startEchoOwner(dp, "db", owner);
  using client = await connect({
    dp: dp.address,
    name: "db",
    key: member,
    clientName: "10.0.0.1:22",
  });
  await assertEchoes(client, "a listed client");
  assert.equal(server.requests.length, 1);
  const request = server.requests[0]!;
  assert.equal(request.clientKey, member.publicKey);
  assert.equal(request.client, "10.0.0.1:22");
  assert.equal(request.remoteAddr.hostname, "127.0.0.1");
  assert.notEqual(request.remoteAddr.port, 22);
});

Deno.test("auth: a client key that is not listed gets SessionRefusedError", async () => {
  const [owner, member, stranger] = [await newKey(), await newKey(), await newKey()];
  await using dp = await ownedDp(owner, { clients: [member] });
  await using server = await startEchoOwner(dp, "db", owner);
  await assertSessionRefused(
    connect({ dp: dp.address, name: "db", key: stranger }),
    NOT_CLIENT("db", stranger.publicKey),
  );
  // The owner key is not a client key either.
  await assertSessionRefused(
    connect({ dp: dp.address, name: "db", key: owner }),
    NOT_CLIENT("db", owner.publicKey),
  );
  assert.equal(server.requests.length, 0);
});

Deno.test("auth: a client without a key gets SessionRefusedError saying the name admits only listed keys", async () => {
  const [owner, member] = [await newKey(), await newKey()];
  await using dp = await ownedDp(owner, { clients: [member] });
  await using server = await startEchoOwner(dp, "db", owner);
  await assertSessionRefused(connect({ dp: dp.address, name: "db" }), LISTED_ONLY("db"));
  // An auth peer saying "none" is refused the same way.
  using keyless = await AuthPeer.open(dp.address, "IC", "probe");
  await keyless.sendAuth({ M: "none" });
  await keyless.connectTo("db");
  assert.equal(await keyless.refusedSession(), LISTED_ONLY("db"));
  assert.equal(server.requests.length, 0);
});

Deno.test("auth: on a keyed server's link the DP's Connect carries the client's proven key (K) and observed address (P)", async () => {
  const [owner, member] = [await newKey(), await newKey()];
  await using dp = await ownedDp(owner, { clients: [member] });
  using server = await AuthPeer.open(dp.address, "IS", "db");
  await server.prove(owner);
  assert.equal(await server.verdict(), "");

  using client = await AuthPeer.open(dp.address, "IC", "10.0.0.1:22");
  await client.prove(member, { name: "db" });
  await client.connectTo("db");
  const request = await settlesWithin(server.peer.expect(), "the Connect");
  assert.deepEqual(request, {
    type: 1,
    body: {
      N: "10.0.0.1:22",
      K: member.publicKey,
      P: `127.0.0.1:${client.peer.conn.localAddr.port}`,
    },
  });
  await server.peer.send('2\n{"X":5,"R":""}\n');
  assert.deepEqual(await client.peer.expect(), { type: 2, body: { X: 5, R: "" } });
});

Deno.test("auth: a keyed client reaches open names; only a server whose link agreed auth sees its key", async () => {
  const [member, serverKey] = [await newKey(), await newKey()];
  {
    await using dp = await startDiscoverPoint({ names: ownedNames({}) });
    // A server without a key offers no auth, so its Connects carry no K (nor P).
    await using plain = await startEchoOwner(dp, "plain", undefined);
    using toPlain = await connect({ dp: dp.address, name: "plain", key: member });
    await assertEchoes(toPlain, "open name, keyless server");
    assert.equal(plain.requests[0]!.clientKey, undefined);
    // Any key may register an open (unlisted) name; its link agreed auth, so it sees K and P.
    await using keyed = await startEchoOwner(dp, "keyed", serverKey);
    using toKeyed = await connect({ dp: dp.address, name: "keyed", key: member });
    await assertEchoes(toKeyed, "open name, keyed server");
    assert.equal(keyed.requests[0]!.clientKey, member.publicKey);
    assert.equal(keyed.requests[0]!.remoteAddr.hostname, "127.0.0.1");
  }
  {
    // A discover point without auth: the keyed client does not insist, and reaches the name.
    await using dp = await startDiscoverPoint({ features: [] });
    await using server = await startEchoOwner(dp, "open", undefined);
    using client = await connect({ dp: dp.address, name: "open", key: member });
    await assertEchoes(client, "DP without auth, keyed client");
    assert.equal(server.requests[0]!.clientKey, undefined);
  }
});

// ---- nonces ----------------------------------------------------------------------

Deno.test("auth: 1,000 DP Alohas give 1,000 distinct 32-byte nonces", async () => {
  await using dp = await startDiscoverPoint();
  const nonces = new Set<string>();
  for (let batch = 0; batch < 20; batch++) {
    const answers = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
      using peer = await AuthPeer.open(dp.address, i % 2 === 0 ? "IS" : "IC", "nonce");
      return peer.nonce;
    }));
    for (const nonce of answers) {
      assert.equal(Uint8Array.fromBase64(nonce).length, 32, nonce);
      nonces.add(nonce);
    }
  }
  assert.equal(nonces.size, 1000);

  const local = new Set(Array.from({ length: 10_000 }, () => newNonce()));
  assert.equal(local.size, 10_000);
  for (const nonce of local) assert.equal(Uint8Array.fromBase64(nonce).length, 32);
});

Deno.test("auth: a peer that offers auth without the DP agreeing gets no nonce", async () => {
  await using dp = await startDiscoverPoint({ features: ["half-close"] });
  using peer = await RawPeer.connect(dp.address);
  await peer.sendMessage(0, { V: 10000, R: 3, N: "ic", F: ["half-close", "auth"] });
  const answer = await peer.expect();
  assert.deepEqual(answer.body.F, ["half-close"]);
  assert.equal(answer.body.A, undefined);
});

// ---- throttling failed proofs -------------------------------------------------------

Deno.test("auth: after 10 failed proofs from one address its next proof, even a valid one, is refused", async () => {
  const owner = await newKey();
  await using dp = await ownedDp(owner);
  for (let i = 0; i < 10; i++) {
    using peer = await AuthPeer.open(dp.address, "IS", "db");
    await peer.sendAuth({ M: "ed25519", K: rawKey(owner), S: randomBase64(64) });
    assert.equal(await peer.refusedRegistration(), BAD_PROOF("db", owner.publicKey), `try ${i}`);
  }

  using valid = await AuthPeer.open(dp.address, "IS", "db");
  await valid.prove(owner);
  assert.match(await valid.refusedRegistration(), THROTTLED);
  using listener = listen({ dp: dp.address, name: "db", key: owner, reconnect: false });
  await assertProtocolRefusal(listener.ready, THROTTLED);
  assert.equal(dp.dp.servers.has("db"), false);

  // The throttle guards proofs only: an open name still registers from the same address.
  using open = await RawPeer.connect(dp.address);
  await open.send(IS_ALOHA("open"));
  assert.equal((await open.expect()).body.R, 4);
  assert.equal(dp.dp.servers.get("open"), 1);
});

Deno.test("auth: failed client proofs (unlisted keys) count too: the listed key is then refused", async () => {
  const [owner, member] = [await newKey(), await newKey()];
  await using dp = await ownedDp(owner, { clients: [member] });
  await using server = await startEchoOwner(dp, "db", owner);
  for (let i = 0; i < 10; i++) {
    const stranger = await newKey();
    await assertSessionRefused(
      connect({ dp: dp.address, name: "db", key: stranger }),
      NOT_CLIENT("db", stranger.publicKey),
    );
  }
  await assertSessionRefused(connect({ dp: dp.address, name: "db", key: member }), THROTTLED);
  assert.equal(server.requests.length, 0);
});

Deno.test("auth: FailureThrottle refills one failure per refillMs, per address, and others are not affected", () => {
  let now = 0;
  const throttle = new FailureThrottle({ burst: 3, refillMs: 1000, now: () => now });
  assert.ok(throttle.allows("10.0.0.1"));
  for (let i = 0; i < 3; i++) throttle.failed("10.0.0.1");
  assert.equal(throttle.allows("10.0.0.1"), false);
  assert.ok(throttle.allows("10.0.0.2"), "another address registers normally");

  now += 999;
  assert.equal(throttle.allows("10.0.0.1"), false);
  now += 1;
  assert.ok(throttle.allows("10.0.0.1"), "one failure refilled after refillMs");
  throttle.failed("10.0.0.1");
  assert.equal(throttle.allows("10.0.0.1"), false);

  // A long quiet spell refills the bucket to the burst, never beyond it.
  now += 60_000;
  for (let i = 0; i < 3; i++) {
    assert.ok(throttle.allows("10.0.0.1"), `failure ${i} allowed`);
    throttle.failed("10.0.0.1");
  }
  assert.equal(throttle.allows("10.0.0.1"), false);
  assert.ok(throttle.allows("10.0.0.2"));
});

Deno.test("auth: FailureThrottle remembers at most maxSources addresses", () => {
  const throttle = new FailureThrottle({ burst: 1, refillMs: 1000, maxSources: 2, now: () => 0 });
  throttle.failed("a");
  throttle.failed("b");
  assert.equal(throttle.allows("a"), false);
  throttle.failed("c"); // forgets "a", the longest remembered
  assert.ok(throttle.allows("a"));
  assert.equal(throttle.allows("b"), false);
  assert.equal(throttle.allows("c"), false);
});

// ---- names files ----------------------------------------------------------------------

Deno.test("auth: NamesFile.parse reads owners and clients, and clients default to any", async () => {
  const [owner, member] = [await newKey(), await newKey()];
  const names = NamesFile.parse(JSON.stringify({
    db: { owners: [owner.publicKey], clients: [member.publicKey] },
    wiki: { owners: [owner.publicKey] },
    blog: { owners: [owner.publicKey], clients: "any" },
  }));
  assert.ok(names.needsProof("db") && names.needsProof("wiki") && names.needsProof("blog"));
  assert.equal(names.needsProof("open"), false);
  assert.ok(names.restrictsClients("db"));
  assert.equal(names.restrictsClients("wiki"), false);
  assert.equal(names.restrictsClients("blog"), false);
  assert.equal(names.connection("wiki", undefined), undefined);
  assert.equal(names.connection("db", member.publicKey), undefined);
  assert.equal(names.connection("db", undefined), LISTED_ONLY("db"));
  assert.equal(names.registration("db", owner.publicKey), undefined);
  assert.equal(names.registration("db", member.publicKey), NOT_OWNER("db", member.publicKey));
  assert.equal(names.registration("db", undefined), OWNED("db"));
  assert.equal(names.registration("open", undefined), undefined);
});

Deno.test("auth: NamesFile.parse refuses bad files with a message naming the place", async () => {
  const key = (await newKey()).publicKey;
  const cases: [string, string, RegExp][] = [
    ["bad JSON", "{ db: ", /^Cannot read the names file: /],
    ["a list", "[]", /expected a JSON object of names/],
    ["null", "null", /expected a JSON object of names/],
    ["a string", '"db"', /expected a JSON object of names/],
    ["an entry that is not an object", '{"db": 1}', /"db" must be an object/],
    [
      "an unknown key",
      JSON.stringify({ db: { owners: [key], x: 1 } }),
      /"db"\.x is not a known key/,
    ],
    ["no owners", JSON.stringify({ db: {} }), /"db"\.owners must be a list/],
    [
      "empty owners",
      JSON.stringify({ db: { owners: [] } }),
      /"db"\.owners must list at least one key/,
    ],
    [
      "a key without its prefix",
      JSON.stringify({ db: { owners: [key.slice("ed25519:".length)] } }),
      /"db"\.owners\[0\]: Cannot use key .*expected "ed25519:<base64>"/,
    ],
    [
      "a key that is not base64",
      JSON.stringify({ db: { owners: ["ed25519:***"] } }),
      /"db"\.owners\[0\]: .*not base64/,
    ],
    [
      "a key of the wrong length",
      JSON.stringify({ db: { owners: [`ed25519:${randomBase64(16)}`] } }),
      /"db"\.owners\[0\]: .*32 bytes, this one 16/,
    ],
    [
      "a key that is not a string",
      JSON.stringify({ db: { owners: [key, 7] } }),
      /"db"\.owners\[1\] must be a string/,
    ],
    [
      "clients that are neither any nor a list",
      JSON.stringify({ db: { owners: [key], clients: "owner" } }),
      /"db"\.clients must be "any" or a list of keys/,
    ],
    [
      "a bad client key",
      JSON.stringify({ db: { owners: [key], clients: ["rsa:abc"] } }),
      /"db"\.clients\[0\]: Cannot use key "rsa:abc"/,
    ],
    ["an empty name", JSON.stringify({ "": { owners: [key] } }), /a name cannot be empty/],
  ];
  for (const [what, text, message] of cases) {
    assert.throws(() => NamesFile.parse(text), (error: Error) => {
      assert.ok(error instanceof TypeError, `${what}: ${error}`);
      assert.match(error.message, /^Cannot read the names file: /, what);
      assert.match(error.message, message, what);
      return true;
    }, what);
  }
});

Deno.test('auth: NamesFile with unlisted "refuse" refuses every name not in the file', async () => {
  const owner = await newKey();
  const text = JSON.stringify({ db: { owners: [owner.publicKey] } });
  const refuse = NamesFile.parse(text, "refuse");
  assert.match(refuse.registration("other", undefined)!, /serves only the names in its names file/);
  assert.equal(refuse.registration("db", owner.publicKey), undefined);
  assert.equal(NamesFile.parse(text).registration("other", undefined), undefined);

  await using dp = await startDiscoverPoint({ names: refuse });
  using raw = await RawPeer.connect(dp.address);
  await raw.send(IS_ALOHA("other"));
  assert.match(await alohaRefusalOf(raw), /^Cannot register "other": .*names file/);
  using keyed = await AuthPeer.open(dp.address, "IS", "other");
  await keyed.prove(owner);
  assert.match(await keyed.refusedRegistration(), /^Cannot register "other": .*names file/);
  await using _server = await startEchoOwner(dp, "db", owner);
  assert.deepEqual([...dp.dp.servers], [["db", 1]]);
});

Deno.test({
  name:
    "auth: a names file key written without base64 padding or with a space still matches its holder",
  // Regression: keys were kept as written, so a key without its "=" padding never matched.
  async fn() {
    const owner = await newKey();
    const variants = [
      owner.publicKey.replace(/=$/, ""),
      `${owner.publicKey.slice(0, 20)} ${owner.publicKey.slice(20)}`,
    ];
    for (const written of variants) {
      let names: NamesFile;
      try {
        names = NamesFile.parse(JSON.stringify({ db: { owners: [written], clients: [written] } }));
      } catch (error) {
        // Refusing the file, with a message, is a fix as good as matching the key.
        assert.ok(error instanceof TypeError, String(error));
        continue;
      }
      assert.equal(names.registration("db", owner.publicKey), undefined, written);
      assert.equal(names.connection("db", owner.publicKey), undefined, written);
      await using dp = await startDiscoverPoint({ names });
      await using _server = await startEchoOwner(dp, "db", owner);
      using client = await connect({ dp: dp.address, name: "db", key: owner });
      await assertEchoes(client, written);
    }
  },
});

// ---- keys, transcripts and the code that handles them ----------------------------------

Deno.test("auth: importIdentity of pkcs8ToPem(generateIdentity().pkcs8) gives the same key, and it signs", async () => {
  const { identity, pkcs8 } = await generateIdentity();
  assert.match(identity.publicKey, /^ed25519:[A-Za-z0-9+/]{43}=$/);
  const pem = pkcs8ToPem(pkcs8);
  assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);
  const fromPem = await importIdentity(pem);
  assert.equal(fromPem.publicKey, identity.publicKey);
  const fromDer = await importIdentity(pkcs8);
  assert.equal(fromDer.publicKey, identity.publicKey);
  assert.equal(fromPem.privateKey.extractable, false);

  const fields: TranscriptFields = {
    role: "IS",
    name: "db",
    nonce: newNonce(),
    dpName: "rtcp-dp",
    peerName: "db",
  };
  const { key, signature } = await signTranscript(fromPem, fields);
  assert.equal(await verifyTranscript(key, signature, fields), identity.publicKey);
});

Deno.test("auth: importIdentity refuses a key that is not Ed25519 with a TypeError naming Ed25519", async () => {
  const ecKey = await Deno.readTextFile(new URL("./fixtures/dp.key", import.meta.url));
  await assert.rejects(importIdentity(ecKey), (error: Error) => {
    assert.ok(error instanceof TypeError, String(error));
    assert.match(error.message, /Ed25519/);
    return true;
  });
  await assert.rejects(importIdentity("not a key"), TypeError);
  await assert.rejects(importIdentity(new Uint8Array(48)), TypeError);
});

Deno.test({
  name: "auth: importIdentity of a PEM whose body is not base64 throws the documented TypeError",
  // Regression: a corrupted PEM body threw a SyntaxError from the base64 decoder.
  async fn() {
    const corrupted = "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n";
    await assert.rejects(importIdentity(corrupted), (error: Error) => {
      assert.ok(error instanceof TypeError, `expected a TypeError, got ${error}`);
      assert.match(error.message, /^Cannot read the private key/);
      return true;
    });
  },
});

Deno.test("auth: a proof binds every transcript field", async () => {
  const identity = await newKey();
  const fields: TranscriptFields = {
    role: "IC",
    name: "db",
    nonce: newNonce(),
    dpName: "rtcp-dp",
    peerName: "me",
  };
  const { key, signature } = await signTranscript(identity, fields);
  assert.equal(await verifyTranscript(key, signature, fields), identity.publicKey);
  const altered: Partial<TranscriptFields>[] = [
    { role: "IS" },
    { name: "db2" },
    { nonce: newNonce() },
    { dpName: "other-dp" },
    { peerName: "you" },
    // Moving bytes between fields changes the length prefixes.
    { name: "d", peerName: "bme" },
  ];
  for (const change of altered) {
    await assert.rejects(
      verifyTranscript(key, signature, { ...fields, ...change }),
      /does not match this link's transcript/,
      Deno.inspect(change),
    );
  }
  // Length-prefixed: "ab"+"c" and "a"+"bc" are different transcripts.
  const base = { role: "IS", nonce: "n", dpName: "d" } as const;
  assert.notDeepEqual(
    transcript({ ...base, name: "ab", peerName: "c" }),
    transcript({ ...base, name: "a", peerName: "bc" }),
  );
});

Deno.test("auth: parsePublicKey and formatPublicKey round-trip and refuse malformed keys", async () => {
  const identity = await newKey();
  const raw = parsePublicKey(identity.publicKey);
  assert.equal(raw.length, 32);
  assert.equal(formatPublicKey(raw), identity.publicKey);
  assert.throws(() => parsePublicKey(identity.publicKey.slice(8)), TypeError);
  assert.throws(() => parsePublicKey("ed25519:***"), TypeError);
  assert.throws(() => parsePublicKey(`ed25519:${randomBase64(33)}`), /32 bytes, this one 33/);
});

/** Words of an identifier: `signatureBytes` → `signature`, `Bytes`; `SIGNATURE_BYTES` likewise. */
function identifierWords(operand: string): string[] {
  return (operand.match(/[A-Za-z_$][\w$]*/g) ?? []).flatMap((identifier) =>
    identifier.replace(/([a-z0-9])([A-Z])/g, "$1 $2").split(/[\s_$]+/).filter(Boolean)
  );
}

const SECRET_WORD = /^(signature|secret|tag|mac|hmac)s?$/i;

/**
 * `===` / `!==` comparisons in `source` where an operand names a signature,
 * secret, tag or MAC. Comments and plain string literals are ignored, and so
 * are type checks (`typeof x === …`) and length checks (`x.length !== N`),
 * which compare nothing secret. Returns `"line: text"` for each hit.
 */
function secretComparisons(source: string): string[] {
  const code = source
    .replace(/\/\*[\s\S]*?\*\//g, (comment) => comment.replace(/[^\n]/g, " "))
    .replace(/(^|[^:\\])\/\/.*$/gm, "$1")
    .replace(/"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'/g, '""')
    .replaceAll("?.", ".");
  const comparison = /([\w$#.[\]()"'`]+)\s*[!=]==\s*([\w$#.[\]()"'`]+)/g;
  const hits: string[] = [];
  for (const [index, line] of code.split("\n").entries()) {
    for (const match of line.matchAll(comparison)) {
      const [, left, right] = match as unknown as [string, string, string];
      if (/typeof\s*$/.test(line.slice(0, match.index))) continue;
      if ([left, right].some((operand) => /\.(length|byteLength)\)*$/.test(operand))) continue;
      if (
        [left, right].some((operand) => identifierWords(operand).some((w) => SECRET_WORD.test(w)))
      ) {
        hits.push(`${index + 1}: ${line.trim()}`);
      }
    }
  }
  return hits;
}

Deno.test("auth: the secret-comparison check finds what it should and nothing else", () => {
  const flagged = [
    "if (signature === expected) return;",
    "return tag !== other;",
    "const same = a.secretKey === b;",
    "if (hmacTag === this.#tag) {}",
    "ok = received?.mac !== computed;",
  ];
  for (const line of flagged) assert.equal(secretComparisons(line).length, 1, line);
  const ignored = [
    "if (signatureBytes.length !== SIGNATURE_BYTES) {",
    'if (typeof signature === "string") {}',
    "// never write signature === expected",
    "/** compare tag === tag? never */",
    'throw new Error("signature === expected is wrong");',
    "if (stage === machine) {}",
    "if (message.type !== MessageType.Auth) {}",
  ];
  for (const line of ignored) assert.deepEqual(secretComparisons(line), [], line);
});

Deno.test("auth: no file in lib/ compares a signature, secret, tag or MAC with === or !==", async () => {
  const hits: string[] = [];
  let files = 0;
  // lib/ and its layers, folder by folder.
  const folders = ["lib/"];
  for (let folder = folders.shift(); folder !== undefined; folder = folders.shift()) {
    const url = new URL(`../${folder}`, import.meta.url);
    for await (const entry of Deno.readDir(url)) {
      if (entry.isDirectory) folders.push(`${folder}${entry.name}/`);
      if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
      files++;
      const source = await Deno.readTextFile(new URL(entry.name, url));
      for (const hit of secretComparisons(source)) hits.push(`${folder}${entry.name}:${hit}`);
    }
  }
  assert.ok(files > 10, `read only ${files} files in lib/`);
  assert.deepEqual(hits, [], `secrets compared in script:\n${hits.join("\n")}`);
});

// ---- configurations that could not protect anything -------------------------

Deno.test("auth: a discover point with a names file but without the auth extension refuses to start", async () => {
  const owner = await newKey();
  assert.throws(
    () =>
      new DiscoverPoint({
        names: ownedNames({ db: { owners: [owner] } }),
        features: ["half-close"],
      }),
    (error: Error) => {
      assert.ok(error instanceof TypeError, String(error));
      assert.match(error.message, /Cannot protect names without extension auth/);
      return true;
    },
  );
});

Deno.test("auth: a key without the auth extension in features is refused, not silently dropped", async () => {
  const key = await newKey();
  await using dp = await startDiscoverPoint();
  await assert.rejects(
    connect({ dp: dp.address, name: "db", key, features: ["binary"] }),
    (error: Error) => error instanceof TypeError && /add "auth" to features/.test(error.message),
  );
  using listener = listen({ dp: dp.address, name: "db", key, features: ["binary"] });
  await assert.rejects(
    listener.ready,
    (error: Error) => error instanceof TypeError && /add "auth" to features/.test(error.message),
  );
});

Deno.test("auth: an IndirectDialer proves its key once, and each session is the listed client's", async () => {
  const [owner, member, stranger] = [await newKey(), await newKey(), await newKey()];
  await using dp = await ownedDp(owner, { clients: [member] });
  await using server = await startEchoOwner(dp, "db", owner);
  await using dialer = new IndirectDialer({ dp: dp.address, name: "db", key: member });
  using first = await dialer.connect();
  const links = dp.dp.stats().links;
  using second = await dialer.connect();
  assert.equal(dp.dp.stats().links, links, "the second session shares the first one's link");
  await Promise.all([assertEchoes(first, "one"), assertEchoes(second, "two")]);
  assert.deepEqual(server.requests.map((request) => request.clientKey), [
    member.publicKey,
    member.publicKey,
  ]);
  // A stranger's dialer is refused every session, with the policy's reason.
  await using strangers = new IndirectDialer({ dp: dp.address, name: "db", key: stranger });
  await assertSessionRefused(strangers.connect(), NOT_CLIENT("db", stranger.publicKey));
  await assertSessionRefused(strangers.connect(), NOT_CLIENT("db", stranger.publicKey));
  assert.equal(server.requests.length, 2);
});
