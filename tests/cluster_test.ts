/**
 * Several discover points as one, in one process: a shared registry (in
 * memory, and Deno KV in memory), sessions carried from the DP a client
 * enters at to the DP that holds the name, what a bad registry entry costs,
 * names and client keys kept across the cluster, the pool that grows when a
 * DP asks and shrinks when idle, multi-homed servers and clients that fail over.
 * The same with real processes and a KV file: cluster_process_test.ts.
 * @module
 */

import assert from "node:assert/strict";
import {
  connect,
  generateIdentity,
  type Holder,
  type IndirectConn,
  IndirectDialer,
  KvRegistry,
  listen,
  type Membership,
  MemoryRegistry,
  NamesFile,
  type Registry,
  SessionRefusedError,
} from "../mod.ts";
import {
  assertEchoes,
  eventually,
  type InProcessDiscoverPoint,
  randomBytes,
  settlesWithin,
  startDiscoverPoint,
  unusedAddress,
} from "./_helpers.ts";
import { echoOf, serveEcho } from "./_ws.ts";
import { sha256Hex } from "./_tls.ts";
import { dialDiscoverPoint } from "../lib/link/handshake.ts";
import { ALL_FEATURES, Feature } from "../lib/link/link.ts";
import { MessageType, Role } from "../lib/wire/message.ts";

/** Three DPs sharing `registry`, each advertising its own port. */
async function startCluster(
  registry: Registry,
  count = 3,
  options: Parameters<typeof startDiscoverPoint>[0] = {},
) {
  const dps: InProcessDiscoverPoint[] = [];
  for (let i = 0; i < count; i++) {
    dps.push(await startDiscoverPoint({ registry, advertise: "127.0.0.1:0", ...options }));
  }
  return {
    dps,
    async [Symbol.asyncDispose]() {
      for (const dp of dps) await dp[Symbol.asyncDispose]();
    },
  };
}

/** A registry whose every member sees the same fixed holders: what a misbehaving DP could write. */
class FixedRegistry implements Registry {
  constructor(readonly holders: Holder[]) {}
  join(): Promise<Membership> {
    return Promise.resolve({
      hold() {},
      release() {},
      holders: () => Promise.resolve(this.holders),
      want() {},
      unwant() {},
      leave: () => Promise.resolve(),
    });
  }
}

/**
 * A server registered at DP 1 of a fresh cluster of three; `count` sessions at
 * once that `open` opens (entering at DP 3) each echo 64 KiB, checksummed.
 */
async function echoesThroughDp3(
  count: number,
  open: (dp3: string) => { connect(): Promise<IndirectConn> } & AsyncDisposable,
): Promise<void> {
  await using cluster = await startCluster(new MemoryRegistry());
  const [dp1, , dp3] = cluster.dps;
  const listener = listen({ dp: dp1!.address, name: "svc" });
  const served = serveEcho(listener);
  await settlesWithin(listener.ready, "the registration at DP 1");
  await using client = open(dp3!.address);
  const results = await settlesWithin(
    Promise.all(Array.from({ length: count }, async () => {
      const data = randomBytes(64 * 1024);
      const conn = await client.connect();
      return [await sha256Hex(data), await sha256Hex(await echoOf(conn, data))];
    })),
    `${count} sessions through DP 3`,
    30_000,
  );
  for (const [sent, echoed] of results) assert.equal(echoed, sent);
  assert.equal(dp3!.dp.servers.size, 0, "DP 3 holds no link of its own");
  listener.close();
  await served;
}

Deno.test("cluster: a client entering at DP 3 reaches a server registered at DP 1; 50 sessions at once, checksummed", async () => {
  await echoesThroughDp3(50, (dp) => ({
    connect: () => connect({ dp, name: "svc" }),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  }));
});

Deno.test("cluster: an IndirectDialer's sessions on one link at DP 3 are carried to DP 1, 20 at once", async () => {
  await echoesThroughDp3(20, (dp) => new IndirectDialer({ dp, name: "svc" }));
});

Deno.test("cluster: every DP serves a name held at one, public ports included", async () => {
  const registry = new MemoryRegistry();
  await using holder = await startDiscoverPoint({ registry, advertise: "127.0.0.1:0" });
  await using entry = await startDiscoverPoint({
    registry,
    advertise: "127.0.0.1:0",
    expose: { svc: 0 },
  });
  const listener = listen({ dp: holder.address, name: "svc" });
  const served = serveEcho(listener);
  await settlesWithin(listener.ready, "the registration");
  for (const dp of [holder, entry]) {
    using conn = await connect({ dp: dp.address, name: "svc" });
    await assertEchoes(conn, `through ${dp.address}`);
  }
  const publicPort = entry.dp.publicAddrs.get("svc")!;
  const plain = await Deno.connect({ hostname: publicPort.hostname, port: publicPort.port });
  await plain.write(new TextEncoder().encode("plain"));
  const echoed = new Uint8Array(5);
  for (let got = 0; got < 5;) got += (await plain.read(echoed.subarray(got)))!;
  assert.equal(new TextDecoder().decode(echoed), "plain");
  plain.close();
  listener.close();
  await served;
});

Deno.test("cluster: a relayed session goes no further, so two DPs that each believe the other holds a name cannot loop", async () => {
  // Each DP's registry says the other holds "ghost": without the hop rule this would ping-pong.
  const ports = [unusedAddress(), unusedAddress()];
  const registries = [new FixedRegistry([]), new FixedRegistry([])];
  await using a = await startDiscoverPoint({ registry: registries[0], advertise: ports[0] });
  await using b = await startDiscoverPoint({ registry: registries[1], advertise: ports[1] });
  registries[0]!.holders.push({ instance: "b", address: b.address });
  registries[1]!.holders.push({ instance: "a", address: a.address });
  const refusal = await settlesWithin(
    connect({ dp: a.address, name: "ghost" }).then(() => undefined, (error) => error),
    "the refusal",
  );
  assert.ok(refusal instanceof SessionRefusedError, String(refusal));
  // B refused the relayed session instead of carrying it back to A: it settled, with a reason.
  assert.match(refusal.message, /No indirect server is registered as "ghost"/);
});

Deno.test("cluster: a registry entry that points nowhere costs a retry, and alone a clean refusal", async () => {
  await using holder = await startDiscoverPoint({ registry: new MemoryRegistry() });
  const listener = listen({ dp: holder.address, name: "svc" });
  const served = serveEcho(listener);
  await settlesWithin(listener.ready, "the registration");
  const nowhere = unusedAddress();
  await using entry = await startDiscoverPoint({
    registry: new FixedRegistry([
      { instance: "dead", address: nowhere },
      { instance: "live", address: holder.address },
    ]),
  });
  for (let i = 0; i < 4; i++) {
    using conn = await connect({ dp: entry.address, name: "svc" });
    await assertEchoes(conn, `session ${i}`);
  }
  await using lonely = await startDiscoverPoint({
    registry: new FixedRegistry([{ instance: "dead", address: nowhere }]),
  });
  await assert.rejects(
    connect({ dp: lonely.address, name: "svc" }),
    (error: unknown) =>
      error instanceof SessionRefusedError &&
      /the discover points that hold it do not answer/.test(error.message),
  );
  listener.close();
  await served;
});

Deno.test("cluster: a stale entry naming a live DP that does not hold the name sends the client on to the next holder", async () => {
  await using holder = await startDiscoverPoint({ registry: new MemoryRegistry() });
  const listener = listen({ dp: holder.address, name: "svc" });
  const served = serveEcho(listener);
  await settlesWithin(listener.ready, "the registration");
  // Say a DP restarted on the address of one that held "svc": it answers, but holds nothing.
  await using restarted = await startDiscoverPoint({ registry: new MemoryRegistry() });
  await using entry = await startDiscoverPoint({
    registry: new FixedRegistry([
      { instance: "old", address: restarted.address },
      { instance: "live", address: holder.address },
    ]),
  });
  for (let i = 0; i < 6; i++) {
    using conn = await connect({ dp: entry.address, name: "svc" });
    await assertEchoes(conn, `session ${i}`);
  }
  listener.close();
  await served;
});

Deno.test("cluster: a holder whose recorded key could not own the name is not given its sessions", async () => {
  const owner = await generateIdentity();
  const names = NamesFile.parse(JSON.stringify({ db: { owners: [owner.identity.publicKey] } }));
  await using impostor = await startDiscoverPoint({ registry: new MemoryRegistry() });
  const listener = listen({ dp: impostor.address, name: "db" });
  const served = serveEcho(listener);
  await settlesWithin(listener.ready, "the impostor's registration at an open DP");
  await using entry = await startDiscoverPoint({
    names,
    registry: new FixedRegistry([{ instance: "x", address: impostor.address }]),
  });
  await assert.rejects(
    connect({ dp: entry.address, name: "db" }),
    (error: unknown) =>
      error instanceof SessionRefusedError &&
      /No indirect server is registered/.test(error.message),
  );
  listener.close();
  await served;
});

Deno.test("cluster: with a cluster key, a name's owner and client list hold at every DP, and the server sees the client's own key", async () => {
  const cluster = await generateIdentity();
  const server = await generateIdentity();
  const client = await generateIdentity();
  const names = NamesFile.parse(JSON.stringify({
    db: { owners: [server.identity.publicKey], clients: [client.identity.publicKey] },
  }));
  await using dps = await startCluster(new MemoryRegistry(), 2, {
    names,
    clusterKey: cluster.identity,
  });
  const [holder, entry] = dps.dps;
  const listener = listen({ dp: holder!.address, name: "db", key: server.identity });
  await settlesWithin(listener.ready, "the owner's registration");
  const accepted = listener.accept();
  using conn = await connect({ dp: entry!.address, name: "db", key: client.identity });
  using session = await accepted;
  assert.equal(session.clientKey, client.identity.publicKey);
  assert.equal(session.remoteAddr.hostname, "127.0.0.1");
  assert.notEqual(session.remoteAddr.port, holder!.port, "the address the entry DP saw");
  const writer = session.writable.getWriter();
  await writer.write(new TextEncoder().encode("ok"));
  const read = new Uint8Array(2);
  for (let got = 0; got < 2;) got += (await conn.read(read.subarray(got)))!;
  writer.releaseLock();
  // Without the client key, the entry DP refuses it itself.
  await assert.rejects(
    connect({ dp: entry!.address, name: "db" }),
    (error: unknown) =>
      error instanceof SessionRefusedError && /listed client keys/.test(error.message),
  );
  listener.close();
});

Deno.test("cluster: a relayed link that does not prove the cluster key cannot speak for a client", async () => {
  const cluster = await generateIdentity();
  const server = await generateIdentity();
  const client = await generateIdentity();
  const names = NamesFile.parse(JSON.stringify({
    db: { owners: [server.identity.publicKey], clients: [client.identity.publicKey] },
  }));
  await using holder = await startDiscoverPoint({ names, clusterKey: cluster.identity });
  const listener = listen({ dp: holder.address, name: "db", key: server.identity });
  await settlesWithin(listener.ready, "the registration");
  // Offers relay and claims the client's key in Connect K, proving a key of its own.
  const stranger = await generateIdentity();
  const link = await dialDiscoverPoint(holder.address, {
    role: Role.IndirectClient,
    name: "",
    features: [...ALL_FEATURES, Feature.Relay],
    identity: stranger.identity,
    authName: "db",
    pipelined: [{
      type: MessageType.Connect,
      name: "db",
      key: client.identity.publicKey,
      address: "10.0.0.1:1",
    }],
  });
  const answer = await settlesWithin(link.next(), "the answer");
  assert.equal(answer?.type, MessageType.Ack);
  assert.equal(answer.type === MessageType.Ack && answer.sessionId, -1);
  link.abort();
  listener.close();
});

Deno.test("pool: a DP asks for one more link while a client waits elsewhere, and the extra link closes when idle", async () => {
  const registry = new MemoryRegistry({ wantInterval: 20 });
  await using holder = await startDiscoverPoint({ registry });
  const listener = listen({
    dp: holder.address,
    name: "svc",
    pool: { min: 1, max: 3 },
    poolIdleTimeout: 1000,
  });
  const served = serveEcho(listener);
  await settlesWithin(listener.ready, "the registration");
  // Another member of the cluster, which cannot be dialled, waits for "svc".
  const elsewhere = await registry.join({ instance: "elsewhere" }, () => {});
  elsewhere.want("svc");
  await eventually(() => holder.dp.servers.get("svc") === 3, "the pool to grow to its max");
  elsewhere.unwant("svc");
  await eventually(() => holder.dp.servers.get("svc") === 1, "the extra links to close");
  await elsewhere.leave();
  {
    using conn = await connect({ dp: holder.address, name: "svc" });
    await assertEchoes(conn, "still served");
  }
  listener.close();
  await served;
});

Deno.test("pool: many sessions on every link open one more, up to the max", async () => {
  await using dp = await startDiscoverPoint();
  const listener = listen({ dp: dp.address, name: "busy", pool: { min: 1, max: 2 } });
  await settlesWithin(listener.ready, "the registration");
  const conns = [];
  const sessions = [];
  for (let i = 0; i < 33; i++) {
    const accepted = listener.accept();
    conns.push(await connect({ dp: dp.address, name: "busy" }));
    sessions.push(await accepted);
  }
  await eventually(() => dp.dp.servers.get("busy") === 2, "a second link");
  for (const conn of [...conns, ...sessions]) conn.close();
  listener.close();
});

Deno.test("pool: a number fixes it; bad bounds are refused with the rule", () => {
  assert.throws(
    () => listen({ dp: "127.0.0.1:1", name: "x", pool: { min: 3, max: 2 } }),
    /expected whole numbers 1 ≤ min ≤ max ≤ 64/,
  );
  assert.throws(() => listen({ dp: "127.0.0.1:1", name: "x", pool: 0 }), RangeError);
  assert.throws(() => listen({ dp: [], name: "x" }), /lists no discover point/);
});

Deno.test("multi-homed: a server at two DPs keeps serving at one when the other goes, and registers while one is down", async () => {
  await using a = await startDiscoverPoint();
  const b = await startDiscoverPoint();
  const listener = listen({ dp: [a.address, b.address], name: "svc", pool: 1 });
  const served = serveEcho(listener);
  await settlesWithin(listener.ready, "the registration");
  await eventually(() => a.dp.servers.has("svc") && b.dp.servers.has("svc"), "links at both");
  await b[Symbol.asyncDispose]();
  {
    using conn = await connect({ dp: [b.address, a.address], name: "svc" });
    await assertEchoes(conn, "through a, b being gone");
  }
  listener.close();
  await served;

  const down = unusedAddress();
  const late = listen({ dp: [down, a.address], name: "late", pool: 1 });
  const lateServed = serveEcho(late);
  await settlesWithin(late.ready, "a registration while one DP is down");
  late.close();
  await lateServed;
});

Deno.test("KvRegistry: members see each other's names; a dead member's entries lapse; wants reach the holder", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const registry = new KvRegistry(kv, { ttl: 1000, pollInterval: 10 });
    const wanted = Promise.withResolvers<string>();
    const a = await registry.join({ instance: "a", address: "127.0.0.1:1" }, wanted.resolve);
    const b = await registry.join({ instance: "b" }, () => {});
    const key = (await generateIdentity()).identity.publicKey;
    a.hold("svc", key);
    await eventually(async () => (await b.holders("svc")).length > 0, "a's entry");
    assert.deepEqual(await b.holders("svc"), [{ instance: "a", address: "127.0.0.1:1", key }]);
    assert.deepEqual(await a.holders("svc"), [], "a member is not its own holder");
    b.want("svc");
    assert.equal(await settlesWithin(wanted.promise, "the want to reach a"), "svc");
    a.release("svc");
    await a.leave();
    assert.deepEqual(await b.holders("svc"), []);
    // A member that died without a word: its entry says when it lapses, and is ignored after.
    await kv.set(["rtcp", "holds", "svc", "dead"], { address: "x:1", expires: Date.now() - 1 });
    assert.deepEqual(await b.holders("svc"), []);
    await b.leave();
  } finally {
    kv.close();
  }
});
