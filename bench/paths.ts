/**
 * The bench paths: chains of processes between a client and the bench target, each started
 * in a {@link ChildGroup} and ready once every member has printed its readiness line.
 * @module
 */

import type { Child, ChildGroup } from "./procs.ts";

/** Names of the paths a bench can measure. */
export const PATH_NAMES = ["direct", "relay", "rtcp", "rtcp-text", "rtcp-connect"] as const;

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

/** A discover point in `group` on a free port, exposing `SERVICE_NAME` on a public port. */
export async function startDiscoverPoint(
  group: ChildGroup,
  extraArgs: string[] = [],
): Promise<Listening & { publicAddr: string }> {
  const child = group.spawn({
    name: "dp",
    script: "dp.ts",
    args: ["--hostname", "127.0.0.1", "--port", "0", "--expose", `${SERVICE_NAME}=0`, ...extraArgs],
  });
  const [, publicAddr] = await child.waitFor(PUBLIC_PORT);
  return { ...await listening(child), publicAddr: publicAddr! };
}

/** `cli.ts expose` in `group`: registers `SERVICE_NAME` at `dp` and forwards to `to`. */
export async function startExpose(
  group: ChildGroup,
  dp: string,
  to: string,
  extraArgs: string[] = [],
): Promise<Child> {
  const child = group.spawn({
    name: "expose",
    script: "cli.ts",
    args: ["expose", "--dp", dp, "--name", SERVICE_NAME, "--to", to, ...extraArgs],
  });
  await child.waitFor(EXPOSING);
  return child;
}

/** `cli.ts connect` in `group`: a local port leading to `SERVICE_NAME` through `dp`. */
export function startConnect(group: ChildGroup, dp: string): Promise<Listening> {
  return listening(group.spawn({
    name: "connect",
    script: "cli.ts",
    args: ["connect", "--dp", dp, "--name", SERVICE_NAME, "--listen", "127.0.0.1:0"],
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
    case "rtcp-text": {
      // rtcp-text: the DP offers no extension, so its link to expose speaks the original protocol.
      const dp = await startDiscoverPoint(
        group,
        name === "rtcp-text" ? ["--features", "none"] : [],
      );
      const expose = await startExpose(group, dp.addr, target);
      return { entry: dp.publicAddr, members: [dp.child, expose] };
    }
    case "rtcp-connect": {
      const dp = await startDiscoverPoint(group);
      const [expose, connect] = await Promise.all([
        startExpose(group, dp.addr, target),
        startConnect(group, dp.addr),
      ]);
      return { entry: connect.addr, members: [connect.child, dp.child, expose] };
    }
  }
}
