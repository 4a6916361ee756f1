// @ts-check
/**
 * The browser client of the streaming API (docs/protocol.md, docs/browser.md): every event the role and
 * types allow, exactly once and in seq order per stream, across any disconnect. The same semantics as
 * the Python subscriber (clients/subscriber.py); a plain ES module with no dependencies and no build.
 *
 *     import { StreamingClient } from "./streaming.js";
 *     const client = new StreamingClient({ websocketUrl, sseUrl, token: getToken, types: ["signal.created"] });
 *     client.addEventListener("events", (e) => render(e.detail.events));
 *     client.addEventListener("state", (e) => show(e.detail.state, e.detail.nextRetryAt));
 *     client.start();
 *
 * The pure parts (cursors, Ordering, Backoff, DriftEstimate, SseParser, decodeEvent) need no DOM and
 * are exported for tests and for other clients.
 */

/** @typedef {{id: string, type: string, stream: string, seq: number, prev: number, ts?: string,
 *   data: any, encoding?: string, key?: string, coalesced?: number}} StreamEvent */
/** @typedef {Record<string, number>} Position stream -> seq */

export const CONNECTING = "connecting";
export const OPEN = "open";
export const RECONNECTING = "reconnecting";
export const OFFLINE = "offline";
export const CLOSED = "closed";
export const FAILED = "failed";

const CURSOR_PREFIX = "c1.";
const CONNECTION_LIMIT_SECONDS = 2 * 3600; // API Gateway closes every WebSocket after 2 hours
const RENEW_RETRY_SECONDS = 5; // a planned reconnect that failed is tried again (the old one lasts)
const MAX_LAST = 1000; // the most history a `last` replay returns
const REPLAY_LIMIT = 1000; // the largest replay page: catching up takes the fewest round trips

/** Milliseconds on a clock that never goes back. */
const monotonicMs = () => performance.now();

// -- cursors -------------------------------------------------------------------------------------------

/** @param {string} text @returns {string} base64url of UTF-8, without padding */
function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** A resume cursor: "c1." + base64url of the JSON object stream -> seq (sorted keys, as the server). */
export function encodeCursor(/** @type {Position} */ position) {
  const sorted = Object.fromEntries(Object.entries(position).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return CURSOR_PREFIX + base64url(JSON.stringify(sorted));
}

/** The positions in a cursor the server issued; throws for anything else. @returns {Position} */
export function decodeCursor(/** @type {string} */ cursor) {
  if (!cursor.startsWith(CURSOR_PREFIX)) throw new Error("not a cursor this service issued");
  const body = cursor.slice(CURSOR_PREFIX.length).replaceAll("-", "+").replaceAll("_", "/");
  const binary = atob(body + "=".repeat((4 - (body.length % 4)) % 4));
  const value = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
  if (typeof value !== "object" || value === null || !Object.values(value).every(Number.isInteger)) {
    throw new Error("not a cursor this service issued");
  }
  return value;
}

// -- ordering: protocol.md's resume rule ------------------------------------------------------------------

/**
 * Per stream a position p, the seq of the last event handed to the application:
 * seq <= p is a repeat (dropped and counted); prev <= p is the next one owed (handed over, with whatever
 * it unblocks); prev > p waits for what is missing, until `waiting()` says to replay from `cursor`.
 * Held events are bounded (`maxHeld`): past it the oldest are dropped, since a replay brings them again.
 */
export class Ordering {
  /** @param {{position?: Position, maxHeld?: number, now?: () => number}} [options] now: milliseconds */
  constructor({ position = {}, maxHeld = 10_000, now = monotonicMs } = {}) {
    /** @type {Position} */
    this.position = { ...position };
    this.repeats = 0; // events dropped because the application had them already
    // Events the server left out under overload, each superseded by a later one of the same type and key
    // that was handed over (its `coalesced` counts them); a replay from an earlier cursor returns them.
    this.coalesced = 0;
    /** @type {Map<string, Map<number, {event: StreamEvent, arrived: number}>>} stream -> seq -> held */
    this._held = new Map();
    this._heldCount = 0;
    this._maxHeld = maxHeld;
    this._now = now;
  }

  /** Where to resume: exact for the types this position was built with. */
  get cursor() {
    return encodeCursor(this.position);
  }

  get held() {
    return this._heldCount;
  }

  /** One delivered event (live or replayed); the events now owed to the application, in order.
   * @param {StreamEvent} event @returns {StreamEvent[]} */
  offer(event) {
    const { stream, seq } = event;
    const at = this.position[stream] ?? 0;
    const held = this._held.get(stream);
    if (seq <= at || held?.has(seq)) {
      this.repeats += 1;
      return [];
    }
    if (event.prev <= at && !held?.size) {
      this.position[stream] = seq; // the common case: next in line, nothing waiting
      this.coalesced += event.coalesced ?? 0;
      return [event];
    }
    this._hold(event);
    return this._release(stream);
  }

  /** Move to a position the server vouches for (an SSE event id, a first `subscribed.cursor`); events
   * up to it were handed over or are not owed. @param {Position} position @returns {StreamEvent[]} */
  adopt(position) {
    /** @type {StreamEvent[]} */
    const released = [];
    for (const [stream, seq] of Object.entries(position)) {
      if (seq > (this.position[stream] ?? 0)) {
        this.position[stream] = seq;
        released.push(...this._release(stream));
      } else if (!(stream in this.position)) {
        this.position[stream] = seq; // an empty stream too: its first event, lost, then shows in the heads
      }
    }
    return released;
  }

  /**
   * Begin at a first subscription's `position`, after a `last` replay's `history` (and whatever live
   * events arrived with it). History is not a continuation: the events up to `position` are handed
   * over in seq order per stream (streams merged by time) without the `prev` check; the rest follow by
   * the rule. @param {Position} position @param {StreamEvent[]} history @returns {StreamEvent[]}
   */
  start(position, history = []) {
    /** @type {Map<string, StreamEvent[]>} */
    const byStream = new Map();
    for (const event of history) {
      if (event.seq > (position[event.stream] ?? 0)) continue;
      if (!byStream.has(event.stream)) byStream.set(event.stream, []);
      byStream.get(event.stream)?.push(event);
    }
    const queues = [...byStream.values()].map((events) => events.sort((a, b) => a.seq - b.seq));
    /** @type {StreamEvent[]} */
    const released = [];
    while (queues.some((queue) => queue.length)) {
      const next = queues
        .filter((queue) => queue.length)
        .reduce((a, b) => ((a[0].ts ?? "") <= (b[0].ts ?? "") ? a : b));
      const event = /** @type {StreamEvent} */ (next.shift());
      if (event.seq <= (this.position[event.stream] ?? 0)) {
        this.repeats += 1;
        continue;
      }
      this.position[event.stream] = event.seq;
      released.push(event);
    }
    released.push(...this.adopt(position));
    for (const event of history) {
      if (event.seq > (position[event.stream] ?? 0)) released.push(...this.offer(event));
    }
    return released;
  }

  /** How long (seconds) the oldest held event has waited for its predecessor; 0 when none is held. */
  waiting() {
    let oldest = Infinity;
    for (const held of this._held.values()) for (const { arrived } of held.values()) oldest = Math.min(oldest, arrived);
    return oldest === Infinity ? 0 : (this._now() - oldest) / 1000;
  }

  /** Whether a head (pong, welcome, heartbeat) is beyond what was handed over and what a replay has
   * already looked at: a lost last event, or events of other types; a replay from `cursor` tells which.
   * @param {Position} heads @param {Position} [scanned] */
  behind(heads, scanned = {}) {
    return Object.entries(heads).some(
      ([stream, seq]) =>
        stream in this.position && seq > Math.max(this.position[stream], scanned[stream] ?? 0),
    );
  }

  /** The connection is gone: what was held comes again after the resume. */
  cut() {
    this._held.clear();
    this._heldCount = 0;
  }

  /** @param {StreamEvent} event */
  _hold(event) {
    let held = this._held.get(event.stream);
    if (!held) this._held.set(event.stream, (held = new Map()));
    held.set(event.seq, { event, arrived: this._now() });
    this._heldCount += 1;
    if (this._heldCount > this._maxHeld) this._dropOldest();
  }

  _dropOldest() {
    let oldest = { arrived: Infinity, stream: "", seq: 0 };
    for (const [stream, held] of this._held) {
      for (const [seq, { arrived }] of held) if (arrived < oldest.arrived) oldest = { arrived, stream, seq };
    }
    this._held.get(oldest.stream)?.delete(oldest.seq);
    this._heldCount -= 1;
  }

  /** @param {string} stream @returns {StreamEvent[]} */
  _release(stream) {
    const held = this._held.get(stream);
    /** @type {StreamEvent[]} */
    const released = [];
    while (held?.size) {
      const at = this.position[stream] ?? 0;
      let next = null;
      for (const { event } of held.values()) if (event.prev <= at && (!next || event.seq < next.seq)) next = event;
      if (!next) break;
      held.delete(next.seq);
      this._heldCount -= 1;
      if (next.seq <= at) {
        this.repeats += 1; // passed by an adopted position
        continue;
      }
      this.position[stream] = next.seq;
      this.coalesced += next.coalesced ?? 0;
      released.push(next);
    }
    return released;
  }
}

// -- backoff ----------------------------------------------------------------------------------------------

/**
 * Exponential backoff with full jitter: the wait before attempt n is uniform in
 * [0, min(cap, base * 2^n)]; after `maxAttempts` failures in a row, `nextDelay()` is null (give up);
 * a connection that stayed up `stableSeconds` starts the schedule afresh.
 */
export class Backoff {
  /** @param {{baseSeconds?: number, capSeconds?: number, maxAttempts?: number, stableSeconds?: number,
   *   random?: () => number, now?: () => number}} [options] random: uniform in [0, 1); now: ms */
  constructor({
    baseSeconds = 0.5,
    capSeconds = 30,
    maxAttempts = 10,
    stableSeconds = 30,
    random = Math.random,
    now = monotonicMs,
  } = {}) {
    this.baseSeconds = baseSeconds;
    this.capSeconds = capSeconds;
    this.maxAttempts = maxAttempts;
    this.stableSeconds = stableSeconds;
    this.attempts = 0;
    this._random = random;
    this._now = now;
    /** @type {number | null} */
    this._connectedAt = null;
  }

  /** Seconds to wait before the next attempt, or null when the attempts are used up. */
  nextDelay() {
    if (this._connectedAt !== null && this._now() - this._connectedAt >= this.stableSeconds * 1000) {
      this.attempts = 0;
    }
    this._connectedAt = null;
    if (this.attempts >= this.maxAttempts) return null;
    const ceiling = Math.min(this.capSeconds, this.baseSeconds * 2 ** this.attempts);
    this.attempts += 1;
    return ceiling * this._random();
  }

  /** A connection opened; if it stays up `stableSeconds`, the next failure starts afresh. */
  connected() {
    this._connectedAt = this._now();
  }
}

// -- clock drift ----------------------------------------------------------------------------------------

/**
 * The server's clock minus this one, from the exchange with the shortest round trip among the last
 * `samples` (Cristian's algorithm: the error is at most half that round trip).
 */
export class DriftEstimate {
  constructor(samples = 8) {
    this.samples = samples;
    /** @type {{roundTrip: number, offset: number}[]} seconds */
    this._seen = [];
  }

  /** One exchange: when the request left and its answer came back (epoch ms, this clock), and the
   * server's time in the answer (RFC 3339). */
  add(/** @type {number} */ sentAt, /** @type {string} */ serverTime, /** @type {number} */ receivedAt) {
    const roundTrip = Math.max(0, receivedAt - sentAt);
    const offset = Date.parse(serverTime) - (sentAt + roundTrip / 2);
    this._seen.push({ roundTrip: roundTrip / 1000, offset: offset / 1000 });
    if (this._seen.length > this.samples) this._seen.shift();
  }

  _best() {
    return this._seen.reduce((a, b) => (b.roundTrip < a.roundTrip ? b : a), this._seen[0]);
  }

  /** Server clock minus this clock, in seconds; null before any exchange. */
  get offsetSeconds() {
    return this._seen.length ? this._best().offset : null;
  }

  get uncertaintySeconds() {
    return this._seen.length ? this._best().roundTrip / 2 : null;
  }
}

// -- SSE text and compressed data ---------------------------------------------------------------------

/** @typedef {{event: string, data: string, id: string | null}} SseMessage */

/** Server-Sent Events text (WHATWG HTML) fed in chunks as it arrives; complete messages out. */
export class SseParser {
  constructor() {
    this._buffer = "";
    /** @type {{event?: string, data?: string[], id?: string}} */
    this._fields = {};
  }

  /** @param {string} text @returns {SseMessage[]} */
  feed(text) {
    this._buffer += text;
    const lines = this._buffer.split(/\r\n|\r|\n/);
    this._buffer = lines.pop() ?? ""; // an incomplete line waits for the rest
    /** @type {SseMessage[]} */
    const messages = [];
    for (const line of lines) {
      if (line === "") {
        const { event, data, id } = this._fields;
        this._fields = {};
        if (data) messages.push({ event: event || "message", data: data.join("\n"), id: id ?? null });
        continue;
      }
      if (line.startsWith(":")) continue; // a comment (": heartbeat")
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") (this._fields.data ??= []).push(value);
      else if (name === "event") this._fields.event = value;
      else if (name === "id") this._fields.id = value;
    }
    return messages;
  }
}

/** Compressed data (`"encoding": "gzip"`: base64 of gzip JSON) restored, so the application sees plain
 * data. @param {StreamEvent} event @returns {Promise<StreamEvent>} */
export async function decodeEvent(event) {
  if (event.encoding !== "gzip") return event;
  const bytes = Uint8Array.from(atob(event.data), (c) => c.charCodeAt(0));
  const plain = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  const { encoding: _, ...rest } = event;
  return { ...rest, data: JSON.parse(await new Response(plain).text()) };
}

// -- the client -----------------------------------------------------------------------------------------

/**
 * @typedef {object} ClientOptions
 * @property {string} [websocketUrl] the WebSocketUrl output
 * @property {string} [sseUrl] the SSE endpoint: SseUrl + "events"
 * @property {() => string | Promise<string>} token asked before every connection
 * @property {string[]} types event types to receive
 * @property {"auto" | "websocket" | "sse" | "eventsource"} [transport] auto: WebSocket, then SSE after
 *   `websocketTriesBeforeSse` failed WebSocket connections in a row (fetch streaming; EventSource with
 *   ?token= only where fetch cannot stream)
 * @property {number} [last] events of history on the first connection (WebSocket only), 0 for none
 * @property {number} [gapSeconds] how long an event waits for its predecessor before a replay
 * @property {number} [pingSeconds] WebSocket ping interval (idle timeout, lost last event, drift)
 * @property {number} [silenceSeconds] a connection silent this long is treated as dead
 * @property {number} [openTimeoutSeconds] a connection not open by then has failed
 * @property {number} [renewBeforeSeconds] planned reconnect this long before expiry (at most half a
 *   token's lifetime)
 * @property {number} [driftWarningSeconds] a clock offset above this is reported as a warning
 * @property {number} [websocketTriesBeforeSse]
 * @property {ConstructorParameters<typeof Backoff>[0]} [backoff]
 * @property {number} [tickMs] how often timers are checked
 * @property {any} [WebSocket] injectable for tests; default: the global
 * @property {any} [fetch]
 * @property {any} [EventSource]
 * @property {any} [network] what fires `online`/`offline` and has `navigator.onLine`; default: globalThis
 */

/**
 * Events it dispatches (CustomEvent, details below):
 * - `events`: `{events, history}`, in order; `history` marks the "last N" of the first connection;
 * - `state`: `{state, transport, nextRetryAt}` (connecting, open, reconnecting, offline, closed,
 *   failed; nextRetryAt in epoch ms while a retry is scheduled);
 * - `warning`: `{message}`; `truncated`: `{cursor}` (events after the position left the replay
 *   window: reload state another way); `drift`: `{offsetSeconds, uncertaintySeconds}`.
 */
export class StreamingClient extends EventTarget {
  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    if (!options.types?.length) throw new Error("subscribe to at least one type");
    const last = options.last ?? 0;
    if (!(last >= 0 && last <= MAX_LAST)) throw new Error(`last is 0 (none) to ${MAX_LAST} events`);
    this.options = {
      transport: "auto",
      gapSeconds: 1,
      pingSeconds: 30,
      silenceSeconds: 75,
      openTimeoutSeconds: 10,
      renewBeforeSeconds: 60,
      driftWarningSeconds: 2,
      websocketTriesBeforeSse: 3,
      tickMs: 250,
      WebSocket: globalThis.WebSocket,
      fetch: globalThis.fetch?.bind(globalThis),
      EventSource: globalThis.EventSource,
      network: globalThis,
      ...options,
      last,
    };
    this.types = [...new Set(options.types)].sort();
    this.ordering = new Ordering();
    this.backoff = new Backoff(options.backoff);
    this.drift = new DriftEstimate();
    this.state = CLOSED;
    /** @type {string | null} */
    this.transport = null;
    /** @type {number | null} epoch ms of the next attempt while one is scheduled */
    this.nextRetryAt = null;
    /** @type {string[] | null} what the server says the role may see (WebSocket `welcome`) */
    this.allowedTypes = null;
    this.counters = { connections: 0, reconnects: 0, plannedReconnects: 0, received: 0, gapRepairs: 0 };
    this._started = false; // the first subscription has begun: every later one resumes
    this._websocketFailures = 0;
    /** @type {Connection | null} */
    this._current = null;
    /** @type {Connection | null} a successor opened before the current one has to go */
    this._successor = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._retryTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._ticker = undefined;
    this._delivery = Promise.resolve();
    this._decoding = 0;
    this._resumingAsPlanned = false;
    this._onOnline = () => this._networkBack();
    this._onOffline = () => this._networkGone();
  }

  /** Whether the first subscription has begun (with its history, if any): live events flow from here. */
  get started() {
    return this._started;
  }

  /** What a connection panel shows. */
  get stats() {
    const { repeats, held, coalesced } = this.ordering;
    return { ...this.counters, duplicates: repeats, held, coalesced };
  }

  start() {
    if (this.state !== CLOSED) return;
    this.options.network?.addEventListener?.("online", this._onOnline);
    this.options.network?.addEventListener?.("offline", this._onOffline);
    this._ticker = setInterval(() => this._tick(), this.options.tickMs);
    this._setState(CONNECTING);
    this._connect();
  }

  close() {
    this._stop();
    this._setState(CLOSED);
  }

  _stop() {
    this.options.network?.removeEventListener?.("online", this._onOnline);
    this.options.network?.removeEventListener?.("offline", this._onOffline);
    clearInterval(this._ticker);
    clearTimeout(this._retryTimer);
    this.nextRetryAt = null;
    this._closeConnections();
  }

  _closeConnections() {
    const connections = [this._current, this._successor];
    this._current = this._successor = null;
    for (const connection of connections) connection?.close();
  }

  // -- connections ---------------------------------------------------------------------------------------

  _offline() {
    return this.options.network?.navigator?.onLine === false;
  }

  _useWebSocket() {
    const { transport, websocketUrl, websocketTriesBeforeSse } = this.options;
    if (transport === "websocket") return true;
    if (transport !== "auto" || !websocketUrl) return false;
    return this._websocketFailures < websocketTriesBeforeSse;
  }

  async _connect() {
    this.nextRetryAt = null;
    if (this._offline()) return this._setState(OFFLINE); // `online` brings it back
    const websocket = this._useWebSocket();
    const sse = this.options.transport === "eventsource" || !this._fetchStreams() ? "eventsource" : "sse";
    this.transport = websocket ? "websocket" : sse;
    let token;
    try {
      token = await this.options.token();
    } catch (error) {
      this._warn(`no token: ${error}`);
      return this._retry();
    }
    if (this.state === CLOSED || this.state === FAILED) return;
    const connection = websocket
      ? new WebSocketConnection(this, token, false)
      : new SseConnection(this, token, this.transport === "eventsource");
    this._current = connection;
    connection.open();
  }

  _fetchStreams() {
    return typeof this.options.fetch === "function" && typeof ReadableStream !== "undefined";
  }

  /** @param {Connection} connection */
  _opened(connection) {
    if (connection.successor) return; // opened quietly; takes over once caught up
    this.counters.connections += 1;
    if (this.counters.connections > 1 && !this._resumingAsPlanned) this.counters.reconnects += 1;
    this._resumingAsPlanned = false;
    if (connection instanceof WebSocketConnection) this._websocketFailures = 0;
    this.backoff.connected();
    this._setState(OPEN);
  }

  /** A connection ended. `planned`: by design (an SSE stream's end, a gap to repair): resume at once.
   * @param {Connection} connection @param {{opened: boolean, planned?: boolean, reason?: string}} how */
  _ended(connection, { opened, planned = false, reason }) {
    if (connection === this._successor) {
      this._successor = null; // the current one goes on; try again a little later
      this._current?.postponeRenewal(RENEW_RETRY_SECONDS);
      if (reason) this._warn(`planned reconnect failed: ${reason}`);
      return;
    }
    if (connection !== this._current || this.state === CLOSED) return; // retired after a handover
    if (reason) this._warn(`${this.transport} connection ended: ${reason}`);
    if (connection instanceof WebSocketConnection && !opened) this._websocketFailures += 1;
    this._current = this._successor;
    this._successor = null;
    if (this._current) {
      // A successor was on its way: it resumes as any new connection does (what is held stays held).
      this._current.successor = false;
      if (this._current.opened) this._opened(this._current);
      else this._setState(RECONNECTING);
      return;
    }
    this.ordering.cut(); // what was held comes again after the resume
    if (planned) {
      this._resumingAsPlanned = true; // the state stays open: this is no outage
      this._connect();
    } else {
      this._retry();
    }
  }

  _retry() {
    if (this._offline()) return this._setState(OFFLINE);
    const delay = this.backoff.nextDelay();
    if (delay === null) {
      this._warn(`no connection after ${this.backoff.maxAttempts} attempts`);
      this._stop();
      return this._setState(FAILED);
    }
    this.nextRetryAt = Date.now() + delay * 1000;
    this._setState(RECONNECTING);
    this._retryTimer = setTimeout(() => this._connect(), delay * 1000);
  }

  _networkGone() {
    clearTimeout(this._retryTimer);
    this.nextRetryAt = null;
    this._closeConnections();
    this.ordering.cut();
    if (this.state !== CLOSED && this.state !== FAILED) this._setState(OFFLINE);
  }

  _networkBack() {
    if (this.state !== OFFLINE) return;
    this._setState(RECONNECTING);
    this._connect();
  }

  /** A planned reconnect: a successor opens, subscribes and catches up before the current one closes. */
  _renew() {
    if (this._successor || !(this._current instanceof WebSocketConnection)) return;
    this._current.postponeRenewal(RENEW_RETRY_SECONDS);
    Promise.resolve()
      .then(() => this.options.token())
      .then((token) => {
        if (this.state === CLOSED || this._successor || !this._current) return;
        this._successor = new WebSocketConnection(this, token, true);
        this._successor.open();
      })
      .catch((error) => this._warn(`no token for the planned reconnect: ${error}`));
  }

  /** @param {Connection} connection */
  _caughtUp(connection) {
    if (connection !== this._successor) return;
    const retired = this._current;
    this._current = connection;
    this._successor = null;
    connection.successor = false;
    this.counters.plannedReconnects += 1;
    this.backoff.connected();
    retired?.close();
  }

  _tick() {
    const now = monotonicMs();
    for (const connection of [this._current, this._successor]) connection?.tick(now);
  }

  // -- what the application sees -------------------------------------------------------------------------

  /** @param {StreamEvent[]} events @param {boolean} [history] */
  _deliver(events, history = false) {
    if (!events.length) return;
    this.counters.received += events.length;
    // Decoding gzip data is asynchronous: events wait behind it so that order holds.
    if (!this._decoding && !events.some((event) => event.encoding === "gzip")) {
      this._dispatch("events", { events, history });
      return;
    }
    this._decoding += 1;
    this._delivery = this._delivery
      .then(() => Promise.all(events.map(decodeEvent)))
      .then((decoded) => this._dispatch("events", { events: decoded, history }))
      .catch((error) => this._warn(`an event could not be decoded: ${error}`))
      .finally(() => {
        this._decoding -= 1;
      });
  }

  /** @param {string} state */
  _setState(state) {
    if (state === this.state && state !== RECONNECTING) return;
    this.state = state;
    this._dispatch("state", { state, transport: this.transport, nextRetryAt: this.nextRetryAt });
  }

  /** @param {string} message */
  _warn(message) {
    this._dispatch("warning", { message });
  }

  _driftMeasured() {
    const { offsetSeconds, uncertaintySeconds } = this.drift;
    this._dispatch("drift", { offsetSeconds, uncertaintySeconds });
    if (offsetSeconds !== null && Math.abs(offsetSeconds) > this.options.driftWarningSeconds) {
      this._warn(`clock drift ${offsetSeconds.toFixed(1)} s from the server`);
    }
  }

  /** @param {string} name @param {object} detail */
  _dispatch(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}

// -- WebSocket ------------------------------------------------------------------------------------------

class WebSocketConnection {
  /** @param {StreamingClient} client @param {string} token @param {boolean} successor */
  constructor(client, token, successor) {
    this.client = client;
    this.token = token;
    this.successor = successor; // opened for a planned reconnect: quiet until caught up
    this.opened = false;
    this.ended = false;
    /** @type {any} */
    this.ws = null;
    /** @type {Position} how far replays looked, per stream */
    this.scanned = {};
    /** @type {StreamEvent[] | null} events that arrive while "last N" is read */
    this.history = null;
    /** @type {Position} */
    this.start = {};
    const now = monotonicMs();
    this.openedAt = now;
    this.heardAt = now;
    this.lastPingAt = -Infinity; // the first ping goes out after `welcome`: drift and heads early
    this.welcomed = false;
    this.lastReplayAt = 0;
    this.pingSentAt = 0; // epoch ms
    this.renewAt = now + (CONNECTION_LIMIT_SECONDS - client.options.renewBeforeSeconds) * 1000;
  }

  open() {
    const { WebSocket, websocketUrl } = this.client.options;
    try {
      this.ws = new WebSocket(websocketUrl, ["streaming.v1", `token.${this.token}`]);
    } catch (error) {
      queueMicrotask(() => this.end(`${error}`));
      return;
    }
    this.ws.onopen = () => {
      this.opened = true;
      this.heardAt = monotonicMs();
      this.send({ action: "subscribe", types: this.client.types, id: "subscribe" });
      this.client._opened(this);
    };
    this.ws.onmessage = (/** @type {MessageEvent} */ message) => {
      this.heardAt = monotonicMs();
      this.receive(JSON.parse(message.data));
    };
    this.ws.onclose = (/** @type {CloseEvent} */ closed) =>
      this.end(this.opened ? `closed (${closed.code})` : "could not connect");
  }

  /** @param {string} [reason] */
  end(reason) {
    if (this.ended) return;
    this.ended = true;
    this.ws?.close();
    this.client._ended(this, { opened: this.opened, reason });
  }

  close() {
    this.ended = true;
    try {
      this.ws?.close(1000);
    } catch {
      // already closing
    }
  }

  /** @param {number} seconds */
  postponeRenewal(seconds) {
    this.renewAt = monotonicMs() + seconds * 1000;
  }

  /** @param {object} message */
  send(message) {
    if (this.ws?.readyState === 1) this.ws.send(JSON.stringify(message));
  }

  /** @param {string} cursor @param {string} id */
  replay(cursor, id) {
    this.lastReplayAt = monotonicMs();
    this.send({ action: "replay", cursor, limit: REPLAY_LIMIT, id });
  }

  /** @param {number} now */
  tick(now) {
    const { options, ordering } = this.client;
    if (this.ended) return;
    if (!this.opened) {
      if (now - this.openedAt > options.openTimeoutSeconds * 1000) this.end("no answer to the handshake");
      return;
    }
    if (now - this.heardAt > options.silenceSeconds * 1000) return this.end("the connection went silent");
    if (this.successor) return; // the current connection repairs gaps and pings
    const gap = options.gapSeconds * 1000;
    if (ordering.waiting() * 1000 > gap && now - this.lastReplayAt > gap) {
      this.client.counters.gapRepairs += 1;
      this.replay(ordering.cursor, "gap");
    }
    if (this.welcomed && now - this.lastPingAt > options.pingSeconds * 1000) {
      this.lastPingAt = now;
      this.pingSentAt = Date.now();
      this.send({ action: "ping", id: "ping" });
    }
    if (now >= this.renewAt && this.client.state === OPEN) this.client._renew();
  }

  /** @param {any} message */
  receive(message) {
    const client = this.client;
    const { ordering } = client;
    switch (message.type) {
      case "welcome": {
        this.welcomed = true;
        client.allowedTypes = message.allowed_types;
        const lifetime = message.expires_at - Date.parse(message.server_time) / 1000;
        const lead = Math.min(client.options.renewBeforeSeconds, lifetime / 2);
        this.renewAt = Math.min(this.renewAt, monotonicMs() + (lifetime - lead) * 1000);
        break;
      }
      case "reconnect":
        // The server closes this connection soon (`at`): hand over now, unless a handover is under way.
        this.renewAt = Math.min(this.renewAt, monotonicMs());
        if (!this.successor && client.state === OPEN) client._renew();
        break;
      case "subscribed":
        this.subscribed(decodeCursor(message.cursor));
        break;
      case "events": {
        /** @type {StreamEvent[]} */
        const released = [];
        for (const event of message.events) {
          if (!client.types.includes(event.type)) continue;
          if (this.history) this.history.push(event);
          else released.push(...ordering.offer(event));
        }
        client._deliver(released); // one batch per message
        break;
      }
      case "replay": {
        const cursor = decodeCursor(message.cursor);
        for (const [stream, seq] of Object.entries(cursor)) {
          this.scanned[stream] = Math.max(this.scanned[stream] ?? 0, seq);
        }
        if (message.truncated) {
          client._warn("events after the position have left the replay window");
          client._dispatch("truncated", { cursor: message.cursor });
        }
        if (message.id === "history") this.endHistory(cursor);
        else if (message.more) this.replay(message.cursor, message.id);
        else if (message.id === "resume") client._caughtUp(this);
        break;
      }
      case "pong":
        if (this.pingSentAt) client.drift.add(this.pingSentAt, message.server_time, Date.now());
        client._driftMeasured();
        if (ordering.behind(message.heads, this.scanned)) {
          client.counters.gapRepairs += 1;
          this.replay(ordering.cursor, "gap");
        }
        break;
      case "error":
        if (message.id === "subscribe") this.end(`subscription refused (${message.code})`);
        else if (message.id === "history") {
          client._warn(`history could not be read (${message.code}); starting live`);
          this.endHistory({});
        } else client._warn(`server error ${message.code}: ${message.message}`);
        break;
    }
  }

  /** @param {Position} cursor */
  subscribed(cursor) {
    const client = this.client;
    if (client._started) {
      this.replay(client.ordering.cursor, "resume"); // everything after the position
    } else if (client.options.last) {
      this.start = cursor;
      this.history = [];
      this.lastReplayAt = monotonicMs();
      this.send({ action: "replay", last: client.options.last, id: "history" });
    } else {
      this.start = cursor;
      this.endHistory({});
    }
  }

  /** The first subscription begins: after its history, at the later of its cursor and the history's.
   * @param {Position} cursor */
  endHistory(cursor) {
    const start = { ...this.start };
    for (const [stream, seq] of Object.entries(cursor)) start[stream] = Math.max(start[stream] ?? 0, seq);
    const history = this.history ?? [];
    this.history = null;
    const client = this.client;
    const isHistory = (/** @type {StreamEvent} */ event) => event.seq <= (start[event.stream] ?? 0);
    const released = client.ordering.start(start, history);
    client._started = true;
    client._deliver(released.filter(isHistory), true);
    client._deliver(released.filter((event) => !isHistory(event)));
  }
}

// -- SSE ------------------------------------------------------------------------------------------------

class SseConnection {
  /** @param {StreamingClient} client @param {string} token @param {boolean} eventSource */
  constructor(client, token, eventSource) {
    this.client = client;
    this.token = token;
    this.eventSource = eventSource; // the last resort: ?token= in the URL
    this.successor = false;
    this.opened = false;
    this.ended = false;
    this.heardAt = monotonicMs();
    this.sentAt = Date.now();
    this.timed = false; // the first heartbeat answers the request: a round trip for the drift estimate
    /** @type {AbortController | null} */
    this.abort = null;
    /** @type {any} */
    this.source = null;
  }

  url() {
    const { client } = this;
    const params = new URLSearchParams({ types: client.types.join(",") });
    if (client._started) params.set("cursor", client.ordering.cursor);
    else if (client.options.last) client._warn("history (last) is read over the WebSocket only: SSE starts live");
    if (this.eventSource) params.set("token", this.token);
    return `${client.options.sseUrl}?${params}`;
  }

  open() {
    if (this.eventSource) this.openEventSource();
    else this.openFetch();
  }

  async openFetch() {
    this.abort = new AbortController();
    try {
      const response = await this.client.options.fetch(this.url(), {
        headers: { Authorization: `Bearer ${this.token}` },
        cache: "no-store",
        signal: this.abort.signal,
      });
      if (!response.ok) {
        const refusal = await response.json().catch(() => ({}));
        return this.end(`HTTP ${response.status} ${refusal?.error?.code ?? ""}`.trim());
      }
      this.opened = true;
      this.heardAt = monotonicMs();
      this.client._opened(this);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      while (!this.ended) {
        const { value, done } = await reader.read();
        if (done) return this.end("the stream ended without `end`");
        this.heardAt = monotonicMs();
        for (const message of parser.feed(value)) {
          if (this.ended) break;
          this.receive(message);
        }
      }
      reader.cancel().catch(() => {});
    } catch (error) {
      if (!this.ended) this.end(`${error}`);
    }
  }

  openEventSource() {
    const source = new this.client.options.EventSource(this.url());
    this.source = source;
    source.onopen = () => {
      this.opened = true;
      this.heardAt = monotonicMs();
      this.client._opened(this);
    };
    // Every error ends it here: EventSource would reconnect by itself with the same, expiring token.
    source.onerror = () => this.end(this.opened ? "the stream failed" : "could not connect");
    const receive = (/** @type {MessageEvent} */ e) => {
      this.heardAt = monotonicMs();
      this.receive({ event: e.type, data: e.data, id: e.lastEventId || null });
    };
    for (const name of [...this.client.types, "heartbeat", "end", "truncated"]) {
      source.addEventListener(name, receive);
    }
  }

  /** @param {SseMessage} message */
  receive({ event, data, id }) {
    const client = this.client;
    if (event === "end") {
      client.counters.plannedReconnects += 1;
      return this.end(undefined, true); // planned: resume now, with a new token
    }
    if (event === "heartbeat") {
      if (!this.timed) {
        this.timed = true;
        client.drift.add(this.sentAt, JSON.parse(data).server_time, Date.now());
        client._driftMeasured();
      }
    } else if (event === "truncated") {
      client._warn("events after the position have left the replay window");
      client._dispatch("truncated", { cursor: JSON.parse(data).cursor });
    } else if (client.types.includes(event)) {
      client._deliver(client.ordering.offer(JSON.parse(data)));
    }
    if (id) {
      client._started = true;
      client._deliver(client.ordering.adopt(decodeCursor(id)));
    }
  }

  /** @param {string} [reason] @param {boolean} [planned] */
  end(reason, planned = false) {
    if (this.ended) return;
    this.ended = true;
    this.abort?.abort();
    this.source?.close();
    this.client._ended(this, { opened: this.opened, planned, reason });
  }

  close() {
    this.ended = true;
    this.abort?.abort();
    this.source?.close();
  }

  postponeRenewal() {} // SSE streams end as planned before the token expires

  /** @param {number} now */
  tick(now) {
    const { options, ordering } = this.client;
    if (this.ended) return;
    if (now - this.heardAt > options.silenceSeconds * 1000) return this.end("the stream went silent");
    if (this.opened && ordering.waiting() > options.gapSeconds) {
      // One ordered stream has no gap to wait for: start again from the position.
      this.client.counters.gapRepairs += 1;
      this.end(undefined, true);
    }
  }
}

/** @typedef {WebSocketConnection | SseConnection} Connection */
