/**
 * RTCP in a web page: an indirect client that reaches a server by name
 * through a discover point's WebSocket path (`ws://…/rtcp` or `wss://…/rtcp`).
 *
 * This entry and everything it imports use web APIs only (WebSocket, streams,
 * `crypto.subtle`), so it runs in a browser as well as under Deno. Build one
 * JavaScript file for a page with `deno task bundle` (it writes `dist/rtcp.js`)
 * and import from that.
 *
 * A lost link is a {@linkcode ConnectionReset} and a missed deadline a
 * {@linkcode TimedOut}: under Deno these are `Deno.errors.ConnectionReset` and
 * `Deno.errors.TimedOut`, in a page classes of those names.
 *
 * @example Echo through a discover point, from a page
 * ```ts ignore
 * import { connect } from "/rtcp.js"; // dist/rtcp.js, from `deno task bundle`
 *
 * const conn = await connect({ dp: "wss://dp.example.com/rtcp", name: "echo" });
 * await conn.write(new TextEncoder().encode("hello"));
 * const buffer = new Uint8Array(5);
 * const n = await conn.read(buffer);
 * console.log(new TextDecoder().decode(buffer.subarray(0, n ?? 0)));
 * conn.close();
 * ```
 * @module
 */

import { connect as connectAny, type IndirectConnectOptions } from "./lib/indirect/connect.ts";
import { IndirectDialer as AnyDialer } from "./lib/indirect/dialer.ts";
import { parseDiscoverPoint } from "./lib/transport/dial.ts";
import type { IndirectConn } from "./lib/indirect/types.ts";

/** Options of {@linkcode connect} in a web page: a WebSocket discover point and a name. */
export type BrowserConnectOptions = Omit<IndirectConnectOptions, "caCerts">;

/**
 * Opens a session to the indirect server `name` through the discover point
 * `dp`, which must be a WebSocket URL (or several, tried in turn): a page
 * cannot open TCP connections.
 * @param options The discover point (`ws://host:port/rtcp` or `wss://host/rtcp`), the server's name, a timeout.
 * @returns A connection shaped like `Deno.Conn`: `read`/`write`, `readable`/`writable`, `close()`.
 * @throws {TypeError} If `dp` is not a `ws://` or `wss://` URL.
 * @throws {DiscoverPointUnreachableError} If the WebSocket cannot be opened.
 * @throws {VersionMismatchError} If the discover point refuses our protocol version.
 * @throws {SessionRefusedError} If no server has that name, or the server refused.
 * @throws {TimedOut} If the session did not open within `timeout`.
 * @example
 * ```ts ignore
 * const conn = await connect({ dp: "wss://dp.example.com/rtcp", name: "echo" });
 * await conn.write(new TextEncoder().encode("hello"));
 * ```
 */
export async function connect(options: BrowserConnectOptions): Promise<IndirectConn> {
  checkWebSocket(options.dp);
  return await connectAny(options);
}

/**
 * Many sessions to one server over one WebSocket (extension `multiplex`):
 * `connect()` opens each in one round trip, `close()` closes the WebSocket.
 * @example
 * ```ts ignore
 * const dialer = new IndirectDialer({ dp: "wss://dp.example.com/rtcp", name: "echo" });
 * const [a, b] = await Promise.all([dialer.connect(), dialer.connect()]);
 * await dialer.close();
 * ```
 */
export class IndirectDialer extends AnyDialer {
  /**
   * A dialer for the sessions `options` describe; nothing is dialled yet.
   * @throws {TypeError} If `dp` is not a `ws://` or `wss://` URL.
   */
  constructor(options: BrowserConnectOptions) {
    checkWebSocket(options.dp);
    super(options);
  }
}

/** Throws unless every discover point of `dp` is a WebSocket URL: a page cannot open TCP connections. */
function checkWebSocket(dp: string | readonly string[]): void {
  for (const each of typeof dp === "string" ? [dp] : dp) {
    const { scheme } = parseDiscoverPoint(each);
    if (scheme !== "ws" && scheme !== "wss") {
      throw new TypeError(
        `Cannot use discover point "${each}" in a web page: expected ws://host:port/path or wss://host/path`,
      );
    }
  }
}

export type { IndirectConnectOptions } from "./lib/indirect/connect.ts";
export type { IndirectConn } from "./lib/indirect/types.ts";
export { Feature } from "./lib/link/link.ts";
export type { EndFeature, FeatureName, KeepaliveOptions } from "./lib/link/link.ts";
export type { Clock, TimerHandle } from "./lib/_clock.ts";
export { generateIdentity, importIdentity } from "./lib/link/auth.ts";
export type { Identity } from "./lib/link/auth.ts";
export {
  DiscoverPointUnreachableError,
  ProtocolError,
  SessionClosedError,
  SessionRefusedError,
  VersionMismatchError,
} from "./lib/errors.ts";
export { BadResource, ConnectionReset, Interrupted, TimedOut, WriteZero } from "./lib/_platform.ts";
