/**
 * Moves 1 GiB of generated data through `cli.ts connect` → DP → `cli.ts expose` → the bench
 * target, once in each direction, and checks it with SHA-256 on both ends:
 * - upload: this process hashes what it sends; the target's hashing sink answers with the
 *   hash of what it received;
 * - download: the target's generator sends the data followed by the hash of what it sent;
 *   this process hashes what it receives.
 * This process is the (single-stream) client itself: it has nothing else to do meanwhile.
 *
 * Run: `deno run --allow-net --allow-run bench/transfer_1gib.ts [--bytes N] [--path P]`
 * (`--path` picks any bench path, e.g. `relay` for comparison; default `rtcp-connect`).
 * Exits 0 only if both directions PASS.
 * @module
 */

import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { generate } from "./data.ts";
import { concat, Mode, parseAddr, readFull, u64, writeAll } from "./io.ts";
import { PATH_NAMES, type PathName, startPath, startTarget } from "./paths.ts";
import { ChildGroup } from "./procs.ts";

const hex = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** The digests of one direction and how long it took. */
interface Transfer {
  sent: string;
  received: string;
  seconds: number;
}

async function upload(entry: string, bytes: number, seed: number): Promise<Transfer> {
  using conn = await Deno.connect(parseAddr(entry));
  const start = performance.now();
  const hash = createHash("sha256");
  const reply = readFull(conn, new Uint8Array(32));
  // Awaited below; this only keeps a failed write from leaving its rejection unhandled.
  reply.catch(() => {});
  await writeAll(conn, concat(new Uint8Array([Mode.hashSink]), u64(bytes)));
  for (const block of generate(bytes, seed)) {
    hash.update(block);
    await writeAll(conn, block);
  }
  const received = hex(await reply);
  return { sent: hash.digest("hex"), received, seconds: (performance.now() - start) / 1000 };
}

async function download(entry: string, bytes: number, seed: number): Promise<Transfer> {
  using conn = await Deno.connect(parseAddr(entry));
  const start = performance.now();
  const header = new Uint8Array(13);
  header[0] = Mode.generate;
  header.set(u64(bytes), 1);
  new DataView(header.buffer).setUint32(9, seed);
  await writeAll(conn, header);
  const hash = createHash("sha256");
  const buf = new Uint8Array(256 * 1024);
  for (let left = bytes; left > 0;) {
    const n = await conn.read(left < buf.length ? buf.subarray(0, left) : buf);
    if (n === null) throw new Deno.errors.UnexpectedEof(`Download ended ${left} bytes short`);
    hash.update(buf.subarray(0, n));
    left -= n;
  }
  const sent = hex(await readFull(conn, new Uint8Array(32)));
  return { sent, received: hash.digest("hex"), seconds: (performance.now() - start) / 1000 };
}

function verdict(label: string, bytes: number, t: Transfer): boolean {
  const pass = t.sent === t.received;
  const rate = (bytes / 2 ** 20 / t.seconds).toFixed(1);
  console.log(`${label}: ${bytes} bytes in ${t.seconds.toFixed(2)} s (${rate} MiB/s)`);
  console.log(`  sender   sha256 ${t.sent}`);
  console.log(`  receiver sha256 ${t.received}`);
  console.log(`  ${pass ? "PASS" : "FAIL"}`);
  return pass;
}

/** Runs both transfers; returns 0 if both pass, 1 otherwise, 2 on bad flags. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      bytes: { type: "string", default: String(2 ** 30) },
      path: { type: "string", default: "rtcp-connect" },
    },
  });
  const bytes = Number(values.bytes);
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new RangeError(`Bad --bytes ${values.bytes}`);
  }
  if (!(PATH_NAMES as readonly string[]).includes(values.path)) {
    console.error(`Unknown --path "${values.path}"; one of ${PATH_NAMES.join(", ")}`);
    return 2;
  }
  await using group = new ChildGroup();
  const target = await startTarget(group);
  const chain = await startPath(values.path as PathName, group, target.addr);
  console.log(
    `path ${values.path}: client -> ${chain.members.map((m) => m.name).join(" -> ")} -> target`,
  );
  let pass = true;
  for (
    const [label, run] of [["upload (client -> sink)", upload], [
      "download (source -> client)",
      download,
    ]] as const
  ) {
    try {
      pass = verdict(label, bytes, await run(chain.entry, bytes, 0x5eed)) && pass;
    } catch (err) {
      console.log(`${label}: FAIL: ${err instanceof Error ? `${err.name}: ${err.message}` : err}`);
      pass = false;
    }
  }
  for (const member of chain.members) {
    if (member.exitStatus !== undefined) {
      console.log(`${member.name} exited (code ${member.exitStatus.code}):\n${member.stderrTail}`);
      pass = false;
    }
  }
  console.log(pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
