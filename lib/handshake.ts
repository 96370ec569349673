/**
 * The Aloha exchange that opens every link to a discover point, with the
 * version check and the agreement on extensions (PROTOCOL.md Part 2 item 4).
 * @module
 */

import { DiscoverPointUnreachableError, ProtocolError, VersionMismatchError } from "./errors.ts";
import { Link, type LinkOptions } from "./link.ts";
import {
  type AlohaMessage,
  isCompatibleVersion,
  MAX_NAME_LENGTH,
  type Message,
  MessageType,
  messageTypeName,
  Role,
  VERSION,
} from "./message.ts";
import { parseAddress, TcpTransport } from "./transport.ts";

/** Options of {@linkcode dialDiscoverPoint}. */
export interface DialOptions extends LinkOptions {
  /** The role to announce: indirect server or indirect client. */
  role: typeof Role.IndirectServer | typeof Role.IndirectClient;
  /** The name to announce (the ISName for a server). */
  name: string;
  /** Extensions to offer. @default {[]} */
  features?: readonly string[];
  /** Aborts the dial and the handshake. */
  signal?: AbortSignal;
  /**
   * Messages to send right behind the Aloha, without waiting for the answer
   * (an indirect client's Connect): saves a round trip per session.
   */
  pipelined?: readonly Message[];
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
 * Opens a link to a discover point and exchanges Alohas.
 * @param address The discover point as `"host:port"`.
 * @param options Role, name and extensions to announce.
 * @returns The open link, with the agreed extensions recorded on it.
 * @throws {DiscoverPointUnreachableError} If TCP cannot reach the address.
 * @throws {VersionMismatchError} If the discover point refuses our version.
 * @throws {ProtocolError} If the discover point answers with something else than its Aloha.
 */
export async function dialDiscoverPoint(address: string, options: DialOptions): Promise<Link> {
  const { hostname, port } = parseAddress(address);
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname, port, signal: options.signal });
  } catch (error) {
    if (options.signal?.aborted) throw options.signal.reason;
    throw new DiscoverPointUnreachableError(address, { cause: error });
  }
  const link = new Link(new TcpTransport(conn), options);
  try {
    const features = options.features ?? [];
    link.send({
      type: MessageType.Aloha,
      version: VERSION,
      role: options.role,
      name: options.name,
      ...(features.length > 0 ? { features } : {}),
    });
    for (const message of options.pipelined ?? []) link.send(message);
    const answer = options.signal ? await link.nextWithin(options.signal) : await link.next();
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
    return link;
  } catch (error) {
    link.abort();
    throw error;
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
  /** Checks a valid Aloha further; a returned reason refuses the link with it. */
  check?: (aloha: AlohaMessage) => string | undefined;
}

/**
 * The discover point's side: reads the first message, which must be a
 * compatible Aloha from an indirect server or client, and answers it. On a
 * bad first message it answers Aloha `R` = AbortVersion where it can.
 * @returns The peer's Aloha; the link has the agreed extensions recorded.
 * @throws {VersionMismatchError} On an incompatible version.
 * @throws {ProtocolError} On anything else than an indirect role's Aloha.
 */
export async function answerAloha(link: Link, options: AnswerOptions): Promise<AlohaMessage> {
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
  const refusal = options.check?.(first);
  if (refusal !== undefined) throw refuse(link, new ProtocolError(refusal));
  const features = agreedFeatures(options.features, first.features);
  link.useFeatures(features);
  link.send({
    type: MessageType.Aloha,
    version: VERSION,
    role: Role.DiscoverPoint,
    name: options.name,
    // A peer that sent no F gets exactly Parts 1 and 2: no F back.
    ...(first.features !== undefined ? { features } : {}),
  });
  return first;
}

/** Answers Aloha `R` = AbortVersion with the reason in `N`, and returns the error to throw. */
function refuse<E extends Error>(link: Link, error: E): E {
  try {
    const name = error.message.slice(0, MAX_NAME_LENGTH);
    link.send({ type: MessageType.Aloha, version: VERSION, role: Role.AbortVersion, name });
  } catch {
    // The link is already broken; closing it is all that is left.
  }
  return error;
}
