/**
 * Helpers for the WebSocket tests: an in-process discover point served over
 * HTTP (`Deno.serve` + `httpHandler`), with or without a TCP link port; a raw
 * WebSocket peer that reads the discover point's messages line by line; an
 * echoing indirect server; a raw HTTP request; and `deno serve deploy.ts` as a
 * subprocess.
 * @module
 */

import { fileURLToPath } from "node:url";
import { DiscoverPoint, type IndirectConn, type IndirectListener } from "../mod.ts";
import { readExactly } from "./_helpers.ts";
import { Program, within } from "./_programs.ts";

/** A discover point whose links come as WebSocket upgrades of `/rtcp` (and maybe over TCP). */
export interface HttpDiscoverPoint extends AsyncDisposable {
  /** The DiscoverPoint instance. */
  readonly dp: DiscoverPoint;
  /** `ws://127.0.0.1:PORT/rtcp`. */
  readonly url: string;
  /** The HTTP port. */
  readonly httpPort: number;
  /** `"127.0.0.1:PORT"` of the TCP link port; `undefined` for a DP with `port: null`. */
  readonly tcp: string | undefined;
  /** What `listen()`/`connect()` take as `dp` for the same DP: the WebSocket URL (same as url). */
  readonly address: string;
  /** The HTTP port (what `RunningDiscoverPoint` calls port). */
  readonly port: number;
}

/** Options of a discover point, as its constructor takes them. */
export type DpOptions = Omit<
  NonNullable<ConstructorParameters<typeof DiscoverPoint>[0]>,
  "hostname" | "port"
>;

/**
 * Starts a discover point on 127.0.0.1 whose `httpHandler()` is served by
 * `Deno.serve` on port 0; with `tcp`, it also has a TCP link port.
 */
export async function startHttpDiscoverPoint(
  options: DpOptions & { tcp?: boolean } = {},
): Promise<HttpDiscoverPoint> {
  const { tcp = false, ...rest } = options;
  const dp = new DiscoverPoint({ hostname: "127.0.0.1", port: tcp ? 0 : null, ...rest });
  await dp.start();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, dp.httpHandler());
  const httpPort = server.addr.port;
  const url = `ws://127.0.0.1:${httpPort}/rtcp`;
  return {
    dp,
    url,
    httpPort,
    address: url,
    port: httpPort,
    tcp: tcp ? `127.0.0.1:${dp.addr.port}` : undefined,
    async [Symbol.asyncDispose]() {
      await dp.close();
      await server.shutdown();
    },
  };
}

/**
 * Echoes every session `listener` accepts; resolves once the listener and its
 * sessions are done (close the listener to end it).
 */
export function serveEcho(listener: IndirectListener): Promise<void> {
  const sessions = new Set<Promise<void>>();
  return (async () => {
    try {
      for await (const conn of listener) {
        sessions.add(
          conn.readable.pipeTo(conn.writable).catch(() => {}).finally(() => {
            try {
              conn.close();
            } catch {
              // Closed already.
            }
          }),
        );
      }
    } catch {
      // The registration failed; the test asserts that through ready.
    }
    await Promise.all(sessions);
  })();
}

/**
 * Writes `data` in 64 KiB pieces while reading back as many bytes, then
 * closes the session from this (the client's) side: a session the server
 * ends can lose its tail (see the ignored test at the end of tls_test.ts).
 */
export async function echoOf(conn: IndirectConn, data: Uint8Array): Promise<Uint8Array> {
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  try {
    const [, echoed] = await Promise.all([
      (async () => {
        for (let offset = 0; offset < data.length; offset += 64 * 1024) {
          await writer.write(data.slice(offset, offset + 64 * 1024));
        }
      })(),
      readExactly(reader, data.length),
    ]);
    return echoed;
  } finally {
    writer.releaseLock();
    reader.releaseLock();
    conn.close();
  }
}

/** How a raw WebSocket ended. */
export interface WsClosed {
  code: number;
  reason: string;
  wasClean: boolean;
}

/**
 * A raw WebSocket peer: sends text or binary messages exactly as given and
 * reads what the discover point sends (binary messages of protocol text) as lines.
 */
export class RawWebSocket implements AsyncDisposable {
  /** The socket. */
  readonly ws: WebSocket;
  /** Resolves when the socket closes, however. */
  readonly closed: Promise<WsClosed>;
  /** Resolves when the socket is open; rejects if it fails first. */
  readonly opened: Promise<void>;
  #pending = "";
  readonly #decoder = new TextDecoder();
  #wake: (() => void) | undefined;
  #ended = false;

  /** Opens a WebSocket to `url`. */
  constructor(url: string) {
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    const opened = Promise.withResolvers<void>();
    const closed = Promise.withResolvers<WsClosed>();
    this.opened = opened.promise;
    this.opened.catch(() => {});
    this.closed = closed.promise;
    this.ws.addEventListener("open", () => opened.resolve());
    this.ws.addEventListener("error", () => opened.reject(new Error("the WebSocket failed")));
    this.ws.addEventListener("message", (event) => {
      const data = event.data;
      this.#pending += typeof data === "string"
        ? `[text:${data}]`
        : this.#decoder.decode(new Uint8Array(data as ArrayBuffer), { stream: true });
      this.#signal();
    });
    this.ws.addEventListener("close", (event) => {
      this.#ended = true;
      opened.reject(new Error(`the WebSocket closed (code ${event.code})`));
      closed.resolve({ code: event.code, reason: event.reason, wasClean: event.wasClean });
      this.#signal();
    });
  }

  /** Opens and waits until open. */
  static async open(url: string): Promise<RawWebSocket> {
    const raw = new RawWebSocket(url);
    try {
      await within(raw.opened, "the WebSocket to open");
    } catch (error) {
      await raw[Symbol.asyncDispose]();
      throw error;
    }
    return raw;
  }

  #signal(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Sends one message: a string as a text message, bytes as a binary one. */
  send(data: string | Uint8Array): void {
    this.ws.send(data as string | Uint8Array<ArrayBuffer>);
  }

  /** Sends `text` as one binary message. */
  sendBinaryText(text: string): void {
    this.ws.send(new TextEncoder().encode(text));
  }

  /** The next line, or `null` once the socket has closed with nothing more. */
  async nextLine(): Promise<string | null> {
    for (;;) {
      const newline = this.#pending.indexOf("\n");
      if (newline >= 0) {
        const line = this.#pending.slice(0, newline);
        this.#pending = this.#pending.slice(newline + 1);
        return line;
      }
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  /** The next message (type line and JSON body line), or `null` at the end. */
  async next(): Promise<{ type: number; body: Record<string, unknown> } | null> {
    const type = await this.nextLine();
    if (type === null) return null;
    const body = await this.nextLine();
    if (body === null) throw new Error(`The link ended after type line ${type}`);
    return { type: Number(type), body: JSON.parse(body) };
  }

  /** Closes (if open) and waits for the close event. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.ws.readyState !== WebSocket.CLOSED) {
      try {
        this.ws.close();
      } catch {
        // Closing already.
      }
    }
    await within(this.closed, "the raw WebSocket to close");
  }
}

/** Sends one HTTP/1.1 request over a raw TCP connection and returns the status line and headers. */
export async function rawHttpRequest(port: number, request: string): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const bytes = new TextEncoder().encode(request);
  for (let written = 0; written < bytes.length;) {
    written += await conn.write(bytes.subarray(written));
  }
  const buffer = new Uint8Array(16 * 1024);
  let text = "";
  while (!text.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) break;
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return text.slice(0, text.indexOf("\r\n\r\n") + 1 || undefined);
}

/** The absolute path of `deploy.ts`. */
export const DEPLOY_PATH: string = fileURLToPath(new URL("../deploy.ts", import.meta.url));

/** `deno serve deploy.ts` on 127.0.0.1, port 0, with `env` added to its environment. */
export class DeployProgram extends Program {
  /** Spawns it, with `permissions` added to `--allow-net --allow-env`. */
  constructor(env: Record<string, string>, permissions: readonly string[] = []) {
    super(
      DEPLOY_PATH,
      [],
      ["--allow-net", "--allow-env", ...permissions, "--host", "127.0.0.1", "--port", "0"],
      { subcommand: "serve", env: { NO_COLOR: "1", ...env } },
    );
  }

  /** The port from `deno serve: Listening on http://127.0.0.1:PORT/` (on stderr). */
  async port(): Promise<number> {
    const listening = /Listening on http:\/\/127\.0\.0\.1:(\d+)\//;
    try {
      const match = await within(
        Promise.any([this.stderr.waitFor(listening), this.stdout.waitFor(listening)]),
        "deno serve to listen",
      );
      return Number(match[1]);
    } catch (error) {
      throw new Error(
        `${(error as Error).message}; stderr:\n${this.stderr.text}\nstdout:\n${this.stdout.text}`,
      );
    }
  }
}
