/**
 * `listen()`: a plain TCP listener, or an indirect server that registers a
 * name at a discover point and accepts the sessions routed to it.
 * @module
 */

import { getLogger } from "../_log.ts";
import { Backoff, type BackoffOptions, sleep } from "../_backoff.ts";
import type { Identity } from "../link/auth.ts";
import { parseDiscoverPoint } from "../transport/dial.ts";
import { VersionMismatchError } from "../errors.ts";
import { BadResource, Interrupted, unrefTimer } from "../_platform.ts";
import { dialDiscoverPoint } from "../link/handshake.ts";
import { DEFAULT_FEATURES, type EndFeature, Feature, type KeepaliveOptions } from "../link/link.ts";
import { type ConnectMessage, MAX_NAME_LENGTH, MessageType, Role } from "../wire/message.ts";
import { SessionMux } from "./mux.ts";
import type { IndirectConn, IndirectListener } from "./types.ts";
import { parseAddress } from "../transport/tcp.ts";

const logger = getLogger(["rtcp", "listen"]);

/** Largest session number handed out before numbering wraps around. */
const MAX_SESSION_ID = 2 ** 31 - 1;

/** A Connect the indirect server is about to answer, as shown to `admit`. */
export interface SessionRequest {
  /** The session number that the Ack will carry. */
  readonly sessionId: number;
  /**
   * Who is connecting, as the discover point named it (Connect `N`): the
   * name the client chose for itself, else its address. Not to be trusted.
   */
  readonly client: string;
  /**
   * The client's address. With a discover point that speaks `auth`, the
   * address it saw (Connect `P`), which the client cannot choose; otherwise
   * `client` read as an address (port 0 when it is a name).
   */
  readonly remoteAddr: Deno.NetAddr;
  /**
   * The key the client proved to the discover point, `ed25519:…`
   * (Connect `K`); `undefined` when it proved none.
   */
  readonly clientKey: string | undefined;
  /**
   * Aborted when the session does not open after all (refused after `admit`
   * because the backlog is full or the listener closed, or the link broke),
   * so that whatever `admit` prepared can be released.
   */
  readonly signal: AbortSignal;
}

/** What a discover point answered to `publicPort`. */
export type PublicPortOutcome =
  | { readonly dp: string; readonly port: number; readonly refusal?: undefined }
  | { readonly dp: string; readonly port?: undefined; readonly refusal: string };

/** How many links an indirect server keeps to each discover point. */
export interface PoolBounds {
  /** Links kept open (and replaced when lost) at all times. */
  readonly min: number;
  /**
   * Most links: more are opened while sessions are many (32 per link) or
   * the discover point asks for one (a client waits for the name on another
   * instance), and closed again when idle.
   */
  readonly max: number;
}

/** Sessions on the least loaded link of a discover point at which the pool opens one more link. */
const SESSIONS_PER_LINK = 32;

/** Largest pool per discover point. */
const MAX_POOL = 64;

/** Options of an indirect server: `listen({ dp, name })`. */
export interface IndirectListenOptions {
  /**
   * The discover point: `"host:port"`, `"tcp://host:port"`, `"tls://host:port"`,
   * `"ws://…"` or `"wss://…"`; or several (of one cluster, or not), each
   * with its own pool: the listener serves while any of them is up.
   */
  dp: string | readonly string[];
  /** The name to register (ISName). */
  name: string;
  /**
   * The key that owns `name` at the discover point (see `importIdentity`):
   * every link proves it. Registration fails if the discover point does not
   * speak `auth`.
   */
  key?: Identity;
  /** For a `tls://` discover point: PEM certificates to trust instead of the system roots. */
  caCerts?: readonly string[];
  /**
   * Links to keep to each discover point; sessions are spread over them. A
   * number keeps exactly that many; bounds let the pool grow with demand.
   * @default {{ min: 1, max: 8 }}
   */
  pool?: number | PoolBounds;
  /** Milliseconds an extra link (above `pool.min`) may stay without a session before it closes. @default {30000} */
  poolIdleTimeout?: number;
  /**
   * Decides on each session before it is acknowledged. Throw (or reject) to
   * refuse it: the error's message reaches the client as the refusal reason.
   */
  admit?: (request: SessionRequest) => void | Promise<void>;
  /** Sessions acknowledged but not yet taken by `accept()`; more are refused. @default {1024} */
  backlog?: number;
  /** Replace lost links (after a first registration) with backoff, instead of failing. @default {true} */
  reconnect?: boolean;
  /** Delays between reconnection attempts. @default {{ initial: 250, max: 30000 }} */
  backoff?: BackoffOptions;
  /** Largest flow-control window per session direction, in bytes. @default {4194304} */
  maxWindow?: number;
  /**
   * Extensions to offer (PROTOCOL.md Part 3); `[]` speaks Parts 1 and 2 only.
   * `"auth"` is offered only with a `key`.
   * @default {["half-close", "keepalive", "flow-control", "binary", "auth", "pool"]}
   */
  features?: readonly EndFeature[];
  /** Keepalive timing on links to a discover point that agreed on it. @default {{ interval: 15000, timeout: 10000 }} */
  keepalive?: KeepaliveOptions;
  /**
   * Asks each discover point for a public port for the name (extension
   * `public-port`): this port, or 0 for any it allows. Plain TCP clients
   * connecting there reach the name; the port closes when the name's last
   * link at that discover point goes.
   */
  publicPort?: number;
  /** Told the outcome of `publicPort` at each discover point, each time a link asks. */
  onPublicPort?: (outcome: PublicPortOutcome) => void;
  /** Closes the listener when aborted. */
  signal?: AbortSignal;
}

/** Options of a direct (plain TCP) server: exactly `Deno.listen`'s. */
export type DirectListenOptions = Deno.TcpListenOptions & { transport?: "tcp" };

/** Options of {@linkcode listen}: direct when they name a port, indirect when they name a `dp`. */
export type ListenOptions = DirectListenOptions | IndirectListenOptions;

/** One pool link and the Acks it still owes, in Connect order. */
interface PoolLink {
  readonly mux: SessionMux;
  /** The discover point it goes to. */
  readonly dp: string;
  /** Opened above `pool.min`: closes after `poolIdleTimeout` without a session. */
  readonly extra: boolean;
  /** Runs while an extra link has no session. */
  idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** The last Ack in line; the next one is sent after it. */
  acks: Promise<void>;
  /** Whether an Ack is waiting for an `admit` decision. */
  waiting: number;
  /** Set by `close()`: the link closes once its last session ends. */
  draining: boolean;
}

function poolBounds(pool: number | PoolBounds): PoolBounds {
  const { min, max } = typeof pool === "number" ? { min: pool, max: pool } : pool;
  if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1 || max < min || max > MAX_POOL) {
    throw new RangeError(
      `Cannot listen with pool ${
        typeof pool === "number" ? pool : `${min}..${max}`
      }: expected whole numbers 1 ≤ min ≤ max ≤ ${MAX_POOL}`,
    );
  }
  return { min, max };
}

function clientAddress(client: string): Deno.NetAddr {
  try {
    return { transport: "tcp", ...parseAddress(client) };
  } catch {
    return { transport: "tcp", hostname: client, port: 0 };
  }
}

function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The listener behind an {@linkcode IndirectListener}: it keeps the pool of
 * links registered and hands out the sessions that arrive on them.
 */
class IndirectServer implements IndirectListener {
  /** The discover point's address. */
  readonly addr: Deno.NetAddr;
  /** Resolves once the name is registered on a first link; rejects if that fails. */
  readonly ready: Promise<void>;

  readonly #options: IndirectListenOptions;
  readonly #dps: readonly string[];
  readonly #pool: PoolBounds;
  readonly #poolIdleTimeout: number;
  readonly #backlog: number;
  readonly #registered = Promise.withResolvers<void>();
  readonly #stop = new AbortController();
  readonly #queue: IndirectConn[] = [];
  readonly #waiters: PromiseWithResolvers<IndirectConn>[] = [];
  readonly #links = new Set<PoolLink>();
  /** Extra links open or being opened, per discover point. */
  readonly #extras = new Map<string, number>();
  /** Discover points whose first registration failed while no link was registered anywhere. */
  readonly #unreachable = new Set<string>();
  readonly #ids = new Set<number>();
  #nextId = 0;
  #isRegistered = false;
  #failure: Error | undefined;
  #closed = false;
  #unref = false;

  /** Starts registering; prefer {@linkcode listen}. */
  constructor(options: IndirectListenOptions) {
    this.#pool = poolBounds(options.pool ?? { min: 1, max: 8 });
    this.#poolIdleTimeout = options.poolIdleTimeout ?? 30_000;
    const publicPort = options.publicPort;
    if (
      publicPort !== undefined &&
      (!Number.isInteger(publicPort) || publicPort < 0 || publicPort > 65535)
    ) {
      throw new RangeError(`Cannot ask for public port ${publicPort}: expected 0 (any) to 65535`);
    }
    if (
      typeof options.name !== "string" || options.name === "" ||
      options.name.length > MAX_NAME_LENGTH
    ) {
      throw new TypeError(
        `Cannot listen as "${options.name}": the name must be 1 to ${MAX_NAME_LENGTH} characters`,
      );
    }
    this.#backlog = options.backlog ?? 1024;
    if (!Number.isInteger(this.#backlog) || this.#backlog < 0) {
      throw new RangeError(
        `Cannot listen with backlog ${options.backlog}: expected a whole number`,
      );
    }
    this.#options = options;
    this.#dps = typeof options.dp === "string" ? [options.dp] : [...new Set(options.dp)];
    if (this.#dps.length === 0) {
      throw new TypeError("Cannot listen: dp lists no discover point");
    }
    const { hostname, port } = parseDiscoverPoint(this.#dps[0]!);
    for (const dp of this.#dps.slice(1)) parseDiscoverPoint(dp);
    this.addr = { transport: "tcp", hostname, port };
    this.ready = this.#registered.promise;
    this.ready.catch(() => {}); // Reported through accept() as well; not unhandled.
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
    for (const dp of this.#dps) {
      for (let i = 0; i < this.#pool.min; i++) void this.#keepLink(dp);
    }
  }

  /** Keeps one pool link to `dp` registered until the listener closes or fails. */
  async #keepLink(dp: string): Promise<void> {
    const name = this.#options.name;
    const backoff = new Backoff(this.#options.backoff);
    const signal = this.#stop.signal;
    let registered = false;
    while (!signal.aborted) {
      let lost: Error;
      try {
        lost = await this.#runLink(dp, false, () => {
          registered = true;
          backoff.reset();
        });
      } catch (error) {
        if (signal.aborted) return;
        lost = error as Error;
        if (!registered && !this.#isRegistered) {
          this.#unreachable.add(dp);
          if (this.#unreachable.size === this.#dps.length) return this.#fail(lost);
        }
        if (error instanceof VersionMismatchError) {
          if (this.#dps.length === 1) return this.#fail(lost);
          logger.error("Gave up on {dp} for {name}: {message}", {
            dp,
            name,
            message: lost.message,
          });
          return;
        }
      }
      if (signal.aborted) return;
      if (this.#options.reconnect === false) return this.#fail(lost);
      const delay = Math.round(backoff.next());
      logger.warn("Lost a link of {name} to {dp}: {message}; reconnecting in {delay} ms", {
        name,
        dp,
        message: lost.message,
        delay,
      });
      await sleep(delay, signal, this.#unref);
    }
  }

  /** Opens one more link to `dp`, above `pool.min`, unless the pool is at `pool.max` there. */
  async #addLink(dp: string): Promise<void> {
    const extras = this.#extras.get(dp) ?? 0;
    if (this.#closed || this.#failure || this.#pool.min + extras >= this.#pool.max) return;
    this.#extras.set(dp, extras + 1);
    try {
      await this.#runLink(dp, true, () => {});
    } catch (error) {
      if (!this.#stop.signal.aborted) {
        logger.warn("Cannot open one more link of {name} to {dp}: {message}", {
          name: this.#options.name,
          dp,
          message: (error as Error).message,
        });
      }
    } finally {
      this.#extras.set(dp, (this.#extras.get(dp) ?? 1) - 1);
    }
  }

  /**
   * Dials `dp`, registers, and serves the link until it ends.
   * @returns Why the link ended.
   * @throws What kept it from registering.
   */
  async #runLink(dp: string, extra: boolean, onRegistered: () => void): Promise<Error> {
    const name = this.#options.name;
    const signal = this.#stop.signal;
    let entry: PoolLink | undefined;
    try {
      const link = await dialDiscoverPoint(dp, {
        role: Role.IndirectServer,
        name,
        features: this.#options.features ?? DEFAULT_FEATURES,
        keepalive: this.#options.keepalive,
        signal,
        ...(this.#options.key ? { identity: this.#options.key } : {}),
        ...(this.#options.caCerts ? { caCerts: this.#options.caCerts } : {}),
      });
      const mux: SessionMux = new SessionMux(link, {
        onConnect: (message) => this.#onConnect(entry!, message),
        onRelease: (id) => this.#release(entry!, id),
        onMore: () => void this.#addLink(dp),
        onPort: (message) => {
          const outcome: PublicPortOutcome = message.reason === ""
            ? { dp, port: message.port }
            : { dp, refusal: message.reason };
          this.#options.onPublicPort?.(outcome);
        },
        maxWindow: this.#options.maxWindow,
      });
      entry = {
        mux,
        dp,
        extra,
        idleTimer: undefined,
        acks: Promise.resolve(),
        waiting: 0,
        draining: false,
      };
      if (signal.aborted) {
        link.abort();
        return new BadResource("Listener has been closed");
      }
      if (this.#unref) link.unref();
      this.#links.add(entry);
      this.#isRegistered = true;
      this.#unreachable.clear();
      this.#registered.resolve();
      onRegistered();
      this.#startIdleTimer(entry);
      logger.info("Registered {name} at {dp}", { name, dp });
      this.#askForPort(dp, mux);
      await mux.run();
      return new Deno.errors.ConnectionReset(`Link to discover point "${dp}" closed`);
    } catch (error) {
      if (entry === undefined) throw error;
      return error as Error;
    } finally {
      if (entry) {
        clearTimeout(entry.idleTimer);
        this.#links.delete(entry);
      }
    }
  }

  /** Sends the request for a public port on a link just registered, if one is wanted. */
  #askForPort(dp: string, mux: SessionMux): void {
    const port = this.#options.publicPort;
    if (port === undefined) return;
    if (!mux.link.features.has(Feature.PublicPort)) {
      this.#options.onPublicPort?.({
        dp,
        refusal:
          "Cannot ask for a public port: the discover point does not speak extension public-port",
      });
      return;
    }
    try {
      mux.send({ type: MessageType.Port, port, reason: "" });
    } catch {
      // The link broke already; the next one asks again.
    }
  }

  /** An extra link without sessions closes after `poolIdleTimeout`, unless one comes. */
  #startIdleTimer(entry: PoolLink): void {
    if (!entry.extra || entry.mux.size > 0 || entry.idleTimer !== undefined) return;
    entry.idleTimer = setTimeout(() => {
      entry.idleTimer = undefined;
      if (entry.mux.size === 0) {
        logger.debug("Closed an idle extra link of {name} to {dp}", {
          name: this.#options.name,
          dp: entry.dp,
        });
        void entry.mux.link.close();
      }
    }, this.#poolIdleTimeout);
    if (this.#unref) unrefTimer(entry.idleTimer);
  }

  /** Sessions are many on every link to `dp`: open one more, within `pool.max`. */
  #growWithLoad(dp: string): void {
    let least = Infinity;
    for (const entry of this.#links) {
      if (entry.dp === dp && !entry.draining) least = Math.min(least, entry.mux.size);
    }
    if (least >= SESSIONS_PER_LINK && least !== Infinity) void this.#addLink(dp);
  }

  #allocateId(): number {
    do {
      this.#nextId = this.#nextId >= MAX_SESSION_ID ? 1 : this.#nextId + 1;
    } while (this.#ids.has(this.#nextId));
    this.#ids.add(this.#nextId);
    return this.#nextId;
  }

  #onConnect(entry: PoolLink, message: ConnectMessage): void {
    const cancel = new AbortController();
    const request: SessionRequest = {
      sessionId: this.#allocateId(),
      client: message.name,
      remoteAddr: clientAddress(message.address ?? message.name),
      clientKey: message.key,
      signal: cancel.signal,
    };
    const admit = this.#options.admit;
    if (admit === undefined && entry.waiting === 0) {
      this.#answer(entry, request, cancel, this.#refusal());
      return;
    }
    const decision = Promise.resolve(request)
      .then(admit)
      .then(() => this.#refusal(), reasonOf);
    entry.waiting++;
    entry.acks = entry.acks.then(async () => {
      const refusal = await decision;
      entry.waiting--;
      this.#answer(entry, request, cancel, refusal);
    });
  }

  #refusal(): string | undefined {
    if (this.#closed || this.#failure) return "The indirect server is closing";
    if (this.#queue.length >= this.#backlog) {
      return `The indirect server's backlog of ${this.#backlog} connections is full`;
    }
    return undefined;
  }

  /** Sends the Ack (or refusal) for `request`, in Connect order. */
  #answer(
    entry: PoolLink,
    request: SessionRequest,
    cancel: AbortController,
    refusal: string | undefined,
  ): void {
    const { sessionId } = request;
    try {
      if (refusal !== undefined) {
        this.#ids.delete(sessionId);
        cancel.abort(new Error(refusal));
        entry.mux.send({ type: MessageType.Ack, sessionId: -1, reason: refusal });
        return;
      }
      // Registered before the Ack goes out: Data may follow it at once.
      const conn = entry.mux.open(sessionId, request.remoteAddr, request.clientKey);
      entry.mux.send({ type: MessageType.Ack, sessionId, reason: "" });
      clearTimeout(entry.idleTimer);
      entry.idleTimer = undefined;
      this.#growWithLoad(entry.dp);
      const waiter = this.#waiters.shift();
      if (waiter) waiter.resolve(conn);
      else this.#queue.push(conn);
    } catch (error) {
      // The link broke; its mux ends every session on it.
      this.#ids.delete(sessionId);
      cancel.abort(error);
    }
  }

  #release(entry: PoolLink, sessionId: number): void {
    this.#ids.delete(sessionId);
    if (entry.draining && entry.mux.size === 0) void entry.mux.link.close();
    else this.#startIdleTimer(entry);
  }

  #fail(error: Error): void {
    if (this.#failure || this.#closed) return;
    this.#failure = error;
    this.#registered.reject(error);
    this.#stop.abort();
    // The error reaches the caller through ready and accept(); the caller says what it means.
    logger.debug("Indirect server {name} stopped: {message}", {
      name: this.#options.name,
      message: error.message,
    });
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
    for (const entry of this.#links) entry.mux.link.abort();
  }

  /**
   * Waits for the next session.
   * @throws The registration error (e.g. `DiscoverPointUnreachableError`, `VersionMismatchError`).
   * @throws {Deno.errors.BadResource} Once the listener is closed.
   */
  accept(): Promise<IndirectConn> {
    const conn = this.#queue.shift();
    if (conn) return Promise.resolve(conn);
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closed) {
      return Promise.reject(new BadResource("Listener has been closed"));
    }
    const waiter = Promise.withResolvers<IndirectConn>();
    this.#waiters.push(waiter);
    return waiter.promise;
  }

  /**
   * The next session, as `Deno.Listener`'s iterator does: done once the
   * listener is closed; the registration error rejects it.
   */
  async next(): Promise<IteratorResult<IndirectConn, undefined>> {
    try {
      return { value: await this.accept(), done: false };
    } catch (error) {
      if (error instanceof BadResource || error instanceof Interrupted) {
        return { value: undefined, done: true };
      }
      throw error;
    }
  }

  /** Closes the listener, as `Deno.Listener`'s iterator does when a `for await` loop is left. */
  return(): Promise<IteratorResult<IndirectConn, undefined>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** The listener itself, as on `Deno.Listener`: leaving a `for await` loop closes it. */
  [Symbol.asyncIterator](): this {
    return this;
  }

  /**
   * Stops accepting: pending `accept()` calls reject, sessions not yet accepted
   * are closed, new Connects are refused, and each link closes once the
   * sessions already accepted on it have ended.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stop.abort();
    const closed = new BadResource("Listener has been closed");
    for (const waiter of this.#waiters.splice(0)) waiter.reject(closed);
    for (const conn of this.#queue.splice(0)) conn[Symbol.dispose]();
    for (const entry of this.#links) {
      entry.draining = true;
      if (entry.mux.size === 0) void entry.mux.link.close();
    }
  }

  /** Makes the listener's links keep the process alive (the default). */
  ref(): void {
    this.#unref = false;
    for (const entry of this.#links) entry.mux.link.ref();
  }

  /** Makes the listener's links not keep the process alive. */
  unref(): void {
    this.#unref = true;
    for (const entry of this.#links) entry.mux.link.unref();
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Listens for connections: plain TCP when given a port (exactly `Deno.listen`),
 * or as an indirect server registered at a discover point when given `dp` and `name`.
 * @param options A port for a direct server, or a discover point and a name.
 * @returns A `Deno.TcpListener`, or an {@linkcode IndirectListener}.
 * @example Echo every tunnelled connection
 * ```ts ignore
 * for await (const conn of listen({ dp: "dp.example.com:7000", name: "echo" })) {
 *   void conn.readable.pipeTo(conn.writable);
 * }
 * ```
 */
export function listen(options: DirectListenOptions): Deno.TcpListener;
/**
 * Registers `name` at the discover point `dp` and accepts the sessions that
 * clients open to it. Returns at once; registration errors reach `accept()`.
 * @param options The discover point, the name, and how to keep the registration.
 * @returns A listener shaped like `Deno.Listener`.
 */
export function listen(options: IndirectListenOptions): IndirectListener;
/**
 * Either of the above, as `options` says: a direct server when they name a
 * port, an indirect one when they name a `dp`.
 * @param options A port for a direct server, or a discover point and a name.
 * @returns A `Deno.TcpListener`, or an {@linkcode IndirectListener}.
 */
export function listen(options: ListenOptions): Deno.TcpListener | IndirectListener;
export function listen(options: ListenOptions): Deno.TcpListener | IndirectListener {
  if ("dp" in options) return new IndirectServer(options);
  return Deno.listen(options);
}
