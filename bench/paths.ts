/**
 * The bench paths: chains of processes between a client and the bench target, each started
 * in a {@link ChildGroup} and ready once every member has printed its readiness line.
 * @module
 */

import { type Child, type ChildGroup, projectPath } from "./procs.ts";

/** Names of the paths a bench can measure. */
export const PATH_NAMES = [
  "direct",
  "relay",
  "rtcp",
  "rtcp-tls",
  "rtcp-text",
  "rtcp-ws",
  "rtcp-connect",
  "rtcp-connect-tls",
  "rtcp-ws-connect",
] as const;

/** One of {@link PATH_NAMES}. */
export type PathName = typeof PATH_NAMES[number];

/** A started path. */
export interface Chain {
  /** Where a client connects ("host:port"). */
  entry: string;
  /** The processes between client and target, in order from the client (none for direct). */
  members: Child[];
}

/** The name the bench target is registered under at the discover point. */
const SERVICE_NAME = "bench";

const LISTENING = /^Listening on (\S+:\d+)$/;
const PUBLIC_PORT = new RegExp(`^Public port for "${SERVICE_NAME}" on (\\S+:\\d+)$`);
const EXPOSING = new RegExp(`^Exposing "${SERVICE_NAME}" at `);
const WEBSOCKET_LINKS = /^WebSocket links on (ws:\/\/\S+)$/;

/** The test certificates (tests/fixtures): the only files a TLS chain's processes may read. */
const FIXTURES = projectPath("tests/fixtures");

/**
 * TLS on the links to the DP, with the test certificates: the DP serves its link port with
 * `dp.crt` (SANs localhost and 127.0.0.1), and `expose` / `connect` trust the test CA.
 */
const TLS = {
  /** For dp.ts. */
  serve: ["--tls-cert", `${FIXTURES}/dp.crt`, "--tls-key", `${FIXTURES}/dp.key`],
  /** For cli.ts expose / connect. */
  trust: ["--tls-ca", `${FIXTURES}/ca.crt`],
  /** `--allow-read` for all three. */
  allowRead: [FIXTURES],
} as const;

/**
 * How `expose` and `connect` reach the DP: plain TCP on its link port, TLS (`tls://`) on it,
 * or WebSocket (`ws://`) on the DP's `--http` port.
 */
export type Link = "tcp" | "tls" | "ws";

/** Where a DP takes links. */
export interface LinkAddrs {
  /** Its link port, "host:port" (TCP, or TLS if the DP was started with TLS). */
  addr: string;
  /** Its WebSocket link URL (`ws://host:port/rtcp`), if started with `--http`. */
  wsUrl?: string;
}

/** The `--dp` address and extra arguments and read permission for a forwarder on `link`. */
function dialing(dp: LinkAddrs, link: Link) {
  switch (link) {
    case "tcp":
      return { dp: dp.addr, args: [], allowRead: [] };
    case "tls":
      // tls://127.0.0.1:PORT: the certificate names 127.0.0.1, and no name lookup is involved.
      return { dp: `tls://${dp.addr}`, args: [...TLS.trust], allowRead: [...TLS.allowRead] };
    case "ws":
      if (dp.wsUrl === undefined) throw new TypeError("The DP was started without --http");
      return { dp: dp.wsUrl, args: [], allowRead: [] };
  }
}

/** A started process and the address it listens on. */
export interface Listening {
  /** The process. */
  child: Child;
  /** Its "host:port". */
  addr: string;
}

/** Resolves `child` with its address once it prints `Listening on H:P`. */
async function listening(child: Child): Promise<Listening> {
  const [, addr] = await child.waitFor(LISTENING);
  return { child, addr: addr! };
}

/** A relay process in `group`, named `name`, forwarding to `to`. */
function startRelay(group: ChildGroup, name: string, to: string): Promise<Listening> {
  return listening(group.spawn({ name, script: "bench/relay.ts", args: ["--to", to] }));
}

/** The bench target in `group`. */
export function startTarget(group: ChildGroup): Promise<Listening> {
  return listening(group.spawn({ name: "target", script: "bench/target.ts" }));
}

/**
 * A discover point in `group` on a free port, exposing `SERVICE_NAME` on a public port (plain
 * TCP); for `link` "tls", its link port speaks TLS; for "ws", it also takes WebSocket links on
 * a free HTTP port (`--http 0`).
 */
export async function startDiscoverPoint(
  group: ChildGroup,
  extraArgs: string[] = [],
  link: Link = "tcp",
): Promise<Listening & LinkAddrs & { publicAddr: string }> {
  const child = group.spawn({
    name: "dp",
    script: "dp.ts",
    args: [
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--expose",
      `${SERVICE_NAME}=0`,
      ...(link === "tls" ? TLS.serve : []),
      ...(link === "ws" ? ["--http", "0"] : []),
      ...extraArgs,
    ],
    allowRead: link === "tls" ? [...TLS.allowRead] : [],
  });
  // dp.ts prints the public ports, then the WebSocket URL, then "Listening on".
  const [, publicAddr] = await child.waitFor(PUBLIC_PORT);
  const wsUrl = link === "ws" ? (await child.waitFor(WEBSOCKET_LINKS))[1] : undefined;
  return { ...await listening(child), publicAddr: publicAddr!, ...(wsUrl ? { wsUrl } : {}) };
}

/**
 * `cli.ts expose` in `group`: registers `SERVICE_NAME` at the DP `dpAddrs` over `link` and
 * forwards to `to`.
 */
export async function startExpose(
  group: ChildGroup,
  dpAddrs: LinkAddrs,
  to: string,
  extraArgs: string[] = [],
  link: Link = "tcp",
): Promise<Child> {
  const { dp, args, allowRead } = dialing(dpAddrs, link);
  const child = group.spawn({
    name: "expose",
    script: "cli.ts",
    args: ["expose", "--dp", dp, "--name", SERVICE_NAME, "--to", to, ...args, ...extraArgs],
    allowRead,
  });
  await child.waitFor(EXPOSING);
  return child;
}

/**
 * `cli.ts connect` in `group`: a local port leading to `SERVICE_NAME` through the DP
 * `dpAddrs`, reached over `link`.
 */
export function startConnect(
  group: ChildGroup,
  dpAddrs: LinkAddrs,
  link: Link = "tcp",
): Promise<Listening> {
  const { dp, args, allowRead } = dialing(dpAddrs, link);
  return listening(group.spawn({
    name: "connect",
    script: "cli.ts",
    args: ["connect", "--dp", dp, "--name", SERVICE_NAME, "--listen", "127.0.0.1:0", ...args],
    allowRead,
  }));
}

/** Starts path `name` in `group`, leading to the target at `target`. */
export async function startPath(
  name: PathName,
  group: ChildGroup,
  target: string,
): Promise<Chain> {
  switch (name) {
    case "direct":
      return { entry: target, members: [] };
    case "relay": {
      const relay2 = await startRelay(group, "relay2", target);
      const relay1 = await startRelay(group, "relay1", relay2.addr);
      return { entry: relay1.addr, members: [relay1.child, relay2.child] };
    }
    case "rtcp":
    case "rtcp-tls":
    case "rtcp-text":
    case "rtcp-ws": {
      // rtcp-text: the DP offers no extension, so its link to expose speaks the original protocol.
      // rtcp-tls / rtcp-ws: that link runs over TLS / WebSocket; the public port stays plain TCP.
      const link: Link = name === "rtcp-tls" ? "tls" : name === "rtcp-ws" ? "ws" : "tcp";
      const dp = await startDiscoverPoint(
        group,
        name === "rtcp-text" ? ["--features", "none"] : [],
        link,
      );
      const expose = await startExpose(group, dp, target, [], link);
      return { entry: dp.publicAddr, members: [dp.child, expose] };
    }
    case "rtcp-connect":
    case "rtcp-connect-tls":
    case "rtcp-ws-connect": {
      // rtcp-connect-tls / rtcp-ws-connect: both links to the DP run over TLS / WebSocket.
      const link: Link = name === "rtcp-connect-tls"
        ? "tls"
        : name === "rtcp-ws-connect"
        ? "ws"
        : "tcp";
      const dp = await startDiscoverPoint(group, [], link);
      const [expose, connect] = await Promise.all([
        startExpose(group, dp, target, [], link),
        startConnect(group, dp, link),
      ]);
      return { entry: connect.addr, members: [connect.child, dp.child, expose] };
    }
  }
}
