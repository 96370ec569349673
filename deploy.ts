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
 * level (default `info`). Several instances act as one with
 * `RTCP_REGISTRY=kv` (Deploy's KV; `kv:PATH` elsewhere), `RTCP_REGISTRY_TTL`
 * and `RTCP_CLUSTER_KEY` (the cluster's private key, PEM). A bad setting stops it at start with a message
 * naming the variable.
 * @module
 */

import { DiscoverPoint } from "./lib/dp/discover_point.ts";
import { openRegistry, optionsFromEnv, parseRegistry, wholeNumber } from "./app/dp_settings.ts";
import { importIdentity } from "./lib/link/auth.ts";
import { parseLogLevel, setUpLogging } from "./app/logging.ts";

const env = Deno.env.toObject();
let dp: DiscoverPoint;
try {
  await setUpLogging(parseLogLevel(env.RTCP_LOG_LEVEL ?? "info"));
  const setting = parseRegistry("RTCP_REGISTRY", env.RTCP_REGISTRY ?? "memory");
  const ttl = env.RTCP_REGISTRY_TTL === undefined
    ? undefined
    : wholeNumber("RTCP_REGISTRY_TTL", env.RTCP_REGISTRY_TTL);
  const registry = await openRegistry(setting, ttl);
  const clusterKey = env.RTCP_CLUSTER_KEY === undefined
    ? undefined
    : await importIdentity(env.RTCP_CLUSTER_KEY);
  // No TCP port: links come over HTTP only. Instances cannot be dialled: no advertise.
  dp = new DiscoverPoint({
    ...optionsFromEnv(env),
    port: null,
    ...(registry ? { registry } : {}),
    ...(clusterKey ? { clusterKey } : {}),
  });
  await dp.start();
} catch (error) {
  // A bad setting: say which, and stop, rather than serve with a setting the operator did not mean.
  console.error(`Cannot start the discover point: ${(error as Error).message}`);
  Deno.exit(1);
}

/** The `deno serve` handler: WebSocket links at `/rtcp`. */
export default { fetch: dp.httpHandler() } satisfies Deno.ServeDefaultExport;
