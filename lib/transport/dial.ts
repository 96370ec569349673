/**
 * Dialing a discover point: its address is a URL whose scheme picks the
 * transport, here and nowhere else. `host:port` and `tcp://host:port` are
 * plain TCP; `tls://host:port` is TLS over TCP, checked against the given CA
 * certificates or the system's roots; `ws://host:port/path` and
 * `wss://host/path` are a WebSocket (HTTP upgrade), for discover points that
 * only HTTP reaches.
 * @module
 */

import { InvalidData } from "../_platform.ts";
import { DiscoverPointUnreachableError } from "../errors.ts";
import { parseAddress, TcpTransport, type Transport } from "./tcp.ts";

/** The transports a discover point address can name. */
export type DialScheme = "tcp" | "tls" | "ws" | "wss";

const FORMS = "host:port, tcp://host:port, tls://host:port, ws://host:port/path or wss://host/path";

/** A discover point address, parsed. */
export interface DiscoverPointAddress {
  /** The transport. */
  readonly scheme: DialScheme;
  /** Host name or IP address (also the name a TLS certificate must carry). */
  readonly hostname: string;
  /** TCP port. */
  readonly port: number;
  /** For `ws://` and `wss://`: the whole URL. */
  readonly url?: string;
}

/** Options of {@linkcode dialTransport}. */
export interface DialTransportOptions {
  /** For `tls://`: PEM certificates to trust instead of the system roots (the DP's own self-signed one pins it). */
  caCerts?: readonly string[];
  /** Aborts the dial. */
  signal?: AbortSignal;
}

/**
 * Parses a discover point address: `host:port`, `tcp://host:port`,
 * `tls://host:port`, `ws://host:port/path` or `wss://host/path`.
 * @throws {TypeError} Saying which forms are accepted.
 */
export function parseDiscoverPoint(address: string): DiscoverPointAddress {
  const match = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/i.exec(address.trim());
  const scheme = match?.[1]?.toLowerCase() ?? "tcp";
  if (scheme === "ws" || scheme === "wss") {
    let url: URL;
    try {
      url = new URL(address.trim());
    } catch {
      throw new TypeError(`Cannot use discover point "${address}": expected ${FORMS}`);
    }
    const port = Number(url.port) || (scheme === "wss" ? 443 : 80);
    return { scheme, hostname: url.hostname.replace(/^\[|\]$/g, ""), port, url: url.href };
  }
  if (scheme !== "tcp" && scheme !== "tls") {
    throw new TypeError(`Cannot use discover point "${address}": expected ${FORMS}`);
  }
  const rest = (match?.[2] ?? address).replace(/\/$/, "");
  try {
    return { scheme, ...parseAddress(rest) };
  } catch {
    throw new TypeError(`Cannot use discover point "${address}": expected ${FORMS}`);
  }
}

/**
 * Opens a transport to a discover point.
 * @throws {DiscoverPointUnreachableError} If TCP cannot reach it.
 * @throws {Deno.errors.InvalidData} If its TLS certificate does not verify.
 */
export async function dialTransport(
  address: string,
  options: DialTransportOptions = {},
): Promise<Transport> {
  const { scheme, hostname, port, url } = parseDiscoverPoint(address);
  const { signal } = options;
  if (url !== undefined) return await dialWebSocket(address, url, signal);
  let tcp: Deno.TcpConn;
  try {
    tcp = await Deno.connect({ hostname, port, signal });
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new DiscoverPointUnreachableError(address, { cause: error });
  }
  if (scheme === "tcp") return new TcpTransport(tcp);
  // TCP options first: a TLS connection does not expose them.
  tcp.setNoDelay(true);
  tcp.setKeepAlive(true);
  const tls = await Deno.startTls(tcp, {
    hostname,
    ...(options.caCerts ? { caCerts: [...options.caCerts] } : {}),
  });
  const onAbort = () => tls.close();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await tls.handshake();
  } catch (error) {
    try {
      tls.close();
    } catch {
      // Closed by the abort.
    }
    if (signal?.aborted) throw signal.reason;
    throw new InvalidData(
      `Cannot verify discover point "${address}": ${
        (error as Error).message
      }. Trust its certificate's CA (option caCerts, flag --tls-ca FILE)`,
      { cause: error },
    );
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  return new TcpTransport(tls);
}

/** Opens a WebSocket to `url` and waits until it is open. */
async function dialWebSocket(
  address: string,
  url: string,
  signal: AbortSignal | undefined,
): Promise<Transport> {
  // Loaded only for ws:// and wss://: a TCP forwarder does not hold its code.
  const { WebSocketTransport } = await import("./websocket.ts");
  signal?.throwIfAborted();
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const opened = Promise.withResolvers<void>();
  const onAbort = () => {
    ws.close();
    opened.reject(signal!.reason);
  };
  ws.addEventListener("open", () => opened.resolve(), { once: true });
  ws.addEventListener("error", (event) => {
    const detail = (event as ErrorEvent).message;
    opened.reject(new Error(detail || "the WebSocket connection failed"));
  }, { once: true });
  ws.addEventListener("close", () => opened.reject(new Error("the server closed the WebSocket")), {
    once: true,
  });
  signal?.addEventListener("abort", onAbort, { once: true });
  // The transport listens from the start, so nothing the server sends at once is missed.
  const transport = new WebSocketTransport(ws);
  try {
    await opened.promise;
  } catch (error) {
    transport.abort();
    if (signal?.aborted) throw signal.reason;
    throw new DiscoverPointUnreachableError(address, { cause: error });
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  return transport;
}
