/**
 * `dp.ts --admin HOST:PORT [--admin-token-file FILE]`: the discover point's
 * admin endpoint (`lib/dp/admin.ts`) on an HTTP port of its own.
 * @module
 */

import { warnIfShared } from "./secret_file.ts";
import { checkToken } from "../lib/dp/admin_token.ts";
import type { DiscoverPoint } from "../lib/dp/discover_point.ts";
import { parseAddress } from "../lib/transport/tcp.ts";

/** `--admin` and the token its file holds. */
export interface AdminSetting {
  /** Where to serve. */
  readonly hostname: string;
  /** The port; 0 picks one. */
  readonly port: number;
  /** The bearer token, if `--admin-token-file` was given. */
  readonly token?: string;
}

/**
 * Reads `--admin HOST:PORT`.
 * @throws {TypeError} Saying what is wrong.
 */
export function parseAdminAddress(value: string): { hostname: string; port: number } {
  try {
    return parseAddress(value);
  } catch {
    throw new TypeError(
      `Cannot use --admin "${value}": expected HOST:PORT, such as 127.0.0.1:9000`,
    );
  }
}

/**
 * Reads the token from `--admin-token-file` (surrounding white space, such
 * as the final newline, is not part of it).
 * @throws {TypeError} Naming the flag and the file: cannot read it, or not a usable token.
 */
export async function readAdminToken(path: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    const hint = error instanceof Deno.errors.NotCapable ? `; run with --allow-read=${path}` : "";
    throw new TypeError(
      `Cannot read --admin-token-file ${path}: ${(error as Error).message}${hint}`,
    );
  }
  await warnIfShared("admin-token-file", path);
  const token = text.trim();
  try {
    checkToken(token);
  } catch (error) {
    throw new TypeError(`Cannot use --admin-token-file ${path}: ${(error as Error).message}`);
  }
  return token;
}

/** The admin endpoint serving on its port. */
export interface AdminServer {
  /** Where it listens. */
  readonly addr: Deno.NetAddr;
  /** Stops sampling and serving. */
  close(): Promise<void>;
}

/**
 * Serves `dp`'s admin endpoint at `setting`.
 * @throws {Deno.errors.AddrInUse} And the like, if the port cannot be bound.
 */
export async function serveAdmin(dp: DiscoverPoint, setting: AdminSetting): Promise<AdminServer> {
  // Loaded only with --admin: the endpoint and its page are code a plain DP does not hold.
  const { AdminEndpoint } = await import("../lib/dp/admin.ts");
  const admin = await AdminEndpoint.create(
    dp,
    setting.token === undefined ? {} : { token: setting.token },
  );
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve(
      { hostname: setting.hostname, port: setting.port, onListen: () => {} },
      admin.fetch,
    );
  } catch (error) {
    admin.close();
    throw error;
  }
  return {
    addr: server.addr,
    async close() {
      admin.close();
      await server.shutdown();
    },
  };
}
