/**
 * Results of a bench run: their shape, the figures derived from them (each also as a ratio
 * to the relay path of the same run), the printed table, and the JSON file.
 * @module
 */

import type {
  FailoverResult,
  PingPongResult,
  SessionsResult,
  SetupRateResult,
  ThroughputResult,
} from "./measure.ts";
import { type PathName, THREE_PROCESS_PATHS } from "./paths.ts";

/** A measurement that did not produce a value. */
export interface Failure {
  /** What went wrong. */
  error: string;
}

/** Resident memory of one process of a chain. */
export interface ProcessRss {
  /** Role in the chain, e.g. "dp", "expose", "relay1". */
  name: string;
  /** VmRSS in KiB before the concurrent sessions were opened. */
  idleKiB?: number;
  /** VmRSS in KiB once they had been held open, idle, for a while (`holdMs`). */
  heldKiB?: number;
  /** VmRSS in KiB right after they were all open, before any hold. */
  heldAtOnceKiB?: number;
  /** Pss in KiB before the sessions (shared pages divided among their processes). */
  idlePssKiB?: number;
  /** Pss in KiB once they had been held open, idle, for a while. */
  heldPssKiB?: number;
}

/** Concurrent-session outcome plus the chain's memory around it. */
export interface SessionsFigure extends SessionsResult {
  /** One entry per chain process. */
  rss: ProcessRss[];
}

/** Trouble seen in the chain right after a figure, on top of the figure itself. */
export interface Aftermath {
  /** Chain processes that exited, or kept using CPU after the client had closed everything. */
  problems?: string[];
}

/** One figure's raw result, or why it is missing; either way with its aftermath. */
export type Figure<T> = (T | Failure) & Aftermath;

/** Everything measured on one path. */
export interface PathResult {
  /** Which path. */
  path: PathName;
  /** Which round of the run (1 unless `--repeat` was given). */
  round: number;
  /** Single-stream download. */
  throughput1?: Figure<ThroughputResult>;
  /** 8-stream aggregate download. */
  throughput8?: Figure<ThroughputResult>;
  /** 1-byte round trips. */
  pingPong?: Figure<PingPongResult>;
  /** Connect, echo 1 byte, close: the first sessions of a fresh chain. */
  setup?: Figure<SetupRateResult>;
  /** The same on a chain warmed by as many sessions first (its code optimized by V8). */
  setupWarm?: Figure<SetupRateResult>;
  /** Concurrent verified echo sessions. */
  sessions?: Figure<SessionsFigure>;
}

/** The measured parts of a {@link PathResult}. */
const FIGURES = [
  "throughput1",
  "throughput8",
  "pingPong",
  "setup",
  "setupWarm",
  "sessions",
] as const;

/** The figure's result, or undefined if it failed or was not measured. */
function ok<T extends object>(figure: Figure<T> | undefined): T | undefined {
  return figure === undefined || "error" in figure ? undefined : figure as T;
}

function sumRss(
  figure: SessionsFigure | undefined,
  key: "idleKiB" | "heldKiB" | "heldAtOnceKiB" | "heldPssKiB",
) {
  if (figure === undefined || figure.rss.length === 0) return undefined;
  return figure.rss.reduce((sum, p) => sum + (p[key] ?? NaN), 0) / 1024;
}

/** Whether chain process `name` is a discover point: "dp", or "dp-a", "dp-b"... in a cluster. */
function isDiscoverPoint(name: string): boolean {
  return name === "dp" || name.startsWith("dp-");
}

/** MiB of the chain's discover points together, or undefined if it has none or one is unknown. */
function dpRss(figure: SessionsFigure | undefined, key: "idleKiB" | "heldKiB"): number | undefined {
  const dps = figure?.rss.filter((p) => isDiscoverPoint(p.name)) ?? [];
  if (dps.length === 0) return undefined;
  return dps.reduce((sum, p) => sum + (p[key] ?? NaN), 0) / 1024;
}

/** One row of the table: a figure derived from a path's results. */
interface Metric {
  key: string;
  label: string;
  digits: number;
  get(result: PathResult): number | undefined;
}

/** KiB each held session costs, for the chain's processes that `pick` chooses, all together. */
function kibPerSession(
  figure: SessionsFigure | undefined,
  pick: (name: string) => boolean,
): number | undefined {
  const processes = figure?.rss.filter((p) => pick(p.name)) ?? [];
  if (figure === undefined || processes.length === 0 || !(figure.ok > 0)) return undefined;
  const grown = processes.reduce((sum, p) => sum + ((p.heldKiB ?? NaN) - (p.idleKiB ?? NaN)), 0);
  return grown / figure.ok;
}

/** The figures, in table order. */
const METRICS: readonly Metric[] = [
  {
    key: "stream1MiBps",
    label: "1-stream MiB/s",
    digits: 0,
    get: (r) => ok(r.throughput1)?.mibPerSec,
  },
  {
    key: "stream8MiBps",
    label: "8-stream MiB/s",
    digits: 0,
    get: (r) => ok(r.throughput8)?.mibPerSec,
  },
  { key: "rttP50Us", label: "RTT p50 µs", digits: 0, get: (r) => ok(r.pingPong)?.p50Us },
  { key: "rttP99Us", label: "RTT p99 µs", digits: 0, get: (r) => ok(r.pingPong)?.p99Us },
  { key: "setupPerSec", label: "setup /s", digits: 0, get: (r) => ok(r.setup)?.perSec },
  {
    key: "setupWarmPerSec",
    label: "setup /s, warm",
    digits: 0,
    get: (r) => ok(r.setupWarm)?.perSec,
  },
  { key: "sessionsOk", label: "sessions ok", digits: 0, get: (r) => ok(r.sessions)?.ok },
  {
    key: "rssIdleMiB",
    label: "chain RSS idle MiB",
    digits: 1,
    get: (r) => sumRss(ok(r.sessions), "idleKiB"),
  },
  {
    key: "rssAtOnceMiB",
    label: "chain RSS at once MiB",
    digits: 1,
    get: (r) => sumRss(ok(r.sessions), "heldAtOnceKiB"),
  },
  {
    key: "rssHeldMiB",
    label: "chain RSS held MiB",
    digits: 1,
    get: (r) => sumRss(ok(r.sessions), "heldKiB"),
  },
  {
    key: "pssHeldMiB",
    label: "chain PSS held MiB",
    digits: 1,
    get: (r) => sumRss(ok(r.sessions), "heldPssKiB"),
  },
  {
    key: "dpRssHeldMiB",
    label: "DP RSS held MiB",
    digits: 1,
    get: (r) => dpRss(ok(r.sessions), "heldKiB"),
  },
  {
    key: "chainKiBPerSession",
    label: "chain KiB/idle session",
    digits: 1,
    get: (r) => kibPerSession(ok(r.sessions), () => true),
  },
  {
    key: "dpKiBPerSession",
    label: "DP KiB/idle session",
    digits: 1,
    get: (r) => kibPerSession(ok(r.sessions), isDiscoverPoint),
  },
];

/** A figure (the median over rounds) and its ratio to the relay path's figure. */
export interface SummaryCell {
  /** Median over the rounds that measured it (undefined if none did). */
  value?: number;
  /** value / relay's value (undefined without a relay figure). */
  ratioToRelay?: number;
  /**
   * For a path of three processes: value / relay3's value (undefined without a relay3 figure).
   */
  ratioToRelay3?: number;
  /** Every round's value, in round order. */
  rounds: number[];
}

/** Per path, per metric key: value and ratio to relay. */
export type Summary = Record<string, Record<string, SummaryCell>>;

function median(values: readonly number[]): number | undefined {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length / 2;
  if (sorted.length === 0) return undefined;
  return Number.isInteger(mid) ? (sorted[mid - 1]! + sorted[mid]!) / 2 : sorted[Math.floor(mid)];
}

/** The paths of `results` in the order they first appear. */
function pathsOf(results: readonly PathResult[]): PathName[] {
  return [...new Set(results.map((r) => r.path))];
}

/** The defined values of `get` over `path`'s rounds. */
function valuesOf(
  results: readonly PathResult[],
  path: PathName,
  get: (r: PathResult) => number | undefined,
): number[] {
  return results.filter((r) => r.path === path).map(get).filter((v): v is number =>
    v !== undefined && !Number.isNaN(v)
  );
}

/**
 * Derives every figure of every path (median over rounds), with ratios to `relay`, and for
 * paths of three processes to `relay3` too.
 */
export function summarize(results: readonly PathResult[]): Summary {
  const summary: Summary = {};
  for (const path of pathsOf(results)) {
    const row: Record<string, SummaryCell> = {};
    for (const metric of METRICS) {
      const rounds = valuesOf(results, path, metric.get);
      const value = median(rounds);
      const ratioTo = (basePath: PathName) => {
        const base = median(valuesOf(results, basePath, metric.get));
        return value === undefined || !base ? undefined : value / base;
      };
      row[metric.key] = {
        value,
        ratioToRelay: ratioTo("relay"),
        ...(THREE_PROCESS_PATHS.includes(path) ? { ratioToRelay3: ratioTo("relay3") } : {}),
        rounds,
      };
    }
    summary[path] = row;
  }
  return summary;
}

function cellText(cell: SummaryCell | undefined, digits: number): string {
  if (cell?.value === undefined) return "—";
  const ratio = cell.ratioToRelay === undefined ? "" : ` (${cell.ratioToRelay.toFixed(2)}x)`;
  return `${cell.value.toFixed(digits)}${ratio}`;
}

/** The figures compared like for like with `relay3`, for the paths of three processes. */
const LIKE_FOR_LIKE_KEYS = [
  "stream1MiBps",
  "stream8MiBps",
  "rttP50Us",
  "setupPerSec",
  "setupWarmPerSec",
  "pssHeldMiB",
];

/** Per path of three processes measured with `relay3`: its ratios to relay3, as lines. */
function likeForLikeLines(summary: Summary, paths: readonly PathName[]): string[] {
  const lines = paths.flatMap((path) => {
    const row = summary[path];
    if (!THREE_PROCESS_PATHS.includes(path) || row === undefined) return [];
    const ratios = METRICS.filter((m) => LIKE_FOR_LIKE_KEYS.includes(m.key)).flatMap((m) => {
      const ratio = row[m.key]?.ratioToRelay3;
      return ratio === undefined ? [] : [`${m.label} ${ratio.toFixed(2)}x`];
    });
    return ratios.length === 0 ? [] : [`  ${path}: ${ratios.join(", ")}`];
  });
  return lines.length === 0 ? [] : [
    "",
    "Paths of three processes, as ratios to relay3 (a plain relay of as many processes):",
    ...lines,
  ];
}

/** Per chain process of `path`: median idle and held RSS over the rounds, as text. */
function rssText(results: readonly PathResult[], path: PathName): string {
  const names = [
    ...new Set(
      results.flatMap((r) => r.path === path ? ok(r.sessions)?.rss.map((p) => p.name) ?? [] : []),
    ),
  ];
  return names.map((name) => {
    const kib = (key: "idleKiB" | "heldKiB" | "idlePssKiB" | "heldPssKiB") =>
      median(
        valuesOf(results, path, (r) => ok(r.sessions)?.rss.find((p) => p.name === name)?.[key]),
      );
    const held = median(valuesOf(results, path, (r) => ok(r.sessions)?.ok));
    const growth = (idle: number | undefined, grown: number | undefined) =>
      idle === undefined || grown === undefined || !held
        ? ""
        : ` (${((grown - idle) / held).toFixed(1)} KiB/session)`;
    const [idle, grown] = [kib("idleKiB"), kib("heldKiB")];
    const [idlePss, grownPss] = [kib("idlePssKiB"), kib("heldPssKiB")];
    const pss = idlePss === undefined || grownPss === undefined
      ? ""
      : `; Pss ${formatMiB(idlePss)} -> ${formatMiB(grownPss)}${growth(idlePss, grownPss)}`;
    return `${name} ${formatMiB(idle)} -> ${formatMiB(grown)}${growth(idle, grown)}${pss}`;
  }).join(", ");
}

/**
 * The table: one column per path, one row per figure (median over rounds), plus per-process
 * memory and every failure.
 */
export function formatTable(results: readonly PathResult[]): string {
  const summary = summarize(results);
  const paths = pathsOf(results);
  const rounds = Math.max(...results.map((r) => r.round));
  const header = [rounds > 1 ? `median of ${rounds} rounds` : "", ...paths];
  const rows = METRICS.map((m) => [
    m.label,
    ...paths.map((p) => cellText(summary[p]?.[m.key], m.digits)),
  ]);
  const widths = header.map((_, i) => Math.max(...[header, ...rows].map((row) => row[i]!.length)));
  const line = (row: string[]) =>
    row.map((cell, i) => i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)).join(
      "  ",
    );
  const out = [line(header), ...rows.map(line)];
  out.push(
    "",
    "RSS (and Pss) per process, MiB idle -> held (with the idle sessions held), and per session:",
  );
  for (const path of paths) out.push(`  ${path}: ${rssText(results, path) || "—"}`);
  out.push(...likeForLikeLines(summary, paths));
  const failures = results.flatMap((r) => {
    const where = rounds > 1 ? `${r.path} (round ${r.round})` : r.path;
    return [
      ...FIGURES.flatMap((k) => {
        const figure: Figure<object> | undefined = r[k];
        if (figure === undefined) return [];
        return [
          ...("error" in figure ? [`  ${where} ${k}: ${figure.error}`] : []),
          ...(figure.problems ?? []).map((p) => `  ${where} after ${k}: ${p}`),
        ];
      }),
      ...Object.entries(ok(r.sessions)?.errors ?? {}).map(([e, n]) =>
        `  ${where} sessions: ${n}x ${e}`
      ),
    ];
  });
  if (failures.length > 0) out.push("", "Failures:", ...failures);
  return out.join("\n");
}

/** True if any figure failed, had problems afterwards, or lost a session. */
export function hasFailures(results: readonly PathResult[]): boolean {
  return results.some((r) =>
    FIGURES.some((k) => {
      const figure: Figure<object> | undefined = r[k];
      return figure !== undefined && ("error" in figure || figure.problems !== undefined);
    }) || (ok(r.sessions)?.ok ?? 0) < (ok(r.sessions)?.count ?? 0)
  );
}

/** One failover trial: a fresh cluster, one DP holding the name killed. */
export type FailoverTrial = Figure<FailoverResult> & {
  /** Which round of the run (1 unless `--repeat` was given). */
  round: number;
};

/** The failover figure over all trials. */
export interface FailoverSummary {
  /** Median milliseconds from SIGKILL to the first session served elsewhere. */
  ms?: number;
  /** Every trial's milliseconds, in order (failed trials left out). */
  trials: number[];
  /** Every trial's sessions tried after the kill, the successful one included. */
  attempts: number[];
  /** Median over the trials of a session's milliseconds before the kill, for comparison. */
  sessionMs?: number;
}

/** The median failover time and every trial's figures. */
export function summarizeFailover(trials: readonly FailoverTrial[]): FailoverSummary {
  const done = trials.flatMap((t) => ok<FailoverResult>(t) ?? []);
  const ms = done.map((t) => t.ms);
  return {
    ms: median(ms),
    trials: ms,
    attempts: done.map((t) => t.attempts),
    sessionMs: median(done.map((t) => t.sessionMs)),
  };
}

/** Whether a failover trial failed, left problems, or lost a session after failing over. */
function failoverFailed(trial: FailoverTrial): boolean {
  const result = ok<FailoverResult>(trial);
  return result === undefined || trial.problems !== undefined ||
    result.afterOk < result.afterCount;
}

/** The failover section printed under the table. */
export function formatFailover(trials: readonly FailoverTrial[], ttlMs: number): string {
  const summary = summarizeFailover(trials);
  const out = [
    `Failover (client → dp-c → dp-a | dp-b → expose --dp A --dp B → target; SIGKILL dp-a; ` +
    `registry TTL ${ttlMs} ms):`,
    `  failover ms  ${summary.ms === undefined ? "—" : summary.ms.toFixed(1)}` +
    ` (median of ${summary.trials.length}: ${
      summary.trials.map((ms) => ms.toFixed(1)).join(", ")
    }; a session before the kill: ${summary.sessionMs?.toFixed(1) ?? "?"} ms)`,
    `  sessions tried until one succeeded: ${summary.attempts.join(", ") || "—"}`,
  ];
  const where = (t: FailoverTrial, i: number) =>
    `  trial ${i + 1}${t.round > 1 ? ` (round ${t.round})` : ""}`;
  const failures = trials.flatMap((t, i) => {
    const result = ok<FailoverResult>(t);
    return [
      ...("error" in t ? [`${where(t, i)}: ${t.error}`] : []),
      ...(t.problems ?? []).map((p) => `${where(t, i)} afterwards: ${p}`),
      ...(result !== undefined && result.afterOk < result.afterCount
        ? [
          `${where(t, i)}: ${result.afterOk} of ${result.afterCount} sessions after the first ` +
          "success succeeded",
        ]
        : []),
    ];
  });
  // Failed attempts before the first success are part of failing over, not failures.
  const attempts = trials.flatMap((t, i) =>
    Object.entries(ok<FailoverResult>(t)?.errors ?? {}).map(([e, n]) =>
      `${where(t, i)}: ${n}x ${e}`
    )
  );
  if (attempts.length > 0) out.push("  failed sessions on the way:", ...attempts);
  if (failures.length > 0) out.push("", "Failover failures:", ...failures);
  return out.join("\n");
}

/** True if any failover trial failed (see {@link formatFailover}). */
export function failoverHasFailures(trials: readonly FailoverTrial[]): boolean {
  return trials.some(failoverFailed);
}

/** KiB as MiB with one decimal, or "?" when unknown. */
export function formatMiB(kib: number | undefined): string {
  return kib === undefined ? "?" : (kib / 1024).toFixed(1);
}

/** Writes `report` as JSON to `path`, creating its directory. */
export async function writeJson(path: string, report: unknown): Promise<void> {
  const dir = path.slice(0, path.lastIndexOf("/"));
  if (dir !== "") await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(path, JSON.stringify(report, null, 2) + "\n");
}
