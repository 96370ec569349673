/**
 * The Discover Point: accepts links from indirect servers and clients, keeps
 * the name registry and each server's pool, and routes sessions between them
 * (PROTOCOL.md Part 2 items 4–10). Public ports let plain TCP clients in too.
 * @module
 */

import { getLogger } from "./_log.ts";
import { sleep } from "./_backoff.ts";
import { ProtocolError } from "./errors.ts";
import { answerAloha } from "./handshake.ts";
import { ALL_FEATURES, type KeepaliveOptions, Link } from "./link.ts";
import { LinkClient, SocketClient } from "./dp_client.ts";
import { type ClientEnd, type PendingConnect, ServerLink } from "./dp_session.ts";
import { MAX_LINE_BYTES } from "./codec.ts";
import { MessageType, Role } from "./message.ts";
import { formatAddress, TcpTransport } from "./transport.ts";

const logger = getLogger(["rtcp", "dp"]);

/** Pause after a failed accept (out of file descriptors, say) before accepting again. */
const ACCEPT_RETRY_MS = 100;

/** The port a discover point listens on unless told otherwise. */
export const DEFAULT_PORT = 7000;

/** Options of {@linkcode DiscoverPoint}. */
export interface DiscoverPointOptions {
  /** Address to listen on. @default {"0.0.0.0"} */
  hostname?: string;
  /** Port to listen on; 0 picks a free one. @default {7000} */
  port?: number;
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
  /** Milliseconds `close()` lets links flush their final Closes. @default {2000} */
  shutdownGrace?: number;
  /** Keepalive timing on links whose peer agreed on `keepalive`. @default {{ interval: 15000, timeout: 10000 }} */
  keepalive?: KeepaliveOptions;
  /** Largest flow-control window per session direction, in bytes: what one session may buffer here. @default {4194304} */
  maxWindow?: number;
  /**
   * Extensions to offer (PROTOCOL.md Part 3); `[]` makes the discover point speak Parts 1 and 2 only.
   * @default {["half-close", "keepalive", "flow-control", "binary"]}
   */
  features?: readonly string[];
}

/** What {@linkcode DiscoverPoint.stats} reports. */
export interface DiscoverPointStats {
  /** Open links (indirect servers' and clients'). */
  readonly links: number;
  /** Registered ISNames. */
  readonly servers: number;
  /** Open sessions (public-port sessions included). */
  readonly sessions: number;
  /** Bytes waiting in session pipes, all sessions together. */
  readonly bufferedBytes: number;
  /** The most bytes waiting in any one session (both directions). */
  readonly maxSessionBufferedBytes: number;
}

type Limits = Required<
  Omit<
    DiscoverPointOptions,
    "hostname" | "port" | "expose" | "name" | "keepalive" | "maxWindow" | "features"
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
  shutdownGrace: 2_000,
};

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
  readonly #port: number;
  readonly #expose: Readonly<Record<string, number>>;
  readonly #name: string;
  readonly #limits: Limits;
  readonly #keepalive: KeepaliveOptions | undefined;
  readonly #maxWindow: number | undefined;
  readonly #features: readonly string[];
  #listener: Deno.TcpListener | undefined;
  readonly #publicListeners = new Map<string, Deno.TcpListener>();
  readonly #registry = new Map<string, ServerLink[]>();
  readonly #links = new Set<Link>();
  readonly #clients = new Set<SocketClient | LinkClient>();
  readonly #tasks = new Set<Promise<void>>();
  #closing = false;
  readonly #stop = new AbortController();

  /** Creates a discover point; nothing listens until {@linkcode start}. */
  constructor(options: DiscoverPointOptions = {}) {
    this.#hostname = options.hostname ?? "0.0.0.0";
    this.#port = options.port ?? DEFAULT_PORT;
    checkPort("discover point", this.#port);
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
    this.#keepalive = options.keepalive;
    this.#maxWindow = options.maxWindow;
    this.#features = options.features ?? ALL_FEATURES;
  }

  /**
   * Binds the discover point's port and its public ports and starts serving.
   * @throws {Deno.errors.AddrInUse} If a port is taken (nothing stays bound).
   */
  start(): Promise<void> {
    if (this.#listener) throw new Error("Cannot start discover point: it is already started");
    const listeners: Deno.TcpListener[] = [];
    try {
      for (const [name, port] of Object.entries(this.#expose)) {
        const listener = Deno.listen({ hostname: this.#hostname, port });
        listeners.push(listener);
        this.#publicListeners.set(name, listener);
      }
      this.#listener = Deno.listen({ hostname: this.#hostname, port: this.#port });
    } catch (error) {
      for (const listener of listeners) listener.close();
      this.#publicListeners.clear();
      throw error;
    }
    this.#track(this.#acceptLoop(this.#listener, (conn) => this.#serveLink(conn)));
    for (const [name, listener] of this.#publicListeners) {
      this.#track(this.#acceptLoop(listener, (conn) => this.#servePublic(name, conn)));
    }
    logger.info("Listening on {address}", { address: formatAddress(this.addr) });
    return Promise.resolve();
  }

  /** The address the discover point listens on. */
  get addr(): Deno.NetAddr {
    if (!this.#listener) throw new Error("Cannot read addr: the discover point is not started");
    return this.#listener.addr;
  }

  /** Public port addresses by ISName. */
  get publicAddrs(): ReadonlyMap<string, Deno.NetAddr> {
    return new Map([...this.#publicListeners].map(([name, listener]) => [name, listener.addr]));
  }

  /**
   * A snapshot of the discover point's state, for metrics and tests.
   * @returns Counts of links and sessions, and the bytes buffered in session pipes.
   */
  stats(): DiscoverPointStats {
    let sessions = 0;
    let bufferedBytes = 0;
    let maxSessionBufferedBytes = 0;
    for (const pool of this.#registry.values()) {
      for (const server of pool) {
        for (const session of server.sessions.values()) {
          sessions++;
          const buffered = session.toServer.buffered + session.toClient.buffered;
          bufferedBytes += buffered;
          maxSessionBufferedBytes = Math.max(maxSessionBufferedBytes, buffered);
        }
      }
    }
    return {
      links: this.#links.size,
      servers: this.#registry.size,
      sessions,
      bufferedBytes,
      maxSessionBufferedBytes,
    };
  }

  /** ISNames with at least one registered link, and how many links each has. */
  get servers(): ReadonlyMap<string, number> {
    return new Map([...this.#registry].map(([name, links]) => [name, links.length]));
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }

  async #acceptLoop(
    listener: Deno.TcpListener,
    serve: (conn: Deno.TcpConn) => Promise<void>,
  ): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#closing) return;
        // EMFILE and the like: the listener itself is fine; pause briefly rather than spin.
        logger.error("Cannot accept a connection: {message}", {
          message: (error as Error).message,
        });
        await sleep(ACCEPT_RETRY_MS, this.#stop.signal);
        continue;
      }
      this.#track(serve(conn));
    }
  }

  /** Serves one link on the discover point's port: handshake, then server or client. */
  async #serveLink(conn: Deno.TcpConn): Promise<void> {
    const link = new Link(new TcpTransport(conn), {
      maxLineBytes: this.#limits.maxLineBytes,
      keepalive: this.#keepalive,
    });
    this.#links.add(link);
    const deadline = this.#deadline(
      `no complete handshake within ${this.#limits.handshakeTimeout} ms (limit handshakeTimeout)`,
    );
    try {
      const aloha = await answerAloha(link, {
        features: this.#features,
        name: this.#name,
        signal: deadline.signal,
        check: (aloha) =>
          aloha.role === Role.IndirectServer ? this.#registrationRefusal(aloha.name) : undefined,
      });
      if (aloha.role === Role.IndirectServer) {
        deadline.cancel();
        await this.#serveServer(link, aloha.name);
      } else {
        await this.#serveClient(link, aloha.name, deadline);
      }
    } catch (error) {
      logger.warn("Closed link from {peer}: {message}", {
        peer: link.peer,
        message: (error as Error).message,
      });
    } finally {
      deadline.cancel();
      link.abort();
      this.#links.delete(link);
    }
  }

  #deadline(reason: string): { signal: AbortSignal; cancel(): void } {
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new ProtocolError(`Cannot handshake: ${reason}`)),
      this.#limits.handshakeTimeout,
    );
    return { signal: controller.signal, cancel: () => clearTimeout(timer) };
  }

  #registrationRefusal(name: string): string | undefined {
    if (name === "") return "Cannot register an indirect server with an empty name";
    const links = this.#registry.get(name)?.length ?? 0;
    if (links >= this.#limits.maxLinksPerServer) {
      return `Cannot register "${name}": it already has ${links} links (limit maxLinksPerServer = ${this.#limits.maxLinksPerServer})`;
    }
    return undefined;
  }

  async #serveServer(link: Link, name: string): Promise<void> {
    const pool = this.#registry.get(name) ?? [];
    const isInUse = (id: number) => pool.some((other) => other.sessions.has(id));
    const server = new ServerLink(name, link, isInUse, this.#maxWindow);
    pool.push(server);
    this.#registry.set(name, pool);
    logger.info("Registered {name} from {peer} ({links} links)", {
      name,
      peer: link.peer,
      links: pool.length,
    });
    let reason = `Indirect server "${name}" closed its link`;
    try {
      await server.run();
    } catch (error) {
      reason = `Indirect server "${name}" link failed: ${(error as Error).message}`;
      throw error;
    } finally {
      pool.splice(pool.indexOf(server), 1);
      if (pool.length === 0 && this.#registry.get(name) === pool) this.#registry.delete(name);
      server.end(this.#closing ? "The discover point is shutting down" : reason);
      logger.info("Unregistered a link of {name} from {peer} ({links} left)", {
        name,
        peer: link.peer,
        links: pool.length,
      });
    }
  }

  async #serveClient(
    link: Link,
    name: string,
    deadline: { signal: AbortSignal; cancel(): void },
  ): Promise<void> {
    const connect = await link.nextWithin(deadline.signal);
    deadline.cancel();
    if (connect === null) return;
    if (connect.type !== MessageType.Connect) {
      throw new ProtocolError(
        `Cannot serve indirect client: expected Connect after Aloha, got type ${connect.type}`,
      );
    }
    const client = new LinkClient(link, name || link.peer);
    this.#clients.add(client);
    try {
      this.#route(connect.name, client);
      await client.run();
    } finally {
      this.#clients.delete(client);
    }
  }

  async #servePublic(name: string, conn: Deno.TcpConn): Promise<void> {
    const transport = new TcpTransport(conn);
    const client = new SocketClient(transport, formatAddress(conn.remoteAddr));
    if (!this.#registry.has(name)) {
      logger.info(
        "Closed connection from {client} on the public port of {name}: no indirect server has that name",
        {
          client: client.label,
          name,
        },
      );
      transport.abort();
      return;
    }
    this.#clients.add(client);
    try {
      this.#route(name, client);
      await client.run();
    } finally {
      this.#clients.delete(client);
    }
  }

  /** Sends `client`'s Connect to the least loaded link of `name`, or refuses it. */
  #route(name: string, client: ClientEnd & { pending: PendingConnect | undefined }): void {
    const refusal = this.#refusal(name);
    if (refusal !== undefined) {
      logger.info("Refused {client} for {name}: {reason}", {
        client: client.label,
        name,
        reason: refusal,
      });
      client.refused(refusal);
      return;
    }
    const pool = this.#registry.get(name)!;
    const server = pool.reduce((best, link) => link.load < best.load ? link : best);
    const pending: PendingConnect = { client, abandoned: false, timer: undefined };
    pending.timer = setTimeout(() => {
      pending.abandoned = true;
      const reason =
        `Indirect server "${name}" did not answer within ${this.#limits.ackTimeout} ms (limit ackTimeout)`;
      logger.warn("Refused {client}: {reason}", { client: client.label, reason });
      client.refused(reason);
    }, this.#limits.ackTimeout);
    server.pending.push(pending);
    client.pending = pending;
    server.trySend({ type: MessageType.Connect, name: client.label });
  }

  #refusal(name: string): string | undefined {
    if (this.#closing) return "The discover point is shutting down";
    const pool = this.#registry.get(name);
    if (pool === undefined) return `No indirect server is registered as "${name}"`;
    const limits = this.#limits;
    const pending = pool.reduce((sum, link) => sum + link.pending.length, 0);
    if (pending >= limits.maxPendingPerServer) {
      return `Too many connections waiting for "${name}" (limit maxPendingPerServer = ${limits.maxPendingPerServer})`;
    }
    const load = pool.reduce((sum, link) => sum + link.load, 0);
    if (load >= limits.maxSessionsPerServer) {
      return `Too many sessions to "${name}" (limit maxSessionsPerServer = ${limits.maxSessionsPerServer})`;
    }
    let total = 0;
    for (const links of this.#registry.values()) for (const link of links) total += link.load;
    if (total >= limits.maxSessions) {
      return `Too many sessions on this discover point (limit maxSessions = ${limits.maxSessions})`;
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
    this.#listener?.close();
    for (const listener of this.#publicListeners.values()) listener.close();
    const reason = "The discover point is shutting down";
    for (const pool of this.#registry.values()) {
      for (const server of pool) {
        for (const session of [...server.sessions.values()]) session.abort(reason);
        server.end(reason);
      }
    }
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
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
