/**
 * Tests of the discover point's `Pipe` on its own: small pieces that have to
 * wait are joined into shared buffers, in order, and handed on ready to frame.
 * @module
 */

import assert from "node:assert/strict";
import { DATA_HEADROOM } from "../lib/wire/binary_codec.ts";
import { Pipe, type PipeSink, type PipeSource } from "../lib/dp/pipe.ts";
import { concatBytes, randomBytes } from "./_helpers.ts";

/** A source without flow control: the pipe never grants it credit. */
const SOURCE: PipeSource = { flowControl: false, grant() {} };

/** A sink that reports "full" on its first send until released, and keeps what it is sent. */
class HeldSink implements PipeSink {
  readonly flowControl = false;
  readonly maxDataBytes = Infinity;
  readonly received: Uint8Array[] = [];
  readonly #held = Promise.withResolvers<void>();
  #first = true;

  send(bytes: Uint8Array): Promise<void> | undefined {
    this.received.push(bytes);
    if (!this.#first) return undefined;
    this.#first = false;
    return this.#held.promise;
  }

  release(): Promise<void> {
    this.#held.resolve();
    // The pipe resumes in a reaction to the released promise: let it run.
    return this.#held.promise.then(() => {});
  }

  end(): void {}
  close(): void {}
}

/** `count` separate pieces of `size` random bytes. */
function pieces(count: number, size: number): Uint8Array[] {
  return Array.from({ length: count }, () => randomBytes(size));
}

Deno.test("Pipe joins 10,000 waiting 1-byte pieces into a few shared buffers, in order", async () => {
  const sink = new HeldSink();
  const pipe = new Pipe(SOURCE, sink);
  const first = randomBytes(100);
  pipe.push(first); // Sent at once; the sink is now full.
  const waiting = pieces(10_000, 1);
  const expected = concatBytes(waiting);
  for (const piece of waiting) pipe.push(piece);
  assert.equal(pipe.buffered, 10_000);
  await sink.release();
  assert.equal(pipe.buffered, 0);
  assert.equal(sink.received[0], first);
  const joined = sink.received.slice(1);
  assert.deepEqual(concatBytes(joined), expected);
  assert.ok(joined.length <= Math.ceil(10_000 / 4096) + 1, `${joined.length} chunks`);
  // Each joined chunk has room for a frame header before it: the codec frames it in place.
  for (const chunk of joined) assert.equal(chunk.byteOffset, DATA_HEADROOM);
});

Deno.test("Pipe keeps large waiting pieces as they are, between joined small ones, in order", async () => {
  const sink = new HeldSink();
  const pipe = new Pipe(SOURCE, sink);
  pipe.push(randomBytes(10));
  const large = randomBytes(5000);
  const waiting = [...pieces(3, 10), large, ...pieces(3, 1024)];
  const expected = concatBytes(waiting);
  for (const piece of waiting) pipe.push(piece);
  await sink.release();
  const sent = sink.received.slice(1);
  assert.deepEqual(concatBytes(sent), expected);
  assert.equal(sent.length, 3, "three small pieces, the large one, three small ones");
  assert.equal(sent[1], large);
});

Deno.test("Pipe passes a small piece on untouched when nothing waits before it", () => {
  const sent: Uint8Array[] = [];
  const sink: PipeSink = {
    flowControl: false,
    maxDataBytes: Infinity,
    send: (bytes) => void sent.push(bytes),
    end() {},
    close() {},
  };
  const pipe = new Pipe(SOURCE, sink);
  const piece = randomBytes(1);
  pipe.push(piece);
  assert.equal(sent[0], piece);
});

Deno.test("Pipe joins small pieces that wait for credit, and sends them as credit comes", () => {
  const sent: Uint8Array[] = [];
  const sink: PipeSink = {
    flowControl: true,
    maxDataBytes: 256 * 1024,
    send: (bytes) => void sent.push(bytes),
    end() {},
    close() {},
  };
  const pipe = new Pipe(SOURCE, sink);
  pipe.push(randomBytes(256 * 1024)); // Spends the whole initial credit.
  const waiting = pieces(10_000, 1);
  const expected = concatBytes(waiting);
  for (const piece of waiting) pipe.push(piece);
  assert.equal(sent.length, 1);
  pipe.credit(10_000);
  const joined = sent.slice(1);
  assert.deepEqual(concatBytes(joined), expected);
  assert.ok(joined.length <= Math.ceil(10_000 / 4096) + 2, `${joined.length} chunks`);
});
