/**
 * What a discover point counts for its operator: refusals by reason, failed
 * handshakes and proofs, sessions carried between discover points, and each
 * name's sessions and bytes. Counters only grow; the hot path adds to a
 * field of an object it already holds (a {@linkcode ByteMeter} per name and
 * direction), never looks anything up.
 *
 * Names are chosen by peers, so how many get counters of their own is
 * capped: past the cap, a name no link holds any more hands its counts to
 * `_other` and makes room; when every counted name is in use, a new name
 * counts under `_other` from the start. The sum over all names never drops.
 * @module
 */

import { ByteMeter } from "./pipe.ts";

/** Why a session was refused, in a few classes (never the reason's text: that is for logs). */
export const REFUSAL_REASONS = [
  /** No link holds the name, here or anywhere in the cluster. */
  "no_server",
  /** A limit on sessions or waiting Connects (`maxSessions`, `maxSessionsPerServer`, …, or links at a public port). */
  "limit",
  /** The bytes waiting in sessions reached `maxBufferedBytes`. */
  "buffer",
  /** The names file does not admit the client, or its proof did not hold. */
  "policy",
  /** The indirect server answered the Connect with a refusal. */
  "server_refused",
  /** No answer from the server (or no link for the name arrived) within `ackTimeout`. */
  "ack_timeout",
  /** The server's link ended while the Connect waited. */
  "link_lost",
  /** The cluster registry could not be read, or the discover points holding the name did not answer. */
  "cluster",
  /** The discover point is shutting down. */
  "shutting_down",
] as const;

/** One of {@linkcode REFUSAL_REASONS}. */
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** The name whose counters stand for every name past the cap. */
export const OTHER_NAMES = "_other";

/** How many names get counters of their own unless told otherwise. */
export const DEFAULT_MAX_COUNTED_NAMES = 1000;

/** One name's counters. */
export class NameTraffic {
  /** The name, or {@linkcode OTHER_NAMES}. */
  readonly name: string;
  /** Bytes delivered from clients to the name's servers. */
  readonly toServer: ByteMeter = new ByteMeter();
  /** Bytes delivered from the name's servers to clients. */
  readonly toClient: ByteMeter = new ByteMeter();
  /** Sessions opened. */
  sessions = 0;
  /** Server links counting into this record now; one with none can make room for another name. */
  users = 0;

  /** Creates zeroed counters for `name`. */
  constructor(name: string) {
    this.name = name;
  }

  /** Adds another record's counts to this one (the other name is no longer counted on its own). */
  absorb(other: NameTraffic): void {
    this.toServer.bytes += other.toServer.bytes;
    this.toClient.bytes += other.toClient.bytes;
    this.sessions += other.sessions;
  }
}

/** A discover point's counters. */
export class Counters {
  /** Sessions refused, by reason. */
  readonly refusals: Record<RefusalReason, number> = Object.fromEntries(
    REFUSAL_REASONS.map((reason) => [reason, 0]),
  ) as Record<RefusalReason, number>;
  /** Links (and TLS connections) that ended before their handshake was done. */
  handshakesFailed = 0;
  /** Proofs of a key that did not hold. */
  proofsFailed = 0;
  /** Sessions carried to another discover point of the cluster. */
  forwardedSessions = 0;
  /** Sessions another discover point of the cluster carried here. */
  relayedSessions = 0;
  readonly #names = new Map<string, NameTraffic>();
  readonly #other = new NameTraffic(OTHER_NAMES);
  readonly #maxNames: number;

  /** @param maxNames How many names get counters of their own; the rest count under `_other`. */
  constructor(maxNames: number = DEFAULT_MAX_COUNTED_NAMES) {
    this.#maxNames = maxNames;
  }

  /** Counts a refused session. */
  refused(reason: RefusalReason): void {
    this.refusals[reason]++;
  }

  /**
   * The counters a new server link of `name` adds to, until {@linkcode release}.
   * Past the cap (and for a name spelt `_other`) this is `_other`'s record.
   */
  acquire(name: string): NameTraffic {
    let traffic = this.#names.get(name);
    if (traffic === undefined) {
      // A name spelt `_other` counts there too: one series per label, always.
      if (name === OTHER_NAMES || (this.#names.size >= this.#maxNames && !this.#makeRoom())) {
        this.#other.users++;
        return this.#other;
      }
      traffic = new NameTraffic(name);
      this.#names.set(name, traffic);
    }
    traffic.users++;
    return traffic;
  }

  /** A server link that {@linkcode acquire}d `traffic` has ended. */
  release(traffic: NameTraffic): void {
    traffic.users--;
  }

  /** Hands the oldest unused name's counts to `_other`; whether one was found. */
  #makeRoom(): boolean {
    for (const [name, traffic] of this.#names) {
      if (traffic.users > 0) continue;
      this.#other.absorb(traffic);
      this.#names.delete(name);
      return true;
    }
    return false;
  }

  /** Every counted name's record, then `_other`'s. */
  *traffic(): Generator<NameTraffic> {
    yield* this.#names.values();
    yield this.#other;
  }
}
