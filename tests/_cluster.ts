/**
 * Helpers for the cluster tests that run real processes: `dp.ts` members that
 * share a Deno KV registry file, a multi-homed `cli.ts expose`, a hard kill,
 * `deno serve deploy.ts` instances on a shared KV file, a round-robin TCP
 * balancer (Deno Deploy's router: instances that cannot be addressed), a
 * black-hole TCP listener, registry entries written by a child process, and
 * echo sessions whose outcome is classified rather than thrown.
 * @module
 */

import type { IndirectConn } from "../mod.ts";
import { randomBytes } from "./_helpers.ts";
import { CLI_PATH, closeQuietly, LoopbackServer, Program, spawnDp } from "./_programs.ts";
import { DeployProgram } from "./_ws.ts";

// ---- processes ------------------------------------------------------------------

/** A `dp.ts` member of a cluster, as {@linkcode spawnMember} returns it. */
export type Member = Program & { address: string; port: number };

/** Options of {@linkcode spawnMember}. */
export interface MemberOptions {
  /** The port to listen on (0 picks one); a restarted member passes its old one. */
  port?: number;
  /** `--registry-ttl` in ms; the DP's default (10 s) when absent. */
  ttl?: number;
  /** More `dp.ts` flags. */
  extra?: string[];
}

/**
 * Spawns `dp.ts --registry kv:FILE --advertise 127.0.0.1:0` (its own port),
 * allowed to read and write only the registry file's directory `dir`.
 */
export function spawnMember(
  dir: string,
  file: string,
  { port = 0, ttl, extra = [] }: MemberOptions = {},
): Promise<Member> {
  return spawnDp(
    [
      "--registry",
      `kv:${file}`,
      "--advertise",
      "127.0.0.1:0",
      ...(ttl === undefined ? [] : ["--registry-ttl", String(ttl)]),
      ...extra,
    ],
    { port, permissions: [`--allow-read=${dir}`, `--allow-write=${dir}`] },
  );
}

/**
 * Sends SIGKILL (no shutdown, no registry cleanup) and waits for the exit and
 * the end of the output. Disposing the program afterwards does nothing more.
 */
export async function killHard(program: Program): Promise<Deno.CommandStatus> {
  try {
    program.child.kill("SIGKILL");
  } catch {
    // It has already exited.
  }
  return await program.stop();
}

/**
 * Sends SIGTERM and waits up to `graceMs` for the exit; a program still
 * running then gets SIGKILL. Says which signal ended it.
 */
export async function stopOrKill(
  program: Program,
  graceMs = 5000,
): Promise<{ by: "SIGTERM" | "SIGKILL"; status: Deno.CommandStatus }> {
  try {
    program.child.kill("SIGTERM");
  } catch {
    // It has already exited.
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const grace = new Promise<"grace">((resolve) =>
    timer = setTimeout(() => resolve("grace"), graceMs)
  );
  try {
    const first = await Promise.race([program.child.status, grace]);
    if (first !== "grace") return { by: "SIGTERM", status: await program.stop() };
  } finally {
    clearTimeout(timer);
  }
  return { by: "SIGKILL", status: await killHard(program) };
}

/**
 * Spawns `cli.ts expose` with one `--dp` per discover point (a pool at each)
 * and waits for its `Exposing` line, which comes once a first DP took the name.
 */
export async function spawnMultiExpose(
  dps: readonly string[],
  name: string,
  to: string,
  extra: string[] = [],
): Promise<Program> {
  const expose = new Program(
    CLI_PATH,
    ["expose", ...dps.flatMap((dp) => ["--dp", dp]), "--name", name, "--to", to, ...extra],
    ["--allow-net"],
  );
  try {
    await expose.printed(/^Exposing .*$/);
    return expose;
  } catch (error) {
    await expose.stop();
    throw error;
  }
}

/** Matches the listener's log line `Registered "NAME" at "DP"`. */
export function registeredLine(name: string, dp: string): RegExp {
  const quote = (text: string) => JSON.stringify(text).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`Registered ${quote(name)} at ${quote(dp)}`);
}

/** How many lines so far match `regex`. */
export function countLines(program: Program, regex: RegExp): number {
  return program.stderr.lines.filter((line) => regex.test(line)).length;
}

/** `deno serve deploy.ts` that may read and write `dir` (a KV file there is its registry). */
export function kvDeployProgram(dir: string, env: Record<string, string>): DeployProgram {
  return new DeployProgram(env, [`--allow-read=${dir}`, `--allow-write=${dir}`]);
}

/** A holder entry for {@linkcode writeHolders}: `["rtcp", "holds", name, instance]`. */
export interface FakeHolder {
  name: string;
  instance: string;
  address: string;
  /** Milliseconds it stays listed. */
  ttl: number;
}

/**
 * Writes holder entries into a KV registry file from a child process (the
 * test process cannot write files), in the shape the discover points write.
 */
export async function writeHolders(
  dir: string,
  file: string,
  holders: FakeHolder[],
): Promise<void> {
  const code = `
    const kv = await Deno.openKv(${JSON.stringify(file)});
    for (const { name, instance, address, ttl } of ${JSON.stringify(holders)}) {
      await kv.set(["rtcp", "holds", name, instance], { address, expires: Date.now() + ttl }, {
        expireIn: ttl,
      });
    }
    kv.close();
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--unstable-kv", `--allow-read=${dir}`, `--allow-write=${dir}`, code],
    stdin: "null",
  }).output();
  if (!output.success) {
    throw new Error(`Cannot write registry entries: ${new TextDecoder().decode(output.stderr)}`);
  }
}

// ---- TCP in the test process ------------------------------------------------------

/** Copies `from` to `to` until EOF, then half-closes `to`; on failure, closes both. */
async function copy(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (let n = await from.read(buffer); n !== null; n = await from.read(buffer)) {
      for (let written = 0; written < n;) written += await to.write(buffer.subarray(written, n));
    }
    await to.closeWrite();
  } catch {
    closeQuietly(from);
    closeQuietly(to);
  }
}

/**
 * A round-robin TCP balancer on 127.0.0.1: the n-th accepted connection is
 * piped to target n mod (number of targets). It stands for Deno Deploy's
 * router: a client cannot choose, or even name, the instance it lands on.
 */
export class RoundRobinBalancer extends LoopbackServer {
  readonly #targets: readonly number[];
  /** Connections sent to each target so far. */
  readonly counts: number[];
  #next = 0;

  /** Starts balancing over the ports `targets` (on 127.0.0.1). */
  constructor(targets: readonly number[]) {
    super();
    this.#targets = targets;
    this.counts = targets.map(() => 0);
  }

  protected override async serve(down: Deno.TcpConn): Promise<void> {
    const index = this.#next++ % this.#targets.length;
    this.counts[index]!++;
    const up = await Deno.connect({ hostname: "127.0.0.1", port: this.#targets[index]! });
    this.track(up);
    try {
      down.setNoDelay(true);
      up.setNoDelay(true);
      await Promise.all([copy(down, up), copy(up, down)]);
    } finally {
      closeQuietly(up);
    }
  }
}

/**
 * A TCP listener that accepts connections and never says a word: a discover
 * point that hangs. Its connections stay open until dispose.
 */
export class BlackHole extends LoopbackServer {
  /** Connections accepted so far. */
  accepted = 0;

  /** Reads (and drops) whatever comes, so the peer never blocks on writing. */
  protected override async serve(conn: Deno.TcpConn): Promise<void> {
    this.accepted++;
    const buffer = new Uint8Array(16 * 1024);
    while ((await conn.read(buffer)) !== null) { /* drop */ }
  }
}

// ---- sessions ---------------------------------------------------------------------

/** How one echo session ended. */
export type Outcome =
  /** Every byte came back, in order, then EOF. */
  | { kind: "exact" }
  /** It failed with an error (opening it, writing or reading). */
  | { kind: "error"; error: Error }
  /** EOF came early: what arrived was a correct prefix, and no error was raised. */
  | { kind: "short"; received: number }
  /** Bytes came back that were not sent (or more than were sent). */
  | { kind: "corrupt"; received: number; at: number }
  /** Nothing ended it within the guard; it was closed by the test. */
  | { kind: "hung" };

/** Compares what came back with what was sent. */
function judge(sent: Uint8Array, received: Uint8Array): Outcome {
  const common = Math.min(sent.length, received.length);
  for (let i = 0; i < common; i++) {
    if (sent[i] !== received[i]) return { kind: "corrupt", received: received.length, at: i };
  }
  if (received.length > sent.length) {
    return { kind: "corrupt", received: received.length, at: sent.length };
  }
  if (received.length < sent.length) return { kind: "short", received: received.length };
  return { kind: "exact" };
}

/** Milliseconds after which a session counts as hung: a guard, far above any expected run. */
export const HANG_GUARD_MS = 45_000;

/**
 * Opens a connection with `open` (an indirect session, or TCP to a forwarder),
 * writes `size` random bytes (then half-closes) while reading until EOF, and
 * says how it ended. Never throws; always closes what it opened.
 */
export async function echoSession(open: () => Promise<Deno.Conn>, size: number): Promise<Outcome> {
  const data = randomBytes(size);
  let conn: Deno.Conn;
  try {
    conn = await open();
  } catch (error) {
    return { kind: "error", error: error as Error };
  }
  let hung = false;
  const guard = setTimeout(() => {
    hung = true;
    closeQuietly(conn);
  }, HANG_GUARD_MS);
  try {
    const [written, read] = await Promise.allSettled([
      (async () => {
        for (let offset = 0; offset < data.length;) {
          offset += await conn.write(data.subarray(offset, offset + 64 * 1024));
        }
        await conn.closeWrite();
      })(),
      (async () => {
        const out = new Uint8Array(data.length + 1);
        let length = 0;
        const buffer = new Uint8Array(64 * 1024);
        for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
          if (length + n > out.length) return out.slice(0, out.length); // Too many: corrupt.
          out.set(buffer.subarray(0, n), length);
          length += n;
        }
        return out.slice(0, length);
      })(),
    ]);
    if (hung) return { kind: "hung" };
    if (read.status === "fulfilled") {
      const verdict = judge(data, read.value);
      if (verdict.kind === "corrupt" || written.status === "fulfilled") return verdict;
      return { kind: "error", error: written.reason as Error };
    }
    return { kind: "error", error: read.reason as Error };
  } finally {
    clearTimeout(guard);
    closeQuietly(conn);
  }
}

/** How a {@linkcode heldEchoSession} ended, and how its reader learnt it. */
export interface HeldOutcome {
  outcome: Outcome;
  /** `"eof"` if the reader saw the end as a clean EOF, else the read error's name. */
  readEnd: string;
}

/**
 * An echo session held open in the middle: it sends half of `size` random
 * bytes and reads their echo, waits for `gate`, then sends the rest,
 * half-closes and reads to EOF. Sessions like this are in flight when `gate`
 * resolves (say, when a discover point is killed). `held` is called once it
 * waits at the gate. Never throws.
 */
export async function heldEchoSession(
  open: () => Promise<IndirectConn>,
  size: number,
  gate: Promise<void>,
  held: () => void = () => {},
): Promise<HeldOutcome> {
  const data = randomBytes(size);
  const half = Math.floor(size / 2);
  let conn: IndirectConn;
  try {
    conn = await open();
  } catch (error) {
    held();
    await gate;
    return { outcome: { kind: "error", error: error as Error }, readEnd: "never opened" };
  }
  let hung = false;
  let guard: ReturnType<typeof setTimeout> | undefined;
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  let readEnd = "eof";
  const readUpTo = async (target: number) => {
    while (length < target) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (error) {
        readEnd = (error as Error).name;
        throw error;
      }
      if (result.done) return;
      chunks.push(result.value);
      length += result.value.length;
    }
  };
  const received = () => {
    const out = new Uint8Array(length);
    let offset = 0;
    for (const chunk of chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  };
  try {
    const first = await Promise.allSettled([writer.write(data.slice(0, half)), readUpTo(half)]);
    held();
    await gate;
    guard = setTimeout(() => {
      hung = true;
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }, HANG_GUARD_MS);
    const failed = first.find((result) => result.status === "rejected");
    if (failed) return { outcome: { kind: "error", error: failed.reason as Error }, readEnd };
    const [written, read] = await Promise.allSettled([
      (async () => {
        for (let offset = half; offset < data.length; offset += 64 * 1024) {
          await writer.write(data.slice(offset, Math.min(data.length, offset + 64 * 1024)));
        }
        await writer.close();
      })(),
      readUpTo(Infinity),
    ]);
    if (hung) return { outcome: { kind: "hung" }, readEnd };
    if (read.status === "rejected") {
      return { outcome: { kind: "error", error: read.reason as Error }, readEnd };
    }
    const verdict = judge(data, received());
    if (verdict.kind === "corrupt" || written.status === "fulfilled") {
      return { outcome: verdict, readEnd };
    }
    return { outcome: { kind: "error", error: written.reason as Error }, readEnd };
  } finally {
    clearTimeout(guard);
    writer.releaseLock();
    reader.releaseLock();
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
}

/** {@linkcode echoSession} over a plain TCP connection (to a `cli.ts connect` forwarder). */
export function tcpEchoSession(port: number, size: number): Promise<Outcome> {
  return echoSession(() => Deno.connect({ hostname: "127.0.0.1", port }), size);
}

/** Counts outcomes by kind, with the distinct error messages. */
export function summarize(outcomes: readonly Outcome[]): {
  exact: number;
  error: number;
  short: number;
  corrupt: number;
  hung: number;
  errors: string[];
} {
  const count = (kind: Outcome["kind"]) => outcomes.filter((o) => o.kind === kind).length;
  const errors = new Set<string>();
  for (const outcome of outcomes) {
    if (outcome.kind === "error") errors.add(`${outcome.error.name}: ${outcome.error.message}`);
  }
  return {
    exact: count("exact"),
    error: count("error"),
    short: count("short"),
    corrupt: count("corrupt"),
    hung: count("hung"),
    errors: [...errors],
  };
}

/** Throws unless `outcome` is exact, saying what went wrong. */
export function assertExact(outcome: Outcome, what: string): void {
  if (outcome.kind === "exact") return;
  const detail = outcome.kind === "error"
    ? `${outcome.error.name}: ${outcome.error.message}`
    : JSON.stringify(outcome);
  throw new Error(`${what}: expected the exact echo, got ${outcome.kind} (${detail})`);
}

// ---- polling --------------------------------------------------------------------

/**
 * Runs `attempt` until it returns without throwing, pausing `pause` ms between
 * tries, for at most `deadline` ms; then throws with the last error. Returns
 * the value, the number of tries and the time it took (to be reported, not asserted).
 */
export async function retryUntil<T>(
  what: string,
  attempt: () => Promise<T>,
  { deadline = 15_000, pause = 50 }: { deadline?: number; pause?: number } = {},
): Promise<{ value: T; tries: number; elapsed: number }> {
  const start = performance.now();
  let last: unknown;
  for (let tries = 1;; tries++) {
    try {
      return { value: await attempt(), tries, elapsed: performance.now() - start };
    } catch (error) {
      last = error;
    }
    if (performance.now() - start >= deadline) {
      throw new Error(
        `${what}: still failing after ${tries} tries in ${deadline} ms: ${
          (last as Error)?.message ?? last
        }`,
        { cause: last },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
}

/** {@linkcode echoSession}, thrown as an error unless exact: for use with {@linkcode retryUntil}. */
export async function exactEcho(
  open: () => Promise<IndirectConn>,
  size: number,
  what: string,
): Promise<void> {
  assertExact(await echoSession(open, size), what);
}
