/**
 * The discover point's settings as `dp.ts` flags and as `deploy.ts`
 * environment variables: one table of limits, so the two never drift apart.
 * `--max-links N` is `RTCP_MAX_LINKS=N`, and so on.
 * @module
 */

import type { DiscoverPointOptions } from "../lib/dp/discover_point.ts";
import { NamesFile, type UnlistedNames } from "../lib/dp/policy.ts";
import type { Registry } from "../lib/dp/registry.ts";

/** Where a discover point keeps its cluster registry, as `--registry` or `RTCP_REGISTRY` says. */
export type RegistrySetting =
  /** In this process only: a cluster of one (the default). */
  | { readonly kind: "memory" }
  /** Deno KV: a file path, a KV Connect URL, or (no location) Deno Deploy's own KV. */
  | { readonly kind: "kv"; readonly location?: string };

/**
 * Reads `memory`, `kv`, `kv:PATH` or `kv:URL`.
 * @throws {TypeError} Naming `what`, if the value is none of these.
 */
export function parseRegistry(what: string, value: string): RegistrySetting {
  if (value === "memory") return { kind: "memory" };
  if (value === "kv") return { kind: "kv" };
  if (value.startsWith("kv:") && value.length > 3) return { kind: "kv", location: value.slice(3) };
  throw new TypeError(
    `Cannot use ${what} "${value}": expected memory, kv (Deno Deploy's KV), kv:PATH or kv:URL`,
  );
}

/**
 * Opens the registry a setting names; `undefined` for `memory`.
 * @param ttl Milliseconds a dead discover point's entries stay listed.
 */
export async function openRegistry(
  setting: RegistrySetting,
  ttl?: number,
): Promise<(Registry & { close(): void }) | undefined> {
  if (setting.kind === "memory") return undefined;
  // Loaded only for a cluster: a discover point alone does not hold its code.
  const { KvRegistry } = await import("../lib/dp/kv_registry.ts");
  return await KvRegistry.open(setting.location, ttl === undefined ? {} : { ttl });
}

/** The limit flags of `dp.ts` and the options they set. */
export const LIMIT_FLAGS = {
  "max-line-bytes": "maxLineBytes",
  "handshake-timeout": "handshakeTimeout",
  "ack-timeout": "ackTimeout",
  "max-links-per-server": "maxLinksPerServer",
  "max-sessions-per-server": "maxSessionsPerServer",
  "max-sessions": "maxSessions",
  "max-pending-per-server": "maxPendingPerServer",
  "max-sessions-per-client-link": "maxSessionsPerClientLink",
  "max-links": "maxLinks",
  "max-names": "maxNames",
  "max-links-per-ip": "maxLinksPerSource",
  "max-handshakes-per-ip": "maxHandshakesPerSource",
  "max-buffered-bytes": "maxBufferedBytes",
  "max-metric-names": "maxMetricNames",
  "idle-timeout": "idleTimeout",
  "max-link-queue-bytes": "maxLinkQueueBytes",
  "shutdown-grace": "shutdownGrace",
} as const;

/**
 * Parses a whole number given as `what` (a flag or a variable).
 * @throws {TypeError} Naming it, if the value is not a whole number.
 */
export function wholeNumber(what: string, value: string): number {
  const number = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(number)) {
    throw new TypeError(`Cannot use ${what} "${value}": expected a whole number`);
  }
  return number;
}

/** The environment variable of a flag: `max-links` is `RTCP_MAX_LINKS`. */
export function envName(flag: string): string {
  return `RTCP_${flag.toUpperCase().replaceAll("-", "_")}`;
}

/**
 * Reads a discover point's options from environment variables (for Deno
 * Deploy, where there is no command line): every limit as `RTCP_<FLAG>`,
 * `RTCP_NAME`, `RTCP_NAMES` (the names file's JSON itself) and
 * `RTCP_UNLISTED` (`open` or `refuse`).
 * @throws {TypeError} Naming the variable that is wrong.
 */
export function optionsFromEnv(
  env: Readonly<Record<string, string | undefined>>,
): DiscoverPointOptions {
  const options: DiscoverPointOptions = {};
  for (const [flag, key] of Object.entries(LIMIT_FLAGS)) {
    const value = env[envName(flag)];
    if (value !== undefined) options[key] = wholeNumber(envName(flag), value);
  }
  if (env.RTCP_NAME !== undefined) options.name = env.RTCP_NAME;
  if (env.RTCP_ADVERTISE !== undefined) options.advertise = env.RTCP_ADVERTISE;
  const unlisted = env.RTCP_UNLISTED ?? "open";
  if (unlisted !== "open" && unlisted !== "refuse") {
    throw new TypeError(`Cannot use RTCP_UNLISTED "${unlisted}": expected open or refuse`);
  }
  if (env.RTCP_NAMES !== undefined) {
    options.names = NamesFile.parse(env.RTCP_NAMES, unlisted as UnlistedNames);
  } else if (unlisted === "refuse") {
    throw new TypeError(
      "Cannot use RTCP_UNLISTED=refuse without RTCP_NAMES: every name would be refused",
    );
  }
  return options;
}
