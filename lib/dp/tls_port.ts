/**
 * A discover point's link port over TLS. It is a `node:tls` server rather
 * than `Deno.listenTls`, because only there can TCP_NODELAY be set on each
 * connection, before its handshake (see `../transport/node_socket.ts`).
 * @module
 */

import type { Socket } from "node:net";
import tls from "node:tls";
import { NodeSocketTransport, type NodeSocketTransportOptions } from "../transport/node_socket.ts";
import type { Transport } from "../transport/tcp.ts";

/** A listening port that hands each new link to its owner. */
export interface LinkPort {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Stops listening, and drops connections still in their TLS handshake. */
  close(): void;
}

/** Options of {@linkcode listenTlsLinks}. */
export interface TlsPortOptions {
  /** Address to listen on. */
  readonly hostname: string;
  /** Port to listen on; 0 picks one. */
  readonly port: number;
  /** PEM certificate chain. */
  readonly cert: string;
  /** PEM private key. */
  readonly key: string;
  /** Milliseconds a connection has to complete its TLS handshake. */
  readonly handshakeTimeout: number;
  /** Options of each link's transport. */
  readonly transport: NodeSocketTransportOptions;
  /** Called with each connection whose handshake succeeded. */
  readonly onLink: (transport: Transport) => void;
  /** Called when a connection's handshake fails (a plaintext peer, an unknown certificate). */
  readonly onHandshakeError: (peer: string, message: string) => void;
  /**
   * Counts a connection from `source` during its TLS handshake, against the
   * same limits as links; returns why not, and the connection is dropped.
   */
  readonly enter: (source: string) => string | undefined;
  /** Uncounts a connection counted by `enter`, once its handshake is over either way. */
  readonly leave: (source: string) => void;
}

/**
 * Listens for TLS links.
 * @throws {Deno.errors.AddrInUse} If the port is taken.
 * @throws {TypeError} If the certificate or key cannot be used.
 */
export async function listenTlsLinks(options: TlsPortOptions): Promise<LinkPort> {
  let server: tls.Server;
  try {
    server = tls.createServer({
      cert: options.cert,
      key: options.key,
      handshakeTimeout: options.handshakeTimeout,
    });
  } catch (error) {
    throw new TypeError(`Cannot serve TLS: ${(error as Error).message}`, { cause: error });
  }
  // Connections in their handshake, by "address:port": the TLS socket of 'secureConnection' is
  // another object than the TCP socket of 'connection'.
  const handshaking = new Map<string, { socket: Socket; over(): void }>();
  const keyOf = (socket: Socket) => `${socket.remoteAddress}:${socket.remotePort}`;
  server.on("connection", (socket: Socket) => {
    const source = socket.remoteAddress ?? "";
    if (options.enter(source) !== undefined) {
      socket.destroy();
      return;
    }
    // Before the handshake: its last flight must not wait for the client's delayed ACK.
    socket.setNoDelay(true);
    socket.setKeepAlive(true);
    const key = keyOf(socket);
    const over = () => {
      if (handshaking.get(key)?.socket !== socket) return;
      handshaking.delete(key);
      options.leave(source);
    };
    handshaking.set(key, { socket, over });
    socket.once("close", over);
  });
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    handshaking.get(keyOf(socket))?.over();
    options.onLink(new NodeSocketTransport(socket, options.transport));
  });
  server.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => {
    const peer = socket.remoteAddress?.includes(":")
      ? `[${socket.remoteAddress}]:${socket.remotePort}`
      : `${socket.remoteAddress}:${socket.remotePort}`;
    options.onHandshakeError(peer, error.message);
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: Error & { code?: string }) => {
      reject(
        error.code === "EADDRINUSE"
          ? new Deno.errors.AddrInUse(error.message, { cause: error })
          : error,
      );
    });
    server.listen(options.port, options.hostname, () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") {
    server.close();
    throw new Error("Cannot serve TLS: the server has no address");
  }
  return {
    addr: { transport: "tcp", hostname: address.address, port: address.port },
    close() {
      server.close();
      for (const { socket } of handshaking.values()) socket.destroy();
    },
  };
}
