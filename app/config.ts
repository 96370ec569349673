/**
 * Config files for the commands: a JSON object whose keys are the command's
 * long flags (`"port": 7000`, `"max-links": 20000`, `"expose": {"db": 15432}`),
 * turned into flags placed before the command line's own, so that a flag
 * given on the command line wins. Unknown keys and wrong types are refused
 * with the path of the offending key.
 * @module
 */

/** How a flag takes its value. */
export type FlagKind = "string" | "boolean" | "strings";

/** A command's flags by long name. */
export type FlagTable = Readonly<Record<string, FlagKind>>;

/** A config file that cannot be used; the message names the file and the key. */
export class ConfigError extends TypeError {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/** The closest known flag to `key`, for "did you mean". */
function closest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(key, candidate);
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        previous[j]! + 1,
        current[j - 1]! + 1,
        previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * Takes `--config FILE` (or `--config=FILE`) out of `args`.
 * @returns The file and the other arguments, or `undefined` when there is no `--config`.
 * @throws {ConfigError} If `--config` names no file.
 */
export function takeConfigFlag(
  args: readonly string[],
): { path: string; rest: string[] } | undefined {
  const at = args.findIndex((arg) => arg === "--config" || arg.startsWith("--config="));
  if (at < 0) return undefined;
  const joined = args[at]!.startsWith("--config=");
  const path = joined ? args[at]!.slice("--config=".length) : args[at + 1];
  if (path === undefined || path === "") throw new ConfigError("Cannot use --config: give a file");
  return { path, rest: args.filter((_, index) => index !== at && (joined || index !== at + 1)) };
}

/** Parses a config file's text: a JSON object. */
export function parseConfig(path: string, text: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`Cannot read config ${path}: ${(error as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ConfigError(`Cannot read config ${path}: expected a JSON object of options`);
  }
  return json as Record<string, unknown>;
}

/** Reads a config file, saying what permission is missing when it cannot. */
export async function readConfig(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    const hint = error instanceof Deno.errors.NotCapable ? `; run with --allow-read=${path}` : "";
    throw new ConfigError(`Cannot read config ${path}: ${(error as Error).message}${hint}`);
  }
  return parseConfig(path, text);
}

/**
 * One config value as flag values, checked against its kind.
 * @param where The key's path in the file, for messages: `config.json: "expose"`.
 */
function flagValues(where: string, kind: FlagKind, value: unknown): string[] | boolean {
  if (kind === "boolean") {
    if (typeof value !== "boolean") {
      throw new ConfigError(`${where} must be true or false, got ${show(value)}`);
    }
    return value;
  }
  const one = (item: unknown, at: string): string => {
    if (typeof item === "string") return item;
    if (typeof item === "number" && Number.isFinite(item)) return String(item);
    throw new ConfigError(`${at} must be a string or a number, got ${show(item)}`);
  };
  if (kind === "string") return [one(value, where)];
  if (Array.isArray(value)) return value.map((item, index) => one(item, `${where}[${index}]`));
  // `"expose": {"db": 15432}` is `--expose db=15432`.
  if (typeof value === "object" && value !== null) {
    return Object.entries(value).map(([name, item]) =>
      `${name}=${one(item, `${where}.${JSON.stringify(name)}`)}`
    );
  }
  return [one(value, where)];
}

/**
 * Turns a config object into flags, in front of `args`: the command line wins
 * (for a repeatable flag, the command line's values replace the file's).
 * @param keys Keys handled elsewhere (a list of services), left out here.
 * @throws {ConfigError} Naming the file and the key that is unknown or of the wrong type.
 */
export function configArgs(
  path: string,
  config: Readonly<Record<string, unknown>>,
  flags: FlagTable,
  args: readonly string[],
  keys: readonly string[] = [],
): string[] {
  const out: string[] = [];
  const given = new Set(
    args.filter((arg) => arg.startsWith("--")).map((arg) => arg.slice(2).split("=")[0]),
  );
  for (const [key, value] of Object.entries(config)) {
    if (keys.includes(key)) continue;
    const where = `${path}: ${JSON.stringify(key)}`;
    const kind = flags[key];
    if (kind === undefined || key === "config") {
      const known = [...Object.keys(flags).filter((flag) => flag !== "config"), ...keys];
      const hint = closest(key, known);
      throw new ConfigError(
        `${where} is not a known option${hint ? ` (did you mean "${hint}"?)` : ""}; known: ${
          known.join(", ")
        }`,
      );
    }
    const values = flagValues(where, kind, value);
    if (kind === "strings" && given.has(key)) continue;
    if (values === true) out.push(`--${key}`);
    else if (values !== false) { for (const item of values) out.push(`--${key}=${item}`); }
  }
  return [...out, ...args];
}

/**
 * Checks that `value` is a list of objects whose keys are all in `known`.
 * @returns The objects.
 * @throws {ConfigError} Naming the path of the offending entry or key.
 */
export function configList(
  where: string,
  value: unknown,
  known: FlagTable,
): Record<string, unknown>[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new ConfigError(`${where} must be a non-empty list of objects`);
  }
  return value.map((entry, index) => {
    const at = `${where}[${index}]`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
      throw new ConfigError(`${at} must be an object, got ${show(entry)}`);
    }
    for (const [key, item] of Object.entries(entry)) {
      const kind = known[key];
      if (kind === undefined) {
        const hint = closest(key, Object.keys(known));
        throw new ConfigError(
          `${at}.${JSON.stringify(key)} is not a known option${
            hint ? ` (did you mean "${hint}"?)` : ""
          }; known: ${Object.keys(known).join(", ")}`,
        );
      }
      flagValues(`${at}.${JSON.stringify(key)}`, kind, item);
    }
    return entry as Record<string, unknown>;
  });
}
