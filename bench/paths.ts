/**
 * The bench paths: chains of processes between a client and the bench target, each started
 * in a {@link ChildGroup} and ready once every member has printed its readiness line.
 * @module
 */

import { KvRegistry } from "../lib/dp/kv_registry.ts";
import { type Child, type ChildGroup, projectPath } from "./procs.ts";

/** Names of the paths a bench can measure. */
export const PATH_NAMES = [
  "direct",
  "relay",
  "relay3",
  "rtcp",
  "rtcp-early-ack",
  "rtcp-lean",
  "rtcp-tls",
  "rtcp-text",
  "rtcp-ws",
  "rtcp-connect",
  "rtcp-connect-lean",
  "rtcp-connect-tls",
  "rtcp-ws-connect",
  "rtcp-cluster",
] as const;

/** One of {@link PATH_NAMES}. */
export type PathName = typeof PATH_NAMES[number];

/**
 * The paths with three processes between client and target, one more than `relay`: besides
 * their ratios to `relay`, the bench gives their ratios to `relay3`, the plain relay of as many.
 */
export const THREE_PROCESS_PATHS: readonly PathName[] = [
  "rtcp-connect",
  "rtcp-connect-lean",
  "rtcp-connect-tls",
  "rtcp-ws-connect",
  "rtcp-cluster",
];

/** A started path. */
export interface Chain {
  /** Where a client connects ("host:port"). */
  entry: string;
  /** The processes between client and target, in order from the client (none for direct). */
  members: Child[];
}

/** The V8 setting README recommends for processes that hold many idle sessions. */
const LEAN_V8_FLAGS = ["--max-semi-space-size=1"];

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
  v8Flags: string[] = [],
): Promise<Listening & LinkAddrs & { publicAddr: string }> {
  const child = group.spawn({
    name: "dp",
    script: "dp.ts",
    v8Flags,
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
  v8Flags: string[] = [],
): Promise<Child> {
  const { dp, args, allowRead } = dialing(dpAddrs, link);
  const child = group.spawn({
    name: "expose",
    script: "cli.ts",
    v8Flags,
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
  v8Flags: string[] = [],
): Promise<Listening> {
  const { dp, args, allowRead } = dialing(dpAddrs, link);
  return listening(group.spawn({
    name: "connect",
    script: "cli.ts",
    v8Flags,
    args: ["connect", "--dp", dp, "--name", SERVICE_NAME, "--listen", "127.0.0.1:0", ...args],
    allowRead,
  }));
}

/** How long a dead discover point stays listed in a bench cluster's registry (dp.ts's default). */
export const REGISTRY_TTL_MS = 10_000;

/** How long a cluster may take until its registry lists the name at every DP expected. */
const REGISTRY_READY_TIMEOUT_MS = 30_000;

/** How often the registry is read while waiting for that. */
const REGISTRY_POLL_MS = 20;

/**
 * A registry shared by the discover points of a bench cluster: a Deno KV file in a fresh
 * directory under bench/results (the one place the bench may write), removed once the
 * group's processes are gone.
 */
export interface ClusterRegistry {
  /** The directory: all a cluster DP may read or write. */
  dir: string;
  /** The KV file, for `--registry kv:FILE`. */
  file: string;
}

/** A fresh {@link ClusterRegistry} for the processes of `group`. */
export async function makeClusterRegistry(group: ChildGroup): Promise<ClusterRegistry> {
  const results = projectPath("bench/results");
  await Deno.mkdir(results, { recursive: true });
  const dir = await Deno.makeTempDir({ dir: results, prefix: "cluster-" });
  group.defer(async () => {
    try {
      await Deno.remove(dir, { recursive: true });
    } catch {
      // Gone already, or still open somewhere: a leftover under bench/results (ignored by git).
    }
  });
  return { dir, file: `${dir}/registry.sqlite3` };
}

/** A started cluster DP: its link port (also what it advertises) and public port, if any. */
export interface ClusterDp extends Listening {
  /** Its public port for `SERVICE_NAME`, if started with one. */
  publicAddr?: string;
}

/**
 * A discover point in `group` that is a member of the cluster on `registry`, advertising its
 * own link port (`--advertise 127.0.0.1:0`); with `publicPort`, it exposes `SERVICE_NAME` on
 * a public port too.
 */
export async function startClusterDp(
  group: ChildGroup,
  name: string,
  registry: ClusterRegistry,
  publicPort: boolean,
): Promise<ClusterDp> {
  const child = group.spawn({
    name,
    script: "dp.ts",
    args: [
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      ...(publicPort ? ["--expose", `${SERVICE_NAME}=0`] : []),
      "--registry",
      `kv:${registry.file}`,
      "--registry-ttl",
      String(REGISTRY_TTL_MS),
      "--advertise",
      "127.0.0.1:0",
    ],
    allowRead: [registry.dir],
    allowWrite: [registry.dir],
  });
  // dp.ts prints the public port, then "Listening on".
  const publicAddr = publicPort ? (await child.waitFor(PUBLIC_PORT))[1] : undefined;
  return { ...await listening(child), ...(publicAddr ? { publicAddr } : {}) };
}

/**
 * Waits until `registry` lists `SERVICE_NAME` as held by every DP in `holders`: from then on
 * a client entering at any other member is carried to them. Read through the registry's own
 * API, as an observer that holds nothing, so that no session runs before the measurement.
 */
export async function awaitHolders(
  registry: ClusterRegistry,
  holders: readonly ClusterDp[],
): Promise<void> {
  const ports = holders.map((dp) => dp.addr.slice(dp.addr.lastIndexOf(":")));
  await using kv = await KvRegistry.open(registry.file, { ttl: REGISTRY_TTL_MS });
  const observer = await kv.join({ instance: `bench-observer-${crypto.randomUUID()}` }, () => {});
  try {
    const deadline = Date.now() + REGISTRY_READY_TIMEOUT_MS;
    let listed: string[] = [];
    while (Date.now() < deadline) {
      listed = (await observer.holders(SERVICE_NAME)).flatMap((h) => h.address ?? []);
      if (ports.every((port) => listed.some((address) => address.endsWith(port)))) return;
      await new Promise((resolve) => setTimeout(resolve, REGISTRY_POLL_MS));
    }
    throw new Error(
      `The registry did not list "${SERVICE_NAME}" at ${
        holders.map((dp) => dp.addr).join(" and ")
      } within ${REGISTRY_READY_TIMEOUT_MS} ms (listed: ${listed.join(", ") || "none"})`,
    );
  } finally {
    await observer.leave();
  }
}

/** A started failover setup: where clients enter, the DP to kill, and the rest. */
export interface FailoverCluster {
  /** The public port of the entry DP ("host:port"), which holds no link of the name. */
  entry: string;
  /** One of the two DPs holding the name. */
  victim: Child;
  /** Every other process: entry DP, the other holder, `expose`. */
  survivors: Child[];
}

/**
 * The failover setup in `group`: DPs `dp-a` and `dp-b` sharing a registry, both holding
 * `SERVICE_NAME` through one multi-homed `cli.ts expose --dp A --dp B`, and a third, `dp-c`,
 * whose public port is the entry; `dp-a` is the victim. Ready once the registry lists both.
 */
export async function startFailoverCluster(
  group: ChildGroup,
  target: string,
): Promise<FailoverCluster> {
  const registry = await makeClusterRegistry(group);
  const [a, b, c] = await Promise.all([
    startClusterDp(group, "dp-a", registry, false),
    startClusterDp(group, "dp-b", registry, false),
    startClusterDp(group, "dp-c", registry, true),
  ]);
  const expose = await startExpose(group, a, target, ["--dp", b.addr]);
  await awaitHolders(registry, [a, b]);
  return { entry: c.publicAddr!, victim: a.child, survivors: [c.child, b.child, expose] };
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
    case "relay3": {
      // The process count of rtcp-connect and rtcp-cluster, without RTCP: their like for like.
      const relay3 = await startRelay(group, "relay3", target);
      const relay2 = await startRelay(group, "relay2", relay3.addr);
      const relay1 = await startRelay(group, "relay1", relay2.addr);
      return { entry: relay1.addr, members: [relay1.child, relay2.child, relay3.child] };
    }
    case "rtcp-lean": {
      // Both processes with the young generation capped at 1 MiB (README: many idle sessions).
      const dp = await startDiscoverPoint(group, [], "tcp", LEAN_V8_FLAGS);
      const expose = await startExpose(group, dp, target, [], "tcp", LEAN_V8_FLAGS);
      return { entry: dp.publicAddr, members: [dp.child, expose] };
    }
    case "rtcp-early-ack": {
      // expose --early-ack: each session is acknowledged before the target connect answers.
      const dp = await startDiscoverPoint(group, [], "tcp");
      const expose = await startExpose(group, dp, target, ["--early-ack"], "tcp");
      return { entry: dp.publicAddr, members: [dp.child, expose] };
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
    case "rtcp-connect-lean": {
      // All three processes with the young generation capped at 1 MiB.
      const dp = await startDiscoverPoint(group, [], "tcp", LEAN_V8_FLAGS);
      const [expose, connect] = await Promise.all([
        startExpose(group, dp, target, [], "tcp", LEAN_V8_FLAGS),
        startConnect(group, dp, "tcp", LEAN_V8_FLAGS),
      ]);
      return { entry: connect.addr, members: [connect.child, dp.child, expose] };
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
    case "rtcp-cluster": {
      // dp-b holds no link of the name: it looks the name up in the registry and carries each
      // session to dp-a over a DP-to-DP link of its own.
      const registry = await makeClusterRegistry(group);
      const [a, b] = await Promise.all([
        startClusterDp(group, "dp-a", registry, false),
        startClusterDp(group, "dp-b", registry, true),
      ]);
      const expose = await startExpose(group, a, target);
      await awaitHolders(registry, [a]);
      return { entry: b.publicAddr!, members: [b.child, a.child, expose] };
    }
  }
}
