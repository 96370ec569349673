/**
 * What `--version` prints for every command: the package version from
 * `deno.json`, the protocol version, and the Deno that runs it.
 * @module
 */

import config from "../deno.json" with { type: "json" };
import { VERSION } from "../lib/wire/message.ts";

/** The package version, as published. */
export const PACKAGE_VERSION: string = config.version;

/** One line: `rtcp 0.1.0 (protocol 10000, Deno 2.9.6)`. */
export function versionLine(): string {
  return `rtcp ${PACKAGE_VERSION} (protocol ${VERSION}, Deno ${Deno.version.deno})`;
}
