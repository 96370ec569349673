/**
 * Starting bench/client.ts from an orchestrating script: one operation, results as JSON lines.
 * @module
 */

import type { Child, ChildGroup, SpawnOptions } from "./procs.ts";

/**
 * How long a client may take to print a result line, unless the caller says otherwise. Generous:
 * 1,000 setups one after another over `rtcp-connect-tls` take about 60 s (a TLS link per session).
 */
export const CLIENT_TIMEOUT_MS = 180_000;

/** Permissions a client needs beyond `--allow-net` (the failover client sends a signal). */
export type ClientPermissions = Pick<SpawnOptions, "allowRun">;

/**
 * Spawns `bench/client.ts OP --addr ENTRY FLAGS` in `group`; with `stdin`, the client can be
 * told (by a line) to release what it holds.
 */
export function spawnClient(
  group: ChildGroup,
  op: string,
  entry: string,
  flags: string[] = [],
  stdin = false,
  permissions: ClientPermissions = {},
): Child {
  return group.spawn({
    name: `client ${op}`,
    script: "bench/client.ts",
    args: [op, "--addr", entry, ...flags],
    stdin,
    ...permissions,
  });
}

/** Runs one client operation to completion and resolves its JSON result line. */
export async function runClient<T>(
  group: ChildGroup,
  op: string,
  entry: string,
  flags: string[] = [],
  timeoutMs = CLIENT_TIMEOUT_MS,
  permissions: ClientPermissions = {},
): Promise<T> {
  const client = spawnClient(group, op, entry, flags, false, permissions);
  try {
    return await client.readJson<T>(timeoutMs);
  } finally {
    await client.kill();
  }
}
