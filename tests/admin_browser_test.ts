/**
 * The admin status page in a real browser: headless Chromium, driven over
 * the DevTools protocol (a WebSocket), opens the page of a discover point
 * with a token, is asked for the token, types it, and then shows a name and
 * a session that start while it is open, and throughput in its chart. The
 * test waits on the page's own DOM (a MutationObserver inside the page,
 * through `Runtime.evaluate`), never on a timer, and writes a screenshot
 * (`Page.captureScreenshot`) to its temporary directory through a child
 * process, then keeps a copy of the last one as
 * `${TMPDIR:-/tmp}/rtcp-admin-status-page.png`. Needs `/usr/bin/chromium`,
 * as `tests/browser_test.ts` does.
 * @module
 */

import assert from "node:assert/strict";
import { AdminEndpoint, connect, type IndirectListener, listen } from "../mod.ts";
import { randomBytes, settlesWithin, startDiscoverPoint } from "./_helpers.ts";
import { Lines, makeTempDir } from "./_programs.ts";
import { assertChromium, killChromium, removeDir, spawnChromium } from "./_chromium.ts";
import { serveEcho } from "./_ws.ts";

const TOKEN = "fedcba9876543210fedcba9876543210";
const KEPT_SCREENSHOT = "rtcp-admin-status-page.png";

/** A DevTools protocol message from the browser. */
interface CdpMessage {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { message: string };
  sessionId?: string;
}

/** A minimal DevTools protocol client: commands with answers, and events to wait for. */
class Cdp {
  readonly #ws: WebSocket;
  readonly #closed: Promise<void>;
  #next = 1;
  readonly #pending = new Map<number, PromiseWithResolvers<Record<string, unknown>>>();
  readonly #listeners = new Set<(message: CdpMessage) => void>();

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    this.#closed = new Promise((resolve) => ws.addEventListener("close", () => resolve()));
    ws.addEventListener("message", (event) => {
      const message = JSON.parse(event.data as string) as CdpMessage;
      if (message.id !== undefined) {
        const waiter = this.#pending.get(message.id);
        this.#pending.delete(message.id);
        if (message.error) waiter?.reject(new Error(`DevTools: ${message.error.message}`));
        else waiter?.resolve(message.result ?? {});
        return;
      }
      for (const listener of this.#listeners) listener(message);
    });
    ws.addEventListener("close", () => {
      for (const waiter of this.#pending.values()) waiter.reject(new Error("DevTools closed"));
      this.#pending.clear();
    });
  }

  static async open(url: string): Promise<Cdp> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error(`Cannot open DevTools at ${url}`)), {
        once: true,
      });
    });
    return new Cdp(ws);
  }

  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<Record<string, unknown>> {
    const id = this.#next++;
    const waiter = Promise.withResolvers<Record<string, unknown>>();
    this.#pending.set(id, waiter);
    this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    return waiter.promise;
  }

  /** Calls `listener` with every event until the returned function is called. */
  on(listener: (message: CdpMessage) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The next event `method` of `sessionId`. */
  event(method: string, sessionId: string): Promise<Record<string, unknown>> {
    const { promise, resolve } = Promise.withResolvers<Record<string, unknown>>();
    const off = this.on((message) => {
      if (message.method === method && message.sessionId === sessionId) {
        off();
        resolve(message.params ?? {});
      }
    });
    return promise;
  }

  async close(): Promise<void> {
    this.#ws.close();
    await this.#closed;
  }
}

/** A page (tab) of the browser, attached with a flat session. */
class Page {
  constructor(readonly cdp: Cdp, readonly sessionId: string) {}

  /** Evaluates `expression` in the page, awaiting a promise it returns; resolves with its value. */
  async evaluate<T>(expression: string): Promise<T> {
    const answer = await this.cdp.send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    }, this.sessionId) as {
      result: { value?: T };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    };
    if (answer.exceptionDetails) {
      const { text, exception } = answer.exceptionDetails;
      throw new Error(`The page threw: ${exception?.description ?? text}`);
    }
    return answer.result.value as T;
  }

  /**
   * Resolves once `condition` (a JavaScript expression) holds in the page:
   * checked now and at every change of the DOM, by a MutationObserver.
   */
  until(condition: string, what: string, ms = 15_000): Promise<void> {
    return settlesWithin(
      this.evaluate<boolean>(`new Promise((resolve) => {
        const check = () => {
          if (!(${condition})) return false;
          observer.disconnect();
          resolve(true);
          return true;
        };
        const observer = new MutationObserver(check);
        if (!check()) {
          observer.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
        }
      })`).then(() => undefined),
      what,
      ms,
    );
  }
}

/** Runs `sh -c script` with `args` and `stdin`; throws with its stderr if it fails. */
async function sh(script: string, args: string[], stdin = ""): Promise<void> {
  const child = new Deno.Command("sh", {
    args: ["-c", script, "sh", ...args],
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(stdin));
  await writer.close();
  const output = await child.output();
  if (!output.success) {
    throw new Error(`sh -c ${script} failed: ${new TextDecoder().decode(output.stderr)}`);
  }
}

Deno.test("admin page: headless Chromium asks for the token, then shows a new name, its session and throughput", async () => {
  await assertChromium();

  const dir = await makeTempDir();
  const dp = await startDiscoverPoint({ name: "browser-test-dp" });
  // Samples every 200 ms, so that the chart has points within the test's time.
  const admin = await AdminEndpoint.create(dp.dp, { token: TOKEN, sampleInterval: 200 });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, admin.fetch);
  const pageUrl = `http://127.0.0.1:${server.addr.port}/`;
  let chromium: Deno.ChildProcess | undefined;
  let stderr: Lines | undefined;
  let cdp: Cdp | undefined;
  let listener: IndirectListener | undefined;
  let echo: Promise<void> | undefined;
  try {
    chromium = spawnChromium(dir, {
      args: [
        "--window-size=1280,1100",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
      ],
      stderr: "piped",
    });
    stderr = new Lines(chromium.stderr);
    const [, browserUrl] = await settlesWithin(
      stderr.waitFor(/^DevTools listening on (ws:\/\/\S+)$/),
      "Chromium's DevTools address",
      30_000,
    );
    cdp = await Cdp.open(browserUrl!);
    const { targetId } = await cdp.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await cdp.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(cdp, sessionId as string);
    const exceptions: string[] = [];
    cdp.on((message) => {
      if (message.method === "Runtime.exceptionThrown" && message.sessionId === page.sessionId) {
        exceptions.push(JSON.stringify(message.params));
      }
    });
    await cdp.send("Page.enable", {}, page.sessionId);
    await cdp.send("Runtime.enable", {}, page.sessionId);
    const loaded = cdp.event("Page.loadEventFired", page.sessionId);
    await cdp.send("Page.navigate", { url: pageUrl }, page.sessionId);
    await settlesWithin(loaded, "the status page to load", 15_000);

    // With a token, the page asks for it before it shows anything.
    await page.until(`!document.getElementById("login").hidden`, "the token form");
    assert.equal(await page.evaluate(`document.getElementById("dashboard").hidden`), true);
    await page.evaluate(`(() => {
      document.getElementById("token").value = ${JSON.stringify(TOKEN)};
      document.getElementById("login-form").requestSubmit();
    })()`);
    await page.until(
      `document.getElementById("names-body").textContent.includes("No names registered")`,
      "the page to show the empty discover point",
    );
    assert.equal(
      await page.evaluate(`sessionStorage.getItem("rtcp-admin-token")`),
      TOKEN,
      "the page keeps the token in sessionStorage",
    );

    // A name and a session start while the page is open: it shows them by itself.
    listener = listen({ dp: dp.address, name: "echo-in-browser" });
    await settlesWithin(listener.ready, "the echo server's registration");
    echo = serveEcho(listener);
    using session = await connect({
      dp: dp.address,
      name: "echo-in-browser",
      clientName: "browser-test-client",
    });
    const payload = randomBytes(256 * 1024);
    const reading = (async () => {
      const buffer = new Uint8Array(64 * 1024);
      let read = 0;
      while (read < payload.length) {
        const n = await session.read(buffer);
        if (n === null) break;
        read += n;
      }
      return read;
    })();
    await session.write(payload);
    assert.equal(await settlesWithin(reading, "the echo"), payload.length);

    await page.until(
      `document.getElementById("names-body").textContent.includes("echo-in-browser")`,
      "the page to show the new name",
    );
    await page.until(
      `document.getElementById("sessions-body").textContent.includes("browser-test-client")`,
      "the page to show the session",
    );
    await page.until(
      `document.getElementById("line-up").getAttribute("points")?.trim().split(" ").length >= 2`,
      "the chart to draw throughput",
    );
    assert.match(
      await page.evaluate<string>(`document.getElementById("links-body").textContent`),
      /echo-in-browser.*server.*127\.0\.0\.1:\d+.*tcp/,
    );
    assert.match(
      await page.evaluate<string>(`document.getElementById("c-sessions").textContent`),
      /^1$/,
    );
    assert.match(
      await page.evaluate<string>(`document.getElementById("state").className`),
      /^live$/,
    );
    assert.deepEqual(exceptions, [], "the page threw");

    // The screenshot goes to the test's temporary directory through a child process (no
    // --allow-write here), and the last one is kept for people to look at.
    const { data } = await cdp.send("Page.captureScreenshot", { format: "png" }, page.sessionId);
    const shot = dir.file("admin-status-page.png");
    await sh('base64 -d > "$1"', [shot], data as string);
    const png = await Deno.readFile(shot);
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    await sh('cp "$1" "${TMPDIR:-/tmp}/$2"', [shot, KEPT_SCREENSHOT]);
  } finally {
    await cdp?.close();
    if (chromium !== undefined) await killChromium(chromium);
    await stderr?.done;
    listener?.close();
    await echo;
    admin.close();
    await server.shutdown();
    await dp[Symbol.asyncDispose]();
    await removeDir(dir);
  }
});
