/**
 * TLS between peers and an in-process discover point: echo over `tls://`,
 * pinning a self-signed certificate, the refusals of certificates that do not
 * verify, plaintext peers on the TLS port, what an observer on the path sees,
 * and the extensions (half-close, flow control, binary) over TLS and TCP alike.
 * @module
 */

import assert from "node:assert/strict";
import {
  connect,
  type IndirectConn,
  type IndirectListener,
  listen,
  ProtocolError,
} from "../mod.ts";
import { ALL_FEATURES } from "../lib/link/link.ts";
import {
  assertEchoes,
  IS_ALOHA,
  randomBytes,
  readAll,
  readExactly,
  settlesWithin,
  startDiscoverPoint,
  writeAll,
} from "./_helpers.ts";
import { TcpProxy } from "./_proxy.ts";
import {
  certAndKey,
  type DiscoverPointOver,
  fixture,
  latin1,
  sha256Hex,
  startDiscoverPointOver,
  TlsRecordingProxy,
} from "./_tls.ts";
import { readAllFrom, writeAllTo } from "./_programs.ts";
import { echoOf } from "./_ws.ts";

const KIB = 1024;
const MIB = 1024 * KIB;

const CA = await fixture("ca.crt");
const OTHER_CA = await fixture("other-ca.crt");
const SELF_SIGNED = await certAndKey("self-signed");
const DP_CERT = await certAndKey("dp");
const EXPIRED = await certAndKey("expired");
const WRONG_NAME = await certAndKey("wrong-name");

/** Echoes every session `listener` accepts; resolves once the listener and its sessions are done. */
function serveEcho(listener: IndirectListener): Promise<void> {
  const sessions = new Set<Promise<void>>();
  return (async () => {
    try {
      for await (const conn of listener) {
        // A client that closes abruptly errors the pipe: that session is over, nothing more.
        sessions.add(conn.readable.pipeTo(conn.writable).catch(() => {}));
      }
    } catch {
      // The registration failed; the test asserts that through ready/accept().
    }
    await Promise.all(sessions);
  })();
}

/** Sends `data`, half-closes, and reads the echo to its end: the server ends the session. */
async function echoToEnd(conn: IndirectConn, data: Uint8Array): Promise<Uint8Array> {
  const [, echoed] = await Promise.all([
    writeAll(conn.writable, data, 64 * KIB),
    readAll(conn.readable),
  ]);
  return echoed;
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

// ---- 1. echo over TLS --------------------------------------------------------------

for (const host of ["localhost", "127.0.0.1"]) {
  Deno.test(`TLS: listen() and connect() through tls://${host} echo 1 MiB intact`, async () => {
    await using dp = await startDiscoverPoint({ tls: DP_CERT });
    const address = `tls://${host}:${dp.port}`;
    const listener = listen({ dp: address, name: "echo", caCerts: [CA] });
    const served = serveEcho(listener);
    try {
      await settlesWithin(listener.ready, "the registration over TLS");
      const client = await connect({ dp: address, name: "echo", caCerts: [CA] });
      const data = randomBytes(MIB);
      const echoed = await settlesWithin(echoOf(client, data), "the 1 MiB echo", 30_000);
      assert.equal(echoed.length, data.length);
      assert.equal(await sha256Hex(echoed), await sha256Hex(data));
      await settlesWithin(client.closed, "the client's session to end");
    } finally {
      listener.close();
      await settlesWithin(served, "the echo server to finish");
    }
  });
}

// ---- 2. pinning a self-signed certificate ---------------------------------------

Deno.test("TLS: a DP with a self-signed certificate serves clients that pin exactly it", async () => {
  await using dp = await startDiscoverPoint({ tls: SELF_SIGNED });
  const pinned = [SELF_SIGNED.cert];
  const listener = listen({ dp: `tls://localhost:${dp.port}`, name: "pinned", caCerts: pinned });
  const served = serveEcho(listener);
  try {
    await settlesWithin(listener.ready, "the registration with the pinned certificate");
    for (const host of ["localhost", "127.0.0.1"]) {
      using client = await connect({
        dp: `tls://${host}:${dp.port}`,
        name: "pinned",
        caCerts: pinned,
      });
      await assertEchoes(client, `pinned through ${host}`);
    }
  } finally {
    listener.close();
    await settlesWithin(served, "the echo server to finish");
  }
});

// ---- 3. certificates that do not verify ------------------------------------------

interface Refusal {
  label: string;
  serve: { cert: string; key: string };
  caCerts: string[] | undefined;
  host: string;
  reason: RegExp;
}

const REFUSALS: Refusal[] = [
  {
    label: "a client trusting only another CA",
    serve: DP_CERT,
    caCerts: [OTHER_CA],
    host: "localhost",
    reason: /^UnknownIssuer$/,
  },
  {
    label: "a certificate for another name",
    serve: WRONG_NAME,
    caCerts: [CA],
    host: "localhost",
    reason: /^certificate not valid for name "localhost".*wrong\.example/,
  },
  {
    label: "an expired certificate",
    serve: EXPIRED,
    caCerts: [CA],
    host: "127.0.0.1",
    reason: /^certificate expired/,
  },
  {
    label: "a client with only the system roots",
    serve: DP_CERT,
    caCerts: undefined,
    host: "localhost",
    reason: /^UnknownIssuer$/,
  },
];

for (const { label, serve, caCerts, host, reason } of REFUSALS) {
  Deno.test(`TLS: ${label} is refused with InvalidData by connect(), listen().ready and accept()`, async () => {
    await using dp = await startDiscoverPoint({ tls: serve });
    const address = `tls://${host}:${dp.port}`;
    const check = (error: unknown): true => {
      assert.ok(error instanceof Deno.errors.InvalidData, `expected InvalidData, got ${error}`);
      const prefix = `Cannot verify discover point "${address}": invalid peer certificate: `;
      assert.ok(error.message.startsWith(prefix), error.message);
      const detail = error.message.slice(prefix.length).replace(/\. Trust its .*$/, "");
      assert.match(detail, reason);
      assert.match(
        error.message,
        /\. Trust its certificate's CA \(option caCerts, flag --tls-ca FILE\)$/,
      );
      return true;
    };
    const trust = caCerts ? { caCerts } : {};
    await assert.rejects(
      settlesWithin(connect({ dp: address, name: "any", ...trust }), "connect() to fail"),
      check,
    );
    const listener = listen({ dp: address, name: "any", ...trust });
    try {
      await assert.rejects(settlesWithin(listener.ready, "ready to reject"), check);
      await assert.rejects(settlesWithin(listener.accept(), "accept() to reject"), check);
    } finally {
      listener.close();
    }
    assert.equal(dp.dp.stats().servers, 0);
  });
}

// ---- 4. plaintext on the TLS port -----------------------------------------------

Deno.test("TLS: a plaintext peer on the TLS port only loses its own link; sessions keep echoing", async () => {
  await using dp = await startDiscoverPoint({ tls: DP_CERT });
  const address = `tls://127.0.0.1:${dp.port}`;
  const listener = listen({ dp: address, name: "echo", caCerts: [CA] });
  const served = serveEcho(listener);
  try {
    await settlesWithin(listener.ready, "the registration");
    using client = await connect({ dp: address, name: "echo", caCerts: [CA] });
    await assertEchoes(client, "before the intruder");

    const raw = await Deno.connect({ hostname: "127.0.0.1", port: dp.port });
    try {
      await writeAllTo(raw, new TextEncoder().encode(IS_ALOHA("intruder")));
      const answer = await settlesWithin(readAllFrom(raw, true), "the plaintext link to end");
      // At most a TLS alert record; never a discover point's Aloha.
      assert.ok(answer.length === 0 || answer[0] === 0x15, `got ${latin1(answer)}`);
      assert.ok(!latin1(answer).includes('"R"'), `got ${latin1(answer)}`);
    } finally {
      raw.close();
    }

    await assertEchoes(client, "after the intruder");
    assert.equal(dp.dp.stats().servers, 1);
  } finally {
    listener.close();
    await settlesWithin(served, "the echo server to finish");
  }
});

Deno.test("TLS: connect() without tls:// to the TLS port is told to dial tls://", async () => {
  await using dp = await startDiscoverPoint({ tls: DP_CERT });
  for (const dial of [`127.0.0.1:${dp.port}`, `tcp://127.0.0.1:${dp.port}`]) {
    await assert.rejects(
      settlesWithin(connect({ dp: dial, name: "echo" }), `connect(${dial}) to fail`),
      (error: unknown) => {
        assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${error}`);
        assert.match(
          error.message,
          new RegExp(`it answered in TLS; dial ${escape(`tls://127.0.0.1:${dp.port}`)}$`),
        );
        return true;
      },
    );
  }
  const listener = listen({ dp: `127.0.0.1:${dp.port}`, name: "echo" });
  try {
    await assert.rejects(
      settlesWithin(listener.ready, "ready to reject"),
      /it answered in TLS; dial tls:\/\//,
    );
  } finally {
    listener.close();
  }
});

// ---- 5. what an observer on the path sees -----------------------------------------

const MARKER = "SECRET-PAYLOAD-";
/** The marker as text Data would carry it: base64, aligned since 15 bytes are 5 base64 quanta. */
const MARKER_BASE64 = btoa(MARKER);

for (const tls of [true, false]) {
  const title = tls
    ? "TLS: a recording proxy between the server and the DP never sees the payload"
    : "TLS (control): without TLS, the same recording proxy sees the payload";
  Deno.test(title, async () => {
    await using dp = await startDiscoverPoint(tls ? { tls: DP_CERT } : {});
    await using proxy = new TcpProxy(dp.address, { record: true });
    const scheme = tls ? "tls://" : "";
    const trust = tls ? { caCerts: [CA] } : {};
    const listener = listen({ dp: `${scheme}${proxy.address}`, name: "secret", ...trust });
    const served = serveEcho(listener);
    try {
      await settlesWithin(listener.ready, "the registration through the proxy");
      const route = await proxy.nextRoute();
      const client = await connect({ dp: `${scheme}${dp.address}`, name: "secret", ...trust });
      const payload = new TextEncoder().encode(MARKER.repeat(Math.ceil(64 * KIB / MARKER.length)))
        .subarray(0, 64 * KIB);
      const echoed = await settlesWithin(echoOf(client, payload), "the echo");
      assert.deepEqual(echoed, payload);
      await settlesWithin(client.closed, "the client's session to end");
      // The echo went through the proxy both ways before it came back.
      const seen = route.transcript("either");
      assert.ok(seen.length > 64 * KIB, `the proxy forwarded only ${seen.length} bytes`);
      if (tls) {
        assert.ok(!seen.includes(MARKER), "the payload crossed the proxy in clear");
        assert.ok(!seen.includes(MARKER_BASE64), "the payload crossed the proxy in base64");
        assert.ok(!seen.includes('"N":"secret"'), "the Aloha crossed the proxy in clear");
      } else {
        assert.ok(
          seen.includes(MARKER) || seen.includes(MARKER_BASE64),
          "the control proxy should see the payload",
        );
        assert.ok(seen.includes('"N":"secret"'));
      }
    } finally {
      listener.close();
      await settlesWithin(served, "the echo server to finish");
    }
  });
}

// ---- 6. the extensions over TCP and TLS alike -------------------------------------

/**
 * Eight sessions to `name` at once, each echoing 256 KiB through `echo`,
 * checked by SHA-256.
 * @returns The payloads sent.
 */
async function echoInParallel(
  dp: DiscoverPointOver,
  name: string,
  echo: (conn: IndirectConn, data: Uint8Array) => Promise<Uint8Array>,
): Promise<Uint8Array[]> {
  const payloads = Array.from({ length: 8 }, () => randomBytes(256 * KIB));
  await settlesWithin(
    Promise.all(payloads.map(async (payload) => {
      const client = await connect({ dp: dp.dialed, name, ...dp.trust });
      const echoed = await echo(client, payload);
      assert.equal(echoed.length, payload.length);
      assert.equal(await sha256Hex(echoed), await sha256Hex(payload));
      await client.closed;
    })),
    `8 parallel echoes to "${name}"`,
    60_000,
  );
  return payloads;
}

for (const transport of ["tcp", "tls"] as const) {
  Deno.test(`${transport}: half-close: the server reads EOF, then still answers, then both close`, async () => {
    await using dp = await startDiscoverPointOver(transport);
    using listener = listen({ dp: dp.dialed, name: "half", ...dp.trust });
    await settlesWithin(listener.ready, "the registration");
    const accepted = listener.accept();
    const client = await connect({ dp: dp.dialed, name: "half", ...dp.trust });
    const server = await settlesWithin(accepted, "the session to arrive");

    const request = randomBytes(100 * KIB);
    const response = randomBytes(300 * KIB);
    const clientWriter = client.writable.getWriter();
    await clientWriter.write(request);
    await clientWriter.close(); // closeWrite(): the client can still read.

    const heard = await settlesWithin(readAll(server.readable), "EOF at the server");
    assert.equal(await sha256Hex(heard), await sha256Hex(request));
    // After the client's closeWrite() the server still writes, and the client still reads.
    const serverWriter = server.writable.getWriter();
    const reader = client.readable.getReader();
    const [, answer] = await settlesWithin(
      Promise.all([
        (async () => {
          for (let offset = 0; offset < response.length; offset += 64 * KIB) {
            await serverWriter.write(response.slice(offset, offset + 64 * KIB));
          }
        })(),
        readExactly(reader, response.length),
      ]),
      "the answer after the half-close",
    );
    assert.equal(answer.length, response.length);
    assert.equal(await sha256Hex(answer), await sha256Hex(response));
    reader.releaseLock();
    serverWriter.releaseLock();
    client.close();
    await settlesWithin(Promise.all([client.closed, server.closed]), "both ends closed");
  });

  Deno.test(`${transport}: flow control: 4 MiB arrive intact at a reader that keeps lagging`, async () => {
    // The discover point may hold at most this much of the session: far less than is sent.
    const maxWindow = 512 * KIB;
    await using dp = await startDiscoverPointOver(transport, { maxWindow });
    using listener = listen({ dp: dp.dialed, name: "slow", ...dp.trust });
    await settlesWithin(listener.ready, "the registration");
    const accepted = listener.accept();
    const client = await connect({ dp: dp.dialed, name: "slow", ...dp.trust });
    const server = await settlesWithin(accepted, "the session to arrive");

    const data = randomBytes(4 * MIB);
    // The reader reads a piece only once the writer has got this far ahead of it: it always
    // lags, so the windows on the way fill up. Less than the initial window (256 KiB), so a
    // writer out of credit always lets the reader go on.
    const LAG = 192 * KIB;
    let held = 0;
    let written = 0;
    let writerDone = false;
    let progressed = Promise.withResolvers<void>();
    const writing = (async () => {
      const writer = client.writable.getWriter();
      for (let offset = 0; offset < data.length; offset += 32 * KIB) {
        await writer.write(data.slice(offset, offset + 32 * KIB));
        written = Math.min(data.length, offset + 32 * KIB);
        progressed.resolve();
        progressed = Promise.withResolvers();
      }
      await writer.close();
      writerDone = true;
      progressed.resolve();
    })();
    const reading = (async () => {
      const chunks: Uint8Array[] = [];
      let read = 0;
      const piece = new Uint8Array(16 * KIB);
      for (;;) {
        while (!writerDone && written < read + LAG) await progressed.promise;
        held = Math.max(held, dp.dp.stats().maxSessionBufferedBytes);
        const n = await server.read(piece);
        if (n === null) break;
        chunks.push(piece.slice(0, n));
        read += n;
      }
      const out = new Uint8Array(read);
      let offset = 0;
      for (const chunk of chunks) {
        out.set(chunk, offset);
        offset += chunk.length;
      }
      return out;
    })();
    const [, received] = await settlesWithin(
      Promise.all([writing, reading]),
      "4 MiB through a lagging reader",
      60_000,
    );
    assert.equal(received.length, data.length);
    assert.equal(await sha256Hex(received), await sha256Hex(data));
    assert.ok(held <= maxWindow, `the discover point held ${held} bytes of one session`);
    server.close();
    await settlesWithin(Promise.all([client.closed, server.closed]), "both ends closed");
  });

  Deno.test(`${transport}: binary is offered by default, agreed, and 8 parallel sessions of 256 KiB echo intact`, async () => {
    // No features option anywhere below: the defaults must include binary.
    assert.ok(ALL_FEATURES.includes("binary"));
    await using dp = await startDiscoverPointOver(transport);
    // A proxy that sees the plaintext of the server's link: TLS is terminated by it.
    const proxy = transport === "tls"
      ? new TlsRecordingProxy(`127.0.0.1:${dp.port}`, DP_CERT, [CA])
      : new TcpProxy(dp.address, { record: true });
    await using _proxy = proxy;
    const scheme = transport === "tls" ? "tls://" : "";
    const listener = listen({ dp: `${scheme}${proxy.address}`, name: "bin", ...dp.trust });
    const served = serveEcho(listener);
    try {
      await settlesWithin(listener.ready, "the registration");
      const payloads = await echoInParallel(dp, "bin", echoOf);
      const route = proxy.routes[0];
      assert.ok(route, "the server's link went through the proxy");
      const up = route.transcript("up");
      const down = route.transcript("down");
      // Both Alohas list binary: the server's offer and the discover point's answer.
      const features = (text: string) => JSON.parse(text.split("\n")[1]!).F as string[];
      assert.match(up, /^0\n\{/);
      assert.match(down, /^0\n\{/);
      assert.ok(features(up).includes("binary"), `server offered ${features(up)}`);
      assert.ok(features(down).includes("binary"), `discover point answered ${features(down)}`);
      // Binary Data carries raw bytes: a piece of each payload shows in the clear both ways
      // (to the server, and its echo back), which base64 text Data would not.
      for (const payload of payloads) {
        const piece = latin1(payload.subarray(100_000, 100_064));
        assert.ok(down.includes(piece), "a payload piece on its way to the server");
        assert.ok(up.includes(piece), "a payload piece on its way back");
      }
    } finally {
      listener.close();
      await settlesWithin(served, "the echo server to finish");
    }
  });
}

// ---- a session the server ends delivers its last bytes -----------------------

for (const transport of ["tcp", "tls"] as const) {
  Deno.test({
    name:
      `${transport}: sessions the server ends (echo to EOF, 8 × 256 KiB in parallel) deliver every byte`,
    // Regression: the discover point used to close the client's link while the client was
    // still sending Credit, so the kernel reset it and the tail of the echo was lost. It now
    // ends its direction and lets the client close (TcpTransport.finish).
    async fn() {
      await using dp = await startDiscoverPointOver(transport);
      const listener = listen({ dp: dp.dialed, name: "tail", ...dp.trust });
      const served = serveEcho(listener);
      try {
        await settlesWithin(listener.ready, "the registration");
        await echoInParallel(dp, "tail", echoToEnd);
      } finally {
        listener.close();
        await settlesWithin(served, "the echo server to finish");
      }
    },
  });
}

// ---- limits apply during the TLS handshake too ----------------------------------

/** Tries `attempt` until it settles the way `wanted` says, and returns that outcome. */
async function until<T>(
  attempt: () => Promise<T>,
  wanted: "ok" | "refused",
): Promise<T | unknown> {
  for (;;) {
    try {
      const value = await attempt();
      if (wanted === "ok") return value;
      (value as Disposable)[Symbol.dispose]?.();
    } catch (error) {
      if (wanted === "refused") return error;
    }
  }
}

Deno.test("TLS: a connection still in its TLS handshake counts against maxLinks, and only until it goes", async () => {
  await using dp = await startDiscoverPointOver("tls", { maxLinks: 2 });
  const listener = listen({ dp: dp.dialed, ...dp.trust, name: "counted" });
  const served = serveEcho(listener);
  await settlesWithin(listener.ready, "the registration");
  // Never sends a ClientHello: it holds the second place while the handshake deadline runs.
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: dp.port });
  const refusal = await settlesWithin(
    until(() => connect({ dp: dp.dialed, ...dp.trust, name: "counted" }), "refused"),
    "a session to be refused while the silent connection holds the last place",
  );
  assert.ok(refusal instanceof Error, String(refusal));
  silent.close();
  const conn = await settlesWithin(
    until(() => connect({ dp: dp.dialed, ...dp.trust, name: "counted" }), "ok"),
    "a session once the silent connection is gone",
  ) as IndirectConn;
  await assertEchoes(conn, "after");
  conn.close();
  await conn.closed;
  listener.close();
  await settlesWithin(served, "the echo server to finish");
});
