/**
 * RTCP forwarders as a command: expose a local TCP service under a name at a
 * discover point, or reach a named service through a local port.
 *
 * ```sh
 * # Behind NAT: forward sessions for "db" to the local PostgreSQL.
 * rtcp expose --dp dp.example.com:7000 --name db --to 127.0.0.1:5432
 * # Anywhere: local port 15432 now reaches "db".
 * rtcp connect --dp dp.example.com:7000 --name db --listen 127.0.0.1:15432
 * # Own the name: a key, TLS to the discover point.
 * rtcp keygen --out db.key
 * rtcp expose --dp tls://dp.example.com:7000 --key db.key --name db --to 127.0.0.1:5432
 * ```
 *
 * Install with `deno install --global -n rtcp --allow-net cli.ts`, or run as
 * `deno run --allow-net cli.ts <command> ...`. `expose` prints
 * `Exposing "NAME" at DP to TO` once the name is registered; `connect` prints
 * `Listening on HOST:PORT` once its local port is bound. Logs go to standard
 * error. SIGINT or SIGTERM closes every session and exits with status 0; bad
 * flags exit with status 2; a discover point that refuses the first
 * registration exits with status 1.
 * @module
 */

import { parseArgs } from "node:util";
import { getLogger } from "./lib/_log.ts";
// From the modules themselves, not mod.ts: a forwarder does not load the discover point's code.
import { IndirectDialer } from "./lib/indirect/dialer.ts";
import {
  listen,
  type PoolBounds,
  type PublicPortOutcome,
  type SessionRequest,
} from "./lib/indirect/listen.ts";
import type { IndirectConn } from "./lib/indirect/types.ts";
import { generateIdentity, type Identity, importIdentity } from "./lib/link/auth.ts";
import { pkcs8ToPem } from "./lib/link/auth.ts";
import { parseDiscoverPoint } from "./lib/transport/dial.ts";
import { formatAddress, parseAddress } from "./lib/transport/tcp.ts";
import { type LogFormat, parseLogFormat, parseLogLevel, setUpLogging } from "./app/logging.ts";
import { versionLine } from "./app/version.ts";
import { warnIfShared } from "./app/secret_file.ts";
import { Backoff, sleep } from "./lib/_backoff.ts";
import { dialDiscoverPoint } from "./lib/link/handshake.ts";
import { DiscoverPointUnreachableError } from "./lib/errors.ts";
import { Role } from "./lib/wire/message.ts";
import { type ShutdownSignal, shutdownSignal } from "./app/shutdown.ts";
import { startMemoryCompactor } from "./app/memory_compactor.ts";
import { type PipeResult, Splice } from "./app/splice.ts";
import { SharedDeadline } from "./app/shared_deadline.ts";
import {
  configArgs,
  ConfigError,
  configList,
  type FlagTable,
  readConfig,
  takeConfigFlag,
} from "./app/config.ts";

export { PIPE_BUFFER_BYTES, pipeBoth, type PipeOptions, type PipeResult } from "./app/splice.ts";

const logger = getLogger(["rtcp", "cli"]);

const USAGE = `Usage: rtcp <command> [options]
   or: deno run --allow-net cli.ts <command> [options]

Forwards TCP connections through an RTCP discover point.

Commands:
  expose     Registers NAME at a discover point and forwards every session to
             a local TCP service
  connect    Listens on a local port and forwards every connection to NAME
             through a discover point
  keygen     Writes a new Ed25519 private key and prints its public key
  pubkey     Prints the public key of a private key file
  status     Prints a discover point's names, links and sessions, read from
             its admin endpoint (dp.ts --admin)

Options:
  -h, --help  Show this help; "rtcp <command> --help" shows a command's options
  --version   Print the version and exit`;

const LOG_LEVEL_HELP =
  `  --config FILE    Options from a JSON file whose keys are these flags' names,
                   and "services" (expose: [{"name", "to", "pool"?, "key"?}, …])
                   or "listeners" (connect: [{"name", "listen", "key"?}, …]) to
                   run several in one process; flags on the command line win
  --log-level L    trace, debug, info, warning, error or fatal (default info);
                   debug adds a line per session, at its open and its end
  --log-format F   text (default) or json: one JSON object per line
  --exit-on-failure
                   Exit (status 1) when the discover point cannot be reached
                   at start, instead of retrying until it answers (for supervisors)
  --version        Print the version and exit`;

const DP_HELP = `  --dp ADDRESS     The discover point (required): HOST:PORT or tcp://HOST:PORT,
                   tls://HOST:PORT for TLS, ws://HOST:PORT/rtcp or
                   wss://HOST/rtcp for a discover point behind HTTP. Repeat it
                   for several DPs (expose: a pool at each; connect: tried in
                   turn while one cannot be reached)
  --tls-ca FILE    With tls://: trust this PEM certificate (the DP's own
                   self-signed one pins it) instead of the system roots`;

const EXPOSE_USAGE = `Usage: rtcp expose --dp ADDRESS --name NAME --to HOST:PORT [options]

Registers NAME at the discover point and forwards every session that a client
opens to it to the TCP service at --to. The service is connected before the
session is accepted: when that fails, the session is refused (the client is
told the service is unavailable; this log says why). Reconnects by itself when
the discover point restarts. Files need --allow-read=FILE.

Options:
${DP_HELP}
  --name NAME      The name to register (required)
  --to HOST:PORT   The TCP service to forward sessions to (required)
  --key FILE       Prove this Ed25519 key (from "rtcp keygen"): needed for a
                   name the discover point lists as owned
  --public-port N  Ask each discover point for public port N for NAME (0: any
                   port it allows, dp.ts --allow-ports): plain TCP clients
                   there reach NAME; prints "Public port for NAME on HOST:PORT"
  --pool MIN..MAX  Links to keep to each discover point: at least MIN, more
                   while sessions are many or the DP asks (a client waits for
                   NAME on another instance), up to MAX; N for exactly N
                   (default 1..8)
  --early-ack      Accept each session at once and connect to --to meanwhile:
                   faster session setup, but when the service is down the
                   session is cut with the reason instead of refused
${LOG_LEVEL_HELP}
  -h, --help       Show this help`;

const CONNECT_USAGE = `Usage: rtcp connect --dp ADDRESS --name NAME --listen HOST:PORT [options]

Listens on --listen and forwards every connection it accepts to the indirect
server NAME, each as a new session through the discover point. A connection
whose session cannot open is closed, and the reason is logged. Files need
--allow-read=FILE.

Options:
${DP_HELP}
  --name NAME      The indirect server's name (required)
  --listen HOST:PORT
                   Where to listen; port 0 picks one (required)
  --key FILE       Prove this Ed25519 key: needed for a name that admits
                   only listed client keys
${LOG_LEVEL_HELP}
  -h, --help       Show this help`;

const KEYGEN_USAGE = `Usage: rtcp keygen --out FILE [--force]
   or: deno run --allow-write=FILE cli.ts keygen --out FILE

Writes a new Ed25519 private key to FILE (PKCS#8 PEM, mode 0600) and prints
its public key, "ed25519:<base64>", as the last line: list it in the discover
point's names file as an owner or a client.

Options:
  --out FILE   Where to write the private key (required)
  --force      Replace FILE if it exists
  -h, --help   Show this help`;

const PUBKEY_USAGE = `Usage: rtcp pubkey --key FILE

Prints the public key, "ed25519:<base64>", of the private key in FILE.

Options:
  --key FILE   The private key (required)
  -h, --help   Show this help`;

/**
 * Delays between a forwarder's attempts to reach its discover point: capped at
 * 4 s, so it is back within about 5 s of the DP's return; each delay is drawn
 * from the upper half of its range, so thousands of servers do not redial at
 * the same instant.
 */
const FORWARDER_BACKOFF = { initial: 250, max: 4_000 };

/** Milliseconds `connect` gives its discover point to answer the check at start. */
const DP_CHECK_TIMEOUT_MS = 5_000;

/**
 * How long `expose` waits for its target to accept a connection before it
 * refuses the session; below the discover point's default Ack timeout (10 s).
 */
const TARGET_CONNECT_TIMEOUT_MS = 5000;

/** How long a shutdown waits for sessions to finish closing. */
const SHUTDOWN_GRACE_MS = 5000;

// ---- command line ------------------------------------------------------------

class UsageError extends TypeError {
  constructor(message: string, readonly usage: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** What `expose` and `connect` share: the discover point and how to prove ourselves to it. */
interface DiscoverPointFlags {
  dp: string[];
  name: string;
  /** `--exit-on-failure`: give up when no discover point answers at start. */
  exitOnFailure: boolean;
  /** The path of `--key`. */
  keyFile?: string;
  /** The path of `--tls-ca`. */
  caFile?: string;
}

interface ExposeOptions extends DiscoverPointFlags {
  to: Deno.ConnectOptions & { hostname: string };
  pool: PoolBounds;
  /** `--public-port`: the public port to ask each discover point for. */
  publicPort?: number;
  /** `--early-ack`: accept sessions before the target connection is up. */
  earlyAck: boolean;
}

interface ConnectCommandOptions extends DiscoverPointFlags {
  listen: { hostname: string; port: number };
}

type Command =
  | { command: "help"; usage: string }
  | { command: "keygen"; out: string; force: boolean }
  | { command: "pubkey"; key: string }
  | { command: "version" }
  | { command: "status"; args: string[] }
  | { command: "expose"; options: ExposeOptions; level: string; format: LogFormat }
  | { command: "connect"; options: ConnectCommandOptions; level: string; format: LogFormat };

function address(
  command: string,
  flag: string,
  value: string | undefined,
  usage: string,
  anyPort = false,
): { hostname: string; port: number } {
  if (value === undefined) {
    throw new UsageError(`Cannot run ${command}: --${flag} is required`, usage);
  }
  let parsed: { hostname: string; port: number };
  try {
    parsed = parseAddress(value);
  } catch {
    throw new UsageError(`Cannot use --${flag} "${value}": expected HOST:PORT`, usage);
  }
  if (parsed.port === 0 && !anyPort) {
    throw new UsageError(`Cannot use --${flag} "${value}": expected a port from 1 to 65535`, usage);
  }
  return parsed;
}

function required(command: string, flag: string, value: string | undefined, usage: string): string {
  if (value === undefined || value === "") {
    throw new UsageError(`Cannot run ${command}: --${flag} is required`, usage);
  }
  return value;
}

function parseKeyCommand(command: "keygen" | "pubkey", args: string[]): Command {
  const usage = command === "keygen" ? KEYGEN_USAGE : PUBKEY_USAGE;
  let values;
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: command === "keygen"
        ? {
          out: { type: "string" },
          force: { type: "boolean" },
          help: { type: "boolean", short: "h" },
        }
        : { key: { type: "string" }, help: { type: "boolean", short: "h" } },
    }).values as { out?: string; force?: boolean; key?: string; help?: boolean };
  } catch (error) {
    throw new UsageError((error as Error).message, usage);
  }
  if (values.help) return { command: "help", usage };
  if (command === "keygen") {
    return {
      command,
      out: required(command, "out", values.out, usage),
      force: values.force ?? false,
    };
  }
  return { command, key: required(command, "key", values.key, usage) };
}

function parseCommand(args: string[]): Command {
  const [command, ...rest] = args;
  if (command === "-h" || command === "--help") return { command: "help", usage: USAGE };
  if (command === "--version") return { command: "version" };
  if (command === "keygen" || command === "pubkey") return parseKeyCommand(command, rest);
  if (command === "status") return { command, args: rest };
  if (command !== "expose" && command !== "connect") {
    const message = command === undefined
      ? "Cannot run: expected a command"
      : `Cannot run "${command}": expected the command expose, connect, keygen, pubkey or status`;
    throw new UsageError(message, USAGE);
  }
  const usage = command === "expose" ? EXPOSE_USAGE : CONNECT_USAGE;
  let values;
  try {
    values = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: {
        dp: { type: "string", multiple: true },
        name: { type: "string" },
        to: { type: "string" },
        listen: { type: "string" },
        pool: { type: "string" },
        "public-port": { type: "string" },
        key: { type: "string" },
        "tls-ca": { type: "string" },
        "log-level": { type: "string", default: "info" },
        "log-format": { type: "string", default: "text" },
        "exit-on-failure": { type: "boolean", default: false },
        "early-ack": { type: "boolean", default: false },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean" },
      },
    }).values;
  } catch (error) {
    throw new UsageError((error as Error).message, usage);
  }
  if (values.help) return { command: "help", usage };
  if (values.version) return { command: "version" };
  // One option table for both commands keeps parseArgs simple; reject the other's flags here.
  const foreign = command === "expose" ? "listen" : "to";
  const exposeOnly = values.pool !== undefined
    ? "pool"
    : values["public-port"] !== undefined
    ? "public-port"
    : values["early-ack"]
    ? "early-ack"
    : undefined;
  if (values[foreign] !== undefined || (command === "connect" && exposeOnly !== undefined)) {
    const flag = values[foreign] !== undefined ? foreign : exposeOnly;
    throw new UsageError(`Cannot run ${command}: unknown option --${flag}`, usage);
  }
  const level = values["log-level"];
  let format: LogFormat;
  try {
    parseLogLevel(level);
    format = parseLogFormat(values["log-format"]);
  } catch (error) {
    throw new UsageError((error as Error).message, usage);
  }
  if (values.dp === undefined || values.dp.length === 0) {
    throw new UsageError(`Cannot run ${command}: --dp is required`, usage);
  }
  const dpFlags: DiscoverPointFlags = {
    dp: values.dp.map((dp) => discoverPoint(dp, usage)),
    name: required(command, "name", values.name, usage),
    exitOnFailure: values["exit-on-failure"],
  };
  if (values.key !== undefined) dpFlags.keyFile = values.key;
  if (values["tls-ca"] !== undefined) {
    if (!dpFlags.dp.some((dp) => parseDiscoverPoint(dp).scheme === "tls")) {
      throw new UsageError(
        `Cannot use --tls-ca with --dp "${
          dpFlags.dp.join(" ")
        }": it is for tls://HOST:PORT discover points`,
        usage,
      );
    }
    dpFlags.caFile = values["tls-ca"];
  }
  if (command === "connect") {
    const listen = address(command, "listen", values.listen, usage, true);
    return { command, options: { ...dpFlags, listen }, level, format };
  }
  const to = address(command, "to", values.to, usage);
  const pool = values.pool === undefined ? { min: 1, max: 8 } : parsePool(values.pool, usage);
  const options: ExposeOptions = { ...dpFlags, to, pool, earlyAck: values["early-ack"] };
  const publicPort = values["public-port"];
  if (publicPort !== undefined) {
    options.publicPort = Number(publicPort);
    if (!/^\d{1,5}$/.test(publicPort) || options.publicPort > 65535) {
      throw new UsageError(
        `Cannot use --public-port "${publicPort}": expected 0 (any allowed port) to 65535`,
        usage,
      );
    }
  }
  return { command, options, level, format };
}

/** `--dp` as given, once it parses; a bare `host:port` keeps its old spelling. */
/** `--pool N` or `--pool MIN..MAX`, within 1 to 64. */
function parsePool(value: string, usage: string): PoolBounds {
  const match = /^(\d+)(?:\.\.(\d+))?$/.exec(value);
  const min = Number(match?.[1]);
  const max = match?.[2] === undefined ? min : Number(match[2]);
  if (match === null || min < 1 || max < min || max > 64) {
    throw new UsageError(
      `Cannot use --pool "${value}": expected N or MIN..MAX, whole numbers with 1 ≤ MIN ≤ MAX ≤ 64`,
      usage,
    );
  }
  return { min, max };
}

function discoverPoint(value: string, usage: string): string {
  let parsed;
  try {
    parsed = parseDiscoverPoint(value);
  } catch {
    throw new UsageError(
      `Cannot use --dp "${value}": expected HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT/rtcp or wss://HOST/rtcp`,
      usage,
    );
  }
  if (parsed.port === 0) {
    throw new UsageError(`Cannot use --dp "${value}": expected a port from 1 to 65535`, usage);
  }
  return value.includes("://") ? value : formatAddress({ transport: "tcp", ...parsed });
}

/**
 * The forwarding sessions in flight, and the signal that stops them all.
 * Sessions count themselves in and out, and each one's splice is stopped
 * directly on shutdown: an idle session holds no promise or listener here.
 */
class Sessions {
  readonly #splices = new Set<Splice>();
  readonly #stop = new AbortController();
  #count = 0;
  #none: PromiseWithResolvers<void> | undefined;

  /** Aborted on shutdown: for what a session does before its splice (connecting). */
  get signal(): AbortSignal {
    return this.#stop.signal;
  }

  /** A session starts; {@linkcode close} waits for its {@linkcode end}. */
  begin(): void {
    this.#count++;
  }

  /** A session has ended. */
  end(): void {
    if (--this.#count === 0) this.#none?.resolve();
  }

  /**
   * Pipes `a` and `b` as one session (counted until `finished` returns);
   * shutdown stops them.
   */
  splice(a: Deno.Conn, b: Deno.Conn, finished: (result: PipeResult) => Promise<void>): void {
    this.begin();
    const splice: Splice = new Splice(a, b, (result) => {
      this.#splices.delete(splice);
      void finished(result).finally(() => this.end());
    });
    this.#splices.add(splice);
    if (this.#stop.signal.aborted) splice.stop(this.#stop.signal.reason);
  }

  /** Closes every session and waits (a bounded time) for their Close to be answered. */
  async close(): Promise<void> {
    const reason = new Deno.errors.Interrupted("Shutting down");
    this.#stop.abort(reason);
    for (const splice of this.#splices) splice.stop(reason);
    if (this.#count === 0) return;
    this.#none = Promise.withResolvers<void>();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        logger.warning("Gave up waiting for {count} sessions to close", { count: this.#count });
        resolve();
      }, SHUTDOWN_GRACE_MS);
    });
    await Promise.race([this.#none.promise, grace]);
    clearTimeout(timer);
  }
}

/**
 * Sends small writes at once (TCP_NODELAY) on a forwarded connection: the
 * bytes were already delayed by the program that wrote them, if it wanted.
 */
function noDelay(conn: Deno.TcpConn): void {
  try {
    conn.setNoDelay(true);
  } catch {
    // Reset already: the first read or write says so.
  }
}

function messageOf(error: unknown): string {
  // Deno appends "(os error N)" to socket errors; the reason reads better without it.
  return (error instanceof Error ? error : new Error(String(error))).message.replace(
    / \(os error \d+\)$/,
    "",
  );
}

/** Which end of the tunnel a forwarder is: it decides which direction is "up" (client to server). */
type Side = "expose" | "connect";

/**
 * Pipes `session` and `local`, then logs one line saying how it ended. An
 * idle session waits in its splice's reads and holds nothing here.
 */
function forward(
  side: Side,
  session: IndirectConn,
  local: Deno.TcpConn,
  peer: string,
  sessions: Sessions,
): void {
  const started = performance.now();
  sessions.splice(session, local, async ({ aToB, bToA, error }) => {
    // Lets the Close reach the discover point before a shutdown exits.
    await session.closed;
    const failed = error !== undefined && !sessions.signal.aborted;
    // A line per session is for debugging: at info, writing it costs a busy forwarder a fifth
    // of its session setup rate. Sessions that fail are logged at any level.
    if (!failed && !logger.isEnabledFor("debug")) return;
    // Made only for a line that is written: an idle session holds none of it.
    const properties = {
      ...sessionLabel(side, session, local, peer),
      id: session.sessionId,
      key: session.clientKey,
      up: side === "expose" ? aToB : bToA,
      down: side === "expose" ? bToA : aToB,
      duration: Math.round(performance.now() - started),
    };
    const bytes = `{up} bytes from client to server, {down} bytes back, client {client}${
      session.clientKey === undefined ? "" : " with key {key}"
    }`;
    if (error === undefined) {
      logger.debug(`Session {id} closed after {duration} ms: ${bytes}`, properties);
    } else if (!failed) {
      logger.debug(`Session {id} closed on shutdown after {duration} ms: ${bytes}`, properties);
    } else {
      logger.warning(`Session {id} failed after {duration} ms (${bytes}): {message}`, {
        ...properties,
        message: messageOf(error),
      });
    }
  });
}

/**
 * Who a forwarded session is for the log: its client, and the target
 * (`expose`, `peer` is the `--to` address) or the name (`connect`).
 */
function sessionLabel(
  side: Side,
  session: IndirectConn,
  local: Deno.TcpConn,
  peer: string,
): Record<string, string> {
  return side === "expose"
    ? { client: formatAddress(session.remoteAddr), to: peer }
    : { client: formatAddress(local.remoteAddr), name: peer };
}

/** The key and CA certificate that `--key` and `--tls-ca` name, as `listen()`/`connect()` take them. */
interface Credentials {
  key?: Identity;
  caCerts?: string[];
}

/** Reads a file named by a flag; the error says which flag, and which permission is missing. */
async function readFlagFile(flag: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    const hint = error instanceof Deno.errors.NotCapable ? `; run with --allow-read=${path}` : "";
    throw new Error(`Cannot read --${flag} ${path}: ${messageOf(error)}${hint}`, { cause: error });
  }
}

async function readKey(path: string): Promise<Identity> {
  const pem = await readFlagFile("key", path);
  await warnIfShared("key", path);
  try {
    return await importIdentity(pem);
  } catch (error) {
    throw new Error(`Cannot use --key ${path}: ${messageOf(error)}`, { cause: error });
  }
}

async function readCredentials(flags: DiscoverPointFlags): Promise<Credentials> {
  const credentials: Credentials = {};
  if (flags.keyFile !== undefined) credentials.key = await readKey(flags.keyFile);
  if (flags.caFile !== undefined) {
    credentials.caCerts = [await readFlagFile("tls-ca", flags.caFile)];
  }
  return credentials;
}

async function runKeygen(out: string, force: boolean): Promise<number> {
  const { identity, pkcs8 } = await generateIdentity();
  try {
    await Deno.writeTextFile(out, pkcs8ToPem(pkcs8), {
      mode: 0o600,
      createNew: !force,
    });
    // The mode applies only to a file this call creates: tighten one that existed too.
    if (Deno.build.os !== "windows") await Deno.chmod(out, 0o600);
  } catch (error) {
    const hint = error instanceof Deno.errors.AlreadyExists
      ? " (pass --force to replace it)"
      : error instanceof Deno.errors.NotCapable
      ? `; run with --allow-write=${out}`
      : "";
    console.error(`Cannot write the key to ${out}: ${messageOf(error)}${hint}`);
    return 1;
  }
  console.log(`Wrote a new Ed25519 private key to ${out}; keep it secret. Its public key:`);
  console.log(identity.publicKey);
  return 0;
}

async function runPubkey(path: string): Promise<number> {
  try {
    console.log((await readKey(path)).publicKey);
    return 0;
  } catch (error) {
    console.error(messageOf(error));
    return 1;
  }
}

async function runExpose(options: ExposeOptions, stop: ShutdownSignal): Promise<number> {
  const { dp, name, pool } = options;
  const to = formatAddress({ transport: "tcp", ...options.to });
  const credentials = await readCredentials(options);
  if (credentials === undefined) return 1;
  const sessions = new Sessions();
  // Target connections admit() started, until accept() hands out their session.
  const targets = new Map<number, Promise<Deno.TcpConn>>();
  // One deadline per quarter second for all connects, not a timer and a signal per session.
  const deadline = new SharedDeadline(TARGET_CONNECT_TIMEOUT_MS, sessions.signal);
  const connectTarget = async (request: SessionRequest): Promise<Deno.TcpConn> => {
    const signal = deadline.signal();
    try {
      const target = await Deno.connect({ ...options.to, signal });
      noDelay(target);
      return target;
    } catch (error) {
      const detail = deadline.timedOut(signal)
        ? `no answer within ${TARGET_CONNECT_TIMEOUT_MS} ms`
        : messageOf(error);
      const outcome = options.earlyAck ? "Cut" : "Refused";
      logger.warning(`${outcome} session {id} from {client}: cannot reach {to}: {detail}`, {
        id: request.sessionId,
        client: formatAddress(request.remoteAddr),
        to,
        detail,
      });
      // The client learns that the service is down, not where it lives.
      throw new Error(`The service behind "${name}" is unavailable`, { cause: error });
    }
  };
  const admit = async (request: SessionRequest): Promise<void> => {
    const connecting = connectTarget(request);
    // Acks go out in Connect order, so a slow connect here delays every later session; with
    // --early-ack the session is accepted at once, and waits for its target after.
    if (options.earlyAck) connecting.catch(() => {/* The session is cut when accepted. */});
    else await connecting;
    targets.set(request.sessionId, connecting);
    // Refused after all (backlog full, listener closing, link lost): release the target.
    request.signal.addEventListener("abort", () => {
      if (targets.get(request.sessionId) !== connecting) return;
      targets.delete(request.sessionId);
      connecting.then((target) => target.close(), () => {});
    }, { once: true });
  };
  /** Forwards an accepted session once its target is connected; cuts it with the reason if not. */
  const serve = async (session: IndirectConn, connecting: Promise<Deno.TcpConn>) => {
    let target: Deno.TcpConn;
    try {
      target = await connecting;
    } catch (error) {
      session.close((error as Error).message);
      return;
    }
    if (logger.isEnabledFor("debug")) {
      const opened = session.clientKey === undefined
        ? "Session {id} opened from {client} to {to}"
        : "Session {id} opened from {client} with key {key} to {to}";
      logger.debug(opened, {
        ...sessionLabel("expose", session, target, to),
        id: session.sessionId,
        key: session.clientKey,
      });
    }
    forward("expose", session, target, to, sessions);
  };
  // Every link asks for the public port: say each answer once.
  const told = new Set<string>();
  const onPublicPort = (outcome: PublicPortOutcome) => {
    const said = `${outcome.dp} ${outcome.port ?? outcome.refusal}`;
    if (told.has(said)) return;
    told.add(said);
    if (outcome.refusal !== undefined) {
      logger.error("No public port for {name} at {dp}: {reason}", {
        name,
        dp: outcome.dp,
        reason: outcome.refusal,
      });
      return;
    }
    const { hostname } = parseDiscoverPoint(outcome.dp);
    const address = formatAddress({ transport: "tcp", hostname, port: outcome.port });
    console.log(`Public port for "${name}" on ${address}`);
  };
  const open = () =>
    listen({
      dp,
      name,
      pool,
      admit,
      backoff: FORWARDER_BACKOFF,
      ...(options.publicPort === undefined ? {} : { publicPort: options.publicPort, onPublicPort }),
      ...credentials,
    });
  let listener = open();
  const stopped = new AbortController();
  void stop.received.then(() => stopped.abort());
  try {
    // Not reachable at start (not up yet, a typo, DNS): retry as after a lost link.
    const backoff = new Backoff(FORWARDER_BACKOFF);
    for (;;) {
      try {
        const early = await Promise.race([listener.ready.then(() => undefined), stop.received]);
        if (early !== undefined) {
          logger.info("Stopped on {signal} before registering", { signal: early });
          return 0;
        }
        break;
      } catch (error) {
        if (options.exitOnFailure || !(error instanceof DiscoverPointUnreachableError)) {
          logger.error("Cannot register {name} at {dp}: {message}", {
            name,
            dp: dp.join(", "),
            message: messageOf(error),
          });
          return 1;
        }
        const delay = Math.round(backoff.next());
        logger.warning("Cannot register {name} yet: {message}; retrying in {delay} ms", {
          name,
          message: messageOf(error),
          delay,
        });
        await sleep(delay, stopped.signal);
        if (stopped.signal.aborted) {
          logger.info("Stopped before registering");
          return 0;
        }
        listener = open();
      }
    }
    console.log(`Exposing "${name}" at ${dp.join(", ")} to ${to}`);
    const accepting = (async () => {
      for await (const session of listener) {
        const connecting = targets.get(session.sessionId);
        targets.delete(session.sessionId);
        if (connecting === undefined) {
          logger.error("Closed session {id}: no connection to {to} was made for it", {
            id: session.sessionId,
            to,
          });
          session.close();
          continue;
        }
        void serve(session, connecting);
      }
    })();
    const outcome = await Promise.race([
      stop.received.then((signal) => ({ signal })),
      accepting.then(() => ({ error: undefined }), (error: unknown) => ({ error })),
    ]);
    if ("signal" in outcome) {
      logger.info("Shutting down on {signal}", { signal: outcome.signal });
      listener.close();
      await accepting.catch(() => {/* It failed after the signal; we are leaving anyway. */});
      await sessions.close();
      return 0;
    }
    logger.error("Stopped exposing {name}: {message}", {
      name,
      message: messageOf(outcome.error),
    });
    await sessions.close();
    return 1;
  } finally {
    listener.close();
    for (const connecting of targets.values()) {
      connecting.then((target) => target.close(), () => {/* Nothing to close. */});
    }
    targets.clear();
  }
}

/**
 * Says at start whether each discover point answers (an Aloha exchange, no
 * session), so a typo or a DP that is down shows at once, not at the first
 * connection.
 * @returns Whether every one answered.
 */
async function checkDiscoverPoints(
  dps: readonly string[],
  caCerts: readonly string[] | undefined,
): Promise<boolean> {
  const answers = await Promise.all(dps.map(async (dp) => {
    try {
      const link = await dialDiscoverPoint(dp, {
        role: Role.IndirectClient,
        name: "",
        signal: AbortSignal.timeout(DP_CHECK_TIMEOUT_MS),
        ...(caCerts ? { caCerts } : {}),
      });
      await link.close();
      logger.info("Discover point {dp} answers", { dp });
      return true;
    } catch (error) {
      logger.error("{message}; connections will fail until {dp} answers", {
        dp,
        message: messageOf(error),
      });
      return false;
    }
  }));
  return answers.every(Boolean);
}

async function runConnect(
  options: ConnectCommandOptions,
  stop: ShutdownSignal,
): Promise<number> {
  const { dp, name } = options;
  const credentials = await readCredentials(options);
  if (credentials === undefined) return 1;
  if (!await checkDiscoverPoints(dp, credentials.caCerts) && options.exitOnFailure) return 1;
  let server: Deno.TcpListener;
  try {
    server = Deno.listen(options.listen);
  } catch (error) {
    logger.error("Cannot listen on {address}: {message}", {
      address: formatAddress({ transport: "tcp", ...options.listen }),
      message: messageOf(error),
    });
    return 1;
  }
  const sessions = new Sessions();
  // One link carries every session where the discover point multiplexes: one handshake for all.
  const dialer = new IndirectDialer({ dp, name, ...credentials });
  const open = async (local: Deno.TcpConn): Promise<void> => {
    let session: IndirectConn;
    try {
      session = await dialer.connect(sessions.signal);
    } catch (error) {
      local.close();
      if (sessions.signal.aborted) return;
      logger.error("Cannot forward {client}: {message}", {
        client: formatAddress(local.remoteAddr),
        message: messageOf(error),
      });
      return;
    }
    if (logger.isEnabledFor("debug")) {
      logger.debug("Session {id} opened from {client} to {name}", {
        ...sessionLabel("connect", session, local, name),
        id: session.sessionId,
      });
    }
    forward("connect", session, local, name, sessions);
  };
  try {
    console.log(`Listening on ${formatAddress(server.addr)}`);
    const accepting = (async () => {
      for await (const local of server) {
        noDelay(local);
        sessions.begin();
        void open(local).finally(() => sessions.end());
      }
    })();
    const outcome = await Promise.race([
      stop.received.then((signal) => ({ signal })),
      accepting.then(() => ({ error: undefined }), (error: unknown) => ({ error })),
    ]);
    if ("signal" in outcome) {
      logger.info("Shutting down on {signal}", { signal: outcome.signal });
      server.close();
      await accepting.catch(() => {/* Closing the listener may end it either way. */});
      await sessions.close();
      return 0;
    }
    logger.error("Stopped listening: {message}", { message: messageOf(outcome.error) });
    await sessions.close();
    return 1;
  } finally {
    await dialer.close();
    try {
      server.close();
    } catch {
      // Closed above.
    }
  }
}

/**
 * Runs `rtcp expose` or `rtcp connect` until SIGINT or SIGTERM.
 * @param args Command-line arguments (without the program name).
 * @returns The exit code: 0 after a clean shutdown or `--help`, 1 if it cannot
 * start (or the discover point refuses the registration), 2 for bad flags.
 */
export async function main(args: string[]): Promise<number> {
  let parsed: Command;
  let more: Command[];
  try {
    // With --config, one command per service (expose) or local listener (connect).
    [parsed, ...more] = (await commandLines(args)).map(parseCommand) as [Command, ...Command[]];
  } catch (error) {
    const usage = error instanceof UsageError
      ? error.usage
      : args[0] === "expose"
      ? EXPOSE_USAGE
      : args[0] === "connect"
      ? CONNECT_USAGE
      : USAGE;
    console.error(`${(error as Error).message}\n\n${usage}`);
    return 2;
  }
  if (parsed.command === "help") {
    console.log(parsed.usage);
    return 0;
  }
  if (parsed.command === "version") {
    console.log(versionLine());
    return 0;
  }
  if (parsed.command === "keygen") return await runKeygen(parsed.out, parsed.force);
  if (parsed.command === "pubkey") return await runPubkey(parsed.key);
  if (parsed.command === "status") {
    const { runStatus } = await import("./app/status_command.ts");
    return await runStatus(parsed.args);
  }
  await setUpLogging(parseLogLevel(parsed.level), parsed.format);
  const stop = shutdownSignal();
  using _compactor = startMemoryCompactor();
  try {
    const codes = await Promise.all([parsed, ...more].map((command) => {
      if (command.command === "expose") return runExpose(command.options, stop);
      if (command.command === "connect") return runConnect(command.options, stop);
      return Promise.resolve(0);
    }));
    return Math.max(...codes);
  } finally {
    stop.dispose();
  }
}

/** Flags of `expose` and `connect` a config file may set, by kind. */
const FORWARDER_FLAGS: FlagTable = {
  dp: "strings",
  name: "string",
  to: "string",
  listen: "string",
  pool: "string",
  "public-port": "string",
  key: "string",
  "tls-ca": "string",
  "log-level": "string",
  "log-format": "string",
  "exit-on-failure": "boolean",
  "early-ack": "boolean",
};

/** What one entry of a config's `services` (expose) or `listeners` (connect) may set. */
const ENTRY_FLAGS: Readonly<Record<"expose" | "connect", FlagTable>> = {
  expose: {
    name: "string",
    to: "string",
    pool: "string",
    key: "string",
    "public-port": "string",
    "early-ack": "boolean",
  },
  connect: { name: "string", listen: "string", key: "string" },
};

/**
 * The command lines `args` stands for: itself, or with `--config FILE` one
 * per entry of the file's `services` (expose) or `listeners` (connect), each
 * with the file's other keys as flags first and the command line's last.
 * @throws {ConfigError} On a file that cannot be read, an unknown key, a wrong type, a name twice.
 */
async function commandLines(args: string[]): Promise<string[][]> {
  const [command, ...rest] = args;
  if (command !== "expose" && command !== "connect") return [args];
  const taken = takeConfigFlag(rest);
  if (taken === undefined) return [args];
  const { path, rest: flags } = taken;
  const config = await readConfig(path);
  const listKey = command === "expose" ? "services" : "listeners";
  const entries = config[listKey] === undefined
    ? [{}]
    : configList(`${path}: "${listKey}"`, config[listKey], ENTRY_FLAGS[command]);
  const seen = new Set<unknown>();
  for (const [index, entry] of entries.entries()) {
    const key = command === "expose" ? entry.name : entry.listen;
    // Port 0 picks a free port each time: never twice the same.
    const anyPort = typeof key === "string" && key.endsWith(":0");
    if (key !== undefined && !anyPort && seen.has(key)) {
      throw new ConfigError(
        `${path}: "${listKey}"[${index}]: ${command === "expose" ? "name" : "listen"} ${
          JSON.stringify(key)
        } is already in an earlier entry`,
      );
    }
    seen.add(key);
  }
  return entries.map((entry) => {
    const entryArgs = configArgs(path, entry, ENTRY_FLAGS[command], flags);
    return [command, ...configArgs(path, config, FORWARDER_FLAGS, entryArgs, [listKey])];
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
