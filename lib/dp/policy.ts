/**
 * Who may register a name and who may reach it: the one place a discover
 * point asks, whatever transport a link came in on. A names file lists owned
 * names with their owner keys and their clients (`"any"` or a list of keys);
 * names not in it are open or refused, as the operator chooses.
 * @module
 */

import { formatPublicKey, parsePublicKey } from "../link/auth.ts";

/** How names that are not in the names file are treated. */
export type UnlistedNames = "open" | "refuse";

/** One name's entry in a names file. */
export interface NameRule {
  /** Keys (`ed25519:…`) whose holders may register the name; every link of its pool proves one. */
  readonly owners: readonly string[];
  /** `"any"`, or the keys a client must prove to reach the name. */
  readonly clients: "any" | readonly string[];
}

/** The policy of a discover point with no names file: every name open to everyone. */
export const OPEN_NAMES: NamePolicy = {
  needsProof: () => false,
  restrictsClients: () => false,
  registration: () => undefined,
  connection: () => undefined,
};

/** What a discover point asks before it registers a link or routes a client. */
export interface NamePolicy {
  /** Whether registering `name` needs a proven key, so a server that cannot prove one is refused at once. */
  needsProof(name: string): boolean;
  /** Whether only listed client keys may reach `name` (a public port cannot ask for one). */
  restrictsClients(name: string): boolean;
  /**
   * Decides a registration.
   * @param key The key the server proved (`ed25519:…`), or `undefined`.
   * @returns Why it is refused, or `undefined` to accept.
   */
  registration(name: string, key: string | undefined): string | undefined;
  /**
   * Decides a client's session.
   * @param key The key the client proved (`ed25519:…`), or `undefined`.
   * @returns Why it is refused, or `undefined` to route it.
   */
  connection(name: string, key: string | undefined): string | undefined;
  /**
   * Decides whether `name`'s servers may ask for a public port (extension
   * `public-port`); without this method, they may.
   * @returns Why not, or `undefined` to let the ranges decide.
   */
  publicPort?(name: string): string | undefined;
}

interface Rule {
  readonly owners: ReadonlySet<string>;
  readonly clients: "any" | ReadonlySet<string>;
}

/** A names file's policy; see {@linkcode NamesFile.parse}. */
export class NamesFile implements NamePolicy {
  readonly #rules: ReadonlyMap<string, Rule>;
  readonly #unlisted: UnlistedNames;

  /**
   * Creates the policy from rules; prefer {@linkcode NamesFile.parse}.
   * @throws {TypeError} If a key is not an `ed25519:…` key.
   */
  constructor(rules: ReadonlyMap<string, NameRule>, unlisted: UnlistedNames = "open") {
    const canonical = (keys: readonly string[]) =>
      new Set(keys.map((key) => formatPublicKey(parsePublicKey(key))));
    this.#rules = new Map(
      [...rules].map(([name, rule]) => [name, {
        owners: canonical(rule.owners),
        clients: rule.clients === "any" ? "any" : canonical(rule.clients),
      }]),
    );
    this.#unlisted = unlisted;
  }

  /**
   * Reads a names file: `{ "NAME": { "owners": ["ed25519:…"], "clients": "any" | ["ed25519:…"] } }`.
   * @param text The file's JSON.
   * @param unlisted What happens to names not in the file.
   * @throws {TypeError} Naming the path of the first bad entry.
   */
  static parse(text: string, unlisted: UnlistedNames = "open"): NamesFile {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new TypeError(`Cannot read the names file: ${(error as Error).message}`);
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new TypeError("Cannot read the names file: expected a JSON object of names");
    }
    const rules = new Map<string, NameRule>();
    for (const [name, entry] of Object.entries(json)) {
      rules.set(name, parseRule(name, entry));
    }
    return new NamesFile(rules, unlisted);
  }

  /** See {@linkcode NamePolicy.needsProof}. */
  needsProof(name: string): boolean {
    return this.#rules.has(name);
  }

  /** See {@linkcode NamePolicy.restrictsClients}. */
  restrictsClients(name: string): boolean {
    const clients = this.#rules.get(name)?.clients;
    return clients !== undefined && clients !== "any";
  }

  /** See {@linkcode NamePolicy.registration}. */
  registration(name: string, key: string | undefined): string | undefined {
    const rule = this.#rules.get(name);
    if (rule === undefined) {
      return this.#unlisted === "open"
        ? undefined
        : `Cannot register "${name}": this discover point serves only the names in its names file`;
    }
    if (key === undefined) {
      return `Cannot register "${name}": the name is owned; prove an owner key (extension auth)`;
    }
    if (!rule.owners.has(key)) {
      return `Cannot register "${name}": key ${key} is not an owner of the name`;
    }
    return undefined;
  }

  /**
   * A port is its owners' alone: an unlisted name, open to anyone who registers it, gets none.
   * See {@linkcode NamePolicy.publicPort}.
   */
  publicPort(name: string): string | undefined {
    if (this.#rules.has(name)) return undefined;
    return `Cannot open a public port for "${name}": only names the names file gives owners get one`;
  }

  /** See {@linkcode NamePolicy.connection}. */
  connection(name: string, key: string | undefined): string | undefined {
    const clients = this.#rules.get(name)?.clients;
    if (clients === undefined || clients === "any") return undefined;
    if (key === undefined) {
      return `Cannot reach "${name}": it admits only listed client keys; connect with a key (extension auth)`;
    }
    if (!clients.has(key)) return `Cannot reach "${name}": key ${key} is not one of its clients`;
    return undefined;
  }
}

function keyList(path: string, value: unknown): string[] {
  if (!Array.isArray(value)) {
    throw new TypeError(`Cannot read the names file: ${path} must be a list of "ed25519:…" keys`);
  }
  return value.map((key, index) => {
    if (typeof key !== "string") {
      throw new TypeError(`Cannot read the names file: ${path}[${index}] must be a string`);
    }
    try {
      // Stored as proven keys are written (canonical base64), so any spelling of a key matches.
      return formatPublicKey(parsePublicKey(key));
    } catch (error) {
      throw new TypeError(
        `Cannot read the names file: ${path}[${index}]: ${(error as Error).message}`,
      );
    }
  });
}

function parseRule(name: string, entry: unknown): NameRule {
  const path = JSON.stringify(name);
  if (name === "") throw new TypeError("Cannot read the names file: a name cannot be empty");
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
    throw new TypeError(`Cannot read the names file: ${path} must be an object`);
  }
  const { owners, clients, ...rest } = entry as Record<string, unknown>;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) {
    throw new TypeError(
      `Cannot read the names file: ${path}.${unknown} is not a known key (owners, clients)`,
    );
  }
  const ownerKeys = keyList(`${path}.owners`, owners);
  if (ownerKeys.length === 0) {
    throw new TypeError(`Cannot read the names file: ${path}.owners must list at least one key`);
  }
  if (clients === undefined || clients === "any") return { owners: ownerKeys, clients: "any" };
  if (typeof clients === "string") {
    throw new TypeError(
      `Cannot read the names file: ${path}.clients must be "any" or a list of keys`,
    );
  }
  return { owners: ownerKeys, clients: keyList(`${path}.clients`, clients) };
}
