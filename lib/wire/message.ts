/**
 * RTCP messages: the protocol version, message types, roles, and the typed
 * message union with validation of bodies received from the wire.
 *
 * The wire keys (`V R N F X C W`) appear only here and in `codec.ts`.
 * @module
 */

import { ProtocolError } from "../errors.ts";

/** The protocol version this implementation speaks (`V` in Aloha). */
export const VERSION = 10000;

/** Longest name (ISName or client name) accepted in a message, in UTF-16 code units. */
export const MAX_NAME_LENGTH = 1024;

/**
 * Longest reason the discover point passes on from one end to another (Close,
 * Ack): a peer cannot make it send or echo a reason of a megabyte.
 */
export const MAX_REASON_LENGTH = 1024;

/** `reason`, cut to {@linkcode MAX_REASON_LENGTH} characters. */
export function clipReason(reason: string): string {
  return reason.length > MAX_REASON_LENGTH
    ? `${reason.slice(0, MAX_REASON_LENGTH - 3)}...`
    : reason;
}

/** Most extension names one Aloha may announce. */
export const MAX_FEATURES = 32;

/** Message type numbers, as sent on the type line. */
export const MessageType = {
  /** Opens a link: version, role and name. */
  Aloha: 0,
  /** Asks for a session (IC → DP) or announces one (DP → IS). */
  Connect: 1,
  /** Answers a Connect with a session number, or -1 to refuse. */
  Ack: 2,
  /** Carries bytes of one session. */
  Data: 3,
  /** Ends one session. */
  Close: 4,
  /** Extension `half-close`: the sender will send no more Data on the session. */
  End: 5,
  /** Extension `flow-control`: the sender may receive this many more bytes on the session. */
  Credit: 6,
  /** Extension `keepalive`: asks the peer for a Pong. */
  Ping: 7,
  /** Extension `keepalive`: answers a Ping. */
  Pong: 8,
  /** Extension `auth`: a peer proves a key (or says it has none), right after the Alohas. */
  Auth: 9,
  /** Extension `auth`: the discover point accepts (`R` empty) or refuses an indirect server's registration. */
  Accepted: 10,
  /** Extension `pool`: the discover point asks an indirect server for one more link. */
  More: 11,
  /** Extension `public-port`: a server asks for a public port for its name; the DP answers. */
  Port: 12,
} as const;

/** One of the {@linkcode MessageType} numbers. */
export type MessageType = typeof MessageType[keyof typeof MessageType];

/** Roles announced in Aloha `R`. `AbortVersion` is the DP's refusal of a link. */
export const Role = {
  /** A plain TCP server. Never seen on a link to a DP. */
  DirectServer: 0,
  /** A plain TCP client. Never seen on a link to a DP. */
  DirectClient: 1,
  /** A server that registers a name at a DP. */
  IndirectServer: 2,
  /** A client that reaches an indirect server through a DP. */
  IndirectClient: 3,
  /** The discover point itself, in its answer. */
  DiscoverPoint: 4,
  /** The DP's refusal: incompatible version or bad handshake. */
  AbortVersion: 5,
} as const;

/** One of the {@linkcode Role} numbers. */
export type Role = typeof Role[keyof typeof Role];

/** Aloha: opens a link. */
export interface AlohaMessage {
  /** Always {@linkcode MessageType.Aloha}. */
  readonly type: typeof MessageType.Aloha;
  /** Protocol version (`V`). */
  readonly version: number;
  /** Role of the sender (`R`). */
  readonly role: Role;
  /** ISName, client name or DP name (`N`). */
  readonly name: string;
  /** Extensions announced (`F`); absent for a peer that speaks Parts 1 and 2 only. */
  readonly features?: readonly string[];
  /** Extension `auth`, in a discover point's Aloha: the link's fresh nonce, base64 (`A`). */
  readonly nonce?: string;
}

/** Connect: asks for a session, or announces one to an indirect server. */
export interface ConnectMessage {
  /** Always {@linkcode MessageType.Connect}. */
  readonly type: typeof MessageType.Connect;
  /** The ISName to reach (IC → DP), or who is connecting (DP → IS) (`N`). */
  readonly name: string;
  /** Extension `auth`, DP → IS: the key the client proved, `ed25519:…` (`K`). */
  readonly key?: string;
  /** Extension `auth`, DP → IS: the client's address as the discover point saw it (`P`). */
  readonly address?: string;
  /** Extension `multiplex`, IC → DP: the client's number for the session on its link (`X`). */
  readonly sessionId?: number;
}

/** Ack: answers a Connect. */
export interface AckMessage {
  /** Always {@linkcode MessageType.Ack}. */
  readonly type: typeof MessageType.Ack;
  /** Session number, or -1 for a refusal (`X`). */
  readonly sessionId: number;
  /** Refusal reason, `""` on success (`R`). */
  readonly reason: string;
}

/** Data: bytes of one session. */
export interface DataMessage {
  /** Always {@linkcode MessageType.Data}. */
  readonly type: typeof MessageType.Data;
  /** Session number (`X`). */
  readonly sessionId: number;
  /** The raw bytes (`C`, base64 on the text codec). */
  readonly content: Uint8Array;
  /**
   * Set when nobody else holds `content`'s buffer, so an encoder may send a
   * frame it came in as is, instead of copying (the discover point forwarding).
   */
  readonly owned?: boolean;
}

/** Close: ends one session. */
export interface CloseMessage {
  /** Always {@linkcode MessageType.Close}. */
  readonly type: typeof MessageType.Close;
  /** Session number (`X`). */
  readonly sessionId: number;
  /** Why the session ends; `""` for a normal close (`R`). */
  readonly reason: string;
}

/** End (extension `half-close`): the sender's direction of the session is finished. */
export interface EndMessage {
  /** Always {@linkcode MessageType.End}. */
  readonly type: typeof MessageType.End;
  /** Session number (`X`). */
  readonly sessionId: number;
}

/** Credit (extension `flow-control`): the receiver can take `bytes` more bytes of the session. */
export interface CreditMessage {
  /** Always {@linkcode MessageType.Credit}. */
  readonly type: typeof MessageType.Credit;
  /** Session number (`X`). */
  readonly sessionId: number;
  /** Additional bytes the sender of this message will accept (`W`). */
  readonly bytes: number;
}

/** Ping (extension `keepalive`). */
export interface PingMessage {
  /** Always {@linkcode MessageType.Ping}. */
  readonly type: typeof MessageType.Ping;
}

/** Pong (extension `keepalive`). */
export interface PongMessage {
  /** Always {@linkcode MessageType.Pong}. */
  readonly type: typeof MessageType.Pong;
}

/** Auth (extension `auth`): proves a key for this link, or says there is none. */
export interface AuthMessage {
  /** Always {@linkcode MessageType.Auth}. */
  readonly type: typeof MessageType.Auth;
  /** `"ed25519"`, or `"none"` for a peer without a key (`M`). */
  readonly method: string;
  /** The public key, base64 of its 32 raw bytes (`K`); empty for `"none"`. */
  readonly key: string;
  /** The signature of the transcript, base64 (`S`); empty for `"none"`. */
  readonly signature: string;
}

/** Accepted (extension `auth`): the discover point's answer to an indirect server's Auth. */
export interface AcceptedMessage {
  /** Always {@linkcode MessageType.Accepted}. */
  readonly type: typeof MessageType.Accepted;
  /** `""` when the registration took effect, else why it was refused (`R`). */
  readonly reason: string;
}

/** More (extension `pool`): the discover point would like one more link of this name. */
export interface MoreMessage {
  /** Always {@linkcode MessageType.More}. */
  readonly type: typeof MessageType.More;
}

/** Port (extension `public-port`): a server's request for a public port, or the DP's answer. */
export interface PortMessage {
  /** Always {@linkcode MessageType.Port}. */
  readonly type: typeof MessageType.Port;
  /** The port asked for (0: any the DP allows), or granted (0 when refused) (`P`). */
  readonly port: number;
  /** In the DP's answer: `""` when granted, else why not (`R`). */
  readonly reason: string;
}

/** Any RTCP message. */
export type Message =
  | AlohaMessage
  | ConnectMessage
  | AckMessage
  | DataMessage
  | CloseMessage
  | EndMessage
  | CreditMessage
  | PingMessage
  | PongMessage
  | AuthMessage
  | AcceptedMessage
  | MoreMessage
  | PortMessage;

const TYPE_NAMES = [
  "Aloha",
  "Connect",
  "Ack",
  "Data",
  "Close",
  "End",
  "Credit",
  "Ping",
  "Pong",
  "Auth",
  "Accepted",
  "More",
  "Port",
] as const;

/** A message about one open session: Data, Credit, End or Close. */
export type SessionMessage = DataMessage | CreditMessage | EndMessage | CloseMessage;

/** Whether `message` is about one open session (Data, Credit, End or Close). */
export function isSessionMessage(message: Message): message is SessionMessage {
  return message.type === MessageType.Data || message.type === MessageType.Credit ||
    message.type === MessageType.End || message.type === MessageType.Close;
}

/** The name of a message type, for error messages and logs. */
export function messageTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `type ${type}`;
}

/** Whether `major(a) === major(b)`, the protocol's compatibility rule. */
export function isCompatibleVersion(version: number): boolean {
  return Math.floor(version / 10000) === Math.floor(VERSION / 10000);
}

type Body = Record<string, unknown>;

function fail(type: number, detail: string): never {
  throw new ProtocolError(`Cannot decode ${messageTypeName(type)} message: ${detail}`);
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function integer(type: number, body: Body, key: string, min: number, max: number): number {
  const value = body[key];
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    fail(type, `"${key}" must be an integer from ${min} to ${max}, got ${show(value)}`);
  }
  return value;
}

function text(type: number, body: Body, key: string, fallback?: string): string {
  const value = body[key];
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== "string") fail(type, `"${key}" must be a string, got ${show(value)}`);
  return value;
}

function name(type: number, body: Body): string {
  const value = text(type, body, "N", "");
  if (value.length > MAX_NAME_LENGTH) {
    fail(type, `"N" must be at most ${MAX_NAME_LENGTH} characters, got ${value.length}`);
  }
  return value;
}

function features(type: number, body: Body): readonly string[] | undefined {
  const value = body.F;
  if (value === undefined) return undefined;
  if (
    !Array.isArray(value) || value.length > MAX_FEATURES ||
    !value.every((item) => typeof item === "string" && item.length <= 64)
  ) {
    fail(type, `"F" must be a list of at most ${MAX_FEATURES} short strings, got ${show(value)}`);
  }
  return value;
}

/** An optional short string field (`A`, `K`, `P`, `S`): absent, or a string of at most `max` characters. */
function optional(type: number, body: Body, key: string, max: number): string | undefined {
  const value = body[key];
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value.length > max) {
    fail(type, `"${key}" must be a string of at most ${max} characters, got ${show(value)}`);
  }
  return value;
}

/** Longest `A`, `K`, `S` or `P` field: base64 of a key or signature, or an address. */
const MAX_SHORT_FIELD = 256;

function content(body: Body): Uint8Array {
  const value = body.C;
  // Go's encoding/json writes a nil []byte as null.
  if (value === null) return new Uint8Array(0);
  if (typeof value !== "string") {
    fail(MessageType.Data, `"C" must be a base64 string, got ${show(value)}`);
  }
  try {
    return Uint8Array.fromBase64(value);
  } catch (error) {
    fail(MessageType.Data, `"C" is not valid base64: ${(error as Error).message}`);
  }
}

const SESSION_ID_MAX = Number.MAX_SAFE_INTEGER;

/**
 * Builds a typed message from a type number and a parsed JSON body, checking every field.
 * @param type The number from the type line.
 * @param body The parsed JSON of the body line.
 * @returns The typed message.
 * @throws {ProtocolError} Naming the field that is missing or wrong, or the unknown type.
 */
export function messageFromBody(type: number, body: unknown): Message {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    fail(type, `the body must be a JSON object, got ${show(body)}`);
  }
  const fields = body as Body;
  switch (type) {
    case MessageType.Aloha: {
      const version = integer(type, fields, "V", 0, SESSION_ID_MAX);
      const role = integer(type, fields, "R", 0, 5) as Role;
      const announced = features(type, fields);
      const nonce = optional(type, fields, "A", MAX_SHORT_FIELD);
      const aloha: AlohaMessage = { type, version, role, name: name(type, fields) };
      return {
        ...aloha,
        ...(announced === undefined ? {} : { features: announced }),
        ...(nonce === undefined ? {} : { nonce }),
      };
    }
    case MessageType.Connect: {
      const key = optional(type, fields, "K", MAX_SHORT_FIELD);
      const address = optional(type, fields, "P", MAX_SHORT_FIELD);
      const sessionId = fields.X === undefined
        ? undefined
        : integer(type, fields, "X", 0, SESSION_ID_MAX);
      return {
        type,
        name: name(type, fields),
        ...(key === undefined ? {} : { key }),
        ...(address === undefined ? {} : { address }),
        ...(sessionId === undefined ? {} : { sessionId }),
      };
    }
    case MessageType.Ack:
      return {
        type,
        sessionId: integer(type, fields, "X", -1, SESSION_ID_MAX),
        reason: text(type, fields, "R", ""),
      };
    case MessageType.Data:
      return {
        type,
        sessionId: integer(type, fields, "X", 0, SESSION_ID_MAX),
        content: content(fields),
      };
    case MessageType.Close:
      return {
        type,
        sessionId: integer(type, fields, "X", 0, SESSION_ID_MAX),
        reason: text(type, fields, "R", ""),
      };
    case MessageType.End:
      return { type, sessionId: integer(type, fields, "X", 0, SESSION_ID_MAX) };
    case MessageType.Credit:
      return {
        type,
        sessionId: integer(type, fields, "X", 0, SESSION_ID_MAX),
        bytes: integer(type, fields, "W", 0, 2 ** 32),
      };
    case MessageType.Port:
      return {
        type,
        port: integer(type, fields, "P", 0, 65535),
        reason: text(type, fields, "R", ""),
      };
    case MessageType.Ping:
    case MessageType.Pong:
    case MessageType.More:
      return { type };
    case MessageType.Auth:
      return {
        type,
        method: optional(type, fields, "M", 32) ?? fail(type, `"M" is required`),
        key: optional(type, fields, "K", MAX_SHORT_FIELD) ?? "",
        signature: optional(type, fields, "S", MAX_SHORT_FIELD) ?? "",
      };
    case MessageType.Accepted:
      return { type, reason: text(type, fields, "R", "") };
    default:
      throw new ProtocolError(`Cannot decode message: unknown message type ${type}`);
  }
}

/**
 * The JSON body of a message with its wire keys, as the text codec writes it.
 * @param message Any message.
 * @returns A plain object ready for `JSON.stringify`.
 */
export function bodyOf(message: Message): Record<string, unknown> {
  switch (message.type) {
    case MessageType.Aloha: {
      const body: Body = { V: message.version, R: message.role, N: message.name };
      if (message.features !== undefined) body.F = message.features;
      if (message.nonce !== undefined) body.A = message.nonce;
      return body;
    }
    case MessageType.Connect: {
      const body: Body = { N: message.name };
      if (message.key !== undefined) body.K = message.key;
      if (message.address !== undefined) body.P = message.address;
      if (message.sessionId !== undefined) body.X = message.sessionId;
      return body;
    }
    case MessageType.Ack:
    case MessageType.Close:
      return { X: message.sessionId, R: message.reason };
    case MessageType.Data:
      return { X: message.sessionId, C: message.content.toBase64() };
    case MessageType.End:
      return { X: message.sessionId };
    case MessageType.Credit:
      return { X: message.sessionId, W: message.bytes };
    case MessageType.Port:
      return message.reason === "" ? { P: message.port } : { P: message.port, R: message.reason };
    case MessageType.Ping:
    case MessageType.Pong:
    case MessageType.More:
      return {};
    case MessageType.Auth:
      return message.method === "none"
        ? { M: message.method }
        : { M: message.method, K: message.key, S: message.signature };
    case MessageType.Accepted:
      return { R: message.reason };
  }
}
