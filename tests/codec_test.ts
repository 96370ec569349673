import assert from "node:assert/strict";
import {
  MAX_DATA_BYTES,
  MessageDecoder,
  MessageDecoderStream,
  MessageEncoderStream,
  TextCodec,
} from "../lib/wire/codec.ts";
import { ByteQueue } from "../lib/wire/_bytes.ts";
import { BinaryCodec } from "../lib/wire/binary_codec.ts";
import { ProtocolError } from "../lib/errors.ts";
import {
  bodyOf,
  type Message,
  messageFromBody,
  MessageType,
  Role,
  VERSION,
} from "../lib/wire/message.ts";

const text = new TextEncoder();

function bytes(value: string): Uint8Array {
  return text.encode(value);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function pseudoRandomBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let state = seed;
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    out[i] = state >>> 24;
  }
  return out;
}

/** Decodes all of `input` with a fresh pull decoder; throws if a partial message remains. */
function decodeAll(input: Uint8Array, maxLineBytes?: number): Message[] {
  const decoder = new MessageDecoder({ maxLineBytes });
  decoder.push(input);
  const messages: Message[] = [];
  for (let message = decoder.next(); message !== undefined; message = decoder.next()) {
    messages.push(message);
  }
  decoder.finish();
  return messages;
}

/** Decodes `chunks` through a MessageDecoderStream. */
function decodeStream(
  chunks: readonly Uint8Array[],
  maxLineBytes?: number,
): Promise<Message[]> {
  return Array.fromAsync(
    ReadableStream.from(chunks).pipeThrough(new MessageDecoderStream({ maxLineBytes })),
  );
}

const ALL_MESSAGES: readonly [string, Message][] = [
  ["Aloha without F", {
    type: MessageType.Aloha,
    version: VERSION,
    role: Role.IndirectServer,
    name: "wire",
  }],
  ["Aloha with empty name", {
    type: MessageType.Aloha,
    version: VERSION,
    role: Role.DiscoverPoint,
    name: "",
  }],
  ["Aloha AbortVersion", {
    type: MessageType.Aloha,
    version: 20000,
    role: Role.AbortVersion,
    name: "",
  }],
  [
    "Aloha with F",
    {
      type: MessageType.Aloha,
      version: VERSION,
      role: Role.IndirectClient,
      name: "client \u00e9\u{1F600}",
      features: ["half-close", "flow-control"],
    },
  ],
  ["Aloha with empty F", {
    type: MessageType.Aloha,
    version: VERSION,
    role: Role.IndirectClient,
    name: "c",
    features: [],
  }],
  ["Connect", { type: MessageType.Connect, name: "printer" }],
  ["Connect with address", { type: MessageType.Connect, name: "127.0.0.1:54321" }],
  ["Connect with quotes and newline", { type: MessageType.Connect, name: 'a"b\nc\\d' }],
  ["Ack", { type: MessageType.Ack, sessionId: 7, reason: "" }],
  ["Ack X=0", { type: MessageType.Ack, sessionId: 0, reason: "" }],
  ["Ack X=-1", { type: MessageType.Ack, sessionId: -1, reason: 'no indirect server named "x"' }],
  ["Ack max X", { type: MessageType.Ack, sessionId: Number.MAX_SAFE_INTEGER, reason: "" }],
  ["Data", { type: MessageType.Data, sessionId: 7, content: bytes("hello") }],
  ["Data empty", { type: MessageType.Data, sessionId: 1, content: new Uint8Array(0) }],
  ["Data 1 byte", { type: MessageType.Data, sessionId: 1, content: new Uint8Array([0]) }],
  ["Data 2 bytes", { type: MessageType.Data, sessionId: 1, content: new Uint8Array([0xff, 0x0a]) }],
  [
    "Data 64 KiB binary",
    { type: MessageType.Data, sessionId: 42, content: pseudoRandomBytes(MAX_DATA_BYTES, 1) },
  ],
  ["Close", { type: MessageType.Close, sessionId: 7, reason: "" }],
  ["Close with reason", { type: MessageType.Close, sessionId: 3, reason: "link lost: reset" }],
  ["End", { type: MessageType.End, sessionId: 9 }],
  ["Credit", { type: MessageType.Credit, sessionId: 9, bytes: 65536 }],
  ["Credit 0", { type: MessageType.Credit, sessionId: 0, bytes: 0 }],
  ["Credit max", { type: MessageType.Credit, sessionId: 1, bytes: 2 ** 32 }],
  ["Ping", { type: MessageType.Ping }],
  ["Pong", { type: MessageType.Pong }],
];

Deno.test("TextCodec round-trips every message type", async (t) => {
  const codec = new TextCodec();
  for (const [label, message] of ALL_MESSAGES) {
    await t.step(label, () => {
      const encoded = codec.encode(message);
      const queue = new ByteQueue();
      queue.push(encoded);
      assert.deepEqual(codec.decode(queue), message);
      assert.equal(queue.length, 0);
    });
  }
});

Deno.test("TextCodec keeps names byte for byte, short or long, ASCII or not, and as UTF-8", () => {
  const codec = new TextCodec();
  const names = ["a", "é", "名前", "x".repeat(250), "x".repeat(300), "é".repeat(200), "🦕 dino"];
  for (const name of names) {
    const encoded = codec.encode({ type: MessageType.Connect, name });
    const expected = new TextEncoder().encode(`1\n${JSON.stringify({ N: name })}\n`);
    assert.deepEqual(encoded, expected, name);
    const queue = new ByteQueue();
    queue.push(encoded);
    assert.deepEqual(codec.decode(queue), { type: MessageType.Connect, name });
  }
  const invalid = new ByteQueue();
  invalid.push(
    Uint8Array.of(0x31, 0x0a, 0x7b, 0x22, 0x4e, 0x22, 0x3a, 0x22, 0xc3, 0x22, 0x7d, 0x0a),
  );
  assert.throws(() => codec.decode(invalid), /Connect message: the body is not valid JSON/);
});

Deno.test("TextCodec reads Connect, Ack, End and Close lines as JSON would, near misses too", () => {
  const codec = new TextCodec();
  const bodies: [number, string[]][] = [
    [MessageType.End, [
      '{"X":7}',
      '{"X":0}',
      '{"X":123456789012345}',
      '{"X":1234567890123456}',
      '{"X":7,"R":""}',
      '{"X":07}',
      '{"X":-1}',
      '{"X":7.5}',
      '{"X":7e2}',
      '{"X":7 }',
      '{"X":7}}',
      '{"X":}',
      '{"X":"7"}',
    ]],
    [MessageType.Ack, [
      '{"X":7,"R":""}',
      '{"X":7}',
      '{"X":7,"R":"no"}',
      '{"X":-1,"R":"no"}',
      '{"X":7,"R":""} ',
      '{"X":7,"R":"",}',
      '{"X":7,"R":"" }',
      '{"X":00,"R":""}',
    ]],
    [MessageType.Close, ['{"X":7,"R":""}', '{"X":7}', '{"X":7,"R":"bye"}', '{"X":7,"R":1}']],
    [MessageType.Connect, [
      '{"N":"wire"}',
      '{"N":""}',
      '{"N":"127.0.0.1:40494"}',
      '{"N":"}',
      '{"N":"a\\"b"}',
      '{"N":"a","K":"x"}',
      '{"N":"a","X":7}',
      '{"N":"a","X":-1}',
      '{"N":"a","X":1.5}',
      '{"N":"\u00e9"}',
      '{"N":"é"}',
      '{"N":"\t"}',
      '{"N":"	"}',
      `{"N":"${"x".repeat(1024)}"}`,
      `{"N":"${"x".repeat(1025)}"}`,
      '{"N":7}',
    ]],
  ];
  for (const [type, list] of bodies) {
    for (const body of list) {
      let expected: Message | RegExp;
      try {
        expected = messageFromBody(type, JSON.parse(body));
      } catch (error) {
        expected = error instanceof SyntaxError
          ? /the body is not valid JSON/
          : new RegExp(RegExp.escape((error as Error).message));
      }
      const queue = new ByteQueue();
      queue.push(bytes(`${type}\n${body}\n`));
      if (expected instanceof RegExp) {
        assert.throws(() => codec.decode(queue), expected, body);
      } else assert.deepEqual(codec.decode(queue), expected, body);
    }
  }
});

Deno.test("TextCodec writes Connect, Ack, End and Close lines byte for byte as JSON.stringify would", () => {
  const codec = new TextCodec();
  const ids = [0, 1, 9, 10, 99, 100, 12345, 2 ** 31 - 1, 10 ** 15 - 1, 10 ** 15, 2 ** 53 - 1];
  const names = ["", "wire", "127.0.0.1:40494", 'a"b', "a\\b", "é", "\t", "~", "x".repeat(300)];
  const messages: Message[] = [
    ...ids.flatMap((sessionId): Message[] => [
      { type: MessageType.End, sessionId },
      { type: MessageType.Ack, sessionId, reason: "" },
      { type: MessageType.Close, sessionId, reason: "" },
      { type: MessageType.Close, sessionId, reason: "bye" },
    ]),
    { type: MessageType.Ack, sessionId: -1, reason: "no" },
    ...names.map((name): Message => ({ type: MessageType.Connect, name })),
    { type: MessageType.Connect, name: "wire", key: "ed25519:k", address: "127.0.0.1:1" },
    { type: MessageType.Connect, name: "wire", sessionId: 7 },
  ];
  for (const message of messages) {
    const expected = `${message.type}\n${JSON.stringify(bodyOf(message))}\n`;
    assert.equal(new TextDecoder().decode(codec.encode(message)), expected, expected);
  }
});

Deno.test("TextCodec.encode() writes the exact lines of PROTOCOL.md", () => {
  const codec = new TextCodec();
  const decoded = new TextDecoder();
  const cases: [Message, string][] = [
    [
      { type: MessageType.Aloha, version: 10000, role: Role.IndirectServer, name: "wire" },
      '0\n{"V":10000,"R":2,"N":"wire"}\n',
    ],
    [
      {
        type: MessageType.Aloha,
        version: 10000,
        role: Role.IndirectClient,
        name: "",
        features: ["x"],
      },
      '0\n{"V":10000,"R":3,"N":"","F":["x"]}\n',
    ],
    [{ type: MessageType.Connect, name: "wire" }, '1\n{"N":"wire"}\n'],
    [{ type: MessageType.Connect, name: "wire", sessionId: 3 }, '1\n{"N":"wire","X":3}\n'],
    [{ type: MessageType.Ack, sessionId: 7, reason: "" }, '2\n{"X":7,"R":""}\n'],
    [{ type: MessageType.Ack, sessionId: -1, reason: "no" }, '2\n{"X":-1,"R":"no"}\n'],
    [{ type: MessageType.Data, sessionId: 7, content: bytes("hi") }, '3\n{"X":7,"C":"aGk="}\n'],
    [{ type: MessageType.Data, sessionId: 7, content: new Uint8Array(0) }, '3\n{"X":7,"C":""}\n'],
    [{ type: MessageType.Close, sessionId: 7, reason: "" }, '4\n{"X":7,"R":""}\n'],
    [{ type: MessageType.End, sessionId: 7 }, '5\n{"X":7}\n'],
    [{ type: MessageType.Credit, sessionId: 7, bytes: 10 }, '6\n{"X":7,"W":10}\n'],
    [{ type: MessageType.Ping }, "7\n{}\n"],
    [{ type: MessageType.Pong }, "8\n{}\n"],
  ];
  for (const [message, wire] of cases) assert.equal(decoded.decode(codec.encode(message)), wire);
});

Deno.test("MessageDecoderStream round-trips every message type through MessageEncoderStream", async () => {
  const messages = ALL_MESSAGES.map(([, message]) => message);
  const decoded = await Array.fromAsync(
    ReadableStream.from(messages)
      .pipeThrough(new MessageEncoderStream())
      .pipeThrough(new MessageDecoderStream()),
  );
  assert.deepEqual(decoded, messages);
});

Deno.test("MessageEncoderStream emits one Uint8Array per message", async () => {
  const messages = ALL_MESSAGES.map(([, message]) => message);
  const chunks = await Array.fromAsync(
    ReadableStream.from(messages).pipeThrough(new MessageEncoderStream()),
  );
  assert.equal(chunks.length, messages.length);
  for (const [i, chunk] of chunks.entries()) {
    assert.ok(chunk instanceof Uint8Array);
    assert.deepEqual(decodeAll(chunk), [messages[i]]);
  }
});

Deno.test("MessageDecoder decodes a stream split at every byte boundary", () => {
  // Everything but the 64 KiB Data, so the quadratic loop stays fast.
  const messages = ALL_MESSAGES.map(([, message]) => message).filter((message) =>
    message.type !== MessageType.Data || message.content.length < 1024
  );
  const codec = new TextCodec();
  const wire = concat(messages.map((message) => codec.encode(message)));
  for (let split = 0; split <= wire.length; split++) {
    const decoder = new MessageDecoder();
    const out: Message[] = [];
    for (const part of [wire.subarray(0, split), wire.subarray(split)]) {
      decoder.push(part);
      for (let message = decoder.next(); message !== undefined; message = decoder.next()) {
        out.push(message);
      }
    }
    decoder.finish();
    assert.deepEqual(out, messages, `split at byte ${split}`);
  }
});

Deno.test("MessageDecoderStream decodes a stream split at every byte boundary", async () => {
  const messages: Message[] = [
    { type: MessageType.Aloha, version: VERSION, role: Role.IndirectServer, name: "s" },
    { type: MessageType.Connect, name: "c" },
    { type: MessageType.Ack, sessionId: 1, reason: "" },
    { type: MessageType.Data, sessionId: 1, content: bytes("abc") },
    { type: MessageType.Close, sessionId: 1, reason: "bye" },
  ];
  const codec = new TextCodec();
  const wire = concat(messages.map((message) => codec.encode(message)));
  for (let split = 0; split <= wire.length; split++) {
    const out = await decodeStream([wire.subarray(0, split), wire.subarray(split)]);
    assert.deepEqual(out, messages, `split at byte ${split}`);
  }
});

Deno.test("MessageDecoderStream decodes every message type fed in 1-byte chunks", async () => {
  const messages = ALL_MESSAGES.map(([, message]) => message);
  const codec = new TextCodec();
  const wire = concat(messages.map((message) => codec.encode(message)));
  const chunks = Array.from({ length: wire.length }, (_, i) => wire.subarray(i, i + 1));
  assert.deepEqual(await decodeStream(chunks), messages);
});

Deno.test("MessageDecoder accepts \\r\\n line ends", () => {
  const input = bytes(
    '0\r\n{"V":10000,"R":2,"N":"wire"}\r\n3\r\n{"X":7,"C":"aGk="}\r\n4\n{"X":7,"R":""}\r\n',
  );
  const expected: Message[] = [
    { type: MessageType.Aloha, version: 10000, role: Role.IndirectServer, name: "wire" },
    { type: MessageType.Data, sessionId: 7, content: bytes("hi") },
    { type: MessageType.Close, sessionId: 7, reason: "" },
  ];
  assert.deepEqual(decodeAll(input), expected);
  for (let split = 0; split <= input.length; split++) {
    const decoder = new MessageDecoder();
    const out: Message[] = [];
    for (const part of [input.subarray(0, split), input.subarray(split)]) {
      decoder.push(part);
      for (let message = decoder.next(); message !== undefined; message = decoder.next()) {
        out.push(message);
      }
    }
    decoder.finish();
    assert.deepEqual(out, expected, `split at byte ${split}`);
  }
});

Deno.test("MessageDecoder reads what Go's encoding/json writes", () => {
  assert.deepEqual(decodeAll(bytes('3\n{"X":7,"C":null}\n')), [
    { type: MessageType.Data, sessionId: 7, content: new Uint8Array(0) },
  ]);
  // Keys in any order, whitespace inside the JSON, unknown keys ignored, optional N/R absent.
  assert.deepEqual(
    decodeAll(bytes('3\n{ "C" : "AAEC", "X" : 2, "Z": 1 }\n1\n{}\n2\n{"X":3}\n4\n{"X":3}\n')),
    [
      { type: MessageType.Data, sessionId: 2, content: new Uint8Array([0, 1, 2]) },
      { type: MessageType.Connect, name: "" },
      { type: MessageType.Ack, sessionId: 3, reason: "" },
      { type: MessageType.Close, sessionId: 3, reason: "" },
    ],
  );
  // A 12-digit type line with leading zeros is still a type line.
  assert.deepEqual(decodeAll(bytes('000000000004\n{"X":1,"R":""}\n')), [
    { type: MessageType.Close, sessionId: 1, reason: "" },
  ]);
});

const MAX_ID = Number.MAX_SAFE_INTEGER;

const MALFORMED: readonly [string, string, string | RegExp][] = [
  [
    "non-digit type line",
    'x\n{"X":1}\n',
    "Cannot decode message: the type line must be decimal digits, got byte 0x78 at offset 0",
  ],
  [
    "non-digit type line before its newline arrives",
    "1a",
    "Cannot decode message: the type line must be decimal digits, got byte 0x61 at offset 1",
  ],
  [
    "negative type",
    "-1\n{}\n",
    "Cannot decode message: the type line must be decimal digits, got byte 0x2d at offset 0",
  ],
  [
    "carriage return inside the type line",
    "1\r2\n{}\n",
    "Cannot decode message: the type line must be decimal digits, got byte 0x0d at offset 1",
  ],
  ["empty type line", '\n{"X":1}\n', "Cannot decode message: the type line is empty"],
  ["empty type line with \\r\\n", '\r\n{"X":1}\n', "Cannot decode message: the type line is empty"],
  [
    "over-long type line",
    "0000000000004\n{}\n",
    "Cannot decode message: the type line is longer than 12 bytes",
  ],
  [
    "over-long type line without a newline",
    "1".repeat(13),
    "Cannot decode message: the type line is longer than 12 bytes",
  ],
  ["unknown type", "13\n{}\n", "Cannot decode message: unknown message type 13"],
  ["unknown large type", "123456\n{}\n", "Cannot decode message: unknown message type 123456"],
  [
    "body not JSON",
    '4\n{X:1,"R":""}\n',
    /^Cannot decode Close message: the body is not valid JSON: /,
  ],
  [
    "truncated JSON body",
    '4\n{"X":1\n',
    /^Cannot decode Close message: the body is not valid JSON: /,
  ],
  ["empty body", "7\n\n", /^Cannot decode Ping message: the body is not valid JSON: /],
  [
    "body is an array",
    "4\n[1]\n",
    "Cannot decode Close message: the body must be a JSON object, got [1]",
  ],
  [
    "body is null",
    "7\nnull\n",
    "Cannot decode Ping message: the body must be a JSON object, got null",
  ],
  [
    "body is a number",
    "8\n3\n",
    "Cannot decode Pong message: the body must be a JSON object, got 3",
  ],
  [
    "body is a string",
    '1\n"N"\n',
    'Cannot decode Connect message: the body must be a JSON object, got "N"',
  ],
  ["invalid UTF-8", '1\n{"N":"\xff"}\n', /^Cannot decode Connect message: the body is not valid/],
  [
    "Aloha missing V",
    '0\n{"R":2,"N":"s"}\n',
    `Cannot decode Aloha message: "V" must be an integer from 0 to ${MAX_ID}, got undefined`,
  ],
  [
    "Aloha V a string",
    '0\n{"V":"10000","R":2,"N":"s"}\n',
    `Cannot decode Aloha message: "V" must be an integer from 0 to ${MAX_ID}, got "10000"`,
  ],
  [
    "Aloha V a fraction",
    '0\n{"V":1.5,"R":2,"N":"s"}\n',
    `Cannot decode Aloha message: "V" must be an integer from 0 to ${MAX_ID}, got 1.5`,
  ],
  [
    "Aloha missing R",
    '0\n{"V":10000,"N":"s"}\n',
    'Cannot decode Aloha message: "R" must be an integer from 0 to 5, got undefined',
  ],
  [
    "Aloha R out of range",
    '0\n{"V":10000,"R":6,"N":"s"}\n',
    'Cannot decode Aloha message: "R" must be an integer from 0 to 5, got 6',
  ],
  [
    "Aloha N a number",
    '0\n{"V":10000,"R":2,"N":5}\n',
    'Cannot decode Aloha message: "N" must be a string, got 5',
  ],
  [
    "Aloha N too long",
    `0\n{"V":10000,"R":2,"N":"${"n".repeat(1025)}"}\n`,
    'Cannot decode Aloha message: "N" must be at most 1024 characters, got 1025',
  ],
  [
    "Aloha F not a list",
    '0\n{"V":10000,"R":2,"N":"s","F":"x"}\n',
    'Cannot decode Aloha message: "F" must be a list of at most 32 short strings, got "x"',
  ],
  [
    "Connect N null",
    '1\n{"N":null}\n',
    'Cannot decode Connect message: "N" must be a string, got null',
  ],
  [
    "Ack missing X",
    '2\n{"R":""}\n',
    `Cannot decode Ack message: "X" must be an integer from -1 to ${MAX_ID}, got undefined`,
  ],
  [
    "Ack X below -1",
    '2\n{"X":-2,"R":""}\n',
    `Cannot decode Ack message: "X" must be an integer from -1 to ${MAX_ID}, got -2`,
  ],
  [
    "Ack X above the safe range",
    '2\n{"X":9007199254740992,"R":""}\n',
    `Cannot decode Ack message: "X" must be an integer from -1 to ${MAX_ID}, got 9007199254740992`,
  ],
  [
    "Ack R a number",
    '2\n{"X":1,"R":1}\n',
    'Cannot decode Ack message: "R" must be a string, got 1',
  ],
  [
    "Data missing X",
    '3\n{"C":""}\n',
    `Cannot decode Data message: "X" must be an integer from 0 to ${MAX_ID}, got undefined`,
  ],
  [
    "Data X = -1",
    '3\n{"X":-1,"C":""}\n',
    `Cannot decode Data message: "X" must be an integer from 0 to ${MAX_ID}, got -1`,
  ],
  [
    "Data X a string",
    '3\n{"X":"1","C":""}\n',
    `Cannot decode Data message: "X" must be an integer from 0 to ${MAX_ID}, got "1"`,
  ],
  [
    "Data missing C",
    '3\n{"X":1}\n',
    'Cannot decode Data message: "C" must be a base64 string, got undefined',
  ],
  [
    "Data C a number",
    '3\n{"X":1,"C":12}\n',
    'Cannot decode Data message: "C" must be a base64 string, got 12',
  ],
  [
    "Data C bad base64",
    '3\n{"X":1,"C":"!!!!"}\n',
    /^Cannot decode Data message: "C" is not valid base64: /,
  ],
  [
    "Data C bad padding",
    '3\n{"X":1,"C":"A==="}\n',
    /^Cannot decode Data message: "C" is not valid base64: /,
  ],
  [
    "Close missing X",
    '4\n{"R":""}\n',
    `Cannot decode Close message: "X" must be an integer from 0 to ${MAX_ID}, got undefined`,
  ],
  [
    "Close R a list",
    '4\n{"X":1,"R":[]}\n',
    'Cannot decode Close message: "R" must be a string, got []',
  ],
  [
    "End missing X",
    "5\n{}\n",
    `Cannot decode End message: "X" must be an integer from 0 to ${MAX_ID}, got undefined`,
  ],
  [
    "Credit W negative",
    '6\n{"X":1,"W":-1}\n',
    'Cannot decode Credit message: "W" must be an integer from 0 to 4294967296, got -1',
  ],
];

Deno.test("MessageDecoder rejects malformed input with a specific ProtocolError", async (t) => {
  const latin1 = (value: string) => Uint8Array.from(value, (char) => char.charCodeAt(0));
  for (const [label, input, message] of MALFORMED) {
    await t.step(label, () => {
      // Latin-1 so "\xff" stays one invalid byte; every other input here is ASCII.
      assert.throws(() => decodeAll(latin1(input)), (error: unknown) => {
        assert.ok(error instanceof ProtocolError, `${error}`);
        if (typeof message === "string") assert.equal(error.message, message);
        else assert.match(error.message, message);
        return true;
      });
    });
  }
});

Deno.test("MessageDecoderStream errors with the ProtocolError of malformed input", async () => {
  await assert.rejects(
    decodeStream([bytes('4\n{"X":1,"R":""}\n'), bytes("13\n{}\n")]),
    new ProtocolError("Cannot decode message: unknown message type 13"),
  );
});

Deno.test("MessageDecoder enforces maxLineBytes on the body line", () => {
  const body16 = '{"X":1,"R":"12"}';
  assert.equal(body16.length, 16);
  assert.deepEqual(decodeAll(bytes(`4\n${body16}\n`), 16), [
    { type: MessageType.Close, sessionId: 1, reason: "12" },
  ]);
  const over = new ProtocolError(
    "Cannot decode Close message: the body line is longer than 16 bytes (limit maxLineBytes)",
  );
  assert.throws(() => decodeAll(bytes('4\n{"X":1,"R":"123"}\n'), 16), over);
  // The limit applies before the newline arrives, so a peer cannot make the buffer grow without bound.
  const decoder = new MessageDecoder({ maxLineBytes: 16 });
  decoder.push(bytes('4\n{"X":1,"R":"12'));
  assert.equal(decoder.next(), undefined);
  decoder.push(bytes("34"));
  assert.equal(decoder.next(), undefined); // 16 bytes of body: still within the limit
  decoder.push(bytes("5"));
  assert.throws(() => decoder.next(), over);
});

Deno.test("MessageDecoderStream errors on a line over maxLineBytes", async () => {
  await assert.rejects(
    decodeStream([bytes('3\n{"X":1,"C":"'), bytes("A".repeat(64))], 32),
    new ProtocolError(
      "Cannot decode Data message: the body line is longer than 32 bytes (limit maxLineBytes)",
    ),
  );
});

Deno.test("MessageDecoderStream errors on a truncated tail", async (t) => {
  for (
    const [label, tail] of [
      ["inside the type line", "4"],
      ["after the type line", "4\n"],
      ["inside the body", '4\n{"X":1,"R":""}'],
    ]
  ) {
    await t.step(label!, async () => {
      const input = bytes(`7\n{}\n${tail}`);
      await assert.rejects(
        decodeStream([input]),
        new ProtocolError(
          `Cannot decode message: input ended inside a message (${tail!.length} bytes left)`,
        ),
      );
    });
  }
});

Deno.test("MessageDecoderStream yields the whole messages before a truncated tail", async () => {
  const seen: Message[] = [];
  const stream = ReadableStream.from([bytes("7\n{}\n8\n{}\n4\n")]).pipeThrough(
    new MessageDecoderStream(),
  );
  await assert.rejects(
    (async () => {
      for await (const message of stream) seen.push(message);
    })(),
    ProtocolError,
  );
  assert.deepEqual(seen, [{ type: MessageType.Ping }, { type: MessageType.Pong }]);
});

Deno.test("MessageDecoder.finish() accepts an empty input and rejects leftovers", () => {
  const decoder = new MessageDecoder();
  decoder.finish();
  decoder.push(bytes("7\n{}\n7"));
  assert.deepEqual(decoder.next(), { type: MessageType.Ping });
  assert.equal(decoder.next(), undefined);
  assert.equal(decoder.bufferedBytes, 1);
  assert.throws(() => decoder.finish(), ProtocolError);
});

Deno.test("MessageDecoder assembles a large binary frame that arrives in pieces, at every kind of split", () => {
  const codec = new BinaryCodec();
  const big = new Uint8Array(200 * 1024).map((_, i) => i * 7);
  const messages: Message[] = [
    { type: MessageType.Credit, sessionId: 3, bytes: 4096 },
    { type: MessageType.Data, sessionId: 7, content: big },
    { type: MessageType.Close, sessionId: 7, reason: "" },
    { type: MessageType.Data, sessionId: 8, content: big.subarray(5, 70_000) },
  ];
  const encoded = messages.map((message) => codec.encode(message).slice());
  const stream = new Uint8Array(encoded.reduce((sum, bytes) => sum + bytes.length, 0));
  encoded.reduce((offset, bytes) => (stream.set(bytes, offset), offset + bytes.length), 0);
  for (const piece of [1000, 4093, 65_536, 131_071, 300_000]) {
    const decoder = new MessageDecoder({ codec: new BinaryCodec() });
    const decoded: Message[] = [];
    for (let offset = 0; offset < stream.length; offset += piece) {
      // A reused read buffer: the decoder must not keep what it borrowed.
      const chunk = stream.slice(offset, offset + piece);
      decoder.push(chunk);
      for (let message = decoder.next(); message !== undefined; message = decoder.next()) {
        decoded.push(message);
      }
      decoder.own();
      chunk.fill(0xee);
    }
    decoder.finish();
    assert.deepEqual(
      decoded.map((message) =>
        message.type === MessageType.Data ? { ...message, content: [...message.content] } : message
      ),
      messages.map((message) =>
        message.type === MessageType.Data ? { ...message, content: [...message.content] } : message
      ),
      `pieces of ${piece} bytes`,
    );
  }
});
