/**
 * The discover point's admin endpoint: `/metrics` counters move as sessions
 * open, carry bytes, close and are refused; `/status` has the documented
 * shape; a token keeps `metrics` and `status` closed to requests without it;
 * `dp.ts --admin` and `cli.ts status` from the command line.
 * @module
 */

import assert from "node:assert/strict";
import {
  AdminEndpoint,
  type AdminOptions,
  connect,
  type DiscoverPointOptions,
  type DiscoverPointStatus,
  generateIdentity,
  type IndirectListener,
  listen,
  MemoryRegistry,
  REFUSAL_REASONS,
  SessionRefusedError,
} from "../mod.ts";
import {
  type InProcessDiscoverPoint,
  randomBytes,
  settlesWithin,
  startDiscoverPoint,
} from "./_helpers.ts";
import { eventually } from "./_helpers.ts";
import { AuthPeer, ownedNames, rawKey } from "./_auth_peer.ts";
import { DeployProgram, rawHttpRequest } from "./_ws.ts";
import {
  CLI_PATH,
  DP_PATH,
  EchoServer,
  makeTempDir,
  readAllFrom,
  readExactlyFrom,
  runScript,
  spawnDp,
  spawnExpose,
  writeAllTo,
} from "./_programs.ts";

const TOKEN = "0123456789abcdef0123456789abcdef";

/** A discover point in this process with its admin endpoint on an HTTP port of its own. */
interface AdminFixture extends AsyncDisposable {
  readonly dp: InProcessDiscoverPoint;
  /** `http://127.0.0.1:PORT/`. */
  readonly url: string;
}

async function startAdmin(
  options: Omit<DiscoverPointOptions, "hostname" | "port"> = {},
  adminOptions: AdminOptions = {},
): Promise<AdminFixture> {
  const dp = await startDiscoverPoint(options);
  const admin = await AdminEndpoint.create(dp.dp, adminOptions);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, admin.fetch);
  return {
    dp,
    url: `http://127.0.0.1:${server.addr.port}/`,
    async [Symbol.asyncDispose]() {
      admin.close();
      await server.shutdown();
      await dp[Symbol.asyncDispose]();
    },
  };
}

/** GETs `path` under `url`; the body is always read (no leaked resources). */
async function get(
  url: string,
  path: string,
  token?: string,
): Promise<{ status: number; body: string; headers: Headers }> {
  const headers: Record<string, string> = token === undefined
    ? {}
    : { authorization: `Bearer ${token}` };
  const response = await fetch(new URL(path, url), { headers });
  return { status: response.status, body: await response.text(), headers: response.headers };
}

/** A Prometheus text exposition as series (`name{labels}`) to values; checks HELP and TYPE lines. */
function parseMetrics(text: string): Map<string, number> {
  const series = new Map<string, number>();
  const help = new Set<string>();
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) (\w+) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === "HELP") help.add(meta[2]!);
      else types.set(meta[2]!, meta[3]!);
      continue;
    }
    const sample = /^(\w+)(\{[^}]*\})? (\S+)$/.exec(line);
    assert.ok(sample, `not a sample line: ${line}`);
    const name = sample[1]!;
    assert.ok(help.has(name), `${name} has no # HELP line before its samples`);
    assert.ok(types.has(name), `${name} has no # TYPE line before its samples`);
    if (name.endsWith("_total")) assert.equal(types.get(name), "counter", name);
    const key = `${name}${sample[2] ?? ""}`;
    assert.ok(!series.has(key), `duplicate series ${key}`);
    series.set(key, Number(sample[3]));
  }
  return series;
}

async function scrape(fixture: AdminFixture, token?: string): Promise<Map<string, number>> {
  const { status, body, headers } = await get(fixture.url, "metrics", token);
  assert.equal(status, 200, body);
  assert.match(headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parseMetrics(body);
}

function value(metrics: Map<string, number>, series: string): number {
  const found = metrics.get(series);
  assert.notEqual(found, undefined, `no series ${series}`);
  return found!;
}

/** Serves "echo" at `address` through `listen()`: every session echoes until EOF. */
function echoListener(
  address: string,
  name: string,
  admit?: () => void,
): { listener: IndirectListener; done: Promise<void> } {
  const listener = listen({ dp: address, name, ...(admit ? { admit } : {}) });
  const sessions = new Set<Promise<void>>();
  const done = (async () => {
    try {
      for await (const conn of listener) {
        const session = conn.readable.pipeTo(conn.writable).catch(() => {})
          .finally(() => {
            conn.close();
            sessions.delete(session);
          });
        sessions.add(session);
      }
    } catch {
      // Closed.
    }
    await Promise.all(sessions);
  })();
  return { listener, done };
}

/** Sends `bytes` through a session to `name`, half-closes, and reads the echo to its end. */
async function echoThrough(address: string, name: string, bytes: Uint8Array): Promise<Uint8Array> {
  using conn = await connect({ dp: address, name });
  const reading = new Response(conn.readable).bytes();
  const writer = conn.writable.getWriter();
  await writer.write(bytes);
  await writer.close();
  return await reading;
}

async function assertRefused(promise: Promise<unknown>): Promise<void> {
  await assert.rejects(promise, (error: Error) => {
    assert.ok(error instanceof SessionRefusedError, error);
    return true;
  });
}

Deno.test("admin: /metrics counts sessions, bytes by name, refusals by reason, failed handshakes and proofs", async () => {
  const [owner, friend] = [await generateIdentity(), await generateIdentity()];
  const names = ownedNames({
    secret: { owners: [owner.identity], clients: [friend.identity] },
  });
  await using fixture = await startAdmin({ names, maxSessionsPerServer: 1 });
  const address = fixture.dp.address;
  const echo = echoListener(address, "echo");
  const refusing = echoListener(address, "refusing", () => {
    throw new Error("not today");
  });
  try {
    await settlesWithin(
      Promise.all([echo.listener.ready, refusing.listener.ready]),
      "registration",
    );
    let metrics = await scrape(fixture);
    assert.equal(value(metrics, "rtcp_dp_names"), 2);
    assert.equal(value(metrics, 'rtcp_dp_links{role="server",transport="tcp"}'), 2);
    assert.equal(value(metrics, "rtcp_dp_sessions"), 0);
    assert.equal(value(metrics, "rtcp_dp_sessions_total"), 0);
    for (const reason of REFUSAL_REASONS) {
      assert.equal(value(metrics, `rtcp_dp_refusals_total{reason="${reason}"}`), 0, reason);
    }

    // Two sessions, one after the other: every byte is counted once each way.
    const first = randomBytes(100_000);
    assert.deepEqual(await echoThrough(address, "echo", first), first);
    const second = randomBytes(12_345);
    assert.deepEqual(await echoThrough(address, "echo", second), second);
    await eventually(async () => {
      return value(await scrape(fixture), "rtcp_dp_sessions") === 0;
    }, "the sessions to close at the DP");
    metrics = await scrape(fixture);
    assert.equal(value(metrics, "rtcp_dp_sessions_total"), 2);
    assert.equal(value(metrics, 'rtcp_dp_name_sessions_total{name="echo"}'), 2);
    const sent = first.length + second.length;
    assert.equal(
      value(metrics, 'rtcp_dp_name_bytes_total{name="echo",direction="to_server"}'),
      sent,
    );
    assert.equal(
      value(metrics, 'rtcp_dp_name_bytes_total{name="echo",direction="to_client"}'),
      sent,
    );
    assert.equal(
      value(metrics, 'rtcp_dp_name_bytes_total{name="_other",direction="to_server"}'),
      0,
    );

    // A session held open shows as open, with its client link; a second one hits the limit.
    {
      using held = await connect({ dp: address, name: "echo" });
      await held.write(new Uint8Array([1, 2, 3]));
      await held.read(new Uint8Array(3));
      metrics = await scrape(fixture);
      assert.equal(value(metrics, "rtcp_dp_sessions"), 1);
      assert.equal(value(metrics, "rtcp_dp_sessions_total"), 3);
      assert.equal(value(metrics, 'rtcp_dp_links{role="client",transport="tcp"}'), 1);
      await assertRefused(connect({ dp: address, name: "echo" }));
    }
    await eventually(async () => {
      return value(await scrape(fixture), "rtcp_dp_sessions") === 0;
    }, "the held session to close at the DP");

    // Refusals, each under its reason.
    await assertRefused(connect({ dp: address, name: "nobody" }));
    await assertRefused(connect({ dp: address, name: "refusing" }));
    await assertRefused(connect({ dp: address, name: "secret" }));

    // A link that sends garbage, and a server whose proof does not hold.
    const raw = await Deno.connect({ hostname: "127.0.0.1", port: fixture.dp.port });
    await writeAllTo(raw, new TextEncoder().encode("this is not RTCP\n"));
    await readAllFrom(raw, true);
    raw.close();
    {
      using peer = await AuthPeer.open(address, "IS", "secret");
      const garbage = btoa(String.fromCharCode(...randomBytes(64)));
      await peer.sendAuth({ M: "ed25519", K: rawKey(owner.identity), S: garbage });
      await peer.refusedRegistration();
    }

    await eventually(async () => {
      const m = await scrape(fixture);
      return value(m, "rtcp_dp_handshakes_failed_total") >= 2 &&
        value(m, 'rtcp_dp_links{role="handshake",transport="tcp"}') === 0;
    }, "the failed handshakes to be counted");
    metrics = await scrape(fixture);
    assert.equal(value(metrics, 'rtcp_dp_refusals_total{reason="limit"}'), 1);
    assert.equal(value(metrics, 'rtcp_dp_refusals_total{reason="no_server"}'), 1);
    assert.equal(value(metrics, 'rtcp_dp_refusals_total{reason="server_refused"}'), 1);
    assert.equal(value(metrics, 'rtcp_dp_refusals_total{reason="policy"}'), 1);
    assert.equal(value(metrics, 'rtcp_dp_refusals_total{reason="ack_timeout"}'), 0);
    assert.equal(value(metrics, "rtcp_dp_handshakes_failed_total"), 2);
    assert.equal(value(metrics, "rtcp_dp_proofs_failed_total"), 1);
    assert.equal(value(metrics, "rtcp_dp_sessions"), 0);
    assert.equal(value(metrics, "rtcp_dp_sessions_total"), 3);
    assert.equal(value(metrics, 'rtcp_dp_name_sessions_total{name="refusing"}'), 0);
    assert.equal(value(metrics, "rtcp_dp_buffered_bytes"), 0);
    assert.equal(value(metrics, "rtcp_dp_buffered_bytes_limit"), 1024 ** 3);
    assert.ok(value(metrics, 'rtcp_dp_memory_bytes{kind="rss"}') > 0);
  } finally {
    echo.listener.close();
    refusing.listener.close();
    await Promise.all([echo.done, refusing.done]);
  }
});

Deno.test("admin: names past maxMetricNames count under _other, and a free slot is reused", async () => {
  await using fixture = await startAdmin({ maxMetricNames: 1 });
  const address = fixture.dp.address;
  const a = echoListener(address, "a");
  const b = echoListener(address, "b");
  try {
    await settlesWithin(Promise.all([a.listener.ready, b.listener.ready]), "registration");
    await echoThrough(address, "a", new Uint8Array(10));
    await echoThrough(address, "b", new Uint8Array(20));
    await eventually(async () => {
      return value(await scrape(fixture), "rtcp_dp_sessions") === 0;
    }, "the sessions to close");
    let metrics = await scrape(fixture);
    assert.equal(value(metrics, 'rtcp_dp_name_bytes_total{name="a",direction="to_server"}'), 10);
    assert.equal(
      value(metrics, 'rtcp_dp_name_bytes_total{name="_other",direction="to_server"}'),
      20,
    );
    assert.equal(metrics.has('rtcp_dp_name_sessions_total{name="b"}'), false);

    // "a" leaves: its counts go to _other, and a new name takes its place.
    a.listener.close();
    await a.done;
    await eventually(() => !fixture.dp.dp.servers.has("a"), '"a" to unregister');
    const c = echoListener(address, "c");
    try {
      await settlesWithin(c.listener.ready, "registration of c");
      await echoThrough(address, "c", new Uint8Array(5));
      await eventually(async () => {
        return value(await scrape(fixture), "rtcp_dp_sessions") === 0;
      }, "the session to close");
      metrics = await scrape(fixture);
      assert.equal(metrics.has('rtcp_dp_name_sessions_total{name="a"}'), false);
      assert.equal(value(metrics, 'rtcp_dp_name_bytes_total{name="c",direction="to_server"}'), 5);
      assert.equal(
        value(metrics, 'rtcp_dp_name_bytes_total{name="_other",direction="to_server"}'),
        30,
      );
      assert.equal(value(metrics, "rtcp_dp_sessions_total"), 3);
    } finally {
      c.listener.close();
      await c.done;
    }
  } finally {
    a.listener.close();
    b.listener.close();
    await Promise.all([a.done, b.done]);
  }
});

Deno.test("admin: a session carried between two DPs counts as forwarded at one and relayed at the other", async () => {
  const registry = new MemoryRegistry();
  await using holder = await startDiscoverPoint({ registry, advertise: "127.0.0.1:0" });
  await using entry = await startDiscoverPoint({ registry, advertise: "127.0.0.1:0" });
  const echo = echoListener(holder.address, "svc");
  try {
    await settlesWithin(echo.listener.ready, "registration at the holder");
    {
      using conn = await connect({ dp: entry.address, name: "svc" });
      await conn.write(new Uint8Array(10));
      assert.equal((await readExactlyFrom(conn, 10)).length, 10);

      const atEntry = entry.dp.status();
      assert.equal(atEntry.sessions, 1);
      assert.equal(atEntry.forwarded, 1);
      assert.equal(atEntry.forwardedTotal, 1);
      assert.equal(atEntry.links.peer_dp.tcp, 1);
      assert.equal(atEntry.links.client.tcp, 1);
      assert.equal(atEntry.names, 0);
      const [carried] = atEntry.servers;
      assert.equal(carried!.name, "svc");
      assert.equal(carried!.links[0]!.role, "peer_dp");
      assert.equal(carried!.links[0]!.peer, holder.address);
      assert.equal(carried!.sessions[0]!.via, holder.address);
      assert.equal(carried!.sessions[0]!.bytesToServer, 10);

      const atHolder = holder.dp.metrics();
      assert.equal(atHolder.sessions, 1);
      assert.equal(atHolder.forwarded, 0);
      assert.equal(atHolder.relayedTotal, 1);
      assert.equal(atHolder.links.peer_dp.tcp, 1);
      assert.equal(atHolder.links.server.tcp, 1);
    }
    await eventually(
      () => entry.dp.metrics().sessions === 0 && holder.dp.metrics().sessions === 0,
      "the carried session to close at both DPs",
    );
    await eventually(
      () => entry.dp.metrics().links.peer_dp.tcp === 0,
      "the link between the DPs to close",
    );
    const after = entry.dp.metrics();
    assert.equal(after.forwarded, 0);
    assert.equal(after.sessionsTotal, 1);
    assert.deepEqual(after.traffic.find((counts) => counts.name === "svc"), {
      name: "svc",
      sessionsTotal: 1,
      bytesToServer: 10,
      bytesToClient: 10,
    });
  } finally {
    echo.listener.close();
    await echo.done;
  }
});

Deno.test("admin: a token keeps metrics and status closed; the page itself loads and asks for it", async () => {
  await using fixture = await startAdmin({}, { token: TOKEN });
  for (const path of ["metrics", "status"]) {
    const none = await get(fixture.url, path);
    assert.equal(none.status, 401, path);
    assert.match(none.body, /needs the header Authorization: Bearer TOKEN/);
    assert.match(none.headers.get("www-authenticate") ?? "", /^Bearer/);
    const wrong = await get(fixture.url, path, `${TOKEN.slice(0, -1)}0`);
    assert.equal(wrong.status, 401, path);
    assert.match(wrong.body, /wrong token/);
    const short = await get(fixture.url, path, "x");
    assert.equal(short.status, 401, path);
    const huge = await get(fixture.url, path, "y".repeat(8000));
    assert.equal(huge.status, 401, path);
    const right = await get(fixture.url, path, TOKEN);
    assert.equal(right.status, 200, path);
  }
  const page = await get(fixture.url, "");
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
  assert.match(page.body, /data-token-required="true"/);
  assert.match(page.headers.get("content-security-policy") ?? "", /script-src 'nonce-/);
  assert.doesNotMatch(page.body, /<script[^>]+src=|<link[^>]+stylesheet/, "the page loads nothing");
  assert.equal((await get(fixture.url, "nothing-here")).status, 404);
  const post = await fetch(new URL("status", fixture.url), { method: "POST", body: "x" });
  await post.body?.cancel();
  assert.equal(post.status, 405);
});

Deno.test("admin: without a token, data is served only to requests addressed to an IP address or localhost", async () => {
  await using fixture = await startAdmin();
  const port = Number(new URL(fixture.url).port);
  const request = (host: string, path: string) =>
    rawHttpRequest(port, `GET /${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  for (const path of ["metrics", "status"]) {
    assert.match(await request("rebound.example:80", path), /^HTTP\/1\.1 403 /);
    assert.match(await request(`127.0.0.1:${port}`, path), /^HTTP\/1\.1 200 /);
    assert.match(await request(`localhost:${port}`, path), /^HTTP\/1\.1 200 /);
    assert.match(await request(`[::1]:${port}`, path), /^HTTP\/1\.1 200 /);
  }
  // The page holds no data: it loads whatever the host name.
  assert.match(await request("rebound.example:80", ""), /^HTTP\/1\.1 200 /);
});

Deno.test("admin: an endpoint mounted at /admin/ serves there and redirects /admin", async () => {
  const dp = await startDiscoverPoint();
  const admin = await AdminEndpoint.create(dp.dp, { token: TOKEN, path: "/admin/" });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, admin.fetch);
  try {
    const base = `http://127.0.0.1:${server.addr.port}/`;
    const redirect = await fetch(new URL("admin", base), { redirect: "manual" });
    await redirect.body?.cancel();
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.get("location"), "/admin/");
    assert.equal((await get(base, "admin/")).status, 200);
    assert.equal((await get(base, "admin/status", TOKEN)).status, 200);
    assert.equal((await get(base, "admin/status")).status, 401);
    assert.equal((await get(base, "status", TOKEN)).status, 404);
  } finally {
    admin.close();
    await server.shutdown();
    await dp[Symbol.asyncDispose]();
  }
});

Deno.test("admin: /status lists names with their links and sessions, and ?history adds samples", async () => {
  await using fixture = await startAdmin({ name: "dp-under-test" });
  const address = fixture.dp.address;
  const echo = echoListener(address, "echo");
  try {
    await settlesWithin(echo.listener.ready, "registration");
    using held = await connect({ dp: address, name: "echo" });
    await held.write(new Uint8Array(7));
    await held.read(new Uint8Array(7));
    const { status, body, headers } = await get(fixture.url, "status?history=1");
    assert.equal(status, 200, body);
    assert.match(headers.get("content-type") ?? "", /^application\/json/);
    const report = JSON.parse(body) as DiscoverPointStatus & { history: unknown[] };
    assert.equal(report.dpName, "dp-under-test");
    assert.equal(typeof report.time, "number");
    assert.equal(typeof report.startedAt, "number");
    assert.equal(report.names, 1);
    assert.equal(report.sessions, 1);
    assert.equal(report.links.server.tcp, 1);
    assert.equal(report.links.client.tcp, 1);
    assert.equal(report.truncated, false);
    assert.deepEqual(Object.keys(report.refusals), [...REFUSAL_REASONS]);
    assert.equal(report.servers.length, 1);
    const [server] = report.servers;
    assert.equal(server!.name, "echo");
    assert.equal(server!.linkCount, 1);
    assert.equal(server!.sessionCount, 1);
    assert.deepEqual(server!.counts, {
      name: "echo",
      sessionsTotal: 1,
      bytesToServer: 7,
      bytesToClient: 7,
    });
    const [link] = server!.links;
    assert.equal(link!.role, "server");
    assert.equal(link!.transport, "tcp");
    assert.match(link!.peer, /^127\.0\.0\.1:\d+$/);
    assert.ok(link!.extensions.includes("flow-control"), String(link!.extensions));
    assert.ok(link!.since <= report.time);
    assert.equal(link!.sessions, 1);
    assert.equal(link!.key, undefined);
    const [session] = server!.sessions;
    assert.equal(typeof session!.id, "number");
    assert.match(session!.address, /^127\.0\.0\.1:\d+$/);
    assert.equal(session!.bytesToServer, 7);
    assert.equal(session!.bytesToClient, 7);
    assert.ok(session!.since <= report.time);
    assert.ok(report.history.length >= 1);
    assert.deepEqual(Object.keys(report.history[0]!), [
      "time",
      "bytesToServer",
      "bytesToClient",
      "sessions",
    ]);
    const plain = JSON.parse((await get(fixture.url, "status")).body);
    assert.equal("history" in plain, false);
  } finally {
    echo.listener.close();
    await echo.done;
  }
});

Deno.test("dp.ts --admin-token-file: a missing file, a short token, or no --admin exit 2 saying why", async () => {
  await using dir = await makeTempDir();
  const missing = dir.file("absent-token");
  const permissions = ["--allow-net", `--allow-read=${dir.path}`];
  const base = ["--hostname", "127.0.0.1", "--port", "0"];
  let output = await runScript(
    DP_PATH,
    [...base, "--admin", "127.0.0.1:0", "--admin-token-file", missing],
    permissions,
  );
  assert.equal(output.code, 2, output.stderr);
  assert.match(output.stderr, new RegExp(`Cannot read --admin-token-file ${missing}: `));

  const short = await dir.write("short-token", "secret\n");
  output = await runScript(
    DP_PATH,
    [...base, "--admin", "127.0.0.1:0", "--admin-token-file", short],
    permissions,
  );
  assert.equal(output.code, 2, output.stderr);
  assert.match(output.stderr, /admin token of 6 characters: expected 16 to 1024/);

  output = await runScript(DP_PATH, [...base, "--admin-token-file", short], permissions);
  assert.equal(output.code, 2, output.stderr);
  assert.match(output.stderr, /Cannot use --admin-token-file without --admin HOST:PORT/);

  output = await runScript(DP_PATH, [...base, "--admin", "nowhere"], permissions);
  assert.equal(output.code, 2, output.stderr);
  assert.match(output.stderr, /Cannot use --admin "nowhere": expected HOST:PORT/);
});

Deno.test("dp.ts --admin serves with a token; cli.ts status prints the name and its session", async () => {
  await using dir = await makeTempDir();
  const tokenFile = await dir.write("token", `${TOKEN}\n`);
  await using dp = await spawnDp(
    ["--admin", "127.0.0.1:0", "--admin-token-file", tokenFile],
    { permissions: [`--allow-read=${tokenFile}`] },
  );
  const [, admin] = await dp.printed(/^Admin on (http:\/\/127\.0\.0\.1:\d+\/)$/);
  await using echo = new EchoServer();
  await using _expose = await spawnExpose(dp.address, "echo", echo.address);

  assert.equal((await get(admin!, "metrics")).status, 401);
  assert.equal((await get(admin!, "metrics", TOKEN)).status, 200);

  using held = await connect({ dp: dp.address, name: "echo", clientName: "held-client" });
  await held.write(new Uint8Array(5));
  await held.read(new Uint8Array(5));

  const cliPermissions = ["--allow-net", `--allow-read=${tokenFile}`];
  const output = await runScript(
    CLI_PATH,
    ["status", "--admin", admin!, "--token-file", tokenFile],
    cliPermissions,
  );
  assert.equal(output.code, 0, output.stderr);
  assert.match(output.stdout, /^Discover point rtcp-dp, up /);
  assert.match(output.stdout, /^NAME +LINKS +SESSIONS +OPENED +TO SERVER +TO CLIENT$/m);
  assert.match(output.stdout, /^echo +1 +1 +1 +5 B +5 B$/m);
  assert.match(output.stdout, /^echo +server +127\.0\.0\.1:\d+ +tcp +/m);
  assert.match(output.stdout, /^echo +\d+ +held-client +127\.0\.0\.1:\d+ +\d+ s +5 B +5 B +-$/m);

  const refused = await runScript(CLI_PATH, ["status", "--admin", admin!], cliPermissions);
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /HTTP 401 \(pass --token-file FILE\)/);

  const bad = await runScript(CLI_PATH, ["status"], cliPermissions);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--admin is required/);
});

Deno.test("deploy.ts: RTCP_ADMIN_TOKEN mounts the admin endpoint at /admin/, token required; without it there is none", async () => {
  {
    await using deploy = new DeployProgram({ RTCP_ADMIN_TOKEN: TOKEN });
    const base = `http://127.0.0.1:${await deploy.port()}/`;
    assert.equal((await get(base, "admin/status")).status, 401);
    assert.equal((await get(base, "admin/metrics", "wrong-token-wrong-token")).status, 401);
    const status = await get(base, "admin/status", TOKEN);
    assert.equal(status.status, 200, status.body);
    assert.equal(JSON.parse(status.body).names, 0);
    assert.equal((await get(base, "admin/metrics", TOKEN)).status, 200);
    const page = await get(base, "admin/");
    assert.equal(page.status, 200);
    assert.match(page.body, /data-token-required="true"/);
    assert.equal((await get(base, "rtcp")).status, 426, "links are still served at /rtcp");
  }
  {
    await using deploy = new DeployProgram({});
    const base = `http://127.0.0.1:${await deploy.port()}/`;
    assert.equal((await get(base, "admin/")).status, 404);
    assert.equal((await get(base, "admin/status", TOKEN)).status, 404);
  }
  {
    await using deploy = new DeployProgram({ RTCP_ADMIN_TOKEN: "short" });
    const status = await deploy.exited();
    assert.equal(status.code, 1);
    assert.match(deploy.stderr.text, /RTCP_ADMIN_TOKEN: Cannot use an admin token of 5 characters/);
  }
});
