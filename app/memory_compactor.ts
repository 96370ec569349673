/**
 * Gives memory back once a burst is over, for `dp.ts` and `cli.ts`.
 *
 * While many sessions open at once, V8 grows its young generation (to 16 MiB
 * per semi-space) and keeps it grown. Its own memory reducer runs 30 s after
 * start and afterwards only after an old-generation collection, which a
 * process holding idle sessions may not see for hours. With 1,000 sessions
 * opened in one burst that is about 9 MiB per process, 9 KiB per session,
 * held for nothing.
 *
 * A {@linkcode MemoryCompactor} reads V8's heap statistics once a second.
 * When the program has allocated little since the last reading (it is quiet)
 * and the committed heap has grown since the last compaction (by
 * {@linkcode MemoryCompactorOptions.minGrowth}, or a quarter of a larger heap),
 * it runs one memory-reducing collection: a full one, some tens of
 * milliseconds for these heaps. A busy process is never paused, and each
 * compaction needs fresh growth, so they are as rare as bursts.
 * @module
 */

import { getHeapStatistics, setFlagsFromString } from "node:v8";
import { getLogger } from "../lib/_log.ts";

const logger = getLogger(["rtcp", "memory"]);

/** V8's heap at one moment. */
export interface HeapReading {
  /** Bytes committed for the heap. */
  committed: number;
  /** Bytes allocated since the process started: the difference of two readings is the work done between them. */
  allocated: number;
}

/** What a {@linkcode MemoryCompactor} reads and does: the process's own, or a test's. */
export interface CompactorProbes {
  /** Reads the heap now. */
  heap(): HeapReading;
  /**
   * Runs a memory-reducing collection.
   * @throws When the runtime does not let the program ask for one.
   */
  collect(): Promise<void>;
}

/** Options of {@linkcode MemoryCompactor}. */
export interface MemoryCompactorOptions {
  /** Milliseconds between two readings. @default {1000} */
  interval?: number;
  /**
   * Bytes per second the program may allocate and still count as quiet
   * (keepalives and timers, not traffic; V8's own memory reducer also calls
   * under 1 MB a second a low rate). @default {1048576}
   */
  quietRate?: number;
  /**
   * Least growth of the committed heap, in bytes, that a compaction must give
   * back; a heap larger than four times this must have grown by a quarter, so
   * that the work of full collections stays in proportion to the growth.
   * @default {4194304}
   */
  minGrowth?: number;
}

/** `node:v8`'s heap statistics, with the count of allocated bytes that newer runtimes give. */
function heapStatistics(): { total_heap_size: number; total_allocated_bytes?: number } {
  return getHeapStatistics();
}

/**
 * The running process's probes. `collect()` calls V8's `gc()`: `--expose-gc`
 * set through `node:v8` applies to the contexts made after it, so a fresh
 * `node:vm` context has the function. `node:vm` is loaded at the first
 * collection and a context made per collection: a process that never
 * compacts pays for neither.
 * @returns `undefined` on a runtime that does not count allocated bytes:
 * there a quiet moment cannot be told from a busy one.
 */
export function processProbes(): CompactorProbes | undefined {
  if (typeof heapStatistics().total_allocated_bytes !== "number") return undefined;
  setFlagsFromString("--expose-gc");
  let vm: typeof import("node:vm") | undefined;
  return {
    heap: () => {
      const statistics = heapStatistics();
      return {
        committed: statistics.total_heap_size,
        allocated: statistics.total_allocated_bytes!,
      };
    },
    collect: async () => {
      vm ??= await import("node:vm");
      vm.runInNewContext("gc()");
    },
  };
}

/** Runs a memory-reducing collection when the program is quiet after its heap has grown. */
export class MemoryCompactor implements Disposable {
  readonly #probes: CompactorProbes;
  readonly #interval: number;
  readonly #quietBytes: number;
  readonly #minGrowth: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastAllocated: number;
  /** The committed heap after the last compaction, or the least seen since. */
  #baseline: number;
  #collecting = false;
  #stopped = false;
  #compactions = 0;

  /**
   * Starts from what `probes` read now; call {@linkcode start} to read on a timer.
   * @param probes The process's ({@linkcode processProbes}), or a test's.
   */
  constructor(probes: CompactorProbes, options: MemoryCompactorOptions = {}) {
    this.#probes = probes;
    this.#interval = options.interval ?? 1000;
    this.#quietBytes = (options.quietRate ?? 1024 * 1024) * this.#interval / 1000;
    this.#minGrowth = options.minGrowth ?? 4 * 1024 * 1024;
    const heap = probes.heap();
    this.#lastAllocated = heap.allocated;
    this.#baseline = heap.committed;
  }

  /** How many compactions ran. */
  get compactions(): number {
    return this.#compactions;
  }

  /** Reads every `interval` ms, on a timer that does not keep the process alive. */
  start(): void {
    if (this.#timer !== undefined || this.#stopped) return;
    this.#timer = setInterval(() => void this.sample(), this.#interval);
    Deno.unrefTimer(this.#timer);
  }

  /**
   * Takes one reading and compacts if it is time; the timer calls it every
   * `interval` ms, a test directly. A runtime that refuses the collection
   * stops the compactor.
   * @returns Whether it compacted.
   */
  async sample(): Promise<boolean> {
    if (this.#collecting || this.#stopped) return false;
    const heap = this.#probes.heap();
    const quiet = heap.allocated - this.#lastAllocated <= this.#quietBytes;
    this.#lastAllocated = heap.allocated;
    if (heap.committed < this.#baseline) this.#baseline = heap.committed;
    const growth = Math.max(this.#minGrowth, this.#baseline / 4);
    if (!quiet || heap.committed - this.#baseline < growth) return false;
    this.#collecting = true;
    const started = performance.now();
    try {
      await this.#probes.collect();
    } catch (error) {
      logger.debug("Not compacting memory after bursts: {message}", {
        message: (error as Error).message,
      });
      this.stop();
      return false;
    } finally {
      this.#collecting = false;
    }
    const after = this.#probes.heap();
    this.#baseline = after.committed;
    this.#lastAllocated = after.allocated;
    this.#compactions++;
    logger.debug("Compacted memory: heap {before} MiB -> {after} MiB in {ms} ms", {
      before: (heap.committed / 2 ** 20).toFixed(1),
      after: (after.committed / 2 ** 20).toFixed(1),
      ms: (performance.now() - started).toFixed(1),
    });
    return true;
  }

  /** Stops reading; for good. */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Same as {@linkcode stop}. */
  [Symbol.dispose](): void {
    this.stop();
  }
}

/**
 * Starts a compactor for this process, as `dp.ts` and `cli.ts` do.
 * @returns It, to stop at shutdown; `undefined` (and a debug log) where the
 * runtime does not give what it needs (see {@linkcode processProbes}).
 */
export function startMemoryCompactor(
  options: MemoryCompactorOptions = {},
): MemoryCompactor | undefined {
  const probes = processProbes();
  if (probes === undefined) {
    logger.debug("Not compacting memory after bursts: this runtime does not count allocations");
    return undefined;
  }
  const compactor = new MemoryCompactor(probes, options);
  compactor.start();
  return compactor;
}
