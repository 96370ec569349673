/**
 * The security features of the commands, as subprocesses: `cli.ts keygen` and
 * `pubkey`, an owned name (`dp.ts --names`) with owner and client keys, TLS
 * between the forwarders and `dp.ts --tls-cert/--tls-key`, and the errors for
 * missing permissions and misused flags.
 *
 * The test process has no `--allow-write`: keys, names files and their
 * directory are written by child processes (`cli.ts keygen`, `sh`, `mktemp`).
 * @module
 */

import assert from "node:assert/strict";
import { randomBytes } from "./_helpers.ts";
import {
  CLI_PATH,
  DP_PATH,
  EchoServer,
  makeTempDir,
  readAllFrom,
  readExactlyFrom,
  runScript,
  spawnConnect,
  spawnDp,
  spawnExpose,
  type TempDir,
  within,
  writeAllTo,
} from "./_programs.ts";
import { fixturePath } from "./_tls.ts";

const PUBLIC_KEY = /^ed25519:[A-Za-z0-9+/]{43}=$/;
const CA_PATH = fixturePath("ca.crt");
const DP_CERT_PATH = fixturePath("dp.crt");
const DP_KEY_PATH = fixturePath("dp.key");

function lastLine(text: string): string {
  return text.trimEnd().split("\n").at(-1) ?? "";
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** Runs `cli.ts keygen --out DIR/name` and returns the path and the public key it printed. */
async function keygen(dir: TempDir, name: string): Promise<{ path: string; publicKey: string }> {
  const path = dir.file(name);
  const { code, stdout, stderr } = await runScript(
    CLI_PATH,
    ["keygen", "--out", path],
    [`--allow-write=${dir.path}`],
  );
  assert.equal(code, 0, `keygen failed: ${stderr}`);
  const publicKey = lastLine(stdout);
  assert.match(publicKey, PUBLIC_KEY);
  return { path, publicKey };
}

/**
 * Sends `size` random bytes through the local port of a `connect` forwarder
 * and checks the echo, then closes the connection.
 */
async function assertRoundTrip(port: number, size = 64 * 1024): Promise<void> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const payload = randomBytes(size);
  const [, echoed] = await within(
    Promise.all([writeAllTo(conn, payload), readExactlyFrom(conn, payload.length)]),
    "the echo through the forwarders",
  );
  assert.equal(echoed.length, payload.length);
  assert.deepEqual(echoed, payload);
}

/** Connects to a forwarder's local port and expects the connection to be closed without data. */
async function assertClosedAtOnce(port: number): Promise<void> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const received = await within(readAllFrom(conn, true), "the local connection to be closed");
  assert.equal(received.length, 0);
}

// ---- 1. keygen and pubkey --------------------------------------------------------

Deno.test("cli.ts keygen writes a 0600 PKCS#8 key and prints its public key; pubkey agrees; --force replaces", async (t) => {
  await using dir = await makeTempDir();
  const path = dir.file("k");
  const write = [`--allow-write=${dir.path}`];
  const pubkey = async () => {
    const { code, stdout, stderr } = await runScript(
      CLI_PATH,
      ["pubkey", "--key", path],
      [`--allow-read=${path}`],
    );
    assert.equal(code, 0, stderr);
    return stdout.trim();
  };

  let publicKey = "";
  let pem = "";
  await t.step(
    "keygen prints the public key last and writes the private key, mode 0600",
    async () => {
      const { code, stdout, stderr } = await runScript(CLI_PATH, ["keygen", "--out", path], write);
      assert.equal(code, 0, stderr);
      publicKey = lastLine(stdout);
      assert.match(publicKey, PUBLIC_KEY);
      assert.equal(atob(publicKey.slice("ed25519:".length)).length, 32);
      const info = await Deno.stat(path);
      assert.ok(info.isFile);
      assert.equal(info.mode! & 0o777, 0o600);
      pem = await Deno.readTextFile(path);
      assert.ok(pem.startsWith("-----BEGIN PRIVATE KEY-----\n"), pem.slice(0, 40));
      assert.match(pem, /\n-----END PRIVATE KEY-----\n?$/);
    },
  );

  await t.step("pubkey --key prints the same public key", async () => {
    assert.equal(await pubkey(), publicKey);
  });

  await t.step("keygen without --force exits 1 and leaves the file as it was", async () => {
    const { code, stdout, stderr } = await runScript(CLI_PATH, ["keygen", "--out", path], write);
    assert.equal(code, 1);
    assert.equal(stdout, "");
    assert.match(stderr, new RegExp(`Cannot write the key to ${escape(path)}: .*--force`));
    assert.equal(await Deno.readTextFile(path), pem);
    assert.equal(await pubkey(), publicKey);
  });

  await t.step("keygen --force replaces the key, still mode 0600", async () => {
    const { code, stdout, stderr } = await runScript(
      CLI_PATH,
      ["keygen", "--out", path, "--force"],
      write,
    );
    assert.equal(code, 0, stderr);
    const replaced = lastLine(stdout);
    assert.match(replaced, PUBLIC_KEY);
    assert.notEqual(replaced, publicKey);
    assert.notEqual(await Deno.readTextFile(path), pem);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.equal(await pubkey(), replaced);
  });
});

// ---- 2. an owned name end to end ----------------------------------------------------

Deno.test("cli.ts with an owned name: only an owner key registers it, only a listed client key reaches it", async (t) => {
  await using dir = await makeTempDir();
  const [owner, client] = await Promise.all([
    keygen(dir, "owner.key"),
    keygen(dir, "client.key"),
  ]);
  const names = await dir.write(
    "names.json",
    JSON.stringify({ echo: { owners: [owner.publicKey], clients: [client.publicKey] } }),
  );
  await using echo = new EchoServer();
  await using dp = await spawnDp(["--names", names], { permissions: [`--allow-read=${names}`] });
  await using expose = await spawnExpose(
    dp.address,
    "echo",
    echo.address,
    ["--key", owner.path],
    [`--allow-read=${owner.path}`],
  );

  await t.step(
    "connect --key with the client's key reaches it, and expose sees that key",
    async () => {
      await using forwarder = await spawnConnect(
        dp.address,
        "echo",
        ["--key", client.path],
        [`--allow-read=${client.path}`],
      );
      await assertRoundTrip(forwarder.port);
      await expose.logged(
        new RegExp(`Session \\d+ closed after .* with key "?${escape(client.publicKey)}"?`),
      );
      assert.equal((await forwarder.stop()).code, 0);
    },
  );

  await t.step(
    "connect without --key: the local connection is closed, the log says why",
    async () => {
      await using forwarder = await spawnConnect(dp.address, "echo");
      await assertClosedAtOnce(forwarder.port);
      await forwarder.logged(/Cannot forward .*admits only listed client keys/);
      assert.equal((await forwarder.stop()).code, 0);
    },
  );

  await t.step("a second expose without --key exits 1: the name is owned", async () => {
    const { code, stdout, stderr } = await runScript(CLI_PATH, [
      "expose",
      "--dp",
      dp.address,
      "--name",
      "echo",
      "--to",
      echo.address,
    ]);
    assert.equal(code, 1);
    assert.equal(stdout, "");
    assert.match(stderr, /Cannot register "echo" at .*the name is owned/);
  });

  await t.step("expose --key with the client's key exits 1: not an owner", async () => {
    const { code, stdout, stderr } = await runScript(
      CLI_PATH,
      ["expose", "--dp", dp.address, "--name", "echo", "--to", echo.address, "--key", client.path],
      ["--allow-net", `--allow-read=${client.path}`],
    );
    assert.equal(code, 1);
    assert.equal(stdout, "");
    assert.match(
      stderr,
      new RegExp(`Cannot register "echo" at .*key ${escape(client.publicKey)} is not an owner`),
    );
  });

  await t.step("the first expose kept serving throughout", async () => {
    await using forwarder = await spawnConnect(
      dp.address,
      "echo",
      ["--key", client.path],
      [`--allow-read=${client.path}`],
    );
    await assertRoundTrip(forwarder.port, 300_000);
    assert.equal((await forwarder.stop()).code, 0);
  });

  assert.equal((await expose.stop()).code, 0);
  assert.equal((await dp.stop()).code, 0);
});

// ---- 3. a public port for a name that needs client keys --------------------------

Deno.test("dp.ts refuses to start, exit 2, with a public port for a name whose clients need keys", async () => {
  await using dir = await makeTempDir();
  const [owner, client] = await Promise.all([keygen(dir, "owner.key"), keygen(dir, "client.key")]);
  const names = await dir.write(
    "names.json",
    JSON.stringify({ db: { owners: [owner.publicKey], clients: [client.publicKey] } }),
  );
  const { code, stdout, stderr } = await runScript(
    DP_PATH,
    ["--hostname", "127.0.0.1", "--port", "0", "--names", names, "--expose", "db=0"],
    ["--allow-net", `--allow-read=${names}`],
  );
  assert.equal(code, 2, stderr);
  assert.equal(stdout, "");
  assert.match(
    stderr,
    /Cannot expose "db" on a public port: .*admits only listed client keys, and a public port's clients cannot prove one/,
  );

  // The same name with "clients": "any" may have its public port.
  const open = await dir.write(
    "open.json",
    JSON.stringify({ db: { owners: [owner.publicKey], clients: "any" } }),
  );
  await using dp = await spawnDp(["--names", open, "--expose", "db=0"], {
    permissions: [`--allow-read=${open}`],
  });
  assert.ok(
    dp.stdout.lines.some((line) => /^Public port for "db" on 127\.0\.0\.1:\d+$/.test(line)),
  );
});

Deno.test({
  name: "dp.ts exits 0 on a SIGTERM sent as soon as it prints its Listening line",
  // Regression: dp.ts used to print its Listening line before it listened for signals, so a
  // SIGTERM sent at once could kill it (exit 143) instead of shutting it down.
  async fn() {
    const codes = await Promise.all(Array.from({ length: 10 }, async () => {
      const dp = await spawnDp([]);
      return (await dp.stop()).code;
    }));
    assert.deepEqual(codes, codes.map(() => 0));
  },
});

// ---- 4. TLS end to end ----------------------------------------------------------------

Deno.test("cli.ts expose and connect reach dp.ts over TLS with --tls-ca; without it they cannot verify it", async (t) => {
  await using echo = new EchoServer();
  await using dp = await spawnDp(
    ["--tls-cert", DP_CERT_PATH, "--tls-key", DP_KEY_PATH],
    { permissions: [`--allow-read=${DP_CERT_PATH},${DP_KEY_PATH}`] },
  );
  const tls = `tls://localhost:${dp.port}`;
  const trust = ["--tls-ca", CA_PATH];
  const readCa = [`--allow-read=${CA_PATH}`];
  const cannotVerify = new RegExp(
    `Cannot verify discover point "${escape(tls)}": invalid peer certificate: UnknownIssuer`,
  );

  await t.step("with --tls-ca, bytes echo through both forwarders", async () => {
    await using expose = await spawnExpose(tls, "echo", echo.address, trust, readCa);
    await using forwarder = await spawnConnect(tls, "echo", trust, readCa);
    await assertRoundTrip(forwarder.port, 256 * 1024);
    assert.equal((await forwarder.stop()).code, 0);
    assert.equal((await expose.stop()).code, 0);
  });

  await t.step(
    "expose without --tls-ca exits 1: the certificate could not be verified",
    async () => {
      const { code, stdout, stderr } = await runScript(CLI_PATH, [
        "expose",
        "--dp",
        tls,
        "--name",
        "echo",
        "--to",
        echo.address,
      ]);
      assert.equal(code, 1);
      assert.equal(stdout, "");
      assert.match(stderr, cannotVerify);
    },
  );

  await t.step("connect without --tls-ca closes its local connections and logs why", async () => {
    await using forwarder = await spawnConnect(tls, "echo");
    await assertClosedAtOnce(forwarder.port);
    await forwarder.logged(cannotVerify);
    assert.equal((await forwarder.stop()).code, 0);
  });

  assert.equal((await dp.stop()).code, 0);
});

// ---- 5. --tls-ca needs a tls:// discover point ----------------------------------------

Deno.test("cli.ts --tls-ca with a plain --dp is a usage error, exit 2", async () => {
  const cases = ["127.0.0.1:7000", "tcp://127.0.0.1:7000"].flatMap((dp) => [
    ["expose", "--dp", dp, "--name", "db", "--to", "127.0.0.1:5432", "--tls-ca", CA_PATH],
    ["connect", "--dp", dp, "--name", "db", "--listen", "127.0.0.1:0", "--tls-ca", CA_PATH],
  ]);
  const results = await Promise.all(
    cases.map((args) => runScript(CLI_PATH, args, ["--allow-net", `--allow-read=${CA_PATH}`])),
  );
  for (const [i, args] of cases.entries()) {
    const { code, stdout, stderr } = results[i]!;
    const what = `cli.ts ${args.join(" ")}`;
    assert.equal(code, 2, `exit code of ${what}; stderr: ${stderr}`);
    assert.equal(stdout, "", what);
    assert.match(stderr, /Cannot use --tls-ca with --dp ".*": it is for tls:\/\/HOST:PORT/, what);
    assert.match(stderr, /\n\nUsage: rtcp /, what);
  }
});

// ---- 6. files without the permission to read them -----------------------------------

Deno.test("dp.ts without --allow-read for --names or --tls-cert exits 2 and names the flag to add", async () => {
  await using dir = await makeTempDir();
  const owner = await keygen(dir, "owner.key");
  const names = await dir.write(
    "names.json",
    JSON.stringify({ db: { owners: [owner.publicKey], clients: "any" } }),
  );
  const cases: [string[], string][] = [
    [["--names", names], names],
    [["--tls-cert", DP_CERT_PATH, "--tls-key", DP_KEY_PATH], DP_CERT_PATH],
  ];
  for (const [args, file] of cases) {
    const { code, stdout, stderr } = await runScript(
      DP_PATH,
      ["--hostname", "127.0.0.1", "--port", "0", ...args],
    );
    assert.equal(code, 2, `dp.ts ${args.join(" ")}: ${stderr}`);
    assert.equal(stdout, "");
    assert.match(stderr, new RegExp(`Cannot read --${escape(args[0]!.slice(2))} ${escape(file)}`));
    assert.ok(stderr.includes(`--allow-read=${file}`), stderr);
  }
});

Deno.test("cli.ts expose --key without --allow-read exits 1 and names the flag to add", async () => {
  await using dir = await makeTempDir();
  const owner = await keygen(dir, "owner.key");
  const { code, stdout, stderr } = await runScript(CLI_PATH, [
    "expose",
    "--dp",
    "127.0.0.1:7000",
    "--name",
    "db",
    "--to",
    "127.0.0.1:5432",
    "--key",
    owner.path,
  ]);
  assert.equal(code, 1);
  assert.equal(stdout, "");
  assert.match(stderr, new RegExp(`Cannot read --key ${escape(owner.path)}`));
  assert.ok(stderr.includes(`--allow-read=${owner.path}`), stderr);
});
