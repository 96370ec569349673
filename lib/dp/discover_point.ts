/**
 * The Discover Point: accepts links from indirect servers and clients, keeps
 * the name registry and each server's pool, and routes sessions between them
 * (PROTOCOL.md Part 2 items 4–10). Public ports let plain TCP clients in too.
 * @module
 */

import { getLogger } from "../_log.ts";
import { sleep } from "../_backoff.ts";
import { DeadlineQueue } from "../_deadline_queue.ts";
import { ProtocolError } from "../errors.ts";
import type { Identity } from "../link/auth.ts";
import { answerAloha, dialDiscoverPoint, refuse } from "../link/handshake.ts";
import { DP_FEATURES, Feature, type KeepaliveOptions, Link } from "../link/link.ts";
import { LinkClient, SocketClient } from "./client.ts";
import { MultiplexedClient } from "./multiplexed_client.ts";
import { Gate, type Verdict } from "./gate.ts";
import type { LinkPort } from "./tls_port.ts";
import { type HttpHandler, LINK_PATH, webSocketLinkHandler } from "./http.ts";
import { BufferBudget } from "./pipe.ts";
import { Counters, DEFAULT_MAX_COUNTED_NAMES, type RefusalReason } from "./counters.ts";
import {
  collectMetrics,
  collectStatus,
  type DiscoverPointMetrics,
  type DiscoverPointStatus,
  type LinkInfo,
  type LinkTransport,
  type ReportSource,
  type StatusOptions,
} from "./report.ts";
import { type NamePolicy, OPEN_NAMES } from "./policy.ts";
import { type PortGrant, type PortRange, PublicPorts } from "./public_ports.ts";
import {
  type Holder,
  type Membership,
  MemoryRegistry,
  newInstanceId,
  type Registry,
} from "./registry.ts";
import {
  type ClientEnd,
  LoadCount,
  type PendingConnect,
  ServerLink,
  type SessionSettings,
} from "./session.ts";
import { MAX_LINE_BYTES } from "../wire/codec.ts";
import {
  type AlohaMessage,
  type AuthMessage,
  clipReason,
  type ConnectMessage,
  MAX_NAME_LENGTH,
  type Message,
  MessageType,
  messageTypeName,
  Role,
} from "../wire/message.ts";
import { formatAddress, TcpTransport, type Transport } from "../transport/tcp.ts";
import { WebSocketTransport } from "../transport/websocket.ts";
import { NodeSocketTransport } from "../transport/node_socket.ts";
import { parseDiscoverPoint } from "../transport/dial.ts";

const logger = getLogger(["rtcp", "dp"]);

/** Pause after a failed accept (out of file descriptors, say) before accepting again. */
const ACCEPT_RETRY_MS = 100;

/** The port a discover point listens on unless told otherwise. */
export const DEFAULT_PORT = 7000;

/** Options of {@linkcode DiscoverPoint}. */
export interface DiscoverPointOptions {
  /** Address to listen on. @default {"0.0.0.0"} */
  hostname?: string;
  /**
   * Port to listen on for links; 0 picks a free one; `null` for none (links
   * then come only through {@linkcode DiscoverPoint.httpHandler} or
   * {@linkcode DiscoverPoint.serveLink}, as on Deno Deploy).
   * @default {7000}
   */
  port?: number | null;
  /** Public ports: plain TCP connections to `port` become sessions to the server `name`. @default {{}} */
  expose?: Readonly<Record<string, number>>;
  /** The name in the discover point's Aloha. @default {"rtcp-dp"} */
  name?: string;
  /** Longest message line accepted, in bytes. @default {1048576} */
  maxLineBytes?: number;
  /** Milliseconds a new link has to send a valid Aloha (and a client its Connect). @default {10000} */
  handshakeTimeout?: number;
  /** Milliseconds an indirect server has to answer a Connect. @default {10000} */
  ackTimeout?: number;
  /** Most links one ISName may have in its pool. @default {64} */
  maxLinksPerServer?: number;
  /** Most sessions open (or opening) to one ISName. @default {10000} */
  maxSessionsPerServer?: number;
  /** Most sessions open (or opening) in total. @default {100000} */
  maxSessions?: number;
  /** Most Connects waiting for an Ack on one ISName. @default {1000} */
  maxPendingPerServer?: number;
  /**
   * Most sessions open (or opening) on one indirect client's link that
   * agreed on `multiplex`; a Connect beyond it is refused. @default {1024}
   */
  maxSessionsPerClientLink?: number;
  /**
   * Milliseconds a closing link may take to flush what it has queued, at
   * shutdown and whenever a link ends: a peer that never reads cannot keep it.
   * @default {2000}
   */
  shutdownGrace?: number;
  /**
   * Most links and public-port connections open at once; each session on a
   * multiplexed client link past its first counts as one more. @default {20000}
   */
  maxLinks?: number;
  /** Most ISNames registered at once. @default {10000} */
  maxNames?: number;
  /**
   * Most links and public-port connections from one source address (counted
   * as `maxLinks` counts them); 0 for no limit. @default {0}
   */
  maxLinksPerSource?: number;
  /** Most links from one source address still in their handshake; 0 for no limit. @default {1024} */
  maxHandshakesPerSource?: number;
  /**
   * Bytes waiting in session pipes, all sessions together, above which new
   * sessions are refused (with a reason) until it drains.
   * @default {1073741824}
   */
  maxBufferedBytes?: number;
  /** Milliseconds without a byte either way after which a session is closed; 0 for never. @default {0} */
  idleTimeout?: number;
  /**
   * Most names with counters of their own in {@linkcode DiscoverPoint.metrics};
   * the others count together under `_other`.
   * @default {1000}
   */
  maxMetricNames?: number;
  /**
   * Bytes queued towards one link or connection above which its peer is taken
   * to be not reading, and it is dropped. Data waits at 1 MiB on TCP and TLS
   * links and 8 MiB on WebSocket links, so keep this above about 10 MiB, or
   * peers that do read may be dropped too.
   * @default {16777216}
   */
  maxLinkQueueBytes?: number;
  /** Who may register and reach which names. @default {every name open to everyone} */
  names?: NamePolicy;
  /**
   * Serve the link port over TLS with this PEM certificate chain and key.
   * Public ports stay plain TCP: their clients bring their own TLS.
   */
  tls?: { readonly cert: string; readonly key: string };
  /** Keepalive timing on links whose peer agreed on `keepalive`. @default {{ interval: 15000, timeout: 10000 }} */
  keepalive?: KeepaliveOptions;
  /** Largest flow-control window per session direction, in bytes: what one session may buffer here. @default {4194304} */
  maxWindow?: number;
  /**
   * Extensions to offer (PROTOCOL.md Part 3); `[]` makes the discover point speak Parts 1 and 2 only.
   * @default {["half-close", "keepalive", "flow-control", "binary", "auth", "pool", "relay"]}
   */
  features?: readonly string[];
  /**
   * Where the discover points of a cluster record which of them holds which
   * name (`KvRegistry` for several processes). A client whose name is held
   * elsewhere is carried there.
   * @default {a MemoryRegistry of its own: a cluster of one}
   */
  registry?: Registry;
  /**
   * How the other discover points of the cluster dial this one:
   * `host:port`, `tls://host:port`, `ws://…`; port 0 (`host:0`) stands for
   * the port this one listens on. Without it this one cannot be dialled (as
   * on Deno Deploy): clients elsewhere wait for its servers to open a link
   * where they are.
   */
  advertise?: string;
  /**
   * The cluster's key: proven on links to other discover points, which then
   * pass on who their client is. Links that prove it are trusted to.
   */
  clusterKey?: Identity;
  /** For `tls://` and `wss://` members: PEM certificates to trust instead of the system roots. */
  clusterCaCerts?: readonly string[];
  /**
   * Ports a server may ask for as its name's public port (extension
   * `public-port`); a port closes when its name's last link goes.
   * @default {[]: none}
   */
  allowPorts?: readonly PortRange[];
}

/** What {@linkcode DiscoverPoint.stats} reports. */
export interface DiscoverPointStats {
  /** Open links (indirect servers' and clients'). */
  readonly links: number;
  /** Registered ISNames. */
  readonly servers: number;
  /** Open sessions (public-port sessions included). */
  readonly sessions: number;
  /** Of those, sessions carried to another discover point of the cluster. */
  readonly forwarded: number;
  /** Bytes waiting in session pipes, all sessions together. */
  readonly bufferedBytes: number;
  /** The most bytes waiting in any one session (both directions). */
  readonly maxSessionBufferedBytes: number;
}

type Limits = Required<
  Omit<
    DiscoverPointOptions,
    | "hostname"
    | "port"
    | "expose"
    | "name"
    | "keepalive"
    | "maxWindow"
    | "features"
    | "names"
    | "tls"
    | "registry"
    | "advertise"
    | "clusterKey"
    | "clusterCaCerts"
    | "allowPorts"
  >
>;

const DEFAULT_LIMITS: Limits = {
  maxLineBytes: MAX_LINE_BYTES,
  handshakeTimeout: 10_000,
  ackTimeout: 10_000,
  maxLinksPerServer: 64,
  maxSessionsPerServer: 10_000,
  maxSessions: 100_000,
  maxPendingPerServer: 1_000,
  maxSessionsPerClientLink: 1024,
  shutdownGrace: 2_000,
  maxLinks: 20_000,
  maxNames: 10_000,
  maxLinksPerSource: 0,
  maxHandshakesPerSource: 1024,
  maxBufferedBytes: 1024 ** 3,
  idleTimeout: 0,
  maxMetricNames: DEFAULT_MAX_COUNTED_NAMES,
  maxLinkQueueBytes: 16 * 1024 * 1024,
};

/**
 * How a relayed session's refusal ends when the member does not hold the
 * name (a stale registry entry): the entering member then tries the next one.
 */
const NOT_HELD_HERE = "at the discover point it was relayed to";

/**
 * Milliseconds to reach another member and exchange Alohas: one that does not
 * answer costs a client this much before the next holder is tried.
 */
const MEMBER_DIAL_MS = 3_000;

/** Milliseconds a member that did not answer is tried after the others. */
const SILENT_MS = 10_000;

/** Least milliseconds between two More messages for one name (a server adds one link per More). */
const MORE_INTERVAL = 250;

/** How often the idle sweep runs, as a share of `idleTimeout`. */
const IDLE_SWEEPS_PER_TIMEOUT = 4;

/** Why a session cannot be taken now: the reason the client is told, and how it counts. */
interface Refusal {
  readonly reason: string;
  readonly kind: RefusalReason;
}

/** What a link that came in runs over, by its transport's class. */
function transportOf(transport: Transport): LinkTransport {
  if (transport instanceof WebSocketTransport) return "ws";
  if (transport instanceof NodeSocketTransport) return "tls";
  return "tcp";
}

/** `items` in random order: sessions spread over the members that hold a name. */
function shuffled<T>(items: readonly T[]): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy;
}

/** A handshake deadline: aborts its signal when the time is up. */
interface Deadline {
  readonly signal: AbortSignal;
  cancel(): void;
}

function checkLimit(name: keyof Limits, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`Cannot use ${name} ${value}: expected a whole number of at least 0`);
  }
}

function checkPort(what: string, port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`Cannot listen on ${what} port ${port}: expected 0 to 65535`);
  }
}

/**
 * A discover point. Start it, read its `addr`, close it.
 * @example
 * ```ts ignore
 * await using dp = new DiscoverPoint({ port: 7000 });
 * await dp.start();
 * console.log(`Listening on ${dp.addr.hostname}:${dp.addr.port}`);
 * ```
 */
export class DiscoverPoint implements AsyncDisposable {
  readonly #hostname: string;
  readonly #port: number | null;
  readonly #expose: Readonly<Record<string, number>>;
  readonly #name: string;
  readonly #limits: Limits;
  readonly #keepalive: KeepaliveOptions | undefined;
  readonly #maxWindow: number | undefined;
  readonly #features: readonly string[];
  readonly #names: NamePolicy;
  readonly #tls: { readonly cert: string; readonly key: string } | undefined;
  #listener: LinkPort | undefined;
  #starting = false;
  readonly #publicListeners = new Map<string, Deno.TcpListener>();
  readonly #publicPorts: PublicPorts;
  readonly #pools = new Map<string, ServerLink[]>();
  /** Links to other discover points, each carrying one of our clients' sessions. */
  readonly #forwarded = new Set<ServerLink>();
  /** Clients waiting here for a link of a name that only undialable members hold, by name. */
  readonly #waiting = new Map<string, Set<(arrived: boolean) => void>>();
  /** When a More was last sent for each name. */
  readonly #askedMore = new Map<string, number>();
  readonly #registry: Registry;
  readonly #instance = newInstanceId();
  #advertise: string | undefined;
  /** Members that did not answer lately, and until when they are tried last. */
  readonly #silent = new Map<string, number>();
  readonly #clusterKey: Identity | undefined;
  readonly #clusterCaCerts: readonly string[] | undefined;
  #membership: Membership | undefined;
  readonly #links = new Set<Link>();
  /** When each link came, over what, and what it is: for the reports. */
  readonly #linkInfo = new WeakMap<Link, LinkInfo>();
  readonly #counters: Counters;
  #startedAt: number | undefined;
  readonly #clients = new Set<SocketClient | LinkClient>();
  readonly #tasks = new Set<Promise<void>>();
  /** Connections being served (see {@linkcode #count}), and who waits for none to be left. */
  #serving = 0;
  #allServed: PromiseWithResolvers<void> | undefined;
  readonly #settings: SessionSettings;
  readonly #gate: Gate;
  #idleSweep: ReturnType<typeof setInterval> | undefined;
  #closing = false;
  readonly #stop = new AbortController();
  /** Every Connect's Ack deadline, behind one timer. */
  readonly #ackDeadlines: DeadlineQueue<PendingConnect>;
  /** Every link's handshake deadline (its signal aborts), behind one timer. */
  readonly #handshakeDeadlines: DeadlineQueue<AbortController>;

  /** Creates a discover point; nothing listens until {@linkcode start}. */
  constructor(options: DiscoverPointOptions = {}) {
    this.#hostname = options.hostname ?? "0.0.0.0";
    this.#port = options.port === undefined ? DEFAULT_PORT : options.port;
    if (this.#port !== null) checkPort("discover point", this.#port);
    this.#expose = { ...options.expose };
    for (const [name, port] of Object.entries(this.#expose)) checkPort(`public "${name}"`, port);
    this.#name = options.name ?? "rtcp-dp";
    const limits = { ...DEFAULT_LIMITS };
    for (const key of Object.keys(limits) as (keyof Limits)[]) {
      const value = options[key];
      if (value !== undefined) {
        checkLimit(key, value);
        limits[key] = value;
      }
    }
    this.#limits = limits;
    this.#ackDeadlines = new DeadlineQueue(
      limits.ackTimeout,
      (pending) => this.#ackOverdue(pending),
    );
    this.#handshakeDeadlines = new DeadlineQueue(
      limits.handshakeTimeout,
      (controller) =>
        controller.abort(
          new ProtocolError(
            `Cannot handshake: no complete handshake within ${limits.handshakeTimeout} ms (limit handshakeTimeout)`,
          ),
        ),
    );
    this.#keepalive = options.keepalive;
    this.#maxWindow = options.maxWindow;
    this.#features = options.features ?? DP_FEATURES;
    this.#registry = options.registry ?? new MemoryRegistry();
    this.#advertise = options.advertise;
    this.#clusterKey = options.clusterKey;
    this.#clusterCaCerts = options.clusterCaCerts;
    this.#publicPorts = new PublicPorts(
      this.#hostname,
      options.allowPorts ?? [],
      (name, listener) =>
        this.#track(this.#acceptLoop(listener, (conn) => this.#servePublic(name, conn))),
    );
    this.#names = options.names ?? OPEN_NAMES;
    this.#tls = options.tls;
    this.#counters = new Counters(limits.maxMetricNames);
    this.#settings = {
      maxWindow: options.maxWindow,
      budget: new BufferBudget(),
      load: new LoadCount(),
      counters: this.#counters,
    };
    this.#gate = new Gate({
      names: this.#names,
      dpName: this.#name,
      maxLinks: limits.maxLinks,
      maxLinksPerSource: limits.maxLinksPerSource,
      maxHandshakesPerSource: limits.maxHandshakesPerSource,
      registryRefusal: (name) => this.#registryRefusal(name),
      clusterKey: options.clusterKey?.publicKey,
      onProofFailed: () => this.#counters.proofsFailed++,
    });
    if (options.names !== undefined && !this.#features.includes(Feature.Auth)) {
      throw new TypeError(
        'Cannot protect names without extension auth: add "auth" to features (or leave features out)',
      );
    }
    for (const name of Object.keys(this.#expose)) {
      if (this.#names.restrictsClients(name)) {
        throw new TypeError(
          `Cannot expose "${name}" on a public port: its names file entry admits only listed client keys, and a public port's clients cannot prove one. Remove the port, or set "clients": "any"`,
        );
      }
    }
  }

  /**
   * Binds the discover point's port and its public ports and starts serving.
   * @throws {Deno.errors.AddrInUse} If a port is taken (nothing stays bound).
   */
  async start(): Promise<void> {
    if (this.#starting) throw new Error("Cannot start discover point: it is already started");
    this.#starting = true;
    const listeners: Deno.TcpListener[] = [];
    try {
      for (const [name, port] of Object.entries(this.#expose)) {
        const listener = await this.#bind(
          `the public port of "${name}"`,
          port,
          () => Deno.listen({ hostname: this.#hostname, port }),
        );
        listeners.push(listener);
        this.#publicListeners.set(name, listener);
      }
      const linkPort = this.#port;
      if (linkPort !== null) {
        this.#listener = await this.#bind(
          "the link port",
          linkPort,
          () => this.#listenForLinks(linkPort),
        );
      }
      this.#advertise = this.#advertisedAddress();
      this.#membership = await this.#registry.join(
        { instance: this.#instance, address: this.#advertise },
        (name) => this.#onWanted(name),
      );
    } catch (error) {
      for (const listener of listeners) listener.close();
      this.#listener?.close();
      this.#publicListeners.clear();
      throw error;
    }
    this.#startedAt = Date.now();
    for (const [name, listener] of this.#publicListeners) {
      this.#track(this.#acceptLoop(listener, (conn) => this.#servePublic(name, conn)));
    }
    const idle = this.#limits.idleTimeout;
    if (idle > 0) {
      this.#idleSweep = setInterval(
        () => this.#sweepIdle(),
        Math.max(10, idle / IDLE_SWEEPS_PER_TIMEOUT),
      );
    }
    if (this.#listener) {
      logger.info(
        this.#tls ? "Accepting links on {address} (TLS)" : "Accepting links on {address}",
        {
          address: formatAddress(this.#listener.addr),
        },
      );
    }
  }

  /** Binds a port; a port in use is named in the error, with what to do. */
  async #bind<L>(what: string, port: number, listen: () => L | Promise<L>): Promise<L> {
    try {
      return await listen();
    } catch (error) {
      const inUse = error instanceof Deno.errors.AddrInUse ||
        (error as { code?: string }).code === "EADDRINUSE";
      if (!inUse) throw error;
      const address = formatAddress({ transport: "tcp", hostname: this.#hostname, port });
      throw new Deno.errors.AddrInUse(
        `Cannot listen on ${address} (${what}): the address is already in use; stop what holds it, or choose another port`,
        { cause: error },
      );
    }
  }

  /** `advertise`, with port 0 replaced by the port this discover point listens on. */
  #advertisedAddress(): string | undefined {
    const advertise = this.#advertise;
    if (advertise === undefined) return undefined;
    const { scheme, hostname, port } = parseDiscoverPoint(advertise);
    if (port !== 0 || scheme === "ws" || scheme === "wss") return advertise;
    if (this.#listener === undefined) {
      throw new TypeError(`Cannot advertise "${advertise}": port 0 needs a link port to stand for`);
    }
    const address = formatAddress({ transport: "tcp", hostname, port: this.#listener.addr.port });
    return scheme === "tls" ? `tls://${address}` : address;
  }

  /** Opens the link port: plain TCP, or TLS; either way every link goes to {@linkcode serveLink}. */
  async #listenForLinks(port: number): Promise<LinkPort> {
    const address = { hostname: this.#hostname, port };
    if (this.#tls === undefined) {
      const listener = Deno.listen(address);
      this.#track(
        this.#acceptLoop(
          listener,
          (conn) => this.serveLink(new TcpTransport(conn, this.#transportOptions)),
        ),
      );
      return listener;
    }
    // Loaded only here: node:tls costs a process about 5 MiB, which a plain TCP discover point saves.
    const { listenTlsLinks } = await import("./tls_port.ts");
    return await listenTlsLinks({
      ...address,
      ...this.#tls,
      handshakeTimeout: this.#limits.handshakeTimeout,
      transport: this.#transportOptions,
      onLink: (transport) => void this.serveLink(transport),
      onHandshakeError: (peer, message) => {
        this.#counters.handshakesFailed++;
        logger.warn("Closed link from {peer}: TLS handshake failed: {message}", { peer, message });
      },
      // A TLS handshake counts as a link and as a handshake from its address, as a link does.
      enter: (source) => {
        const refusal = this.#enter(source);
        const tooMany = refusal ?? this.#gate.beginHandshake(source);
        if (refusal === undefined && tooMany !== undefined) this.#gate.leave(source);
        if (tooMany !== undefined) this.#counters.handshakesFailed++;
        return tooMany;
      },
      leave: (source) => {
        this.#gate.endHandshake(source);
        this.#gate.leave(source);
      },
    });
  }

  get #transportOptions(): { maxQueuedBytes: number } {
    return { maxQueuedBytes: this.#limits.maxLinkQueueBytes };
  }

  /** The address the discover point listens on. */
  get addr(): Deno.NetAddr {
    if (!this.#listener) {
      throw new Error("Cannot read addr: the discover point is not started, or has no port");
    }
    return this.#listener.addr;
  }

  /** Public port addresses by ISName. */
  get publicAddrs(): ReadonlyMap<string, Deno.NetAddr> {
    return new Map([
      ...[...this.#publicListeners].map(([name, listener]) => [name, listener.addr] as const),
      ...this.#publicPorts.addrs,
    ]);
  }

  /**
   * A snapshot of the discover point's state, for metrics and tests.
   * @returns Counts of links and sessions, and the bytes buffered in session pipes.
   */
  stats(): DiscoverPointStats {
    let sessions = 0;
    let maxSessionBufferedBytes = 0;
    for (const server of this.#serverLinks()) {
      for (const session of server.sessions.values()) {
        sessions++;
        const buffered = session.toServer.buffered + session.toClient.buffered;
        maxSessionBufferedBytes = Math.max(maxSessionBufferedBytes, buffered);
      }
    }
    let forwarded = 0;
    for (const upstream of this.#forwarded) forwarded += upstream.sessions.size;
    return {
      links: this.#links.size,
      servers: this.#pools.size,
      sessions,
      forwarded,
      bufferedBytes: this.#settings.budget.bytes,
      maxSessionBufferedBytes,
    };
  }

  /**
   * Counts and counters for an operator (what `/metrics` serves): names,
   * links by role and transport, sessions open and opened, refusals by
   * reason, failed handshakes and proofs, bytes by name, the buffer against
   * its budget, and the process's memory.
   */
  metrics(): DiscoverPointMetrics {
    return collectMetrics(this.#reportSource());
  }

  /**
   * The {@linkcode metrics}, with every name's links (peer, since,
   * extensions, transport, key) and sessions (client, since, bytes each
   * way), within bounds (what `/status` serves).
   */
  status(options?: StatusOptions): DiscoverPointStatus {
    return collectStatus(this.#reportSource(), options);
  }

  #reportSource(): ReportSource {
    let publicClients = 0;
    for (const client of this.#clients) if (client instanceof SocketClient) publicClients++;
    return {
      dpName: this.#name,
      startedAt: this.#startedAt,
      pools: this.#pools,
      forwarded: this.#forwarded,
      links: this.#links,
      linkInfo: this.#linkInfo,
      publicClients,
      counters: this.#counters,
      bufferedBytes: this.#settings.budget.bytes,
      maxBufferedBytes: this.#limits.maxBufferedBytes,
    };
  }

  /** Every server link, registered here or carrying a session to another discover point. */
  *#serverLinks(): Generator<ServerLink> {
    for (const pool of this.#pools.values()) yield* pool;
    yield* this.#forwarded;
  }

  /** ISNames with at least one registered link, and how many links each has. */
  get servers(): ReadonlyMap<string, number> {
    return new Map([...this.#pools].map(([name, links]) => [name, links.length]));
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }

  /**
   * A connection is done being served. Connections are counted rather than
   * tracked (a promise, a set entry and a `finally` each), so that thousands
   * of idle ones hold less: each serving function counts itself in.
   */
  #served(): void {
    if (--this.#serving === 0) this.#allServed?.resolve();
  }

  async #acceptLoop<C extends Deno.Conn<Deno.NetAddr>>(
    listener: Deno.Listener<C, Deno.NetAddr>,
    serve: (conn: C) => Promise<void> | void,
  ): Promise<void> {
    for (;;) {
      let conn: C;
      try {
        conn = await listener.accept();
      } catch (error) {
        // Closed (shutdown, or a granted port whose name went): done.
        if (this.#closing || error instanceof Deno.errors.BadResource) return;
        // EMFILE and the like: the listener itself is fine; pause briefly rather than spin.
        logger.error("Cannot accept a connection: {message}", {
          message: (error as Error).message,
        });
        await sleep(ACCEPT_RETRY_MS, this.#stop.signal);
        continue;
      }
      void serve(conn);
    }
  }

  /**
   * Serves one link from any transport: the limits and the name policy
   * apply the same way, then the handshake, then the link serves as an
   * indirect server's or client's. This is how the discover point's own
   * port serves its links; a host that accepts links some other way (an
   * HTTP upgrade, say) hands each one in here.
   * @param transport The link's transport; the discover point owns it from now on.
   * @returns When the link has ended. `close()` waits for it too.
   */
  serveLink(transport: Transport): Promise<void> {
    return this.#serveLink(transport);
  }

  async #serveLink(transport: Transport): Promise<void> {
    this.#serving++;
    try {
      const link = new Link(transport, {
        maxLineBytes: this.#limits.maxLineBytes,
        keepalive: this.#keepalive,
        closeTimeout: this.#limits.shutdownGrace,
      });
      const source = transport.remoteAddr.hostname;
      const refusal = this.#enter(source);
      if (refusal !== undefined) {
        this.#counters.handshakesFailed++;
        logger.warn("Refused link from {peer}: {reason}", { peer: link.peer, reason: refusal });
        refuse(link, new ProtocolError(refusal));
        await link.linger();
        return;
      }
      const info: LinkInfo = {
        since: Date.now(),
        transport: transportOf(transport),
        role: "handshake",
      };
      this.#linkInfo.set(link, info);
      this.#links.add(link);
      let established = false;
      const deadline = this.#handshakeDeadline();
      const tooMany = this.#gate.beginHandshake(source);
      let handshaking = tooMany === undefined;
      const handshakeDone = () => {
        if (handshaking) this.#gate.endHandshake(source);
        handshaking = false;
        deadline.cancel();
      };
      try {
        if (tooMany !== undefined) throw refuse(link, new ProtocolError(tooMany));
        const { aloha, nonce } = await answerAloha(link, {
          features: this.#features,
          name: this.#name,
          signal: deadline.signal,
          check: (aloha, agreed) => this.#gate.alohaRefusal(aloha, agreed),
        });
        const proof = nonce === undefined
          ? undefined
          : { auth: await this.#nextAuth(link, deadline.signal), nonce };
        if (aloha.role === Role.IndirectServer) {
          const { key, refusal } = await this.#gate.registration(aloha, proof, source);
          // With auth the verdict is sent either way: a refused server learns why before it goes.
          if (proof) link.send({ type: MessageType.Accepted, reason: refusal ?? "" });
          if (refusal !== undefined) throw new ProtocolError(refusal);
          handshakeDone();
          established = true;
          info.role = "server";
          await this.#serveServer(link, aloha.name, key);
        } else {
          const connect = await link.nextWithin(deadline.signal);
          handshakeDone();
          if (connect === null) return;
          if (connect.type !== MessageType.Connect) {
            throw new ProtocolError(
              `Cannot serve indirect client: expected Connect after Aloha, got ${
                messageTypeName(connect.type)
              }`,
            );
          }
          const relayed = link.features.has(Feature.Relay);
          const multiplexed = connect.sessionId !== undefined;
          if (multiplexed && (relayed || !link.features.has(Feature.Multiplex))) {
            throw new ProtocolError(
              "Cannot accept Connect with X: this link did not agree on multiplex",
            );
          }
          const verdict = await this.#gate.connection(aloha, connect, proof, source, relayed);
          established = true;
          info.role = relayed ? "peer_dp" : "client";
          if (relayed) this.#counters.relayedSessions++;
          if (multiplexed) await this.#serveMultiplexed(link, aloha, connect, verdict);
          else await this.#serveClient(link, aloha, connect.name, verdict, relayed);
        }
      } catch (error) {
        logger.warn("Closed link from {peer}: {message}", {
          peer: link.peer,
          message: (error as Error).message,
        });
      } finally {
        const cut = deadline.signal.aborted;
        handshakeDone();
        if (!established) this.#counters.handshakesFailed++;
        // A refusal or a protocol error has its reason queued: let the peer read it. A link cut by
        // the deadline still has a read pending, and has nothing to read anyway.
        if (cut) link.abort();
        else await link.linger();
        this.#links.delete(link);
        this.#gate.leave(source);
      }
    } finally {
      this.#served();
    }
  }

  /**
   * An HTTP handler that takes WebSocket links at `path` (and answers 404
   * elsewhere), for `Deno.serve`: the discover point over HTTP, beside or
   * instead of its TCP port. Its links pass the same limits and policy.
   * @example
   * ```ts ignore
   * const dp = new DiscoverPoint({ port: 7000 });
   * await dp.start();
   * Deno.serve({ port: 8080 }, dp.httpHandler());
   * ```
   */
  httpHandler(path: string = LINK_PATH): HttpHandler {
    return webSocketLinkHandler((transport) => this.serveLink(transport), {
      path,
      transport: { maxQueuedBytes: this.#limits.maxLinkQueueBytes },
    });
  }

  /** Counts a new link or connection from `source` at the gate, or says why it cannot come in. */
  #enter(source: string): string | undefined {
    return this.#closing ? "The discover point is shutting down" : this.#gate.enter(source);
  }

  /** A link's handshake deadline: one entry in a queue, not a timer per link. */
  #handshakeDeadline(): Deadline {
    const controller = new AbortController();
    const entry = this.#handshakeDeadlines.add(controller);
    return { signal: controller.signal, cancel: () => entry.cancel() };
  }

  #deadline(reason: string, ms: number = this.#limits.handshakeTimeout): Deadline {
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new ProtocolError(`Cannot handshake: ${reason}`)),
      ms,
    );
    return { signal: controller.signal, cancel: () => clearTimeout(timer) };
  }

  /** Why the registry cannot take one more link of `name` now, if it cannot. */
  #registryRefusal(name: string): string | undefined {
    const limits = this.#limits;
    const links = this.#pools.get(name)?.length;
    if (links === undefined && this.#pools.size >= limits.maxNames) {
      return `Cannot register "${name}": this discover point has ${this.#pools.size} names (limit maxNames = ${limits.maxNames})`;
    }
    if ((links ?? 0) >= limits.maxLinksPerServer) {
      return `Cannot register "${name}": it already has ${links} links (limit maxLinksPerServer = ${limits.maxLinksPerServer})`;
    }
    return undefined;
  }

  /** Grants or refuses a server's request for a public port for its name. */
  #answerPort(server: ServerLink, requested: number): void {
    const name = server.name;
    const refusal = this.#names.publicPort?.(name);
    const grant: PortGrant = this.#port === null
      ? { refusal: "Cannot open a public port: this discover point takes links over HTTP only" }
      : refusal !== undefined
      ? { refusal }
      : this.#publicPorts.grant(name, requested);
    if ("refusal" in grant) {
      logger.info("Refused a public port for {name}: {reason}", {
        name: server.name,
        reason: grant.refusal,
      });
    }
    server.link.trySend({
      type: MessageType.Port,
      port: "port" in grant ? grant.port : 0,
      reason: "refusal" in grant ? grant.refusal : "",
    });
  }

  /** Reads the Auth that must follow the Alohas on a link that agreed on `auth`. */
  async #nextAuth(link: Link, signal: AbortSignal): Promise<AuthMessage> {
    const message = await link.nextWithin(signal);
    if (message?.type !== MessageType.Auth) {
      throw new ProtocolError(
        `Cannot handshake: expected Auth after the Alohas (extension auth), ${
          message === null ? "the link closed" : `got ${messageTypeName(message.type)}`
        }`,
      );
    }
    return message;
  }

  async #serveServer(link: Link, name: string, key: string | undefined): Promise<void> {
    const pool = this.#pools.get(name) ?? [];
    const traffic = this.#counters.acquire(name);
    const server = new ServerLink(name, link, this.#settings, key, traffic);
    server.onPort = (port) => this.#answerPort(server, port);
    pool.push(server);
    if (pool.length === 1) {
      this.#pools.set(name, pool);
      this.#membership?.hold(name, key);
    }
    for (const arrived of this.#waiting.get(name) ?? []) arrived(true);
    const registered = key === undefined
      ? "Registered {name} from {peer} ({links} links)"
      : "Registered {name} from {peer} ({links} links) with key {key}";
    logger.info(registered, { name, peer: link.peer, links: pool.length, key });
    let reason = `Indirect server "${name}" closed its link`;
    try {
      await server.run();
    } catch (error) {
      // What went wrong, never where: no error raised on a link names an address (the log does).
      reason = `Indirect server "${name}" link failed: ${(error as Error).message}`;
      throw error;
    } finally {
      this.#counters.release(traffic);
      pool.splice(pool.indexOf(server), 1);
      if (pool.length === 0 && this.#pools.get(name) === pool) {
        this.#pools.delete(name);
        this.#askedMore.delete(name);
        this.#membership?.release(name);
        this.#publicPorts.release(name);
      }
      if (this.#closing) server.end("The discover point is shutting down", "shutting_down");
      else server.end(reason);
      logger.info("Unregistered a link of {name} from {peer} ({links} left)", {
        name,
        peer: link.peer,
        links: pool.length,
      });
    }
  }

  async #serveClient(
    link: Link,
    aloha: AlohaMessage,
    name: string,
    { key, refusal, address }: Verdict,
    relayed: boolean,
  ): Promise<void> {
    const client = new LinkClient(link, aloha.name || link.peer, key, address);
    this.#clients.add(client);
    try {
      if (refusal === undefined) this.#route(name, client, relayed);
      else {
        logger.info("Refused {client} for {name}: {reason}", {
          client: client.address,
          name,
          reason: refusal,
        });
        this.#counters.refused("policy");
        client.refused(refusal);
      }
      await client.run();
    } finally {
      this.#clients.delete(client);
    }
  }

  /**
   * Serves an indirect client's link that agreed on `multiplex`: sessions to
   * the name of its `first` Connect, as many as it asks for, until it closes.
   * The link's standing is its proof's: a client refused at its first Connect
   * is refused every session, else the policy is asked again for each.
   */
  async #serveMultiplexed(
    link: Link,
    aloha: AlohaMessage,
    first: ConnectMessage,
    { key, refusal }: Verdict,
  ): Promise<void> {
    const name = first.name;
    const source = link.transport.remoteAddr.hostname;
    const client = new MultiplexedClient(link, {
      name,
      label: aloha.name || link.peer,
      key,
      maxSessions: this.#limits.maxSessionsPerClientLink,
      policy: () => refusal ?? this.#names.connection(name, key),
      refuse: (session, reason, kind) => this.#refuse(session, name, reason, kind),
      enter: () => this.#enter(source),
      leave: () => this.#gate.leave(source),
      route: (session) => this.#route(name, session),
    });
    await client.run(first);
  }

  /**
   * Serves a plain TCP client on the public port of `name`: one session, raw
   * bytes. Not an async function: an idle session waits in its socket's read
   * alone, and its end is a callback.
   */
  #servePublic(name: string, conn: Deno.TcpConn): void {
    const transport = new TcpTransport(conn, this.#transportOptions);
    const source = conn.remoteAddr.hostname;
    const client: SocketClient = new SocketClient(
      transport,
      formatAddress(conn.remoteAddr),
      this.#limits.shutdownGrace,
      () => {
        this.#clients.delete(client);
        this.#gate.leave(source);
        this.#served();
      },
    );
    const refusal = this.#enter(source);
    if (refusal !== undefined) {
      this.#counters.refused(this.#closing ? "shutting_down" : "limit");
      logger.warn("Refused {client} on the public port of {name}: {reason}", {
        client: client.label,
        name,
        reason: refusal,
      });
      transport.abort();
      return;
    }
    this.#serving++;
    this.#clients.add(client);
    this.#route(name, client);
    client.readAhead();
  }

  /**
   * Routes `client`'s session to `name`: to the least loaded link of it here,
   * else (unless `localOnly`) to another member of the cluster that holds it.
   * @param localOnly Set for sessions another discover point relayed here: they go no further.
   */
  #route(name: string, client: ClientEnd, localOnly = false): void {
    const pending: PendingConnect = {
      client,
      abandoned: false,
      server: undefined,
      overdue: false,
      deadline: undefined,
    };
    client.pending = pending;
    const refusal = this.#refusal(name);
    if (refusal !== undefined) return this.#refuse(client, name, refusal.reason, refusal.kind);
    const pool = this.#pools.get(name);
    if (pool !== undefined) {
      const server = pool.reduce((best, link) => link.load < best.load ? link : best);
      this.#awaitAck(server, pending);
      const proofs = server.link.features.has(Feature.Auth)
        ? { address: client.address, ...(client.key === undefined ? {} : { key: client.key }) }
        : {};
      server.link.trySend({ type: MessageType.Connect, name: client.label, ...proofs });
      return;
    }
    if (localOnly) {
      return this.#refuse(
        client,
        name,
        `No indirect server is registered as "${name}" ${NOT_HELD_HERE}`,
        "no_server",
      );
    }
    this.#track(this.#routeElsewhere(name, client, pending));
  }

  #refuse(client: ClientEnd, name: string, reason: string, kind: RefusalReason): void {
    logger.info("Refused {client} for {name}: {reason}", { client: client.label, name, reason });
    // A client that went away is not told, nor counted.
    if (!client.pending?.abandoned) this.#counters.refused(kind);
    client.refused(reason);
  }

  /** Starts the Ack deadline of a Connect sent (or about to be) on `server`. */
  #awaitAck(server: ServerLink, pending: PendingConnect): void {
    pending.server = server;
    pending.deadline = this.#ackDeadlines.add(pending);
    server.expect(pending);
  }

  /**
   * A Connect's Ack deadline passed: the first time, its client is refused; if
   * still no Ack after as long again, the server fails its duty and its link goes.
   */
  #ackOverdue(pending: PendingConnect): void {
    const server = pending.server!;
    const ackTimeout = this.#limits.ackTimeout;
    if (pending.overdue) {
      pending.deadline = undefined;
      server.fail(
        new ProtocolError(
          `Indirect server "${server.name}" left a Connect unanswered for ${
            2 * ackTimeout
          } ms (limit ackTimeout)`,
        ),
      );
      return;
    }
    pending.abandoned = true;
    pending.overdue = true;
    const { client } = pending;
    const reason =
      `Indirect server "${server.name}" did not answer within ${ackTimeout} ms (limit ackTimeout)`;
    logger.warn("Refused {client}: {reason}", { client: client.label, reason });
    this.#counters.refused("ack_timeout");
    client.refused(reason);
    pending.deadline = this.#ackDeadlines.add(pending);
  }

  /**
   * A name no link here holds: asks the registry who does, carries the
   * session to one that can be dialled, else waits for a link to come here.
   */
  async #routeElsewhere(
    name: string,
    client: ClientEnd,
    pending: PendingConnect,
  ): Promise<void> {
    let holders: Holder[];
    try {
      holders = await this.#membership!.holders(name);
    } catch (error) {
      const message = (error as Error).message;
      return this.#refuse(
        client,
        name,
        `Cannot look "${name}" up in the cluster registry (${message}); try again`,
        "cluster",
      );
    }
    if (pending.abandoned) return;
    // A holder whose recorded key could not own the name here is not given its sessions.
    holders = holders.filter((holder) => this.#names.registration(name, holder.key) === undefined);
    if (holders.length === 0) {
      return this.#refuse(
        client,
        name,
        `No indirect server is registered as "${name}"`,
        "no_server",
      );
    }
    const dialable = holders.filter((holder) => holder.address !== undefined);
    let silent = 0;
    for (const address of this.#dialOrder(dialable)) {
      const outcome = await this.#forward(address, name, client, pending);
      if (outcome === "carried") {
        this.#silent.delete(address);
        return;
      }
      if (outcome === "silent") {
        silent++;
        this.#silent.set(address, Date.now() + SILENT_MS);
      }
      if (pending.abandoned || this.#closing) return;
    }
    if (dialable.length === holders.length) {
      // Every holder was tried: some did not answer, the others hold the name no longer.
      return silent > 0
        ? this.#refuse(
          client,
          name,
          `Cannot reach "${name}": the discover points that hold it do not answer; try again`,
          "cluster",
        )
        : this.#refuse(client, name, `No indirect server is registered as "${name}"`, "no_server");
    }
    // Held only where nobody can dial (Deno Deploy instances): ask for a link to come here.
    const arrived = await this.#waitForLink(name);
    if (pending.abandoned || this.#closing) return;
    if (!arrived) {
      return this.#refuse(
        client,
        name,
        `No link of "${name}" reached this discover point within ${this.#limits.ackTimeout} ms (limit ackTimeout); its server may be at the top of its pool`,
        "ack_timeout",
      );
    }
    this.#route(name, client, true);
  }

  /** The holders' addresses in random order, those that did not answer lately last. */
  #dialOrder(holders: readonly Holder[]): string[] {
    const now = Date.now();
    const isSilent = (address: string) => (this.#silent.get(address) ?? 0) > now;
    for (const [address, until] of this.#silent) if (until <= now) this.#silent.delete(address);
    const addresses = shuffled(holders.map((holder) => holder.address!));
    return [
      ...addresses.filter((address) => !isSilent(address)),
      ...addresses.filter(isSilent),
    ];
  }

  /**
   * Carries the session to the member at `address`, as an indirect client
   * of it that offers `relay`, so that it goes no further.
   * @returns `"carried"` once the session is the member's to answer (opened or refused there);
   * `"silent"` if it could not be reached; `"not-held"` if it does not hold the name after all.
   */
  async #forward(
    address: string,
    name: string,
    client: ClientEnd,
    pending: PendingConnect,
  ): Promise<"carried" | "silent" | "not-held"> {
    const identity = this.#clusterKey;
    const connect: ConnectMessage = {
      type: MessageType.Connect,
      name,
      ...(identity === undefined ? {} : {
        address: client.address,
        ...(client.key === undefined ? {} : { key: client.key }),
      }),
    };
    const deadline = this.#deadline(
      `no answer from "${address}" within ${MEMBER_DIAL_MS} ms`,
      Math.min(MEMBER_DIAL_MS, this.#limits.handshakeTimeout),
    );
    let link: Link;
    try {
      link = await dialDiscoverPoint(address, {
        role: Role.IndirectClient,
        name: client.label.slice(0, MAX_NAME_LENGTH),
        // One session per link to another discover point: never multiplexed.
        features: [
          ...this.#features.filter((feature) =>
            feature !== Feature.Relay && feature !== Feature.Multiplex
          ),
          Feature.Relay,
        ],
        keepalive: this.#keepalive,
        maxLineBytes: this.#limits.maxLineBytes,
        closeTimeout: this.#limits.shutdownGrace,
        signal: deadline.signal,
        pipelined: [connect],
        authName: name,
        ...(identity === undefined ? {} : { identity }),
        ...(this.#clusterCaCerts === undefined ? {} : { caCerts: this.#clusterCaCerts }),
      });
    } catch (error) {
      logger.warn("Cannot carry {client} for {name} to {address}: {message}", {
        client: client.label,
        name,
        address,
        message: (error as Error).message,
      });
      return "silent";
    } finally {
      deadline.cancel();
    }
    // The holder's answer first: one that does not hold the name after all (its entry is stale,
    // say a restarted DP on the same address) sends the client on to the next holder.
    const waited = this.#deadline(
      `no Ack from "${address}"`,
      this.#limits.ackTimeout + MEMBER_DIAL_MS,
    );
    let answer: Message | null;
    try {
      answer = await link.nextWithin(waited.signal);
    } catch (error) {
      answer = null;
      logger.warn("Cannot carry {client} for {name} to {address}: {message}", {
        client: client.label,
        name,
        address,
        message: (error as Error).message,
      });
    } finally {
      waited.cancel();
    }
    if (answer?.type !== MessageType.Ack) {
      link.abort();
      return "silent";
    }
    if (answer.sessionId === -1) {
      void link.close();
      if (answer.reason.endsWith(NOT_HELD_HERE)) return "not-held";
      if (!pending.abandoned) {
        this.#refuse(
          client,
          name,
          clipReason(answer.reason) || `"${name}" refused the session`,
          "server_refused",
        );
      }
      return "carried";
    }
    const upstream = new ServerLink(
      name,
      link,
      this.#settings,
      undefined,
      this.#counters.acquire(name),
    );
    upstream.onIdle = () => void link.close();
    this.#linkInfo.set(link, {
      since: Date.now(),
      transport: parseDiscoverPoint(address).scheme,
      role: "peer_dp",
    });
    this.#links.add(link);
    this.#forwarded.add(upstream);
    this.#counters.forwardedSessions++;
    upstream.expect(pending);
    try {
      upstream.acknowledge(answer);
    } catch (error) {
      upstream.fail(error as Error);
    }
    logger.debug("Carrying {client} for {name} to {address}", {
      client: client.label,
      name,
      address,
    });
    this.#track(this.#serveForwarded(upstream, address));
    return "carried";
  }

  async #serveForwarded(upstream: ServerLink, address: string): Promise<void> {
    const name = upstream.name;
    let reason = `The discover point holding "${name}" closed the link`;
    try {
      await upstream.run();
    } catch (error) {
      reason = `The link to the discover point holding "${name}" failed: ${
        (error as Error).message
      }`;
      logger.warn("Link to {address} for {name} failed: {message}", {
        address,
        name,
        message: (error as Error).message,
      });
    } finally {
      this.#counters.release(upstream.traffic!);
      if (this.#closing) upstream.end("The discover point is shutting down", "shutting_down");
      else upstream.end(reason);
      await upstream.link.close();
      this.#forwarded.delete(upstream);
      this.#links.delete(upstream.link);
    }
  }

  /** Waits up to `ackTimeout` for a link of `name` to register here, asking its holders for one. */
  #waitForLink(name: string): Promise<boolean> {
    const { promise, resolve } = Promise.withResolvers<boolean>();
    let waiters = this.#waiting.get(name);
    if (waiters === undefined) {
      waiters = new Set();
      this.#waiting.set(name, waiters);
      this.#membership!.want(name);
    }
    const done = (arrived: boolean) => {
      clearTimeout(timer);
      waiters.delete(done);
      if (waiters.size === 0 && this.#waiting.get(name) === waiters) {
        this.#waiting.delete(name);
        this.#membership?.unwant(name);
      }
      resolve(arrived);
    };
    const timer = setTimeout(() => done(false), this.#limits.ackTimeout);
    waiters.add(done);
    return promise;
  }

  /** A client waits at another member for a link of `name`: ask one of its servers for one more. */
  #onWanted(name: string): void {
    const pool = this.#pools.get(name);
    const now = Date.now();
    if (pool === undefined || now - (this.#askedMore.get(name) ?? 0) < MORE_INTERVAL) return;
    const server = pool.find((link) => link.link.features.has(Feature.Pool));
    if (server === undefined) return;
    this.#askedMore.set(name, now);
    logger.debug("Asked {name} for one more link: a client waits for it elsewhere", { name });
    server.link.trySend({ type: MessageType.More });
  }

  /** Closes every session that has moved no byte either way for `idleTimeout`. */
  #sweepIdle(): void {
    const now = Date.now();
    const idle = this.#limits.idleTimeout;
    for (const server of this.#serverLinks()) {
      for (const session of [...server.sessions.values()]) {
        if (session.toServer.touched || session.toClient.touched) {
          session.toServer.touched = session.toClient.touched = false;
          session.idleSince = now;
        } else if (now - session.idleSince >= idle) {
          logger.info("Closed idle session {id} of {name}", { id: session.id, name: server.name });
          session.abort(`The session was idle for ${idle} ms (limit idleTimeout)`);
        }
      }
    }
  }

  /** Why a session to `name` cannot be taken now, if it cannot; whether a link holds `name` is not asked. */
  #refusal(name: string): Refusal | undefined {
    if (this.#closing) {
      return { reason: "The discover point is shutting down", kind: "shutting_down" };
    }
    const pool = this.#pools.get(name) ?? [];
    const limits = this.#limits;
    const pending = pool.reduce((sum, link) => sum + link.waiting, 0);
    if (pending >= limits.maxPendingPerServer) {
      return {
        reason:
          `Too many connections waiting for "${name}" (limit maxPendingPerServer = ${limits.maxPendingPerServer})`,
        kind: "limit",
      };
    }
    const load = pool.reduce((sum, link) => sum + link.sessions.size + link.waiting, 0);
    if (load >= limits.maxSessionsPerServer) {
      return {
        reason:
          `Too many sessions to "${name}" (limit maxSessionsPerServer = ${limits.maxSessionsPerServer})`,
        kind: "limit",
      };
    }
    if (this.#settings.load!.value >= limits.maxSessions) {
      return {
        reason:
          `Too many sessions on this discover point (limit maxSessions = ${limits.maxSessions})`,
        kind: "limit",
      };
    }
    if (this.#settings.budget.bytes >= limits.maxBufferedBytes) {
      return {
        reason:
          `The discover point is short of buffer space (limit maxBufferedBytes = ${limits.maxBufferedBytes}); try again later`,
        kind: "buffer",
      };
    }
    return undefined;
  }

  /**
   * Shuts down: stops accepting, sends Close with a reason to every session and
   * a refusal to every waiting client, lets links flush for a bounded time, and
   * closes them all.
   */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#stop.abort();
    clearInterval(this.#idleSweep);
    this.#ackDeadlines.close();
    this.#listener?.close();
    for (const listener of this.#publicListeners.values()) listener.close();
    this.#publicPorts.close();
    const reason = "The discover point is shutting down";
    for (const server of [...this.#serverLinks()]) {
      for (const session of [...server.sessions.values()]) session.abort(reason);
      server.end(reason, "shutting_down");
    }
    for (const waiters of [...this.#waiting.values()]) for (const done of waiters) done(false);
    const leaving = this.#membership?.leave().catch((error) => {
      logger.warn("Cannot leave the cluster registry: {message}", { message: error.message });
    });
    for (const client of this.#clients) {
      if (client instanceof SocketClient) client.abandon();
    }
    const flushed = Promise.allSettled([...this.#links].map((link) => link.close()));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) =>
      timer = setTimeout(resolve, this.#limits.shutdownGrace)
    );
    await Promise.race([flushed, grace]);
    clearTimeout(timer);
    for (const link of this.#links) link.abort();
    while (this.#tasks.size > 0 || this.#serving > 0) {
      if (this.#serving > 0) {
        this.#allServed = Promise.withResolvers<void>();
        await this.#allServed.promise;
        this.#allServed = undefined;
      }
      await Promise.allSettled([...this.#tasks]);
    }
    // Every link has ended, and with it every handshake.
    this.#handshakeDeadlines.close();
    await leaving;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
