/**
 * Abuse test for the discover point: while valid sessions stream checksummed data through
 * `cli.ts connect` → DP → `cli.ts expose` → the bench target's echo (in a bench/client.ts
 * process), this process opens thousands of malformed or half-open connections straight to
 * the DP's link port (bench/abuse_cases.ts), with bounded concurrency, each closed by us
 * after a short bound unless the DP closes it first.
 *
 * Reports, per case, how the DP reacted; whether every valid session came through intact;
 * whether the DP is alive afterwards (a fresh batch of sessions works); and the DP's and
 * forwarders' RSS idle, with the valid sessions running, at peak, and after.
 *
 * Run: `deno run --allow-net --allow-run bench/abuse.ts [--connections 10000]
 *   [--concurrency 200] [--sessions 50] [--settle 5] [--rounds 1]` (`--settle`: seconds
 *   before the "after" memory sample; `--rounds`: repeat the abuse, printing RSS after each). Exits 0 when the DP survives with every valid
 * session intact.
 * @module
 */

import { parseArgs } from "node:util";
import { ABUSE_CASES, type AbuseCase } from "./abuse_cases.ts";
import { parseAddr, writeAll } from "./io.ts";
import type { SetupRateResult } from "./measure.ts";
import { startConnect, startDiscoverPoint, startExpose, startTarget } from "./paths.ts";
import { type Child, ChildGroup } from "./procs.ts";
import { formatMiB } from "./report.ts";
import { runClient, spawnClient } from "./run_client.ts";

/** How one abusive connection ended. */
type Ending = "closed by DP" | "closed by us" | "connect failed";

/** Per case: how many connections ended which way, and how many got any reply bytes. */
type CaseTally = Record<Ending, number> & { answered: number };

/** Opens one abusive connection, sends the case's payload, waits for the DP or the bound. */
async function abuseOnce(
  dp: { hostname: string; port: number },
  abuse: AbuseCase,
): Promise<{ ending: Ending; answered: boolean }> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect(dp);
  } catch {
    return { ending: "connect failed", answered: false };
  }
  let ourClose = false;
  const timer = setTimeout(() => {
    ourClose = true;
    conn.close();
  }, abuse.holdMs);
  // The DP may close while we still write; that is one of the right reactions.
  const writing = writeAll(conn, abuse.payload()).catch(() => {});
  let received = 0;
  try {
    const buf = new Uint8Array(4096);
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) received += n;
  } catch {
    // A reset from the DP, or our own close at the bound: told apart by `ourClose`.
  }
  clearTimeout(timer);
  await writing;
  if (!ourClose) conn.close();
  return { ending: ourClose ? "closed by us" : "closed by DP", answered: received > 0 };
}

/**
 * Runs `total` abusive connections, at most `concurrency` at a time, cycling through the
 * cases, and adds their endings to `tallies`.
 */
async function abuse(
  dp: string,
  total: number,
  concurrency: number,
  tallies: Map<string, CaseTally>,
): Promise<void> {
  const addr = parseAddr(dp);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < total; i = next++) {
      const abuseCase = ABUSE_CASES[i % ABUSE_CASES.length]!;
      const outcome = await abuseOnce(addr, abuseCase);
      const tally = tallies.get(abuseCase.name)!;
      tally[outcome.ending]++;
      if (outcome.answered) tally.answered++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/** Samples the RSS of `members` every 100 ms, keeping each one's maximum. */
function peakSampler(members: readonly Child[]): { stop(): Promise<number[]> } {
  const peaks = members.map(() => 0);
  let sampling = Promise.resolve();
  const timer = setInterval(() => {
    sampling = sampling.then(async () => {
      const now = await Promise.all(members.map((m) => m.rssKiB()));
      now.forEach((kib, i) => peaks[i] = Math.max(peaks[i]!, kib ?? 0));
    });
  }, 100);
  return {
    async stop() {
      clearInterval(timer);
      await sampling;
      return peaks;
    },
  };
}

function rss(members: readonly Child[]): Promise<(number | undefined)[]> {
  return Promise.all(members.map((m) => m.rssKiB()));
}

/** Result of the client's `stream` operation. */
interface StreamOutcome {
  count: number;
  intact: number;
  corrupted: number;
  bytes: number;
  errors: string[];
}

/** Runs the abuse test; returns 0 on PASS, 1 on FAIL. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      connections: { type: "string", default: "10000" },
      concurrency: { type: "string", default: "200" },
      sessions: { type: "string", default: "50" },
      settle: { type: "string", default: "5" },
      rounds: { type: "string", default: "1" },
    },
  });
  await using group = new ChildGroup();
  const target = await startTarget(group);
  const dp = await startDiscoverPoint(group);
  const expose = await startExpose(group, dp, target.addr);
  const connect = await startConnect(group, dp);
  const members = [dp.child, expose, connect.child];
  const idle = await rss(members);

  const streams = spawnClient(group, "stream", connect.addr, ["--count", values.sessions], true);
  await streams.readJson();
  const before = await rss(members);
  const sampler = peakSampler(members);
  const tallies = new Map<string, CaseTally>(ABUSE_CASES.map((c) => [c.name, {
    "closed by DP": 0,
    "closed by us": 0,
    "connect failed": 0,
    answered: 0,
  }]));
  const start = performance.now();
  const rounds = Number(values.rounds);
  for (let round = 1; round <= rounds; round++) {
    await abuse(dp.addr, Number(values.connections), Number(values.concurrency), tallies);
    // Repeated rounds tell a leak (growing every round) from memory kept for reuse (flat).
    if (rounds > 1) {
      const now = await rss(members);
      console.log(
        `after round ${round}: RSS MiB ${
          members.map((m, i) => `${m.name} ${formatMiB(now[i])}`).join(", ")
        }`,
      );
    }
  }
  const abuseSeconds = (performance.now() - start) / 1000;
  await streams.writeLine("stop");
  const valid = await streams.readJson<StreamOutcome>();
  const peak = await sampler.stop();

  let alive: string;
  try {
    const check = await runClient<SetupRateResult>(group, "setup", connect.addr, ["--count", "20"]);
    alive = `yes (${check.count} new sessions echoed)`;
  } catch (err) {
    alive = `NO: ${err instanceof Error ? err.message : err}`;
  }
  // Give timers and the garbage collector time before the last sample: a measurement
  // window, not a wait for an event.
  await new Promise((resolve) => setTimeout(resolve, Number(values.settle) * 1000));
  const after = await rss(members);

  console.log(
    `${rounds} x ${values.connections} abusive connections in ${abuseSeconds.toFixed(1)} s:`,
  );
  const width = Math.max(...ABUSE_CASES.map((c) => c.name.length));
  for (const [name, t] of tallies) {
    console.log(
      `  ${name.padEnd(width)}  closed by DP ${t["closed by DP"]}, closed by us ${
        t["closed by us"]
      }, connect failed ${t["connect failed"]}, answered ${t.answered}`,
    );
  }
  const intact = valid.intact === valid.count && valid.errors.length === 0;
  console.log(
    `valid sessions: ${valid.intact}/${valid.count} intact, ${valid.corrupted} corrupted, ${
      formatMiB(valid.bytes / 1024)
    } MiB echoed, ${valid.errors.length} errors${
      valid.errors.length ? `: ${[...new Set(valid.errors)].join("; ")}` : ""
    }`,
  );
  console.log(`DP alive afterwards: ${alive}`);
  console.log(`RSS MiB (idle / with valid sessions / peak / ${values.settle} s after):`);
  members.forEach((m, i) => {
    const row = [idle[i], before[i], peak[i], after[i]].map(formatMiB).join(" / ");
    console.log(`  ${m.name.padEnd(8)} ${row}`);
  });
  const [dpIdle, dpPeak, dpAfter] = [idle[0] ?? 0, peak[0] ?? 0, after[0] ?? 0];
  const kept = dpPeak > dpIdle ? Math.round((dpAfter - dpIdle) / (dpPeak - dpIdle) * 100) : 0;
  console.log(
    `DP memory: ${
      formatMiB(dpAfter - dpIdle)
    } MiB above idle afterwards, ${kept}% of its rise to peak`,
  );
  const crashed = members.filter((m) => m.exitStatus !== undefined);
  for (const m of crashed) {
    console.log(`${m.name} exited (code ${m.exitStatus?.code}):\n${m.stderrTail}`);
  }
  const pass = intact && alive.startsWith("yes") && crashed.length === 0;
  console.log(pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
