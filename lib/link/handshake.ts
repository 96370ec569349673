/**
 * The Aloha exchange that opens every link to a discover point, with the
 * version check and the agreement on extensions (PROTOCOL.md Part 2 item 4).
 * @module
 */

import { ED25519, type Identity, newNonce, signTranscript } from "./auth.ts";
import { dialTransport } from "../transport/dial.ts";
import type { Transport } from "../transport/tcp.ts";
import { ProtocolError, VersionMismatchError } from "../errors.ts";
import { Feature, Link, type LinkOptions } from "./link.ts";
import {
  type AlohaMessage,
  type AuthMessage,
  isCompatibleVersion,
  MAX_NAME_LENGTH,
  type Message,
  MessageType,
  messageTypeName,
  Role,
  VERSION,
} from "../wire/message.ts";

/** Options of {@linkcode dialDiscoverPoint}. */
export interface DialOptions extends LinkOptions {
  /** The role to announce: indirect server or indirect client. */
  role: typeof Role.IndirectServer | typeof Role.IndirectClient;
  /** The name to announce (the ISName for a server). */
  name: string;
  /** Extensions to offer; `auth` is offered only with an `identity`. @default {[]} */
  features?: readonly string[];
  /** Aborts the dial and the handshake. */
  signal?: AbortSignal;
  /**
   * Messages to send right behind the Aloha, without waiting for the answer
   * (an indirect client's Connect): saves a round trip per session. When
   * `auth` is offered they wait for the Auth, which needs the answer's nonce.
   */
  pipelined?: readonly Message[];
  /** The key to prove with `auth`. Without one `auth` is not offered: nothing to prove, no round trip. */
  identity?: Identity;
  /** With `auth` offered: the ISName the proof is for (a client's target; a server's own name). */
  authName?: string;
  /** For `tls://` discover points: PEM certificates to trust instead of the system roots. */
  caCerts?: readonly string[];
}

/**
 * The extensions to announce on `transport`: `close-once` takes away the
 * discover point's answer to a server's Close, and with it the prompt
 * acknowledgement that lets a transport that delays small writes (Nagle's
 * algorithm) send the next one without waiting some 40 ms for it.
 */
export function featuresFor(transport: Transport, features: readonly string[]): string[] {
  return transport.delaysSmallWrites
    ? features.filter((feature) => feature !== Feature.CloseOnce)
    : [...features];
}

/** The extensions both Alohas list. */
export function agreedFeatures(
  ours: readonly string[] | undefined,
  theirs: readonly string[] | undefined,
): string[] {
  return (ours ?? []).filter((feature) => theirs?.includes(feature));
}

function describe(message: Message | null): string {
  return message === null ? "the link closed" : `got ${messageTypeName(message.type)}`;
}

/**
 * Opens a link to a discover point and exchanges Alohas, and with `auth`
 * proves the identity (a server then waits for the discover point's verdict).
 * @param address The discover point: `host:port`, `tcp://host:port` or `tls://host:port`.
 * @param options Role, name and extensions to announce.
 * @returns The open link, with the agreed extensions recorded on it.
 * @throws {DiscoverPointUnreachableError} If TCP cannot reach the address.
 * @throws {Deno.errors.InvalidData} If a TLS discover point's certificate does not verify.
 * @throws {VersionMismatchError} If the discover point refuses our version.
 * @throws {ProtocolError} If the discover point answers with something else than its
 * Aloha, or refuses the link or the registration.
 */
export async function dialDiscoverPoint(address: string, options: DialOptions): Promise<Link> {
  if (options.identity && !(options.features ?? []).includes(Feature.Auth)) {
    throw new TypeError(
      `Cannot prove a key to "${address}" without extension auth: add "auth" to features`,
    );
  }
  const transport = await dialTransport(address, options);
  const link = new Link(transport, options);
  try {
    const features = featuresFor(transport, options.features ?? []).filter((feature) =>
      feature !== Feature.Auth || options.identity !== undefined
    );
    link.send({
      type: MessageType.Aloha,
      version: VERSION,
      role: options.role,
      name: options.name,
      ...(features.length > 0 ? { features } : {}),
    });
    const offersAuth = features.includes(Feature.Auth);
    if (!offersAuth) { for (const message of options.pipelined ?? []) link.send(message); }
    const answer = await answerOf(link, address, options.signal);
    if (answer?.type !== MessageType.Aloha) {
      throw new ProtocolError(
        `Cannot handshake with discover point "${address}": expected its Aloha, ${
          describe(answer)
        }`,
      );
    }
    if (!isCompatibleVersion(answer.version)) {
      throw new VersionMismatchError(
        `Cannot use discover point "${address}": it refused protocol version ${VERSION} (it speaks ${answer.version})`,
      );
    }
    if (answer.role === Role.AbortVersion) {
      // Same major version, yet refused: our discover point says why in N.
      throw new ProtocolError(
        `Cannot use discover point "${address}": it refused the link${
          answer.name ? `: ${answer.name}` : ""
        }`,
      );
    }
    if (answer.role !== Role.DiscoverPoint) {
      throw new ProtocolError(
        `Cannot handshake with discover point "${address}": its Aloha has role ${answer.role}, expected ${Role.DiscoverPoint}`,
      );
    }
    link.useFeatures(agreedFeatures(features, answer.features));
    if (offersAuth) await authenticate(link, address, answer, options);
    return link;
  } catch (error) {
    link.abort();
    throw error;
  }
}

/** A TLS record starts with 0x15 (alert) or 0x16 (handshake): what a TLS port says to plain text. */
const TLS_ANSWER = /got byte 0x1[56] at offset 0/;

/** Reads the discover point's first message; a TLS answer to a plain link says what to dial. */
async function answerOf(
  link: Link,
  address: string,
  signal: AbortSignal | undefined,
): Promise<Message | null> {
  try {
    return signal ? await link.nextWithin(signal) : await link.next();
  } catch (error) {
    if (error instanceof ProtocolError && TLS_ANSWER.test(error.message)) {
      throw new ProtocolError(
        `Cannot handshake with discover point "${address}": it answered in TLS; dial tls://${
          address.replace(/^tcp:\/\//, "")
        }`,
        { cause: error },
      );
    }
    throw error;
  }
}

/** The peer's side of `auth` once the Alohas are exchanged: Auth, pipelined messages, verdict. */
async function authenticate(
  link: Link,
  address: string,
  answer: AlohaMessage,
  options: DialOptions,
): Promise<void> {
  const isServer = options.role === Role.IndirectServer;
  if (!link.features.has(Feature.Auth)) {
    if (isServer) {
      throw new ProtocolError(
        `Cannot register "${options.name}" at "${address}" with a key: the discover point does not speak extension auth`,
      );
    }
    for (const message of options.pipelined ?? []) link.send(message);
    return;
  }
  if (answer.nonce === undefined) {
    throw new ProtocolError(
      `Cannot handshake with discover point "${address}": it agreed on auth but its Aloha has no nonce (A)`,
    );
  }
  const proof = await signTranscript(options.identity!, {
    role: isServer ? "IS" : "IC",
    name: options.authName ?? options.name,
    nonce: answer.nonce,
    dpName: answer.name,
    peerName: options.name,
  });
  const auth: AuthMessage = { type: MessageType.Auth, method: ED25519, ...proof };
  link.send(auth);
  for (const message of options.pipelined ?? []) link.send(message);
  if (!isServer) return;
  const verdict = options.signal ? await link.nextWithin(options.signal) : await link.next();
  if (verdict?.type !== MessageType.Accepted) {
    throw new ProtocolError(
      `Cannot register "${options.name}" at "${address}": expected Accepted, ${describe(verdict)}`,
    );
  }
  if (verdict.reason !== "") {
    throw new ProtocolError(`Cannot use discover point "${address}": ${verdict.reason}`);
  }
}

/** Options of {@linkcode answerAloha}. */
export interface AnswerOptions {
  /** Extensions the discover point offers. */
  features: readonly string[];
  /** The name the discover point announces. */
  name: string;
  /** Ends the wait for the peer's Aloha (the handshake deadline). */
  signal?: AbortSignal;
  /**
   * Checks a valid Aloha further, knowing the extensions that would be
   * agreed; a returned reason refuses the link with it.
   */
  check?: (aloha: AlohaMessage, agreed: readonly string[]) => string | undefined;
}

/** The peer's Aloha as {@linkcode answerAloha} accepted it. */
export interface AnsweredAloha {
  /** The peer's Aloha. */
  readonly aloha: AlohaMessage;
  /** With `auth` agreed: the nonce sent in the answer, which the peer's proof must sign. */
  readonly nonce?: string;
}

/**
 * The discover point's side: reads the first message, which must be a
 * compatible Aloha from an indirect server or client, and answers it. On a
 * bad first message it answers Aloha `R` = AbortVersion where it can.
 * With `auth` agreed, the answer carries a fresh nonce.
 * @returns The peer's Aloha and the nonce; the link has the agreed extensions recorded.
 * @throws {VersionMismatchError} On an incompatible version.
 * @throws {ProtocolError} On anything else than an indirect role's Aloha.
 */
export async function answerAloha(link: Link, options: AnswerOptions): Promise<AnsweredAloha> {
  let first: Message | null;
  try {
    first = options.signal ? await link.nextWithin(options.signal) : await link.next();
  } catch (error) {
    if (error instanceof ProtocolError) refuse(link, error);
    throw error;
  }
  if (first === null) throw new ProtocolError("Cannot handshake: the link closed before its Aloha");
  if (first.type !== MessageType.Aloha) {
    throw refuse(
      link,
      new ProtocolError(`Cannot handshake: expected Aloha, got ${messageTypeName(first.type)}`),
    );
  }
  if (!isCompatibleVersion(first.version)) {
    throw refuse(
      link,
      new VersionMismatchError(
        `Cannot accept link: peer speaks protocol version ${first.version}, this discover point ${VERSION}`,
      ),
    );
  }
  if (first.role !== Role.IndirectServer && first.role !== Role.IndirectClient) {
    throw refuse(
      link,
      new ProtocolError(
        `Cannot accept link: role ${first.role} is not an indirect server (2) or client (3)`,
      ),
    );
  }
  const features = agreedFeatures(featuresFor(link.transport, options.features), first.features);
  const refusal = options.check?.(first, features);
  if (refusal !== undefined) throw refuse(link, new ProtocolError(refusal));
  link.useFeatures(features);
  const nonce = features.includes(Feature.Auth) ? newNonce() : undefined;
  link.send({
    type: MessageType.Aloha,
    version: VERSION,
    role: Role.DiscoverPoint,
    name: options.name,
    // A peer that sent no F gets exactly Parts 1 and 2: no F back.
    ...(first.features !== undefined ? { features } : {}),
    ...(nonce !== undefined ? { nonce } : {}),
  });
  return nonce === undefined ? { aloha: first } : { aloha: first, nonce };
}

/** Answers Aloha `R` = AbortVersion with the reason in `N`, and returns the error to throw. */
export function refuse<E extends Error>(link: Link, error: E): E {
  try {
    const name = error.message.slice(0, MAX_NAME_LENGTH);
    link.send({ type: MessageType.Aloha, version: VERSION, role: Role.AbortVersion, name });
  } catch {
    // The link is already broken; closing it is all that is left.
  }
  return error;
}
