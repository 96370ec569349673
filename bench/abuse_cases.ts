/**
 * The malformed and half-open connections that bench/abuse.ts throws at a discover point,
 * written by hand in the wire format (type as ASCII digits, "\n", one JSON line, "\n").
 * @module
 */

import { randomBytes } from "./data.ts";

/** One kind of bad connection. */
export interface AbuseCase {
  /** Short name for the report. */
  name: string;
  /** Bytes to send right after connecting (empty: send nothing). */
  payload(): Uint8Array;
  /** How long to keep the connection open waiting for the DP to close it, in ms. */
  holdMs: number;
}

const encoder = new TextEncoder();

/** One message as it goes on the wire: type line, then body line. */
function frame(type: number | string, body: string): string {
  return `${type}\n${body}\n`;
}

const aloha = (role: number, name = "", version = 10000) =>
  frame(0, JSON.stringify({ V: version, R: role, N: name }));

/** Role numbers from the protocol (Part 1). */
const Role = { directServer: 0, indirectServer: 2, indirectClient: 3 } as const;

/** 1 MiB + 64 KiB of a single byte, with no newline: over the DP's line limit. */
const OVERSIZED = new Uint8Array(1024 * 1024 + 64 * 1024).fill(0x41);

const text = (s: string) => () => encoder.encode(s);

/** Every case, used in turn. */
export const ABUSE_CASES: readonly AbuseCase[] = [
  {
    name: "random bytes",
    payload: () => randomBytes(1024 + Math.floor(Math.random() * 3072)),
    holdMs: 500,
  },
  { name: "oversized type line", payload: () => OVERSIZED, holdMs: 1000 },
  {
    name: "oversized body line",
    payload: () => {
      const out = new Uint8Array(2 + OVERSIZED.length);
      out.set(encoder.encode("0\n"));
      out.set(OVERSIZED, 2);
      return out;
    },
    holdMs: 1000,
  },
  { name: "data before aloha", payload: text(frame(3, '{"X":1,"C":"aGVsbG8="}')), holdMs: 500 },
  { name: "connect before aloha", payload: text(frame(1, '{"N":"bench"}')), holdMs: 500 },
  { name: "close before aloha", payload: text(frame(4, '{"X":1,"R":"bye"}')), holdMs: 500 },
  { name: "aloha bad json", payload: text(frame(0, '{"V":10000,"R":3,"N":')), holdMs: 500 },
  { name: "aloha not an object", payload: text(frame(0, "[1,2,3]")), holdMs: 500 },
  {
    name: "aloha wrong field types",
    payload: text(frame(0, '{"V":"x","R":"y","N":7}')),
    holdMs: 500,
  },
  {
    name: "aloha wrong version",
    payload: text(aloha(Role.indirectClient, "", 20000)),
    holdMs: 500,
  },
  { name: "aloha direct-server role", payload: text(aloha(Role.directServer)), holdMs: 500 },
  { name: "unknown message type", payload: text(frame(99, "{}")), holdMs: 500 },
  {
    name: "huge type number",
    payload: text(frame("123456789012345678901234567890", "{}")),
    holdMs: 500,
  },
  { name: "blank lines", payload: text("\r\n\n\n\r\n\n"), holdMs: 500 },
  { name: "connect nothing (half-open)", payload: () => new Uint8Array(0), holdMs: 1000 },
  { name: "half an aloha (half-open)", payload: text('0\n{"V":100'), holdMs: 1000 },
  {
    name: "client aloha then silence (half-open)",
    payload: text(aloha(Role.indirectClient)),
    holdMs: 1000,
  },
  {
    name: "client aloha then garbage",
    payload: () => encoder.encode(aloha(Role.indirectClient) + "garbage\nmore garbage\n"),
    holdMs: 500,
  },
  {
    name: "client aloha then data for no session",
    payload: text(aloha(Role.indirectClient) + frame(3, '{"X":77,"C":"aGk="}')),
    holdMs: 500,
  },
  {
    name: "client aloha, connect to unknown name",
    payload: text(aloha(Role.indirectClient) + frame(1, '{"N":"no-such-server"}')),
    holdMs: 500,
  },
  {
    name: "client aloha, connect with bad json",
    payload: text(aloha(Role.indirectClient) + frame(1, '{"N":')),
    holdMs: 500,
  },
  {
    name: "client aloha twice",
    payload: text(aloha(Role.indirectClient) + aloha(Role.indirectClient)),
    holdMs: 500,
  },
  {
    name: "server aloha then ack for no session",
    payload: text(aloha(Role.indirectServer, "abuse-server") + frame(2, '{"X":5,"R":""}')),
    holdMs: 500,
  },
  {
    name: "server aloha then bad base64 data",
    payload: text(aloha(Role.indirectServer, "abuse-server") + frame(3, '{"X":5,"C":"!!!"}')),
    holdMs: 500,
  },
];
