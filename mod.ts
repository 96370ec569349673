/**
 * RTCP: reversible TCP for Deno.
 *
 * `listen()` and `connect()` have the shapes of `Deno.listen` and
 * `Deno.connect`. Given a hostname and port they are plain TCP. Given a
 * discover point (`dp`) and a `name`, `listen()` registers the name and
 * accepts connections routed through the discover point, and `connect()`
 * reaches that server by name, from anywhere that can reach the discover point.
 *
 * @example An indirect echo server and a client
 * ```ts ignore
 * import { connect, listen } from "@x/rtcp";
 *
 * const listener = listen({ dp: "dp.example.com:7000", name: "echo" });
 * (async () => {
 *   for await (const conn of listener) void conn.readable.pipeTo(conn.writable);
 * })();
 *
 * using conn = await connect({ dp: "dp.example.com:7000", name: "echo" });
 * await conn.write(new TextEncoder().encode("hello"));
 * ```
 * @module
 */

export { listen } from "./lib/indirect/listen.ts";
export type {
  DirectListenOptions,
  IndirectListener,
  IndirectListenOptions,
  ListenOptions,
  PoolBounds,
  SessionRequest,
} from "./lib/indirect/listen.ts";
export type { BackoffOptions } from "./lib/_backoff.ts";
export type { KeepaliveOptions } from "./lib/link/link.ts";
export { connect } from "./lib/indirect/connect.ts";
export type {
  ConnectOptions,
  DirectConnectOptions,
  IndirectConnectOptions,
} from "./lib/indirect/connect.ts";
export type { IndirectConn } from "./lib/indirect/session.ts";
export { DEFAULT_PORT, DiscoverPoint } from "./lib/dp/discover_point.ts";
export type { DiscoverPointOptions, DiscoverPointStats } from "./lib/dp/discover_point.ts";
export {
  formatPublicKey,
  generateIdentity,
  importIdentity,
  parsePublicKey,
  pkcs8ToPem,
} from "./lib/link/auth.ts";
export type { Identity } from "./lib/link/auth.ts";
export { NamesFile, OPEN_NAMES } from "./lib/dp/policy.ts";
export { MemoryRegistry } from "./lib/dp/registry.ts";
export type { Holder, Membership, OnWanted, Registry, RegistryMember } from "./lib/dp/registry.ts";
export { KvRegistry } from "./lib/dp/kv_registry.ts";
export type { KvRegistryOptions } from "./lib/dp/kv_registry.ts";
export type { NamePolicy, NameRule, UnlistedNames } from "./lib/dp/policy.ts";
export { parseDiscoverPoint } from "./lib/transport/dial.ts";
export { TcpTransport } from "./lib/transport/tcp.ts";
export { WebSocketTransport } from "./lib/transport/websocket.ts";
export type { WebSocketTransportOptions } from "./lib/transport/websocket.ts";
export { LINK_PATH } from "./lib/dp/http.ts";
export type { HttpHandler } from "./lib/dp/http.ts";
export type { TcpTransportOptions, Transport } from "./lib/transport/tcp.ts";
export type { DialScheme, DiscoverPointAddress } from "./lib/transport/dial.ts";
export {
  DiscoverPointUnreachableError,
  ProtocolError,
  SessionClosedError,
  SessionRefusedError,
  VersionMismatchError,
} from "./lib/errors.ts";
export {
  MAX_DATA_BYTES,
  MAX_LINE_BYTES,
  MessageDecoderStream,
  MessageEncoderStream,
  TextCodec,
} from "./lib/wire/codec.ts";
export type {
  Codec,
  MessageDecoderOptions,
  MessageEncoderStreamOptions,
  TextCodecOptions,
} from "./lib/wire/codec.ts";
export { ByteQueue } from "./lib/wire/_bytes.ts";
export { MessageType, Role, VERSION } from "./lib/wire/message.ts";
export type {
  AcceptedMessage,
  AckMessage,
  AlohaMessage,
  AuthMessage,
  CloseMessage,
  ConnectMessage,
  CreditMessage,
  DataMessage,
  EndMessage,
  Message,
  MoreMessage,
  PingMessage,
  PongMessage,
} from "./lib/wire/message.ts";
