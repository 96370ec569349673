/**
 * The RTCP bench: measures each path from a client to one bench target (bench/target.ts) and
 * prints a table with every figure also as a ratio to the plain two-relay path.
 *
 * Paths (every box a separate process, all on 127.0.0.1):
 * - `direct`: client → target;
 * - `relay`: client → relay1 → relay2 → target (bench/relay.ts; no RTCP, the ceiling);
 * - `relay3`: client → relay1 → relay2 → relay3 → target: the ceiling for the paths of three
 *   processes (`rtcp-connect*`, `rtcp-cluster`), whose ratios to it are printed under the table;
 * - `rtcp`: client → DP public port → `cli.ts expose` → target;
 * - `rtcp-tls`: `rtcp` with TLS between `expose` and the DP (test certificates);
 * - `rtcp-text`: `rtcp` with the DP offering no extension (original protocol);
 * - `rtcp-ws`: `rtcp` with `expose`'s link over WebSocket (`dp.ts --http`, `ws://…/rtcp`);
 * - `rtcp-lean`, `rtcp-connect-lean`: `rtcp`, `rtcp-connect` with README's V8 flag;
 * - `rtcp-connect`: client → `cli.ts connect` → DP → `cli.ts expose` → target;
 * - `rtcp-connect-tls`: `rtcp-connect` with TLS on both links to the DP;
 * - `rtcp-ws-connect`: `rtcp-connect` with both links to the DP over WebSocket;
 * - `rtcp-cluster`: client → DP B's public port → DP A (over a DP-to-DP link, found in the
 *   shared Deno KV registry) → `cli.ts expose --dp A` → target.
 *
 * Then, if `rtcp-cluster` or `failover` is selected, the failover figure: DPs A and B both hold
 * the name (`expose --dp A --dp B`), a client enters at a third DP C; A gets SIGKILL, and the
 * figure is the time until the first new session through C succeeds (median of the trials).
 *
 * Every measurement runs in its own client process (bench/client.ts) rather than in this
 * one: the client is event-loop bound, and sharing a loop with the orchestration (reading
 * children's stdout, sampling /proc) would add noise to its timings. The cost is a process
 * start per figure, outside the timed region. On 2 cores the client and the chain still
 * compete for CPU, as any client on the same host would.
 *
 * Each figure gets a freshly started chain, so that none inherits another's leftovers; once
 * its client has exited, the chain's CPU use is sampled, and a process still busy with no
 * client (sessions never torn down), or one that exited, is reported as a failure.
 *
 * Run: `deno task bench [--paths relay,rtcp,rtcp-tls,...,failover] [--quick] [--repeat N]
 * [--json PATH]`; with `--repeat N` every path is measured N times, interleaved, and the
 * table shows medians.
 * Writes bench/results/<timestamp>.json and bench/results/latest.json (or only PATH).
 * @module
 */

import { parseArgs } from "node:util";
import type {
  FailoverResult,
  PingPongResult,
  SessionsResult,
  SetupRateResult,
  ThroughputResult,
} from "./measure.ts";
import {
  type Chain,
  PATH_NAMES,
  type PathName,
  REGISTRY_TTL_MS,
  startFailoverCluster,
  startPath,
  startTarget,
} from "./paths.ts";
import { type Child, ChildGroup, projectPath } from "./procs.ts";
import { CLIENT_TIMEOUT_MS, runClient, spawnClient } from "./run_client.ts";
import {
  failoverHasFailures,
  type FailoverTrial,
  type Figure,
  formatFailover,
  formatTable,
  hasFailures,
  type PathResult,
  type SessionsFigure,
  summarize,
  summarizeFailover,
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
  /**
   * How long they are held, idle, before the chain's memory is sampled again: what an operator
   * sees, after the burst that opened them (the forwarders and the DP give back what the burst
   * grew, see app/memory_compactor.ts).
   */
  holdMs: number;
  /** After a figure, how long the chain gets to finish closing before its CPU is sampled. */
  settleMs: number;
  /** How long the chain's CPU use is then sampled. */
  idleWindowMs: number;
  /** Failover trials per round, each on a fresh cluster. */
  failoverTrials: number;
  /**
   * Longest wait for the first session after the kill: above the registry's TTL, so that a
   * DP that keeps trying the dead one until its entry expires still yields a figure.
   */
  failoverTimeoutMs: number;
  /** Longest one failover session may take before it counts as failed and the next one starts. */
  failoverAttemptMs: number;
}

const FULL: Settings = {
  seconds: 3,
  pingCount: 10_000,
  setupCount: 1_000,
  sessions: 1_000,
  sessionBytes: 1024,
  holdMs: 3000,
  settleMs: 500,
  idleWindowMs: 1000,
  failoverTrials: 5,
  failoverTimeoutMs: 30_000,
  failoverAttemptMs: 1000,
};
const QUICK: Settings = {
  seconds: 0.5,
  pingCount: 1_000,
  setupCount: 50,
  sessions: 50,
  sessionBytes: 1024,
  holdMs: 1000,
  settleMs: 100,
  idleWindowMs: 300,
  failoverTrials: 1,
  failoverTimeoutMs: 30_000,
  failoverAttemptMs: 1000,
};

/** Not a path: the failover figure, also run whenever `rtcp-cluster` is selected. */
const FAILOVER = "failover";

/** What `--paths` may list. */
const ITEMS: readonly string[] = [...PATH_NAMES, FAILOVER];

const USAGE = `Usage: deno task bench [--paths ${
  ITEMS.join(",")
}] [--quick] [--repeat N] [--json PATH]
("${FAILOVER}" is the failover figure; it runs too when rtcp-cluster is selected)`;

/** A short one-line-per-cause description of an error for the table. */
function brief(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.length > 600 ? `${text.slice(0, 600)}…` : text;
}

function rssAll(members: readonly Child[]): Promise<(number | undefined)[]> {
  return Promise.all(members.map((m) => m.rssKiB()));
}

/**
 * Opens the concurrent sessions, samples the chain's memory at once and again after holding them
 * idle for `holdMs`, closes them.
 */
async function heldSessions(
  group: ChildGroup,
  chain: Chain,
  settings: Settings,
): Promise<SessionsFigure> {
  const idle = await rssAll(chain.members);
  const idlePss = await Promise.all(chain.members.map((m) => m.pssKiB()));
  const client = spawnClient(group, "sessions", chain.entry, [
    "--count",
    String(settings.sessions),
    "--size",
    String(settings.sessionBytes),
  ], true);
  try {
    const result = await client.readJson<SessionsResult>(CLIENT_TIMEOUT_MS);
    const atOnce = await rssAll(chain.members);
    // A fixed window of the measurement (sessions held idle), not a wait for an event.
    await new Promise((resolve) => setTimeout(resolve, settings.holdMs));
    const held = await rssAll(chain.members);
    const heldPss = await Promise.all(chain.members.map((m) => m.pssKiB()));
    await client.writeLine("release");
    await client.readJson(CLIENT_TIMEOUT_MS);
    const rss = chain.members.map((m, i) => ({
      name: m.name,
      idleKiB: idle[i],
      heldKiB: held[i],
      heldAtOnceKiB: atOnce[i],
      idlePssKiB: idlePss[i],
      heldPssKiB: heldPss[i],
    }));
    return { ...result, rss };
  } finally {
    await client.kill();
  }
}

/** CPU share of one core above which a chain process counts as busy with no client. */
const BUSY_SHARE = 0.2;

/** Chain processes that exited, or that keep using CPU although no client is connected. */
async function aftermath(members: readonly Child[], settings: Settings): Promise<string[]> {
  if (members.length === 0) return [];
  const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  // Fixed windows of a measurement, not a wait for an event.
  await delay(settings.settleMs);
  const before = await Promise.all(members.map((m) => m.cpuSeconds()));
  await delay(settings.idleWindowMs);
  const after = await Promise.all(members.map((m) => m.cpuSeconds()));
  return members.flatMap((m, i) => {
    if (m.exitStatus !== undefined) {
      const tail = m.stderrTail.split("\n").slice(-5).join(" | ");
      return [`${m.name} exited with code ${m.exitStatus.code}: ${tail}`];
    }
    const share = ((after[i] ?? 0) - (before[i] ?? 0)) / (settings.idleWindowMs / 1000);
    return share > BUSY_SHARE
      ? [`${m.name} still busy with no client: ${(share * 100).toFixed(0)}% of a core`]
      : [];
  });
}

/**
 * Starts a fresh chain for `path` (so that no figure inherits another's leftovers), runs
 * `measure` on it, checks the chain's aftermath, and stops it.
 */
async function onFreshChain<T extends object>(
  run: PathRun,
  measure: (group: ChildGroup, chain: Chain) => Promise<T>,
): Promise<Figure<T>> {
  await using group = new ChildGroup();
  let chain: Chain;
  try {
    chain = await startPath(run.path, group, run.target);
  } catch (err) {
    return { error: `Cannot start the chain: ${brief(err)}` };
  }
  let figure: Figure<T>;
  try {
    figure = await measure(group, chain);
  } catch (err) {
    figure = { error: brief(err) };
  }
  const problems = await aftermath(chain.members, run.settings);
  return problems.length > 0 ? { ...figure, problems } : figure;
}

/** What one path's figures share. */
interface PathRun {
  /** The path to measure. */
  path: PathName;
  /** The bench target's "host:port". */
  target: string;
  /** How much to measure. */
  settings: Settings;
}

/** Measures every figure of `run.path`, each on a fresh chain. */
async function measurePath(run: PathRun, round: number): Promise<PathResult> {
  const { settings } = run;
  const client = <T extends object>(op: string, ...flags: string[]) =>
    onFreshChain(run, (group, chain) => runClient<T>(group, op, chain.entry, flags));
  const seconds = String(settings.seconds);
  return {
    path: run.path,
    round,
    // Sessions first: their "idle" memory is that of a chain that has done nothing yet.
    sessions: await onFreshChain(run, (group, chain) => heldSessions(group, chain, settings)),
    pingPong: await client<PingPongResult>("pingpong", "--count", String(settings.pingCount)),
    setup: await client<SetupRateResult>("setup", "--count", String(settings.setupCount)),
    // A DP that has run a while: the same count again on a chain that has just done it once.
    setupWarm: await onFreshChain(run, async (group, chain) => {
      const count = ["--count", String(settings.setupCount)];
      await runClient<SetupRateResult>(group, "setup", chain.entry, count);
      return await runClient<SetupRateResult>(group, "setup", chain.entry, count);
    }),
    throughput1: await client<ThroughputResult>(
      "throughput",
      "--streams",
      "1",
      "--seconds",
      seconds,
    ),
    throughput8: await client<ThroughputResult>(
      "throughput",
      "--streams",
      "8",
      "--seconds",
      seconds,
    ),
  };
}

/**
 * One failover trial on a fresh cluster: the client kills the victim DP itself (so that the
 * clock starts at the signal), then the survivors are checked as after any figure.
 */
async function failoverTrial(
  target: string,
  settings: Settings,
  round: number,
): Promise<FailoverTrial> {
  await using group = new ChildGroup();
  let cluster;
  try {
    cluster = await startFailoverCluster(group, target);
  } catch (err) {
    return { round, error: `Cannot start the cluster: ${brief(err)}` };
  }
  let figure: Figure<FailoverResult>;
  try {
    figure = await runClient<FailoverResult>(
      group,
      "failover",
      cluster.entry,
      [
        "--kill",
        String(cluster.victim.pid),
        "--timeout",
        String(settings.failoverTimeoutMs),
        "--attempt-timeout",
        String(settings.failoverAttemptMs),
      ],
      // Before the kill and after it, each up to failoverTimeoutMs, plus the client's start.
      2 * settings.failoverTimeoutMs + 30_000,
      { allowRun: true },
    );
  } catch (err) {
    figure = { error: brief(err) };
  }
  const problems = await aftermath(cluster.survivors, settings);
  if (!("error" in figure)) {
    const victim = await cluster.victim.kill();
    if (victim.signal !== "SIGKILL") {
      problems.push(`${cluster.victim.name} was not ended by the client's SIGKILL`);
    }
  }
  return { round, ...figure, ...(problems.length > 0 ? { problems } : {}) };
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

/** Whether this process may write `path` (asked before the run, not after it). */
async function mayWrite(path: string): Promise<boolean> {
  return (await Deno.permissions.query({ name: "write", path })).state === "granted";
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
        repeat: { type: "string", default: "1" },
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
  const items = values.paths.split(",").map((p) => p.trim()).filter((p) => p !== "");
  const unknown = items.filter((p) => !ITEMS.includes(p));
  if (unknown.length > 0 || items.length === 0) {
    console.error(`Unknown path: "${unknown.join(",")}"\n${USAGE}`);
    return 2;
  }
  const paths = items.filter((p) => p !== FAILOVER);
  const withFailover = items.includes(FAILOVER) || items.includes("rtcp-cluster");
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) {
    console.error(`Bad --repeat "${values.repeat}": expected a whole number from 1\n${USAGE}`);
    return 2;
  }
  if (values.json !== undefined && !await mayWrite(values.json)) {
    console.error(
      `Cannot write --json ${values.json}: \`deno task bench\` may write under bench/results only; give a path there, or run bench/main.ts with --allow-write for that path`,
    );
    return 2;
  }
  const settings = values.quick ? QUICK : FULL;
  const started = new Date();
  const results: PathResult[] = [];
  const failover: FailoverTrial[] = [];
  {
    await using group = new ChildGroup();
    const target = await startTarget(group);
    for (let round = 1; round <= repeat; round++) {
      const of = repeat > 1 ? ` (round ${round})` : "";
      // Each round starts one path later, so that no path always runs first or last.
      const order = paths.map((_, i) => paths[(i + round - 1) % paths.length] as PathName);
      for (const path of order) {
        console.error(`bench: measuring ${path}${of}…`);
        results.push(await measurePath({ path, target: target.addr, settings }, round));
      }
      if (withFailover) {
        console.error(`bench: measuring failover${of}, ${settings.failoverTrials} trials…`);
        for (let trial = 0; trial < settings.failoverTrials; trial++) {
          failover.push(await failoverTrial(target.addr, settings, round));
        }
      }
    }
  }
  if (results.length > 0) console.log(formatTable(results));
  if (withFailover) {
    console.log(`${results.length > 0 ? "\n" : ""}${formatFailover(failover, REGISTRY_TTL_MS)}`);
  }
  const report = {
    started: started.toISOString(),
    seconds: (Date.now() - started.getTime()) / 1000,
    commit: await gitCommit(),
    deno: Deno.version,
    os: `${Deno.build.os}-${Deno.build.arch}`,
    cpus: navigator.hardwareConcurrency,
    quick: values.quick,
    repeat,
    settings,
    summary: summarize(results),
    results,
    ...(withFailover
      ? {
        failover: {
          registryTtlMs: REGISTRY_TTL_MS,
          summary: summarizeFailover(failover),
          trials: failover,
        },
      }
      : {}),
  };
  const files = values.json !== undefined
    ? [values.json]
    : [started.toISOString().replace(/[:.]/g, "-"), "latest"].map((f) =>
      projectPath(`bench/results/${f}.json`)
    );
  for (const file of files) await writeJson(file, report);
  console.error(`bench: wrote ${files.join(", ")}`);
  return hasFailures(results) || failoverHasFailures(failover) ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
