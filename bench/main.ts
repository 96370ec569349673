/**
 * The RTCP bench: measures each path from a client to one bench target (bench/target.ts) and
 * prints a table with every figure also as a ratio to the plain two-relay path.
 *
 * Paths (every box a separate process, all on 127.0.0.1):
 * - `direct`: client → target;
 * - `relay`: client → relay1 → relay2 → target (bench/relay.ts; no RTCP, the ceiling);
 * - `rtcp`: client → DP public port → `cli.ts expose` → target;
 * - `rtcp-connect`: client → `cli.ts connect` → DP → `cli.ts expose` → target.
 *
 * Every measurement runs in its own client process (bench/client.ts) rather than in this
 * one: the client is event-loop bound, and sharing a loop with the orchestration (reading
 * children's stdout, sampling /proc) would add noise to its timings. The cost is a process
 * start per figure, outside the timed region. On 2 cores the client and the chain still
 * compete for CPU, as any client on the same host would.
 *
 * Run: `deno task bench [--paths direct,relay,rtcp,rtcp-connect] [--quick] [--json PATH]`.
 * Writes bench/results/<timestamp>.json and bench/results/latest.json (or only PATH).
 * @module
 */

import { parseArgs } from "node:util";
import type {
  PingPongResult,
  SessionsResult,
  SetupRateResult,
  ThroughputResult,
} from "./measure.ts";
import { type Chain, PATH_NAMES, type PathName, startPath, startTarget } from "./paths.ts";
import { type Child, ChildGroup, projectPath } from "./procs.ts";
import { CLIENT_TIMEOUT_MS, runClient, spawnClient } from "./run_client.ts";
import {
  type Failure,
  formatTable,
  type PathResult,
  type SessionsFigure,
  summarize,
  writeJson,
} from "./report.ts";

/** How much each figure measures. */
interface Settings {
  /** Seconds per throughput figure. */
  seconds: number;
  /** Timed 1-byte round trips. */
  pingCount: number;
  /** Connections for the setup rate. */
  setupCount: number;
  /** Concurrent sessions held open. */
  sessions: number;
  /** Bytes each of them echoes. */
  sessionBytes: number;
}

const FULL: Settings = {
  seconds: 3,
  pingCount: 10_000,
  setupCount: 1_000,
  sessions: 1_000,
  sessionBytes: 1024,
};
const QUICK: Settings = {
  seconds: 0.5,
  pingCount: 1_000,
  setupCount: 50,
  sessions: 50,
  sessionBytes: 1024,
};

const USAGE = `Usage: deno task bench [--paths ${PATH_NAMES.join(",")}] [--quick] [--json PATH]`;

/** A short one-line-per-cause description of an error for the table. */
function brief(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.length > 600 ? `${text.slice(0, 600)}…` : text;
}

async function attempt<T>(measure: () => Promise<T>): Promise<T | Failure> {
  try {
    return await measure();
  } catch (err) {
    return { error: brief(err) };
  }
}

function rssAll(members: readonly Child[]): Promise<(number | undefined)[]> {
  return Promise.all(members.map((m) => m.rssKiB()));
}

/** Opens the concurrent sessions, samples the chain's memory while they are held, closes them. */
async function heldSessions(
  group: ChildGroup,
  chain: Chain,
  settings: Settings,
): Promise<SessionsFigure> {
  const idle = await rssAll(chain.members);
  const client = spawnClient(group, "sessions", chain.entry, [
    "--count",
    String(settings.sessions),
    "--size",
    String(settings.sessionBytes),
  ], true);
  try {
    const result = await client.readJson<SessionsResult>(CLIENT_TIMEOUT_MS);
    const held = await rssAll(chain.members);
    await client.writeLine("release");
    await client.readJson(CLIENT_TIMEOUT_MS);
    const rss = chain.members.map((m, i) => ({
      name: m.name,
      idleKiB: idle[i],
      heldKiB: held[i],
    }));
    return { ...result, rss };
  } finally {
    await client.kill();
  }
}

/** Starts path `name`, measures every figure on it, and stops it. */
async function measurePath(
  name: PathName,
  target: string,
  settings: Settings,
): Promise<PathResult> {
  await using group = new ChildGroup();
  let chain: Chain;
  try {
    chain = await startPath(name, group, target);
  } catch (err) {
    return { path: name, error: brief(err) };
  }
  const entry = chain.entry;
  const seconds = String(settings.seconds);
  const result: PathResult = { path: name };
  // Sessions first, so that "idle" memory is that of a fresh chain.
  result.sessions = await attempt(() => heldSessions(group, chain, settings));
  result.pingPong = await attempt(() =>
    runClient<PingPongResult>(group, "pingpong", entry, ["--count", String(settings.pingCount)])
  );
  result.setup = await attempt(() =>
    runClient<SetupRateResult>(group, "setup", entry, ["--count", String(settings.setupCount)])
  );
  result.throughput1 = await attempt(() =>
    runClient<ThroughputResult>(group, "throughput", entry, [
      "--streams",
      "1",
      "--seconds",
      seconds,
    ])
  );
  result.throughput8 = await attempt(() =>
    runClient<ThroughputResult>(group, "throughput", entry, [
      "--streams",
      "8",
      "--seconds",
      seconds,
    ])
  );
  const crashed = chain.members.filter((m) => m.exitStatus !== undefined).map((m) =>
    `${m.name} exited with code ${m.exitStatus?.code}: ${
      m.stderrTail.split("\n").slice(-5).join(" | ")
    }`
  );
  if (crashed.length > 0) result.crashed = crashed;
  return result;
}

async function gitCommit(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "--short", "HEAD"],
      cwd: projectPath(""),
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  } catch {
    // No git: the commit is only a label in the results.
    return undefined;
  }
}

/** Runs the bench; returns 0 if every figure was measured, 1 if any failed, 2 on bad flags. */
export async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        paths: { type: "string", default: PATH_NAMES.join(",") },
        quick: { type: "boolean", default: false },
        json: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (err) {
    console.error(`${brief(err)}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const paths = values.paths.split(",").map((p) => p.trim()).filter((p) => p !== "");
  const unknown = paths.filter((p) => !(PATH_NAMES as readonly string[]).includes(p));
  if (unknown.length > 0 || paths.length === 0) {
    console.error(`Unknown path: "${unknown.join(",")}"\n${USAGE}`);
    return 2;
  }
  const settings = values.quick ? QUICK : FULL;
  const started = new Date();
  const results: PathResult[] = [];
  {
    await using group = new ChildGroup();
    const target = await startTarget(group);
    for (const name of paths as PathName[]) {
      console.error(`bench: measuring ${name}…`);
      results.push(await measurePath(name, target.addr, settings));
    }
  }
  console.log(formatTable(results));
  const report = {
    started: started.toISOString(),
    seconds: (Date.now() - started.getTime()) / 1000,
    commit: await gitCommit(),
    deno: Deno.version,
    os: `${Deno.build.os}-${Deno.build.arch}`,
    cpus: navigator.hardwareConcurrency,
    quick: values.quick,
    settings,
    summary: summarize(results),
    results,
  };
  const files = values.json !== undefined
    ? [values.json]
    : [started.toISOString().replace(/[:.]/g, "-"), "latest"].map((f) =>
      projectPath(`bench/results/${f}.json`)
    );
  for (const file of files) await writeJson(file, report);
  console.error(`bench: wrote ${files.join(", ")}`);
  const failed = results.some((r) =>
    r.error !== undefined || r.crashed !== undefined ||
    Object.values(r).some((v) => typeof v === "object" && v !== null && "error" in v) ||
    (r.sessions !== undefined && "ok" in r.sessions && r.sessions.ok < r.sessions.count)
  );
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
