/**
 * The gate every link and public-port connection of a discover point passes,
 * whatever transport brought it: limits on connections in all and per source
 * address and on handshakes per source address, then the name policy, with
 * the checking of proofs (and a throttle on failed ones). The discover point
 * asks; the gate decides, and says why when it refuses.
 * @module
 */

import { getLogger } from "../_log.ts";
import { type AuthRole, ED25519, verifyTranscript } from "../link/auth.ts";
import { FailureThrottle, SourceCounter } from "./limits.ts";
import type { NamePolicy } from "./policy.ts";
import { Feature } from "../link/link.ts";
import { type AlohaMessage, type AuthMessage, type ConnectMessage, Role } from "../wire/message.ts";

const logger = getLogger(["rtcp", "dp"]);

/** Options of {@linkcode Gate}. */
export interface GateOptions {
  /** Who may register and reach which names. */
  readonly names: NamePolicy;
  /** The discover point's Aloha `N`, bound into every proof. */
  readonly dpName: string;
  /** Most links and public-port connections open at once. */
  readonly maxLinks: number;
  /** The same per source address; 0 for no limit. */
  readonly maxLinksPerSource: number;
  /** Most links per source address still in their handshake; 0 for no limit. */
  readonly maxHandshakesPerSource: number;
  /** Why the registry cannot take one more link of `name` now (its limits), if it cannot. */
  readonly registryRefusal: (name: string) => string | undefined;
  /**
   * The cluster's key (`ed25519:…`): a relayed link that proves it speaks
   * for the client it carries (Connect `K` and `P`).
   */
  readonly clusterKey?: string | undefined;
  /** Called for every proof that does not hold (for the discover point's counters). */
  readonly onProofFailed?: (() => void) | undefined;
}

/** What the gate decided about a registration or a session. */
export interface Verdict {
  /** The key the peer proved, if any. */
  readonly key?: string | undefined;
  /** Why it is refused; absent when it may go ahead. */
  readonly refusal?: string | undefined;
  /** For a session relayed by a member of the cluster: the client's address as that member saw it. */
  readonly address?: string | undefined;
}

/** A link's Auth, with the nonce it must have signed. */
export interface Proof {
  /** The Auth message. */
  readonly auth: AuthMessage;
  /** The nonce sent in the discover point's Aloha. */
  readonly nonce: string;
}

/** Decides who comes in, who registers what, and who reaches what. */
export class Gate {
  readonly #options: GateOptions;
  /** Links and public-port connections open now. */
  #connections = 0;
  readonly #perSource: SourceCounter;
  readonly #handshakes: SourceCounter;
  readonly #failedProofs = new FailureThrottle();

  /** Creates the gate. */
  constructor(options: GateOptions) {
    this.#options = options;
    this.#perSource = new SourceCounter(options.maxLinksPerSource);
    this.#handshakes = new SourceCounter(options.maxHandshakesPerSource);
  }

  /**
   * Counts a new link or connection from `source`; {@linkcode leave} uncounts it.
   * @returns Why it cannot be taken, or `undefined` when it was counted.
   */
  enter(source: string): string | undefined {
    const { maxLinks, maxLinksPerSource } = this.#options;
    if (this.#connections >= maxLinks) {
      return `Too many links to this discover point (limit maxLinks = ${maxLinks}); try again later`;
    }
    if (!this.#perSource.add(source)) {
      return `Too many links from this address (limit maxLinksPerSource = ${maxLinksPerSource})`;
    }
    this.#connections++;
    return undefined;
  }

  /** A link or connection counted by {@linkcode enter} has ended. */
  leave(source: string): void {
    this.#connections--;
    this.#perSource.remove(source);
  }

  /**
   * Counts a handshake from `source`; {@linkcode endHandshake} uncounts it.
   * @returns Why it cannot start, or `undefined` when it was counted.
   */
  beginHandshake(source: string): string | undefined {
    if (this.#handshakes.add(source)) return undefined;
    return `Too many handshakes in flight from this address (limit maxHandshakesPerSource = ${this.#options.maxHandshakesPerSource})`;
  }

  /** A handshake counted by {@linkcode beginHandshake} is over. */
  endHandshake(source: string): void {
    this.#handshakes.remove(source);
  }

  /**
   * What the Aloha alone decides: a server that will send no proof is judged
   * here, at once, so a protected name is refused, never registered unproven.
   * @param agreed The extensions the link will have.
   * @returns Why the link is refused, or `undefined`.
   */
  alohaRefusal(aloha: AlohaMessage, agreed: readonly string[]): string | undefined {
    if (aloha.role !== Role.IndirectServer) return undefined;
    if (aloha.name === "") return "Cannot register an indirect server with an empty name";
    if (!agreed.includes(Feature.Auth)) {
      // An original-protocol server, or one that did not offer auth: no Auth will come.
      const refusal = this.#options.names.registration(aloha.name, undefined);
      if (refusal !== undefined) return refusal;
    }
    return this.#options.registryRefusal(aloha.name);
  }

  /**
   * Decides a server's registration once its proof (if `auth` was agreed) has come.
   * @param proof The link's Auth and nonce; `undefined` without `auth` (decided at the Aloha).
   */
  async registration(
    aloha: AlohaMessage,
    proof: Proof | undefined,
    source: string,
  ): Promise<Verdict> {
    if (proof === undefined) return {};
    const verdict = await this.#judge(
      "IS",
      aloha.name,
      aloha,
      proof,
      source,
      (key) => this.#options.names.registration(aloha.name, key),
    );
    // The pool may have filled while the proof was checked.
    return verdict.refusal === undefined
      ? { ...verdict, refusal: this.#options.registryRefusal(aloha.name) }
      : verdict;
  }

  /**
   * Decides a client's session to `connect.name`. A link relayed by another
   * discover point that proves the cluster key is judged as the client it
   * carries: the key and address in its Connect.
   * @param proof The link's Auth and nonce; `undefined` without `auth`.
   * @param relayed Whether the link agreed on `relay` (another discover point carries the session).
   */
  async connection(
    aloha: AlohaMessage,
    connect: ConnectMessage,
    proof: Proof | undefined,
    source: string,
    relayed = false,
  ): Promise<Verdict> {
    const name = connect.name;
    const policy = (key: string | undefined) => this.#options.names.connection(name, key);
    if (proof === undefined) return { refusal: policy(undefined) };
    const clusterKey = this.#options.clusterKey;
    if (relayed && clusterKey !== undefined && proof.auth.key !== "") {
      let key: string | undefined;
      try {
        key = await this.#provenKey("IC", name, aloha, proof, source);
      } catch (error) {
        return { refusal: (error as Error).message };
      }
      if (key === clusterKey) {
        return { key: connect.key, address: connect.address, refusal: policy(connect.key) };
      }
      return { key, refusal: policy(key) };
    }
    return await this.#judge("IC", name, aloha, proof, source, policy);
  }

  /** Checks the proof, then asks the policy; a proven key that the policy refuses counts as a failure. */
  async #judge(
    role: AuthRole,
    name: string,
    aloha: AlohaMessage,
    proof: Proof,
    source: string,
    policy: (key: string | undefined) => string | undefined,
  ): Promise<Verdict> {
    let key: string | undefined;
    try {
      key = await this.#provenKey(role, name, aloha, proof, source);
    } catch (error) {
      return { refusal: (error as Error).message };
    }
    const refusal = policy(key);
    if (refusal !== undefined && key !== undefined) this.#failedProofs.failed(source);
    return { key, refusal };
  }

  /**
   * Checks a proof. Failures count against the source's throttle, and the log
   * names the name, the role and the key, never the signature.
   * @returns The proven key (`ed25519:…`), or `undefined` for `"none"`.
   * @throws {TypeError} Saying why the proof does not hold.
   */
  async #provenKey(
    role: AuthRole,
    name: string,
    aloha: AlohaMessage,
    { auth, nonce }: Proof,
    source: string,
  ): Promise<string | undefined> {
    if (auth.method === "none") return undefined;
    if (!this.#failedProofs.allows(source)) {
      throw new TypeError(
        "Cannot check the proof: too many failed proofs from this address; try again in a minute",
      );
    }
    try {
      if (auth.method !== ED25519) {
        throw new TypeError(`method "${auth.method}" is not "${ED25519}" or "none"`);
      }
      return await verifyTranscript(auth.key, auth.signature, {
        role,
        name,
        nonce,
        dpName: this.#options.dpName,
        peerName: aloha.name,
      });
    } catch (error) {
      this.#failedProofs.failed(source);
      this.#options.onProofFailed?.();
      const key = `ed25519:${auth.key.slice(0, 64)}`;
      logger.warn("Failed proof for {name} as {role} from {source} with key {key}: {message}", {
        name,
        role,
        source,
        key,
        message: (error as Error).message,
      });
      throw new TypeError(
        `Cannot accept the proof of key ${key} for "${name}": ${(error as Error).message}`,
      );
    }
  }
}
