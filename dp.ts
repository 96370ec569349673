/**
 * The RTCP Discover Point as a command.
 *
 * ```sh
 * deno run --allow-net dp.ts [--hostname 0.0.0.0] [--port 7000] [--expose NAME=PORT]...
 * # A public DP: owned names, TLS links (the files need --allow-read).
 * deno run --allow-net --allow-read=names.json,dp.crt,dp.key dp.ts \
 *   --names names.json --tls-cert dp.crt --tls-key dp.key
 * ```
 *
 * Prints `Public port for "NAME" on HOST:PORT` per public port, then
 * `Listening on HOST:PORT` once it serves; logs go to standard error. SIGINT
 * or SIGTERM shuts it down gracefully (every session gets a Close with a
 * reason) and exits with status 0. Bad flags exit with status 2.
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { configArgs, type FlagTable, readConfig, takeConfigFlag } from "./app/config.ts";
import { getLogger } from "./lib/_log.ts";
import { DEFAULT_PORT, DiscoverPoint, type DiscoverPointOptions } from "./lib/dp/discover_point.ts";
import { NamesFile } from "./lib/dp/policy.ts";
import { parsePortRanges } from "./lib/dp/public_ports.ts";
import { LINK_PATH } from "./lib/dp/http.ts";
import {
  LIMIT_FLAGS,
  openRegistry,
  parseRegistry,
  type RegistrySetting,
  wholeNumber as wholeNumberOf,
} from "./app/dp_settings.ts";
import { importIdentity } from "./lib/link/auth.ts";

function wholeNumber(flag: string, value: string): number {
  return wholeNumberOf(`--${flag}`, value);
}
import { formatAddress } from "./lib/transport/tcp.ts";
import { DP_FEATURES } from "./lib/link/link.ts";
import { parseLogFormat, parseLogLevel, setUpLogging } from "./app/logging.ts";
import { versionLine } from "./app/version.ts";
import { warnIfShared } from "./app/secret_file.ts";
import { shutdownSignal } from "./app/shutdown.ts";
import { startMemoryCompactor } from "./app/memory_compactor.ts";
import {
  type AdminServer,
  type AdminSetting,
  parseAdminAddress,
  readAdminToken,
  serveAdmin,
} from "./app/admin_server.ts";

const USAGE = `Usage: deno run --allow-net dp.ts [options]

Runs an RTCP Discover Point: indirect servers register names here, and
clients reach them by name through it.

Options:
  --hostname H                 Address to listen on (default 0.0.0.0)
  -p, --port P                 Port to listen on; 0 picks one (default ${DEFAULT_PORT})
  --expose NAME=PORT           Public port: plain TCP connections to PORT become
                               sessions to the indirect server NAME (repeatable)
  --name NAME                  The discover point's name, bound into every proof:
                               set it to its public host name (default rtcp-dp)
  --http PORT                  Also take links as WebSocket upgrades of /rtcp on this
                               HTTP port (ws://HOST:PORT/rtcp); other paths answer 404
  --allow-ports RANGES         Ports servers may ask for as their name's public port
                               (expose --public-port), e.g. 20000-20999,21000; each
                               closes when its name's last link goes. Needs
                               --allow-net=HOST (every port of the address)

Security (files need --allow-read=FILE):
  --names FILE                 Owned names: {"NAME": {"owners": ["ed25519:..."],
                               "clients": "any" | ["ed25519:..."]}}
  --unlisted open|refuse       Names not in --names: open to anyone (default), or refused
  --tls-cert FILE              Serve the link port over TLS with this PEM certificate
  --tls-key FILE               ... and this PEM private key (both or neither)

Admin (see "Operating a DP" in the README):
  --admin HOST:PORT            Serve /metrics (Prometheus), /status (JSON) and a live
                               status page at / over HTTP on this address; off by
                               default. Keep it on loopback, or give a token
  --admin-token-file FILE      Admin requests then need "Authorization: Bearer TOKEN",
                               TOKEN being the file's content (16+ characters)

Cluster (several DPs as one; see the README):
  --registry memory|kv:PATH|kv:URL
                               Where the DPs of a cluster record who holds which name:
                               this process only (default), a Deno KV file shared by
                               the DPs (needs --allow-read=PATH --allow-write=PATH),
                               or a KV Connect URL (needs --allow-env=DENO_KV_ACCESS_TOKEN)
  --advertise ADDRESS          How the other DPs dial this one: HOST:PORT, tls://HOST:PORT
                               or ws://HOST:PORT/rtcp (without it clients at other DPs
                               wait for this DP's servers to open a link there)
  --registry-ttl MS            How long a DP that died stays listed (default 10000)
  --cluster-key FILE           The cluster's private key (cli.ts keygen): proven on links
                               between DPs, which then pass on who their client is
  --cluster-ca FILE            PEM certificates to trust for tls:// and wss:// members

Limits:
  --max-line-bytes N           Longest message line accepted (default 1048576)
  --handshake-timeout MS       Time a new link has to send its Aloha (default 10000)
  --ack-timeout MS             Time a server has to answer a Connect (default 10000)
  --max-links-per-server N     Links one name may register (default 64)
  --max-sessions-per-server N  Sessions open to one name (default 10000)
  --max-sessions N             Sessions open in total (default 100000)
  --max-pending-per-server N   Connects waiting for one name's Ack (default 1000)
  --max-sessions-per-client-link N
                               Sessions on one multiplexed client link (default 1024)
  --max-links N                Links and public-port connections in total (default 20000)
  --max-names N                Names registered (default 10000)
  --max-links-per-ip N         Links and public-port connections from one address;
                               0 for no limit (default 0)
  --max-handshakes-per-ip N    Links from one address still in their handshake;
                               0 for no limit (default 1024)
  --max-buffered-bytes N       Bytes waiting in sessions, all together; new sessions
                               are refused above it (default 1073741824)
  --max-metric-names N         Names with admin metrics of their own; the others count
                               together as name="_other" (default 1000)
  --idle-timeout MS            Close sessions silent both ways this long; 0 for never
                               (default 0)
  --max-link-queue-bytes N     Bytes queued to one peer that does not read before it
                               is dropped (default 16777216)
  --shutdown-grace MS          Time a closing link may take to flush (default 2000)
  --max-window N               Bytes held per session direction (default 4194304)
  --keepalive-interval MS      Silence before a Ping, on links that agree (default 15000)
  --keepalive-timeout MS       Wait for an answer before dropping a link (default 10000)
  --features LIST              Extensions to offer, comma-separated, or "none" for the
                               original protocol only (default ${DP_FEATURES.join(",")})
  --config FILE                Options from a JSON file whose keys are these flags'
                               names ({"port": 7000, "expose": {"db": 15432}, ...});
                               flags on the command line win (needs --allow-read=FILE)
  --log-level L                trace, debug, info, warning, error or fatal (default info)
  --log-format text|json       Log lines for people (default) or JSON Lines for pipelines
  --version                    Print the version and exit
  -h, --help                   Show this help`;

/** Flags that name files, and what reading them needs. */
interface FileFlags {
  names?: string;
  unlisted: string;
  tlsCert?: string;
  tlsKey?: string;
  clusterKey?: string;
  clusterCa?: string;
  adminTokenFile?: string;
}

function parseFeatures(value: string): string[] {
  if (value === "none") return [];
  const features = value.split(",").map((feature) => feature.trim()).filter(Boolean);
  for (const feature of features) {
    if (!DP_FEATURES.includes(feature)) {
      throw new TypeError(
        `Cannot use --features "${value}": "${feature}" is not one of ${DP_FEATURES.join(", ")}`,
      );
    }
  }
  return features;
}

function parseExpose(values: string[]): Record<string, number> {
  const expose: Record<string, number> = {};
  for (const value of values) {
    const at = value.lastIndexOf("=");
    if (at <= 0) throw new TypeError(`Cannot use --expose "${value}": expected NAME=PORT`);
    expose[value.slice(0, at)] = wholeNumber("expose", value.slice(at + 1));
  }
  return expose;
}

/** Reads a file named by a flag, saying which flag and what permission is missing. */
async function readFlagFile(flag: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    const hint = error instanceof Deno.errors.NotCapable ? `; run with --allow-read=${path}` : "";
    throw new TypeError(`Cannot read --${flag} ${path}: ${(error as Error).message}${hint}`);
  }
}

/** Loads the names file and TLS files into the options. */
async function loadFiles(options: DiscoverPointOptions, files: FileFlags): Promise<void> {
  if (files.unlisted !== "open" && files.unlisted !== "refuse") {
    throw new TypeError(`Cannot use --unlisted "${files.unlisted}": expected open or refuse`);
  }
  if (files.names !== undefined) {
    options.names = NamesFile.parse(await readFlagFile("names", files.names), files.unlisted);
  } else if (files.unlisted === "refuse") {
    throw new TypeError(
      "Cannot use --unlisted refuse without --names FILE: every name would be refused",
    );
  }
  if ((files.tlsCert === undefined) !== (files.tlsKey === undefined)) {
    throw new TypeError("Cannot serve TLS: give both --tls-cert FILE and --tls-key FILE");
  }
  if (files.tlsCert !== undefined && files.tlsKey !== undefined) {
    options.tls = {
      cert: await readFlagFile("tls-cert", files.tlsCert),
      key: await readFlagFile("tls-key", files.tlsKey),
    };
  }
  if (files.clusterKey !== undefined) {
    const pem = await readFlagFile("cluster-key", files.clusterKey);
    await warnIfShared("cluster-key", files.clusterKey);
    try {
      options.clusterKey = await importIdentity(pem);
    } catch (error) {
      throw new TypeError(
        `Cannot use --cluster-key ${files.clusterKey}: ${(error as Error).message}`,
      );
    }
  }
  if (files.clusterCa !== undefined) {
    options.clusterCaCerts = [await readFlagFile("cluster-ca", files.clusterCa)];
  }
}

/** What the command line asks for. */
interface Parsed {
  options: DiscoverPointOptions;
  level: string;
  format: string;
  files: FileFlags;
  /** `--http`: the port for WebSocket links. */
  httpPort?: number;
  /** `--registry`. */
  registry: RegistrySetting;
  /** `--registry-ttl`. */
  registryTtl?: number;
  /** `--admin`, with the token once `--admin-token-file` is read. */
  admin?: AdminSetting;
}

/** The flags of `dp.ts`, for `parseArgs` and for config files. */
const DP_OPTIONS = {
  config: { type: "string" },
  hostname: { type: "string", default: "0.0.0.0" },
  port: { type: "string", short: "p", default: String(DEFAULT_PORT) },
  expose: { type: "string", multiple: true, default: [] },
  "log-level": { type: "string", default: "info" },
  "log-format": { type: "string", default: "text" },
  version: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  features: { type: "string" },
  "max-window": { type: "string" },
  "keepalive-interval": { type: "string" },
  "keepalive-timeout": { type: "string" },
  name: { type: "string" },
  names: { type: "string" },
  unlisted: { type: "string", default: "open" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  http: { type: "string" },
  "allow-ports": { type: "string" },
  registry: { type: "string", default: "memory" },
  advertise: { type: "string" },
  "registry-ttl": { type: "string" },
  "cluster-key": { type: "string" },
  "cluster-ca": { type: "string" },
  admin: { type: "string" },
  "admin-token-file": { type: "string" },
  ...Object.fromEntries(
    Object.keys(LIMIT_FLAGS).map((flag) => [flag, { type: "string" as const }]),
  ),
} as const satisfies ParseArgsOptionsConfig;

/** What a config file may set: every flag but `--help`, `--version` and `--config` itself. */
const CONFIG_FLAGS: FlagTable = Object.fromEntries(
  Object.entries(DP_OPTIONS)
    .filter(([flag]) => !["help", "version", "config"].includes(flag))
    .map(([flag, option]) => [
      flag,
      option.type === "boolean" ? "boolean" : "multiple" in option ? "strings" : "string",
    ]),
);

/** `args` with `--config FILE` replaced by the file's options (the command line's win). */
async function withConfig(args: string[]): Promise<string[]> {
  const config = takeConfigFlag(args);
  if (config === undefined) return args;
  const { path, rest } = config;
  return configArgs(path, await readConfig(path), CONFIG_FLAGS, rest);
}

function parseOptions(args: string[]): Parsed | "help" | "version" {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: DP_OPTIONS,
  });
  if (values.help) return "help";
  if (values.version) return "version";
  const options: DiscoverPointOptions = {
    hostname: values.hostname as string,
    port: wholeNumber("port", values.port as string),
    expose: parseExpose(values.expose as string[]),
  };
  const optional = (flag: string) => {
    const value = (values as Record<string, unknown>)[flag];
    return typeof value === "string" ? wholeNumber(flag, value) : undefined;
  };
  options.maxWindow = optional("max-window");
  if (values.features !== undefined) options.features = parseFeatures(values.features as string);
  options.keepalive = {
    interval: optional("keepalive-interval"),
    timeout: optional("keepalive-timeout"),
  };
  for (const [flag, key] of Object.entries(LIMIT_FLAGS)) options[key] = optional(flag);
  if (values.name !== undefined) options.name = values.name as string;
  if (values["allow-ports"] !== undefined) {
    options.allowPorts = parsePortRanges(values["allow-ports"] as string);
  }
  const files: FileFlags = { unlisted: values.unlisted as string };
  if (values.names !== undefined) files.names = values.names as string;
  if (values["tls-cert"] !== undefined) files.tlsCert = values["tls-cert"] as string;
  if (values["tls-key"] !== undefined) files.tlsKey = values["tls-key"] as string;
  if (values["cluster-key"] !== undefined) files.clusterKey = values["cluster-key"] as string;
  if (values["cluster-ca"] !== undefined) files.clusterCa = values["cluster-ca"] as string;
  const registry = parseRegistry("--registry", values.registry as string);
  if (values.advertise !== undefined) {
    if (registry.kind === "memory") {
      throw new TypeError(
        "Cannot use --advertise without --registry kv:…: no other DP would read it",
      );
    }
    options.advertise = values.advertise as string;
  }
  const parsed: Parsed = {
    options,
    level: values["log-level"] as string,
    format: values["log-format"] as string,
    files,
    registry,
  };
  const ttl = optional("registry-ttl");
  if (ttl !== undefined) parsed.registryTtl = ttl;
  if (values.http !== undefined) parsed.httpPort = wholeNumber("http", values.http as string);
  if (values.admin !== undefined) parsed.admin = parseAdminAddress(values.admin as string);
  if (values["admin-token-file"] !== undefined) {
    if (parsed.admin === undefined) {
      throw new TypeError("Cannot use --admin-token-file without --admin HOST:PORT");
    }
    files.adminTokenFile = values["admin-token-file"] as string;
  }
  return parsed;
}

/**
 * Runs the discover point until SIGINT or SIGTERM.
 * @param args Command-line arguments (without the program name).
 * @returns The exit code: 0 after a clean shutdown, 1 if it cannot start, 2 for bad flags.
 */
export async function main(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions(await withConfig(args));
    if (parsed !== "help" && parsed !== "version") {
      await setUpLogging(parseLogLevel(parsed.level), parseLogFormat(parsed.format));
      await loadFiles(parsed.options, parsed.files);
      if (parsed.admin && parsed.files.adminTokenFile !== undefined) {
        parsed.admin = {
          ...parsed.admin,
          token: await readAdminToken(parsed.files.adminTokenFile),
        };
      }
    }
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (parsed === "version") {
    console.log(versionLine());
    return 0;
  }
  if (parsed === "help") {
    console.log(USAGE);
    return 0;
  }
  const logger = getLogger(["rtcp", "dp"]);
  let dp: DiscoverPoint;
  let registry: Awaited<ReturnType<typeof openRegistry>>;
  try {
    registry = await openRegistry(parsed.registry, parsed.registryTtl);
  } catch (error) {
    logger.fatal("Cannot open the registry: {message}", { message: (error as Error).message });
    return 1;
  }
  try {
    dp = new DiscoverPoint({ ...parsed.options, ...(registry ? { registry } : {}) });
    await dp.start();
  } catch (error) {
    registry?.close();
    if (error instanceof RangeError || error instanceof TypeError) {
      console.error(`${error.message}\n\n${USAGE}`);
      return 2;
    }
    logger.fatal("Cannot start the discover point: {message}", {
      message: (error as Error).message,
    });
    return 1;
  }
  let http: Deno.HttpServer<Deno.NetAddr> | undefined;
  if (parsed.httpPort !== undefined) {
    try {
      http = Deno.serve(
        { hostname: parsed.options.hostname, port: parsed.httpPort, onListen: () => {} },
        dp.httpHandler(),
      );
    } catch (error) {
      logger.fatal("Cannot serve HTTP (WebSocket links) on {address}: {message}", {
        address: formatAddress({
          transport: "tcp",
          hostname: parsed.options.hostname ?? "0.0.0.0",
          port: parsed.httpPort,
        }),
        message: (error as Error).message,
      });
      await dp.close();
      registry?.close();
      return 1;
    }
  }
  let admin: AdminServer | undefined;
  if (parsed.admin !== undefined) {
    try {
      admin = await serveAdmin(dp, parsed.admin);
    } catch (error) {
      logger.fatal("Cannot serve the admin endpoint on {address}: {message}", {
        address: formatAddress({ transport: "tcp", ...parsed.admin }),
        message: (error as Error).message,
      });
      await Promise.all([dp.close(), http?.shutdown()]);
      registry?.close();
      return 1;
    }
  }
  // Listen for signals before saying we are ready: a supervisor may stop us at once.
  const stop = shutdownSignal();
  using _compactor = startMemoryCompactor();
  for (const [name, addr] of dp.publicAddrs) {
    console.log(`Public port for "${name}" on ${formatAddress(addr)}`);
  }
  if (http) console.log(`WebSocket links on ws://${formatAddress(http.addr)}${LINK_PATH}`);
  if (admin) console.log(`Admin on http://${formatAddress(admin.addr)}/`);
  console.log(`Listening on ${formatAddress(dp.addr)}`);

  const signal = await stop.received;
  stop.dispose();
  logger.info("Shutting down on {signal}", { signal });
  await Promise.all([dp.close(), http?.shutdown(), admin?.close()]);
  registry?.close();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
