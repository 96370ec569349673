/**
 * Public ports that servers ask for (extension `public-port`): granted only
 * inside the ranges the operator allows, one name per port, and closed when
 * the name's last link goes. Plain TCP connections to a granted port become
 * sessions to its name, as on a public port set on the command line.
 * @module
 */

import { getLogger } from "../_log.ts";
import { formatAddress } from "../transport/tcp.ts";

const logger = getLogger(["rtcp", "dp"]);

/** A range of ports, both ends included. */
export interface PortRange {
  /** The first port of the range. */
  readonly from: number;
  /** The last port of the range. */
  readonly to: number;
}

/** Most ports tried when a server asks for any port: a full range is not scanned. */
const MAX_TRIES = 256;

/**
 * Parses `20000-20999,21000`: ranges and single ports, comma-separated.
 * @throws {TypeError} Naming the part that is not a port or a range.
 */
export function parsePortRanges(text: string): PortRange[] {
  return text.split(",").map((part) => {
    const match = /^\s*(\d{1,5})(?:\s*-\s*(\d{1,5}))?\s*$/.exec(part);
    const from = Number(match?.[1]);
    const to = match?.[2] === undefined ? from : Number(match[2]);
    if (match === null || from < 1 || to > 65535 || to < from) {
      throw new TypeError(
        `Cannot allow ports "${part}": expected PORT or FROM-TO, ports 1 to 65535, FROM ≤ TO`,
      );
    }
    return { from, to };
  });
}

/** The outcome of a request: the port granted, or why not. */
export type PortGrant = { readonly port: number } | { readonly refusal: string };

/** The ports servers asked for, by name. */
export class PublicPorts {
  readonly #hostname: string;
  readonly #ranges: readonly PortRange[];
  readonly #serve: (name: string, listener: Deno.TcpListener) => void;
  readonly #byName = new Map<string, Deno.TcpListener>();
  readonly #byPort = new Map<number, string>();

  /**
   * @param serve Starts accepting on a granted port's listener, for `name`.
   */
  constructor(
    hostname: string,
    ranges: readonly PortRange[],
    serve: (name: string, listener: Deno.TcpListener) => void,
  ) {
    this.#hostname = hostname;
    this.#ranges = ranges;
    this.#serve = serve;
  }

  /** Granted ports by name. */
  get addrs(): ReadonlyMap<string, Deno.NetAddr> {
    return new Map([...this.#byName].map(([name, listener]) => [name, listener.addr]));
  }

  #allowed(port: number): boolean {
    return this.#ranges.some((range) => port >= range.from && port <= range.to);
  }

  /**
   * Grants `name` the public port `requested` (0: any allowed one), or says why not.
   * A name keeps one port: asking again (from another link) gets the same one.
   */
  grant(name: string, requested: number): PortGrant {
    const held = this.#byName.get(name);
    if (held !== undefined) {
      const port = held.addr.port;
      if (requested === 0 || requested === port) return { port };
      return {
        refusal: `Cannot open port ${requested} for "${name}": it has port ${port} already`,
      };
    }
    if (this.#ranges.length === 0) {
      return {
        refusal:
          "Cannot open a public port: this discover point grants none (its operator allows ranges with --allow-ports)",
      };
    }
    if (requested !== 0) {
      if (!this.#allowed(requested)) {
        return {
          refusal:
            `Cannot open port ${requested} for "${name}": it is outside the ports this discover point grants (${this.#describe()})`,
        };
      }
      const owner = this.#byPort.get(requested);
      if (owner !== undefined) {
        return { refusal: `Cannot open port ${requested} for "${name}": "${owner}" has it` };
      }
      return this.#open(name, requested);
    }
    let tries = 0;
    for (const { from, to } of this.#ranges) {
      for (let port = from; port <= to && tries < MAX_TRIES; port++) {
        if (this.#byPort.has(port)) continue;
        tries++;
        const grant = this.#open(name, port, true);
        if ("port" in grant) return grant;
      }
    }
    return {
      refusal: `Cannot open a public port for "${name}": no free port in ${this.#describe()}`,
    };
  }

  #open(name: string, port: number, quiet = false): PortGrant {
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: this.#hostname, port });
    } catch (error) {
      if (!quiet) {
        logger.warn("Cannot open public port {port} for {name}: {message}", {
          port,
          name,
          message: (error as Error).message,
        });
      }
      const why = error instanceof Deno.errors.AddrInUse
        ? "it is in use on this host"
        : "this host cannot listen on it";
      return { refusal: `Cannot open port ${port} for "${name}": ${why}` };
    }
    this.#byName.set(name, listener);
    this.#byPort.set(port, name);
    logger.info("Public port for {name} on {address}, as its server asked", {
      name,
      address: formatAddress(listener.addr),
    });
    this.#serve(name, listener);
    return { port };
  }

  #describe(): string {
    return this.#ranges.map(({ from, to }) => from === to ? `${from}` : `${from}-${to}`).join(
      ",",
    );
  }

  /** The name's last link went: its port closes (its sessions carry on). */
  release(name: string): void {
    const listener = this.#byName.get(name);
    if (listener === undefined) return;
    this.#byName.delete(name);
    this.#byPort.delete(listener.addr.port);
    logger.info("Closed public port {port} of {name}: its last link went", {
      port: listener.addr.port,
      name,
    });
    listener.close();
  }

  /** Closes every granted port. */
  close(): void {
    for (const name of [...this.#byName.keys()]) this.release(name);
  }
}
