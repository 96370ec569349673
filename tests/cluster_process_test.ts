/**
 * The cluster with real processes and real sockets: several `dp.ts` members
 * sharing one Deno KV registry file, `cli.ts expose` multi-homed to two of
 * them, clients entering anywhere; a member killed with SIGKILL under load and
 * restarted on its old port; `deno serve deploy.ts` instances that share only
 * KV behind a round-robin balancer (Deno Deploy's shape); and registry entries
 * that point nowhere.
 *
 * Every session sends distinct random bytes and checks the echo byte for byte.
 * Waits are conditions polled against a bounded deadline; the times printed
 * are reported, never asserted.
 * @module
 */

import assert from "node:assert/strict";
import { connect, type IndirectConn, listen, SessionRefusedError } from "../mod.ts";
import { unusedAddress } from "./_helpers.ts";
import { EchoServer, makeTempDir, spawnConnect, spawnExpose, within } from "./_programs.ts";
import { serveEcho } from "./_ws.ts";
import {
  assertExact,
  BlackHole,
  countLines,
  echoSession,
  exactEcho,
  heldEchoSession,
  type HeldOutcome,
  killHard,
  kvDeployProgram,
  type Member,
  type Outcome,
  registeredLine,
  retryUntil,
  RoundRobinBalancer,
  spawnMember,
  spawnMultiExpose,
  stopOrKill,
  summarize,
  tcpEchoSession,
  writeHolders,
} from "./_cluster.ts";

const KIB = 1024;

/** A session to `name` entering the cluster at `dp`. */
const via = (dp: string, name = "svc") => (): Promise<IndirectConn> => connect({ dp, name });

/** Spawns `count` members sharing `DIR/registry.sqlite3`. */
async function spawnMembers(
  dir: string,
  count: number,
  ttl?: number,
  extra: string[][] = [],
): Promise<Member[]> {
  const members: Member[] = [];
  try {
    for (let i = 0; i < count; i++) {
      members.push(
        await spawnMember(dir, `${dir}/registry.sqlite3`, {
          ...(ttl === undefined ? {} : { ttl }),
          extra: extra[i] ?? [],
        }),
      );
    }
    return members;
  } catch (error) {
    await Promise.all(members.map((member) => member.stop()));
    throw error;
  }
}

/** Stops every program, whatever happened (each stop is idempotent). */
async function stopAll(programs: readonly { stop(): Promise<unknown> }[]): Promise<void> {
  await Promise.all(programs.map((program) => program.stop()));
}

// ---- 1. three members, one registry ----------------------------------------------------

// Proves: a name registered at DP1 is reached from a client entering at any
// member (DP3 relays to DP1 through the registry), 50 sessions at once with
// exact bytes, and `cli.ts connect` with an unreachable first --dp falls over
// to DP3 and is relayed as well. Also that children pick up deno.json's
// `unstable: ["kv"]` (the members start with a KV registry, no --unstable-kv).
Deno.test("three dp.ts members on one KV registry: a client entering at any member reaches a name held at DP1", async () => {
  await using dir = await makeTempDir();
  const members = await spawnMembers(dir.path, 3);
  await using echo = new EchoServer();
  try {
    const [dp1, dp2, dp3] = members as [Member, Member, Member];
    assert.ok((await Deno.stat(dir.file("registry.sqlite3"))).isFile, "the KV file exists");
    await using _expose = await spawnExpose(dp1.address, "svc", echo.address);

    // The holder entry is written just after the registration: poll until DP3 sees it.
    const first = await retryUntil(
      "a session at DP3",
      () => exactEcho(via(dp3.address), 4 * KIB, "DP3"),
    );
    console.log(`first session at DP3 after ${first.tries} tries, ${first.elapsed.toFixed(0)} ms`);

    // A session entering at every member.
    for (const [index, member] of members.entries()) {
      assertExact(await echoSession(via(member.address), 64 * KIB), `entering at DP${index + 1}`);
    }

    // 50 sessions at once at DP3, 256 KiB each, distinct random data.
    const outcomes = await within(
      Promise.all(Array.from({ length: 50 }, () => echoSession(via(dp3.address), 256 * KIB))),
      "50 sessions at DP3",
      60_000,
    );
    const summary = summarize(outcomes);
    assert.deepEqual(
      { exact: summary.exact, errors: summary.errors },
      { exact: 50, errors: [] },
      `every one of 50 sessions exact: ${JSON.stringify(summary)}`,
    );

    // The TCP forwarder: its first --dp has nobody behind it, the second is DP3.
    await using forwarder = await spawnConnect(unusedAddress(), "svc", ["--dp", dp3.address]);
    const tcp = await Promise.all(
      Array.from({ length: 8 }, () => tcpEchoSession(forwarder.port, 128 * KIB)),
    );
    tcp.forEach((outcome, i) => assertExact(outcome, `TCP session ${i} through cli.ts connect`));
    // And a session at DP2 for good measure: the same relay from another member.
    assertExact(await echoSession(via(dp2.address), 256 * KIB), "entering at DP2");
  } finally {
    await stopAll(members);
  }
});

// ---- 2. SIGKILL under load -----------------------------------------------------------

// Proves: with `expose` multi-homed to DP1 and DP2 and clients entering at
// DP3 and DP2 (and a few at DP1), a SIGKILL of DP1 costs only sessions that
// went through it: each ends with an error, or (a client with nothing left to
// send) with a correct prefix then EOF — never wrong bytes, never a hang;
// sessions held open across the kill at DP2 are not touched; and sessions at
// DP3 and DP2 are then served again (DP1's entry is still listed until the
// TTL: DP3 must skip it when the dial is refused).
Deno.test("SIGKILL of a member under load: sessions end exact or with an error, then new ones are served", async () => {
  await using dir = await makeTempDir();
  // DP3 logs at debug level: "Carrying … to DP1" says how many sessions it sent through DP1.
  const members = await spawnMembers(dir.path, 3, 3000, [[], [], ["--log-level", "debug"]]);
  await using echo = new EchoServer();
  try {
    const [dp1, dp2, dp3] = members as [Member, Member, Member];
    await using expose = await spawnMultiExpose([dp1.address, dp2.address], "svc", echo.address);
    await within(expose.stderr.waitFor(registeredLine("svc", dp1.address)), "registered at DP1");
    await within(expose.stderr.waitFor(registeredLine("svc", dp2.address)), "registered at DP2");
    await retryUntil("a session at DP3", () => exactEcho(via(dp3.address), 4 * KIB, "DP3"));

    // Sessions held open across the kill: half their bytes echoed before it, half after.
    const gate = Promise.withResolvers<void>();
    const entries = [
      ...Array<string>(16).fill(dp3.address),
      ...Array<string>(4).fill(dp2.address),
      ...Array<string>(2).fill(dp1.address),
    ];
    let waiting = entries.length;
    const allHeld = Promise.withResolvers<void>();
    const held = entries.map((dp) =>
      heldEchoSession(via(dp), 512 * KIB, gate.promise, () => {
        if (--waiting === 0) allHeld.resolve();
      })
    );

    // Load: workers open sessions back to back until told to stop.
    interface Run {
      start: number;
      end: number;
      outcome: Outcome;
    }
    const runs: Run[] = [];
    let stopping = false;
    let completed = 0;
    const progress = Promise.withResolvers<void>();
    const worker = async (dp: string) => {
      while (!stopping) {
        const start = performance.now();
        const outcome = await echoSession(via(dp), 256 * KIB);
        runs.push({ start, end: performance.now(), outcome });
        if (outcome.kind === "exact" && ++completed >= 20) progress.resolve();
      }
    };
    const workers = [
      ...Array.from({ length: 8 }, () => worker(dp3.address)),
      ...Array.from({ length: 4 }, () => worker(dp2.address)),
    ];

    let killedAt = Infinity;
    let heldOutcomes: HeldOutcome[];
    try {
      // Kill with every held session half done and 12 workers running.
      await within(allHeld.promise, "the held sessions to be half done", 60_000);
      await within(progress.promise, "20 sessions under load before the kill", 60_000);
      killedAt = performance.now();
      const status = await killHard(dp1);
      assert.equal(status.signal, "SIGKILL");
      gate.resolve();

      // New sessions at DP3 and DP2 are served again; how soon is reported.
      const servedAt = async (dp: string, what: string) => {
        await exactEcho(via(dp), 64 * KIB, what);
        return performance.now() - killedAt;
      };
      const [atDp3, atDp2] = await Promise.all([
        retryUntil("a new session at DP3", () => servedAt(dp3.address, "DP3")),
        retryUntil("a new session at DP2", () => servedAt(dp2.address, "DP2")),
      ]);
      console.log(
        `after SIGKILL: DP3 served a new session ${atDp3.value.toFixed(0)} ms after the kill ` +
          `(${atDp3.tries} tries), DP2 ${atDp2.value.toFixed(0)} ms (${atDp2.tries} tries)`,
      );
    } finally {
      gate.resolve();
      stopping = true;
      heldOutcomes = await within(Promise.all(held), "the held sessions to end", 120_000);
      await within(Promise.all(workers), "the load workers to finish", 120_000);
    }

    const carriedToDp1 = countLines(dp3, new RegExp(`Carrying .* to "${dp1.address}"`));
    const before = runs.filter((run) => run.end < killedAt);
    const across = runs.filter((run) => run.start < killedAt && run.end >= killedAt);
    const after = runs.filter((run) => run.start >= killedAt);
    const firstServed = Math.min(
      ...after.filter((run) => run.outcome.kind === "exact").map((run) => run.end),
    );
    const heldSummary = (dp: string) =>
      summarize(heldOutcomes.filter((_, i) => entries[i] === dp).map((held) => held.outcome));
    console.log(`DP3 carried ${carriedToDp1} sessions to DP1 before it died`);
    console.log(
      `load: ${runs.length} sessions (${before.length} before the kill, ${across.length} across it, ${after.length} after)`,
    );
    console.log(`  across the kill: ${JSON.stringify(summarize(across.map((r) => r.outcome)))}`);
    console.log(`  after the kill: ${JSON.stringify(summarize(after.map((r) => r.outcome)))}`);
    console.log(`held at DP3: ${JSON.stringify(heldSummary(dp3.address))}`);
    console.log(`held at DP2: ${JSON.stringify(heldSummary(dp2.address))}`);
    console.log(`held at DP1: ${JSON.stringify(heldSummary(dp1.address))}`);
    console.log(
      `how broken held sessions' readers saw the end: ${
        JSON.stringify(
          heldOutcomes.filter((h) => h.outcome.kind !== "exact").map((h) => h.readEnd),
        )
      }`,
    );
    console.log(
      `first load session started after the kill and served: ${
        (firstServed - killedAt).toFixed(0)
      } ms after SIGKILL`,
    );

    // Every session: exact, or an error. Never wrong bytes, never a hang.
    const all = summarize([...runs.map((r) => r.outcome), ...heldOutcomes.map((h) => h.outcome)]);
    assert.equal(all.corrupt, 0, `no session returned wrong bytes: ${JSON.stringify(all)}`);
    assert.equal(all.hung, 0, `no session hung: ${JSON.stringify(all)}`);
    // "short" is a correct prefix, then a clean EOF: the session was cut and its client had
    // nothing left to write, so nothing raised. PROTOCOL.md: "the library delivers any Close
    // as end of stream" — the relaying DP closes the session with a reason when the member
    // behind it dies, and the reader sees EOF. Only a session in flight at the kill may do it.
    assert.ok(
      runs.every((run) => run.outcome.kind !== "short" || run.start < killedAt),
      "only sessions in flight at the kill were cut",
    );
    assert.ok(before.every((run) => run.outcome.kind === "exact"), "all exact before the kill");
    // Sessions that never touched DP1 are not disturbed by its death.
    heldOutcomes.forEach((h, i) => {
      if (entries[i] === dp2.address) assertExact(h.outcome, `held session ${i} at DP2`);
    });
    // Those whose client link was to DP1 itself end with an error.
    heldOutcomes.forEach((h, i) => {
      if (entries[i] === dp1.address) assert.equal(h.outcome.kind, "error", `held ${i} at DP1`);
    });

    // Once served again, a burst at both entries is served in full.
    const burst = await within(
      Promise.all([
        ...Array.from({ length: 20 }, () => echoSession(via(dp3.address), 128 * KIB)),
        ...Array.from({ length: 10 }, () => echoSession(via(dp2.address), 128 * KIB)),
      ]),
      "30 sessions after the kill",
      60_000,
    );
    burst.forEach((outcome, i) => assertExact(outcome, `session ${i} after the kill`));
  } finally {
    await stopAll(members);
  }
});

// ---- 3. restart rejoins ---------------------------------------------------------------

// Proves: a member restarted on a killed member's port, with the same KV file
// and advertise address, is rejoined by `expose` by itself (its backoff),
// serves a client entering there, and becomes the cluster's holder of the
// name: with DP2 gone as well, a client at DP3 still reaches the name (through
// the new DP1 only).
Deno.test("a member restarted on its old port is rejoined by expose and carries the name for the cluster", async () => {
  await using dir = await makeTempDir();
  const members = await spawnMembers(dir.path, 3, 3000);
  await using echo = new EchoServer();
  try {
    const [dp1, dp2, dp3] = members as [Member, Member, Member];
    await using expose = await spawnMultiExpose([dp1.address, dp2.address], "svc", echo.address);
    const atDp1 = registeredLine("svc", dp1.address);
    await within(expose.stderr.waitFor(atDp1), "registered at DP1");
    await within(expose.stderr.waitFor(registeredLine("svc", dp2.address)), "registered at DP2");
    await retryUntil("a session at DP3", () => exactEcho(via(dp3.address), 4 * KIB, "DP3"));

    await killHard(dp1);
    // Restart only once expose knows: it is then in its backoff, retrying the dead address.
    const lost = new RegExp(`Lost a link of "svc" to "${dp1.address}"`);
    await within(expose.stderr.waitFor(lost), "expose to notice DP1 is gone");
    // DP1 is dead: every registration at its address from now on is at the new DP1.
    const seen = countLines(expose, atDp1);
    const restartedAt = performance.now();
    const newDp1 = await spawnMember(dir.path, dir.file("registry.sqlite3"), {
      port: dp1.port,
      ttl: 3000,
    });
    members.push(newDp1);
    assert.equal(newDp1.address, dp1.address);

    await within(
      expose.stderr.waitFor(atDp1, seen + 1),
      "expose to register at the new DP1",
      60_000,
    );
    console.log(
      `expose rejoined the restarted DP1 ${
        (performance.now() - restartedAt).toFixed(0)
      } ms after it started`,
    );

    // A client entering at the new DP1, and one at DP3.
    await retryUntil(
      "a session at the new DP1",
      () => exactEcho(via(newDp1.address), 256 * KIB, "new DP1"),
    );
    await retryUntil("a session at DP3", () => exactEcho(via(dp3.address), 256 * KIB, "DP3"));

    // DP2 leaves (gracefully: its entries go at once). Only the new DP1 holds svc now.
    await dp2.stop();
    const alone = await retryUntil(
      "a session at DP3 with DP2 gone",
      () => exactEcho(via(dp3.address), 64 * KIB, "DP3"),
    );
    console.log(`DP3 reached svc through the new DP1 alone after ${alone.tries} tries`);
    const outcomes = await within(
      Promise.all(Array.from({ length: 10 }, () => echoSession(via(dp3.address), 128 * KIB))),
      "10 sessions at DP3 through the new DP1",
    );
    outcomes.forEach((outcome, i) => assertExact(outcome, `session ${i} at DP3`));
    assertExact(await echoSession(via(newDp1.address), 128 * KIB), "a session at the new DP1");
  } finally {
    await stopAll(members);
  }
});

// ---- 4. Deno Deploy simulation ----------------------------------------------------------

// Proves: `deploy.ts` instances that share nothing but a KV file, and cannot
// be dialled (no advertise), behind a round-robin router, serve every client
// wherever it lands: an instance without a link for the name records a want,
// the holder asks the server for one more link (More), and links keep coming
// until one lands where the client waits.
Deno.test("deploy.ts instances behind a round-robin balancer share a name through KV: every client is served", async () => {
  await using dir = await makeTempDir();
  const env = { RTCP_REGISTRY: `kv:${dir.file("deploy.sqlite3")}`, RTCP_LOG_LEVEL: "debug" };
  const instances = [0, 1, 2].map(() => kvDeployProgram(dir.path, env));
  try {
    const ports = await Promise.all(instances.map((instance) => instance.port()));
    await using balancer = new RoundRobinBalancer(ports);
    const url = `ws://127.0.0.1:${balancer.port}/rtcp`;
    const listener = listen({ dp: url, name: "svc", pool: { min: 1, max: 8 } });
    const serving = serveEcho(listener);
    try {
      await within(listener.ready, "the server to register through the balancer");
      for (let i = 0; i < 9; i++) {
        const { tries } = await retryUntil(
          `client ${i}`,
          () => exactEcho(() => connect({ dp: url, name: "svc" }), 64 * KIB, `client ${i}`),
          { deadline: 30_000 },
        );
        if (tries > 1) console.log(`client ${i} needed ${tries} tries`);
      }
      // Then 6 at once: they land on all three instances and wait there together.
      const together = await within(
        Promise.all(
          Array.from(
            { length: 6 },
            () => echoSession(() => connect({ dp: url, name: "svc" }), 64 * KIB),
          ),
        ),
        "6 clients at once",
        60_000,
      );
      together.forEach((outcome, i) => assertExact(outcome, `concurrent client ${i}`));
      console.log(`connections per instance: ${balancer.counts.join(", ")}`);
      const asked = instances.map((instance) =>
        countLines(instance, /one more link: a client waits for it elsewhere/)
      );
      console.log(`More sent per instance: ${asked.join(", ")}`);
      // The server's first link took the first instance; the first client landed on the
      // second, which had no link: only a More can have brought one there.
      assert.ok(asked.some((count) => count > 0), "some instance asked for one more link");
      // Round robin spread the clients over every instance, not just the first holder's.
      assert.ok(balancer.counts.every((count) => count >= 5), `${balancer.counts}`);
    } finally {
      listener.close();
      await within(serving, "the echo server to end");
    }
  } finally {
    // deploy.ts with a KV registry does not exit on SIGTERM (deno serve shuts the server
    // down gracefully, and the registry's refresh loop keeps the process alive): escalate.
    const ends = await Promise.all(instances.map((instance) => stopOrKill(instance, 3000)));
    console.log(`deploy instances ended by: ${ends.map((end) => end.by).join(", ")}`);
  }
});

// ---- 5. bad registry entries --------------------------------------------------------------

// Proves: registry entries that point nowhere (a closed port) or to a peer
// that never answers (a black hole) cost a retried dial, never a session:
// every session to the real name succeeds; and a name held only by such
// entries gets a clean refusal (SessionRefusedError, not a timeout).
Deno.test("registry entries that point to a closed port or a silent peer cost a retry or a clean refusal, never a hang", async () => {
  await using dir = await makeTempDir();
  const file = dir.file("registry.sqlite3");
  // Default settings: a member that does not answer must be given up on before a client's 10 s.
  const members = await spawnMembers(dir.path, 3);
  await using echo = new EchoServer();
  await using blackHole = new BlackHole();
  try {
    const [dp1, , dp3] = members as [Member, Member, Member];
    await using _expose = await spawnExpose(dp1.address, "svc", echo.address);
    await retryUntil("a session at DP3", () => exactEcho(via(dp3.address), 4 * KIB, "DP3"));

    const closed = unusedAddress();
    await writeHolders(dir.path, file, [
      { name: "svc", instance: "bogus-closed", address: closed, ttl: 120_000 },
      { name: "svc", instance: "bogus-silent", address: blackHole.address, ttl: 120_000 },
      { name: "ghost", instance: "bogus-closed", address: closed, ttl: 120_000 },
      { name: "void", instance: "bogus-silent", address: blackHole.address, ttl: 120_000 },
    ]);

    // Every session to svc succeeds, whichever holder DP3 tries first.
    const outcomes = await within(
      Promise.all(Array.from({ length: 12 }, () => echoSession(via(dp3.address), 64 * KIB))),
      "12 sessions at DP3 with bogus holders listed",
      60_000,
    );
    outcomes.forEach((outcome, i) => assertExact(outcome, `session ${i} with bogus holders`));
    for (let i = 0; i < 6; i++) {
      assertExact(await echoSession(via(dp3.address), 64 * KIB), `sequential session ${i}`);
    }
    console.log(`the silent holder was dialled ${blackHole.accepted} times`);

    // A name held only at a closed port, and one held only by a silent peer: clean refusals.
    for (const name of ["ghost", "void"]) {
      const start = performance.now();
      const error = await connect({ dp: dp3.address, name }).then(
        (conn) => {
          conn.close();
          return new Error(`a session to "${name}" opened`);
        },
        (error: unknown) => error,
      );
      assert.ok(
        error instanceof SessionRefusedError,
        `"${name}": expected SessionRefusedError, got ${error}`,
      );
      console.log(
        `"${name}": refused after ${(performance.now() - start).toFixed(0)} ms: ${error.reason}`,
      );
    }
  } finally {
    await stopAll(members);
  }
});
