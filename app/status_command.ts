/**
 * `rtcp status --admin URL [--token-file FILE]`: a discover point's state,
 * read from its admin endpoint's `status`, as aligned tables in the
 * terminal: totals, names, links and sessions.
 * @module
 */

import { parseArgs } from "node:util";
import type { DiscoverPointStatus } from "../lib/dp/report.ts";

/** The usage text of `status`. */
export const STATUS_USAGE = `Usage: rtcp status --admin URL [--token-file FILE]
   or: deno run --allow-net[=HOST:PORT] [--allow-read=FILE] cli.ts status --admin URL

Prints a discover point's names, links, sessions and totals, read from its
admin endpoint (dp.ts --admin HOST:PORT; /admin/ on Deno Deploy).

Options:
  --admin URL        The admin endpoint (required): http://127.0.0.1:9000 for
                     dp.ts --admin 127.0.0.1:9000, https://APP.deno.net/admin/
                     on Deno Deploy
  --token-file FILE  Send the token in FILE (the DP's --admin-token-file)
  -h, --help         Show this help`;

/** Milliseconds to wait for the admin endpoint's answer. */
const FETCH_TIMEOUT_MS = 10_000;

/** A table: a header row, then rows; columns whose header starts with a space are right-aligned. */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const right = header.map((title) => title.startsWith(" "));
  const titles = header.map((title) => title.trim());
  const widths = titles.map((title, i) =>
    Math.max(title.length, ...rows.map((row) => (row[i] ?? "").length))
  );
  const line = (cells: readonly string[]) =>
    cells.map((cell, i) => right[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))
      .join("  ").trimEnd();
  return [line(titles), ...rows.map(line)].join("\n");
}

/** `bytes` in B, KiB, MiB, GiB or TiB. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** `ms` as a short duration: `42 s`, `5 min 3 s`, `2 h 10 min`, `3 d 4 h`. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function shortKey(key: string | undefined): string {
  return key === undefined ? "-" : `${key.slice(0, 20)}…`;
}

function sum(record: Readonly<Record<string, number>>): number {
  return Object.values(record).reduce((a, b) => a + b, 0);
}

/** The report `rtcp status` prints for `status`. */
export function formatStatus(status: DiscoverPointStatus): string {
  const now = status.time;
  const roles = Object.fromEntries(
    Object.entries(status.links).map(([role, byTransport]) => [role, sum(byTransport)]),
  );
  const refusals = Object.entries(status.refusals).filter(([, count]) => count > 0);
  const up = status.startedAt === null ? "not started" : `up ${formatAge(now - status.startedAt)}`;
  const sections = [
    `Discover point ${status.dpName}, ${up}`,
    formatTable(["TOTALS", "", ""], [
      ["names", String(status.names), "registered here"],
      [
        "links",
        String(sum(roles)),
        `${roles.server} server, ${roles.client} client, ${roles.public} public, ${roles.peer_dp} peer DP, ${roles.handshake} handshaking`,
      ],
      [
        "sessions",
        String(status.sessions),
        `open; ${status.sessionsTotal} opened in all, ${status.forwarded} carried to other DPs now (${status.forwardedTotal} in all), ${status.relayedTotal} carried here`,
      ],
      [
        "bytes",
        formatBytes(status.bytesToServer),
        `clients to servers; ${formatBytes(status.bytesToClient)} servers to clients`,
      ],
      [
        "refused",
        String(sum(status.refusals)),
        refusals.length === 0 ? "-" : refusals.map(([reason, n]) => `${reason} ${n}`).join(", "),
      ],
      [
        "failed",
        String(status.handshakesFailed),
        `handshakes; ${status.proofsFailed} proofs`,
      ],
      [
        "buffered",
        formatBytes(status.bufferedBytes),
        `of ${formatBytes(status.maxBufferedBytes)} (maxBufferedBytes)`,
      ],
      [
        "memory",
        formatBytes(status.memory.rss),
        `resident; heap ${formatBytes(status.memory.heapUsed)} of ${
          formatBytes(status.memory.heapTotal)
        }`,
      ],
    ]),
  ];
  const servers = status.servers;
  sections.push(
    servers.length === 0 ? "No names registered." : formatTable(
      ["NAME", " LINKS", " SESSIONS", " OPENED", " TO SERVER", " TO CLIENT"],
      servers.map((server) => [
        server.name,
        String(server.linkCount),
        String(server.sessionCount),
        server.counts ? String(server.counts.sessionsTotal) : "(_other)",
        server.counts ? formatBytes(server.counts.bytesToServer) : "-",
        server.counts ? formatBytes(server.counts.bytesToClient) : "-",
      ]),
    ),
  );
  const links = servers.flatMap((server) =>
    server.links.map((link) => ({ name: server.name, link }))
  );
  if (links.length > 0) {
    sections.push(formatTable(
      ["NAME", "ROLE", "PEER", "TRANSPORT", " SINCE", " SESSIONS", "KEY", "EXTENSIONS"],
      links.map(({ name, link }) => [
        name,
        link.role === "peer_dp" ? "peer DP" : link.role,
        link.peer,
        link.transport,
        formatAge(now - link.since),
        String(link.sessions),
        shortKey(link.key),
        link.extensions.join(",") || "-",
      ]),
    ));
  }
  const sessions = servers.flatMap((server) =>
    server.sessions.map((session) => ({ name: server.name, session }))
  );
  sections.push(
    sessions.length === 0 ? "No open sessions." : formatTable(
      ["NAME", " ID", "CLIENT", "ADDRESS", " OPEN FOR", " TO SERVER", " TO CLIENT", "VIA"],
      sessions.map(({ name, session }) => [
        name,
        String(session.id),
        session.client,
        session.address,
        formatAge(now - session.since),
        formatBytes(session.bytesToServer),
        formatBytes(session.bytesToClient),
        session.via ?? "-",
      ]),
    ),
  );
  if (status.truncated) {
    sections.push(
      "(Lists cut short: the discover point has more than it lists; totals count all.)",
    );
  }
  return `${sections.join("\n\n")}\n`;
}

/** The `status` URL under the admin endpoint at `admin`. */
export function statusUrl(admin: string): URL {
  let base: URL;
  try {
    base = new URL(admin.includes("://") ? admin : `http://${admin}`);
  } catch {
    throw new TypeError(
      `Cannot use --admin "${admin}": expected a URL such as http://127.0.0.1:9000`,
    );
  }
  if (base.protocol !== "http:" && base.protocol !== "https:") {
    throw new TypeError(`Cannot use --admin "${admin}": expected http:// or https://`);
  }
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  return new URL("status", base);
}

/** Reads a token file (white space around the token is not part of it). */
async function readToken(path: string): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch (error) {
    const hint = error instanceof Deno.errors.NotCapable ? `; run with --allow-read=${path}` : "";
    throw new Error(`Cannot read --token-file ${path}: ${(error as Error).message}${hint}`);
  }
}

/**
 * Runs `rtcp status`.
 * @param args The arguments after `status`.
 * @returns The exit code: 0 once printed, 1 if the endpoint cannot be read, 2 for bad flags.
 */
export async function runStatus(args: string[]): Promise<number> {
  let values: { admin?: string; "token-file"?: string; help?: boolean };
  let url: URL;
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        admin: { type: "string" },
        "token-file": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
    if (values.help) {
      console.log(STATUS_USAGE);
      return 0;
    }
    if (values.admin === undefined) throw new TypeError("Cannot run status: --admin is required");
    url = statusUrl(values.admin);
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${STATUS_USAGE}`);
    return 2;
  }
  try {
    const headers = new Headers({ accept: "application/json" });
    const tokenFile = values["token-file"];
    if (tokenFile !== undefined) {
      headers.set("authorization", `Bearer ${await readToken(tokenFile)}`);
    }
    let response: Response;
    try {
      response = await fetch(url, { headers, signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    } catch (error) {
      const reason = error instanceof DOMException && error.name === "TimeoutError"
        ? `no answer within ${FETCH_TIMEOUT_MS} ms`
        : (error as Error).message;
      throw new Error(`Cannot read ${url}: ${reason}`);
    }
    if (!response.ok) {
      const body = (await response.text()).trim();
      const hint = response.status === 401 && tokenFile === undefined
        ? " (pass --token-file FILE)"
        : "";
      throw new Error(`Cannot read ${url}: HTTP ${response.status}${hint}: ${body}`);
    }
    let status: DiscoverPointStatus;
    try {
      status = await response.json() as DiscoverPointStatus;
      console.log(formatStatus(status).trimEnd());
    } catch (error) {
      throw new Error(
        `Cannot read ${url}: the answer is not a discover point's status (${
          (error as Error).message
        }); is --admin its admin endpoint?`,
      );
    }
    return 0;
  } catch (error) {
    console.error((error as Error).message);
    return 1;
  }
}
