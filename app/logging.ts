/**
 * Logging setup shared by `dp.ts` and `cli.ts`: LogTape to standard error.
 * The library only calls `getLogger`; programs configure where logs go.
 * @module
 */

import {
  configure,
  defaultTextFormatter,
  isLogLevel,
  type LogLevel,
  type LogRecord,
} from "npm:@logtape/logtape@2.4.2";

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

function stderrSink(record: LogRecord): void {
  Deno.stderr.writeSync(encoder.encode(defaultTextFormatter(record)));
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

/** Sends RTCP's logs at `level` and above to standard error. */
export async function setUpLogging(level: LogLevel): Promise<void> {
  await configure({
    reset: true,
    sinks: { stderr: stderrSink },
    loggers: [
      { category: ["rtcp"], lowestLevel: level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}
