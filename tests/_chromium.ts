/**
 * What the headless-Chromium tests share: where Chromium is, the check that
 * it is there (saying how to install it), and removing a profile directory
 * that Chromium's last processes may still be writing in.
 * @module
 */

import assert from "node:assert/strict";
import type { TempDir } from "./_programs.ts";

/** Debian's `chromium` package puts it here; `.ci/run` installs it when missing. */
export const CHROMIUM = "/usr/bin/chromium";

/** Fails the test, saying how to install Chromium, when it is missing. */
export async function assertChromium(): Promise<void> {
  const installed = await Deno.stat(CHROMIUM).then((info) => info.isFile, () => false);
  assert.ok(
    installed,
    `${CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium), as .ci/run does`,
  );
}

/** Removes `dir`, again a little later if Chromium's last processes were still writing in it. */
export async function removeDir(dir: TempDir): Promise<void> {
  for (let attempt = 1;; attempt++) {
    try {
      await dir[Symbol.asyncDispose]();
      return;
    } catch (error) {
      if (attempt >= 10) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}
