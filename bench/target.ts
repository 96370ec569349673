/**
 * The bench target: one TCP service behind every bench path. The first byte a client sends
 * picks the service ({@link Mode}): echo, endless source, hashing sink, or generator.
 *
 * Run: `deno run --allow-net bench/target.ts [--port 0]`; prints `Listening on H:P` once bound.
 * @module
 */

import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { generate } from "./data.ts";
import { drain, isDisconnect, Mode, readFull, readU64, writeAll } from "./io.ts";

const CHUNK_BYTES = 64 * 1024;

async function echo(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(CHUNK_BYTES);
  for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
    await writeAll(conn, buf.subarray(0, n));
  }
}

async function source(conn: Deno.Conn): Promise<void> {
  const block = new Uint8Array(CHUNK_BYTES).fill(0x5a);
  for (;;) await writeAll(conn, block);
}

async function hashSink(conn: Deno.Conn): Promise<void> {
  let left = readU64(await readFull(conn, new Uint8Array(8)));
  const hash = createHash("sha256");
  const buf = new Uint8Array(256 * 1024);
  while (left > 0) {
    const n = await conn.read(left < buf.length ? buf.subarray(0, left) : buf);
    if (n === null) throw new Deno.errors.UnexpectedEof(`Sink input ended ${left} bytes short`);
    hash.update(buf.subarray(0, n));
    left -= n;
  }
  await writeAll(conn, new Uint8Array(hash.digest()));
  await drain(conn);
}

async function generator(conn: Deno.Conn): Promise<void> {
  const header = await readFull(conn, new Uint8Array(12));
  const total = readU64(header);
  const seed = new DataView(header.buffer).getUint32(8);
  const hash = createHash("sha256");
  for (const block of generate(total, seed)) {
    hash.update(block);
    await writeAll(conn, block);
  }
  await writeAll(conn, new Uint8Array(hash.digest()));
  await drain(conn);
}

const SERVICES: Record<number, (conn: Deno.Conn) => Promise<void>> = {
  [Mode.echo]: echo,
  [Mode.source]: source,
  [Mode.hashSink]: hashSink,
  [Mode.generate]: generator,
};

async function serve(conn: Deno.TcpConn): Promise<void> {
  try {
    conn.setNoDelay(true);
    const [mode] = await readFull(conn, new Uint8Array(1));
    const service = SERVICES[mode ?? -1];
    if (service === undefined) throw new TypeError(`Unknown mode byte ${mode}`);
    await service(conn);
  } catch (err) {
    // A client leaving mid-service (the source is only ever stopped that way) is normal.
    if (!isDisconnect(err)) console.error("target:", err);
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed by the failed operation.
    }
  }
}

/** Starts the target; resolves when the listener closes. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, strict: true, options: { port: { type: "string" } } });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(values.port ?? 0) });
  console.log(`Listening on ${listener.addr.hostname}:${listener.addr.port}`);
  for await (const conn of listener) void serve(conn);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
