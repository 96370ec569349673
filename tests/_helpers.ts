/**
 * Test helpers: discover points in-process and as a subprocess, byte helpers,
 * a "nothing arrives" check, and a raw protocol peer that speaks text lines.
 * @module
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { DiscoverPoint, type IndirectConn } from "../mod.ts";

/** A running discover point and its address as `"127.0.0.1:<port>"`. */
export interface RunningDiscoverPoint extends AsyncDisposable {
  /** `"127.0.0.1:<port>"`. */
  readonly address: string;
  /** The port it listens on. */
  readonly port: number;
}

/** An in-process discover point. */
export interface InProcessDiscoverPoint extends RunningDiscoverPoint {
  /** The DiscoverPoint instance. */
  readonly dp: DiscoverPoint;
}

/** Starts an in-process discover point on 127.0.0.1, port 0. */
export async function startDiscoverPoint(
  options: Omit<NonNullable<ConstructorParameters<typeof DiscoverPoint>[0]>, "hostname" | "port"> =
    {},
): Promise<InProcessDiscoverPoint> {
  const dp = new DiscoverPoint({ hostname: "127.0.0.1", port: 0, ...options });
  await dp.start();
  const port = dp.addr.port;
  return {
    dp,
    port,
    address: `127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      await dp.close();
    },
  };
}

/** The absolute path of `dp.ts`. */
export const DP_PATH: string = fileURLToPath(new URL("../dp.ts", import.meta.url));

/** A discover point running as a subprocess. */
export interface SpawnedDiscoverPoint extends RunningDiscoverPoint {
  /** The child process. */
  readonly child: Deno.ChildProcess;
  /** Stdout lines printed up to and including the `Listening on` line. */
  readonly lines: readonly string[];
  /** Everything the process wrote to stderr, once it has exited. */
  readonly stderr: Promise<string>;
  /** Sends SIGTERM (if still running) and resolves with the exit status. */
  stop(): Promise<Deno.CommandStatus>;
}

async function collectText(readable: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  for await (const chunk of readable.pipeThrough(new TextDecoderStream())) text += chunk;
  return text;
}

/**
 * Spawns `dp.ts --hostname 127.0.0.1 --port 0 ...args` and waits for its
 * `Listening on 127.0.0.1:<port>` line. Dispose kills it and awaits its exit.
 */
export async function spawnDiscoverPoint(args: string[] = []): Promise<SpawnedDiscoverPoint> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", DP_PATH, "--hostname", "127.0.0.1", "--port", "0", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = collectText(child.stderr);
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const lines: string[] = [];
  let pending = "";
  let port: number | undefined;
  while (port === undefined) {
    const { value, done } = await reader.read();
    if (done) {
      const status = await child.status;
      throw new Error(
        `Cannot start dp.ts: it exited with code ${status.code} before listening: ${await stderr}`,
      );
    }
    pending += value;
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0 && port === undefined) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      lines.push(line);
      const match = /^Listening on 127\.0\.0\.1:(\d+)$/.exec(line);
      if (match) port = Number(match[1]);
    }
  }
  // Keep draining stdout so the child never blocks on a full pipe.
  const drained = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  let stopped: Promise<Deno.CommandStatus> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // It has already exited; its status says how.
      }
      const status = await child.status;
      await drained;
      await stderr;
      return status;
    })();
    return stopped;
  };
  return {
    child,
    lines,
    port,
    address: `127.0.0.1:${port}`,
    stderr,
    stop,
    async [Symbol.asyncDispose]() {
      await stop();
    },
  };
}

/** Reads a byte stream to its end and joins the chunks. */
export async function readAll(readable: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of readable) chunks.push(chunk);
  return concatBytes(chunks);
}

/** Reads exactly `length` bytes from a reader (fewer only if the stream ends first). */
export async function readExactly(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  length: number,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let have = 0;
  while (have < length) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    have += value.length;
  }
  return concatBytes(chunks);
}

/** Joins byte arrays. */
export function concatBytes(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** `n` random bytes (crypto.getRandomValues fills at most 64 KiB per call). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let offset = 0; offset < n; offset += 65536) {
    crypto.getRandomValues(out.subarray(offset, Math.min(n, offset + 65536)));
  }
  return out;
}

/** Writes `bytes` in pieces of at most `piece` bytes, then closes the writable. */
export async function writeAll(
  writable: WritableStream<Uint8Array>,
  bytes: Uint8Array,
  piece = 16 * 1024,
): Promise<void> {
  const writer = writable.getWriter();
  for (let offset = 0; offset < bytes.length; offset += piece) {
    await writer.write(bytes.slice(offset, offset + piece));
  }
  await writer.close();
}

/**
 * Shows that `promise` has not settled after a short while. This is the one
 * place a timer appears: it only ever proves absence, never orders events.
 * The caller still owns `promise` and must let it settle before the test ends.
 */
export async function assertNothingArrives(promise: Promise<unknown>, ms = 100): Promise<void> {
  const pending = Symbol("pending");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<typeof pending>((resolve) => {
    timer = setTimeout(() => resolve(pending), ms);
  });
  try {
    const winner = await Promise.race([promise.then((value) => ({ value })), timeout]);
    if (winner !== pending) {
      throw new Error(`Expected nothing to arrive, got ${Deno.inspect(winner.value)}`);
    }
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves as `promise` does, but rejects if it has not settled within `ms`.
 * Not a timing assertion: a generous guard so a missing event fails the test
 * with `what` instead of hanging it.
 */
export async function settlesWithin<T>(promise: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** An address where nothing listens: a port that was bound and then released. */
export function unusedAddress(): string {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return `127.0.0.1:${port}`;
}

/** Splits `"host:port"`. */
export function splitAddress(address: string): { hostname: string; port: number } {
  const colon = address.lastIndexOf(":");
  return { hostname: address.slice(0, colon), port: Number(address.slice(colon + 1)) };
}

/** One message as read by {@linkcode RawPeer}: the type number and the parsed JSON body. */
export interface RawMessage {
  type: number;
  // deno-lint-ignore no-explicit-any -- wire tests look at arbitrary, possibly wrong, bodies
  body: any;
}

/**
 * What both hand-driven protocol peers share: writing bytes exactly as given,
 * reading messages of their own kind `M`, and closing.
 */
export abstract class PeerBase<M> implements Disposable {
  /** The connection. */
  readonly conn: Deno.TcpConn;
  #closed = false;

  /** Wraps `conn`; hand-written messages are small, so Nagle's algorithm is off. */
  protected constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    conn.setNoDelay(true);
  }

  /** Whether {@linkcode close} was called: a read failing after it is expected. */
  protected get closed(): boolean {
    return this.#closed;
  }

  /** Writes all of `data` (text as UTF-8). */
  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    for (let written = 0; written < bytes.length;) {
      written += await this.conn.write(bytes.subarray(written));
    }
  }

  /** Sends one text message: its type line and its JSON body line. */
  sendMessage(type: number, body: unknown): Promise<void> {
    return this.send(`${type}\n${JSON.stringify(body)}\n`);
  }

  /** The next message, or `null` at EOF. */
  abstract next(): Promise<M | null>;

  /** The next message; throws at EOF. */
  async expect(): Promise<M> {
    const message = await this.next();
    if (message === null) throw new Error("Expected a message, the link ended");
    return message;
  }

  /** Reads to EOF and returns the messages that arrived on the way. */
  async untilEnd(): Promise<M[]> {
    const messages: M[] = [];
    for (let message = await this.next(); message !== null; message = await this.next()) {
      messages.push(message);
    }
    return messages;
  }

  /** Closes the connection (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.conn.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * A hand-driven protocol peer: writes text exactly as given and reads lines
 * back, so wire tests see the bytes of PROTOCOL.md and nothing else.
 */
export class RawPeer extends PeerBase<RawMessage> {
  readonly #buffer = new Uint8Array(64 * 1024);
  readonly #decoder = new TextDecoder();
  #pending = "";
  #eof = false;

  private constructor(conn: Deno.TcpConn) {
    super(conn);
  }

  /** Connects to `address` (`"host:port"`). */
  static async connect(address: string): Promise<RawPeer> {
    return new RawPeer(await Deno.connect(splitAddress(address)));
  }

  /** Wraps an accepted connection. */
  static from(conn: Deno.TcpConn): RawPeer {
    return new RawPeer(conn);
  }

  /** The next line without its `\n`, or `null` at EOF (a reset counts as EOF). */
  async nextLine(): Promise<string | null> {
    for (;;) {
      const newline = this.#pending.indexOf("\n");
      if (newline >= 0) {
        const line = this.#pending.slice(0, newline);
        this.#pending = this.#pending.slice(newline + 1);
        return line;
      }
      if (this.#eof) return null;
      let count: number | null;
      try {
        count = await this.conn.read(this.#buffer);
      } catch (error) {
        // A reset is how a peer may end a link; after our own close(), a pending read fails.
        if (!(error instanceof Deno.errors.ConnectionReset) && !this.closed) throw error;
        count = null;
      }
      if (count === null) {
        this.#eof = true;
        this.#pending += this.#decoder.decode();
        continue;
      }
      this.#pending += this.#decoder.decode(this.#buffer.subarray(0, count), { stream: true });
    }
  }

  /** The next message, or `null` at EOF. Throws if EOF cuts a message in half. */
  override async next(): Promise<RawMessage | null> {
    const typeLine = await this.nextLine();
    if (typeLine === null) return null;
    const bodyLine = await this.nextLine();
    if (bodyLine === null) {
      throw new Error(`Link ended after type line ${JSON.stringify(typeLine)}`);
    }
    assertDigits(typeLine);
    return { type: Number(typeLine), body: JSON.parse(bodyLine) };
  }
}

function assertDigits(line: string): void {
  if (!/^\d+$/.test(line)) throw new Error(`Expected a type line, got ${JSON.stringify(line)}`);
}

/** Options of {@linkcode FakeDiscoverPoint}. */
export interface FakeDiscoverPointOptions {
  /** Keep each link open after the reply, reading until the peer closes it. @default {false} */
  hold?: boolean;
}

/**
 * A fake discover point on a raw `Deno.listen`: every link it accepts gets
 * `reply` written after the first two lines arrive, then is closed (or, with
 * `hold`, read until the peer closes it).
 */
export class FakeDiscoverPoint implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #reply: string;
  readonly #links = new Set<Promise<void>>();
  readonly #loop: Promise<void>;
  readonly #hold: boolean;
  readonly #connected = Promise.withResolvers<void>();
  /** Lines each link sent, in arrival order. */
  readonly received: string[][] = [];

  /** Starts listening on 127.0.0.1, port 0. */
  constructor(reply: string, options: FakeDiscoverPointOptions = {}) {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#reply = reply;
    this.#hold = options.hold ?? false;
    this.#loop = this.#acceptAll();
  }

  /** `"127.0.0.1:<port>"`. */
  get address(): string {
    return `127.0.0.1:${this.#listener.addr.port}`;
  }

  async #acceptAll(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        const link = this.#serve(conn);
        this.#links.add(link);
        void link.finally(() => this.#links.delete(link));
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.BadResource)) throw error;
    }
  }

  async #serve(conn: Deno.TcpConn): Promise<void> {
    using peer = RawPeer.from(conn);
    const lines: string[] = [];
    this.received.push(lines);
    for (let i = 0; i < 2; i++) {
      const line = await peer.nextLine();
      if (line === null) return;
      lines.push(line);
    }
    try {
      await peer.send(this.#reply);
    } catch {
      // The client may already have gone; the test looks at what it saw.
      return;
    }
    if (!this.#hold) return;
    for (let line = await peer.nextLine(); line !== null; line = await peer.nextLine()) {
      lines.push(line);
      if (lines.length === 4) this.#connected.resolve();
    }
  }

  /** Resolves once some link has sent two messages (Aloha and Connect); needs `hold`. */
  get connected(): Promise<void> {
    return this.#connected.promise;
  }

  /** Stops listening and waits for every link to finish. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#loop;
    await Promise.all(this.#links);
  }
}

/** A raw `Deno.listen` whose connections are {@linkcode RawPeer}s: a discover point scripted by the test. */
export class RawListener implements Disposable {
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });

  /** `"127.0.0.1:<port>"`. */
  get address(): string {
    return `127.0.0.1:${this.#listener.addr.port}`;
  }

  /** The next connection. */
  async accept(): Promise<RawPeer> {
    return RawPeer.from(await this.#listener.accept());
  }

  /** Stops listening. */
  [Symbol.dispose](): void {
    this.#listener.close();
  }
}

/** Writes `text` to `conn` and asserts that the same text comes back. */
export async function assertEchoes(conn: IndirectConn, text: string): Promise<void> {
  const data = new TextEncoder().encode(text);
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  try {
    const [, echoed] = await Promise.all([writer.write(data), readExactly(reader, data.length)]);
    assert.equal(new TextDecoder().decode(echoed), text);
  } finally {
    writer.releaseLock();
    reader.releaseLock();
  }
}

/** An indirect server's Aloha for `name`, as hand-written protocol text. */
export const IS_ALOHA = (name: string): string =>
  `0\n{"V":10000,"R":2,"N":${JSON.stringify(name)}}\n`;

/** An indirect client's Aloha for `name`, as hand-written protocol text. */
export const IC_ALOHA = (name: string): string =>
  `0\n{"V":10000,"R":3,"N":${JSON.stringify(name)}}\n`;

/**
 * Waits until `condition()` holds, looking again every few milliseconds; fails
 * with `what` after `ms`. For state with no event to wait on (a pool's size
 * in another component): it orders nothing, it only waits for a fact.
 */
export async function eventually(
  condition: () => boolean | Promise<boolean>,
  what: string,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * A predicate for `assert.rejects`: the error a read gets from a session the
 * discover point cut short (a lost link, a limit), with a reason matching `reason`.
 */
export function cutShort(reason: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof Deno.errors.ConnectionReset, String(error));
    assert.match(error.message, /was cut short: /);
    assert.match(error.message, reason);
    return true;
  };
}

/** Reads `readable` to its end or its error: the bytes that came, and the error if any. */
export async function readUntilEnd(
  readable: ReadableStream<Uint8Array>,
): Promise<{ bytes: Uint8Array; error: unknown }> {
  const chunks: Uint8Array[] = [];
  const reader = readable.getReader();
  try {
    for (let next = await reader.read(); !next.done; next = await reader.read()) {
      chunks.push(next.value);
    }
    return { bytes: concatBytes(chunks), error: undefined };
  } catch (error) {
    return { bytes: concatBytes(chunks), error };
  } finally {
    reader.releaseLock();
  }
}
