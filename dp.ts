/**
 * The RTCP Discover Point as a command.
 *
 * ```sh
 * deno run --allow-net dp.ts [--hostname 0.0.0.0] [--port 7000] [--expose NAME=PORT]...
 * ```
 *
 * Prints `Public port for "NAME" on HOST:PORT` per public port, then
 * `Listening on HOST:PORT` once it serves; logs go to standard error. SIGINT
 * or SIGTERM shuts it down gracefully (every session gets a Close with a
 * reason) and exits with status 0. Bad flags exit with status 2.
 * @module
 */

import { parseArgs } from "node:util";
import { getLogger } from "./lib/_log.ts";
import { DEFAULT_PORT, DiscoverPoint, type DiscoverPointOptions } from "./lib/discover_point.ts";
import { formatAddress } from "./lib/transport.ts";
import { ALL_FEATURES } from "./lib/link.ts";
import { parseLogLevel, setUpLogging } from "./app/logging.ts";
import { shutdownSignal } from "./app/shutdown.ts";

const USAGE = `Usage: deno run --allow-net dp.ts [options]

Runs an RTCP Discover Point: indirect servers register names here, and
clients reach them by name through it.

Options:
  --hostname H                 Address to listen on (default 0.0.0.0)
  -p, --port P                 Port to listen on; 0 picks one (default ${DEFAULT_PORT})
  --expose NAME=PORT           Public port: plain TCP connections to PORT become
                               sessions to the indirect server NAME (repeatable)
  --max-line-bytes N           Longest message line accepted (default 1048576)
  --handshake-timeout MS       Time a new link has to send its Aloha (default 10000)
  --ack-timeout MS             Time a server has to answer a Connect (default 10000)
  --max-links-per-server N     Links one name may register (default 64)
  --max-sessions-per-server N  Sessions open to one name (default 10000)
  --max-sessions N             Sessions open in total (default 100000)
  --max-pending-per-server N   Connects waiting for one name's Ack (default 1000)
  --max-window N               Bytes held per session direction (default 4194304)
  --keepalive-interval MS      Silence before a Ping, on links that agree (default 15000)
  --keepalive-timeout MS       Wait for an answer before dropping a link (default 10000)
  --features LIST              Extensions to offer, comma-separated, or "none" for the
                               original protocol only (default ${ALL_FEATURES.join(",")})
  --log-level L                trace, debug, info, warning, error or fatal (default info)
  -h, --help                   Show this help`;

const LIMIT_FLAGS = {
  "max-line-bytes": "maxLineBytes",
  "handshake-timeout": "handshakeTimeout",
  "ack-timeout": "ackTimeout",
  "max-links-per-server": "maxLinksPerServer",
  "max-sessions-per-server": "maxSessionsPerServer",
  "max-sessions": "maxSessions",
  "max-pending-per-server": "maxPendingPerServer",
} as const;

function wholeNumber(flag: string, value: string): number {
  const number = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(number)) {
    throw new TypeError(`Cannot use --${flag} "${value}": expected a whole number`);
  }
  return number;
}

function parseFeatures(value: string): string[] {
  if (value === "none") return [];
  const features = value.split(",").map((feature) => feature.trim()).filter(Boolean);
  for (const feature of features) {
    if (!ALL_FEATURES.includes(feature)) {
      throw new TypeError(
        `Cannot use --features "${value}": "${feature}" is not one of ${ALL_FEATURES.join(", ")}`,
      );
    }
  }
  return features;
}

function parseExpose(values: string[]): Record<string, number> {
  const expose: Record<string, number> = {};
  for (const value of values) {
    const at = value.lastIndexOf("=");
    if (at <= 0) throw new TypeError(`Cannot use --expose "${value}": expected NAME=PORT`);
    expose[value.slice(0, at)] = wholeNumber("expose", value.slice(at + 1));
  }
  return expose;
}

function parseOptions(args: string[]): { options: DiscoverPointOptions; level: string } | "help" {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      hostname: { type: "string", default: "0.0.0.0" },
      port: { type: "string", short: "p", default: String(DEFAULT_PORT) },
      expose: { type: "string", multiple: true, default: [] },
      "log-level": { type: "string", default: "info" },
      help: { type: "boolean", short: "h" },
      features: { type: "string" },
      "max-window": { type: "string" },
      "keepalive-interval": { type: "string" },
      "keepalive-timeout": { type: "string" },
      ...Object.fromEntries(
        Object.keys(LIMIT_FLAGS).map((flag) => [flag, { type: "string" as const }]),
      ),
    },
  });
  if (values.help) return "help";
  const options: DiscoverPointOptions = {
    hostname: values.hostname as string,
    port: wholeNumber("port", values.port as string),
    expose: parseExpose(values.expose as string[]),
  };
  const optional = (flag: string) => {
    const value = (values as Record<string, unknown>)[flag];
    return typeof value === "string" ? wholeNumber(flag, value) : undefined;
  };
  options.maxWindow = optional("max-window");
  if (values.features !== undefined) options.features = parseFeatures(values.features as string);
  options.keepalive = {
    interval: optional("keepalive-interval"),
    timeout: optional("keepalive-timeout"),
  };
  for (const [flag, key] of Object.entries(LIMIT_FLAGS)) options[key] = optional(flag);
  return { options, level: values["log-level"] as string };
}

/**
 * Runs the discover point until SIGINT or SIGTERM.
 * @param args Command-line arguments (without the program name).
 * @returns The exit code: 0 after a clean shutdown, 1 if it cannot start, 2 for bad flags.
 */
export async function main(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions(args);
    if (parsed !== "help") await setUpLogging(parseLogLevel(parsed.level));
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (parsed === "help") {
    console.log(USAGE);
    return 0;
  }
  const logger = getLogger(["rtcp", "dp"]);
  let dp: DiscoverPoint;
  try {
    dp = new DiscoverPoint(parsed.options);
    await dp.start();
  } catch (error) {
    if (error instanceof RangeError) {
      console.error(`${error.message}\n\n${USAGE}`);
      return 2;
    }
    logger.fatal("Cannot start the discover point: {message}", {
      message: (error as Error).message,
    });
    return 1;
  }
  for (const [name, addr] of dp.publicAddrs) {
    console.log(`Public port for "${name}" on ${formatAddress(addr)}`);
  }
  console.log(`Listening on ${formatAddress(dp.addr)}`);

  const stop = shutdownSignal();
  const signal = await stop.received;
  stop.dispose();
  logger.info("Shutting down on {signal}", { signal });
  await dp.close();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
