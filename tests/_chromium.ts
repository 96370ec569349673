/**
 * What the headless-Chromium tests share: where Chromium is, the check that
 * it is there (saying how to install it), starting and stopping it, and
 * removing a profile directory that Chromium's last processes may still be
 * writing in.
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

/** How {@linkcode spawnChromium} starts Chromium. */
export interface ChromiumOptions {
  /** Flags beyond the headless set every test uses, and the URL to open last. */
  args: readonly string[];
  /** What becomes of Chromium's standard error. */
  stderr: "piped" | "null";
}

/**
 * Starts headless Chromium with its profile, caches and crash database in
 * `dir`, in a session (and process group) of its own, so that
 * {@linkcode killChromium} stops its helper processes with it.
 */
export function spawnChromium(dir: TempDir, options: ChromiumOptions): Deno.ChildProcess {
  return new Deno.Command("setsid", {
    args: [
      CHROMIUM,
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${dir.file("profile")}`,
      ...options.args,
    ],
    env: {
      HOME: dir.path,
      XDG_CONFIG_HOME: dir.file("config"),
      XDG_CACHE_HOME: dir.file("cache"),
    },
    stdin: "null",
    stdout: "null",
    stderr: options.stderr,
  }).spawn();
}

/** Kills Chromium's whole process group (the browser and its helpers) and waits for it. */
export async function killChromium(chromium: Deno.ChildProcess): Promise<void> {
  try {
    Deno.kill(-chromium.pid, "SIGKILL");
  } catch {
    // Exited already.
  }
  await chromium.status;
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
