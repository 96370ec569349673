/**
 * Soak test: N clients (a bench/client.ts process) loop over checksummed echo sessions of
 * 64 KiB to 4 MiB through `cli.ts connect` → DP → `cli.ts expose` → the bench target for
 * T minutes. Every interval it prints the running totals (bytes, sessions completed,
 * corrupted sessions, errors) and the RSS of the DP and both forwarders; it ends by itself
 * with a summary.
 *
 * Run: `deno run --allow-net --allow-run bench/soak.ts [--clients 20] [--minutes 10]
 *   [--interval 30]`. Exits 0 when no session failed or came back corrupted.
 * @module
 */

import { parseArgs } from "node:util";
import { startConnect, startDiscoverPoint, startExpose, startTarget } from "./paths.ts";
import { ChildGroup } from "./procs.ts";
import { formatMiB } from "./report.ts";
import { spawnClient } from "./run_client.ts";

/** A progress line of the client's `soak` operation. */
interface SoakTotals {
  elapsedSeconds: number;
  bytes: number;
  sessions: number;
  corrupted: number;
  errors: number;
  lastError?: string;
  done: boolean;
}

/** Runs the soak; returns 0 on PASS, 1 on FAIL. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      clients: { type: "string", default: "20" },
      minutes: { type: "string", default: "10" },
      interval: { type: "string", default: "30" },
    },
  });
  const seconds = Number(values.minutes) * 60;
  const interval = Number(values.interval);
  await using group = new ChildGroup();
  const target = await startTarget(group);
  const dp = await startDiscoverPoint(group);
  const expose = await startExpose(group, dp, target.addr);
  const connect = await startConnect(group, dp);
  const members = [dp.child, expose, connect.child];
  const peaks = members.map(() => 0);
  const first: (number | undefined)[] = await Promise.all(members.map((m) => m.rssKiB()));
  let last = first;
  console.log(
    `soak: ${values.clients} clients for ${values.minutes} min through connect -> DP -> expose`,
  );
  const client = spawnClient(group, "soak", connect.addr, [
    "--count",
    values.clients,
    "--seconds",
    String(seconds),
    "--interval",
    String(interval),
  ]);
  let totals: SoakTotals | undefined;
  try {
    for (;;) {
      // A line is due every interval; allow a generous margin for a slow final round.
      totals = await client.readJson<SoakTotals>((interval + 120) * 1000);
      last = await Promise.all(members.map((m) => m.rssKiB()));
      last.forEach((kib, i) => peaks[i] = Math.max(peaks[i]!, kib ?? 0));
      if (totals.done) break; // The summary below reports the final totals.
      const rss = members.map((m, i) => `${m.name} ${formatMiB(last[i])}`).join(", ");
      console.log(
        `[${String(totals.elapsedSeconds).padStart(5)} s] ${
          formatMiB(totals.bytes / 1024)
        } MiB, ${totals.sessions} sessions, ${totals.corrupted} corrupted, ${totals.errors} errors; RSS MiB ${rss}`,
      );
    }
  } catch (err) {
    console.log(`soak client failed: ${err instanceof Error ? err.message : err}`);
  }
  const crashed = members.filter((m) => m.exitStatus !== undefined);
  console.log("\nsummary:");
  if (totals !== undefined) {
    const rate = totals.bytes / 2 ** 20 / Math.max(1, totals.elapsedSeconds);
    console.log(
      `  ${totals.sessions} sessions, ${formatMiB(totals.bytes / 1024)} MiB echoed (${
        rate.toFixed(1)
      } MiB/s), ${totals.corrupted} corrupted, ${totals.errors} errors${
        totals.lastError ? ` (last: ${totals.lastError})` : ""
      }`,
    );
  }
  members.forEach((m, i) =>
    console.log(
      `  ${m.name.padEnd(8)} RSS MiB start ${formatMiB(first[i])}, peak ${
        formatMiB(peaks[i])
      }, end ${formatMiB(last[i])}`,
    )
  );
  for (const m of crashed) {
    console.log(`${m.name} exited (code ${m.exitStatus?.code}):\n${m.stderrTail}`);
  }
  const pass = totals?.done === true && totals.errors === 0 && totals.corrupted === 0 &&
    crashed.length === 0;
  console.log(pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
