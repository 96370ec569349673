/**
 * A plain TCP relay: every accepted connection is joined to a fresh connection to `--to`
 * with a read/write loop per direction. Two of these in a row have the process topology of
 * a discover point plus a forwarder, without RTCP: the ceiling for RTCP's design.
 *
 * Run: `deno run --allow-net bench/relay.ts --to H:P [--port 0]`; prints `Listening on H:P`.
 * @module
 */

import { parseArgs } from "node:util";
import { isDisconnect, parseAddr, writeAll } from "./io.ts";

const CHUNK_BYTES = 64 * 1024;

/** Copies `from` to `to` until EOF, then half-closes `to`. */
async function copy(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(CHUNK_BYTES);
  for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
    await writeAll(to, buf.subarray(0, n));
  }
  await to.closeWrite();
}

async function join(client: Deno.TcpConn, target: { hostname: string; port: number }) {
  let upstream: Deno.TcpConn | undefined;
  try {
    upstream = await Deno.connect(target);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    await Promise.all([copy(client, upstream), copy(upstream, client)]);
  } catch (err) {
    if (!isDisconnect(err)) console.error("relay:", err);
  } finally {
    for (const conn of [client, upstream]) {
      try {
        conn?.close();
      } catch {
        // Already closed.
      }
    }
  }
}

/** Starts the relay; resolves when the listener closes. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: { to: { type: "string" }, port: { type: "string" } },
  });
  if (values.to === undefined) throw new TypeError("Cannot start relay: --to H:P is required");
  const target = parseAddr(values.to);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(values.port ?? 0) });
  console.log(`Listening on ${listener.addr.hostname}:${listener.addr.port}`);
  for await (const conn of listener) void join(conn, target);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
