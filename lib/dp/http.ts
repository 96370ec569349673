/**
 * A discover point over HTTP: WebSocket links at one path, other paths 404.
 * The same handler serves `dp.ts --http` and `deploy.ts`, and can be mounted
 * in any `Deno.serve` app; every link it upgrades goes through
 * `DiscoverPoint.serveLink`, with the same limits and name policy as TCP links.
 * @module
 */

import type { Transport } from "../transport/tcp.ts";
import { WebSocketTransport, type WebSocketTransportOptions } from "../transport/websocket.ts";

/** The path at which a discover point takes WebSocket links. */
export const LINK_PATH = "/rtcp";

/** An HTTP handler, as `Deno.serve` takes it. */
export type HttpHandler = (request: Request, info?: Deno.ServeHandlerInfo) => Response;

/** Options of {@linkcode webSocketLinkHandler}. */
export interface WebSocketLinkHandlerOptions {
  /** The path links are upgraded at. @default {"/rtcp"} */
  path?: string;
  /** Options of each link's transport (the queue cap). */
  transport?: WebSocketTransportOptions;
}

/**
 * Makes the handler that upgrades requests at `path` to WebSocket links and
 * hands them to `serveLink`.
 * @param serveLink Serves one link until it ends (a discover point's `serveLink`).
 */
export function webSocketLinkHandler(
  serveLink: (transport: Transport) => Promise<void>,
  options: WebSocketLinkHandlerOptions = {},
): HttpHandler {
  const path = options.path ?? LINK_PATH;
  return (request, info) => {
    if (new URL(request.url).pathname !== path) {
      return new Response("Not found\n", { status: 404 });
    }
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response(
        `This is an RTCP discover point: links are WebSocket upgrades of ${path}\n`,
        { status: 426, headers: { upgrade: "websocket" } },
      );
    }
    // Read before the upgrade: the request is gone after it.
    const remote = info?.remoteAddr;
    const remoteAddr: Deno.NetAddr | undefined = remote?.transport === "tcp"
      ? { transport: "tcp", hostname: remote.hostname, port: remote.port }
      : undefined;
    const { socket, response } = Deno.upgradeWebSocket(request);
    void serveLink(new WebSocketTransport(socket, { ...options.transport, remoteAddr }));
    return response;
  };
}
