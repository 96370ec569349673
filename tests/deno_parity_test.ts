/**
 * Parity with Deno: every check below runs twice, against `Deno.listen` /
 * `Deno.connect` on 127.0.0.1 and against `listen()` / `connect()` through an
 * in-process discover point, and records what it observes (values, and error
 * classes by name). Deno's observation must be the one written down here (as
 * measured with Deno 2.9), and the indirect ends' must equal it, except in
 * the rows marked `indirect`: the differences that the README's API section
 * lists, with their reasons.
 * @module
 */

import assert from "node:assert/strict";
import { connect, listen } from "../mod.ts";
import { startDiscoverPoint } from "./_helpers.ts";

/** Listeners and connections of one kind; disposing closes everything they made. */
interface Setup extends AsyncDisposable {
  /** A listener, ready to be dialled. */
  listen(): Promise<Deno.Listener>;
  /** A connection to `listener`. */
  dial(listener: Deno.Listener): Promise<Deno.Conn>;
  /** Closes `conn` (if still open) when the setup is disposed. */
  track<T extends Disposable>(conn: T): T;
}

/** A connected pair; its listener is closed already. */
async function pair(setup: Setup): Promise<{ client: Deno.Conn; server: Deno.Conn }> {
  const listener = await setup.listen();
  const accepted = listener.accept();
  const client = await setup.dial(listener);
  const server = setup.track(await accepted);
  listener.close();
  return { client, server };
}

function tracker(): { track<T extends Disposable>(conn: T): T; dispose(): void } {
  const resources: Disposable[] = [];
  return {
    track(conn) {
      resources.push(conn);
      return conn;
    },
    dispose() {
      // [Symbol.dispose] never throws, also on what is closed already.
      for (const resource of resources.reverse()) resource[Symbol.dispose]();
    },
  };
}

function denoSetup(): Promise<Setup> {
  const { track, dispose } = tracker();
  return Promise.resolve({
    listen: () => Promise.resolve(track(Deno.listen({ hostname: "127.0.0.1", port: 0 }))),
    dial: async (listener) =>
      track(
        await Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }),
      ),
    track,
    [Symbol.asyncDispose]: () => Promise.resolve(dispose()),
  });
}

async function indirectSetup(): Promise<Setup> {
  const dp = await startDiscoverPoint();
  const { track, dispose } = tracker();
  const names = new Map<Deno.Listener, string>();
  return {
    async listen() {
      const name = `parity-${names.size}`;
      const listener = track(listen({ dp: dp.address, name }));
      names.set(listener, name);
      await listener.ready;
      return listener;
    },
    dial: async (listener) => track(await connect({ dp: dp.address, name: names.get(listener)! })),
    track,
    async [Symbol.asyncDispose]() {
      dispose();
      await dp[Symbol.asyncDispose]();
    },
  };
}

const SETUPS: Record<"deno" | "indirect", () => Promise<Setup>> = {
  deno: denoSetup,
  indirect: indirectSetup,
};

// ---- observing ----------------------------------------------------------------

const ERROR_CLASSES = [
  "BadResource",
  "BrokenPipe",
  "ConnectionReset",
  "Interrupted",
  "Busy",
] as const;

/** The `Deno.errors` class of `error`, by name (a `SessionClosedError` is a `BadResource`). */
function classOf(error: unknown): string {
  for (const name of ERROR_CLASSES) {
    if (error instanceof Deno.errors[name]) return name;
  }
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** `"ok"` if `promise` resolves, else the class of its error. */
async function outcome(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "ok";
  } catch (error) {
    return classOf(error);
  }
}

/** `"ok"` if `action` returns, else the class of what it throws. */
function attempt(action: () => unknown): string {
  try {
    action();
    return "ok";
  } catch (error) {
    return classOf(error);
  }
}

/** What `promise` resolves to, or the class of its error. */
async function valueOr<T>(promise: Promise<T>): Promise<T | string> {
  try {
    return await promise;
  } catch (error) {
    return classOf(error);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text: string) => encoder.encode(text);

/** Reads exactly `length` bytes with `read()`, as text. */
async function readText(conn: Deno.Conn, length: number): Promise<string> {
  const buffer = new Uint8Array(length);
  for (let have = 0; have < length;) {
    const count = await conn.read(buffer.subarray(have));
    assert.notEqual(count, null, `Expected ${length - have} more bytes, got the end`);
    have += count!;
  }
  return decoder.decode(buffer);
}

/** Reads exactly `length` bytes from `reader`, as text. */
async function readerText(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  length: number,
): Promise<string> {
  let text = "";
  while (text.length < length) {
    const { value, done } = await reader.read();
    assert.ok(!done, `Expected ${length - text.length} more bytes, got the end`);
    text += decoder.decode(value);
  }
  return text;
}

/** The shape of a `Deno.NetAddr`, without the values that differ from run to run. */
/** What the peer reads, and what the client's read, write and close do, once a stream ended it. */
async function afterStreamEnded(
  client: Deno.Conn,
  server: Deno.Conn,
): Promise<Record<string, unknown>> {
  return {
    peer: await server.read(new Uint8Array(1)),
    read: await outcome(client.read(new Uint8Array(1))),
    write: await outcome(client.write(bytes("x"))),
    close: attempt(() => client.close()),
  };
}

function shape(addr: Deno.Addr): Record<string, unknown> {
  const net = addr as Deno.NetAddr;
  return {
    keys: Object.keys(addr).sort(),
    transport: net.transport,
    hostname: typeof net.hostname,
    port: typeof net.port,
  };
}

// ---- the checks -----------------------------------------------------------------

interface Check {
  name: string;
  run(setup: Setup): Promise<unknown>;
  /** What Deno observes. */
  deno: unknown;
  /** What the indirect ends observe, where the README documents a difference; else `deno`. */
  indirect?: unknown;
}

const CHECKS: Check[] = [
  {
    name: "read() and write() leave readable and writable unlocked; the streams then go on",
    async run(setup) {
      const { client, server } = await pair(setup);
      await server.write(bytes("abcdef"));
      const first = await readText(client, 3);
      await client.write(bytes("1"));
      const locked = [client.readable.locked, client.writable.locked];
      const reader = client.readable.getReader();
      const rest = await readerText(reader, 3);
      reader.releaseLock();
      const writer = client.writable.getWriter();
      await writer.write(bytes("2"));
      writer.releaseLock();
      return { first, locked, rest, received: await readText(server, 2) };
    },
    deno: { first: "abc", locked: [false, false], rest: "def", received: "12" },
  },
  {
    name: "read() and write() work while the user holds a reader and a writer",
    async run(setup) {
      const { client, server } = await pair(setup);
      const reader = client.readable.getReader();
      const writer = client.writable.getWriter();
      await server.write(bytes("xyz"));
      const read = await readText(client, 3);
      await client.write(bytes("w"));
      const received = await readText(server, 1);
      await writer.write(bytes("v"));
      const afterWriter = await readText(server, 1);
      reader.releaseLock();
      writer.releaseLock();
      return { read, received, afterWriter };
    },
    deno: { read: "xyz", received: "w", afterWriter: "v" },
  },
  {
    name: "zero-byte read() and write() return 0",
    async run(setup) {
      const { client } = await pair(setup);
      return [await client.read(new Uint8Array(0)), await client.write(new Uint8Array(0))];
    },
    deno: [0, 0],
  },
  {
    name: "closeWrite() half-closes: the peer reads the end and can still answer",
    async run(setup) {
      const { client, server } = await pair(setup);
      await client.write(bytes("q"));
      await client.closeWrite();
      const question = await readText(server, 1);
      const end = await server.read(new Uint8Array(1));
      await server.write(bytes("a"));
      const answer = await readText(client, 1);
      const again = await outcome(client.closeWrite());
      await server.closeWrite();
      return { question, end, answer, again, clientEnd: await client.read(new Uint8Array(1)) };
    },
    deno: { question: "q", end: null, answer: "a", again: "ok", clientEnd: null },
  },
  {
    name: "write() after closeWrite() fails",
    async run(setup) {
      const { client } = await pair(setup);
      await client.closeWrite();
      return await outcome(client.write(bytes("x")));
    },
    deno: "BrokenPipe",
    indirect: "BadResource",
  },
  {
    name: "close() twice; [Symbol.dispose] after close()",
    async run(setup) {
      const { client } = await pair(setup);
      return [
        attempt(() => client.close()),
        attempt(() => client.close()),
        attempt(() => client[Symbol.dispose]()),
      ];
    },
    deno: ["ok", "BadResource", "ok"],
    indirect: ["ok", "ok", "ok"],
  },
  {
    name: "after close() read, write, closeWrite and both streams fail with BadResource",
    async run(setup) {
      const { client, server } = await pair(setup);
      const readable = client.readable;
      const writable = client.writable;
      client.close();
      return {
        read: await outcome(client.read(new Uint8Array(1))),
        write: await outcome(client.write(bytes("x"))),
        closeWrite: await outcome(client.closeWrite()),
        readEmpty: await valueOr(client.read(new Uint8Array(0))),
        writeEmpty: await outcome(client.write(new Uint8Array(0))),
        readable: await outcome(readable.getReader().read()),
        writable: await outcome(writable.getWriter().write(bytes("x"))),
        peer: await server.read(new Uint8Array(1)),
        localAddr: shape(client.localAddr),
      };
    },
    deno: {
      read: "BadResource",
      write: "BadResource",
      closeWrite: "BadResource",
      readEmpty: 0,
      writeEmpty: "BadResource",
      readable: "BadResource",
      writable: "BadResource",
      peer: null,
      localAddr: {
        keys: ["hostname", "port", "transport"],
        transport: "tcp",
        hostname: "string",
        port: "number",
      },
    },
  },
  {
    name: "a read() pending when close() comes rejects with Interrupted",
    async run(setup) {
      const { client } = await pair(setup);
      const pending = outcome(client.read(new Uint8Array(1)));
      client.close();
      return await pending;
    },
    deno: "Interrupted",
  },
  {
    name: "after the peer closed: read() returns null, then a write() fails",
    async run(setup) {
      const { client, server } = await pair(setup);
      server.close();
      const end = await client.read(new Uint8Array(1));
      // TCP usually takes the first write (the kernel buffers it) and fails the next.
      for (let attempts = 0; attempts < 10; attempts++) {
        const written = await outcome(client.write(bytes("x")));
        if (written !== "ok") return { end, failure: written };
      }
      return { end, failure: "none in 10 writes" };
    },
    deno: { end: null, failure: "BrokenPipe" },
    indirect: { end: null, failure: "BadResource" },
  },
  {
    name: "cancelling readable closes the connection",
    async run(setup) {
      const { client, server } = await pair(setup);
      await client.readable.cancel();
      return await afterStreamEnded(client, server);
    },
    deno: { peer: null, read: "BadResource", write: "BadResource", close: "BadResource" },
    indirect: { peer: null, read: "BadResource", write: "BadResource", close: "ok" },
  },
  {
    name: "aborting writable closes the connection",
    async run(setup) {
      const { client, server } = await pair(setup);
      await client.writable.abort(new Error("changed my mind"));
      return await afterStreamEnded(client, server);
    },
    deno: { peer: null, read: "BadResource", write: "BadResource", close: "BadResource" },
    indirect: { peer: null, read: "BadResource", write: "BadResource", close: "ok" },
  },
  {
    name: "closing writable ends the write side (Deno: closes the connection)",
    async run(setup) {
      const { client, server } = await pair(setup);
      await client.writable.close();
      const peer = await server.read(new Uint8Array(1));
      await server.write(bytes("r"));
      return {
        peer,
        read: await valueOr(readText(client, 1)),
        close: attempt(() => client.close()),
      };
    },
    deno: { peer: null, read: "BadResource", close: "BadResource" },
    indirect: { peer: null, read: "r", close: "ok" },
  },
  {
    name: "reading readable to its end leaves the write side open (Deno: closes the connection)",
    async run(setup) {
      const { client, server } = await pair(setup);
      await server.write(bytes("e"));
      await server.closeWrite();
      const text = await new Response(client.readable).text();
      const write = await outcome(client.write(bytes("x")));
      return { text, write, close: attempt(() => client.close()) };
    },
    deno: { text: "e", write: "BadResource", close: "BadResource" },
    indirect: { text: "e", write: "ok", close: "ok" },
  },
  {
    name: "using closes the connection and the listener",
    async run(setup) {
      const listener = await setup.listen();
      const accepted = listener.accept();
      let client: Deno.Conn;
      {
        using conn = await setup.dial(listener);
        client = conn;
      }
      const server = setup.track(await accepted);
      const peer = await server.read(new Uint8Array(1));
      const read = await outcome(client.read(new Uint8Array(1)));
      {
        using _disposed = listener;
      }
      return { peer, read, accept: await outcome(listener.accept()) };
    },
    deno: { peer: null, read: "BadResource", accept: "BadResource" },
  },
  {
    name: "ref() and unref() exist and return nothing",
    async run(setup) {
      const { client } = await pair(setup);
      const listener = await setup.listen();
      const kinds = [client.ref, client.unref, listener.ref, listener.unref].map((f) => typeof f);
      return { kinds, results: [client.unref(), client.ref(), listener.unref(), listener.ref()] };
    },
    deno: { kinds: Array(4).fill("function"), results: Array(4).fill(undefined) },
  },
  {
    name: "localAddr, remoteAddr and addr are NetAddr objects",
    async run(setup) {
      const listener = await setup.listen();
      const accepted = listener.accept();
      const client = await setup.dial(listener);
      const server = setup.track(await accepted);
      return [
        listener.addr,
        client.localAddr,
        client.remoteAddr,
        server.localAddr,
        server.remoteAddr,
      ]
        .map(shape);
    },
    deno: Array(5).fill({
      keys: ["hostname", "port", "transport"],
      transport: "tcp",
      hostname: "string",
      port: "number",
    }),
  },
  {
    name: "the listener is its own async iterator; leaving for await with break closes it",
    async run(setup) {
      const listener = await setup.listen();
      const client = await setup.dial(listener);
      const own = (listener[Symbol.asyncIterator]() as unknown) === listener;
      for await (const conn of listener) {
        setup.track(conn).close();
        break;
      }
      const accept = await outcome(listener.accept());
      let more = 0;
      for await (const conn of listener) {
        setup.track(conn);
        more++;
      }
      return { own, accept, more, peer: await client.read(new Uint8Array(1)) };
    },
    deno: { own: true, accept: "BadResource", more: 0, peer: null },
  },
  {
    name: "leaving for await with a throw closes the listener",
    async run(setup) {
      const listener = await setup.listen();
      await setup.dial(listener);
      const thrown = await outcome((async () => {
        for await (const conn of listener) {
          setup.track(conn);
          throw new Deno.errors.Busy("out of the loop");
        }
      })());
      return { thrown, accept: await outcome(listener.accept()) };
    },
    deno: { thrown: "Busy", accept: "BadResource" },
  },
  {
    name: "close() while accept() is pending rejects it with BadResource, and later accepts",
    async run(setup) {
      const listener = await setup.listen();
      const pending = outcome(listener.accept());
      listener.close();
      return {
        pending: await pending,
        later: await outcome(listener.accept()),
        next: await listener[Symbol.asyncIterator]().next(),
        addr: shape(listener.addr),
      };
    },
    deno: {
      pending: "BadResource",
      later: "BadResource",
      next: { value: undefined, done: true },
      addr: {
        keys: ["hostname", "port", "transport"],
        transport: "tcp",
        hostname: "string",
        port: "number",
      },
    },
  },
  {
    name: "close() on a closed listener",
    async run(setup) {
      const listener = await setup.listen();
      listener.close();
      return [attempt(() => listener.close()), attempt(() => listener[Symbol.dispose]())];
    },
    deno: ["BadResource", "ok"],
    indirect: ["ok", "ok"],
  },
  {
    name: "two accept() calls at once",
    async run(setup) {
      const listener = await setup.listen();
      const take = () => listener.accept().then((conn) => setup.track(conn));
      const first = outcome(take());
      const second = outcome(take());
      await setup.dial(listener);
      await setup.dial(listener);
      const results = [await first, await second];
      listener.close();
      return results;
    },
    deno: ["ok", "Busy"],
    indirect: ["ok", "ok"],
  },
];

for (const check of CHECKS) {
  Deno.test(`parity: ${check.name}`, async () => {
    const seen: Record<string, unknown> = {};
    for (const [side, start] of Object.entries(SETUPS)) {
      await using setup = await start();
      seen[side] = await check.run(setup);
    }
    assert.deepEqual(seen.deno, check.deno, "Deno's own behaviour is not what this check recorded");
    assert.deepEqual(
      seen.indirect,
      "indirect" in check ? check.indirect : check.deno,
      "the indirect ends do not behave like Deno's",
    );
  });
}
