/**
 * A discover point's metrics in the Prometheus text exposition format
 * (version 0.0.4): one `# HELP` and one `# TYPE` line per metric, then its
 * samples. Every label takes values from a small fixed set, except `name`,
 * whose values the discover point caps (see `counters.ts`).
 * @module
 */

import { REFUSAL_REASONS } from "./counters.ts";
import { type DiscoverPointMetrics, LINK_ROLES, LINK_TRANSPORTS } from "./report.ts";

/** The media type of the text exposition format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Readonly<Record<string, string>>;
type Sample = readonly [labels: Labels, value: number];

/** A label value as the format wants it: backslash, double quote and line feed escaped. */
function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function sampleLine(name: string, [labels, value]: Sample): string {
  const pairs = Object.entries(labels).map(([key, text]) => `${key}="${escapeLabel(text)}"`);
  return `${name}${pairs.length === 0 ? "" : `{${pairs.join(",")}}`} ${value}`;
}

/** Renders `metrics` as a Prometheus text exposition, ending with a line feed. */
export function prometheusText(metrics: DiscoverPointMetrics): string {
  const lines: string[] = [];
  const metric = (
    name: string,
    type: "gauge" | "counter",
    help: string,
    samples: readonly Sample[] | number,
  ) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const sample of typeof samples === "number" ? [[{}, samples] as const] : samples) {
      lines.push(sampleLine(name, sample));
    }
  };
  metric(
    "rtcp_dp_start_time_seconds",
    "gauge",
    "When the discover point started, in seconds since the Unix epoch.",
    (metrics.startedAt ?? 0) / 1000,
  );
  metric(
    "rtcp_dp_names",
    "gauge",
    "Names registered here (with at least one link).",
    metrics.names,
  );
  metric(
    "rtcp_dp_links",
    "gauge",
    "Links and public-port connections open, by role (server, client, public, peer_dp, handshake) and transport (tcp, tls, ws, wss).",
    LINK_ROLES.flatMap((role) =>
      LINK_TRANSPORTS.map((transport) =>
        [{ role, transport }, metrics.links[role][transport]] as const
      )
    ),
  );
  metric(
    "rtcp_dp_sessions",
    "gauge",
    "Sessions open (those carried to other discover points included).",
    metrics.sessions,
  );
  metric("rtcp_dp_sessions_total", "counter", "Sessions opened.", metrics.sessionsTotal);
  metric(
    "rtcp_dp_forwarded_sessions",
    "gauge",
    "Sessions open that are carried to another discover point of the cluster.",
    metrics.forwarded,
  );
  metric(
    "rtcp_dp_forwarded_sessions_total",
    "counter",
    "Sessions carried to another discover point of the cluster.",
    metrics.forwardedTotal,
  );
  metric(
    "rtcp_dp_relayed_sessions_total",
    "counter",
    "Sessions other discover points of the cluster carried here.",
    metrics.relayedTotal,
  );
  metric(
    "rtcp_dp_refusals_total",
    "counter",
    "Sessions refused, by reason class.",
    REFUSAL_REASONS.map((reason) => [{ reason }, metrics.refusals[reason]] as const),
  );
  metric(
    "rtcp_dp_handshakes_failed_total",
    "counter",
    "Links (and TLS connections) that ended before their handshake was done.",
    metrics.handshakesFailed,
  );
  metric(
    "rtcp_dp_proofs_failed_total",
    "counter",
    "Proofs of a key that did not hold.",
    metrics.proofsFailed,
  );
  metric(
    "rtcp_dp_buffered_bytes",
    "gauge",
    "Bytes waiting in sessions, all together.",
    metrics.bufferedBytes,
  );
  metric(
    "rtcp_dp_buffered_bytes_limit",
    "gauge",
    "The budget for bytes waiting in sessions (maxBufferedBytes): new sessions are refused above it.",
    metrics.maxBufferedBytes,
  );
  metric(
    "rtcp_dp_name_sessions_total",
    "counter",
    'Sessions opened, by name (names past the cap count under name="_other").',
    metrics.traffic.map((counts) => [{ name: counts.name }, counts.sessionsTotal] as const),
  );
  metric(
    "rtcp_dp_name_bytes_total",
    "counter",
    'Bytes delivered, by name and direction (to_server, to_client); names past the cap count under name="_other".',
    metrics.traffic.flatMap((counts) => [
      [{ name: counts.name, direction: "to_server" }, counts.bytesToServer] as const,
      [{ name: counts.name, direction: "to_client" }, counts.bytesToClient] as const,
    ]),
  );
  const { memory } = metrics;
  metric(
    "rtcp_dp_memory_bytes",
    "gauge",
    "The process's memory, by kind (rss, heap_total, heap_used, external).",
    [
      [{ kind: "rss" }, memory.rss],
      [{ kind: "heap_total" }, memory.heapTotal],
      [{ kind: "heap_used" }, memory.heapUsed],
      [{ kind: "external" }, memory.external],
    ],
  );
  return `${lines.join("\n")}\n`;
}
