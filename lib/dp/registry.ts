/**
 * The cluster's registry: which discover point holds links for which name.
 * A discover point keeps its own links in memory; the registry is what the
 * others learn from it, so a client that enters at any discover point of a
 * cluster reaches a server registered at any other. Two implementations:
 * {@linkcode MemoryRegistry} (one process: a single discover point, or
 * several in tests) and `KvRegistry` (Deno KV, across processes and on
 * Deno Deploy).
 * @module
 */

/** A discover point of the cluster, as it joins the registry. */
export interface RegistryMember {
  /** Unique per run of a discover point: a restarted one is a new member. */
  readonly instance: string;
  /**
   * How the other discover points dial this one (its `advertise` address),
   * absent when it cannot be dialled (an instance on Deno Deploy).
   */
  readonly address?: string | undefined;
}

/** A discover point that holds links for a name. */
export interface Holder extends RegistryMember {
  /** The key the name's links proved there, if any. */
  readonly key?: string | undefined;
}

/** What a discover point does in the registry while it is a member. */
export interface Membership {
  /** Records that this discover point holds links for `name`; kept fresh until {@linkcode release}. */
  hold(name: string, key: string | undefined): void;
  /** This discover point no longer holds links for `name`. */
  release(name: string): void;
  /** The other members that hold `name` now. */
  holders(name: string): Promise<Holder[]>;
  /**
   * Records that a client waits here for `name`, which only undialable
   * members hold: they are told (their `onWanted`) until {@linkcode unwant}.
   */
  want(name: string): void;
  /** No client waits here for `name` any more. */
  unwant(name: string): void;
  /** Leaves the registry: this member's entries go at once. */
  leave(): Promise<void>;
}

/** Called on a member when a client waits elsewhere for a name it holds. */
export type OnWanted = (name: string) => void;

/** Where the discover points of a cluster record which of them holds which name. */
export interface Registry {
  /**
   * Joins as `self`.
   * @param onWanted Called, repeatedly while it lasts, when another member
   * waits for a link of a name this one holds: ask the name's server for one more link.
   */
  join(self: RegistryMember, onWanted: OnWanted): Promise<Membership>;
}

interface MemoryMember {
  readonly self: RegistryMember;
  readonly held: Map<string, string | undefined>;
  readonly wanted: Set<string>;
  readonly onWanted: OnWanted;
}

/** Options of {@linkcode MemoryRegistry}. */
export interface MemoryRegistryOptions {
  /** Milliseconds between two tellings of the holders of a name that a member waits for it. @default {250} */
  wantInterval?: number;
}

/**
 * A registry in this process's memory: the default, where a discover point
 * is a cluster of one. Several discover points in one process may share it.
 */
export class MemoryRegistry implements Registry {
  readonly #members = new Set<MemoryMember>();
  readonly #wantInterval: number;
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Creates an empty registry. */
  constructor(options: MemoryRegistryOptions = {}) {
    this.#wantInterval = options.wantInterval ?? 250;
  }

  /** Tells the holders of every wanted name, now and then while a want lasts. */
  #tellHolders(): void {
    let wants = 0;
    for (const member of this.#members) {
      for (const name of member.wanted) {
        wants++;
        for (const other of this.#members) {
          if (other !== member && other.held.has(name)) other.onWanted(name);
        }
      }
    }
    if (wants === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    } else {
      this.#timer ??= setInterval(() => this.#tellHolders(), this.#wantInterval);
    }
  }

  /** See {@linkcode Registry.join}. */
  join(self: RegistryMember, onWanted: OnWanted): Promise<Membership> {
    const member: MemoryMember = { self, held: new Map(), wanted: new Set(), onWanted };
    this.#members.add(member);
    const others = () => [...this.#members].filter((other) => other !== member);
    return Promise.resolve({
      hold: (name, key) => void member.held.set(name, key),
      release: (name) => void member.held.delete(name),
      holders: (name) =>
        Promise.resolve(
          others().filter((other) => other.held.has(name)).map((other) => ({
            ...other.self,
            key: other.held.get(name),
          })),
        ),
      want: (name) => {
        member.wanted.add(name);
        this.#tellHolders();
      },
      unwant: (name) => {
        member.wanted.delete(name);
        if (member.wanted.size === 0) this.#tellHolders();
      },
      leave: () => {
        this.#members.delete(member);
        this.#tellHolders();
        return Promise.resolve();
      },
    });
  }
}

/** A fresh instance id: 16 hex digits. */
export function newInstanceId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
