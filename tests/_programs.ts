/**
 * Helpers for tests that run `dp.ts` and `cli.ts` as subprocesses: programs
 * whose output is read line by line, bounded waits, a TCP echo server,
 * temporary files made by child processes (the test process has no
 * `--allow-write`), and plain TCP read/write helpers.
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { concatBytes, settlesWithin } from "./_helpers.ts";

// ---- bounded waits --------------------------------------------------------------

/** {@linkcode settlesWithin}, with the longer guard that starting a program needs. */
export function within<T>(promise: Promise<T>, what: string, ms = 20_000): Promise<T> {
  return settlesWithin(promise, what, ms);
}

// ---- programs as subprocesses ----------------------------------------------------

/** The absolute path of `cli.ts`. */
export const CLI_PATH: string = fileURLToPath(new URL("../cli.ts", import.meta.url));
/** The absolute path of `dp.ts`. */
export const DP_PATH: string = fileURLToPath(new URL("../dp.ts", import.meta.url));

interface LineWaiter {
  regex: RegExp;
  nth: number;
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

  /** Starts reading `readable`. */
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
    for (const waiter of this.#waiters) this.#check(waiter);
  }

  #check(waiter: LineWaiter): void {
    let seen = 0;
    for (const line of this.lines) {
      const match = waiter.regex.exec(line);
      if (match && ++seen === waiter.nth) {
        this.#waiters.delete(waiter);
        waiter.resolve(match);
        return;
      }
    }
  }

  /** Resolves with the `nth` line (counting from 1) that matches `regex`, once it is printed. */
  waitFor(regex: RegExp, nth = 1): Promise<RegExpExecArray> {
    const { promise, resolve, reject } = Promise.withResolvers<RegExpExecArray>();
    const waiter = { regex, nth, resolve, reject };
    this.#waiters.add(waiter);
    this.#check(waiter);
    if (this.#ended && this.#waiters.delete(waiter)) {
      reject(new Error(`Output ended before a line matched ${regex}`));
    }
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

  /**
   * Spawns it; `permissions` are the flags before the script (`--allow-net` by
   * default); `how` picks `deno serve` instead of `deno run`, and adds to the environment.
   */
  constructor(
    script: string,
    args: string[],
    permissions: string[] = ["--allow-net"],
    how: { subcommand?: "run" | "serve"; env?: Record<string, string> } = {},
  ) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: [how.subcommand ?? "run", ...permissions, script, ...args],
      ...(how.env ? { env: how.env } : {}),
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

  /** The `nth` stderr line matching `regex`. */
  logged(regex: RegExp, nth = 1): Promise<RegExpExecArray> {
    return within(this.stderr.waitFor(regex, nth), `stderr line ${regex}`);
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

/**
 * Spawns `dp.ts` on 127.0.0.1 (port 0 unless given) and waits for its
 * `Listening on` line; `permissions` are added to `--allow-net`.
 */
export async function spawnDp(
  args: string[] = [],
  { port = 0, permissions = [] }: { port?: number; permissions?: string[] } = {},
): Promise<Program & { address: string; port: number }> {
  const dp = new Program(
    DP_PATH,
    ["--hostname", "127.0.0.1", "--port", String(port), ...args],
    ["--allow-net", ...permissions],
  );
  try {
    const [, address, port] = await dp.printed(/^Listening on (127\.0\.0\.1:(\d+))$/);
    return Object.assign(dp, { address: address!, port: Number(port) });
  } catch (error) {
    await dp.stop();
    throw error;
  }
}

/** `--log-level debug` unless `extra` sets a level: the forwarders log a line per session at debug. */
function sessionLines(extra: readonly string[]): string[] {
  return extra.includes("--log-level") ? [] : ["--log-level", "debug"];
}

/** Spawns `cli.ts expose` and waits for its `Exposing` line. */
export async function spawnExpose(
  dp: string,
  name: string,
  to: string,
  extra: string[] = [],
  permissions: string[] = [],
): Promise<Program> {
  const expose = new Program(
    CLI_PATH,
    ["expose", "--dp", dp, "--name", name, "--to", to, ...sessionLines(extra), ...extra],
    ["--allow-net", ...permissions],
  );
  try {
    const [line] = await expose.printed(/^Exposing .*$/);
    assert.equal(line, `Exposing "${name}" at ${dp} to ${to}`);
    return expose;
  } catch (error) {
    await expose.stop();
    throw error;
  }
}

/** Spawns `cli.ts connect` on 127.0.0.1, port 0, and waits for its `Listening on` line. */
export async function spawnConnect(
  dp: string,
  name: string,
  extra: string[] = [],
  permissions: string[] = [],
): Promise<Program & { port: number }> {
  const program = new Program(
    CLI_PATH,
    [
      "connect",
      "--dp",
      dp,
      "--name",
      name,
      "--listen",
      "127.0.0.1:0",
      ...sessionLines(extra),
      ...extra,
    ],
    ["--allow-net", ...permissions],
  );
  try {
    const [, port] = await program.printed(/^Listening on 127\.0\.0\.1:(\d+)$/);
    return Object.assign(program, { port: Number(port) });
  } catch (error) {
    await program.stop();
    throw error;
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

// ---- TCP servers in the test process ---------------------------------------------

/** Closes `conn`, unless it is closed already. */
export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}

/**
 * A TCP server on 127.0.0.1, port 0, for tests: it hands each connection to
 * {@linkcode LoopbackServer.serve}, and on dispose stops accepting, closes
 * every connection still open (those it accepted and those `serve` tracked)
 * and waits for every handler.
 */
export abstract class LoopbackServer implements AsyncDisposable {
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #conns = new Set<Deno.Conn>();
  readonly #handlers = new Set<Promise<void>>();
  readonly #loop: Promise<void> = this.#acceptAll();

  /** The port it listens on. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** `"127.0.0.1:<port>"`. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Handles one accepted connection; it is closed when this resolves. */
  protected abstract serve(conn: Deno.TcpConn): Promise<void>;

  /** Makes dispose close `conn` too (a connection `serve` opened), until `serve` ends. */
  protected track(conn: Deno.Conn): void {
    this.#conns.add(conn);
  }

  async #acceptAll(): Promise<void> {
    // Not before the subclass's fields are set: the first connection comes after a turn.
    await Promise.resolve();
    try {
      for await (const conn of this.#listener) {
        this.#conns.add(conn);
        const handler = this.serve(conn).catch(() => {
          // A test cut the connection, or disposed of the server under it.
        }).finally(() => {
          closeQuietly(conn);
          this.#conns.delete(conn);
          this.#handlers.delete(handler);
        });
        this.#handlers.add(handler);
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.BadResource)) throw error;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#loop;
    for (const conn of this.#conns) closeQuietly(conn);
    await Promise.all(this.#handlers);
  }
}

/** A TCP echo server on 127.0.0.1: echoes until EOF, then half-closes. */
export class EchoServer extends LoopbackServer {
  protected override async serve(conn: Deno.TcpConn): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
      for (let written = 0; written < n;) {
        written += await conn.write(buffer.subarray(written, n));
      }
    }
    await conn.closeWrite();
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
  return concatBytes(chunks);
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
