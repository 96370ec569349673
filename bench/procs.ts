/**
 * Child processes for the benches: spawn a Deno script, wait for readiness by reading its
 * stdout lines, read its resident memory and CPU time, and kill and await it (also when
 * the bench itself gets SIGINT or SIGTERM).
 * @module
 */

import { fileURLToPath } from "node:url";
import { lines } from "./io.ts";

/** Absolute path of a file relative to the project root (`bench/..`). */
export function projectPath(relative: string): string {
  return fileURLToPath(new URL(`../${relative}`, import.meta.url));
}

/** How long a child may take to print its readiness line. */
const READY_TIMEOUT_MS = 30_000;
/** How long a child may take to exit after SIGTERM before it gets SIGKILL. */
const EXIT_TIMEOUT_MS = 5_000;
/** How many stderr lines are kept for error reports. */
const STDERR_TAIL_LINES = 40;

/** Children not yet exited, so that Ctrl-C (or SIGTERM) can end them too. */
const live = new Set<Child>();
const SIGNALS = ["SIGINT", "SIGTERM"] as const;

async function onSignal(): Promise<void> {
  await Promise.all([...live].map((child) => child.kill()));
  Deno.exit(130);
}

function track(child: Child, status: Promise<Deno.CommandStatus>): void {
  if (live.size === 0) { for (const signal of SIGNALS) Deno.addSignalListener(signal, onSignal); }
  live.add(child);
  void status.finally(() => {
    live.delete(child);
    if (live.size === 0) {
      for (const signal of SIGNALS) Deno.removeSignalListener(signal, onSignal);
    }
  });
}

/** Options for {@link Child.spawn}. */
export interface SpawnOptions {
  /** Short name for reports and errors, e.g. "dp" or "relay1". */
  name: string;
  /** Script path relative to the project root, e.g. "dp.ts". */
  script: string;
  /** Arguments after the script. */
  args?: string[];
  /** Pipe stdin so that {@link Child.writeLine} works. @default false */
  stdin?: boolean;
  /** Absolute paths the child may read (`--allow-read=...`); none by default. */
  allowRead?: string[];
  /** Absolute paths the child may write (`--allow-write=...`); none by default. */
  allowWrite?: string[];
  /** Let the child run programs and send signals (`--allow-run`). @default false */
  allowRun?: boolean;
  /** V8 flags (`--v8-flags=...`), e.g. `["--max-semi-space-size=1"]`; none by default. */
  v8Flags?: string[];
}

/** A running Deno child process whose stdout is read line by line. */
export class Child implements AsyncDisposable {
  /** Short name given at spawn. */
  readonly name: string;
  /** OS process id. */
  readonly pid: number;
  #process: Deno.ChildProcess;
  #stdout: AsyncGenerator<string>;
  #stderrTail: string[] = [];
  #stderrDone: Promise<void>;
  #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #status: Promise<Deno.CommandStatus> | undefined;
  #exitStatus: Deno.CommandStatus | undefined;

  private constructor(name: string, process: Deno.ChildProcess, stdin: boolean) {
    this.name = name;
    this.pid = process.pid;
    this.#process = process;
    this.#stdout = lines(process.stdout);
    this.#stdin = stdin ? process.stdin.getWriter() : undefined;
    void process.status.then((status) => this.#exitStatus = status);
    track(this, process.status);
    this.#stderrDone = (async () => {
      for await (const line of lines(process.stderr)) {
        this.#stderrTail.push(line);
        if (this.#stderrTail.length > STDERR_TAIL_LINES) this.#stderrTail.shift();
      }
    })();
  }

  /**
   * Starts `deno run --allow-net [--allow-read=PATHS] [--allow-write=PATHS] [--allow-run]
   * <script> <args>` with piped stdout and stderr.
   */
  static spawn(options: SpawnOptions): Child {
    const allowRead = options.allowRead ?? [];
    const allowWrite = options.allowWrite ?? [];
    const process = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        ...(allowRead.length > 0 ? [`--allow-read=${allowRead.join(",")}`] : []),
        ...(allowWrite.length > 0 ? [`--allow-write=${allowWrite.join(",")}`] : []),
        ...(options.allowRun ? ["--allow-run"] : []),
        ...(options.v8Flags?.length ? [`--v8-flags=${options.v8Flags.join(",")}`] : []),
        projectPath(options.script),
        ...(options.args ?? []),
      ],
      // The project root, so that deno.json (its import map, and `"unstable": ["kv"]` for the
      // cluster registry) applies to the child.
      cwd: projectPath(""),
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new Child(options.name, process, options.stdin ?? false);
  }

  /** How the child exited, or undefined while it runs (as far as this event loop knows). */
  get exitStatus(): Deno.CommandStatus | undefined {
    return this.#exitStatus;
  }

  /** The last lines the child wrote to stderr. */
  get stderrTail(): string {
    return this.#stderrTail.join("\n");
  }

  /**
   * Reads stdout lines until one matches `pattern`; resolves the match.
   * @throws {Error} If stdout ends first or `timeoutMs` passes.
   */
  async waitFor(pattern: RegExp, timeoutMs = READY_TIMEOUT_MS): Promise<RegExpMatchArray> {
    const { promise: timedOut, reject } = Promise.withResolvers<never>();
    const timer = setTimeout(
      () => reject(new Error(`${this.name}: no line matching ${pattern} in ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      for (;;) {
        const next = await Promise.race([this.#stdout.next(), timedOut]);
        if (next.done) break;
        const match = next.value.match(pattern);
        if (match) return match;
      }
    } finally {
      clearTimeout(timer);
    }
    const status = await this.#process.status;
    await this.#stderrDone;
    throw new Error(
      `${this.name} exited (code ${status.code}) before printing ${pattern}:\n${this.stderrTail}`,
    );
  }

  /** Reads the next stdout line and parses it as JSON (the bench client's result format). */
  async readJson<T>(timeoutMs = READY_TIMEOUT_MS): Promise<T> {
    const match = await this.waitFor(/^\{.*\}$/, timeoutMs);
    return JSON.parse(match[0]) as T;
  }

  /** Writes one line to the child's stdin. */
  async writeLine(line: string): Promise<void> {
    if (this.#stdin === undefined) throw new TypeError(`${this.name} was spawned without stdin`);
    await this.#stdin.write(new TextEncoder().encode(`${line}\n`));
  }

  /** The child's resident memory in KiB (VmRSS), or undefined once it has exited. */
  async rssKiB(): Promise<number | undefined> {
    return await readRssKiB(this.pid);
  }

  /**
   * The child's proportional memory in KiB (Pss: pages shared with other
   * processes, such as the deno binary's, count divided among them), or
   * undefined once it has exited.
   */
  async pssKiB(): Promise<number | undefined> {
    const match = (await readProc(this.pid, "smaps_rollup")).match(/^Pss:\s+(\d+)\s+kB/m);
    return match ? Number(match[1]) : undefined;
  }

  /** CPU time (user + system) the child has used so far, in seconds; undefined once gone. */
  async cpuSeconds(): Promise<number | undefined> {
    return await readCpuSeconds(this.pid);
  }

  /** Sends SIGTERM (SIGKILL if it lingers) and waits for the exit; safe to call twice. */
  kill(): Promise<Deno.CommandStatus> {
    this.#status ??= this.#stop();
    return this.#status;
  }

  async #stop(): Promise<Deno.CommandStatus> {
    try {
      await this.#stdin?.close();
    } catch {
      // The child already closed its end.
    }
    try {
      this.#process.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    const timer = setTimeout(() => {
      try {
        this.#process.kill("SIGKILL");
      } catch {
        // Exited in the meantime.
      }
    }, EXIT_TIMEOUT_MS);
    try {
      const status = await this.#process.status;
      // Drain stdout so the pipe is released.
      for await (const _ of this.#stdout) { /* discard */ }
      await this.#stderrDone;
      return status;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Same as {@link Child.kill}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

/** Reads /proc/<pid>/<file> with `cat`: Deno's read permission never covers /proc/<pid>/. */
async function readProc(pid: number, file: string): Promise<string> {
  const out = await new Deno.Command("cat", {
    args: [`/proc/${pid}/${file}`],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout);
}

/** Resident memory (VmRSS) of process `pid` in KiB, or undefined if it is gone. */
async function readRssKiB(pid: number): Promise<number | undefined> {
  const match = (await readProc(pid, "status")).match(/^VmRSS:\s+(\d+)\s+kB/m);
  return match ? Number(match[1]) : undefined;
}

/** Kernel clock ticks per second, the unit of /proc/<pid>/stat times (100 on Linux). */
const CLOCK_TICKS = 100;

/** CPU time (user + system) of process `pid` in seconds, or undefined if it is gone. */
async function readCpuSeconds(pid: number): Promise<number | undefined> {
  const stat = await readProc(pid, "stat");
  // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? ticks / CLOCK_TICKS : undefined;
}

/**
 * A set of children killed together: the owner of every process a bench starts, so that
 * a failure anywhere still ends them all.
 */
export class ChildGroup implements AsyncDisposable {
  #children: Child[] = [];
  #cleanups: (() => Promise<void>)[] = [];

  /** Spawns a child and adds it to the group. */
  spawn(options: SpawnOptions): Child {
    const child = Child.spawn(options);
    this.#children.push(child);
    return child;
  }

  /** Runs `cleanup` (e.g. removing a directory the children used) once they are all gone. */
  defer(cleanup: () => Promise<void>): void {
    this.#cleanups.push(cleanup);
  }

  /** Kills and awaits every child, newest first, then runs the deferred cleanups, newest first. */
  async killAll(): Promise<void> {
    for (const child of this.#children.reverse()) await child.kill();
    this.#children = [];
    const cleanups = this.#cleanups.reverse();
    this.#cleanups = [];
    for (const cleanup of cleanups) await cleanup();
  }

  /** Same as {@link ChildGroup.killAll}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.killAll();
  }
}
