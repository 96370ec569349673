/**
 * The measurements, as seen by a client of the bench target at `addr`: throughput, round
 * trip, connection setup rate, and many concurrent echo sessions. Each opens its own
 * connections and closes them before it resolves (except {@link openSessions}, whose caller
 * holds them).
 * @module
 */

import { randomBytes } from "./data.ts";
import { Mode, readFull, writeAll } from "./io.ts";

/** Where the bench target (or a path leading to it) listens. */
export interface Addr {
  /** Host name or IP. */
  hostname: string;
  /** TCP port. */
  port: number;
}

/** Connects to `addr` with Nagle's algorithm off (every figure here is latency-sensitive). */
export async function dial(addr: Addr): Promise<Deno.TcpConn> {
  const conn = await Deno.connect(addr);
  conn.setNoDelay(true);
  return conn;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed (a failed operation closes the resource).
  }
}

/** Result of {@link throughput}. */
export interface ThroughputResult {
  /** Bytes received over all streams. */
  bytes: number;
  /** Wall time from the first request to the last stream stopping. */
  seconds: number;
  /** Aggregate rate. */
  mibPerSec: number;
}

/**
 * Downloads from the target's endless source over `streams` parallel connections for
 * `seconds`, counting the bytes that arrive. Connections are opened before the clock starts.
 */
export async function throughput(
  addr: Addr,
  streams: number,
  seconds: number,
): Promise<ThroughputResult> {
  const conns = await Promise.all(Array.from({ length: streams }, () => dial(addr)));
  const buf = () => new Uint8Array(256 * 1024);
  const start = performance.now();
  const deadline = start + seconds * 1000;
  // All streams end together at the deadline. A stream that stopped reading while another still
  // waits would hold the other up on a link without flow control (the original protocol's
  // head-of-line blocking), and its read would wait for ever.
  const stop = setTimeout(() => conns.forEach(closeQuietly), seconds * 1000);
  const over = () => performance.now() >= deadline;
  try {
    const counts = await Promise.all(conns.map(async (conn) => {
      const p = buf();
      let bytes = 0;
      await writeAll(conn, new Uint8Array([Mode.source]));
      while (!over()) {
        let n: number | null;
        try {
          n = await conn.read(p);
        } catch (error) {
          if (over()) break; // Closed at the deadline.
          throw error;
        }
        if (n === null) {
          if (over()) break;
          throw new Deno.errors.UnexpectedEof("Source ended early");
        }
        bytes += n;
      }
      return bytes;
    }));
    const elapsed = (performance.now() - start) / 1000;
    const bytes = counts.reduce((a, b) => a + b, 0);
    return { bytes, seconds: elapsed, mibPerSec: bytes / 2 ** 20 / elapsed };
  } finally {
    clearTimeout(stop);
    conns.forEach(closeQuietly);
  }
}

/** Result of {@link pingPong}; times in microseconds. */
export interface PingPongResult {
  /** Measured exchanges (after warm-up). */
  count: number;
  /** Median round trip. */
  p50Us: number;
  /** 99th-percentile round trip. */
  p99Us: number;
  /** Mean round trip. */
  meanUs: number;
}

/** The `q` quantile (0..1) of ascending `sorted`, nearest-rank. */
function quantile(sorted: readonly number[], q: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] ?? NaN;
}

/** Sends 1 byte and waits for its echo, `count` times after `warmup` untimed exchanges. */
export async function pingPong(addr: Addr, count: number, warmup = 200): Promise<PingPongResult> {
  const conn = await dial(addr);
  try {
    await writeAll(conn, new Uint8Array([Mode.echo]));
    const ping = new Uint8Array([0x2a]);
    const pong = new Uint8Array(1);
    const times = new Float64Array(count);
    for (let i = -warmup; i < count; i++) {
      const t0 = performance.now();
      await writeAll(conn, ping);
      await readFull(conn, pong);
      if (i >= 0) times[i] = (performance.now() - t0) * 1000;
    }
    const sorted = Array.from(times).sort((a, b) => a - b);
    const mean = sorted.reduce((a, b) => a + b, 0) / count;
    return { count, p50Us: quantile(sorted, 0.5), p99Us: quantile(sorted, 0.99), meanUs: mean };
  } finally {
    closeQuietly(conn);
  }
}

/** Result of {@link setupRate}. */
export interface SetupRateResult {
  /** Connections made. */
  count: number;
  /** Wall time for all of them. */
  seconds: number;
  /** Connections per second. */
  perSec: number;
}

/** One at a time, `count` times: connect, echo 1 byte, close. */
export async function setupRate(addr: Addr, count: number): Promise<SetupRateResult> {
  const request = new Uint8Array([Mode.echo, 0x2a]);
  const reply = new Uint8Array(1);
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const conn = await dial(addr);
    try {
      await writeAll(conn, request);
      await readFull(conn, reply);
    } finally {
      closeQuietly(conn);
    }
  }
  const seconds = (performance.now() - start) / 1000;
  return { count, seconds, perSec: count / seconds };
}

/** Result of {@link openSessions}. */
export interface SessionsResult {
  /** Sessions attempted. */
  count: number;
  /** Sessions whose echo came back byte-for-byte. */
  ok: number;
  /** Distinct error messages of the failed ones, with how often each occurred. */
  errors: Record<string, number>;
  /** Wall time to open and verify all of them. */
  seconds: number;
}

/** Concurrent echo sessions that stay open until {@link HeldSessions.close}. */
export interface HeldSessions {
  /** What opening them achieved. */
  result: SessionsResult;
  /** Closes every session. */
  close(): void;
}

/**
 * Opens `count` connections (at most `concurrency` handshakes in flight), echoes `size` random
 * bytes on each and compares them byte-for-byte, then keeps them all open for the caller.
 */
export async function openSessions(
  addr: Addr,
  count: number,
  size: number,
  concurrency = 100,
): Promise<HeldSessions> {
  const conns: Deno.TcpConn[] = [];
  const errors: Record<string, number> = {};
  let ok = 0;
  let next = 0;
  const start = performance.now();
  const worker = async () => {
    while (next < count) {
      next++;
      let conn: Deno.TcpConn | undefined;
      try {
        conn = await dial(addr);
        conns.push(conn);
        const payload = randomBytes(size);
        await writeAll(conn, new Uint8Array([Mode.echo]));
        const [, echoed] = await Promise.all([
          writeAll(conn, payload),
          readFull(conn, new Uint8Array(size)),
        ]);
        if (echoed.every((b, i) => b === payload[i])) ok++;
        else errors["echo differs"] = (errors["echo differs"] ?? 0) + 1;
      } catch (err) {
        const key = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
        errors[key] = (errors[key] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  const seconds = (performance.now() - start) / 1000;
  return {
    result: { count, ok, errors, seconds },
    close: () => conns.forEach(closeQuietly),
  };
}

/**
 * One tiny session: connect, echo 1 byte, close; throws if that fails or takes longer than
 * `timeoutMs` in all.
 */
export async function echoOnce(addr: Addr, timeoutMs: number): Promise<void> {
  const deadline = new AbortController();
  let conn: Deno.TcpConn | undefined;
  const timer = setTimeout(() => {
    deadline.abort();
    if (conn !== undefined) closeQuietly(conn);
  }, timeoutMs);
  try {
    conn = await Deno.connect({ ...addr, signal: deadline.signal });
    conn.setNoDelay(true);
    await writeAll(conn, new Uint8Array([Mode.echo, 0x2a]));
    const reply = await readFull(conn, new Uint8Array(1));
    if (reply[0] !== 0x2a) throw new Error(`Echo came back as ${reply[0]}`);
  } catch (err) {
    if (deadline.signal.aborted) throw new Deno.errors.TimedOut(`No echo within ${timeoutMs} ms`);
    throw err;
  } finally {
    clearTimeout(timer);
    if (conn !== undefined) closeQuietly(conn);
  }
}

/** Options of {@link failover}. */
export interface FailoverOptions {
  /** The process to SIGKILL: the discover point holding the name next to another that does. */
  victimPid: number;
  /** Longest a single session may take before it counts as failed. */
  attemptTimeoutMs: number;
  /** Longest to wait for the first session after the kill, and for one before it. */
  timeoutMs: number;
  /** Sessions run (and required to succeed) before the kill, after the first one. */
  warmup: number;
  /** Sessions run after the first success, to see whether the survivor keeps serving. */
  after: number;
}

/** Result of {@link failover}. */
export interface FailoverResult {
  /** Milliseconds from sending SIGKILL to the end of the first session that succeeded. */
  ms: number;
  /** For comparison: the median milliseconds of a session before the kill (the warm-up ones). */
  sessionMs: number;
  /** Sessions tried after the kill up to and including the first that succeeded. */
  attempts: number;
  /** Distinct errors of the failed attempts, with how often each occurred. */
  errors: Record<string, number>;
  /** Of {@link FailoverOptions.after} sessions right after the first success, how many did. */
  afterOk: number;
  /** How many sessions ran after the first success. */
  afterCount: number;
}

function errorKey(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/**
 * Failover as a client sees it: once sessions through `addr` work, SIGKILLs
 * `options.victimPid`, then opens tiny echo sessions one after another, with no pause, until
 * one succeeds; the time from the kill to that success is the figure.
 */
export async function failover(addr: Addr, options: FailoverOptions): Promise<FailoverResult> {
  const sessionsUntil = async (deadline: number, what: string) => {
    const errors: Record<string, number> = {};
    for (let attempts = 1;; attempts++) {
      try {
        await echoOnce(addr, options.attemptTimeoutMs);
        return { attempts, errors };
      } catch (err) {
        const key = errorKey(err);
        errors[key] = (errors[key] ?? 0) + 1;
        if (performance.now() > deadline) {
          throw new Error(
            `No session succeeded ${what} within ${options.timeoutMs} ms (${attempts} tried; ${
              Object.entries(errors).map(([e, n]) => `${n}x ${e}`).join("; ")
            })`,
          );
        }
      }
    }
  };
  await sessionsUntil(performance.now() + options.timeoutMs, "before the kill");
  const warm: number[] = [];
  for (let i = 0; i < options.warmup; i++) {
    const start = performance.now();
    await echoOnce(addr, options.attemptTimeoutMs);
    warm.push(performance.now() - start);
  }
  const sessionMs = quantile(warm.sort((a, b) => a - b), 0.5);
  const killed = performance.now();
  Deno.kill(options.victimPid, "SIGKILL");
  const { attempts, errors } = await sessionsUntil(killed + options.timeoutMs, "after the kill");
  const ms = performance.now() - killed;
  let afterOk = 0;
  for (let i = 0; i < options.after; i++) {
    try {
      await echoOnce(addr, options.attemptTimeoutMs);
      afterOk++;
    } catch (err) {
      const key = `after the first success: ${errorKey(err)}`;
      errors[key] = (errors[key] ?? 0) + 1;
    }
  }
  return { ms, sessionMs, attempts, errors, afterOk, afterCount: options.after };
}
