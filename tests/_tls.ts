/**
 * Helpers for the TLS and security tests: the TLS fixtures, a recording proxy
 * that terminates TLS (so a test can read what travels inside it), programs
 * run as subprocesses with their own permission flags, a TCP echo server, and
 * files and directories made by child processes (the test process itself has
 * no `--allow-write`).
 * @module
 */

import { fileURLToPath } from "node:url";
import { type InProcessDiscoverPoint, splitAddress, startDiscoverPoint } from "./_helpers.ts";

// ---- fixtures -------------------------------------------------------------------

/** The absolute path of a file in `tests/fixtures/`. */
export function fixturePath(name: string): string {
  return fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
}

/** The text of a file in `tests/fixtures/`. */
export function fixture(name: string): Promise<string> {
  return Deno.readTextFile(fixturePath(name));
}

/** A certificate and its key, as `DiscoverPoint`'s `tls` option takes them. */
export interface CertAndKey {
  readonly cert: string;
  readonly key: string;
}

/** `tests/fixtures/<name>.crt` and `<name>.key`. */
export async function certAndKey(name: string): Promise<CertAndKey> {
  const [cert, key] = await Promise.all([fixture(`${name}.crt`), fixture(`${name}.key`)]);
  return { cert, key };
}

/** How a test's peers reach its discover point: plain TCP, or TLS with the fixture CA. */
export type LinkKind = "tcp" | "tls";

/** Both link kinds, for tests that run over each. */
export const LINK_KINDS: readonly LinkKind[] = ["tcp", "tls"];

/** A discover point for one link kind, with what its peers dial and trust. */
export interface DiscoverPointOver extends InProcessDiscoverPoint {
  /** What peers pass as `dp`: `127.0.0.1:PORT`, or `tls://127.0.0.1:PORT`. */
  readonly dialed: string;
  /** What peers spread into `listen()`/`connect()` options: the fixture CA for TLS. */
  readonly trust: { caCerts?: string[] };
}

/** Starts an in-process discover point whose link port speaks `link` (TLS with `dp.crt`). */
export async function startDiscoverPointOver(
  link: LinkKind,
  options: Parameters<typeof startDiscoverPoint>[0] = {},
): Promise<DiscoverPointOver> {
  const tls = link === "tls";
  const running = await startDiscoverPoint(
    tls ? { tls: await certAndKey("dp"), ...options } : options,
  );
  return Object.assign(running, {
    dialed: tls ? `tls://127.0.0.1:${running.port}` : running.address,
    trust: tls ? { caCerts: [await fixture("ca.crt")] } : {},
  });
}

/** SHA-256 of `bytes` as hex. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  // digest() takes only ArrayBuffer-backed views; slice() makes one.
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes.slice()));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** `bytes` as a latin1 string: one character per byte, so byte patterns can be searched. */
export function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let offset = 0; offset < bytes.length; offset += 8192) {
    text += String.fromCharCode(...bytes.subarray(offset, offset + 8192));
  }
  return text;
}

// ---- a recording proxy that terminates TLS ---------------------------------------

/** One connection through {@linkcode TlsRecordingProxy}: both TLS sockets and the plaintext seen. */
export class TlsRecordedRoute {
  /** Resolves once both directions have ended. */
  readonly done: Promise<void>;
  readonly #downstream: Deno.TlsConn;
  readonly #upstream: Deno.TlsConn;
  readonly #chunks: Record<"up" | "down", Uint8Array[]> = { up: [], down: [] };
  #closed = false;

  constructor(downstream: Deno.TlsConn, upstream: Deno.TlsConn) {
    this.#downstream = downstream;
    this.#upstream = upstream;
    this.done = Promise.all([
      this.#pump(downstream, upstream, "up"),
      this.#pump(upstream, downstream, "down"),
    ]).then(() => this.close());
  }

  /** The plaintext forwarded so far in `direction` ("up": proxy's client to target), as latin1. */
  transcript(direction: "up" | "down"): string {
    return this.#chunks[direction].map(latin1).join("");
  }

  async #pump(from: Deno.TlsConn, to: Deno.TlsConn, direction: "up" | "down"): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (let n = await from.read(buffer); n !== null; n = await from.read(buffer)) {
        this.#chunks[direction].push(buffer.slice(0, n));
        for (let written = 0; written < n;) {
          written += await to.write(buffer.subarray(written, n));
        }
      }
      if (!this.#closed) await to.closeWrite();
    } catch {
      // A reset, or our own close: the route ends.
      this.close();
    }
  }

  /** Closes both sockets (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const conn of [this.#downstream, this.#upstream]) {
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }
  }
}

/**
 * A man in the middle the test controls: accepts TLS with `serve`'s certificate,
 * dials `target` over TLS trusting `caCerts`, and forwards the plaintext,
 * keeping a transcript of it. It shows what travels inside a TLS link.
 */
export class TlsRecordingProxy implements AsyncDisposable {
  /** Every route established so far, in order. */
  readonly routes: TlsRecordedRoute[] = [];
  readonly #listener: Deno.TlsListener;
  readonly #target: { hostname: string; port: number };
  readonly #caCerts: string[];
  readonly #loop: Promise<void>;
  readonly #dials = new Set<Promise<void>>();

  /** Listens on 127.0.0.1, port 0; `target` is `"host:port"` (its certificate must name `host`). */
  constructor(target: string, serve: CertAndKey, caCerts: string[]) {
    this.#target = splitAddress(target);
    this.#caCerts = caCerts;
    this.#listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...serve });
    this.#loop = this.#acceptAll();
  }

  /** `"127.0.0.1:<port>"`. */
  get address(): string {
    return `127.0.0.1:${this.#listener.addr.port}`;
  }

  async #acceptAll(): Promise<void> {
    for (;;) {
      let conn: Deno.TlsConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // Closed.
      }
      const dial = this.#dial(conn);
      this.#dials.add(dial);
      void dial.finally(() => this.#dials.delete(dial));
    }
  }

  async #dial(downstream: Deno.TlsConn): Promise<void> {
    let upstream: Deno.TlsConn;
    try {
      upstream = await Deno.connectTls({ ...this.#target, caCerts: this.#caCerts });
    } catch {
      downstream.close();
      return;
    }
    this.routes.push(new TlsRecordedRoute(downstream, upstream));
  }

  /** Stops listening, closes every route and waits for them to end. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#loop;
    while (this.#dials.size > 0) await Promise.all([...this.#dials]);
    for (const route of this.routes) route.close();
    await Promise.all(this.routes.map((route) => route.done));
  }
}
