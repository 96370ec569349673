/**
 * `connect()`: a plain TCP connection, or an indirect client's session to a
 * named server through a discover point.
 * @module
 */

import { getLogger } from "../_log.ts";
import { TimedOut } from "../_platform.ts";
import type { Identity } from "../link/auth.ts";
import { DiscoverPointUnreachableError, ProtocolError, SessionRefusedError } from "../errors.ts";
import { dialDiscoverPoint, type DialOptions } from "../link/handshake.ts";
import { DEFAULT_FEATURES, type EndFeature, type KeepaliveOptions } from "../link/link.ts";
import { MessageType, messageTypeName, Role } from "../wire/message.ts";
import { SessionMux } from "./mux.ts";
import type { IndirectConn } from "./types.ts";

const logger = getLogger(["rtcp", "connect"]);

/** Options of an indirect client: `connect({ dp, name })`. */
export interface IndirectConnectOptions {
  /**
   * The discover point: `"host:port"`, `"tcp://host:port"`, `"tls://host:port"`,
   * `"ws://…"` or `"wss://…"`; or several, tried in turn while one cannot be reached.
   */
  dp: string | readonly string[];
  /** The indirect server's registered name (ISName). */
  name: string;
  /**
   * A client key to prove (see `importIdentity`), for names that admit only
   * listed clients; the server sees it in `SessionRequest.clientKey`.
   */
  key?: Identity;
  /** For a `tls://` discover point: PEM certificates to trust instead of the system roots. */
  caCerts?: readonly string[];
  /** The name this client announces; the server sees it instead of our address. @default {""} */
  clientName?: string;
  /** Milliseconds to wait for the session to open. @default {10000} */
  timeout?: number;
  /** Largest flow-control window per session direction, in bytes. @default {4194304} */
  maxWindow?: number;
  /**
   * Extensions to offer (PROTOCOL.md Part 3); `[]` speaks Parts 1 and 2 only.
   * `"auth"` is offered only with a `key`.
   * @default {["half-close", "keepalive", "flow-control", "binary", "auth", "pool"]}
   */
  features?: readonly EndFeature[];
  /** Keepalive timing, when the discover point agrees on it. @default {{ interval: 15000, timeout: 10000 }} */
  keepalive?: KeepaliveOptions;
  /** Cancels the attempt. */
  signal?: AbortSignal;
}

/** Options of a direct (plain TCP) client: exactly `Deno.connect`'s. */
export type DirectConnectOptions = Deno.ConnectOptions;

/** Options of {@linkcode connect}: direct when they name a port, indirect when they name a `dp`. */
export type ConnectOptions = DirectConnectOptions | IndirectConnectOptions;

class ConnectTimeout extends Error {}

/** Tries each discover point in turn until one can be reached. */
function connectIndirect(options: IndirectConnectOptions): Promise<IndirectConn> {
  return throughEach(options.dp, (dp) => connectThrough(dp, options));
}

/**
 * Runs `attempt` on each discover point of `dp` in turn, while it fails with
 * {@linkcode DiscoverPointUnreachableError}.
 * @returns What the first attempt that did not fail so returned.
 * @throws The last attempt's error, or any other error at once.
 */
export async function throughEach<T>(
  dp: string | readonly string[],
  attempt: (dp: string) => Promise<T>,
): Promise<T> {
  const dps = typeof dp === "string" ? [dp] : dp;
  if (dps.length === 0) throw new TypeError("Cannot connect: dp lists no discover point");
  for (const [index, dp] of dps.entries()) {
    try {
      return await attempt(dp);
    } catch (error) {
      if (!(error instanceof DiscoverPointUnreachableError) || index === dps.length - 1) {
        throw error;
      }
      logger.debug("Cannot reach {dp}: {message}; trying the next", {
        dp,
        message: error.message,
      });
    }
  }
  throw new Error("unreachable");
}

/**
 * Runs `attempt` with a signal that aborts after `options.timeout` (default
 * 10 s) or with `options.signal`.
 * @throws {Deno.errors.TimedOut} At the timeout, saying that `name` did not
 * answer through `dp`; else what `attempt` throws.
 */
export async function withinTimeout<T>(
  dp: string,
  options: Pick<IndirectConnectOptions, "name" | "timeout" | "signal">,
  attempt: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const timeout = options.timeout ?? 10_000;
  if (!(timeout > 0)) {
    throw new RangeError(`Cannot connect with timeout ${timeout}: expected more than 0 ms`);
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new ConnectTimeout()), timeout);
  const onAbort = () => controller.abort(options.signal!.reason);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  try {
    return await attempt(controller.signal);
  } catch (error) {
    if (error instanceof ConnectTimeout) {
      throw new TimedOut(
        `Cannot open session to "${options.name}" through "${dp}": no answer within ${timeout} ms`,
      );
    }
    throw error;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/** The options of a link to `dp` for an indirect client of `options.name`. */
export function clientLinkOptions(
  options: IndirectConnectOptions,
  signal: AbortSignal,
): DialOptions {
  return {
    role: Role.IndirectClient,
    name: options.clientName ?? "",
    features: options.features ?? DEFAULT_FEATURES,
    keepalive: options.keepalive,
    signal,
    authName: options.name,
    ...(options.key ? { identity: options.key } : {}),
    ...(options.caCerts ? { caCerts: options.caCerts } : {}),
  };
}

function connectThrough(dp: string, options: IndirectConnectOptions): Promise<IndirectConn> {
  return withinTimeout(dp, options, async (signal) => {
    const link = await dialDiscoverPoint(dp, {
      ...clientLinkOptions(options, signal),
      pipelined: [{ type: MessageType.Connect, name: options.name }],
    });
    try {
      const answer = await link.nextWithin(signal);
      if (answer?.type !== MessageType.Ack) {
        throw new ProtocolError(
          `Cannot open session to "${options.name}": expected Ack, ${
            answer === null ? "the link closed" : `got ${messageTypeName(answer.type)}`
          }`,
        );
      }
      if (answer.sessionId === -1) throw new SessionRefusedError(options.name, answer.reason);
      const mux = new SessionMux(link, {
        onRelease: () => void link.close(),
        maxWindow: options.maxWindow,
      });
      const conn = mux.open(answer.sessionId);
      mux.run().catch((error) => {
        logger.debug("Session {id} link ended: {message}", {
          id: answer.sessionId,
          message: error.message,
        });
      });
      return conn;
    } catch (error) {
      link.abort();
      throw error;
    }
  });
}

/**
 * Connects: plain TCP when given a port (exactly `Deno.connect`), or a session
 * to the indirect server `name` through the discover point `dp`.
 * @param options A host and port for a direct client, or a discover point and a name.
 * @returns A `Deno.TcpConn`, or an {@linkcode IndirectConn}.
 * @throws {DiscoverPointUnreachableError} If the discover point cannot be reached.
 * @throws {VersionMismatchError} If the discover point refuses our protocol version.
 * @throws {SessionRefusedError} If no server has that name, or the server refused.
 * @throws {Deno.errors.TimedOut} If the session did not open within `timeout`.
 * @example
 * ```ts ignore
 * using conn = await connect({ dp: "dp.example.com:7000", name: "echo" });
 * await conn.write(new TextEncoder().encode("hello"));
 * ```
 */
export function connect(options: DirectConnectOptions): Promise<Deno.TcpConn>;
/**
 * Opens a session to the indirect server `name` through the discover point `dp`.
 * @param options The discover point, the server's name, a timeout.
 * @returns A connection shaped like `Deno.Conn`.
 * @throws {DiscoverPointUnreachableError} If the discover point cannot be reached.
 * @throws {VersionMismatchError} If the discover point refuses our protocol version.
 * @throws {SessionRefusedError} If no server has that name, or the server refused.
 * @throws {Deno.errors.TimedOut} If the session did not open within `timeout`.
 */
export function connect(options: IndirectConnectOptions): Promise<IndirectConn>;
/**
 * Either of the above, as `options` says: plain TCP when they name a port, a
 * session through a discover point when they name a `dp`.
 * @param options A host and port for a direct client, or a discover point and a name.
 * @returns A `Deno.TcpConn`, or an {@linkcode IndirectConn}.
 */
export function connect(options: ConnectOptions): Promise<Deno.TcpConn | IndirectConn>;
export function connect(options: ConnectOptions): Promise<Deno.TcpConn | IndirectConn> {
  if ("dp" in options) return connectIndirect(options);
  return Deno.connect(options);
}
