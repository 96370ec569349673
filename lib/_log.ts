/**
 * The one place the library names its logging package: LogTape's `getLogger`.
 * Programs decide where logs go (see `app/logging.ts`); the library only logs.
 * The full specifier (not an import map name) keeps `deno install` of the commands working.
 * @module
 */

export { getLogger } from "npm:@logtape/logtape@2.4.2";
