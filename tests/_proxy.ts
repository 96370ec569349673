/**
 * A controllable TCP proxy for resilience tests: it forwards each accepted
 * connection to a target, and a test can watch the bytes, cut a route (both
 * sockets closed at once), or blackhole it (bytes are read and dropped in both
 * directions while both sockets stay open, as when packets are lost).
 * @module
 */

import { splitAddress } from "./_helpers.ts";

/** `"up"`: from the proxy's client to the target; `"down"`: back. */
export type Direction = "up" | "down";

/** What {@linkcode ProxyRoute.waitFor} watches: one direction, or both (joined by `"\u0100"`). */
export type Watched = Direction | "either";

/** Options of {@linkcode TcpProxy}. */
export interface TcpProxyOptions {
  /** Keep a transcript of the bytes each route forwards, for {@linkcode ProxyRoute.waitFor}. @default {false} */
  record?: boolean;
}

interface Watcher {
  direction: Watched;
  predicate: (transcript: string) => boolean;
  resolve: () => void;
}

/** One proxied connection: the accepted socket and the one to the target. */
export class ProxyRoute {
  /** The connection the proxy accepted (its `remoteAddr` is the client's `localAddr`). */
  readonly downstream: Deno.TcpConn;
  /** The proxy's connection to the target. */
  readonly upstream: Deno.TcpConn;
  /** Resolves once both sockets are closed. */
  readonly done: Promise<void>;
  readonly #record: boolean;
  readonly #transcript: Record<Direction, string> = { up: "", down: "" };
  readonly #watchers = new Set<Watcher>();
  #blackholed = false;
  #closed = false;

  /** Starts forwarding between the two sockets. */
  constructor(downstream: Deno.TcpConn, upstream: Deno.TcpConn, record: boolean) {
    this.downstream = downstream;
    this.upstream = upstream;
    this.#record = record;
    this.done = this.#run();
  }

  /** The client's port as the proxy sees it: matches the client link's `localAddr.port`. */
  get clientPort(): number {
    return this.downstream.remoteAddr.port;
  }

  /** Whether the route has been blackholed. */
  get blackholed(): boolean {
    return this.#blackholed;
  }

  /**
   * Everything forwarded in `direction` so far (latin1), when recording; for
   * `"either"`, both directions joined by `"\u0100"`, which no byte decodes to.
   */
  transcript(direction: Watched): string {
    if (direction === "either") return `${this.#transcript.up}\u0100${this.#transcript.down}`;
    return this.#transcript[direction];
  }

  /** Stops forwarding in both directions; the sockets stay open and their bytes are dropped. */
  blackhole(): void {
    this.#blackholed = true;
  }

  /** Closes both sockets at once, without passing anything on. */
  cut(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const conn of [this.downstream, this.upstream]) {
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }
    for (const watcher of this.#watchers) watcher.resolve();
    this.#watchers.clear();
  }

  /**
   * Resolves once the transcript of `direction` satisfies `predicate` (needs
   * `record`). Also resolves when the route is cut, so a caller never hangs on
   * a dead route; check the transcript again if that matters.
   */
  waitFor(direction: Watched, predicate: (transcript: string) => boolean): Promise<void> {
    if (!this.#record) throw new Error("Cannot wait for bytes: the proxy does not record");
    if (this.#closed || predicate(this.transcript(direction))) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#watchers.add({ direction, predicate, resolve });
    return promise;
  }

  /** Counts occurrences of `text` forwarded in `direction`. */
  count(direction: Watched, text: string): number {
    return this.transcript(direction).split(text).length - 1;
  }

  async #run(): Promise<void> {
    await Promise.all([
      this.#pump(this.downstream, this.upstream, "up"),
      this.#pump(this.upstream, this.downstream, "down"),
    ]);
    this.cut();
  }

  async #pump(from: Deno.TcpConn, to: Deno.TcpConn, direction: Direction): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const count = await from.read(buffer);
        if (count === null) break;
        if (this.#blackholed) continue;
        const chunk = buffer.subarray(0, count);
        if (this.#record) this.#observe(direction, chunk);
        for (let written = 0; written < count;) written += await to.write(chunk.subarray(written));
      }
      // A blackholed route passes nothing on, not even the end of the stream.
      if (this.#blackholed || this.#closed) return;
      await to.closeWrite();
    } catch {
      // A reset (or our own cut) on either socket: the route ends abruptly, as a lost link does.
      if (!this.#blackholed) this.cut();
    }
  }

  #observe(direction: Direction, chunk: Uint8Array): void {
    let text = "";
    for (const byte of chunk) text += String.fromCharCode(byte);
    this.#transcript[direction] += text;
    for (const watcher of this.#watchers) {
      if (watcher.direction !== direction && watcher.direction !== "either") continue;
      if (watcher.predicate(this.transcript(watcher.direction))) {
        this.#watchers.delete(watcher);
        watcher.resolve();
      }
    }
  }
}

/** A TCP proxy on 127.0.0.1, port 0, forwarding to `target`. */
export class TcpProxy implements AsyncDisposable {
  /** Every route established so far, in order. */
  readonly routes: ProxyRoute[] = [];
  readonly #target: { hostname: string; port: number };
  readonly #record: boolean;
  readonly #listener: Deno.TcpListener;
  readonly #loop: Promise<void>;
  readonly #dials = new Set<Promise<void>>();
  readonly #unclaimed: ProxyRoute[] = [];
  readonly #waiters: ((route: ProxyRoute) => void)[] = [];

  /** Starts listening; `target` is `"host:port"`. */
  constructor(target: string, options: TcpProxyOptions = {}) {
    this.#target = splitAddress(target);
    this.#record = options.record ?? false;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#loop = this.#acceptAll();
  }

  /** `"127.0.0.1:<port>"`. */
  get address(): string {
    return `127.0.0.1:${this.#listener.addr.port}`;
  }

  /** The next route to reach the target, in order; one not yet claimed resolves at once. */
  nextRoute(): Promise<ProxyRoute> {
    const route = this.#unclaimed.shift();
    if (route) return Promise.resolve(route);
    const { promise, resolve } = Promise.withResolvers<ProxyRoute>();
    this.#waiters.push(resolve);
    return promise;
  }

  /** Blackholes every route established so far (new routes forward normally). */
  blackhole(): void {
    for (const route of this.routes) route.blackhole();
  }

  async #acceptAll(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // The proxy was closed.
      }
      const dial = this.#dial(conn);
      this.#dials.add(dial);
      void dial.finally(() => this.#dials.delete(dial));
    }
  }

  async #dial(downstream: Deno.TcpConn): Promise<void> {
    let upstream: Deno.TcpConn;
    try {
      upstream = await Deno.connect(this.#target);
    } catch {
      // Nothing listens there (yet): the client sees its connection end, as if refused.
      downstream.close();
      return;
    }
    downstream.setNoDelay(true);
    upstream.setNoDelay(true);
    const route = new ProxyRoute(downstream, upstream, this.#record);
    this.routes.push(route);
    const waiter = this.#waiters.shift();
    if (waiter) waiter(route);
    else this.#unclaimed.push(route);
  }

  /** Stops listening, cuts every route and waits for them to finish. */
  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // Closed already.
    }
    await this.#loop;
    while (this.#dials.size > 0) await Promise.all([...this.#dials]);
    for (const route of this.routes) route.cut();
    await Promise.all(this.routes.map((route) => route.done));
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
