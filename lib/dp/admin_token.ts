/**
 * The admin endpoint's bearer token check, in constant time: both the
 * expected token and the one presented are run through HMAC-SHA-256 under a
 * random key made at start, and the two digests (always 32 bytes) are
 * compared without an early exit. How long a check takes then says nothing
 * about how much of a guess was right, nor about the token's length.
 * @module
 */

/** Longest token accepted, in characters: a longer header is refused unread. */
export const MAX_TOKEN_LENGTH = 1024;

/** Shortest token accepted: a guessable token protects nothing. */
export const MIN_TOKEN_LENGTH = 16;

const encoder = new TextEncoder();

/**
 * Checks that `token` can be the admin token.
 * @throws {TypeError} Saying what is wrong and how to make a good one.
 */
export function checkToken(token: string): void {
  if (token.length < MIN_TOKEN_LENGTH || token.length > MAX_TOKEN_LENGTH) {
    throw new TypeError(
      `Cannot use an admin token of ${token.length} characters: expected ${MIN_TOKEN_LENGTH} to ${MAX_TOKEN_LENGTH}; make one with "openssl rand -hex 32"`,
    );
  }
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new TypeError(
      'Cannot use the admin token: expected printable ASCII without spaces; make one with "openssl rand -hex 32"',
    );
  }
}

/** What a request's `Authorization` header says, against the expected token. */
export type TokenVerdict = "ok" | "missing" | "wrong";

/** The expected token, kept as a keyed digest. */
export class TokenCheck {
  readonly #key: CryptoKey;
  readonly #expected: Uint8Array;

  private constructor(key: CryptoKey, expected: Uint8Array) {
    this.#key = key;
    this.#expected = expected;
  }

  /**
   * Makes the check for `token` (see {@linkcode checkToken}).
   * @throws {TypeError} If `token` cannot be a token.
   */
  static async create(token: string): Promise<TokenCheck> {
    checkToken(token);
    const key = await crypto.subtle.generateKey(
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    ) as CryptoKey;
    return new TokenCheck(key, await TokenCheck.#digest(key, token));
  }

  static async #digest(key: CryptoKey, text: string): Promise<Uint8Array> {
    return new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(text)));
  }

  /** Judges an `Authorization` header (`Bearer TOKEN`); `null` when there is none. */
  async verify(authorization: string | null): Promise<TokenVerdict> {
    if (authorization === null) return "missing";
    if (authorization.length > MAX_TOKEN_LENGTH + 64) return "wrong";
    const match = /^Bearer[ ]+(\S+)\s*$/i.exec(authorization);
    if (match === null) return "missing";
    const digest = await TokenCheck.#digest(this.#key, match[1]!);
    let difference = 0;
    for (let i = 0; i < digest.length; i++) difference |= digest[i]! ^ this.#expected[i]!;
    return difference === 0 ? "ok" : "wrong";
  }
}
