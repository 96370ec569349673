/**
 * The cluster registry on Deno KV: a local file, a KV Connect server, or
 * Deno Deploy's own KV. Entries carry their expiry and are refreshed while
 * held, so a discover point that dies without a word drops out by itself
 * within `ttl`. Wants (a client waiting at a member that cannot be dialled)
 * are polled: KV `watch()` does not cross processes on a local file.
 *
 * Keys, under the prefix (default `["rtcp"]`):
 * - `holds, NAME, INSTANCE` → `{ address?, key?, expires }`
 * - `wants, NAME, INSTANCE` → `{ expires }`
 * @module
 */

import { getLogger } from "../_log.ts";
import { sleep } from "../_backoff.ts";
import type { Holder, Membership, OnWanted, Registry, RegistryMember } from "./registry.ts";

const logger = getLogger(["rtcp", "registry"]);

/** Options of {@linkcode KvRegistry}. */
export interface KvRegistryOptions {
  /**
   * Milliseconds an entry lives unless refreshed (every third of it): how
   * long the names of a discover point that died without a word stay listed.
   * @default {10000}
   */
  ttl?: number;
  /** Milliseconds between looks for clients waiting at other members for our names. @default {250} */
  pollInterval?: number;
  /** Key prefix, so that clusters may share one store. @default {["rtcp"]} */
  prefix?: Deno.KvKey;
}

interface HoldValue {
  readonly address?: string;
  readonly key?: string;
  readonly expires: number;
}

/** Most mutations written in one atomic operation (Deno KV takes up to 1,000). */
const BATCH = 100;

/** Most wants read in one poll. */
const MAX_WANTS = 1000;

/** Tries at opening a store another process is creating, and the wait before the nth retry (× n). */
const OPEN_ATTEMPTS = 8;
const OPEN_RETRY_MS = 50;

/**
 * A {@linkcode Registry} on Deno KV. Needs `--unstable-kv` outside Deno Deploy
 * (this repository's `deno.json` turns it on).
 * @example
 * ```ts ignore
 * const registry = await KvRegistry.open("/var/lib/rtcp/registry.sqlite3");
 * const dp = new DiscoverPoint({ registry, advertise: "10.0.0.1:7000" });
 * ```
 */
export class KvRegistry implements Registry, AsyncDisposable {
  readonly #kv: Deno.Kv;
  readonly #owned: boolean;
  readonly #ttl: number;
  readonly #pollInterval: number;
  readonly #prefix: Deno.KvKey;

  /**
   * Uses an open store; {@linkcode close} leaves it open.
   * @param kv The store every discover point of the cluster shares.
   */
  constructor(kv: Deno.Kv, options: KvRegistryOptions = {}, owned = false) {
    this.#kv = kv;
    this.#owned = owned;
    this.#ttl = options.ttl ?? 10_000;
    this.#pollInterval = options.pollInterval ?? 250;
    this.#prefix = options.prefix ?? ["rtcp"];
    if (!(this.#ttl >= 1000)) {
      throw new RangeError(`Cannot use ttl ${this.#ttl}: expected ≥ 1000 ms`);
    }
    if (!(this.#pollInterval >= 10)) {
      throw new RangeError(`Cannot use pollInterval ${this.#pollInterval}: expected ≥ 10 ms`);
    }
  }

  /**
   * Opens a store and uses it; {@linkcode close} closes it.
   * @param location A file path, a KV Connect URL, or nothing for Deno Deploy's KV.
   * @throws {TypeError} If Deno KV is not enabled (run with `--unstable-kv`).
   */
  static async open(location?: string, options: KvRegistryOptions = {}): Promise<KvRegistry> {
    if (typeof Deno.openKv !== "function") {
      throw new TypeError(
        "Cannot open a KV registry: Deno KV is not enabled; run with --unstable-kv",
      );
    }
    // Several discover points starting at once on one new file: SQLite lets one create it and
    // tells the others the database is locked meanwhile. They try again, for a bounded time.
    for (let attempt = 1;; attempt++) {
      try {
        return new KvRegistry(await Deno.openKv(location), options, true);
      } catch (error) {
        const locked = /database is locked/i.test((error as Error).message);
        if (!locked || attempt >= OPEN_ATTEMPTS) throw error;
        await new Promise((resolve) => setTimeout(resolve, OPEN_RETRY_MS * attempt));
      }
    }
  }

  /** See {@linkcode Registry.join}. */
  join(self: RegistryMember, onWanted: OnWanted): Promise<Membership> {
    return Promise.resolve(
      new KvMembership(this.#kv, self, onWanted, {
        ttl: this.#ttl,
        pollInterval: this.#pollInterval,
        prefix: this.#prefix,
      }),
    );
  }

  /** Closes the store if {@linkcode open} opened it. */
  close(): void {
    if (this.#owned) this.#kv.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** One discover point's entries in the store, refreshed by one loop. */
class KvMembership implements Membership {
  readonly #kv: Deno.Kv;
  readonly #self: RegistryMember;
  readonly #onWanted: OnWanted;
  readonly #options: Required<KvRegistryOptions>;
  readonly #held = new Map<string, string | undefined>();
  readonly #wanted = new Set<string>();
  /** Writes go one after another, so a release never lands before its hold. */
  #writes: Promise<void> = Promise.resolve();
  readonly #stop = new AbortController();
  readonly #loop: Promise<void>;

  constructor(
    kv: Deno.Kv,
    self: RegistryMember,
    onWanted: OnWanted,
    options: Required<KvRegistryOptions>,
  ) {
    this.#kv = kv;
    this.#self = self;
    this.#onWanted = onWanted;
    this.#options = options;
    this.#loop = this.#run();
  }

  #key(kind: "holds" | "wants", name: string): Deno.KvKey {
    return [...this.#options.prefix, kind, name, this.#self.instance];
  }

  #holdValue(key: string | undefined): HoldValue {
    return {
      ...(this.#self.address === undefined ? {} : { address: this.#self.address }),
      ...(key === undefined ? {} : { key }),
      expires: Date.now() + this.#options.ttl,
    };
  }

  /** Queues a write; a failed one is logged (the next refresh tries again), never thrown. */
  #write(what: string, write: () => Promise<unknown>): void {
    this.#writes = this.#writes.then(write).then(
      () => {},
      (error) => {
        logger.warn("Cannot {what} in the registry: {message}", {
          what,
          message: (error as Error).message,
        });
      },
    );
  }

  hold(name: string, key: string | undefined): void {
    this.#held.set(name, key);
    this.#write(
      `record "${name}"`,
      () =>
        this.#kv.set(this.#key("holds", name), this.#holdValue(key), {
          expireIn: this.#options.ttl,
        }),
    );
  }

  release(name: string): void {
    this.#held.delete(name);
    this.#write(`drop "${name}"`, () => this.#kv.delete(this.#key("holds", name)));
  }

  async holders(name: string): Promise<Holder[]> {
    const now = Date.now();
    const holders: Holder[] = [];
    const entries = this.#kv.list<HoldValue>({ prefix: [...this.#options.prefix, "holds", name] });
    for await (const { key, value } of entries) {
      const instance = key.at(-1);
      // Expiry in KV is lazy: an entry past its time is gone, whatever the store says.
      if (typeof instance !== "string" || instance === this.#self.instance) continue;
      if (typeof value !== "object" || value === null || !(value.expires > now)) continue;
      holders.push({
        instance,
        ...(typeof value.address === "string" ? { address: value.address } : {}),
        ...(typeof value.key === "string" ? { key: value.key } : {}),
      });
    }
    return holders;
  }

  want(name: string): void {
    this.#wanted.add(name);
    this.#write(`record a wait for "${name}"`, () => this.#writeWant(name));
  }

  unwant(name: string): void {
    if (!this.#wanted.delete(name)) return;
    this.#write(`drop a wait for "${name}"`, () => this.#kv.delete(this.#key("wants", name)));
  }

  #writeWant(name: string): Promise<unknown> {
    return this.#kv.set(this.#key("wants", name), { expires: Date.now() + this.#options.ttl }, {
      expireIn: this.#options.ttl,
    });
  }

  /** Refreshes entries every third of `ttl`; while names are held, polls for wants. */
  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    let refreshAt = Date.now() + this.#options.ttl / 3;
    while (!signal.aborted) {
      await sleep(this.#options.pollInterval, signal);
      if (signal.aborted) return;
      if (Date.now() >= refreshAt) {
        refreshAt = Date.now() + this.#options.ttl / 3;
        this.#refresh();
        await this.#writes;
      }
      if (this.#held.size > 0) {
        try {
          await this.#pollWants();
        } catch (error) {
          logger.warn("Cannot read waits from the registry: {message}", {
            message: (error as Error).message,
          });
        }
      }
    }
  }

  #refresh(): void {
    const writes: [Deno.KvKey, unknown][] = [
      ...[...this.#held].map(([name, key]): [Deno.KvKey, unknown] => [
        this.#key("holds", name),
        this.#holdValue(key),
      ]),
      ...[...this.#wanted].map((name): [Deno.KvKey, unknown] => [
        this.#key("wants", name),
        { expires: Date.now() + this.#options.ttl },
      ]),
    ];
    for (let start = 0; start < writes.length; start += BATCH) {
      const batch = writes.slice(start, start + BATCH);
      this.#write("refresh entries", async () => {
        const atomic = this.#kv.atomic();
        for (const [key, value] of batch) atomic.set(key, value, { expireIn: this.#options.ttl });
        await atomic.commit();
      });
    }
  }

  async #pollWants(): Promise<void> {
    const now = Date.now();
    const told = new Set<string>();
    const wants = this.#kv.list<{ expires: number }>(
      { prefix: [...this.#options.prefix, "wants"] },
      { limit: MAX_WANTS },
    );
    for await (const { key, value } of wants) {
      const [name, instance] = key.slice(-2);
      if (typeof name !== "string" || instance === this.#self.instance || told.has(name)) continue;
      if (!this.#held.has(name) || !(value?.expires > now)) continue;
      told.add(name);
      this.#onWanted(name);
    }
  }

  async leave(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
    for (const name of [...this.#held.keys()]) this.release(name);
    for (const name of [...this.#wanted]) this.unwant(name);
    await this.#writes;
  }
}
