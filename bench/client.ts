/**
 * The measuring client, run as its own process so that its event loop has a core to itself
 * and does not share one with the orchestrating bench (which spawns children, reads their
 * output and samples /proc). It runs one operation against `--addr` and prints its results
 * as JSON lines on stdout; operations that hold connections open wait for a line on stdin.
 *
 * Run: `deno run --allow-net bench/client.ts OP --addr H:P [flags]`, where OP is one of
 * - `throughput --streams N --seconds S`: download rate from the target's source;
 * - `pingpong --count N`: 1-byte round trips;
 * - `setup --count N`: connect, 1-byte echo, close, one after another;
 * - `sessions --count N --size B`: N concurrent verified echoes; prints the result, holds the
 *   connections until a stdin line, closes them and prints `{"closed":true}`;
 * - `stream --count N`: N sessions echo checksummed data; prints `{"started":N}`, streams
 *   until a stdin line, then prints the outcome;
 * - `soak --count N --seconds S --interval I`: N clients loop over checksummed echo sessions
 *   for S seconds, printing totals every I seconds and a final line with `"done":true`;
 * - `failover --kill PID [--attempt-timeout MS] [--timeout MS] [--warmup N] [--after N]`: once
 *   1-byte echo sessions work, SIGKILLs PID (a discover point; needs `--allow-run`) and opens
 *   them one after another until one succeeds; prints the time from the kill to it.
 * @module
 */

import { parseArgs } from "node:util";
import { lines, parseAddr } from "./io.ts";
import {
  type Addr,
  dial,
  failover,
  openSessions,
  pingPong,
  setupRate,
  throughput,
} from "./measure.ts";
import { echoFixed, echoUntil } from "./verify.ts";

function print(value: unknown): void {
  console.log(JSON.stringify(value));
}

/** Resolves when stdin delivers a line or ends. */
async function stdinLine(): Promise<void> {
  for await (const _ of lines(Deno.stdin.readable)) return;
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

async function stream(addr: Addr, count: number): Promise<void> {
  const stop = new AbortController();
  const conns = await Promise.all(Array.from({ length: count }, () => dial(addr)));
  const outcomes = conns.map((conn, i) =>
    echoUntil(conn, i + 1, stop.signal).finally(() => conn.close())
  );
  print({ started: count });
  await stdinLine();
  stop.abort();
  const settled = await Promise.allSettled(outcomes);
  const errors = settled.flatMap((s) => s.status === "rejected" ? [describe(s.reason)] : []);
  const done = settled.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
  print({
    count,
    intact: done.filter((o) => o.intact).length,
    corrupted: done.filter((o) => !o.intact).length,
    bytes: done.reduce((sum, o) => sum + o.bytes, 0),
    errors,
  });
}

/** Totals of a soak run, printed every interval and at the end. */
interface SoakTotals {
  elapsedSeconds: number;
  bytes: number;
  sessions: number;
  corrupted: number;
  errors: number;
  lastError?: string;
  done: boolean;
}

async function soak(addr: Addr, count: number, seconds: number, interval: number): Promise<void> {
  const start = performance.now();
  const end = start + seconds * 1000;
  const totals: SoakTotals = {
    elapsedSeconds: 0,
    bytes: 0,
    sessions: 0,
    corrupted: 0,
    errors: 0,
    done: false,
  };
  const report = () => {
    totals.elapsedSeconds = Math.round((performance.now() - start) / 1000);
    print(totals);
  };
  const timer = setInterval(report, interval * 1000);
  const client = async (id: number) => {
    for (let round = 0; performance.now() < end; round++) {
      // Session sizes from 64 KiB to 4 MiB, varied per client and round.
      const bytes = 64 * 1024 * (1 + ((id * 7 + round * 13) % 64));
      try {
        const conn = await dial(addr);
        try {
          const outcome = await echoFixed(conn, bytes, id * 100_003 + round);
          totals.bytes += outcome.bytes;
          if (outcome.intact) totals.sessions++;
          else totals.corrupted++;
        } finally {
          conn.close();
        }
      } catch (err) {
        totals.errors++;
        totals.lastError = describe(err);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: count }, (_, i) => client(i + 1)));
  } finally {
    clearInterval(timer);
  }
  totals.done = true;
  report();
}

/** Runs one client operation; see the module doc. */
export async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      addr: { type: "string" },
      streams: { type: "string", default: "1" },
      seconds: { type: "string", default: "3" },
      count: { type: "string", default: "1000" },
      size: { type: "string", default: "1024" },
      interval: { type: "string", default: "30" },
      kill: { type: "string" },
      "attempt-timeout": { type: "string", default: "1000" },
      timeout: { type: "string", default: "30000" },
      warmup: { type: "string", default: "20" },
      after: { type: "string", default: "20" },
    },
  });
  if (values.addr === undefined) throw new TypeError("Cannot run client: --addr H:P is required");
  const addr = parseAddr(values.addr);
  const count = Number(values.count);
  const seconds = Number(values.seconds);
  switch (positionals[0]) {
    case "throughput":
      print(await throughput(addr, Number(values.streams), seconds));
      break;
    case "pingpong":
      print(await pingPong(addr, count));
      break;
    case "setup":
      print(await setupRate(addr, count));
      break;
    case "sessions": {
      const held = await openSessions(addr, count, Number(values.size));
      print(held.result);
      await stdinLine();
      held.close();
      print({ closed: true });
      break;
    }
    case "stream":
      await stream(addr, count);
      break;
    case "soak":
      await soak(addr, count, seconds, Number(values.interval));
      break;
    case "failover": {
      const victimPid = Number(values.kill);
      if (!Number.isInteger(victimPid) || victimPid <= 0) {
        throw new TypeError("Cannot run failover: --kill PID is required");
      }
      print(
        await failover(addr, {
          victimPid,
          attemptTimeoutMs: Number(values["attempt-timeout"]),
          timeoutMs: Number(values.timeout),
          warmup: Number(values.warmup),
          after: Number(values.after),
        }),
      );
      break;
    }
    default:
      throw new TypeError(`Cannot run client: unknown operation "${positionals[0]}"`);
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
