/**
 * Helpers for the `auth` tests: a raw protocol peer that offers `auth`, reads
 * the discover point's nonce and sends hand-made Auth messages; a names
 * policy builder; an echoing keyed server that records what `admit` saw; and
 * a proxy that strips `F` from the first Aloha of each link (a downgrade).
 * @module
 */

import assert from "node:assert/strict";
import {
  type Identity,
  type IndirectConn,
  type IndirectListener,
  listen,
  NamesFile,
  type SessionRequest,
} from "../mod.ts";
import { signTranscript, type TranscriptFields } from "../lib/link/auth.ts";
import {
  RawListener,
  type RawMessage,
  RawPeer,
  type RunningDiscoverPoint,
  settlesWithin,
} from "./_helpers.ts";

/** Aloha `R` of an indirect server and client. */
const ROLE_NUMBER = { IS: 2, IC: 3 } as const;

/** The body of an Auth message (type 9) as it goes on the wire. */
export interface AuthBody {
  /** The method: `"ed25519"`, `"none"`, or anything a test wants to try. */
  M: string;
  /** Base64 of the raw public key. */
  K?: string;
  /** Base64 of the signature. */
  S?: string;
}

/** Base64 of the 32 raw bytes of `identity`'s public key: an Auth message's `K`. */
export function rawKey(identity: Identity): string {
  return identity.publicKey.slice("ed25519:".length);
}

/** A names policy: each name's owner keys and (optionally) its client keys. */
export function ownedNames(
  rules: Record<string, { owners: Identity[]; clients?: "any" | Identity[] }>,
  unlisted: "open" | "refuse" = "open",
): NamesFile {
  return new NamesFile(
    new Map(
      Object.entries(rules).map(([name, rule]) => [name, {
        owners: rule.owners.map((owner) => owner.publicKey),
        clients: rule.clients === undefined || rule.clients === "any"
          ? "any" as const
          : rule.clients.map((client) => client.publicKey),
      }]),
    ),
    unlisted,
  );
}

/**
 * A hand-driven peer that offers `auth` in its Aloha: it keeps the discover
 * point's answer and nonce, and signs or sends whatever Auth a test asks for.
 */
export class AuthPeer implements Disposable {
  /** The raw link. */
  readonly peer: RawPeer;
  /** `"IS"` or `"IC"`. */
  readonly role: "IS" | "IC";
  /** The peer's own Aloha `N`. */
  readonly name: string;
  /** The discover point's Aloha answer. */
  readonly answer: RawMessage;

  private constructor(peer: RawPeer, role: "IS" | "IC", name: string, answer: RawMessage) {
    this.peer = peer;
    this.role = role;
    this.name = name;
    this.answer = answer;
  }

  /**
   * Opens a link, sends an Aloha offering `features` (`auth` only, by
   * default, so everything after it stays in text form) and checks that the
   * discover point agreed on `auth` and sent a nonce.
   */
  static async open(
    address: string,
    role: "IS" | "IC",
    name: string,
    features: readonly string[] = ["auth"],
  ): Promise<AuthPeer> {
    const peer = await RawPeer.connect(address);
    try {
      await peer.sendMessage(0, { V: 10000, R: ROLE_NUMBER[role], N: name, F: features });
      const answer = await peer.expect();
      assert.equal(answer.type, 0, `expected the DP's Aloha, got ${Deno.inspect(answer)}`);
      assert.equal(answer.body.R, 4, `expected the DP's Aloha, got ${Deno.inspect(answer.body)}`);
      assert.ok(answer.body.F.includes("auth"), `auth not agreed: ${Deno.inspect(answer.body)}`);
      assert.equal(typeof answer.body.A, "string", "the DP's Aloha has no nonce (A)");
      return new AuthPeer(peer, role, name, answer);
    } catch (error) {
      peer.close();
      throw error;
    }
  }

  /** The link's nonce (`A` of the discover point's Aloha). */
  get nonce(): string {
    return this.answer.body.A;
  }

  /** The discover point's Aloha `N`. */
  get dpName(): string {
    return this.answer.body.N;
  }

  /**
   * The transcript fields this link should sign: for a server its own name,
   * for a client `target`; any field can be overridden to forge a bad proof.
   */
  fields(overrides: Partial<TranscriptFields> = {}): TranscriptFields {
    return {
      role: this.role,
      name: this.name,
      nonce: this.nonce,
      dpName: this.dpName,
      peerName: this.name,
      ...overrides,
    };
  }

  /** Signs this link's transcript (with `overrides`) as `identity`; does not send it. */
  async sign(
    identity: Identity,
    overrides: Partial<TranscriptFields> = {},
  ): Promise<AuthBody> {
    const { key, signature } = await signTranscript(identity, this.fields(overrides));
    return { M: "ed25519", K: key, S: signature };
  }

  /** Sends an Auth message (type 9) with `body` exactly as given. */
  sendAuth(body: AuthBody | Record<string, unknown>): Promise<void> {
    return this.peer.sendMessage(9, body);
  }

  /** Signs and sends a proof as `identity`; returns what was sent (to replay it elsewhere). */
  async prove(identity: Identity, overrides: Partial<TranscriptFields> = {}): Promise<AuthBody> {
    const body = await this.sign(identity, overrides);
    await this.sendAuth(body);
    return body;
  }

  /** Sends Connect to `target` (an indirect client's request). */
  connectTo(target: string): Promise<void> {
    return this.peer.sendMessage(1, { N: target });
  }

  /** Reads the discover point's Accepted (type 10) and returns its `R`. */
  async verdict(): Promise<string> {
    const message = await settlesWithin(this.peer.expect(), "the DP's Accepted");
    assert.equal(message.type, 10, `expected Accepted, got ${Deno.inspect(message)}`);
    assert.equal(typeof message.body.R, "string");
    return message.body.R;
  }

  /**
   * Reads a refused registration to its end: exactly one Accepted with a
   * reason, then the link closes. Returns the reason.
   */
  async refusedRegistration(): Promise<string> {
    const seen = await settlesWithin(this.peer.untilEnd(), "the DP to refuse and close the link");
    assert.equal(seen.length, 1, `expected one Accepted, got ${Deno.inspect(seen)}`);
    assert.equal(seen[0]!.type, 10, `expected Accepted, got ${Deno.inspect(seen[0])}`);
    assert.notEqual(seen[0]!.body.R, "", "the registration was accepted");
    return seen[0]!.body.R;
  }

  /** Reads an indirect client's refusal: an Ack `X` = -1 and the link's end. Returns `R`. */
  async refusedSession(): Promise<string> {
    return await refusedSessionOf(this.peer);
  }

  /** Closes the link. */
  [Symbol.dispose](): void {
    this.peer.close();
  }
}

/** Reads a raw link to its end; it must carry exactly one Aloha `R` = 5. Returns its `N`. */
export async function alohaRefusalOf(peer: RawPeer): Promise<string> {
  const seen = await settlesWithin(peer.untilEnd(), "the DP to refuse and close the link");
  assert.equal(seen.length, 1, `expected one Aloha R=5, got ${Deno.inspect(seen)}`);
  assert.equal(seen[0]!.type, 0);
  assert.equal(seen[0]!.body.R, 5, `expected Aloha R=5, got ${Deno.inspect(seen[0])}`);
  return seen[0]!.body.N;
}

/** Reads a raw client link to its end; it must carry one Ack `X` = -1. Returns its `R`. */
export async function refusedSessionOf(peer: RawPeer): Promise<string> {
  const seen = await settlesWithin(peer.untilEnd(), "the DP to refuse the session");
  assert.equal(seen.length, 1, `expected one Ack X=-1, got ${Deno.inspect(seen)}`);
  assert.equal(seen[0]!.type, 2, `expected Ack, got ${Deno.inspect(seen[0])}`);
  assert.equal(seen[0]!.body.X, -1, `expected a refusal, got ${Deno.inspect(seen[0])}`);
  return seen[0]!.body.R;
}

/** An echoing indirect server that records every `SessionRequest` its `admit` saw. */
export interface EchoOwner extends AsyncDisposable {
  /** The listener. */
  readonly listener: IndirectListener;
  /** What `admit` was shown, in arrival order. */
  readonly requests: SessionRequest[];
  /** How many sessions it accepted. */
  readonly accepted: () => number;
}

/**
 * Registers `name` with `key` (or none), waits for `ready`, and echoes every
 * session until disposed.
 */
export async function startEchoOwner(
  dp: RunningDiscoverPoint,
  name: string,
  key: Identity | undefined,
  options: { pool?: number } = {},
): Promise<EchoOwner> {
  const requests: SessionRequest[] = [];
  const listener = listen({
    dp: dp.address,
    name,
    ...(key === undefined ? {} : { key }),
    ...options,
    reconnect: false,
    admit: (request) => void requests.push(request),
  });
  try {
    await settlesWithin(listener.ready, `"${name}" to register`);
  } catch (error) {
    listener.close();
    throw error;
  }
  let count = 0;
  const conns: IndirectConn[] = [];
  const sessions: Promise<void>[] = [];
  const serving = (async () => {
    // A listener that fails later ends here quietly: the test sees it when its sessions stop.
    for await (const conn of listener) {
      count++;
      conns.push(conn);
      sessions.push(
        conn.readable.pipeTo(conn.writable).catch(() => {
          // The client may end the session while an echo is in flight.
        }).finally(() => {
          try {
            conn.close();
          } catch {
            // Already closed by the pipe.
          }
        }),
      );
    }
  })().catch(() => {});
  return {
    listener,
    requests,
    accepted: () => count,
    async [Symbol.asyncDispose]() {
      listener.close();
      await serving;
      // Ends sessions a client left open too (a failed assertion may skip its close).
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await Promise.all(sessions);
    },
  };
}

/**
 * A proxy in front of a discover point that removes `F` from the first
 * message of every link (what a downgrading middlebox would do) and relays
 * every other line unchanged, in both directions. Lines only: with `F` gone,
 * no extension (so no binary frame) can be agreed.
 */
export class StrippingProxy implements AsyncDisposable {
  readonly #listener = new RawListener();
  readonly #target: string;
  readonly #routes = new Set<Promise<void>>();
  readonly #peers = new Set<RawPeer>();
  readonly #loop: Promise<void>;
  /** The first message of each link as the proxy forwarded it, F removed. */
  readonly forwarded: Record<string, unknown>[] = [];

  /** Starts accepting links for `target` (`"host:port"`). */
  constructor(target: string) {
    this.#target = target;
    this.#loop = this.#acceptAll();
  }

  /** `"127.0.0.1:<port>"`. */
  get address(): string {
    return this.#listener.address;
  }

  async #acceptAll(): Promise<void> {
    for (;;) {
      let downstream: RawPeer;
      try {
        downstream = await this.#listener.accept();
      } catch (error) {
        if (error instanceof Deno.errors.BadResource) return;
        throw error;
      }
      const route = this.#relay(downstream);
      this.#routes.add(route);
      void route.finally(() => this.#routes.delete(route));
    }
  }

  async #relay(downstream: RawPeer): Promise<void> {
    this.#peers.add(downstream);
    let upstream: RawPeer | undefined;
    try {
      upstream = await RawPeer.connect(this.#target);
      this.#peers.add(upstream);
      const typeLine = await downstream.nextLine();
      const bodyLine = await downstream.nextLine();
      if (typeLine === null || bodyLine === null) return;
      const { F: _stripped, ...body } = JSON.parse(bodyLine);
      this.forwarded.push(body);
      await upstream.send(`${typeLine}\n${JSON.stringify(body)}\n`);
      await Promise.all([pump(downstream, upstream), pump(upstream, downstream)]);
    } finally {
      downstream.close();
      upstream?.close();
    }
  }

  /** Stops accepting, cuts every route and waits for them to end. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener[Symbol.dispose]();
    await this.#loop;
    for (const peer of this.#peers) peer.close();
    await Promise.all(this.#routes);
  }
}

/** Relays lines from `from` to `to` until `from` ends, then closes `to`. */
async function pump(from: RawPeer, to: RawPeer): Promise<void> {
  try {
    for (let line = await from.nextLine(); line !== null; line = await from.nextLine()) {
      await to.send(`${line}\n`);
    }
  } catch {
    // Either side closed under us: the route is over.
  } finally {
    to.close();
  }
}
