/**
 * Helpers for the TLS and security tests: the TLS fixtures, a recording proxy
 * that terminates TLS (so a test can read what travels inside it), programs
 * run as subprocesses with their own permission flags, a TCP echo server, and
 * files and directories made by child processes (the test process itself has
 * no `--allow-write`).
 * @module
 */

import { fileURLToPath } from "node:url";
import { type InProcessDiscoverPoint, splitAddress, startDiscoverPoint } from "./_helpers.ts";

// ---- fixtures -------------------------------------------------------------------

/** The absolute path of a file in `tests/fixtures/`. */
export function fixturePath(name: string): string {
  return fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
}

/** The text of a file in `tests/fixtures/`. */
export function fixture(name: string): Promise<string> {
  return Deno.readTextFile(fixturePath(name));
}

/** A certificate and its key, as `DiscoverPoint`'s `tls` option takes them. */
export interface CertAndKey {
  readonly cert: string;
  readonly key: string;
}

/** `tests/fixtures/<name>.crt` and `<name>.key`. */
export async function certAndKey(name: string): Promise<CertAndKey> {
  const [cert, key] = await Promise.all([fixture(`${name}.crt`), fixture(`${name}.key`)]);
  return { cert, key };
}

/** How a test's peers reach its discover point: plain TCP, or TLS with the fixture CA. */
export type LinkKind = "tcp" | "tls";

/** Both link kinds, for tests that run over each. */
export const LINK_KINDS: readonly LinkKind[] = ["tcp", "tls"];

/** A discover point for one link kind, with what its peers dial and trust. */
export interface DiscoverPointOver extends InProcessDiscoverPoint {
  /** What peers pass as `dp`: `127.0.0.1:PORT`, or `tls://127.0.0.1:PORT`. */
  readonly dialed: string;
  /** What peers spread into `listen()`/`connect()` options: the fixture CA for TLS. */
  readonly trust: { caCerts?: string[] };
}

/** Starts an in-process discover point whose link port speaks `link` (TLS with `dp.crt`). */
export async function startDiscoverPointOver(
  link: LinkKind,
  options: Parameters<typeof startDiscoverPoint>[0] = {},
): Promise<DiscoverPointOver> {
  const tls = link === "tls";
  const running = await startDiscoverPoint(
    tls ? { tls: await certAndKey("dp"), ...options } : options,
  );
  return Object.assign(running, {
    dialed: tls ? `tls://127.0.0.1:${running.port}` : running.address,
    trust: tls ? { caCerts: [await fixture("ca.crt")] } : {},
  });
}

/** SHA-256 of `bytes` as hex. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  // digest() takes only ArrayBuffer-backed views; slice() makes one.
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes.slice()));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** `bytes` as a latin1 string: one character per byte, so byte patterns can be searched. */
export function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let offset = 0; offset < bytes.length; offset += 8192) {
    text += String.fromCharCode(...bytes.subarray(offset, offset + 8192));
  }
  return text;
}

// ---- bounded waits --------------------------------------------------------------

/**
 * Rejects if `promise` has not settled within `ms`. Not a timing assertion: a
 * generous guard so a missing event fails the test with `what` instead of hanging it.
 */
export async function within<T>(promise: Promise<T>, what: string, ms = 20_000): Promise<T> {
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

// ---- a recording proxy that terminates TLS ---------------------------------------

/** One connection through {@linkcode TlsRecordingProxy}: both TLS sockets and the plaintext seen. */
export class TlsRecordedRoute {
  /** Resolves once both directions have ended. */
  readonly done: Promise<void>;
  readonly #downstream: Deno.TlsConn;
  readonly #upstream: Deno.TlsConn;
  readonly #chunks: Record<"up" | "down", Uint8Array[]> = { up: [], down: [] };
  #closed = false;

  constructor(downstream: Deno.TlsConn, upstream: Deno.TlsConn) {
    this.#downstream = downstream;
    this.#upstream = upstream;
    this.done = Promise.all([
      this.#pump(downstream, upstream, "up"),
      this.#pump(upstream, downstream, "down"),
    ]).then(() => this.close());
  }

  /** The plaintext forwarded so far in `direction` ("up": proxy's client to target), as latin1. */
  transcript(direction: "up" | "down"): string {
    return this.#chunks[direction].map(latin1).join("");
  }

  async #pump(from: Deno.TlsConn, to: Deno.TlsConn, direction: "up" | "down"): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (let n = await from.read(buffer); n !== null; n = await from.read(buffer)) {
        this.#chunks[direction].push(buffer.slice(0, n));
        for (let written = 0; written < n;) {
          written += await to.write(buffer.subarray(written, n));
        }
      }
      if (!this.#closed) await to.closeWrite();
    } catch {
      // A reset, or our own close: the route ends.
      this.close();
    }
  }

  /** Closes both sockets (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const conn of [this.#downstream, this.#upstream]) {
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }
  }
}

/**
 * A man in the middle the test controls: accepts TLS with `serve`'s certificate,
 * dials `target` over TLS trusting `caCerts`, and forwards the plaintext,
 * keeping a transcript of it. It shows what travels inside a TLS link.
 */
export class TlsRecordingProxy implements AsyncDisposable {
  /** Every route established so far, in order. */
  readonly routes: TlsRecordedRoute[] = [];
  readonly #listener: Deno.TlsListener;
  readonly #target: { hostname: string; port: number };
  readonly #caCerts: string[];
  readonly #loop: Promise<void>;
  readonly #dials = new Set<Promise<void>>();

  /** Listens on 127.0.0.1, port 0; `target` is `"host:port"` (its certificate must name `host`). */
  constructor(target: string, serve: CertAndKey, caCerts: string[]) {
    this.#target = splitAddress(target);
    this.#caCerts = caCerts;
    this.#listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...serve });
    this.#loop = this.#acceptAll();
  }

  /** `"127.0.0.1:<port>"`. */
  get address(): string {
    return `127.0.0.1:${this.#listener.addr.port}`;
  }

  async #acceptAll(): Promise<void> {
    for (;;) {
      let conn: Deno.TlsConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // Closed.
      }
      const dial = this.#dial(conn);
      this.#dials.add(dial);
      void dial.finally(() => this.#dials.delete(dial));
    }
  }

  async #dial(downstream: Deno.TlsConn): Promise<void> {
    let upstream: Deno.TlsConn;
    try {
      upstream = await Deno.connectTls({ ...this.#target, caCerts: this.#caCerts });
    } catch {
      downstream.close();
      return;
    }
    this.routes.push(new TlsRecordedRoute(downstream, upstream));
  }

  /** Stops listening, closes every route and waits for them to end. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#loop;
    while (this.#dials.size > 0) await Promise.all([...this.#dials]);
    for (const route of this.routes) route.close();
    await Promise.all(this.routes.map((route) => route.done));
  }
}

// ---- programs as subprocesses ----------------------------------------------------

/** The absolute path of `cli.ts`. */
export const CLI_PATH: string = fileURLToPath(new URL("../cli.ts", import.meta.url));
/** The absolute path of `dp.ts`. */
export const DP_PATH: string = fileURLToPath(new URL("../dp.ts", import.meta.url));

interface LineWaiter {
  regex: RegExp;
  resolve(match: RegExpExecArray): void;
  reject(error: Error): void;
}

/** The lines of a child's output, read as they come, with waits for a matching line. */
export class Lines {
  /** Every line so far. */
  readonly lines: string[] = [];
  /** Resolves once the output has ended. */
  readonly done: Promise<void>;
  readonly #waiters = new Set<LineWaiter>();
  #ended = false;

  constructor(readable: ReadableStream<Uint8Array>) {
    this.done = this.#pump(readable);
  }

  async #pump(readable: ReadableStream<Uint8Array>): Promise<void> {
    let pending = "";
    for await (const text of readable.pipeThrough(new TextDecoderStream())) {
      pending += text;
      for (let newline = pending.indexOf("\n"); newline >= 0; newline = pending.indexOf("\n")) {
        this.#push(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
      }
    }
    if (pending) this.#push(pending);
    this.#ended = true;
    for (const waiter of this.#waiters) {
      waiter.reject(new Error(`Output ended before a line matched ${waiter.regex}`));
    }
    this.#waiters.clear();
  }

  #push(line: string): void {
    this.lines.push(line);
    for (const waiter of this.#waiters) {
      const match = waiter.regex.exec(line);
      if (match) {
        this.#waiters.delete(waiter);
        waiter.resolve(match);
      }
    }
  }

  /** Resolves with the first line that matches `regex`, once it is printed. */
  waitFor(regex: RegExp): Promise<RegExpExecArray> {
    for (const line of this.lines) {
      const match = regex.exec(line);
      if (match) return Promise.resolve(match);
    }
    if (this.#ended) {
      return Promise.reject(new Error(`Output ended before a line matched ${regex}`));
    }
    const { promise, resolve, reject } = Promise.withResolvers<RegExpExecArray>();
    this.#waiters.add({ regex, resolve, reject });
    return promise;
  }

  /** Every line, joined with newlines. */
  get text(): string {
    return this.lines.join("\n");
  }
}

/** A `deno run <permissions> script ...args` subprocess whose output is read line by line. */
export class Program implements AsyncDisposable {
  /** The child process. */
  readonly child: Deno.ChildProcess;
  /** Its standard output. */
  readonly stdout: Lines;
  /** Its standard error. */
  readonly stderr: Lines;
  #stopped: Promise<Deno.CommandStatus> | undefined;

  /** Spawns it; `permissions` are the `deno run` flags (`--allow-net` by default). */
  constructor(script: string, args: string[], permissions: string[] = ["--allow-net"]) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...permissions, script, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.stdout = new Lines(this.child.stdout);
    this.stderr = new Lines(this.child.stderr);
  }

  /** The first stdout line matching `regex`; fails with the program's stderr if it never comes. */
  async printed(regex: RegExp): Promise<RegExpExecArray> {
    try {
      return await within(this.stdout.waitFor(regex), `stdout line ${regex}`);
    } catch (error) {
      throw new Error(`${(error as Error).message}; stderr:\n${this.stderr.text}`);
    }
  }

  /** The first stderr line matching `regex`. */
  logged(regex: RegExp): Promise<RegExpExecArray> {
    return within(this.stderr.waitFor(regex), `stderr line ${regex}`);
  }

  /** Waits for it to exit by itself (bounded) and for the end of its output. */
  async exited(): Promise<Deno.CommandStatus> {
    const status = await within(this.child.status, "the program to exit");
    await Promise.all([this.stdout.done, this.stderr.done]);
    return status;
  }

  /** Sends SIGTERM (if still running), waits for the exit and the end of its output. */
  stop(): Promise<Deno.CommandStatus> {
    this.#stopped ??= (async () => {
      try {
        this.child.kill("SIGTERM");
      } catch {
        // It has already exited; its status says how.
      }
      const status = await this.child.status;
      await Promise.all([this.stdout.done, this.stderr.done]);
      return status;
    })();
    return this.#stopped;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** What a finished program printed. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno run <permissions> script ...args` to its end. */
export async function runScript(
  script: string,
  args: string[],
  permissions: string[] = ["--allow-net"],
): Promise<Output> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissions, script, ...args],
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

// ---- files, through child processes ----------------------------------------------

/** Runs a system command to its end; throws with its stderr if it fails. */
async function system(command: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  if (!output.success) {
    throw new Error(
      `Cannot run ${command} ${args.join(" ")}: exit ${output.code}: ${
        decoder.decode(output.stderr)
      }`,
    );
  }
  return decoder.decode(output.stdout);
}

/** A temporary directory made by `mktemp -d`; dispose removes it with `rm -rf`. */
export interface TempDir extends AsyncDisposable {
  /** Its absolute path. */
  readonly path: string;
  /** The path of `name` inside it. */
  file(name: string): string;
  /** Writes `text` to `name` inside it (through `sh`), and returns the file's path. */
  write(name: string, text: string): Promise<string>;
}

/** Makes a temporary directory through a child process. */
export async function makeTempDir(): Promise<TempDir> {
  const path = (await system("mktemp", ["-d"])).trim();
  if (!path.startsWith("/")) throw new Error(`Cannot use mktemp's answer ${JSON.stringify(path)}`);
  const file = (name: string) => `${path}/${name}`;
  return {
    path,
    file,
    async write(name: string, text: string): Promise<string> {
      await system("sh", ["-c", 'cat > "$1"', "sh", file(name)], text);
      return file(name);
    },
    async [Symbol.asyncDispose]() {
      await system("rm", ["-rf", path]);
    },
  };
}

// ---- a TCP echo server -----------------------------------------------------------

/** A TCP echo server on 127.0.0.1: echoes until EOF, then half-closes. */
export class EchoServer implements AsyncDisposable {
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #conns = new Set<Deno.TcpConn>();
  readonly #handlers = new Set<Promise<void>>();
  readonly #loop: Promise<void>;

  constructor() {
    this.#loop = this.#acceptAll();
  }

  /** `"127.0.0.1:<port>"`. */
  get address(): string {
    return `127.0.0.1:${this.#listener.addr.port}`;
  }

  async #acceptAll(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        this.#conns.add(conn);
        const handler = this.#echo(conn).finally(() => {
          this.#conns.delete(conn);
          this.#handlers.delete(handler);
        });
        this.#handlers.add(handler);
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.BadResource)) throw error;
    }
  }

  async #echo(conn: Deno.TcpConn): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
        for (let written = 0; written < n;) {
          written += await conn.write(buffer.subarray(written, n));
        }
      }
      await conn.closeWrite();
    } catch {
      // The tunnel may end the connection abruptly.
    } finally {
      try {
        conn.close();
      } catch {
        // Closed by dispose.
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#loop;
    for (const conn of this.#conns) conn.close();
    await Promise.all(this.#handlers);
  }
}

/** Writes all of `bytes` to a TCP connection. */
export async function writeAllTo(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.length;) {
    offset += await conn.write(bytes.subarray(offset, offset + 100_000));
  }
}

/** Reads a connection until EOF; a reset counts as the end too when `resetIsEnd`. */
export async function readAllFrom(conn: Deno.Conn, resetIsEnd = false): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
      chunks.push(buffer.slice(0, n));
    }
  } catch (error) {
    if (!resetIsEnd || !(error instanceof Deno.errors.ConnectionReset)) throw error;
  }
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Reads exactly `length` bytes from a connection (fewer only if it ends first). */
export async function readExactlyFrom(conn: Deno.Conn, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let have = 0;
  while (have < length) {
    const n = await conn.read(out.subarray(have));
    if (n === null) break;
    have += n;
  }
  return out.subarray(0, have);
}
