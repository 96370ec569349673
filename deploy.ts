/**
 * The RTCP Discover Point as a `deno serve` entry, for Deno Deploy and any
 * host that lets only HTTP in: links are WebSocket upgrades of `/rtcp`
 * (`ws://HOST/rtcp`, or `wss://` where the platform ends TLS), with the same
 * behaviour as `dp.ts --http`. Other paths answer 404.
 *
 * ```sh
 * deno serve --allow-net --allow-env deploy.ts
 * ```
 *
 * Configured by environment variables only: every `dp.ts` limit as
 * `RTCP_<FLAG>` (`RTCP_MAX_LINKS`, `RTCP_IDLE_TIMEOUT`, …), `RTCP_NAME`,
 * `RTCP_NAMES` (the names file's JSON itself: owned names and their clients)
 * and `RTCP_UNLISTED` (`open` or `refuse`). `RTCP_LOG_LEVEL` sets the log
 * level (default `info`). A bad setting stops it at start with a message
 * naming the variable.
 * @module
 */

import { DiscoverPoint } from "./lib/dp/discover_point.ts";
import { optionsFromEnv } from "./app/dp_settings.ts";
import { parseLogLevel, setUpLogging } from "./app/logging.ts";

const env = Deno.env.toObject();
let dp: DiscoverPoint;
try {
  await setUpLogging(parseLogLevel(env.RTCP_LOG_LEVEL ?? "info"));
  // No TCP port: links come over HTTP only.
  dp = new DiscoverPoint({ ...optionsFromEnv(env), port: null });
  await dp.start();
} catch (error) {
  // A bad setting: say which, and stop, rather than serve with a setting the operator did not mean.
  console.error(`Cannot start the discover point: ${(error as Error).message}`);
  Deno.exit(1);
}

/** The `deno serve` handler: WebSocket links at `/rtcp`. */
export default { fetch: dp.httpHandler() } satisfies Deno.ServeDefaultExport;
