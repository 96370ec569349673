/**
 * Keys and proofs of the `auth` extension (PROTOCOL.md Part 3): Ed25519 keys
 * in the `ed25519:<base64>` text form, the transcript a peer signs, and the
 * signing and checking of proofs. Web Crypto only, so it runs in browsers too.
 * @module
 */

/** The first field of every transcript: names this scheme and its version. */
const CONTEXT = "RTCP-AUTH-1";

/** Prefix of a public key's text form. */
const KEY_PREFIX = "ed25519:";

/** Raw Ed25519 public keys and signatures, in bytes. */
const PUBLIC_KEY_BYTES = 32;
const SIGNATURE_BYTES = 64;

/** Bytes of the nonce a discover point sends in its Aloha. */
export const NONCE_BYTES = 32;

/** The method name of an Ed25519 proof in an Auth message (`M`). */
export const ED25519 = "ed25519";

/** A key to prove: what `listen({ key })` and `connect({ key })` take. */
export interface Identity {
  /** The public key as `ed25519:<base64 of the 32 raw bytes>`, as listed in a names file. */
  readonly publicKey: string;
  /** The private key, usable for `sign` with Ed25519. */
  readonly privateKey: CryptoKey;
}

/** Which side of a link signs: the role is bound into the proof. */
export type AuthRole = "IS" | "IC";

/** What a proof binds: replaying it on another link, name, role or DP fails. */
export interface TranscriptFields {
  /** `"IS"` for an indirect server, `"IC"` for an indirect client. */
  readonly role: AuthRole;
  /** The ISName registered (IS) or reached (IC). */
  readonly name: string;
  /** The nonce from the discover point's Aloha (`A`), base64. */
  readonly nonce: string;
  /** The discover point's Aloha `N`. */
  readonly dpName: string;
  /** The peer's own Aloha `N`. */
  readonly peerName: string;
}

/**
 * The bytes a proof signs: each field as a 4-byte big-endian length and its
 * UTF-8 bytes, so no field can be mistaken for another.
 */
export function transcript(fields: TranscriptFields): Uint8Array<ArrayBuffer> {
  const encoder = new TextEncoder();
  const parts = [CONTEXT, fields.role, fields.name, fields.nonce, fields.dpName, fields.peerName]
    .map((part) => encoder.encode(part));
  const bytes = new Uint8Array(parts.reduce((sum, part) => sum + 4 + part.length, 0));
  const view = new DataView(bytes.buffer);
  let offset = 0;
  for (const part of parts) {
    view.setUint32(offset, part.length);
    bytes.set(part, offset + 4);
    offset += 4 + part.length;
  }
  return bytes;
}

/** A fresh random nonce for a discover point's Aloha, base64. */
export function newNonce(): string {
  return crypto.getRandomValues(new Uint8Array(NONCE_BYTES)).toBase64();
}

/**
 * Parses a public key's text form.
 * @returns The 32 raw bytes.
 * @throws {TypeError} Saying what is wrong with the text.
 */
export function parsePublicKey(text: string): Uint8Array<ArrayBuffer> {
  if (!text.startsWith(KEY_PREFIX)) {
    throw new TypeError(`Cannot use key "${text}": expected "${KEY_PREFIX}<base64>"`);
  }
  let raw: Uint8Array<ArrayBuffer>;
  try {
    raw = Uint8Array.fromBase64(text.slice(KEY_PREFIX.length));
  } catch {
    throw new TypeError(`Cannot use key "${text}": the part after "${KEY_PREFIX}" is not base64`);
  }
  if (raw.length !== PUBLIC_KEY_BYTES) {
    throw new TypeError(
      `Cannot use key "${text}": an Ed25519 public key is ${PUBLIC_KEY_BYTES} bytes, this one ${raw.length}`,
    );
  }
  return raw;
}

/** The text form of 32 raw public key bytes. */
export function formatPublicKey(raw: Uint8Array): string {
  return KEY_PREFIX + raw.toBase64();
}

/** PEM armour of a PKCS#8 private key. */
const PEM_HEADER = "-----BEGIN PRIVATE KEY-----";
const PEM_FOOTER = "-----END PRIVATE KEY-----";

/** A PKCS#8 key as PEM text, 64 characters a line. */
export function pkcs8ToPem(der: Uint8Array): string {
  const lines = der.toBase64().match(/.{1,64}/g) ?? [];
  return `${PEM_HEADER}\n${lines.join("\n")}\n${PEM_FOOTER}\n`;
}

function pemToPkcs8(pem: string): Uint8Array<ArrayBuffer> {
  const start = pem.indexOf(PEM_HEADER);
  const end = pem.indexOf(PEM_FOOTER);
  if (start === -1 || end < start) {
    throw new TypeError(`Cannot read the private key: expected PEM "${PEM_HEADER}" (PKCS#8)`);
  }
  return Uint8Array.fromBase64(pem.slice(start + PEM_HEADER.length, end).replace(/\s+/g, ""));
}

/**
 * Imports an Ed25519 private key from PKCS#8, as `cli.ts keygen` or
 * `openssl genpkey -algorithm ed25519` write it.
 * @param pkcs8 PEM text, or the DER bytes.
 * @returns The identity, with its public key's text form.
 * @throws {TypeError} If it is not an Ed25519 PKCS#8 key.
 */
export async function importIdentity(pkcs8: string | Uint8Array): Promise<Identity> {
  let privateKey: CryptoKey;
  try {
    const der = typeof pkcs8 === "string"
      ? pemToPkcs8(pkcs8)
      : pkcs8.slice() as Uint8Array<ArrayBuffer>;
    // Extractable only long enough to derive the public key (JWK "x").
    const exportable = await crypto.subtle.importKey("pkcs8", der, ED25519_ALGORITHM, true, [
      "sign",
    ]);
    const { x } = await crypto.subtle.exportKey("jwk", exportable);
    privateKey = await crypto.subtle.importKey("pkcs8", der, ED25519_ALGORITHM, false, ["sign"]);
    if (typeof x !== "string") throw new Error("no public part");
    return {
      publicKey: formatPublicKey(Uint8Array.fromBase64(x, { alphabet: "base64url" })),
      privateKey,
    };
  } catch (error) {
    throw new TypeError(
      `Cannot read the private key: it is not an Ed25519 key in PKCS#8 (${
        (error as Error).message
      })`,
    );
  }
}

const ED25519_ALGORITHM = { name: "Ed25519" } as const;

/**
 * Makes a new Ed25519 key.
 * @returns The identity, and the private key as PKCS#8 DER to save.
 */
export async function generateIdentity(): Promise<{ identity: Identity; pkcs8: Uint8Array }> {
  const pair = await crypto.subtle.generateKey(ED25519_ALGORITHM, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { identity: { publicKey: formatPublicKey(raw), privateKey: pair.privateKey }, pkcs8 };
}

/**
 * Signs a transcript.
 * @returns The `K` and `S` fields of an Auth message (base64).
 */
export async function signTranscript(
  identity: Identity,
  fields: TranscriptFields,
): Promise<{ key: string; signature: string }> {
  const signature = await crypto.subtle.sign(
    ED25519_ALGORITHM,
    identity.privateKey,
    transcript(fields),
  );
  return {
    key: identity.publicKey.slice(KEY_PREFIX.length),
    signature: new Uint8Array(signature).toBase64(),
  };
}

/**
 * Checks an Ed25519 proof with `crypto.subtle.verify`; nothing secret is
 * compared in script.
 * @param key The Auth message's `K`: base64 of the raw public key.
 * @param signature The Auth message's `S`: base64.
 * @returns The key's text form (`ed25519:…`) when the signature is good.
 * @throws {TypeError} Saying why the proof does not hold.
 */
export async function verifyTranscript(
  key: string,
  signature: string,
  fields: TranscriptFields,
): Promise<string> {
  const publicKey = parsePublicKey(KEY_PREFIX + key);
  let signatureBytes: Uint8Array<ArrayBuffer>;
  try {
    signatureBytes = Uint8Array.fromBase64(signature);
  } catch {
    throw new TypeError("the signature is not base64");
  }
  if (signatureBytes.length !== SIGNATURE_BYTES) {
    throw new TypeError(
      `an Ed25519 signature is ${SIGNATURE_BYTES} bytes, this one ${signatureBytes.length}`,
    );
  }
  const cryptoKey = await crypto.subtle.importKey("raw", publicKey, ED25519_ALGORITHM, false, [
    "verify",
  ]);
  const good = await crypto.subtle.verify(
    ED25519_ALGORITHM,
    cryptoKey,
    signatureBytes,
    transcript(fields),
  );
  if (!good) throw new TypeError("the signature does not match this link's transcript");
  return formatPublicKey(publicKey);
}
