// The bench's report: ratios to relay for every path, and to relay3 for the paths of three
// processes (their like for like).

import assert from "node:assert/strict";
import { formatTable, type PathResult, summarize } from "../bench/report.ts";
import type { PathName } from "../bench/paths.ts";

/** A round of `path` with these throughput and round-trip figures. */
function measured(path: PathName, mibPerSec: number, p50Us: number): PathResult {
  return {
    path,
    round: 1,
    throughput1: { bytes: 1, seconds: 1, mibPerSec },
    pingPong: { count: 1, p50Us, p99Us: p50Us, meanUs: p50Us },
  };
}

const RUN = [
  measured("relay", 1000, 100),
  measured("relay3", 800, 150),
  measured("rtcp", 900, 110),
  measured("rtcp-connect", 600, 180),
];

Deno.test("bench report: a three-process path gets its ratios to relay3 beside those to relay", () => {
  const summary = summarize(RUN);
  assert.equal(summary["rtcp-connect"]!.stream1MiBps!.ratioToRelay, 0.6);
  assert.equal(summary["rtcp-connect"]!.stream1MiBps!.ratioToRelay3, 0.75);
  assert.equal(summary["rtcp-connect"]!.rttP50Us!.ratioToRelay3, 1.2);
  // A two-process path is compared with relay only.
  assert.equal(summary["rtcp"]!.stream1MiBps!.ratioToRelay, 0.9);
  assert.equal("ratioToRelay3" in summary["rtcp"]!.stream1MiBps!, false);

  const table = formatTable(RUN);
  assert.match(table, /as ratios to relay3/);
  assert.match(table, /rtcp-connect: 1-stream MiB\/s 0\.75x, RTT p50 µs 1\.20x/);
});

Deno.test("bench report: without relay3 in the run, no like-for-like lines", () => {
  const run = RUN.filter((r) => r.path !== "relay3");
  assert.equal(summarize(run)["rtcp-connect"]!.stream1MiBps!.ratioToRelay3, undefined);
  assert.doesNotMatch(formatTable(run), /ratios to relay3/);
});
