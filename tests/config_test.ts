/**
 * Config files: `dp.ts --config` and `cli.ts expose|connect --config` in
 * JSON, flags overriding the file; one `expose` process serving several
 * names and one `connect` process running several local listeners; and the
 * refusals at start (unknown key, wrong type, a name twice, a missing file),
 * each naming the file and the key.
 */

import assert from "node:assert/strict";
import {
  CLI_PATH,
  DP_PATH,
  EchoServer,
  makeTempDir,
  Program,
  readExactlyFrom,
  runScript,
  spawnDp,
  writeAllTo,
} from "./_programs.ts";
import { randomBytes } from "./_helpers.ts";

Deno.test("dp.ts --config: the file sets the options, a flag overrides it", async () => {
  await using dir = await makeTempDir();
  const config = await dir.write(
    "dp.json",
    JSON.stringify({ hostname: "127.0.0.1", port: 1, expose: { db: 0 }, "max-links": 50 }),
  );
  await using dp = await spawnDp(["--config", config], { permissions: [`--allow-read=${config}`] });
  // --port 0 from spawnDp beat the file's port 1; the file's public port is there.
  assert.notEqual(dp.port, 1);
  await dp.printed(/^Public port for "db" on 127\.0\.0\.1:\d+$/);
});

Deno.test("dp.ts --config refuses a typo, a wrong type and a missing file, naming the key", async () => {
  await using dir = await makeTempDir();
  const cases: [string, unknown, RegExp][] = [
    [
      "typo.json",
      { prot: 7000 },
      /typo\.json: "prot" is not a known option \(did you mean "port"\?\)/,
    ],
    ["type.json", { "max-links": [1] }, /type\.json: "max-links" must be a string or a number/],
    ["list.json", [1, 2], /list\.json: expected a JSON object of options/],
  ];
  for (const [name, content, message] of cases) {
    const path = await dir.write(name, JSON.stringify(content));
    const { code, stderr } = await runScript(DP_PATH, ["--config", path], [
      "--allow-net",
      `--allow-read=${dir.path}`,
    ]);
    assert.equal(code, 2, stderr);
    assert.match(stderr, message);
  }
  const missing = dir.file("missing.json");
  const { code, stderr } = await runScript(DP_PATH, ["--config", missing], [
    "--allow-net",
    `--allow-read=${dir.path}`,
  ]);
  assert.equal(code, 2);
  assert.match(stderr, /Cannot read config .*missing\.json/);
});

Deno.test("one expose process serves two names and one connect process listens for both", async () => {
  await using dir = await makeTempDir();
  await using a = new EchoServer();
  await using b = new EchoServer();
  await using dp = await spawnDp();
  const exposeConfig = await dir.write(
    "expose.json",
    JSON.stringify({
      dp: [dp.address],
      services: [{ name: "a", to: a.address }, { name: "b", to: b.address, pool: "1..2" }],
    }),
  );
  const connectConfig = await dir.write(
    "connect.json",
    JSON.stringify({
      dp: [dp.address],
      listeners: [{ name: "a", listen: "127.0.0.1:0" }, { name: "b", listen: "127.0.0.1:0" }],
    }),
  );
  await using expose = new Program(CLI_PATH, ["expose", "--config", exposeConfig], [
    "--allow-net",
    `--allow-read=${dir.path}`,
  ]);
  await expose.printed(/^Exposing "a" at /);
  await expose.printed(/^Exposing "b" at /);
  await using connect = new Program(CLI_PATH, ["connect", "--config", connectConfig], [
    "--allow-net",
    `--allow-read=${dir.path}`,
  ]);
  const listening = /^Listening on 127\.0\.0\.1:(\d+)$/;
  const ports = [
    Number((await connect.stdout.waitFor(listening, 1))[1]),
    Number((await connect.stdout.waitFor(listening, 2))[1]),
  ];
  for (const port of ports) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const payload = randomBytes(50_000);
    await writeAllTo(conn, payload);
    assert.deepEqual(await readExactlyFrom(conn, payload.length), payload);
    conn.close();
  }
});

Deno.test("cli.ts expose --config refuses a name twice and an unknown key in a service", async () => {
  await using dir = await makeTempDir();
  const twice = await dir.write(
    "twice.json",
    JSON.stringify({
      dp: ["127.0.0.1:7000"],
      services: [{ name: "a", to: "127.0.0.1:1" }, { name: "a", to: "127.0.0.1:2" }],
    }),
  );
  const typo = await dir.write(
    "typo.json",
    JSON.stringify({ dp: ["127.0.0.1:7000"], services: [{ name: "a", too: "127.0.0.1:1" }] }),
  );
  for (
    const [path, message] of [
      [twice, /twice\.json: "services"\[1\]: name "a" is already in an earlier entry/],
      [typo, /typo\.json: "services"\[0\]\."too" is not a known option \(did you mean "to"\?\)/],
    ] as const
  ) {
    const { code, stderr } = await runScript(CLI_PATH, ["expose", "--config", path], [
      "--allow-net",
      `--allow-read=${dir.path}`,
    ]);
    assert.equal(code, 2, stderr);
    assert.match(stderr, message);
  }
});
