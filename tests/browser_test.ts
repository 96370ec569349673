/**
 * A browser as indirect client: headless Chromium loads a page that imports
 * the browser bundle (`browser.ts`, built here with `deno bundle`), connects
 * by name through a discover point's WebSocket path to an echo server behind
 * `listen()`, and checks 1 MiB echoed intact. Needs `/usr/bin/chromium`
 * (Debian's `chromium` package; `.ci/run` installs it): without it the test
 * fails, saying so.
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { DiscoverPoint, type IndirectListener, listen } from "../mod.ts";
import { settlesWithin } from "./_helpers.ts";
import { assertChromium, killChromium, removeDir, spawnChromium } from "./_chromium.ts";
import { serveEcho } from "./_ws.ts";
import { makeTempDir, type TempDir } from "./_programs.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BROWSER_ENTRY = fileURLToPath(new URL("../browser.ts", import.meta.url));
const SIZE = 1024 * 1024;

/** What the page reports on `POST /result`. */
interface PageResult {
  ok: boolean;
  bytes: number;
  sha256?: string;
  error?: string;
  /** What two sessions of one `IndirectDialer` (one WebSocket) echoed. */
  multiplexed?: string[];
}

/** The bytes the page writes: deterministic, so both ends can compute them. */
function pattern(size: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + (i >>> 8) + (i >>> 16)) & 0xff;
  return bytes;
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The page: imports the bundle, echoes 1 MiB through `dp`, and posts what it saw. */
function page(dp: string, size: number): string {
  return `<!doctype html>
<meta charset="utf-8">
<title>RTCP in a web page</title>
<script>
  // Reports what a module script cannot: the bundle failing to load or to parse.
  function report(result) {
    fetch("/result", { method: "POST", body: JSON.stringify(result) });
  }
  addEventListener("error", (event) => report({ ok: false, bytes: 0, error: "page error: " + event.message }));
</script>
<script type="module" onerror="report({ ok: false, bytes: 0, error: 'cannot load the module' })">
  import { connect, IndirectDialer } from "/rtcp.js";

  const SIZE = ${size};
  function pattern(size) {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = (i * 31 + (i >>> 8) + (i >>> 16)) & 0xff;
    return bytes;
  }
  async function sha256Hex(bytes) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  let result;
  try {
    const sent = pattern(SIZE);
    const conn = await connect({ dp: ${JSON.stringify(dp)}, name: "echo" });
    const writing = (async () => {
      const writer = conn.writable.getWriter();
      for (let offset = 0; offset < SIZE; offset += 64 * 1024) {
        await writer.write(sent.slice(offset, offset + 64 * 1024));
      }
      writer.releaseLock();
    })();
    const received = new Uint8Array(SIZE);
    let bytes = 0;
    const reader = conn.readable.getReader();
    while (bytes < SIZE) {
      const { value, done } = await reader.read();
      if (done) break;
      received.set(value.subarray(0, SIZE - bytes), bytes);
      bytes += value.length;
    }
    reader.releaseLock();
    await writing;
    conn.close();
    // Two sessions over one WebSocket: extension multiplex.
    const dialer = new IndirectDialer({ dp: ${JSON.stringify(dp)}, name: "echo" });
    const multiplexed = await Promise.all(["first", "second"].map(async (text) => {
      const session = await dialer.connect();
      await session.write(new TextEncoder().encode(text));
      const echoed = new Uint8Array(text.length);
      let got = 0;
      while (got < echoed.length) got += await session.read(echoed.subarray(got)) ?? echoed.length;
      session.close();
      return new TextDecoder().decode(echoed);
    }));
    await dialer.close();
    const [want, got] = await Promise.all([sha256Hex(sent), sha256Hex(received)]);
    result = {
      multiplexed,
      ok: bytes === SIZE && want === got,
      bytes,
      sha256: got,
      error: bytes === SIZE && want === got ? undefined : "echo differs: sent " + want + ", got " + got,
    };
  } catch (error) {
    result = { ok: false, bytes: 0, error: String(error?.stack ?? error) };
  }
  report(result);
</script>
`;
}

/** Builds the browser bundle into `dir` with `deno bundle`, as `deno task bundle` does. */
async function buildBundle(dir: TempDir): Promise<Uint8Array<ArrayBuffer>> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform", "browser", "--output", dir.file("rtcp.js"), BROWSER_ENTRY],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  assert.ok(
    output.success,
    `deno bundle failed (exit ${output.code}): ${decoder.decode(output.stderr)}`,
  );
  return await Deno.readFile(dir.file("rtcp.js"));
}

Deno.test("browser: a page connects by name through a ws:// discover point and 1 MiB echoes intact", async () => {
  await assertChromium();

  const dir = await makeTempDir();
  let chromium: Deno.ChildProcess | undefined;
  let server: Deno.HttpServer<Deno.NetAddr> | undefined;
  let dp: DiscoverPoint | undefined;
  let listener: IndirectListener | undefined;
  let echo: Promise<void> | undefined;
  try {
    const bundle = await buildBundle(dir);

    dp = new DiscoverPoint({ hostname: "127.0.0.1", port: null });
    await dp.start();
    const links = dp.httpHandler();
    const result = Promise.withResolvers<PageResult>();
    let html = "";
    server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      async (request, info) => {
        const { pathname } = new URL(request.url);
        if (pathname === "/") {
          return new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } });
        }
        if (pathname === "/rtcp.js") {
          return new Response(bundle, { headers: { "content-type": "text/javascript" } });
        }
        if (pathname === "/result" && request.method === "POST") {
          try {
            result.resolve(JSON.parse(await request.text()) as PageResult);
          } catch (error) {
            result.reject(error);
          }
          return new Response(null, { status: 204 });
        }
        if (pathname === "/rtcp") return links(request, info);
        return new Response("Not found", { status: 404 });
      },
    );
    const url = `ws://127.0.0.1:${server.addr.port}/rtcp`;
    html = page(url, SIZE);

    listener = listen({ dp: url, name: "echo" });
    await settlesWithin(listener.ready, "the echo server's registration");
    echo = serveEcho(listener);

    chromium = spawnChromium(dir, {
      args: ["--disable-quic", `http://127.0.0.1:${server.addr.port}/`],
      stderr: "null",
    });
    const exited = chromium.status.then((status) => {
      throw new Error(`Chromium exited (code ${status.code}) before the page reported`);
    });

    const outcome = await settlesWithin(
      Promise.race([result.promise, exited]),
      "the page's result (POST /result)",
      60_000,
    );
    assert.equal(outcome.error, undefined, `the page failed: ${outcome.error}`);
    assert.ok(outcome.ok, `the page reports a bad echo: ${JSON.stringify(outcome)}`);
    assert.equal(outcome.bytes, SIZE);
    assert.equal(outcome.sha256, await sha256Hex(pattern(SIZE)));
    assert.deepEqual(outcome.multiplexed, ["first", "second"]);
  } finally {
    if (chromium !== undefined) await killChromium(chromium);
    listener?.close();
    await echo;
    await dp?.close();
    await server?.shutdown();
    await removeDir(dir);
  }
});
