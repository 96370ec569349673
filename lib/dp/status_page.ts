/**
 * The admin endpoint's live status page: one self-contained HTML document
 * (inline CSS and script, no build step, nothing fetched from elsewhere)
 * that polls `status?history=1` every 2 seconds and shows the discover
 * point's totals, a throughput chart of the last minutes (inline SVG), and
 * its names, links and sessions. Everything a peer chose (names, client
 * labels) goes into the page as text, never as markup. When the endpoint
 * wants a token the page asks for it once and keeps it in sessionStorage.
 * @module
 */

/** What the page needs from the server that serves it. */
export interface StatusPageOptions {
  /** The Content-Security-Policy nonce of this response's style and script. */
  readonly nonce: string;
  /** Whether `status` wants a token: the page asks for it before the first poll. */
  readonly tokenRequired: boolean;
}

const STYLE = `
:root { color-scheme: light dark; --bg: #f6f7f9; --fg: #1d2330; --muted: #677086; --card: #fff;
  --line: #dde1e8; --up: #2f6fde; --down: #d9730d; --ok: #1f9d55; --bad: #d63c3c; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #14171d; --fg: #e4e7ee; --muted: #8d95a8; --card: #1c2029; --line: #2d3340;
    --up: #6b9dff; --down: #f0a050; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--fg); }
header { display: flex; align-items: baseline; gap: 1rem; flex-wrap: wrap; padding: 1rem 1.5rem;
  border-bottom: 1px solid var(--line); background: var(--card); }
h1 { font-size: 1.2rem; margin: 0; }
h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
main { padding: 0 1.5rem 2rem; max-width: 1400px; }
.muted, .count { color: var(--muted); }
#state::before { content: "●"; margin-right: .35rem; }
#state.live::before { color: var(--ok); }
#state.error::before, #state.stale::before { color: var(--bad); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: .75rem;
  margin-top: 1rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .6rem .8rem; }
.card .label { color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
.card .value { font-size: 1.5rem; font-variant-numeric: tabular-nums; }
.card .detail { color: var(--muted); font-size: .8rem; }
.bar { height: 6px; background: var(--line); border-radius: 3px; margin-top: .3rem; overflow: hidden; }
.bar > div { height: 100%; width: 0; background: var(--ok); }
.chart { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .6rem .8rem; }
.chart svg { display: block; width: 100%; height: 160px; }
.chart .axis { display: flex; justify-content: space-between; color: var(--muted); font-size: .8rem; }
.legend span::before { content: "━ "; }
.legend .up::before { color: var(--up); } .legend .down::before { color: var(--down); }
.legend span { margin-right: 1rem; }
#line-up { stroke: var(--up); } #line-down { stroke: var(--down); }
table { width: 100%; border-collapse: collapse; background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; overflow: hidden; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
th { font-size: .75rem; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap { white-space: normal; }
tr:last-child td { border-bottom: none; }
.scroll { overflow-x: auto; }
.refusals { display: flex; flex-wrap: wrap; gap: .4rem 1rem; }
.zero { color: var(--muted); opacity: .6; }
#login { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 1rem;
  margin-top: 1rem; max-width: 34rem; }
#login input { font: inherit; padding: .35rem .5rem; width: 100%; margin: .5rem 0; }
#login button { font: inherit; padding: .35rem 1rem; }
#login-message { color: var(--bad); }
[hidden] { display: none !important; }
`;

const SCRIPT = `
"use strict";
const TOKEN_KEY = "rtcp-admin-token";
const POLL_MS = 2000;
const WINDOW_MS = 6 * 60 * 1000;
const $ = (id) => document.getElementById(id);
let timer;
let lastOk = 0;

function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit++; }
  return (unit === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[unit];
}

function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + (s % 60) + " s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + " h " + (m % 60) + " min";
  return Math.floor(h / 24) + " d " + (h % 24) + " h";
}

function shortKey(key) {
  return key ? key.slice(0, 16) + "…" : "";
}

function setText(id, value) {
  $(id).textContent = value;
}

/** A table row of cells: text, or { text, title, num, wrap }. Text only: never markup. */
function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    const spec = typeof cell === "object" && cell !== null ? cell : { text: cell };
    td.textContent = String(spec.text ?? "");
    if (spec.title) td.title = spec.title;
    if (spec.num) td.className = "num";
    if (spec.wrap) td.className = "wrap";
    tr.append(td);
  }
  return tr;
}

function fill(id, rows, columns, empty) {
  const body = $(id);
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = columns;
    td.className = "muted";
    td.textContent = empty;
    tr.append(td);
    rows = [tr];
  }
  body.replaceChildren(...rows);
}

function sum(record) {
  return Object.values(record).reduce((a, b) => a + b, 0);
}

function render(status) {
  const now = status.time;
  document.title = "RTCP " + status.dpName + ": " + status.sessions + " sessions";
  setText("dp-name", status.dpName);
  setText("uptime", status.startedAt === null ? "not started" : "up " + age(now - status.startedAt));

  setText("c-names", status.names);
  const roles = {};
  for (const [role, byTransport] of Object.entries(status.links)) roles[role] = sum(byTransport);
  setText("c-links", sum(roles));
  setText("c-links-detail", roles.server + " server · " + roles.client + " client · " +
    roles.public + " public · " + roles.peer_dp + " peer DP · " + roles.handshake + " handshaking");
  setText("c-sessions", status.sessions);
  setText("c-sessions-detail", status.sessionsTotal + " opened in all · " + status.forwarded +
    " carried to other DPs now");
  const refused = sum(status.refusals);
  setText("c-refused", refused);
  setText("c-refused-detail", status.handshakesFailed + " failed handshakes · " +
    status.proofsFailed + " failed proofs");
  setText("c-buffered", bytes(status.bufferedBytes));
  setText("c-buffered-detail", "of " + bytes(status.maxBufferedBytes) + " budget");
  const share = status.maxBufferedBytes > 0 ? status.bufferedBytes / status.maxBufferedBytes : 0;
  $("c-buffered-bar").style.width = Math.min(100, share * 100).toFixed(1) + "%";
  setText("c-memory", bytes(status.memory.rss));
  setText("c-memory-detail", "heap " + bytes(status.memory.heapUsed) + " of " +
    bytes(status.memory.heapTotal));
  setText("c-bytes", bytes(status.bytesToServer) + " to servers, " + bytes(status.bytesToClient) +
    " to clients");

  renderChart(status.history || [], now);

  const nameRows = [];
  const linkRows = [];
  const sessionRows = [];
  for (const server of status.servers) {
    const counts = server.counts;
    const keys = [...new Set(server.links.map((link) => link.key).filter(Boolean))];
    nameRows.push(row([
      server.name,
      { text: server.linkCount, num: true },
      { text: server.sessionCount, num: true },
      { text: counts ? counts.sessionsTotal : "(_other)", num: true },
      { text: counts ? bytes(counts.bytesToServer) : "", num: true },
      { text: counts ? bytes(counts.bytesToClient) : "", num: true },
      { text: keys.map(shortKey).join(", "), title: keys.join("\\n") },
    ]));
    for (const link of server.links) {
      linkRows.push(row([
        server.name,
        link.role === "peer_dp" ? "peer DP" : link.role,
        link.peer,
        link.transport,
        { text: age(now - link.since), title: new Date(link.since).toISOString() },
        { text: link.extensions.join(", "), wrap: true },
        { text: shortKey(link.key), title: link.key || "" },
        { text: link.sessions + (link.waiting ? " (+" + link.waiting + " waiting)" : ""), num: true },
      ]));
    }
    for (const session of server.sessions) {
      sessionRows.push(row([
        server.name,
        { text: session.id, num: true },
        { text: session.client, title: session.key || "" },
        session.address,
        { text: age(now - session.since), title: new Date(session.since).toISOString() },
        { text: bytes(session.bytesToServer), num: true },
        { text: bytes(session.bytesToClient), num: true },
        session.via || "",
      ]));
    }
  }
  fill("names-body", nameRows, 7, "No names registered");
  fill("links-body", linkRows, 8, "No links");
  fill("sessions-body", sessionRows, 8, "No open sessions");
  $("truncated").hidden = !status.truncated;

  const reasons = $("refusals");
  reasons.replaceChildren(...Object.entries(status.refusals).map(([reason, count]) => {
    const span = document.createElement("span");
    span.textContent = reason + ": " + count;
    if (count === 0) span.className = "zero";
    return span;
  }));
}

function renderChart(history, now) {
  const W = 600;
  const H = 160;
  const points = { up: [], down: [] };
  let max = 1024;
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1];
    const b = history[i];
    const dt = (b.time - a.time) / 1000;
    if (dt <= 0 || now - b.time > WINDOW_MS) continue;
    const x = W - ((now - b.time) / WINDOW_MS) * W;
    const up = Math.max(0, (b.bytesToServer - a.bytesToServer) / dt);
    const down = Math.max(0, (b.bytesToClient - a.bytesToClient) / dt);
    points.up.push([x, up]);
    points.down.push([x, down]);
    max = Math.max(max, up, down);
  }
  const line = (list) => list.map(([x, v]) => x.toFixed(1) + "," + (H - (v / max) * (H - 4)).toFixed(1)).join(" ");
  $("line-up").setAttribute("points", line(points.up));
  $("line-down").setAttribute("points", line(points.down));
  setText("chart-max", bytes(Math.round(max)) + "/s");
  const last = (list) => list.length ? bytes(Math.round(list[list.length - 1][1])) + "/s" : "–";
  setText("rate-up", "clients → servers " + last(points.up));
  setText("rate-down", "servers → clients " + last(points.down));
}

function setState(state, message) {
  const el = $("state");
  el.className = state;
  el.textContent = message;
}

function showLogin(message) {
  clearTimeout(timer);
  $("login").hidden = false;
  $("dashboard").hidden = true;
  setText("login-message", message);
  setState("error", "needs the admin token");
  $("token").focus();
}

async function poll() {
  clearTimeout(timer);
  const token = storedToken();
  if (document.body.dataset.tokenRequired === "true" && !token) {
    showLogin("");
    return;
  }
  try {
    const headers = token ? { authorization: "Bearer " + token } : {};
    const response = await fetch("status?history=1", { headers, cache: "no-store" });
    if (response.status === 401) {
      const reason = (await response.text()).trim();
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      showLogin(token ? "That token was refused. " + reason : "");
      return;
    }
    if (!response.ok) throw new Error("HTTP " + response.status + ": " + (await response.text()).trim());
    const status = await response.json();
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("forget").hidden = !token;
    render(status);
    lastOk = Date.now();
    setState("live", "live · updated " + new Date(status.time).toLocaleTimeString());
  } catch (error) {
    const since = lastOk ? " (last update " + age(Date.now() - lastOk) + " ago)" : "";
    setState("error", "cannot reach the discover point: " + error.message + since);
  }
  timer = setTimeout(poll, POLL_MS);
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  setText("login-message", "");
  poll();
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("");
});
poll();
`;

const BODY = `
<header>
  <h1>RTCP discover point <span id="dp-name"></span></h1>
  <span id="uptime" class="muted"></span>
  <span id="state">loading…</span>
</header>
<main>
  <section id="login" hidden>
    <form id="login-form">
      <strong>This discover point's admin endpoint needs its token.</strong>
      <div class="muted">The token in the discover point's --admin-token-file. It is kept in this tab only (sessionStorage).</div>
      <input id="token" type="password" autocomplete="off" placeholder="admin token" aria-label="admin token">
      <button type="submit">Show status</button>
      <div id="login-message"></div>
    </form>
  </section>
  <div id="dashboard" hidden>
    <div class="cards">
      <div class="card"><div class="label">Names</div><div class="value" id="c-names">–</div><div class="detail">registered here</div></div>
      <div class="card"><div class="label">Links</div><div class="value" id="c-links">–</div><div class="detail" id="c-links-detail"></div></div>
      <div class="card"><div class="label">Sessions open</div><div class="value" id="c-sessions">–</div><div class="detail" id="c-sessions-detail"></div></div>
      <div class="card"><div class="label">Refused</div><div class="value" id="c-refused">–</div><div class="detail" id="c-refused-detail"></div></div>
      <div class="card"><div class="label">Buffered</div><div class="value" id="c-buffered">–</div><div class="detail" id="c-buffered-detail"></div><div class="bar"><div id="c-buffered-bar"></div></div></div>
      <div class="card"><div class="label">Memory (RSS)</div><div class="value" id="c-memory">–</div><div class="detail" id="c-memory-detail"></div></div>
    </div>
    <h2>Throughput, last 6 minutes <span class="muted">(since the start: <span id="c-bytes"></span>)</span></h2>
    <div class="chart">
      <div class="legend"><span class="up" id="rate-up"></span><span class="down" id="rate-down"></span></div>
      <div class="axis"><span id="chart-max"></span><span></span></div>
      <svg viewBox="0 0 600 160" preserveAspectRatio="none" role="img" aria-label="bytes per second">
        <line x1="0" y1="159.5" x2="600" y2="159.5" stroke="currentColor" stroke-opacity=".2" vector-effect="non-scaling-stroke"/>
        <polyline id="line-up" fill="none" stroke-width="2" vector-effect="non-scaling-stroke"/>
        <polyline id="line-down" fill="none" stroke-width="2" vector-effect="non-scaling-stroke"/>
      </svg>
      <div class="axis"><span>6 min ago</span><span>now</span></div>
    </div>
    <h2>Names</h2>
    <div class="scroll"><table>
      <thead><tr><th>Name</th><th class="num">Links</th><th class="num">Sessions</th><th class="num">Opened</th><th class="num">Clients → server</th><th class="num">Server → clients</th><th>Keys</th></tr></thead>
      <tbody id="names-body"></tbody>
    </table></div>
    <h2>Links</h2>
    <div class="scroll"><table>
      <thead><tr><th>Name</th><th>Role</th><th>Peer</th><th>Transport</th><th>Since</th><th>Extensions</th><th>Key</th><th class="num">Sessions</th></tr></thead>
      <tbody id="links-body"></tbody>
    </table></div>
    <h2>Sessions</h2>
    <div class="scroll"><table>
      <thead><tr><th>Name</th><th class="num">#</th><th>Client</th><th>Address</th><th>Open for</th><th class="num">Client → server</th><th class="num">Server → client</th><th>Via</th></tr></thead>
      <tbody id="sessions-body"></tbody>
    </table></div>
    <p id="truncated" class="muted" hidden>Lists are cut short: this discover point has more names, links or sessions than the page shows. The totals above count them all.</p>
    <h2>Refusals by reason</h2>
    <div class="refusals" id="refusals"></div>
    <p class="muted">Updates every 2 s from <code>status</code>; Prometheus metrics at <code>metrics</code>. <button id="forget" type="button">Forget token</button></p>
  </div>
</main>
`;

/** The page's HTML, with this response's nonce. */
export function statusPage(options: StatusPageOptions): string {
  const nonce = options.nonce.replace(/[^A-Za-z0-9+/=]/g, "");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>RTCP discover point</title>
<style nonce="${nonce}">${STYLE}</style>
</head>
<body data-token-required="${options.tokenRequired}">
${BODY}
<script nonce="${nonce}">${SCRIPT}</script>
</body>
</html>
`;
}
