// @ts-check
/**
 * The live page (docs/browser.md): one StreamingClient for the chosen role, its events in a list that
 * clusters bursts and renders at most once per animation frame, an offline banner with the next retry,
 * a clock-drift warning and a connection panel. Served by the local stack, which mints its tokens.
 *
 * Query parameters: role (viewer), transport (auto | websocket | sse | eventsource), last (20: history on
 * load), ttl (token lifetime in seconds, 3600).
 */
import { OPEN, StreamingClient } from "../streaming.js";
import { Clusters } from "./clusters.js";

const DRIFT_WARNING_SECONDS = 2;
const MAX_RECORDED = 20_000; // what the page remembers of delivered events, for inspection and tests

const params = new URLSearchParams(location.search);
const role = params.get("role") ?? "viewer";
const transport = /** @type {any} */ (params.get("transport") ?? "auto");
const last = Number(params.get("last") ?? 20);
const ttl = Number(params.get("ttl") ?? 3600);

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

const config = await (await fetch("/local/config")).json();
const types = config.roles[role];
if (!types) throw new Error(`unknown role ${role}`);

const roleSelect = /** @type {HTMLSelectElement} */ ($("role"));
roleSelect.value = role;
roleSelect.addEventListener("change", () => {
  params.set("role", roleSelect.value);
  location.search = params.toString();
});

async function token() {
  const response = await fetch(`/local/token?role=${encodeURIComponent(role)}&ttl=${ttl}`);
  if (!response.ok) throw new Error(`token: HTTP ${response.status}`);
  return (await response.json()).token;
}

const client = new StreamingClient({
  websocketUrl: config.websocketUrl,
  sseUrl: config.sseUrl,
  token,
  types,
  transport,
  last,
  driftWarningSeconds: DRIFT_WARNING_SECONDS,
});

// -- filters: the types this role may see, and no others ------------------------------------------------

/** @type {Set<string>} */
const hidden = new Set();
for (const type of types) {
  const label = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = true;
  box.value = type;
  box.addEventListener("change", () => {
    if (box.checked) hidden.delete(type);
    else hidden.add(type);
    for (const [, element] of rendered) element.hidden = hidden.has(element.dataset.type ?? "");
  });
  label.append(box, ` ${type}`);
  $("filters").append(label);
}

// -- the list: batches wait for the next frame, bursts become clusters ---------------------------------

const clusters = new Clusters({ threshold: 5, windowMs: 2000, maxRows: 200 });
/** @type {Map<number, HTMLElement>} row id -> element */
const rendered = new Map();
/** @type {{events: any[], history: boolean}[]} */
let pending = [];
let frame = 0;

/** @type {{id: string, type: string, stream: string, seq: number}[]} */
const delivered = [];

client.addEventListener("events", (e) => {
  const { events, history } = /** @type {CustomEvent} */ (e).detail;
  for (const { id, type, stream, seq } of events) {
    if (delivered.length < MAX_RECORDED) delivered.push({ id, type, stream, seq });
  }
  pending.push({ events, history });
  frame ||= requestAnimationFrame(render);
});

function render() {
  frame = 0;
  const batches = pending;
  pending = [];
  const now = performance.now();
  for (const { events, history } of batches) {
    const { added, updated, removed } = clusters.add(events, now, { history });
    const fresh = document.createDocumentFragment();
    for (const row of added) {
      const element = document.createElement("li");
      element.dataset.type = row.type;
      element.hidden = hidden.has(row.type);
      rendered.set(row.id, element);
      fill(element, row);
      fresh.append(element);
    }
    $("events").prepend(fresh);
    for (const row of updated) {
      const element = rendered.get(row.id);
      if (element) fill(element, row);
    }
    for (const row of removed) {
      rendered.get(row.id)?.remove();
      rendered.delete(row.id);
    }
  }
  showStats();
}

/** @param {HTMLElement} element @param {import("./clusters.js").Row} row */
function fill(element, row) {
  const event = row.kind === "cluster" ? row.latest : row.event;
  element.className = row.kind === "cluster" ? "cluster" : row.history ? "history" : "";
  const cells =
    row.kind === "cluster"
      ? [time(event.ts), `${row.count} new ${row.type}`, `#${row.first.seq}–${event.seq}`, `latest: ${summary(event.data)}`]
      : [time(event.ts), row.type, `${event.stream} #${event.seq}`, summary(event.data)];
  element.replaceChildren(
    ...cells.map((text, i) => {
      const cell = document.createElement("span");
      cell.className = ["time", "type", "position", "data"][i];
      cell.textContent = text;
      return cell;
    }),
  );
}

/** @param {string | undefined} ts */
const time = (ts) => (ts ? ts.slice(11, 23) : "");

/** @param {any} data */
function summary(data) {
  const text = typeof data === "object" && data !== null
    ? Object.entries(data).map(([key, value]) => `${key}=${typeof value === "object" ? JSON.stringify(value) : value}`).join("  ")
    : String(data);
  return text.length > 160 ? `${text.slice(0, 160)}…` : text;
}

// -- connection: banner, drift, panel ------------------------------------------------------------------

/** @type {number | null} */
let nextRetryAt = null;
let wasOpen = false;

client.addEventListener("state", (e) => {
  const { state } = /** @type {CustomEvent} */ (e).detail;
  nextRetryAt = /** @type {CustomEvent} */ (e).detail.nextRetryAt;
  wasOpen ||= state === OPEN;
  $("state").textContent = state;
  $("state").dataset.state = state;
  $("offline").hidden = state === OPEN || (!wasOpen && state === "connecting");
  $("offline-title").textContent = state === "failed" ? "Disconnected." : "Offline.";
  showRetry();
  showStats();
});

function showRetry() {
  const state = client.state;
  let detail = "Reconnecting…";
  if (state === "failed") detail = "No connection after 10 attempts: reload the page to try again.";
  else if (state === "offline") detail = "The browser is offline: reconnecting when the network is back.";
  else if (nextRetryAt !== null) {
    detail = `Retrying in ${Math.max(0, Math.ceil((nextRetryAt - Date.now()) / 1000))} s (attempt ${client.backoff.attempts} of ${client.backoff.maxAttempts}).`;
  }
  $("offline-detail").textContent = detail;
}

client.addEventListener("drift", (e) => {
  const { offsetSeconds, uncertaintySeconds } = /** @type {CustomEvent} */ (e).detail;
  if (offsetSeconds === null) return;
  $("drift-value").textContent = `${offsetSeconds >= 0 ? "+" : ""}${offsetSeconds.toFixed(2)} s ± ${uncertaintySeconds.toFixed(2)}`;
  const warn = Math.abs(offsetSeconds) > DRIFT_WARNING_SECONDS;
  $("drift").hidden = !warn;
  if (warn) {
    const direction = offsetSeconds > 0 ? "behind" : "ahead of";
    $("drift").textContent = `This computer's clock is ${Math.abs(offsetSeconds).toFixed(1)} s ${direction} the server's: times shown may mislead.`;
  }
});

client.addEventListener("truncated", () => {
  $("truncated").hidden = false;
});

client.addEventListener("warning", (e) => console.warn("streaming:", /** @type {CustomEvent} */ (e).detail.message));

function showStats() {
  const stats = client.stats;
  $("transport").textContent = client.transport ?? "-";
  $("reconnects").textContent = String(stats.reconnects);
  $("planned").textContent = String(stats.plannedReconnects);
  $("received").textContent = String(stats.received);
  $("duplicates").textContent = String(stats.duplicates);
  $("gaps").textContent = String(stats.gapRepairs);
}

setInterval(() => {
  showRetry();
  showStats();
}, 250);

// For the console and the browser tests: the client, and what the page was handed, in order.
Object.assign(window, { live: { client, delivered, clusters, role, types } });
client.start();
