/**
 * Waiting for SIGINT or SIGTERM, shared by `dp.ts` and `cli.ts`.
 * @module
 */

/** A pending shutdown request. */
export interface ShutdownSignal {
  /** Resolves with the first of SIGINT or SIGTERM. */
  readonly received: Promise<Deno.Signal>;
  /** Removes the signal listeners. */
  dispose(): void;
}

/** Listens for SIGINT and SIGTERM until {@linkcode ShutdownSignal.dispose}. */
export function shutdownSignal(): ShutdownSignal {
  const stop = Promise.withResolvers<Deno.Signal>();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const handlers = signals.map((signal) => {
    const handler = () => stop.resolve(signal);
    Deno.addSignalListener(signal, handler);
    return [signal, handler] as const;
  });
  return {
    received: stop.promise,
    dispose: () => {
      for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
    },
  };
}
