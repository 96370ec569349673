/**
 * A warning for secrets (private keys, tokens) in files that other users can
 * read, as ssh gives for an unprotected private key.
 * @module
 */

import { getLogger } from "../lib/_log.ts";

const logger = getLogger(["rtcp", "config"]);

/**
 * Logs a warning when `path` can be read or written by users other than its
 * owner. Says nothing where modes do not apply (Windows) or the file cannot
 * be stat'ed (the read that follows reports that).
 * @param flag The flag that named the file, for the message.
 */
export async function warnIfShared(flag: string, path: string): Promise<void> {
  let mode: number | null;
  try {
    mode = (await Deno.stat(path)).mode;
  } catch {
    return;
  }
  if (mode === null || (mode & 0o077) === 0) return;
  logger.warn(
    "{flag} {path} can be read by other users (mode {mode}): anyone who reads it can act as you; run chmod 600 {path}",
    { flag: `--${flag}`, path, mode: (mode & 0o777).toString(8).padStart(4, "0") },
  );
}
