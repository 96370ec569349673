/**
 * What a discover point reports about itself: counts and counters
 * ({@linkcode DiscoverPointMetrics}, for `/metrics`), and the same with every
 * name's links and sessions ({@linkcode DiscoverPointStatus}, for `/status`
 * and the status page). Built on demand from the discover point's own
 * tables; nothing here runs on the data path.
 * @module
 */

import type { Link } from "../link/link.ts";
import { type Counters, OTHER_NAMES, REFUSAL_REASONS, type RefusalReason } from "./counters.ts";
import type { ServerLink } from "./session.ts";

/**
 * What a link (or public-port connection) is to the discover point:
 * `server` (an indirect server's), `client` (an indirect client's),
 * `public` (a plain TCP connection on a public port), `peer_dp` (to or from
 * another discover point of the cluster, carrying one session), or
 * `handshake` (not yet said).
 */
export type LinkRole = "server" | "client" | "public" | "peer_dp" | "handshake";

/** Every {@linkcode LinkRole}, in the order reports list them. */
export const LINK_ROLES: readonly LinkRole[] = [
  "server",
  "client",
  "public",
  "peer_dp",
  "handshake",
];

/**
 * What a link runs over: `tcp`, `tls`, `ws` (WebSocket, TLS ended before
 * the discover point, as on Deno Deploy, included), or `wss` (a link this
 * discover point dialled to another over TLS WebSocket).
 */
export type LinkTransport = "tcp" | "tls" | "ws" | "wss";

/** Every {@linkcode LinkTransport}. */
export const LINK_TRANSPORTS: readonly LinkTransport[] = ["tcp", "tls", "ws", "wss"];

/** What the discover point records about each link when it comes. */
export interface LinkInfo {
  /** When the link came (`Date.now()`). */
  readonly since: number;
  /** What it runs over. */
  readonly transport: LinkTransport;
  /** What it is, once its handshake says. */
  role: LinkRole;
}

/** One name's counters (or `_other`'s, for the names past the cap). */
export interface NameCounts {
  /** The name, or `_other`. */
  readonly name: string;
  /** Sessions opened. */
  readonly sessionsTotal: number;
  /** Bytes delivered from clients to servers. */
  readonly bytesToServer: number;
  /** Bytes delivered from servers to clients. */
  readonly bytesToClient: number;
}

/** The process's memory, from `Deno.memoryUsage()`, in bytes. */
export interface MemoryCounts {
  /** Resident set size. */
  readonly rss: number;
  /** V8 heap reserved. */
  readonly heapTotal: number;
  /** V8 heap in use. */
  readonly heapUsed: number;
  /** Memory outside the V8 heap that JavaScript objects hold (buffers). */
  readonly external: number;
}

/** What {@linkcode DiscoverPoint.metrics} reports: counts now, and counters since the start. */
export interface DiscoverPointMetrics {
  /** When this was taken (`Date.now()`). */
  readonly time: number;
  /** When the discover point started (`Date.now()`), or `null` if it has not. */
  readonly startedAt: number | null;
  /** The discover point's name (its Aloha `N`). */
  readonly dpName: string;
  /** Names registered here (with at least one link). */
  readonly names: number;
  /** Links and public-port connections open now, by role and transport. */
  readonly links: Readonly<Record<LinkRole, Readonly<Record<LinkTransport, number>>>>;
  /** Sessions open now (those carried to other discover points included). */
  readonly sessions: number;
  /** Sessions opened since the start. */
  readonly sessionsTotal: number;
  /** Of the open sessions, those carried to another discover point of the cluster. */
  readonly forwarded: number;
  /** Sessions carried to another discover point of the cluster since the start. */
  readonly forwardedTotal: number;
  /** Sessions other discover points carried here since the start (whether or not they opened). */
  readonly relayedTotal: number;
  /** Sessions refused since the start, by reason. */
  readonly refusals: Readonly<Record<RefusalReason, number>>;
  /** Links (and TLS connections) that ended before their handshake was done. */
  readonly handshakesFailed: number;
  /** Proofs of a key that did not hold. */
  readonly proofsFailed: number;
  /** Bytes waiting in sessions now, all together. */
  readonly bufferedBytes: number;
  /** The budget for those bytes (`maxBufferedBytes`): new sessions are refused above it. */
  readonly maxBufferedBytes: number;
  /** Bytes delivered from clients to servers since the start. */
  readonly bytesToServer: number;
  /** Bytes delivered from servers to clients since the start. */
  readonly bytesToClient: number;
  /** Counters by name: each counted name, then `_other`. */
  readonly traffic: readonly NameCounts[];
  /** The process's memory. */
  readonly memory: MemoryCounts;
}

/** A link that serves a name: a server's own, or one to another discover point carrying a session. */
export interface LinkStatus {
  /** `server`, or `peer_dp` for a link to the discover point that holds the name. */
  readonly role: "server" | "peer_dp";
  /** The far end's address (`host:port`). */
  readonly peer: string;
  /** When it came (`Date.now()`). */
  readonly since: number;
  /** What it runs over. */
  readonly transport: LinkTransport;
  /** The extensions both ends agreed on. */
  readonly extensions: readonly string[];
  /** The key the server proved, if any. */
  readonly key?: string;
  /** Sessions open on it. */
  readonly sessions: number;
  /** Connects sent on it and waiting for an Ack. */
  readonly waiting: number;
}

/** One open session. */
export interface SessionStatus {
  /** Its number on the server's link. */
  readonly id: number;
  /** The client as named to the server (its Aloha name, or its address). */
  readonly client: string;
  /** The client's address as the discover point (or the one that carried it here) saw it. */
  readonly address: string;
  /** The key the client proved, if any. */
  readonly key?: string;
  /** When it opened (`Date.now()`). */
  readonly since: number;
  /** Bytes delivered from the client to the server. */
  readonly bytesToServer: number;
  /** Bytes delivered from the server to the client. */
  readonly bytesToClient: number;
  /** For a session carried to another discover point: that one's address. */
  readonly via?: string;
}

/** One name, with its links and sessions. */
export interface NameStatus {
  /** The name. */
  readonly name: string;
  /** Its links here (the list may be cut short: see `linkCount`). */
  readonly links: readonly LinkStatus[];
  /** Its open sessions (the list may be cut short: see `sessionCount`). */
  readonly sessions: readonly SessionStatus[];
  /** How many links it has. */
  readonly linkCount: number;
  /** How many sessions are open to it. */
  readonly sessionCount: number;
  /** Its counters, unless it counts under `_other`. */
  readonly counts?: NameCounts;
}

/** What {@linkcode DiscoverPoint.status} reports: the metrics, and every name's links and sessions. */
export interface DiscoverPointStatus extends DiscoverPointMetrics {
  /** Names, sorted, with their links and sessions. */
  readonly servers: readonly NameStatus[];
  /** Whether a list was cut short at the limits of {@linkcode StatusOptions}. */
  readonly truncated: boolean;
}

/** Bounds on what {@linkcode DiscoverPoint.status} lists, so that a large discover point's report stays small. */
export interface StatusOptions {
  /** Most names listed. @default {1000} */
  maxNames?: number;
  /** Most links listed, all names together. @default {1000} */
  maxLinks?: number;
  /** Most sessions listed, all names together. @default {1000} */
  maxSessions?: number;
}

/** The discover point's tables, as a report reads them. */
export interface ReportSource {
  /** Its Aloha name. */
  readonly dpName: string;
  /** When it started. */
  readonly startedAt: number | undefined;
  /** Registered server links by name. */
  readonly pools: ReadonlyMap<string, readonly ServerLink[]>;
  /** Links to other discover points, each carrying a session. */
  readonly forwarded: ReadonlySet<ServerLink>;
  /** Every open link. */
  readonly links: ReadonlySet<Link>;
  /** What was recorded about each link. */
  readonly linkInfo: WeakMap<Link, LinkInfo>;
  /** Public-port connections open now. */
  readonly publicClients: number;
  /** The counters. */
  readonly counters: Counters;
  /** Bytes waiting in sessions now. */
  readonly bufferedBytes: number;
  /** `maxBufferedBytes`. */
  readonly maxBufferedBytes: number;
}

function zeroLinks(): Record<LinkRole, Record<LinkTransport, number>> {
  const links = {} as Record<LinkRole, Record<LinkTransport, number>>;
  for (const role of LINK_ROLES) {
    links[role] = Object.fromEntries(LINK_TRANSPORTS.map((transport) => [transport, 0])) as Record<
      LinkTransport,
      number
    >;
  }
  return links;
}

function memory(): MemoryCounts {
  const { rss, heapTotal, heapUsed, external } = Deno.memoryUsage();
  return { rss, heapTotal, heapUsed, external };
}

/** Every server link: registered ones, then those carrying sessions to other discover points. */
function* serverLinks(source: ReportSource): Generator<ServerLink> {
  for (const pool of source.pools.values()) yield* pool;
  yield* source.forwarded;
}

/** Counts and counters of the discover point `source` describes. */
export function collectMetrics(source: ReportSource): DiscoverPointMetrics {
  const links = zeroLinks();
  for (const link of source.links) {
    const info = source.linkInfo.get(link);
    if (info !== undefined) links[info.role][info.transport]++;
  }
  links.public.tcp += source.publicClients;
  let sessions = 0;
  for (const server of serverLinks(source)) sessions += server.sessions.size;
  let forwarded = 0;
  for (const upstream of source.forwarded) forwarded += upstream.sessions.size;
  const { counters } = source;
  const traffic: NameCounts[] = [];
  let sessionsTotal = 0;
  let bytesToServer = 0;
  let bytesToClient = 0;
  for (const record of counters.traffic()) {
    const counts = {
      name: record.name,
      sessionsTotal: record.sessions,
      bytesToServer: record.toServer.bytes,
      bytesToClient: record.toClient.bytes,
    };
    traffic.push(counts);
    sessionsTotal += counts.sessionsTotal;
    bytesToServer += counts.bytesToServer;
    bytesToClient += counts.bytesToClient;
  }
  const refusals = {} as Record<RefusalReason, number>;
  for (const reason of REFUSAL_REASONS) refusals[reason] = counters.refusals[reason];
  return {
    time: Date.now(),
    startedAt: source.startedAt ?? null,
    dpName: source.dpName,
    names: source.pools.size,
    links,
    sessions,
    sessionsTotal,
    forwarded,
    forwardedTotal: counters.forwardedSessions,
    relayedTotal: counters.relayedSessions,
    refusals,
    handshakesFailed: counters.handshakesFailed,
    proofsFailed: counters.proofsFailed,
    bufferedBytes: source.bufferedBytes,
    maxBufferedBytes: source.maxBufferedBytes,
    bytesToServer,
    bytesToClient,
    traffic,
    memory: memory(),
  };
}

/** What is left to list, all names together. */
interface Room {
  links: number;
  sessions: number;
  truncated: boolean;
}

function linkStatus(
  source: ReportSource,
  server: ServerLink,
  role: LinkStatus["role"],
): LinkStatus {
  const link = server.link;
  const info = source.linkInfo.get(link);
  return {
    role,
    peer: link.peer,
    since: info?.since ?? 0,
    transport: info?.transport ?? "tcp",
    extensions: [...link.features],
    ...(server.key === undefined ? {} : { key: server.key }),
    sessions: server.sessions.size,
    waiting: server.waiting,
  };
}

function sessionStatuses(server: ServerLink, via: string | undefined, room: Room): SessionStatus[] {
  const list: SessionStatus[] = [];
  for (const session of server.sessions.values()) {
    if (room.sessions <= 0) {
      room.truncated = true;
      break;
    }
    room.sessions--;
    const { client } = session;
    list.push({
      id: session.id,
      client: client.label,
      address: client.address,
      ...(client.key === undefined ? {} : { key: client.key }),
      since: session.since,
      bytesToServer: session.toServer.delivered,
      bytesToClient: session.toClient.delivered,
      ...(via === undefined ? {} : { via }),
    });
  }
  return list;
}

/** The metrics of `source`, with its names' links and sessions, within the bounds of `options`. */
export function collectStatus(
  source: ReportSource,
  options: StatusOptions = {},
): DiscoverPointStatus {
  const metrics = collectMetrics(source);
  const byName = new Map<string, { pool: readonly ServerLink[]; forwarded: ServerLink[] }>();
  for (const [name, pool] of source.pools) byName.set(name, { pool, forwarded: [] });
  for (const upstream of source.forwarded) {
    let entry = byName.get(upstream.name);
    if (entry === undefined) byName.set(upstream.name, entry = { pool: [], forwarded: [] });
    entry.forwarded.push(upstream);
  }
  const maxNames = options.maxNames ?? 1000;
  const room: Room = {
    links: options.maxLinks ?? 1000,
    sessions: options.maxSessions ?? 1000,
    truncated: byName.size > maxNames,
  };
  const servers: NameStatus[] = [];
  for (const name of [...byName.keys()].sort().slice(0, maxNames)) {
    const { pool, forwarded } = byName.get(name)!;
    const links: LinkStatus[] = [];
    const sessions: SessionStatus[] = [];
    let sessionCount = 0;
    let counted: ServerLink | undefined;
    for (
      const [server, role] of [
        ...pool.map((server) => [server, "server"] as const),
        ...forwarded.map((server) => [server, "peer_dp"] as const),
      ]
    ) {
      counted ??= server;
      sessionCount += server.sessions.size;
      if (room.links > 0) {
        room.links--;
        links.push(linkStatus(source, server, role));
      } else room.truncated = true;
      sessions.push(
        ...sessionStatuses(server, role === "peer_dp" ? server.link.peer : undefined, room),
      );
    }
    const traffic = counted?.traffic;
    servers.push({
      name,
      links,
      sessions,
      linkCount: pool.length + forwarded.length,
      sessionCount,
      ...(traffic === undefined || traffic.name === OTHER_NAMES ? {} : {
        counts: {
          name,
          sessionsTotal: traffic.sessions,
          bytesToServer: traffic.toServer.bytes,
          bytesToClient: traffic.toClient.bytes,
        },
      }),
    });
  }
  return { ...metrics, servers, truncated: room.truncated };
}
