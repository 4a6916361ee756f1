// The browser client's logic in Node (node --test), with a scripted WebSocket server standing in for
// the API: backoff, de-duplication, hold and reorder, gap repair, lost last event, drift, history,
// make-before-break, fallback to SSE, gzip, offline. Run by tests/unit/test_web_client.py.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { gzipSync } from "node:zlib";

import {
  Backoff,
  DriftEstimate,
  Ordering,
  SseParser,
  StreamingClient,
  decodeCursor,
  decodeEvent,
  encodeCursor,
} from "../streaming.js";

/** An event of stream `stream` at `seq` whose predecessor among the subscriber's types is `prev`. */
const ev = (seq, prev = seq - 1, stream = "market", type = "signal.created") => ({
  id: `${stream}-${seq}`,
  type,
  stream,
  seq,
  prev,
  ts: `2026-11-27T08:00:${String(seq).padStart(2, "0")}.000Z`,
  data: { n: seq },
});
const seqs = (events) => events.map((event) => event.seq);

/** A settable clock, in milliseconds. */
function clock(start = 1000) {
  const now = () => now.t;
  now.t = start;
  return now;
}

/** Waits for a condition, polling; fails after `ms`. */
async function until(condition, ms = 3000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${condition}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe("cursors", () => {
  test("are the server's format: c1. + base64url of sorted JSON, without padding", () => {
    assert.equal(encodeCursor({ risk: 4, market: 17 }), "c1.eyJtYXJrZXQiOjE3LCJyaXNrIjo0fQ");
    assert.deepEqual(decodeCursor("c1.eyJtYXJrZXQiOjE3LCJyaXNrIjo0fQ"), { market: 17, risk: 4 });
    assert.throws(() => decodeCursor("nope"));
  });
});

describe("Backoff", () => {
  test("waits are uniform in [0, min(cap, base * 2^attempt)]: the jitter's extremes give the bounds", () => {
    const top = new Backoff({ random: () => 1 });
    const ceilings = Array.from({ length: 10 }, () => top.nextDelay());
    assert.deepEqual(ceilings, [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]);
    const bottom = new Backoff({ random: () => 0 });
    assert.equal(bottom.nextDelay(), 0);
  });

  test("full jitter spreads the waits over the whole range, capped at 30 s", () => {
    const delays = [];
    for (let run = 0; run < 200; run++) {
      const backoff = new Backoff();
      for (let attempt = 0; attempt < 10; attempt++) delays.push([attempt, backoff.nextDelay()]);
    }
    for (const [attempt, delay] of delays) {
      assert.ok(delay >= 0 && delay <= Math.min(30, 0.5 * 2 ** attempt), `${attempt}: ${delay}`);
    }
    const last = delays.filter(([attempt]) => attempt === 9).map(([, delay]) => delay);
    assert.ok(Math.min(...last) < 10 && Math.max(...last) > 20, "spread over [0, 30]");
  });

  test("gives up after 10 attempts in a row", () => {
    const backoff = new Backoff();
    for (let attempt = 0; attempt < 10; attempt++) assert.notEqual(backoff.nextDelay(), null);
    assert.equal(backoff.nextDelay(), null);
  });

  test("starts afresh after a connection that stayed up 30 s, not after a shorter one", () => {
    const now = clock();
    const backoff = new Backoff({ random: () => 1, now });
    for (let attempt = 0; attempt < 5; attempt++) backoff.nextDelay();
    backoff.connected();
    now.t += 29_000;
    assert.equal(backoff.nextDelay(), 16); // attempt 5: not reset
    backoff.connected();
    now.t += 30_000;
    assert.equal(backoff.nextDelay(), 0.5);
    assert.equal(backoff.attempts, 1);
  });
});

describe("Ordering", () => {
  test("hands over each event once: repeats are dropped and counted", () => {
    const ordering = new Ordering();
    assert.deepEqual(seqs(ordering.offer(ev(1))), [1]);
    assert.deepEqual(ordering.offer(ev(1)), []);
    assert.deepEqual(seqs(ordering.offer(ev(2))), [2]);
    assert.deepEqual(ordering.offer(ev(1)), []);
    assert.equal(ordering.repeats, 2);
  });

  test("holds an event whose predecessor is missing and hands both over in order when it comes", () => {
    const ordering = new Ordering({ position: { market: 1 } });
    assert.deepEqual(ordering.offer(ev(3)), []);
    assert.deepEqual(ordering.offer(ev(4)), []);
    assert.equal(ordering.held, 2);
    assert.deepEqual(ordering.offer(ev(3)), []); // a held one again is a repeat too
    assert.deepEqual(seqs(ordering.offer(ev(2))), [2, 3, 4]);
    assert.equal(ordering.held, 0);
    assert.deepEqual(ordering.position, { market: 4 });
  });

  test("prev skips the seqs of types not received: no wait for them", () => {
    const ordering = new Ordering({ position: { market: 5 } });
    assert.deepEqual(seqs(ordering.offer(ev(9, 5))), [9]);
  });

  test("coalesced events are next like any other, and what they stand for is counted", () => {
    const ordering = new Ordering({ position: { market: 1 } });
    // 2, 4 and 5 were superseded by 6 and 7 (same type and key) and left out; prev skips them.
    const latest = (seq, prev, coalesced) => ({ ...ev(seq, prev, "market", "proposal.updated"), coalesced });
    assert.deepEqual(seqs(ordering.offer(ev(3, 1))), [3]);
    assert.deepEqual(ordering.offer(latest(7, 6, 1)), []); // 6 is still on its way: held
    assert.deepEqual(seqs(ordering.offer(latest(6, 3, 2))), [6, 7]);
    assert.equal(ordering.coalesced, 3);
    assert.equal(ordering.repeats + ordering.held, 0);
  });

  test("says how long the oldest held event has waited: the gap repair's trigger", () => {
    const now = clock();
    const ordering = new Ordering({ now });
    assert.equal(ordering.waiting(), 0);
    ordering.offer(ev(5));
    now.t += 1500;
    assert.equal(ordering.waiting(), 1.5);
    ordering.cut();
    assert.equal(ordering.waiting(), 0);
  });

  test("holds a bounded number of events: past it the oldest are dropped", () => {
    const now = clock();
    const ordering = new Ordering({ maxHeld: 3, now });
    for (const seq of [10, 11, 12, 13, 14]) {
      now.t += 1;
      ordering.offer(ev(seq));
    }
    assert.equal(ordering.held, 3);
  });

  test("finds a lost last event from heads, unless a replay has looked that far", () => {
    const ordering = new Ordering({ position: { market: 4 } });
    assert.equal(ordering.behind({ market: 4, ops: 9 }), false); // ops: not a stream received
    assert.equal(ordering.behind({ market: 5 }), true);
    assert.equal(ordering.behind({ market: 5 }, { market: 5 }), false);
  });

  test("a stream empty at the start is watched: its first event, lost, shows in the heads", () => {
    const ordering = new Ordering();
    ordering.adopt({ market: 4, risk: 0 });
    assert.equal(ordering.behind({ market: 4, risk: 1 }), true);
  });

  test("an adopted position passes what it covers and releases what waited for it", () => {
    const ordering = new Ordering();
    ordering.offer(ev(7));
    assert.deepEqual(seqs(ordering.adopt({ market: 6 })), [7]);
  });

  test("history is handed over without the prev check, in time order across streams, then the rule", () => {
    const ordering = new Ordering();
    const history = [ev(9, 3), ev(8, 2), ev(2, 0, "risk", "risk.alert")];
    const live = ev(12, 11); // live, after the start: waits for 11
    const released = ordering.start({ market: 10, risk: 2 }, [...history, live]);
    assert.deepEqual(
      released.map((event) => event.id),
      ["risk-2", "market-8", "market-9"],
    );
    assert.deepEqual(ordering.position, { market: 10, risk: 2 });
    assert.equal(ordering.held, 1);
    assert.deepEqual(seqs(ordering.offer(ev(11, 10))), [11, 12]);
  });
});

describe("DriftEstimate", () => {
  test("takes the exchange with the shortest round trip: error at most half of it", () => {
    const drift = new DriftEstimate();
    assert.equal(drift.offsetSeconds, null);
    const sent = Date.parse("2026-11-27T09:00:00.000Z");
    drift.add(sent, "2026-11-27T09:00:03.400Z", sent + 800); // 3.0 s off, but a slow exchange
    drift.add(sent + 10_000, "2026-11-27T09:00:12.550Z", sent + 10_100); // 2.5 s ahead of this clock
    assert.equal(drift.offsetSeconds, 2.5);
    assert.equal(drift.uncertaintySeconds, 0.05);
  });

  test("keeps the last samples only", () => {
    const drift = new DriftEstimate(2);
    const at = Date.parse("2026-11-27T09:00:00.000Z");
    drift.add(at, "2026-11-27T09:00:05.000Z", at); // fastest, but pushed out
    drift.add(at, "2026-11-27T09:00:01.010Z", at + 20);
    drift.add(at, "2026-11-27T09:00:01.020Z", at + 40);
    assert.equal(drift.offsetSeconds, 1);
  });
});

describe("SseParser", () => {
  test("messages split anywhere across chunks, comments skipped, CRLF accepted", () => {
    const parser = new SseParser();
    const text = ": heartbeat\n\nretry: 1000\nid: c1.x\nevent: heartbeat\ndata: {\"a\":1}\r\n\r\nevent: end\ndata: {}\n\n";
    const messages = [];
    for (let i = 0; i < text.length; i += 7) messages.push(...parser.feed(text.slice(i, i + 7)));
    assert.deepEqual(messages, [
      { event: "heartbeat", data: '{"a":1}', id: "c1.x" },
      { event: "end", data: "{}", id: null },
    ]);
  });
});

describe("decodeEvent", () => {
  test("restores gzip data (base64 of gzip JSON) and leaves plain data alone", async () => {
    const data = { text: "x".repeat(10_000) };
    const packed = { ...ev(1), encoding: "gzip", data: gzipSync(JSON.stringify(data)).toString("base64") };
    const plain = await decodeEvent(packed);
    assert.deepEqual(plain.data, data);
    assert.equal("encoding" in plain, false);
    const unpacked = ev(2);
    assert.equal(await decodeEvent(unpacked), unpacked);
  });
});

// -- the client against a scripted server ----------------------------------------------------------------

/** A WebSocket class whose instances the test drives: accept, send messages, drop. */
function scriptedWebSocket() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      Object.assign(this, { url, protocols, readyState: 0, sent: [] });
      sockets.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code = 1005) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      queueMicrotask(() => this.onclose?.({ code }));
    }
    accept() {
      this.readyState = 1;
      this.onopen();
    }
    message(message) {
      this.onmessage({ data: JSON.stringify(message) });
    }
    drop() {
      this.readyState = 3;
      this.onclose?.({ code: 1006 });
    }
    sentOf(action) {
      return this.sent.filter((message) => message.action === action);
    }
  }
  return { FakeWebSocket, sockets };
}

const welcome = (lifetimeSeconds = 3600) => {
  const now = Date.now();
  return {
    type: "welcome",
    allowed_types: ["signal.created"],
    server_time: new Date(now).toISOString(),
    heads: {},
    expires_at: now / 1000 + lifetimeSeconds,
  };
};
const subscribed = (position) => ({ type: "subscribed", types: ["signal.created"], cursor: encodeCursor(position) });

/** A client on a scripted WebSocket; everything it hands over is recorded. */
function scriptedClient(options = {}) {
  const { FakeWebSocket, sockets } = scriptedWebSocket();
  const tokens = [];
  const client = new StreamingClient({
    websocketUrl: "ws://server/",
    sseUrl: "http://server/events",
    token: () => {
      tokens.push(`t${tokens.length + 1}`);
      return tokens.at(-1);
    },
    types: ["signal.created"],
    transport: "websocket",
    tickMs: 5,
    gapSeconds: 0.05,
    WebSocket: FakeWebSocket,
    network: null,
    backoff: { baseSeconds: 0.001 },
    ...options,
  });
  const got = [];
  const states = [];
  client.addEventListener("events", (e) => got.push(...e.detail.events.map((event) => ({ ...event, history: e.detail.history }))));
  client.addEventListener("state", (e) => states.push(e.detail.state));
  return { client, sockets, tokens, got, states };
}

/** A scripted client whose first socket is open, welcomed and subscribed at `position`. */
async function subscribedClient(position, options = {}) {
  const scripted = scriptedClient(options);
  scripted.client.start();
  await until(() => scripted.sockets.length === 1);
  const [socket] = scripted.sockets;
  socket.accept();
  socket.message(welcome());
  socket.message(subscribed(position));
  return { ...scripted, socket };
}

describe("StreamingClient over WebSocket", () => {
  test("the token travels in the subprotocol; the first subscription starts at its cursor", async () => {
    const { client, sockets, got } = scriptedClient();
    client.start();
    await until(() => sockets.length === 1);
    const [socket] = sockets;
    assert.deepEqual(socket.protocols, ["streaming.v1", "token.t1"]);
    socket.accept();
    assert.deepEqual(socket.sent[0], { action: "subscribe", types: ["signal.created"], id: "subscribe" });
    socket.message(welcome());
    socket.message(subscribed({ market: 3 }));
    socket.message({ type: "events", events: [ev(3), ev(4), ev(4)] }); // 3: before the cursor; 4 twice
    assert.deepEqual(seqs(got), [4]);
    assert.deepEqual(client.stats.duplicates, 2);
    assert.equal(client.state, "open");
    client.close();
  });

  test("the connection panel's stats count the events coalesced under overload", async () => {
    const { client, socket, got } = await subscribedClient({ market: 3 });
    socket.message({ type: "events", events: [ev(4), { ...ev(9, 4), key: "p-1", coalesced: 4 }] });
    assert.deepEqual(seqs(got), [4, 9]);
    assert.equal(got[1].coalesced, 4); // the application sees it on the event
    assert.equal(client.stats.coalesced, 4);
    assert.equal(client.stats.gapRepairs, 0);
    client.close();
  });

  test("an event whose predecessor does not come is repaired by a replay from the position", async () => {
    const { client, socket, got } = await subscribedClient({ market: 1 });
    socket.message({ type: "events", events: [ev(3)] });
    assert.deepEqual(got, []);
    await until(() => socket.sentOf("replay").length === 1);
    assert.deepEqual(socket.sentOf("replay")[0], { action: "replay", cursor: encodeCursor({ market: 1 }), limit: 1000, id: "gap" });
    socket.message({ type: "events", events: [ev(2), ev(3)] });
    socket.message({ type: "replay", id: "gap", count: 2, cursor: encodeCursor({ market: 3 }), more: false, truncated: false });
    assert.deepEqual(seqs(got), [2, 3]);
    assert.equal(client.stats.gapRepairs, 1);
    assert.equal(client.stats.duplicates, 1);
    client.close();
  });

  test("a head beyond the position in a pong (a lost last event) asks for a replay; drift is measured", async () => {
    const { client, sockets } = scriptedClient({ pingSeconds: 0.01 });
    const drifts = [];
    client.addEventListener("drift", (e) => drifts.push(e.detail.offsetSeconds));
    client.start();
    await until(() => sockets.length === 1);
    const [socket] = sockets;
    socket.accept();
    socket.message(welcome());
    socket.message(subscribed({ market: 4 }));
    await until(() => socket.sentOf("ping").length >= 1);
    const serverTime = new Date(Date.now() + 5000).toISOString(); // the server's clock is 5 s ahead
    socket.message({ type: "pong", server_time: serverTime, heads: { market: 5 } });
    assert.deepEqual(socket.sentOf("replay").at(-1), { action: "replay", cursor: encodeCursor({ market: 4 }), limit: 1000, id: "gap" });
    assert.ok(Math.abs(drifts[0] - 5) < 0.5, `${drifts[0]}`);
    client.close();
  });

  test("truncated is surfaced as a signal", async () => {
    const { client, sockets } = scriptedClient();
    const truncated = [];
    client.addEventListener("truncated", (e) => truncated.push(e.detail.cursor));
    client.start();
    await until(() => sockets.length === 1);
    sockets[0].accept();
    sockets[0].message({ type: "replay", id: "gap", count: 0, cursor: "c1.e30", more: false, truncated: true });
    assert.deepEqual(truncated, ["c1.e30"]);
    client.close();
  });

  test("the last N come first as history, then live events by the rule, each once", async () => {
    const { client, socket, got } = await subscribedClient({ market: 10 }, { last: 3 });
    assert.deepEqual(socket.sentOf("replay")[0], { action: "replay", last: 3, id: "history" });
    // History is not a continuation: 6 and 8 have prevs the client never had; 11 is live, meanwhile.
    socket.message({ type: "events", events: [ev(11, 10)] });
    socket.message({ type: "events", events: [ev(6, 2), ev(8, 6), ev(10, 8)] });
    assert.deepEqual(got, []);
    socket.message({ type: "replay", id: "history", count: 3, cursor: encodeCursor({ market: 10 }), more: false, truncated: false });
    socket.message({ type: "events", events: [ev(11, 10), ev(12, 11)] });
    assert.deepEqual(seqs(got), [6, 8, 10, 11, 12]);
    assert.deepEqual(got.map((event) => event.history), [true, true, true, false, false]);
    client.close();
  });

  test("after a lost connection: backoff, a new token, a replay from its own position", async () => {
    const { client, sockets, tokens, got, states } = scriptedClient();
    client.start();
    await until(() => sockets.length === 1);
    sockets[0].accept();
    sockets[0].message(welcome());
    sockets[0].message(subscribed({ market: 0 }));
    sockets[0].message({ type: "events", events: [ev(1), ev(2)] });
    sockets[0].drop();
    await until(() => sockets.length === 2);
    const socket = sockets[1];
    assert.deepEqual(tokens, ["t1", "t2"]);
    assert.deepEqual(socket.protocols, ["streaming.v1", "token.t2"]);
    socket.accept();
    socket.message(welcome());
    socket.message(subscribed({ market: 5 }));
    assert.deepEqual(socket.sentOf("replay")[0], { action: "replay", cursor: encodeCursor({ market: 2 }), limit: 1000, id: "resume" });
    socket.message({ type: "events", events: [ev(3), ev(4), ev(5)] });
    assert.deepEqual(seqs(got), [1, 2, 3, 4, 5]);
    assert.deepEqual(states, ["connecting", "open", "reconnecting", "open"]);
    assert.equal(client.stats.reconnects, 1);
    client.close();
  });

  test("a connection that never opens counts as an attempt; after 10 in a row the state is failed", async () => {
    const { client, sockets, states } = scriptedClient();
    client.start();
    for (let attempt = 1; attempt <= 11; attempt++) {
      await until(() => sockets.length === attempt || states.at(-1) === "failed");
      sockets.at(-1).drop();
    }
    await until(() => states.at(-1) === "failed");
    assert.equal(sockets.length, 11); // the first try and 10 retries
    assert.equal(states.filter((state) => state === "open").length, 0);
  });

  test("make before break: a successor opens, catches up, then the old one closes; nothing lost or repeated", async () => {
    const { client, sockets, got, states } = scriptedClient({ renewBeforeSeconds: 60 });
    client.start();
    await until(() => sockets.length === 1);
    const [old] = sockets;
    old.accept();
    old.message(welcome(0.2)); // a token living 0.2 s: renewal at half its life
    old.message(subscribed({ market: 0 }));
    old.message({ type: "events", events: [ev(1), ev(2)] });
    await until(() => sockets.length === 2);
    const successor = sockets[1];
    assert.deepEqual(successor.protocols, ["streaming.v1", "token.t2"]);
    successor.accept();
    successor.message(welcome());
    successor.message(subscribed({ market: 3 }));
    assert.deepEqual(successor.sentOf("replay")[0], { action: "replay", cursor: encodeCursor({ market: 2 }), limit: 1000, id: "resume" });
    // Both deliver during the overlap; the old one is still open until the successor has caught up.
    old.message({ type: "events", events: [ev(3)] });
    successor.message({ type: "events", events: [ev(4)] }); // live on the successor, before its replay
    successor.message({ type: "events", events: [ev(3)] });
    assert.equal(old.readyState, 1);
    successor.message({ type: "replay", id: "resume", count: 1, cursor: encodeCursor({ market: 4 }), more: false, truncated: false });
    assert.equal(old.readyState, 3);
    old.message({ type: "events", events: [ev(4)] }); // late, on the way out
    successor.message({ type: "events", events: [ev(5)] });
    assert.deepEqual(seqs(got), [1, 2, 3, 4, 5]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(states, ["connecting", "open"]); // never reconnecting
    assert.equal(client.stats.plannedReconnects, 1);
    assert.equal(client.stats.reconnects, 0);
    assert.ok(client.stats.duplicates >= 2);
    client.close();
  });

  test("a reconnect notice starts the handover at once, and only one", async () => {
    const { client, sockets, got, states } = scriptedClient({ renewBeforeSeconds: 60 });
    client.start();
    await until(() => sockets.length === 1);
    const [old] = sockets;
    old.accept();
    old.message(welcome()); // an hour left: no renewal of its own for 59 minutes
    old.message(subscribed({ market: 0 }));
    old.message({ type: "events", events: [ev(1)] });
    const notice = { type: "reconnect", reason: "connection_limit", at: Date.now() / 1000 + 300, server_time: new Date().toISOString() };
    old.message(notice);
    await until(() => sockets.length === 2);
    old.message(notice); // a repeat while the successor catches up opens no third connection
    const successor = sockets[1];
    successor.accept();
    successor.message(welcome());
    successor.message(subscribed({ market: 1 }));
    successor.message({ type: "replay", id: "resume", count: 0, cursor: encodeCursor({ market: 1 }), more: false, truncated: false });
    assert.equal(old.readyState, 3);
    successor.message({ type: "events", events: [ev(2)] });
    assert.deepEqual(seqs(got), [1, 2]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(sockets.length, 2);
    assert.deepEqual(states, ["connecting", "open"]);
    assert.equal(client.stats.plannedReconnects, 1);
    client.close();
  });

  test("gzip data is decoded and keeps its place in the order", async () => {
    const { client, sockets, got } = scriptedClient();
    client.start();
    await until(() => sockets.length === 1);
    const [socket] = sockets;
    socket.accept();
    socket.message(subscribed({ market: 0 }));
    const big = { ...ev(2), encoding: "gzip", data: gzipSync(JSON.stringify({ n: 2 })).toString("base64") };
    socket.message({ type: "events", events: [ev(1), big, ev(3)] });
    socket.message({ type: "events", events: [ev(4)] });
    await until(() => got.length === 4);
    assert.deepEqual(seqs(got), [1, 2, 3, 4]);
    assert.deepEqual(got[1].data, { n: 2 });
    client.close();
  });

  test("offline: connections closed and no attempts spent until the network is back", async () => {
    const network = new EventTarget();
    network.navigator = { onLine: true };
    const { client, sockets, states } = scriptedClient({ network });
    client.start();
    await until(() => sockets.length === 1);
    sockets[0].accept();
    network.navigator.onLine = false;
    network.dispatchEvent(new Event("offline"));
    assert.equal(client.state, "offline");
    assert.equal(sockets[0].readyState, 3);
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(sockets.length, 1);
    network.navigator.onLine = true;
    network.dispatchEvent(new Event("online"));
    await until(() => sockets.length === 2);
    sockets[1].accept();
    assert.deepEqual(states, ["connecting", "open", "offline", "reconnecting", "open"]);
    client.close();
  });
});

describe("StreamingClient over SSE", () => {
  /** A fetch that answers with an SSE body the test writes to. */
  function scriptedFetch() {
    const requests = [];
    const fetch = async (url, init) => {
      let controller;
      const body = new ReadableStream({ start: (c) => (controller = c) });
      const request = { url, init, write: (text) => controller.enqueue(new TextEncoder().encode(text)), end: () => controller.close() };
      requests.push(request);
      return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
    };
    return { fetch, requests };
  }
  const sseEvent = (event, position) =>
    `id: ${encodeCursor(position)}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;

  test("after 3 WebSocket connections fail to open, fetch streaming with Authorization takes over", async () => {
    const { fetch, requests } = scriptedFetch();
    const { client, sockets, got, tokens } = scriptedClient({ transport: "auto", fetch });
    client.start();
    for (let attempt = 1; attempt <= 3; attempt++) {
      await until(() => sockets.length === attempt);
      sockets.at(-1).drop();
    }
    await until(() => requests.length === 1);
    const [request] = requests;
    assert.equal(request.init.headers.Authorization, `Bearer ${tokens.at(-1)}`);
    assert.equal(new URL(request.url).searchParams.get("types"), "signal.created");
    await until(() => client.state === "open");
    assert.equal(client.transport, "sse");
    request.write(`event: heartbeat\nid: ${encodeCursor({ market: 2 })}\ndata: {"server_time":"${new Date().toISOString()}","heads":{"market":2}}\n\n`);
    request.write(sseEvent(ev(3), { market: 3 }) + sseEvent(ev(4), { market: 4 }));
    await until(() => got.length === 2);
    assert.deepEqual(seqs(got), [3, 4]);
    // The planned end: at once a new stream, from the position, with a new token; the state stays open.
    request.write(`event: end\nid: ${encodeCursor({ market: 4 })}\ndata: {"reconnect":true,"reason":"planned"}\n\n`);
    await until(() => requests.length === 2);
    assert.equal(new URL(requests[1].url).searchParams.get("cursor"), encodeCursor({ market: 4 }));
    assert.equal(requests[1].init.headers.Authorization, `Bearer ${tokens.at(-1)}`);
    assert.equal(client.state, "open");
    assert.equal(client.stats.plannedReconnects, 1);
    client.close();
  });
});
