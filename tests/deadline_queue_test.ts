import { deepEqual, equal } from "node:assert/strict";
import { DeadlineQueue } from "../lib/_deadline_queue.ts";
import { FakeClock } from "./_clock.ts";

Deno.test("DeadlineQueue: deadlines expire in order, cancelled ones never, on one timer", () => {
  const clock = new FakeClock();
  const expired: string[] = [];
  const queue = new DeadlineQueue<string>(100, (item) => expired.push(item), clock);
  queue.add("a");
  clock.advance(10);
  const b = queue.add("b");
  clock.advance(10);
  queue.add("c");
  equal(clock.pending, 1);
  b.cancel();
  clock.advance(80);
  deepEqual(expired, ["a"]);
  clock.advance(19);
  deepEqual(expired, ["a"]);
  clock.advance(1);
  deepEqual(expired, ["a", "c"]);
  equal(clock.pending, 0, "no timer is left once nothing waits");
});

Deno.test("DeadlineQueue: an item added while others expire waits its full time", () => {
  const clock = new FakeClock();
  const expired: string[] = [];
  const queue = new DeadlineQueue<string>(100, (item) => {
    expired.push(item);
    if (item === "first") queue.add("again");
  }, clock);
  queue.add("first");
  clock.advance(100);
  deepEqual(expired, ["first"]);
  equal(clock.pending, 1);
  clock.advance(99);
  deepEqual(expired, ["first"]);
  clock.advance(1);
  deepEqual(expired, ["first", "again"]);
});

Deno.test("DeadlineQueue: a queue whose deadlines were all cancelled lets its timer run out once", () => {
  const clock = new FakeClock();
  const expired: number[] = [];
  const queue = new DeadlineQueue<number>(100, (item) => expired.push(item), clock);
  for (let i = 0; i < 3000; i++) queue.add(i).cancel();
  equal(clock.pending, 1);
  clock.advance(100);
  equal(clock.pending, 0);
  queue.add(1);
  clock.advance(100);
  deepEqual(expired, [1]);
});

Deno.test("DeadlineQueue: close stops the timer and later deadlines", () => {
  const clock = new FakeClock();
  const expired: string[] = [];
  const queue = new DeadlineQueue<string>(100, (item) => expired.push(item), clock);
  queue.add("a");
  queue.close();
  equal(clock.pending, 0);
  queue.add("b");
  clock.advance(1000);
  deepEqual(expired, []);
  equal(clock.pending, 0);
});

Deno.test("DeadlineQueue: deadlines cancelled in order leave nothing behind, however many came", () => {
  const clock = new FakeClock();
  const expired: number[] = [];
  const queue = new DeadlineQueue<number>(100, (item) => expired.push(item), clock);
  const live = queue.add(-1);
  for (let i = 0; i < 10_000; i++) queue.add(i).cancel();
  live.cancel();
  const last = queue.add(10_000);
  equal(queue.size, 1);
  clock.advance(100);
  deepEqual(expired, [10_000]);
  last.cancel();
});
