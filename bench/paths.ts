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
  "rtcp-connect",
  "rtcp-connect-tls",
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

/** How `expose` and `connect` reach the DP: plain TCP, or TLS (`tls://`). */
interface Link {
  /** Whether the DP's link port speaks TLS. */
  tls: boolean;
}

/** The `--dp` address and extra arguments and read permission for a forwarder on `link`. */
function dialing(dpAddr: string, link: Link) {
  // tls://127.0.0.1:PORT: the certificate names 127.0.0.1, and no name lookup is involved.
  return link.tls
    ? { dp: `tls://${dpAddr}`, args: [...TLS.trust], allowRead: [...TLS.allowRead] }
    : { dp: dpAddr, args: [], allowRead: [] };
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
 * TCP); with `link.tls`, its link port speaks TLS.
 */
export async function startDiscoverPoint(
  group: ChildGroup,
  extraArgs: string[] = [],
  link: Link = { tls: false },
): Promise<Listening & { publicAddr: string }> {
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
      ...(link.tls ? TLS.serve : []),
      ...extraArgs,
    ],
    allowRead: link.tls ? [...TLS.allowRead] : [],
  });
  const [, publicAddr] = await child.waitFor(PUBLIC_PORT);
  return { ...await listening(child), publicAddr: publicAddr! };
}

/**
 * `cli.ts expose` in `group`: registers `SERVICE_NAME` at the DP whose link port is `dpAddr`
 * ("host:port", TLS with `link.tls`) and forwards to `to`.
 */
export async function startExpose(
  group: ChildGroup,
  dpAddr: string,
  to: string,
  extraArgs: string[] = [],
  link: Link = { tls: false },
): Promise<Child> {
  const { dp, args, allowRead } = dialing(dpAddr, link);
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
 * `cli.ts connect` in `group`: a local port leading to `SERVICE_NAME` through the DP whose
 * link port is `dpAddr` ("host:port", TLS with `link.tls`).
 */
export function startConnect(
  group: ChildGroup,
  dpAddr: string,
  link: Link = { tls: false },
): Promise<Listening> {
  const { dp, args, allowRead } = dialing(dpAddr, link);
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
    case "rtcp-text": {
      // rtcp-text: the DP offers no extension, so its link to expose speaks the original protocol.
      // rtcp-tls: that link runs over TLS; the public port stays plain TCP.
      const link = { tls: name === "rtcp-tls" };
      const dp = await startDiscoverPoint(
        group,
        name === "rtcp-text" ? ["--features", "none"] : [],
        link,
      );
      const expose = await startExpose(group, dp.addr, target, [], link);
      return { entry: dp.publicAddr, members: [dp.child, expose] };
    }
    case "rtcp-connect":
    case "rtcp-connect-tls": {
      // rtcp-connect-tls: both links to the DP run over TLS.
      const link = { tls: name === "rtcp-connect-tls" };
      const dp = await startDiscoverPoint(group, [], link);
      const [expose, connect] = await Promise.all([
        startExpose(group, dp.addr, target, [], link),
        startConnect(group, dp.addr, link),
      ]);
      return { entry: connect.addr, members: [connect.child, dp.child, expose] };
    }
  }
}
