/**
 * A discover point's admin endpoint over HTTP, for `Deno.serve`:
 *
 * - `metrics`: the Prometheus text exposition of {@linkcode DiscoverPoint.metrics};
 * - `status`: {@linkcode DiscoverPoint.status} as JSON, with `?history=1`
 *   the last minutes' samples too;
 * - the mount path itself (`/`, or `/admin/`…): the live status page, one
 *   self-contained HTML document that polls `status`.
 *
 * With a token, `metrics` and `status` answer 401 to a request without
 * `Authorization: Bearer TOKEN`; the page (static, no data) asks for the
 * token and sends it. Without one, they answer only requests addressed to an
 * IP address or `localhost` (not to a host name, which DNS rebinding could
 * point at a loopback endpoint). Memory stays bounded however long it runs: the
 * history is a ring of fixed size, and nothing is kept per request.
 * @module
 */

import type { DiscoverPoint } from "./discover_point.ts";
import { PROMETHEUS_CONTENT_TYPE, prometheusText } from "./prometheus.ts";
import { TokenCheck, type TokenVerdict } from "./admin_token.ts";
import { statusPage } from "./status_page.ts";

/** Options of {@linkcode AdminEndpoint.create}. */
export interface AdminOptions {
  /**
   * The bearer token `metrics` and `status` require (16 to 1024 printable
   * characters); none for an endpoint only trusted hosts can reach (loopback).
   */
  token?: string;
  /** The path the endpoint is mounted at, ending with `/`. @default {"/"} */
  path?: string;
  /** Milliseconds between two history samples. @default {2000} */
  sampleInterval?: number;
  /** Samples kept (the chart's width: 180 of 2 s is 6 minutes). @default {180} */
  historySize?: number;
}

/** One history sample: the totals at one moment. */
export interface AdminSample {
  /** When (`Date.now()`). */
  readonly time: number;
  /** Bytes delivered from clients to servers since the start. */
  readonly bytesToServer: number;
  /** Bytes delivered from servers to clients since the start. */
  readonly bytesToClient: number;
  /** Sessions open. */
  readonly sessions: number;
}

/** What the endpoint reads: a discover point, or anything that reports like one. */
export type AdminSource = Pick<DiscoverPoint, "metrics" | "status">;

const NO_STORE = { "cache-control": "no-store", "x-content-type-options": "nosniff" };

function text(status: number, body: string, headers: Record<string, string> = {}): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...NO_STORE, ...headers },
  });
}

function unauthorized(verdict: Exclude<TokenVerdict, "ok">): Response {
  const message = verdict === "missing"
    ? "Unauthorized: this admin endpoint needs the header Authorization: Bearer TOKEN, with the token in the discover point's --admin-token-file (RTCP_ADMIN_TOKEN on Deno Deploy)\n"
    : "Unauthorized: wrong token; use the one in the discover point's --admin-token-file (RTCP_ADMIN_TOKEN on Deno Deploy)\n";
  return text(401, message, { "www-authenticate": 'Bearer realm="rtcp-dp"' });
}

/**
 * Whether a request was addressed to an IP address or `localhost`: without a
 * token, data is served only to those, so that a web page on a name that an
 * attacker points at 127.0.0.1 (DNS rebinding) cannot read it.
 */
function addressedByIp(url: URL): boolean {
  const host = url.hostname;
  return host === "localhost" || host.startsWith("[") || /^\d{1,3}(\.\d{1,3}){3}$/.test(host);
}

/** A random nonce for the page's Content-Security-Policy. */
function nonce(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes));
}

/**
 * The admin endpoint of one discover point: `fetch` is the handler. Call
 * {@linkcode close} (or dispose it) when done: it samples on a timer.
 * @example
 * ```ts ignore
 * const admin = await AdminEndpoint.create(dp, { token });
 * Deno.serve({ hostname: "127.0.0.1", port: 9000 }, admin.fetch);
 * ```
 */
export class AdminEndpoint implements Disposable {
  readonly #source: AdminSource;
  readonly #check: TokenCheck | undefined;
  readonly #path: string;
  readonly #history: (AdminSample | undefined)[];
  #next = 0;
  readonly #timer: ReturnType<typeof setInterval>;

  private constructor(source: AdminSource, check: TokenCheck | undefined, options: AdminOptions) {
    this.#source = source;
    this.#check = check;
    this.#path = options.path ?? "/";
    this.#history = new Array(options.historySize ?? 180);
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), options.sampleInterval ?? 2000);
    Deno.unrefTimer(this.#timer);
  }

  /**
   * Makes the endpoint of `source`.
   * @throws {TypeError} If the token or the path cannot be used.
   */
  static async create(source: AdminSource, options: AdminOptions = {}): Promise<AdminEndpoint> {
    const path = options.path ?? "/";
    if (!path.startsWith("/") || !path.endsWith("/")) {
      throw new TypeError(`Cannot mount the admin endpoint at "${path}": expected /…/`);
    }
    const size = options.historySize ?? 180;
    if (!Number.isSafeInteger(size) || size < 2) {
      throw new TypeError(
        `Cannot keep ${size} history samples: expected a whole number of at least 2`,
      );
    }
    const check = options.token === undefined ? undefined : await TokenCheck.create(options.token);
    return new AdminEndpoint(source, check, options);
  }

  /** The samples kept, oldest first. */
  get history(): AdminSample[] {
    const size = this.#history.length;
    const samples: AdminSample[] = [];
    for (let i = 0; i < size; i++) {
      const sample = this.#history[(this.#next + i) % size];
      if (sample !== undefined) samples.push(sample);
    }
    return samples;
  }

  #sample(): void {
    const { time, bytesToServer, bytesToClient, sessions } = this.#source.metrics();
    this.#history[this.#next] = { time, bytesToServer, bytesToClient, sessions };
    this.#next = (this.#next + 1) % this.#history.length;
  }

  /** The HTTP handler, for `Deno.serve` (bound: pass it as it is). */
  readonly fetch: (request: Request) => Promise<Response> = async (request) => {
    const url = new URL(request.url);
    const root = this.#path;
    if (url.pathname === root.slice(0, -1) && root !== "/") {
      return new Response(null, { status: 308, headers: { location: root } });
    }
    if (!url.pathname.startsWith(root)) return text(404, "Not found\n");
    const route = url.pathname.slice(root.length);
    if (route !== "" && route !== "metrics" && route !== "status") {
      return text(
        404,
        `Not found: the admin endpoint serves ${root}, ${root}metrics and ${root}status\n`,
      );
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return text(405, "Method not allowed: use GET\n", { allow: "GET, HEAD" });
    }
    if (route === "") return this.#page();
    if (this.#check !== undefined) {
      const verdict = await this.#check.verify(request.headers.get("authorization"));
      if (verdict !== "ok") return unauthorized(verdict);
    } else if (!addressedByIp(url)) {
      return text(
        403,
        `Forbidden: without a token this admin endpoint answers only requests to an IP address or localhost, not to "${url.hostname}"; give the discover point --admin-token-file to reach it by name\n`,
      );
    }
    if (route === "metrics") {
      return new Response(prometheusText(this.#source.metrics()), {
        headers: { "content-type": PROMETHEUS_CONTENT_TYPE, ...NO_STORE },
      });
    }
    const status = this.#source.status();
    const body = url.searchParams.has("history") ? { ...status, history: this.history } : status;
    return new Response(JSON.stringify(body), {
      headers: { "content-type": "application/json; charset=utf-8", ...NO_STORE },
    });
  };

  #page(): Response {
    const key = nonce();
    return new Response(statusPage({ nonce: key, tokenRequired: this.#check !== undefined }), {
      headers: {
        "content-type": "text/html; charset=utf-8",
        ...NO_STORE,
        "content-security-policy":
          `default-src 'none'; script-src 'nonce-${key}'; style-src 'nonce-${key}'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
      },
    });
  }

  /** Stops sampling. */
  close(): void {
    clearInterval(this.#timer);
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
