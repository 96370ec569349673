/**
 * Tests of `cli.ts`: `pipeBoth` in-process, and `rtcp expose` / `rtcp connect`
 * as subprocesses next to a `dp.ts` subprocess.
 * @module
 */

import assert from "node:assert/strict";
import { pipeBoth } from "../cli.ts";
import { connect, DiscoverPoint, listen, SessionRefusedError } from "../mod.ts";
import {
  CLI_PATH,
  EchoServer,
  type Output,
  Program,
  readAllFrom as readAll,
  readExactlyFrom as readExactly,
  runScript,
  spawnConnect,
  spawnDp,
  spawnExpose,
  within,
  writeAllTo as writeAll,
} from "./_programs.ts";
import { randomBytes, unusedAddress } from "./_helpers.ts";

// ---- helpers ------------------------------------------------------------------

/** Sends `bytes` then half-closes, while reading everything that comes back. */
async function exchange(conn: Deno.Conn, bytes: Uint8Array): Promise<Uint8Array> {
  const [, received] = await Promise.all([
    writeAll(conn, bytes).then(() => conn.closeWrite()),
    readAll(conn),
  ]);
  return received;
}

async function connectTcp(port: number): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port });
}

/** Two connected TCP sockets on 127.0.0.1. */
async function tcpPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [client, server] = await Promise.all([connectTcp(listener.addr.port), listener.accept()]);
  return [client, server];
}

// ---- pipeBoth -------------------------------------------------------------------

Deno.test("pipeBoth() forwards both ways, passes each half-close through, and counts bytes", async (t) => {
  const [client, a] = await tcpPair();
  const [b, server] = await tcpPair();
  const piping = pipeBoth(a, b, { bufferSize: 1000 });
  const request = randomBytes(300_000);
  const response = randomBytes(200_000);

  await t.step("client to server, then the client's half-close reaches the server", async () => {
    await writeAll(client, request);
    await client.closeWrite();
    assert.deepEqual(await readAll(server), request);
  });
  await t.step("server to client still flows after that, then its EOF too", async () => {
    await writeAll(server, response);
    await server.closeWrite();
    assert.deepEqual(await readAll(client), response);
  });
  await t.step("it resolves with the byte counts once both directions ended", async () => {
    assert.deepEqual(await piping, { aToB: request.length, bToA: response.length });
  });
  client.close();
  server.close();
});

Deno.test("pipeBoth() closes both connections when its signal aborts", async () => {
  const [client, a] = await tcpPair();
  const [b, server] = await tcpPair();
  const controller = new AbortController();
  const piping = pipeBoth(a, b, { signal: controller.signal });
  await writeAll(client, new Uint8Array([1, 2, 3]));
  assert.deepEqual(await readExactly(server, 3), new Uint8Array([1, 2, 3]));
  const reason = new Error("Stop");
  controller.abort(reason);
  const result = await piping;
  assert.equal(result.error, reason);
  assert.equal(result.aToB, 3);
  assert.deepEqual(await readAll(client, true), new Uint8Array());
  assert.deepEqual(await readAll(server, true), new Uint8Array());
  client.close();
  server.close();
});

Deno.test("pipeBoth() ends at once when a session's peer closes it, forwarding what it sent", async () => {
  await using dp = new DiscoverPoint({ hostname: "127.0.0.1", port: 0 });
  await dp.start();
  const address = `127.0.0.1:${dp.addr.port}`;
  using listener = listen({ dp: address, name: "pipe" });
  const accepted = listener.accept();
  const client = await connect({ dp: address, name: "pipe" });
  const session = await accepted;
  const [local, target] = await tcpPair();
  const piping = pipeBoth(session, target);
  await client.write(new Uint8Array([7, 8, 9]));
  client.close(); // A full close, not a half-close: the session is over.
  // The local end never sends anything, yet the piping ends.
  const result = await within(piping, "pipeBoth() to end");
  assert.equal(result.aToB, 3);
  assert.deepEqual(await readAll(local, true), new Uint8Array([7, 8, 9]));
  local.close();
  await client.closed;
  await session.closed;
});

// ---- command line: flags --------------------------------------------------------

function run(args: string[]): Promise<Output> {
  return runScript(CLI_PATH, args);
}

Deno.test("cli.ts --help prints the usage of the command and of each subcommand, exit 0", async () => {
  const cases: [string[], RegExp][] = [
    [["--help"], /^Usage: rtcp <command>/],
    [["-h"], /^Usage: rtcp <command>/],
    [["expose", "--help"], /^Usage: rtcp expose --dp ADDRESS --name NAME --to HOST:PORT/],
    [["connect", "-h"], /^Usage: rtcp connect --dp ADDRESS --name NAME --listen HOST:PORT/],
    [["keygen", "--help"], /^Usage: rtcp keygen --out FILE/],
    [["pubkey", "-h"], /^Usage: rtcp pubkey --key FILE/],
  ];
  const results = await Promise.all(cases.map(([args]) => run(args)));
  for (const [i, [args, usage]] of cases.entries()) {
    const { code, stdout, stderr } = results[i]!;
    assert.equal(code, 0, `exit code of ${args.join(" ")}`);
    assert.match(stdout, usage);
    assert.equal(stderr, "");
  }
});

Deno.test("cli.ts with bad flags prints a reason and the usage on stderr, exit 2", async () => {
  const dp = "127.0.0.1:7000";
  const expose = ["expose", "--dp", dp, "--name", "db", "--to", "127.0.0.1:5432"];
  const connectArgs = ["connect", "--dp", dp, "--name", "db", "--listen", "127.0.0.1:0"];
  const cases: [string[], RegExp][] = [
    [[], /expected a command/],
    [["serve"], /Cannot run "serve"/],
    [[...expose, "--bogus"], /Unknown option '--bogus'/],
    [["expose", "--dp", dp, "--to", "127.0.0.1:5432"], /--name is required/],
    [["expose", "--dp", dp, "--name", "db"], /--to is required/],
    [["expose", "--dp", dp, "--name", "db", "--to", "nonsense"], /--to "nonsense"/],
    [
      ["expose", "--dp", dp, "--name", "db", "--to", "127.0.0.1:99999"],
      /--to "127\.0\.0\.1:99999"/,
    ],
    [["expose", "--dp", "nowhere", "--name", "db", "--to", "127.0.0.1:5432"], /--dp "nowhere"/],
    [[...expose, "--pool", "0"], /--pool "0"/],
    [[...expose, "--listen", "127.0.0.1:0"], /unknown option --listen/],
    [[...expose, "--log-level", "loud"], /log level "loud"/],
    [[...expose, "extra"], /positional/i],
    [[...connectArgs, "--bogus"], /Unknown option '--bogus'/],
    [["connect", "--dp", dp, "--listen", "127.0.0.1:0"], /--name is required/],
    [["connect", "--dp", dp, "--name", "db"], /--listen is required/],
    [["connect", "--dp", dp, "--name", "db", "--listen", "here"], /--listen "here"/],
    [[...connectArgs, "--to", "127.0.0.1:5432"], /unknown option --to/],
    [[...connectArgs, "--pool", "2"], /unknown option --pool/],
    [["connect", "--dp", dp, "--name"], /--name/],
  ];
  const results = await Promise.all(cases.map(([args]) => run(args)));
  for (const [i, [args, reason]] of cases.entries()) {
    const { code, stdout, stderr } = results[i]!;
    const what = `cli.ts ${args.join(" ")}`;
    assert.equal(code, 2, `exit code of ${what}; stderr: ${stderr}`);
    assert.match(stderr, reason, what);
    assert.match(stderr, /\n\nUsage: rtcp /, what);
    assert.equal(stdout, "", what);
  }
});

// ---- command line: forwarding -----------------------------------------------------

Deno.test("cli.ts expose + connect carry binary data both ways, with half-close, and exit 0 on SIGTERM", async () => {
  await using echo = new EchoServer();
  await using dp = await spawnDp();
  await using expose = await spawnExpose(dp.address, "echo", echo.address);
  await using forwarder = await spawnConnect(dp.address, "echo");

  const sizes = [1, 1024 * 1024, 100_000];
  const payloads = sizes.map(randomBytes);
  // Several at once: each connection is its own session.
  await Promise.all(payloads.map(async (payload) => {
    using conn = await connectTcp(forwarder.port);
    // The echo server answers the tail only after our half-close reached it.
    assert.deepEqual(await exchange(conn, payload), payload);
  }));

  for (const size of sizes) {
    const line = new RegExp(
      `^.*Session \\d+ closed after \\d+ ms: ${size} bytes from client to server, ${size} bytes back`,
    );
    await expose.logged(line);
    await forwarder.logged(line);
  }
  // One line per session, at its end, names the client (the line at its start is debug).
  await expose.logged(/Session \d+ closed after .* back, client "127\.0\.0\.1:\d+"/);
  await forwarder.logged(/Session \d+ closed after .* back, client "127\.0\.0\.1:\d+"/);
  assert.equal((await forwarder.stop()).code, 0);
  assert.equal((await expose.stop()).code, 0);
  assert.equal((await dp.stop()).code, 0);
});

Deno.test("cli.ts expose serves a DP public port: plain TCP clients reach the target", async () => {
  await using echo = new EchoServer();
  await using dp = await spawnDp(["--expose", "echo=0"]);
  const [, publicPort] = await dp.printed(/^Public port for "echo" on 127\.0\.0\.1:(\d+)$/);
  await using expose = await spawnExpose(dp.address, "echo", echo.address);

  const payload = randomBytes(512 * 1024);
  using conn = await connectTcp(Number(publicPort));
  assert.deepEqual(await exchange(conn, payload), payload);
  await expose.logged(/Session \d+ closed after \d+ ms: 524288 bytes from client to server/);
  assert.equal((await expose.stop()).code, 0);
});

Deno.test("cli.ts expose refuses a session when --to is down; the client learns that, not where", async (t) => {
  const down = unusedAddress();
  await using dp = await spawnDp();
  await using expose = await spawnExpose(dp.address, "down", down);
  await using forwarder = await spawnConnect(dp.address, "down");
  const reason = /^The service behind "down" is unavailable$/;

  await t.step("a connection through cli.ts connect is closed at once", async () => {
    using conn = await connectTcp(forwarder.port);
    assert.deepEqual(await within(readAll(conn, true), "the connection to end"), new Uint8Array());
    // The detail, with the internal address, stays in expose's own log.
    await expose.logged(
      new RegExp(`Refused session \\d+ from .*cannot reach "${down}": .*Connection refused`),
    );
    await forwarder.logged(/Cannot forward .*The service behind \\?"down\\?" is unavailable/);
    assert.doesNotMatch(forwarder.stderr.text, new RegExp(down.replaceAll(".", "\\.")));
  });
  await t.step("connect() from the library gets SessionRefusedError with the reason", async () => {
    const error = await connect({ dp: dp.address, name: "down" }).then(
      () => assert.fail("expected a refusal"),
      (error: unknown) => error,
    );
    assert.ok(error instanceof SessionRefusedError, String(error));
    assert.match(error.reason, reason);
  });
});

Deno.test("cli.ts expose --early-ack carries sessions, and cuts one with the reason when --to is down", async (t) => {
  await using echo = new EchoServer();
  await using dp = await spawnDp();
  await using up = await spawnExpose(dp.address, "up", echo.address, ["--early-ack"]);
  const down = unusedAddress();
  await using cut = await spawnExpose(dp.address, "down", down, ["--early-ack"]);

  await t.step("sessions to a service that is up carry their bytes both ways", async () => {
    const payloads = [1, 300_000].map(randomBytes);
    await Promise.all(payloads.map(async (payload) => {
      await using conn = await connect({ dp: dp.address, name: "up" });
      assert.deepEqual(await exchange(conn, payload), payload);
    }));
    await up.logged(/Session \d+ closed after \d+ ms: 300000 bytes from client to server/);
  });
  await t.step(
    "a session to a service that is down opens, then reading it fails with the reason",
    async () => {
      await using conn = await connect({ dp: dp.address, name: "down" });
      const error = await within(readAll(conn), "the read to fail").then(
        () => assert.fail("expected the session to be cut"),
        (error: unknown) => error,
      );
      assert.ok(error instanceof Deno.errors.ConnectionReset, String(error));
      assert.match(error.message, /cut short: The service behind "down" is unavailable$/);
      await cut.logged(new RegExp(`Cut session \\d+ from .*cannot reach "${down}"`));
    },
  );
});

Deno.test("cli.ts expose closes its sessions on SIGTERM and the client sees the end", async () => {
  await using echo = new EchoServer();
  await using dp = await spawnDp();
  await using expose = await spawnExpose(dp.address, "echo", echo.address);
  await using forwarder = await spawnConnect(dp.address, "echo");

  using conn = await connectTcp(forwarder.port);
  await writeAll(conn, new Uint8Array([1, 2, 3]));
  assert.deepEqual(await readExactly(conn, 3), new Uint8Array([1, 2, 3]));
  assert.equal((await expose.stop()).code, 0);
  assert.match(expose.stderr.text, /Session \d+ closed on shutdown after \d+ ms: 3 bytes/);
  // The client never closed, yet its connection ends: the session is over.
  assert.deepEqual(await within(readAll(conn, true), "the connection to end"), new Uint8Array());
  await forwarder.logged(
    /Session \d+ closed after \d+ ms: 3 bytes from client to server, 3 bytes back/,
  );
});

Deno.test("cli.ts expose --exit-on-failure exits 1 when the discover point cannot be reached", async () => {
  const { code, stdout, stderr } = await run([
    "expose",
    "--dp",
    unusedAddress(),
    "--name",
    "x",
    "--to",
    "127.0.0.1:5432",
    "--exit-on-failure",
  ]);
  assert.equal(code, 1);
  assert.equal(stdout, "");
  assert.match(stderr, /Cannot register "x" at .*Connection refused/);
});

Deno.test("cli.ts expose started before its discover point retries, says so, and serves once it is up", async () => {
  await using echo = new EchoServer();
  const address = unusedAddress();
  const port = Number(address.split(":")[1]);
  const expose = new Program(
    CLI_PATH,
    ["expose", "--dp", address, "--name", "early", "--to", echo.address],
    ["--allow-net"],
  );
  try {
    await expose.logged(/Cannot register "early" yet: .*retrying in \d+ ms/);
    await using dp = await spawnDp([], { port });
    await expose.printed(/^Exposing "early" at /);
    const session = await connect({ dp: dp.address, name: "early" });
    const payload = randomBytes(10_000);
    await writeAll(session, payload);
    assert.deepEqual(await readExactly(session, payload.length), payload);
    session.close();
  } finally {
    await expose.stop();
  }
});

Deno.test("cli.ts expose registers again after the discover point restarts", async () => {
  await using echo = new EchoServer();
  await using first = await spawnDp();
  const port = Number(first.address.split(":")[1]);
  await using expose = await spawnExpose(first.address, "echo", echo.address);
  assert.equal((await first.stop()).code, 0);
  await expose.logged(/Lost a link of "echo"/);
  await using second = await spawnDp([], { port });
  await expose.logged(/Registered "echo"/, 2);
  const session = await connect({ dp: second.address, name: "echo" });
  const payload = randomBytes(10_000);
  assert.deepEqual(await exchange(session, payload), payload);
  session.close();
  await session.closed;
});

Deno.test("cli.ts connect closes its sessions on SIGTERM and the exposed side ends them too", async () => {
  await using echo = new EchoServer();
  await using dp = await spawnDp();
  await using expose = await spawnExpose(dp.address, "echo", echo.address);
  await using forwarder = await spawnConnect(dp.address, "echo");

  using conn = await connectTcp(forwarder.port);
  await writeAll(conn, new Uint8Array([4, 5]));
  assert.deepEqual(await readExactly(conn, 2), new Uint8Array([4, 5]));
  assert.equal((await forwarder.stop()).code, 0);
  assert.match(forwarder.stderr.text, /Session \d+ closed on shutdown after \d+ ms: 2 bytes/);
  assert.deepEqual(await within(readAll(conn, true), "the connection to end"), new Uint8Array());
  await expose.logged(
    /Session \d+ closed after \d+ ms: 2 bytes from client to server, 2 bytes back/,
  );
});
