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
 * and `RTCP_CLUSTER_KEY` (the cluster's private key, PEM). KV needs
 * `--unstable-kv` outside this repository, whose `deno.json` turns it on
 * (`deno serve` reads the `deno.json` of the directory it runs in). A bad setting stops it at start with a message
 * naming the variable. With `RTCP_ADMIN_TOKEN` set (16 characters or more),
 * the admin endpoint (status page, `/admin/metrics`, `/admin/status`) is
 * served at `/admin/`, and its data only to requests bearing that token.
 * @module
 */

import { DiscoverPoint } from "./lib/dp/discover_point.ts";
import { openRegistry, optionsFromEnv, parseRegistry, wholeNumber } from "./app/dp_settings.ts";
import { importIdentity } from "./lib/link/auth.ts";
import { parseLogLevel, setUpLogging } from "./app/logging.ts";
import { AdminEndpoint } from "./lib/dp/admin.ts";
import { shutdownSignal } from "./app/shutdown.ts";

/** Where the admin endpoint is mounted when `RTCP_ADMIN_TOKEN` is set. */
const ADMIN_PATH = "/admin/";

const env = Deno.env.toObject();
let dp: DiscoverPoint;
let admin: AdminEndpoint | undefined;
let registry: Awaited<ReturnType<typeof openRegistry>>;
try {
  await setUpLogging(parseLogLevel(env.RTCP_LOG_LEVEL ?? "info"));
  const setting = parseRegistry("RTCP_REGISTRY", env.RTCP_REGISTRY ?? "memory");
  const ttl = env.RTCP_REGISTRY_TTL === undefined
    ? undefined
    : wholeNumber("RTCP_REGISTRY_TTL", env.RTCP_REGISTRY_TTL);
  registry = await openRegistry(setting, ttl);
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
  if (env.RTCP_ADMIN_TOKEN !== undefined) {
    try {
      admin = await AdminEndpoint.create(dp, { token: env.RTCP_ADMIN_TOKEN, path: ADMIN_PATH });
    } catch (error) {
      throw new TypeError(`RTCP_ADMIN_TOKEN: ${(error as Error).message}`);
    }
  }
} catch (error) {
  // A bad setting: say which, and stop, rather than serve with a setting the operator did not mean.
  console.error(`Cannot start the discover point: ${(error as Error).message}`);
  Deno.exit(1);
}

// Eviction (SIGINT, SIGKILL 5 s later) or Ctrl-C: every session gets a Close with a reason and the
// registry entries go at once; then nothing is left running and `deno serve` can exit.
const stop = shutdownSignal();
void stop.received.then(async () => {
  stop.dispose();
  await dp.close();
  registry?.close();
});

const links = dp.httpHandler();

/** The `deno serve` handler: WebSocket links at `/rtcp`, and the admin endpoint at `/admin/` if set. */
export default {
  fetch(request: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response> {
    const { pathname } = new URL(request.url);
    if (admin !== undefined && (pathname === "/admin" || pathname.startsWith(ADMIN_PATH))) {
      return admin.fetch(request);
    }
    return links(request, info);
  },
} satisfies Deno.ServeDefaultExport;
