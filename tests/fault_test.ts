/**
 * Faults on real sockets: a discover point killed or shut down, links cut
 * under live sessions, clients vanishing, and a stalled reader next to a busy
 * session. Each test shows that the failure reaches the right ends promptly
 * and nothing else.
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
  concatBytes,
  cutShort,
  DP_PATH,
  IC_ALOHA,
  randomBytes,
  RawPeer,
  readAll,
  readExactly,
  settlesWithin,
  spawnDiscoverPoint,
  startDiscoverPoint,
  writeAll,
} from "./_helpers.ts";
import { TcpProxy } from "./_proxy.ts";

/** Whether a transcript holds the discover point's whole Aloha (type line and body line). */
const hasAloha = (transcript: string) => transcript.split("\n").length > 2;

/** Echoes every accepted session until the listener closes; resolves once all sessions ended. */
async function serveEcho(listener: IndirectListener): Promise<void> {
  const sessions: Promise<void>[] = [];
  try {
    for await (const conn of listener) sessions.push(echo(conn));
  } catch {
    // The listener failed; the test asserts on what its clients saw.
  } finally {
    await Promise.all(sessions);
  }
}

/** Echoes one session until it ends, whichever way. */
async function echo(conn: IndirectConn): Promise<void> {
  try {
    await conn.readable.pipeTo(conn.writable);
  } catch {
    // The session was cut or closed under the pipe: that is what these tests do to it.
  } finally {
    conn.close();
  }
}

/** Writes `data` and reads back the same number of bytes, concurrently. */
async function echoRoundTrip(conn: IndirectConn, data: Uint8Array): Promise<Uint8Array> {
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  try {
    const [, echoed] = await Promise.all([
      writer.write(data),
      readExactly(reader, data.length),
    ]);
    return echoed;
  } finally {
    writer.releaseLock();
    reader.releaseLock();
  }
}

/** Reads to the end: `"end"` for EOF, or the error the read failed with. */
async function readOutcome(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<"end" | Error> {
  try {
    while (!(await reader.read()).done) { /* discard */ }
    return "end";
  } catch (error) {
    return error as Error;
  }
}

async function sha256(bytes: Uint8Array): Promise<string> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>))
    .toHex();
}

/**
 * dp.ts on a fixed port whose log lines (standard error) the test can await,
 * so "the listener registered again" is an event, not a guess.
 */
class WatchedDiscoverPoint implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly address: string;
  readonly #lines: string[] = [];
  readonly #waiters = new Set<{ pattern: RegExp; resolve: () => void }>();
  readonly #reading: Promise<void>;

  private constructor(child: Deno.ChildProcess, address: string, reading: Promise<void>) {
    this.child = child;
    this.address = address;
    this.#reading = reading;
  }

  static async start(port: number): Promise<WatchedDiscoverPoint> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", DP_PATH, "--hostname", "127.0.0.1", "--port", String(port)],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const listening = Promise.withResolvers<string>();
    let dp: WatchedDiscoverPoint | undefined;
    const logs: string[] = [];
    const stdout = (async () => {
      for await (const line of lines(child.stdout)) {
        const match = /^Listening on (127\.0\.0\.1:\d+)$/.exec(line);
        if (match) listening.resolve(match[1]!);
      }
      listening.reject(new Error(`Cannot start dp.ts on port ${port}: ${logs.join("\n")}`));
    })();
    const stderr = (async () => {
      for await (const line of lines(child.stderr)) {
        logs.push(line);
        if (dp) dp.#log(line);
      }
    })();
    try {
      dp = new WatchedDiscoverPoint(
        child,
        await listening.promise,
        Promise.all([stdout, stderr]).then(() => {}),
      );
    } catch (error) {
      await child.status;
      await Promise.all([stdout, stderr]);
      throw error;
    }
    for (const line of logs) dp.#log(line);
    return dp;
  }

  #log(line: string): void {
    this.#lines.push(line);
    for (const waiter of this.#waiters) {
      if (waiter.pattern.test(line)) {
        this.#waiters.delete(waiter);
        waiter.resolve();
      }
    }
  }

  /** Resolves once a log line matches `pattern` (one already logged counts). */
  logged(pattern: RegExp): Promise<void> {
    if (this.#lines.some((line) => pattern.test(line))) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.add({ pattern, resolve });
    return promise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // It has exited already.
    }
    await this.child.status;
    await this.#reading;
  }
}

async function* lines(readable: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const chunk of readable.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    for (let newline = pending.indexOf("\n"); newline >= 0; newline = pending.indexOf("\n")) {
      yield pending.slice(0, newline);
      pending = pending.slice(newline + 1);
    }
  }
  if (pending) yield pending;
}

Deno.test("listen() re-registers at a discover point restarted on the same address after SIGKILL mid-transfer", async (t) => {
  const first = await spawnDiscoverPoint();
  const listener = listen({
    dp: first.address,
    name: "phoenix",
    backoff: { initial: 50, max: 200 },
  });
  const serving = serveEcho(listener);
  let second: WatchedDiscoverPoint | undefined;
  try {
    await listener.ready;
    await t.step(
      "a client mid-transfer sees its session end or fail, without hanging",
      async () => {
        const client = await connect({ dp: first.address, name: "phoenix" });
        const writer = client.writable.getWriter();
        const writing = (async () => {
          try {
            for (;;) await writer.write(randomBytes(16 * 1024));
          } catch (error) {
            return error as Error;
          }
        })();
        const reader = client.readable.getReader();
        // Echoed bytes prove data is flowing through the discover point when it dies.
        const echoed = await reader.read();
        assert.equal(echoed.done, false);
        first.child.kill("SIGKILL");
        const status = await first.stop();
        assert.equal(status.signal, "SIGKILL");
        const outcome = await settlesWithin(readOutcome(reader), "the client's read to end");
        if (outcome !== "end") assert.ok(outcome instanceof Deno.errors.ConnectionReset, outcome);
        const writeError = await settlesWithin(writing, "the client's writes to fail");
        assert.ok(writeError instanceof Error);
        await settlesWithin(client.closed, "the client session to close");
      },
    );
    await t.step("a new dp.ts on the same port gets the name back and serves it", async () => {
      second = await WatchedDiscoverPoint.start(first.port);
      assert.equal(second.address, first.address);
      await settlesWithin(second.logged(/Registered "phoenix"/), "the listener to register again");
      using client = await connect({ dp: second.address, name: "phoenix" });
      const data = randomBytes(100_000);
      assert.deepEqual(await echoRoundTrip(client, data), data);
    });
  } finally {
    listener.close();
    await serving;
    await first.stop();
    await second?.[Symbol.asyncDispose]();
  }
});

Deno.test("listen() pool: a cut link ends its own sessions only, and the listener replaces it", async (t) => {
  await using dp = await startDiscoverPoint();
  await using proxy = new TcpProxy(dp.address, { record: true });
  const listener = listen({
    dp: proxy.address,
    name: "pair",
    pool: 2,
    backoff: { initial: 10, max: 50 },
  });
  const echoes: Promise<void>[] = [];
  const conns: IndirectConn[] = [];
  try {
    const routes = [await proxy.nextRoute(), await proxy.nextRoute()];
    // The DP registers a link before its Aloha goes out: once both passed, both links are in the pool.
    await Promise.all(routes.map((route) => route.waitFor("down", hasAloha)));
    /** Opens a session and echoes it on the server side; returns both ends. */
    const open = async () => {
      const accepted = listener.accept();
      const client = await connect({ dp: dp.address, name: "pair" });
      const server = await accepted;
      conns.push(client, server);
      return { client, server };
    };
    // The DP puts a new session on the link with the fewest: one session per link.
    const a = await open();
    const b = await open();
    const routeOf = (server: IndirectConn) =>
      routes.find((route) => route.clientPort === server.localAddr.port);
    const routeA = routeOf(a.server);
    const routeB = routeOf(b.server);
    assert.ok(routeA && routeB && routeA !== routeB, "the two sessions share a link");
    echoes.push(echo(b.server));
    const serverA = a.server.readable.getReader();
    const clientA = a.client.readable.getReader();

    routeA.cut();

    await t.step("the cut link's client sees its session end, with the reason", async () => {
      const outcome = await settlesWithin(readOutcome(clientA), "the client's read to end");
      assert.ok(cutShort(/"pair" (closed its link|link failed)/)(outcome));
      await assert.rejects(a.client.write(new Uint8Array(1)), (error: Error) => {
        assert.ok(error instanceof SessionClosedError, error);
        assert.match(error.message, /"pair" closed its link/);
        return true;
      });
    });
    await t.step("the cut link's server session fails with ConnectionReset", async () => {
      const outcome = await settlesWithin(readOutcome(serverA), "the server's read to fail");
      assert.ok(outcome instanceof Deno.errors.ConnectionReset, String(outcome));
    });
    await t.step("the session on the other link still echoes", async () => {
      const data = randomBytes(200_000);
      assert.deepEqual(await echoRoundTrip(b.client, data), data);
    });
    await t.step("the listener dials a new link, and new sessions use it", async () => {
      const routeC = await settlesWithin(proxy.nextRoute(), "a replacement link");
      await routeC.waitFor("down", hasAloha);
      const c = await open();
      echoes.push(echo(c.server));
      // Link B carries one session and link C none: the DP picks C.
      assert.equal(c.server.localAddr.port, routeC.clientPort);
      const data = randomBytes(50_000);
      assert.deepEqual(await echoRoundTrip(c.client, data), data);
      assert.equal(proxy.routes.length, 3);
    });
  } finally {
    listener.close();
    for (const conn of conns) conn.close();
    await Promise.all(echoes);
    await Promise.all(conns.map((conn) => conn.closed));
  }
});

Deno.test("IndirectConn on the server reads EOF when its client's link vanishes without a Close", async () => {
  await using dp = await startDiscoverPoint();
  using listener = listen({ dp: dp.address, name: "victim" });
  await listener.ready;
  const accepted = listener.accept();
  using peer = await RawPeer.connect(dp.address);
  await peer.send(IC_ALOHA("ghost"));
  assert.equal((await peer.expect()).body.R, 4);
  await peer.send('1\n{"N":"victim"}\n');
  const ack = await peer.expect();
  assert.equal(ack.type, 2);
  using server = await accepted;
  assert.equal(server.sessionId, ack.body.X);
  await peer.send(`3\n{"X":${ack.body.X},"C":"aGk="}\n`);
  const reader = server.readable.getReader();
  assert.deepEqual(await readExactly(reader, 2), new TextEncoder().encode("hi"));
  peer.close();
  const outcome = await settlesWithin(readOutcome(reader), "the server's read to end");
  assert.ok(cutShort(/without a Close/)(outcome));
  await settlesWithin(server.closed, "the server session to close");
  await assert.rejects(server.write(new Uint8Array(1)), (error: Error) => {
    assert.ok(error instanceof SessionClosedError, error);
    assert.match(error.message, /without a Close/);
    return true;
  });
});

Deno.test("IndirectConn: a stalled reader on one session does not hold up or corrupt another on the same link", async (t) => {
  await using dp = await startDiscoverPoint();
  const listener = listen({ dp: dp.address, name: "shared", pool: 1 });
  const conns: IndirectConn[] = [];
  const pending: Promise<unknown>[] = [];
  try {
    await listener.ready;
    const open = async () => {
      const accepted = listener.accept();
      const client = await connect({ dp: dp.address, name: "shared" });
      const server = await accepted;
      conns.push(client, server);
      return { client, server };
    };
    const slow = await open();
    const fast = await open();
    assert.equal(slow.server.localAddr.port, fast.server.localAddr.port, "not on one link");

    // The slow session sends far more than any buffer on the way holds per session.
    const slowData = randomBytes(4 * 1024 * 1024);
    const slowWriting = writeAll(slow.client.writable, slowData, 64 * 1024);
    pending.push(slowWriting.catch(() => {}));
    const slowReader = slow.server.readable.getReader();
    // One chunk read proves its data reached the server; then the reader stalls.
    const head = await slowReader.read();
    assert.ok(!head.done);

    await t.step(
      "the other session transfers 1 MiB intact while that reader is stalled",
      async () => {
        const fastData = randomBytes(1024 * 1024);
        const transfer = Promise.all([
          writeAll(fast.client.writable, fastData, 16 * 1024),
          readAll(fast.server.readable),
        ]);
        pending.push(transfer.catch(() => {}));
        const [, received] = await settlesWithin(
          transfer,
          "the fast session's transfer (the link stalls behind the unread session)",
          15_000,
        );
        assert.equal(received.length, fastData.length);
        assert.equal(await sha256(received), await sha256(fastData));
      },
    );
    await t.step("the stalled reader resumes and gets all of its data intact", async () => {
      const chunks = [head.value];
      for (let next = await slowReader.read(); !next.done; next = await slowReader.read()) {
        chunks.push(next.value);
      }
      const received = concatBytes(chunks);
      await slowWriting;
      assert.equal(received.length, slowData.length);
      assert.equal(await sha256(received), await sha256(slowData));
    });
  } finally {
    listener.close();
    for (const conn of conns) conn.close();
    await Promise.all(pending);
    await Promise.all(conns.map((conn) => conn.closed));
  }
});

Deno.test("DiscoverPoint.close() ends every session with its reason and refuses waiting connects", async (t) => {
  await using running = await startDiscoverPoint();
  const asked = Promise.withResolvers<void>();
  const decision = Promise.withResolvers<void>();
  const listener = listen({
    dp: running.address,
    name: "closing",
    backoff: { initial: 10, max: 50 },
    admit: (request) => {
      if (request.client !== "late") return;
      asked.resolve();
      return decision.promise;
    },
  });
  const conns: IndirectConn[] = [];
  try {
    await listener.ready;
    const sessions: { client: IndirectConn; server: IndirectConn }[] = [];
    for (const name of ["a", "b"]) {
      const accepted = listener.accept();
      const client = await connect({ dp: running.address, name: "closing", clientName: name });
      const server = await accepted;
      conns.push(client, server);
      sessions.push({ client, server });
    }
    const late = connect({ dp: running.address, name: "closing", clientName: "late" });
    await asked.promise; // The Connect is at the server, its Ack held back.

    const closing = running.dp.close();

    await t.step("the waiting connect is refused with the DP's reason", async () => {
      await assert.rejects(settlesWithin(late, "the waiting connect"), (error: Error) => {
        assert.ok(error instanceof SessionRefusedError, error);
        assert.match(error.reason, /shutting down/);
        return true;
      });
    });
    await t.step("every open session ends on both sides, with the DP's reason", async () => {
      for (const { client, server } of sessions) {
        for (const conn of [client, server]) {
          const outcome = await settlesWithin(readOutcome(conn.readable.getReader()), "the end");
          assert.ok(cutShort(/shutting down/)(outcome));
          await settlesWithin(conn.closed, "the session to close");
          await assert.rejects(conn.write(new Uint8Array(1)), (error: Error) => {
            assert.ok(error instanceof SessionClosedError, error);
            assert.match(error.message, /The discover point is shutting down/);
            return true;
          });
        }
      }
    });
    await t.step("close() returns, and a later connect cannot reach the DP", async () => {
      await settlesWithin(closing, "DiscoverPoint.close()");
      await assert.rejects(connect({ dp: running.address, name: "closing" }));
    });
  } finally {
    decision.resolve();
    listener.close();
    for (const conn of conns) conn.close();
  }
});
