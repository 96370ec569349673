/**
 * RTCP: reversible TCP for Deno.
 *
 * `listen()` and `connect()` have the shapes of `Deno.listen` and
 * `Deno.connect`. Given a hostname and port they are plain TCP. Given a
 * discover point (`dp`) and a `name`, `listen()` registers the name and
 * accepts connections routed through the discover point, and `connect()`
 * reaches that server by name, from anywhere that can reach the discover point.
 * What they return behaves like Deno's own connections and listeners (the
 * README's API section lists the few differences). The wire codec, for tools
 * that speak RTCP themselves, is `@x/rtcp/codec`.
 *
 * @example A discover point, an indirect echo server and a client, in one process
 * ```ts
 * import assert from "node:assert/strict";
 * import { connect, DiscoverPoint, listen } from "@x/rtcp";
 *
 * await using dp = new DiscoverPoint({ hostname: "127.0.0.1", port: 0 });
 * await dp.start();
 * const address = `127.0.0.1:${dp.addr.port}`;
 *
 * using listener = listen({ dp: address, name: "echo" });
 * await listener.ready;
 * const accepted = listener.accept();
 *
 * using conn = await connect({ dp: address, name: "echo" });
 * using server = await accepted;
 * await conn.write(new TextEncoder().encode("hello"));
 * const buffer = new Uint8Array(5);
 * const n = await server.read(buffer);
 * assert.equal(new TextDecoder().decode(buffer.subarray(0, n ?? 0)), "hello");
 * ```
 * @module
 */

export { listen } from "./lib/indirect/listen.ts";
export type {
  DirectListenOptions,
  IndirectListenOptions,
  ListenOptions,
  PoolBounds,
  PublicPortOutcome,
  SessionRequest,
} from "./lib/indirect/listen.ts";
export type { BackoffOptions } from "./lib/_backoff.ts";
export { Feature } from "./lib/link/link.ts";
export type { EndFeature, FeatureName, KeepaliveOptions } from "./lib/link/link.ts";
export type { Clock, TimerHandle } from "./lib/_clock.ts";
export { connect } from "./lib/indirect/connect.ts";
export { IndirectDialer } from "./lib/indirect/dialer.ts";
export type { IndirectDialerOptions } from "./lib/indirect/dialer.ts";
export type {
  ConnectOptions,
  DirectConnectOptions,
  IndirectConnectOptions,
} from "./lib/indirect/connect.ts";
export type { IndirectConn, IndirectListener } from "./lib/indirect/types.ts";
export { DEFAULT_PORT, DiscoverPoint } from "./lib/dp/discover_point.ts";
export type { DiscoverPointOptions, DiscoverPointStats } from "./lib/dp/discover_point.ts";
export type {
  DiscoverPointMetrics,
  DiscoverPointStatus,
  LinkRole,
  LinkStatus,
  LinkTransport,
  MemoryCounts,
  NameCounts,
  NameStatus,
  SessionStatus,
  StatusOptions,
} from "./lib/dp/report.ts";
export { REFUSAL_REASONS } from "./lib/dp/counters.ts";
export type { RefusalReason } from "./lib/dp/counters.ts";
export { AdminEndpoint } from "./lib/dp/admin.ts";
export type { AdminOptions, AdminSample, AdminSource } from "./lib/dp/admin.ts";
export { prometheusText } from "./lib/dp/prometheus.ts";
export {
  formatPublicKey,
  generateIdentity,
  importIdentity,
  parsePublicKey,
  pkcs8ToPem,
} from "./lib/link/auth.ts";
export type { Identity } from "./lib/link/auth.ts";
export { NamesFile, OPEN_NAMES } from "./lib/dp/policy.ts";
export { parsePortRanges } from "./lib/dp/public_ports.ts";
export type { PortRange } from "./lib/dp/public_ports.ts";
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
