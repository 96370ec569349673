/**
 * Logging setup shared by `dp.ts` and `cli.ts`: LogTape to standard error.
 * The library only calls `getLogger`; programs configure where logs go.
 * @module
 */

import {
  configure,
  defaultTextFormatter,
  isLogLevel,
  jsonLinesFormatter,
  type LogLevel,
  type LogRecord,
  type TextFormatter,
} from "npm:@logtape/logtape@2.4.2";

/** How log lines are written: text for people, JSON Lines for log pipelines. */
export type LogFormat = "text" | "json";

/** Log formats accepted by `--log-format`. */
export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

/**
 * Parses a `--log-format` value.
 * @throws {TypeError} If it is not `text` or `json`.
 */
export function parseLogFormat(value: string): LogFormat {
  if (value !== "text" && value !== "json") {
    throw new TypeError(`Cannot use log format "${value}": expected text or json`);
  }
  return value;
}

/** Log levels accepted by `--log-level`. */
export const LOG_LEVELS: readonly LogLevel[] = [
  "trace",
  "debug",
  "info",
  "warning",
  "error",
  "fatal",
];

const encoder = new TextEncoder();

function stderrSink(format: TextFormatter): (record: LogRecord) => void {
  return (record) => Deno.stderr.writeSync(encoder.encode(format(record)));
}

/**
 * Parses a `--log-level` value.
 * @throws {TypeError} If it is not a LogTape level.
 */
export function parseLogLevel(value: string): LogLevel {
  if (!isLogLevel(value)) {
    throw new TypeError(
      `Cannot use log level "${value}": expected one of ${LOG_LEVELS.join(", ")}`,
    );
  }
  return value;
}

/** Sends RTCP's logs at `level` and above to standard error, one line each in `format`. */
export async function setUpLogging(level: LogLevel, format: LogFormat = "text"): Promise<void> {
  const formatter = format === "json" ? jsonLinesFormatter : defaultTextFormatter;
  await configure({
    reset: true,
    sinks: { stderr: stderrSink(formatter) },
    loggers: [
      { category: ["rtcp"], lowestLevel: level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}
