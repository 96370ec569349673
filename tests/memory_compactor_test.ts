import { equal, ok } from "node:assert/strict";
import {
  type CompactorProbes,
  type HeapReading,
  MemoryCompactor,
  processProbes,
} from "../app/memory_compactor.ts";

const MiB = 1024 * 1024;

/** A heap a test moves by hand; `collect()` brings the committed size back to `floor`. */
class FakeHeap implements CompactorProbes {
  committed = 10 * MiB;
  allocated = 0;
  floor = 10 * MiB;
  collections = 0;
  fail: Error | undefined;

  heap(): HeapReading {
    return { committed: this.committed, allocated: this.allocated };
  }

  collect(): Promise<void> {
    if (this.fail) return Promise.reject(this.fail);
    this.collections++;
    this.committed = this.floor;
    return Promise.resolve();
  }

  /** A burst: `bytes` allocated, the committed heap grown by `growth`. */
  burst(bytes: number, growth: number): void {
    this.allocated += bytes;
    this.committed += growth;
  }
}

const OPTIONS = { interval: 1000, quietRate: 1 * MiB, minGrowth: 4 * MiB };

Deno.test("MemoryCompactor: compacts once the program is quiet after a burst grew the heap", async () => {
  const heap = new FakeHeap();
  const compactor = new MemoryCompactor(heap, OPTIONS);
  heap.burst(40 * MiB, 9 * MiB);
  equal(await compactor.sample(), false, "not while the burst allocates");
  heap.allocated += 100 * 1024; // Keepalives and timers: quiet.
  equal(await compactor.sample(), true);
  equal(heap.committed, heap.floor);
  equal(await compactor.sample(), false, "nothing grew since");
  equal(heap.collections, 1);
  equal(compactor.compactions, 1);
});

Deno.test("MemoryCompactor: never pauses a busy program, however grown its heap", async () => {
  const heap = new FakeHeap();
  const compactor = new MemoryCompactor(heap, OPTIONS);
  for (let second = 0; second < 10; second++) {
    heap.burst(5 * MiB, second === 0 ? 12 * MiB : 0);
    equal(await compactor.sample(), false);
  }
  equal(heap.collections, 0);
});

Deno.test("MemoryCompactor: growth below minGrowth is left alone", async () => {
  const heap = new FakeHeap();
  const compactor = new MemoryCompactor(heap, OPTIONS);
  heap.burst(0, 3 * MiB);
  equal(await compactor.sample(), false);
  equal(heap.collections, 0);
});

Deno.test("MemoryCompactor: a heap V8 shrank itself lowers the mark the next growth counts from", async () => {
  const heap = new FakeHeap();
  heap.committed = 20 * MiB;
  const compactor = new MemoryCompactor(heap, OPTIONS);
  heap.committed = 8 * MiB; // V8's own memory reducer ran.
  equal(await compactor.sample(), false);
  heap.burst(0, 5 * MiB); // 13 MiB: below where it started, 5 MiB above the least seen.
  equal(await compactor.sample(), true);
});

Deno.test("MemoryCompactor: a runtime that refuses the collection stops it for good", async () => {
  const heap = new FakeHeap();
  heap.fail = new ReferenceError("gc is not defined");
  using compactor = new MemoryCompactor(heap, OPTIONS);
  compactor.start();
  heap.burst(0, 8 * MiB);
  equal(await compactor.sample(), false);
  heap.fail = undefined;
  equal(await compactor.sample(), false, "stopped");
  equal(heap.collections, 0);
});

Deno.test("processProbes: this runtime lets the program collect, and a collection frees garbage", async () => {
  const probes = processProbes();
  ok(probes, "Deno 2.9 counts allocated bytes and lets a program ask for a collection");
  const before = probes.heap();
  let garbage: number[][] | undefined = Array.from({ length: 2000 }, (_, i) => [i, i + 1, i + 2]);
  const grown = probes.heap();
  ok(grown.allocated > before.allocated, "allocation is counted");
  equal(garbage.length, 2000);
  garbage = undefined;
  const used = Deno.memoryUsage().heapUsed;
  await probes.collect();
  ok(Deno.memoryUsage().heapUsed < used, "the collection freed what nothing holds");
});

Deno.test("MemoryCompactor: a large heap must grow by a quarter, so full collections stay rare", async () => {
  const heap = new FakeHeap();
  heap.committed = heap.floor = 200 * MiB;
  const compactor = new MemoryCompactor(heap, OPTIONS);
  heap.burst(0, 40 * MiB); // Ten times minGrowth, but a fifth of the heap.
  equal(await compactor.sample(), false);
  heap.burst(0, 10 * MiB);
  equal(await compactor.sample(), true);
});
