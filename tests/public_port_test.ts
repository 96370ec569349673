/**
 * Public ports chosen by the server (extension `public-port`): granted only
 * inside the operator's ranges, one name per port, only to owned names when a
 * names file is in use, and closed when the name's last link goes; refusals
 * say why. Then the same through `dp.ts --allow-ports` and `expose --public-port`.
 */

import assert from "node:assert/strict";
import {
  generateIdentity,
  listen,
  NamesFile,
  parsePortRanges,
  type PublicPortOutcome,
} from "../mod.ts";
import { eventually, settlesWithin, startDiscoverPoint, unusedAddress } from "./_helpers.ts";
import { serveEcho } from "./_ws.ts";
import {
  CLI_PATH,
  EchoServer,
  Program,
  readExactlyFrom,
  spawnDp,
  writeAllTo,
} from "./_programs.ts";

/** A port nothing listens on now, as a one-port range. */
function freePort(): number {
  return Number(unusedAddress().split(":")[1]);
}

/** Listens as `name` asking for `publicPort`, and resolves with the DP's first answer. */
function askForPort(dp: string, name: string, publicPort: number, extra = {}) {
  const outcome = Promise.withResolvers<PublicPortOutcome>();
  const listener = listen({ dp, name, publicPort, onPublicPort: outcome.resolve, ...extra });
  return { listener, outcome: settlesWithin(outcome.promise, `the answer for "${name}"`) };
}

async function echoesThrough(port: number, text: string): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const bytes = new TextEncoder().encode(text);
    await writeAllTo(conn, bytes);
    assert.equal(new TextDecoder().decode(await readExactlyFrom(conn, bytes.length)), text);
  } finally {
    conn.close();
  }
}

Deno.test("public port: granted inside the allowed range, serves plain TCP, and closes with the name's last link", async () => {
  const port = freePort();
  await using dp = await startDiscoverPoint({ allowPorts: [{ from: port, to: port }] });
  const { listener, outcome } = askForPort(dp.address, "web", 0);
  const served = serveEcho(listener);
  assert.deepEqual(await outcome, { dp: dp.address, port });
  assert.equal(dp.dp.publicAddrs.get("web")?.port, port);
  await echoesThrough(port, "through the granted port");
  listener.close();
  await served;
  await eventually(() => !dp.dp.publicAddrs.has("web"), "the port to close");
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port }),
    Deno.errors.ConnectionRefused,
  );
});

Deno.test("public port: refusals say why (outside the range, taken by another name, none allowed)", async () => {
  const port = freePort();
  await using dp = await startDiscoverPoint({ allowPorts: [{ from: port, to: port }] });
  const first = askForPort(dp.address, "first", port);
  assert.equal((await first.outcome).port, port);
  const outside = askForPort(dp.address, "outside", port === 65535 ? port - 1 : port + 1);
  assert.match(
    (await outside.outcome).refusal ?? "",
    /outside the ports this discover point grants/,
  );
  const taken = askForPort(dp.address, "second", port);
  assert.match((await taken.outcome).refusal ?? "", /"first" has it/);
  for (const { listener } of [first, outside, taken]) listener.close();

  await using none = await startDiscoverPoint();
  const refused = askForPort(none.address, "x", 0);
  assert.match((await refused.outcome).refusal ?? "", /grants none .*--allow-ports/);
  refused.listener.close();
});

Deno.test("public port: with a names file, only an owned name gets one", async () => {
  const owner = await generateIdentity();
  const names = NamesFile.parse(JSON.stringify({ db: { owners: [owner.identity.publicKey] } }));
  const port = freePort();
  await using dp = await startDiscoverPoint({ names, allowPorts: [{ from: port, to: port }] });
  const open = askForPort(dp.address, "open-name", 0);
  assert.match((await open.outcome).refusal ?? "", /only names the names file gives owners/);
  const owned = askForPort(dp.address, "db", 0, { key: owner.identity });
  assert.equal((await owned.outcome).port, port);
  open.listener.close();
  owned.listener.close();
});

Deno.test("parsePortRanges reads ranges and single ports, and says what is wrong", () => {
  assert.deepEqual(parsePortRanges("20000-20999,21000"), [
    { from: 20000, to: 20999 },
    { from: 21000, to: 21000 },
  ]);
  assert.throws(() => parsePortRanges("2000-1000"), /expected PORT or FROM-TO/);
  assert.throws(() => parsePortRanges("70000"), /ports 1 to 65535/);
});

Deno.test("dp.ts --allow-ports and expose --public-port: the port is printed and serves", async () => {
  await using echo = new EchoServer();
  const port = freePort();
  await using dp = await spawnDp(["--allow-ports", `${port}`]);
  await using expose = new Program(
    CLI_PATH,
    ["expose", "--dp", dp.address, "--name", "web", "--to", echo.address, "--public-port", "0"],
    ["--allow-net"],
  );
  const [, printed] = await expose.printed(/^Public port for "web" on 127\.0\.0\.1:(\d+)$/);
  assert.equal(Number(printed), port);
  await echoesThrough(port, "expose --public-port");
});
