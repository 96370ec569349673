/**
 * Fuzzing: the message decoders against random and mutated input, and a
 * discover point against a crowd of hostile links while a real session runs.
 *
 * Inputs come from a seeded PRNG. The seed is printed; to replay a failure run
 * `RTCP_FUZZ_SEED=<seed> deno test --allow-net --allow-run --allow-read
 * --allow-env=RTCP_FUZZ_SEED tests/fuzz_test.ts`.
 */

import assert from "node:assert/strict";
import { connect, type IndirectConn, listen, ProtocolError } from "../mod.ts";
import { BinaryCodec } from "../lib/wire/binary_codec.ts";
import { type Codec, MessageDecoder, MessageDecoderStream, TextCodec } from "../lib/wire/codec.ts";
import { type Message, MessageType } from "../lib/wire/message.ts";
import {
  concatBytes,
  IC_ALOHA,
  IS_ALOHA,
  readExactly,
  settlesWithin,
  startDiscoverPoint,
} from "./_helpers.ts";

// ---- seeded randomness ------------------------------------------------------

function chooseSeed(): number {
  const granted = Deno.permissions.querySync({ name: "env", variable: "RTCP_FUZZ_SEED" });
  const fromEnv = granted.state === "granted" ? Deno.env.get("RTCP_FUZZ_SEED") : undefined;
  if (fromEnv !== undefined) return Number(fromEnv) >>> 0;
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

const SEED = chooseSeed();
console.log(
  `fuzz seed: ${SEED} (replay with RTCP_FUZZ_SEED=${SEED} and --allow-env=RTCP_FUZZ_SEED)`,
);

/** mulberry32: small, fast, and enough to make inputs reproducible. */
class Random {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(0, 255);
    return out;
  }
  /** A string with ASCII, control characters, quotes, non-BMP and lone surrogates. */
  text(max: number): string {
    const pieces = [
      "a",
      "Z",
      "0",
      " ",
      '"',
      "\\",
      "\n",
      "\r",
      "\t",
      "\u0000",
      "é",
      "😀",
      "\ud800",
      "{",
      "}",
    ];
    let out = "";
    const length = this.int(0, max);
    while (out.length < length) {
      out += this.chance(0.7) ? String.fromCharCode(this.int(0x20, 0x7e)) : this.pick(pieces);
    }
    return out.slice(0, max);
  }
}

// ---- valid messages ---------------------------------------------------------

const SESSION_IDS = [
  0,
  1,
  2,
  255,
  65535,
  2 ** 31 - 1,
  2 ** 32 - 1,
  2 ** 32,
  Number.MAX_SAFE_INTEGER,
];

function sessionId(random: Random): number {
  return random.chance(0.3) ? random.pick(SESSION_IDS) : random.int(0, 100_000);
}

function randomMessage(random: Random): Message {
  switch (random.int(0, 8)) {
    case MessageType.Aloha: {
      const aloha = {
        type: MessageType.Aloha,
        version: random.pick([0, 10000, 10001, 19999, 20000, random.int(0, 2 ** 31)]),
        role: random.int(0, 5) as 0 | 1 | 2 | 3 | 4 | 5,
        name: random.text(40),
      };
      if (random.chance(0.5)) return aloha;
      const features = Array.from({ length: random.int(0, 4) }, () => random.text(10));
      return { ...aloha, features };
    }
    case MessageType.Connect:
      return { type: MessageType.Connect, name: random.text(40) };
    case MessageType.Ack:
      return {
        type: MessageType.Ack,
        sessionId: random.chance(0.2) ? -1 : sessionId(random),
        reason: random.text(30),
      };
    case MessageType.Data:
      return {
        type: MessageType.Data,
        sessionId: sessionId(random),
        content: random.bytes(random.chance(0.1) ? 0 : random.int(1, 300)),
      };
    case MessageType.Close:
      return { type: MessageType.Close, sessionId: sessionId(random), reason: random.text(30) };
    case MessageType.End:
      return { type: MessageType.End, sessionId: sessionId(random) };
    case MessageType.Credit:
      return {
        type: MessageType.Credit,
        sessionId: sessionId(random),
        bytes: random.pick([0, 1, 65536, 2 ** 32 - 1, random.int(0, 2 ** 32 - 1)]),
      };
    case MessageType.Ping:
      return { type: MessageType.Ping };
    default:
      return { type: MessageType.Pong };
  }
}

/** A stream of encoded messages, with the offset where each message ends. */
interface Encoded {
  messages: Message[];
  ends: number[];
  bytes: Uint8Array;
}

function encodeStream(codec: Codec, messages: Message[]): Encoded {
  const parts = messages.map((message) => codec.encode(message));
  const ends: number[] = [];
  let offset = 0;
  for (const part of parts) ends.push(offset += part.length);
  return { messages, ends, bytes: concatBytes(parts) };
}

// ---- mutations --------------------------------------------------------------

const INTERESTING = [0x0a, 0x0d, 0x00, 0x22, 0x5c, 0x7b, 0x7d, 0x30, 0x39, 0xb3, 0xb6, 0xff, 0x80];

function mutate(random: Random, bytes: Uint8Array, donor: Uint8Array): Uint8Array {
  let out: Uint8Array = bytes.slice();
  const rounds = random.int(1, 3);
  for (let round = 0; round < rounds; round++) {
    const at = random.int(0, out.length);
    switch (random.int(0, 6)) {
      case 0: { // bit flips
        if (out.length === 0) break;
        for (let i = random.int(1, 3); i > 0; i--) {
          out[random.int(0, out.length - 1)]! ^= 1 << random.int(0, 7);
        }
        break;
      }
      case 1: // truncation
        out = out.slice(0, at);
        break;
      case 2: { // insertion of random or interesting bytes
        const inserted = random.chance(0.5)
          ? random.bytes(random.int(1, 16))
          : Uint8Array.from({ length: random.int(1, 4) }, () => random.pick(INTERESTING));
        out = concatBytes([out.subarray(0, at), inserted, out.subarray(at)]);
        break;
      }
      case 3: { // duplication of a slice
        const from = random.int(0, out.length);
        const slice = out.slice(from, random.int(from, out.length));
        out = concatBytes([out.subarray(0, at), slice, out.subarray(at)]);
        break;
      }
      case 4: { // splice in part of another valid stream
        const from = random.int(0, donor.length);
        const slice = donor.subarray(from, random.int(from, donor.length));
        const cut = random.int(at, out.length);
        out = concatBytes([out.subarray(0, at), slice, out.subarray(cut)]);
        break;
      }
      case 5: { // deletion of a range
        const end = random.int(at, Math.min(out.length, at + 32));
        out = concatBytes([out.subarray(0, at), out.subarray(end)]);
        break;
      }
      default: // one byte replaced by an interesting one
        if (out.length > 0) out[random.int(0, out.length - 1)] = random.pick(INTERESTING);
    }
  }
  return out;
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return i;
  return length;
}

function randomChunks(random: Random, bytes: Uint8Array): Uint8Array[] {
  if (bytes.length === 0) return random.chance(0.5) ? [] : [bytes];
  const mode = random.int(0, 3);
  if (mode === 0) return [bytes];
  if (mode === 1) return Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
  const chunks: Uint8Array[] = [];
  for (let offset = 0; offset < bytes.length;) {
    const size = random.int(1, mode === 2 ? 8 : 200);
    chunks.push(bytes.subarray(offset, offset + size));
    offset += size;
  }
  return chunks;
}

// ---- decoding ---------------------------------------------------------------

interface Outcome {
  messages: Message[];
  error: unknown;
}

/** Feeds `chunks` through a MessageDecoder; a loop that never ends is caught by a bound. */
function decodeChunks(chunks: readonly Uint8Array[], makeCodec: () => Codec): Outcome {
  const total = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  const decoder = new MessageDecoder({ codec: makeCodec() });
  const messages: Message[] = [];
  try {
    for (const chunk of chunks) {
      decoder.push(chunk);
      for (let message = decoder.next(); message !== undefined; message = decoder.next()) {
        messages.push(message);
        // Every message takes at least one byte: more messages than bytes means a loop.
        if (messages.length > total) throw new Error("Decoder loops: more messages than bytes");
      }
    }
    decoder.finish();
    return { messages, error: undefined };
  } catch (error) {
    return { messages, error };
  }
}

async function decodeStream(
  chunks: readonly Uint8Array[],
  makeCodec: () => Codec,
): Promise<Outcome> {
  const messages: Message[] = [];
  try {
    const stream = ReadableStream.from(chunks).pipeThrough(
      new MessageDecoderStream({ codec: makeCodec() }),
    );
    for await (const message of stream) messages.push(message);
    return { messages, error: undefined };
  } catch (error) {
    return { messages, error };
  }
}

function describe(input: Uint8Array): string {
  const hex = input.subarray(0, 200).toHex();
  return `input (${input.length} bytes): ${hex}${input.length > 200 ? "..." : ""}`;
}

function assertOnlyProtocolErrors(outcome: Outcome, context: string): void {
  if (outcome.error !== undefined && !(outcome.error instanceof ProtocolError)) {
    assert.fail(`${context}: threw ${Deno.inspect(outcome.error)}, expected only ProtocolError`);
  }
}

const CODECS: readonly [string, (maxLineBytes?: number) => Codec][] = [
  ["text", (maxLineBytes) => new TextCodec({ maxLineBytes })],
  ["binary", (maxLineBytes) => new BinaryCodec({ maxLineBytes })],
];

for (const [codecName, codecOf] of CODECS) {
  Deno.test(`MessageDecoder (${codecName}) round-trips random valid messages in any chunking`, () => {
    const random = new Random(SEED ^ 0x1111);
    for (let round = 0; round < 500; round++) {
      const messages = Array.from({ length: random.int(1, 8) }, () => randomMessage(random));
      const { bytes } = encodeStream(codecOf(), messages);
      const context = `seed ${SEED}, ${codecName} round ${round}, ${describe(bytes)}`;
      const outcome = decodeChunks(randomChunks(random, bytes), () => codecOf());
      assert.equal(outcome.error, undefined, `${context}: ${outcome.error}`);
      assert.deepEqual(outcome.messages, messages, context);
    }
  });

  Deno.test(`MessageDecoder (${codecName}) throws only ProtocolError on random and mutated input`, async () => {
    const random = new Random(SEED ^ (codecName === "text" ? 0x2222 : 0x3333));
    for (let round = 0; round < 3000; round++) {
      const maxLineBytes = random.chance(0.2) ? random.int(8, 200) : undefined;
      const makeCodec = () => codecOf(maxLineBytes);
      const original = encodeStream(
        codecOf(),
        Array.from({ length: random.int(1, 6) }, () => randomMessage(random)),
      );
      const donor = encodeStream(codecOf(), [randomMessage(random), randomMessage(random)]).bytes;
      const garbage = random.chance(0.15);
      const input = garbage
        ? random.bytes(random.int(0, 300))
        : mutate(random, original.bytes, donor);
      const context = `seed ${SEED}, ${codecName} round ${round}, maxLineBytes ${maxLineBytes}, ${
        describe(input)
      }`;
      const whole = decodeChunks([input], makeCodec);
      assertOnlyProtocolErrors(whole, `${context} (one chunk)`);
      const chunked = decodeChunks(randomChunks(random, input), makeCodec);
      assertOnlyProtocolErrors(chunked, `${context} (chunked)`);
      // Decoding does not depend on how the bytes were split.
      assert.deepEqual(
        chunked.messages,
        whole.messages,
        `${context}: chunking changed the messages`,
      );
      assert.equal(
        chunked.error === undefined,
        whole.error === undefined,
        `${context}: chunking changed the outcome: one chunk ${whole.error}, chunked ${chunked.error}`,
      );
      if (!garbage && maxLineBytes === undefined) {
        // Messages wholly before the first changed byte decode as they were.
        const unchanged = firstDifference(input, original.bytes);
        const intact = original.ends.filter((end) => end <= unchanged).length;
        assert.ok(whole.messages.length >= intact, `${context}: lost an unchanged prefix message`);
        assert.deepEqual(
          whole.messages.slice(0, intact),
          original.messages.slice(0, intact),
          context,
        );
      }
      if (round % 10 === 0) {
        const streamed = await decodeStream(randomChunks(random, input), makeCodec);
        assertOnlyProtocolErrors(streamed, `${context} (MessageDecoderStream)`);
        assert.equal(
          streamed.error === undefined,
          whole.error === undefined,
          `${context} (stream)`,
        );
        // An erroring stream drops what it had queued and not yet delivered: a prefix is all it owes.
        const expected = whole.error === undefined
          ? whole.messages
          : whole.messages.slice(0, streamed.messages.length);
        assert.deepEqual(streamed.messages, expected, `${context} (MessageDecoderStream)`);
      }
    }
  });
}

Deno.test("TextCodec refuses a type line with a stray carriage return, in any chunking", () => {
  // "4\r\r\n" is not a type line: only one "\r" may precede "\n". Whole, it decodes as End
  // (4 * 10 + 0x0d - 0x30 = 5); split after the second "\r", it is refused.
  const input = new TextEncoder().encode('4\r\r\n{"X":1}\n');
  for (let split = 0; split <= input.length; split++) {
    const chunks = [input.subarray(0, split), input.subarray(split)];
    const outcome = decodeChunks(chunks, () => new TextCodec());
    assert.ok(
      outcome.error instanceof ProtocolError,
      `split at ${split}: expected a ProtocolError, decoded ${Deno.inspect(outcome.messages)}`,
    );
    assert.deepEqual(outcome.messages, [], `split at ${split}`);
  }
});

// ---- the network ------------------------------------------------------------

const MAX_LINE = 4096;
const HANDSHAKE_TIMEOUT = 150;

/** One hostile link's bytes, and whether it half-closes after them (when the DP could wait forever). */
interface Hostility {
  kind: string;
  bytes: Uint8Array;
  closeWrite: boolean;
}

function hostility(random: Random, index: number): Hostility {
  const text = (kind: string, value: string, closeWrite = false): Hostility => ({
    kind,
    bytes: new TextEncoder().encode(value),
    closeWrite,
  });
  const kinds: (() => Hostility)[] = [
    () => {
      const bytes = random.bytes(random.int(1, 2000));
      bytes[0] = 0x41; // Not a digit: never a valid start.
      return { kind: "garbage", bytes, closeWrite: false };
    },
    () => text("oversized line", `0\n{"N":"${"x".repeat(MAX_LINE + random.int(1, 5000))}`),
    () =>
      text(
        "oversized line after Aloha",
        IC_ALOHA("big") + `1\n{"N":"${"y".repeat(MAX_LINE * 2)}"}\n`,
      ),
    () => text("Data before Aloha", '3\n{"X":1,"C":"aGk="}\n'),
    () => text("Connect before Aloha", '1\n{"N":"victim"}\n'),
    () => text("half Aloha", '0\n{"V":10000,"R":2,'),
    () => text("type line only", "0\n"),
    () => text("silence", ""),
    () => text("wrong version", '0\n{"V":20000,"R":3,"N":"x"}\n'),
    () => text("direct role", '0\n{"V":10000,"R":0,"N":"x"}\n'),
    () => text("discover point role", '0\n{"V":10000,"R":4,"N":"x"}\n'),
    () => text("body not an object", "0\n[1,2,3]\n"),
    () => text("bad JSON", '0\n{"V":10000,"R":3,\n'),
    () => text("unknown type", "42\n{}\n"),
    () => text("Aloha twice", IC_ALOHA("c") + IC_ALOHA("c")),
    () =>
      text(
        "client Data before Ack",
        IC_ALOHA("c") + '1\n{"N":"victim"}\n3\n{"X":999,"C":"aGk="}\n',
      ),
    () => text("client to nobody", IC_ALOHA("c") + '1\n{"N":"nobody"}\n'),
    () => text("client then garbage", IC_ALOHA("c") + "\u0001\u0002\n\n", true),
    () => text("server Ack without Connect", IS_ALOHA(`hostile-${index}`) + '2\n{"X":1,"R":""}\n'),
    () =>
      text("server Data for no session", IS_ALOHA(`hostile-${index}`) + '3\n{"X":5,"C":"aGk="}\n'),
    () => text("server Connect", IS_ALOHA(`hostile-${index}`) + '1\n{"N":"x"}\n'),
    () => text("server End without half-close", IS_ALOHA(`hostile-${index}`) + '5\n{"X":1}\n'),
    () => text("server Ping without keepalive", IS_ALOHA(`hostile-${index}`) + "7\n{}\n"),
    () => {
      const valid = new TextEncoder().encode(
        IC_ALOHA("m") + '1\n{"N":"victim"}\n3\n{"X":1,"C":"aGk="}\n4\n{"X":1,"R":""}\n',
      );
      return {
        kind: "mutated client stream",
        bytes: mutate(random, valid, new TextEncoder().encode(IS_ALOHA("d"))),
        closeWrite: true,
      };
    },
  ];
  return random.pick(kinds)();
}

/** Runs one hostile link: sends its bytes and reads until the DP ends the link. */
async function runHostile(address: string, hostile: Hostility): Promise<void> {
  const [hostname, port] = address.split(":");
  const conn = await Deno.connect({ hostname: hostname!, port: Number(port) });
  try {
    try {
      for (let written = 0; written < hostile.bytes.length;) {
        written += await conn.write(hostile.bytes.subarray(written));
      }
      if (hostile.closeWrite) await conn.closeWrite();
    } catch {
      // The DP may end the link before it has read everything: that is a fine answer.
    }
    const buffer = new Uint8Array(16 * 1024);
    for (;;) {
      let count: number | null;
      try {
        count = await conn.read(buffer);
      } catch (error) {
        if (error instanceof Deno.errors.ConnectionReset) return;
        throw error;
      }
      if (count === null) return;
    }
  } finally {
    conn.close();
  }
}

Deno.test("DiscoverPoint survives hundreds of hostile links while a real session echoes intact", async (t) => {
  const random = new Random(SEED ^ 0x4444);
  await using running = await startDiscoverPoint({
    maxLineBytes: MAX_LINE,
    handshakeTimeout: HANDSHAKE_TIMEOUT,
    ackTimeout: 1000,
  });
  const listener = listen({ dp: running.address, name: "victim" });
  const echoes: Promise<void>[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      echoes.push(
        conn.readable.pipeTo(conn.writable).catch(() => {
          // Hostile clients vanish mid-session; their sessions end with errors.
        }).finally(() => conn.close()),
      );
    }
  })();
  const clients: IndirectConn[] = [];
  try {
    await listener.ready;
    const client = await connect({ dp: running.address, name: "victim", clientName: "real" });
    clients.push(client);
    const storm = Promise.withResolvers<void>();
    const kinds = new Map<string, number>();

    const echoing = (async () => {
      const writer = client.writable.getWriter();
      const reader = client.readable.getReader();
      let rounds = 0;
      let done = false;
      void storm.promise.then(() => done = true);
      // Keep echoing for as long as the storm lasts, and at least a few rounds.
      while (!done || rounds < 5) {
        const data = new Uint8Array(random.int(1, 3000));
        for (let i = 0; i < data.length; i++) data[i] = (rounds * 31 + i) & 0xff;
        const [, echoed] = await Promise.all([
          writer.write(data),
          readExactly(reader, data.length),
        ]);
        assert.deepEqual(echoed, data, `echo round ${rounds} (seed ${SEED})`);
        rounds++;
      }
      writer.releaseLock();
      reader.releaseLock();
      return rounds;
    })();
    echoing.catch(() => {}); // Awaited in its own step below.

    await t.step("300 hostile links each end without harming anyone", async () => {
      const queue = Array.from({ length: 300 }, (_, i) => hostility(random, i));
      for (const hostile of queue) kinds.set(hostile.kind, (kinds.get(hostile.kind) ?? 0) + 1);
      const workers = Array.from({ length: 30 }, async () => {
        for (let hostile = queue.shift(); hostile; hostile = queue.shift()) {
          await settlesWithin(
            runHostile(running.address, hostile),
            `the DP to end a "${hostile.kind}" link (seed ${SEED})`,
          );
        }
      });
      try {
        await Promise.all(workers);
      } finally {
        storm.resolve();
      }
    });
    await t.step("the real session echoed throughout", async () => {
      const rounds = await settlesWithin(echoing, "the real session's echo rounds");
      assert.ok(rounds >= 5);
    });
    await t.step("only the real server is registered, and a new session works", async () => {
      assert.deepEqual([...running.dp.servers], [["victim", 1]]);
      const fresh = await connect({ dp: running.address, name: "victim" });
      clients.push(fresh);
      const data = new TextEncoder().encode("still here");
      const writer = fresh.writable.getWriter();
      const [, echoed] = await Promise.all([
        writer.write(data),
        readExactly(fresh.readable.getReader(), data.length),
      ]);
      writer.releaseLock();
      assert.deepEqual(echoed, data);
    });
    console.log(`hostile kinds: ${JSON.stringify(Object.fromEntries(kinds))}`);
  } finally {
    for (const client of clients) client.close();
    await Promise.all(clients.map((client) => client.closed));
    listener.close();
    await serving;
    await Promise.all(echoes);
  }
});
